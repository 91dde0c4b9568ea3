"""Bulk work: recompute every lead (or many) chunk by chunk, switch the active model."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Engine, select, update

from leadflow.adapters.db.tables import lead_models, lead_states, leads
from leadflow.core.config import LeadModel
from leadflow.services.lifecycle.loading import CHUNK, _chunks
from leadflow.services.lifecycle.models import ModelCache, install_model
from leadflow.services.lifecycle.recomputing import recompute
from leadflow.services.lifecycle.results import RecomputeResult


def all_lead_ids(conn: Connection) -> list[int]:
    return list(conn.execute(select(leads.c.id).order_by(leads.c.id)).scalars())


def recompute_all(
    engine: Engine,
    cache: ModelCache,
    now: datetime,
    *,
    lead_ids: Sequence[int] | None = None,
    progress: Callable[[int], None] | None = None,
    chunk: int = CHUNK,
) -> RecomputeResult:
    """Recompute many leads, one transaction per chunk (bounded memory, visible progress)."""
    total = RecomputeResult()
    with engine.connect() as conn:
        ids = list(lead_ids) if lead_ids is not None else all_lead_ids(conn)
    for part in _chunks(ids, chunk):
        with engine.begin() as conn:
            model = cache.active(conn, now)
            res = recompute(conn, part, model, now)
        total.leads += res.leads
        total.changes_added += res.changes_added
        total.changes_removed += res.changes_removed
        total.signals_added += res.signals_added
        if progress is not None:
            progress(len(part))
    return total


@dataclass(slots=True)
class ApplyReport:
    version: str
    content_hash: str
    previous_version: str | None
    leads: int = 0
    changed_stage: int = 0
    moves: dict[tuple[str, str], int] = field(default_factory=dict)


class StaleModel(Exception):
    """``apply_model(expected_active=...)``: another model is active now; nothing applied."""

    def __init__(self, expected: str, active: str | None) -> None:
        super().__init__(f"the active model is {active}, not {expected}")
        self.expected, self.active = expected, active


def apply_model(
    engine: Engine,
    cache: ModelCache,
    model: LeadModel,
    source: str,
    now: datetime,
    *,
    progress: Callable[[int], None] | None = None,
    expected_active: str | None = None,
) -> ApplyReport:
    """Switch to ``model`` and recompute every lead. A lead whose stage differs under the
    new model gets one ``model.apply`` change now; history before the switch is kept.
    With ``expected_active`` (a content hash), raise :class:`StaleModel` unless that model
    is the active one, checked under a lock in the switch's own transaction."""
    with engine.begin() as conn:
        if expected_active is not None:
            active = conn.execute(
                select(lead_models.c.content_hash).where(lead_models.c.active).with_for_update()
            ).scalar()
            if active != expected_active:
                raise StaleModel(expected_active, active)
        previous = cache.active(conn, now)
        install_model(conn, model, source, now, activate=True)
        ids = all_lead_ids(conn)
    report = ApplyReport(
        version=model.version, content_hash=model.content_hash, previous_version=previous.version
    )
    moves: dict[tuple[str, str], int] = defaultdict(int)
    for part in _chunks(ids):
        with engine.begin() as conn:
            before = {
                r.lead_id: r.stage
                for r in conn.execute(
                    select(lead_states.c.lead_id, lead_states.c.stage).where(
                        lead_states.c.lead_id.in_(part)
                    )
                )
            }
            # New epoch: the stored log stays as it happened; the new model's replay rules
            # from now on (the model.apply change is written by _sync_history).
            conn.execute(
                update(lead_states).where(lead_states.c.lead_id.in_(part)).values(epoch=now)
            )
            res = recompute(conn, part, model, now)
        for lead_id, stage in res.stages.items():
            old = before.get(lead_id, model.initial_stage)
            if old != stage:
                moves[(old, stage)] += 1
        report.leads += res.leads
        if progress is not None:
            progress(len(part))
    report.moves = dict(moves)
    report.changed_stage = sum(moves.values())
    return report
