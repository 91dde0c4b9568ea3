"""The stage-history log (``stage_changes``) kept equal to the replay, with one
``model.apply`` change at a model switch (:func:`_sync_history`)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from leadflow.adapters.db.tables import stage_changes
from leadflow.core.config import LeadModel
from leadflow.core.lifecycle import LeadState
from leadflow.core.model import StageChange
from leadflow.services.lifecycle.results import RecomputeResult, StoredChange

MODEL_APPLY_RULE = "model.apply"


def _replay_stage_at(state: LeadState, at: datetime, initial: str) -> str:
    stage = initial
    for change in state.history:
        if change.at <= at:
            stage = change.to_stage
        else:
            break
    return stage


def _same(row: StoredChange, change: StageChange) -> bool:
    return (
        row.from_stage == change.from_stage
        and row.to_stage == change.to_stage
        and row.at == change.at
        and row.rule == change.rule
    )


def _change_row(change: StageChange, now: datetime) -> dict[str, Any]:
    return {
        "lead_id": change.lead_id,
        "from_stage": change.from_stage,
        "to_stage": change.to_stage,
        "at": change.at,
        "rule": change.rule,
        "model_version": change.model_version,
        "cause": change.cause,
        "recorded_at": now,
    }


def _insert_changes(conn: Connection, rows: list[dict[str, Any]]) -> list[StoredChange]:
    if not rows:
        return []
    ids = conn.execute(
        insert(stage_changes).returning(stage_changes.c.id, sort_by_parameter_order=True), rows
    ).scalars()
    return [
        StoredChange(
            id=i, from_stage=r["from_stage"], to_stage=r["to_stage"], at=r["at"], rule=r["rule"]
        )
        for i, r in zip(ids, rows, strict=True)
    ]


def _sync_history(
    conn: Connection,
    state: LeadState,
    stored: list[StoredChange],
    epoch: datetime | None,
    model: LeadModel,
    now: datetime,
    result: RecomputeResult,
) -> list[StoredChange]:
    """Make the stored log equal the replay (after ``epoch``, when the model was switched);
    return the log as it is now stored."""
    replayed = list(state.history)
    before: list[StoredChange] = []
    after = stored
    if epoch is not None:
        before = [r for r in stored if r.at <= epoch]
        after = [r for r in stored if r.at > epoch]
        replayed = [c for c in replayed if c.at > epoch]
        want = _replay_stage_at(state, epoch, model.initial_stage)
        have = before[-1].to_stage if before else model.initial_stage
        if want != have:
            last = before[-1] if before else None
            if last is not None and last.rule == MODEL_APPLY_RULE and last.at == epoch:
                if last.from_stage == want:
                    conn.execute(delete(stage_changes).where(stage_changes.c.id == last.id))
                    before.pop()
                else:
                    conn.execute(
                        update(stage_changes)
                        .where(stage_changes.c.id == last.id)
                        .values(to_stage=want)
                    )
                    before[-1] = replace(last, to_stage=want)
            else:
                before += _insert_changes(
                    conn,
                    [
                        {
                            "lead_id": state.lead_id,
                            "from_stage": have,
                            "to_stage": want,
                            "at": epoch,
                            "rule": MODEL_APPLY_RULE,
                            "model_version": model.version,
                            "cause": f"model:{model.version}",
                            "recorded_at": now,
                        }
                    ],
                )
                result.changes_added += 1
    keep = 0
    while keep < len(after) and keep < len(replayed) and _same(after[keep], replayed[keep]):
        keep += 1
    stale = [r.id for r in after[keep:]]
    if stale:
        conn.execute(delete(stage_changes).where(stage_changes.c.id.in_(stale)))
        result.changes_removed += len(stale)
    fresh = _insert_changes(conn, [_change_row(c, now) for c in replayed[keep:]])
    result.changes_added += len(fresh)
    return before + after[:keep] + fresh


def _stored_changes(conn: Connection, lead_ids: Sequence[int]) -> dict[int, list[StoredChange]]:
    found: dict[int, list[StoredChange]] = defaultdict(list)
    for row in conn.execute(
        select(
            stage_changes.c.id,
            stage_changes.c.lead_id,
            stage_changes.c.from_stage,
            stage_changes.c.to_stage,
            stage_changes.c.at,
            stage_changes.c.rule,
        )
        .where(stage_changes.c.lead_id.in_(lead_ids))
        .order_by(stage_changes.c.lead_id, stage_changes.c.at, stage_changes.c.id)
    ):
        found[row.lead_id].append(
            StoredChange(
                id=row.id,
                from_stage=row.from_stage,
                to_stage=row.to_stage,
                at=row.at,
                rule=row.rule,
            )
        )
    return found
