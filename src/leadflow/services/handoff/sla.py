"""The hand-off SLA: hand-offs not accepted in time are escalated or re-routed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update

from leadflow.adapters.db.engine import insert_ignore
from leadflow.adapters.db.tables import assignments, lead_states, ready_queue
from leadflow.core.config import LeadModel
from leadflow.core.routing import OpenAssignment, WorkCalendar, priority, sla_breaches
from leadflow.services.handoff.common import _close, _lock, _signal, sales_spec
from leadflow.services.handoff.routing import RouteReport, route_due


@dataclass(slots=True)
class SlaReport:
    escalated: list[dict[str, Any]] = field(default_factory=list)
    rerouted: list[dict[str, Any]] = field(default_factory=list)
    routed: RouteReport | None = None


def process_sla(conn: Connection, model: LeadModel, now: datetime) -> SlaReport:
    """Escalate or re-route hand-offs not accepted in time (``sales.sla_hours`` working
    hours); both are recorded (assignment status and a signal). Re-routed leads go back to
    the queue (never to the same rep) and are routed at once if capacity allows."""
    _lock(conn, wait=True)
    spec = sales_spec(model)
    cal = WorkCalendar.from_spec(spec)
    rows = (
        conn.execute(
            select(assignments).where(
                assignments.c.status.in_(("routed", "escalated")), assignments.c.due_at <= now
            )
        )
        .mappings()
        .all()
    )
    decisions = sla_breaches(
        [
            OpenAssignment(
                id=r["id"],
                lead_id=r["lead_id"],
                rep_key=r["rep_key"],
                status=r["status"],
                assigned_at=r["assigned_at"],
                due_at=r["due_at"],
            )
            for r in rows
        ],
        now,
        calendar=cal,
        on_breach=spec.on_breach,
        escalation_hours=spec.escalation_hours,
    )
    report = SlaReport()
    for d in decisions:
        item = {"lead_id": d.lead_id, "rep": d.rep_key, "overdue_hours": d.overdue_hours}
        if d.action == "escalate":
            values: dict[str, Any] = {"status": "escalated", "escalated_at": now}
            if d.new_due_at is not None:
                values["due_at"] = d.new_due_at
            conn.execute(
                update(assignments).where(assignments.c.id == d.assignment_id).values(values)
            )
            _signal(
                conn,
                "lead.escalated",
                d.lead_id,
                now,
                "sla.escalate",
                model,
                {**item, "assignment_id": d.assignment_id, "new_due_at": d.new_due_at},
            )
            report.escalated.append(item)
        else:
            _close(conn, d.assignment_id, "rerouted", now, "sla")
            excluded = {d.rep_key}
            excluded |= {
                r.rep_key
                for r in conn.execute(
                    select(assignments.c.rep_key).where(
                        assignments.c.lead_id == d.lead_id, assignments.c.status == "rerouted"
                    )
                )
            }
            st = conn.execute(
                select(
                    lead_states.c.engagement, lead_states.c.fit, lead_states.c.qualification
                ).where(lead_states.c.lead_id == d.lead_id)
            ).first()
            conn.execute(
                insert_ignore(conn.engine, ready_queue, "lead_id").values(
                    lead_id=d.lead_id,
                    priority=priority(st.engagement, st.fit, st.qualification) if st else 0.0,
                    queued_at=now,
                    reason="rerouted",
                    exclude_reps=sorted(excluded),
                )
            )
            _signal(
                conn,
                "lead.rerouted",
                d.lead_id,
                now,
                "sla.reroute",
                model,
                {**item, "assignment_id": d.assignment_id},
            )
            report.rerouted.append(item)
    if report.rerouted:
        report.routed = route_due(conn, model, now, scan=False)
    return report
