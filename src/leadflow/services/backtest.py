"""``leadflow model backtest``: the stored history replayed under a candidate model.

Reads the events, profiles, sales actions and outcomes from the store (nothing is
written) and hands them to the vectorised :func:`leadflow.core.backtest.compare`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime

from sqlalchemy import Connection, Engine, select

from leadflow.adapters.db.tables import events, sales_actions, stage_changes
from leadflow.core import backtest as bt
from leadflow.core.config import LeadModel
from leadflow.core.model import Event
from leadflow.services.lifecycle import (
    EVENT_COLUMNS,
    ModelCache,
    all_lead_ids,
    event_from_row,
    load_actions,
    load_profiles,
)

OUTCOME_RANK = {"rejected": 1, "opportunity": 2, "lost": 3, "won": 4}
OUTCOME_ROLES = ("opportunity", "won", "lost")
"""The stage roles whose entry is a sales outcome; the outcome is named after the role."""


def stage_outcomes(model: LeadModel) -> dict[str, str]:
    """Stage id -> outcome label, from the stages with roles opportunity, won and lost."""
    return {stage: role for role in OUTCOME_ROLES for stage in model.stages_for(role)}


def _events(
    conn: Connection, as_of: datetime, progress: Callable[[int], None] | None
) -> Iterator[Event]:
    rows = conn.execution_options(yield_per=20_000).execute(
        select(*EVENT_COLUMNS)
        .where(events.c.lead_id.is_not(None), events.c.occurred_at <= as_of)
        .order_by(events.c.id)
    )
    for n, row in enumerate(rows, 1):
        if progress is not None and n % 20_000 == 0:
            progress(20_000)
        yield event_from_row(row)


def outcomes(conn: Connection, model: LeadModel) -> dict[int, str]:
    """What happened in sales, per lead: won, lost, opportunity or rejected (the furthest).

    ``model`` (the active one) says which stages mean opportunity, won and lost."""
    found: dict[int, str] = {}
    stage_outcome = stage_outcomes(model)

    def note(lead_id: int, outcome: str) -> None:
        if OUTCOME_RANK[outcome] > OUTCOME_RANK.get(found.get(lead_id, ""), 0):
            found[lead_id] = outcome

    for lead_id, stage in conn.execute(
        select(stage_changes.c.lead_id, stage_changes.c.to_stage).where(
            stage_changes.c.to_stage.in_(list(stage_outcome))
        )
    ):
        note(lead_id, stage_outcome[stage])
    for (lead_id,) in conn.execute(
        select(sales_actions.c.lead_id).where(sales_actions.c.name.in_(["reject", "disqualify"]))
    ):
        note(lead_id, "rejected")
    return found


def run_backtest(
    engine: Engine,
    cache: ModelCache,
    candidate: LeadModel,
    as_of: datetime,
    *,
    since: datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> bt.BacktestReport:
    with engine.begin() as conn:
        current = cache.active(conn, as_of)
    with engine.connect() as conn:
        table = bt.events_frame(
            _events(conn, as_of, progress),
            bt.referenced_properties(current, candidate),
            keep_originals=True,
        )
        ids = all_lead_ids(conn)
        profiles = []
        actions = {}
        for i in range(0, len(ids), 1000):
            part = ids[i : i + 1000]
            profiles += list(load_profiles(conn, part).values())
            actions.update(load_actions(conn, part))
        known = outcomes(conn, current)
    return bt.compare(
        current,
        candidate,
        table,
        bt.profiles_frame(profiles),
        known,
        as_of=as_of,
        since=since,
        actions={k: v for k, v in actions.items() if v},
    )
