"""Sales actions on the hand-off (accept, reject, not now): each is a stage change
through :func:`leadflow.services.lifecycle.record_action` (:func:`_record`), idempotent on
its ``action_id``, with its signal; a refused action raises
:class:`~leadflow.services.lifecycle.ActionRefused` and stores nothing."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from leadflow.adapters.db.tables import assignments, lead_states, ready_queue, sales_actions
from leadflow.core.config import LeadModel
from leadflow.core.model import SalesAction
from leadflow.core.routing import reject_action
from leadflow.services import lifecycle, privacy
from leadflow.services.handoff.common import (
    _close,
    _signal,
    _stage,
    active_assignment,
    require_lead,
    sales_spec,
)
from leadflow.services.handoff.summary import engagement_summary
from leadflow.services.lifecycle import ActionRefused


@dataclass(slots=True)
class ActionResult:
    lead_id: int
    action: str
    stage: str
    duplicate: bool = False
    assignment_id: int | None = None
    opportunity_id: int | None = None
    qualification: float | None = None
    detail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "lead_id": self.lead_id,
            "action": self.action,
            "stage": self.stage,
            "duplicate": self.duplicate,
            "assignment_id": self.assignment_id,
            "opportunity_id": self.opportunity_id,
            "qualification": self.qualification,
            "detail": self.detail,
        }


def _seen(conn: Connection, action_id: str, lead_id: int) -> bool:
    row = conn.execute(
        select(sales_actions.c.lead_id).where(sales_actions.c.action_id == action_id)
    ).first()
    if row is None:
        return False
    if row.lead_id != lead_id:
        raise ActionRefused(f"action_id {action_id!r} was used for another lead")
    return True


def _record(
    conn: Connection,
    model: LeadModel,
    lead_id: int,
    name: str,
    now: datetime,
    *,
    action_id: str | None,
    actor: str | None,
    at: datetime | None = None,
    **extra: Any,
) -> tuple[str, bool]:
    """Record the action (taking effect ``at``, default ``now``: a past one is replayed in
    its place); returns (action_id, duplicate). Sales acted on the lead, so it leaves the
    ready queue (e.g. one fast-passed to the appointment stage that a rep qualified before
    routing reached it)."""
    require_lead(conn, lead_id)
    action_id = action_id or f"{name}:{uuid.uuid4()}"
    if _seen(conn, action_id, lead_id):
        return action_id, True
    if extra.get("reason") is not None or actor is not None:
        # Notes never keep an erased person's address.
        actor, extra["reason"] = privacy.without_suppressed(conn, actor, extra.get("reason"))
    lifecycle.record_action(
        conn,
        SalesAction(
            action_id=action_id, name=name, at=at or now, lead_id=lead_id, actor=actor, **extra
        ),
        model,
        now,
    )
    conn.execute(delete(ready_queue).where(ready_queue.c.lead_id == lead_id))
    return action_id, False


def accept(
    conn: Connection,
    model: LeadModel,
    lead_id: int,
    now: datetime,
    *,
    actor: str | None = None,
    action_id: str | None = None,
) -> ActionResult:
    """Sales accepted the hand-off and set a meeting (MQL -> appointment)."""
    require_lead(conn, lead_id)
    current = active_assignment(conn, lead_id)
    accept_to = model.spec.actions["accept"].to if "accept" in model.spec.actions else None
    duplicate = False
    if (current is None or current["status"] != "accepted") and _stage(
        conn, lead_id, model.initial_stage
    ) == accept_to:
        # Already at the appointment stage (a fast-pass): accepting closes the SLA of the
        # hand-off, or takes the lead from the queue.
        pass
    else:
        _, duplicate = _record(
            conn, model, lead_id, "accept", now, action_id=action_id, actor=actor
        )
    if duplicate:
        return ActionResult(
            lead_id,
            "accept",
            _stage(conn, lead_id, model.initial_stage),
            duplicate=True,
            assignment_id=current["id"] if current else None,
        )
    conn.execute(delete(ready_queue).where(ready_queue.c.lead_id == lead_id))
    if current is None:
        # Taken straight from the queue: the taker's hand-off counts against their capacity.
        res = conn.execute(
            insert(assignments).values(
                lead_id=lead_id,
                active_lead_id=lead_id,
                rep_key=(actor or "unassigned")[:64],
                rule="manual",
                priority=0.0,
                assigned_at=now,
                due_at=now,
                status="accepted",
                summary=engagement_summary(conn, lead_id, model, now),
            )
        )
        assignment_id = int(res.inserted_primary_key[0])  # type: ignore[index]  # an insert has a key
        rep = actor
    else:
        assignment_id = current["id"]
        rep = current["rep_key"]
        conn.execute(
            update(assignments).where(assignments.c.id == assignment_id).values(status="accepted")
        )
    _signal(
        conn,
        "lead.accepted",
        lead_id,
        now,
        "actions.accept",
        model,
        {"rep": rep, "assignment_id": assignment_id, "actor": actor},
    )
    return ActionResult(
        lead_id, "accept", _stage(conn, lead_id, model.initial_stage), assignment_id=assignment_id
    )


def reject(
    conn: Connection,
    model: LeadModel,
    lead_id: int,
    reason: str,
    now: datetime,
    *,
    actor: str | None = None,
    action_id: str | None = None,
) -> ActionResult:
    """Sales rejected the hand-off with a configured reason: back to nurturing, or the dead
    end for reasons marked ``dead_end``."""
    action = reject_action(sales_spec(model), reason)
    _, duplicate = _record(
        conn, model, lead_id, action, now, action_id=action_id, actor=actor, reason=reason
    )
    current = active_assignment(conn, lead_id)
    if duplicate:
        return ActionResult(
            lead_id, "reject", _stage(conn, lead_id, model.initial_stage), duplicate=True
        )
    conn.execute(delete(ready_queue).where(ready_queue.c.lead_id == lead_id))
    if current is not None:
        _close(conn, current["id"], "rejected", now, reason)
    _signal(
        conn,
        "lead.rejected",
        lead_id,
        now,
        f"actions.{action}",
        model,
        {
            "reason": reason,
            "dead_end": action == "disqualify",
            "rep": current["rep_key"] if current else None,
            "actor": actor,
        },
    )
    return ActionResult(
        lead_id,
        "reject",
        _stage(conn, lead_id, model.initial_stage),
        assignment_id=current["id"] if current else None,
        detail=f"reason {reason}",
    )


def not_now(
    conn: Connection,
    model: LeadModel,
    lead_id: int,
    now: datetime,
    *,
    reason: str | None = None,
    actor: str | None = None,
    action_id: str | None = None,
) -> ActionResult:
    """ "Not evaluating for now": appointment -> recycle A with its mail pause."""
    _, duplicate = _record(
        conn, model, lead_id, "not_now", now, action_id=action_id, actor=actor, reason=reason
    )
    if duplicate:
        return ActionResult(
            lead_id, "not_now", _stage(conn, lead_id, model.initial_stage), duplicate=True
        )
    return _recycled(conn, model, lead_id, now, "not_now", reason, actor)


def _recycled(
    conn: Connection,
    model: LeadModel,
    lead_id: int,
    now: datetime,
    action: str,
    reason: str | None,
    actor: str | None,
) -> ActionResult:
    current = active_assignment(conn, lead_id)
    if current is not None:
        _close(conn, current["id"], "closed", now, action)
    stage = _stage(conn, lead_id, model.initial_stage)
    pause = conn.execute(
        select(lead_states.c.pause_until).where(lead_states.c.lead_id == lead_id)
    ).scalar_one_or_none()
    _signal(
        conn,
        "lead.recycled",
        lead_id,
        now,
        f"actions.{action}",
        model,
        {"stage": stage, "pause_until": pause, "reason": reason, "actor": actor},
    )
    return ActionResult(lead_id, action, stage, assignment_id=current["id"] if current else None)
