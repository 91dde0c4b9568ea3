"""Nurture programs at run time: enrolment by stage, due steps, the send rules.

Enrolment (:func:`sync_enrolments`, set-based, every worker pass)
    A lead whose current stage is one of a program's ``stages`` enters it (the dead end
    never does, nor an erased lead), unless an enrolment of that lead in that program is
    still *open*. ``exited_at`` marks when the lead left the program's stages: an active
    enrolment whose lead left them exits (``exit_reason='stage_changed'``); a completed
    enrolment, or one that left on a step's condition, stays open (blocking re-entry) until
    the lead leaves the stages. With ``reenroll: false`` a lead enters a program once ever.
    The first step is scheduled as due work ``step:{enrollment}:{index}``.

Steps (:func:`run_due_steps`)
    Claimed due rows run one per transaction, with the enrolment and the lead row locked
    (``FOR UPDATE`` on PostgreSQL; SQLite's write transaction is exclusive), so two workers
    never run the same step twice nor break the frequency cap between them. A send is
    planned with idempotency key ``program:{program}:{step}:{lead}``: the same step never
    reaches the same lead twice, even after re-enrolment. A send a rule forbids is
    recorded as an ``email_sends`` row with status ``skipped`` and ``skip_reason`` under
    the key ``skipped:program:{program}:{step}:{lead}:{enrollment}`` (so a later, eligible
    enrolment can still send the step); a frequency-cap block waits (the step is deferred
    to when the cap frees) instead of skipping.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection, Engine, and_, bindparam, exists, func, select, update
from sqlalchemy.exc import IntegrityError

from leadflow.adapters.db.engine import insert_ignore, is_postgres
from leadflow.adapters.db.tables import (
    accounts,
    content_assets,
    email_sends,
    events,
    form_submissions,
    lead_states,
    leads,
    program_enrollments,
    segment_members,
    segments,
    signals,
)
from leadflow.bootstrap import Services
from leadflow.core import errors
from leadflow.core import nurture as core
from leadflow.core.config import FrequencyCap, LeadModel, NurtureSpec, ProgramSpec
from leadflow.core.model import Event
from leadflow.services import content as content_service
from leadflow.services import duework, lifecycle
from leadflow.services.mailing import new_message_id, plan_email

log = logging.getLogger(__name__)

STEP_KIND = "program_step"
COUNTED_STATUSES = ("planned", "sending", "sent")


def nurture_of(model: LeadModel) -> NurtureSpec:
    return model.spec.nurture if model.spec.nurture is not None else NurtureSpec()


def programs_of(model: LeadModel) -> dict[str, ProgramSpec]:
    return {p.key: p for p in nurture_of(model).programs}


def step_key(enrollment_id: int, index: int) -> str:
    return f"step:{enrollment_id}:{index}"


def send_key(program_key: str, step_id: str, lead_id: int) -> str:
    return f"program:{program_key}:{step_id}:{lead_id}"


def stage_allows_marketing(model: LeadModel, stage: str) -> bool:
    spec = model.spec.stages.get(stage)
    return stage != model.dead_end_stage and (spec is None or spec.marketing_email)


# --------------------------------------------------------------------------- lead views


def _lead_query() -> Any:
    return (
        select(
            leads.c.id,
            leads.c.email,
            leads.c.first_name,
            leads.c.last_name,
            leads.c.title,
            leads.c.phone,
            leads.c.consent_status,
            leads.c.unsubscribed_at,
            leads.c.bounced_at,
            leads.c.erased_at,
            leads.c.attributes,
            lead_states.c.stage,
            lead_states.c.engagement,
            lead_states.c.fit_grade,
            lead_states.c.pause_until,
            accounts.c.name.label("company"),
            accounts.c.industry,
            accounts.c.country,
            accounts.c.employee_count,
        )
        .select_from(leads)
        .outerjoin(lead_states, lead_states.c.lead_id == leads.c.id)
        .outerjoin(accounts, accounts.c.id == leads.c.account_id)
    )


def _view(row: Any, model: LeadModel, consumed: frozenset[str] = frozenset()) -> core.LeadView:
    attributes: dict[str, Any] = {}
    for name in ("first_name", "last_name", "title", "phone", "company", "country"):
        if getattr(row, name) is not None:
            attributes[name] = getattr(row, name)
    if row.employee_count is not None:
        attributes["employee_count"] = row.employee_count
    attributes.update(row.attributes or {})
    return core.LeadView(
        lead_id=int(row.id),
        email=row.email,
        stage=row.stage or model.initial_stage,
        engagement=float(row.engagement or 0.0),
        fit_grade=row.fit_grade,
        industry=row.industry or attributes.get("industry"),
        consent_status=row.consent_status,
        unsubscribed_at=row.unsubscribed_at,
        bounced_at=row.bounced_at,
        erased=row.erased_at is not None,
        pause_until=row.pause_until,
        attributes=attributes,
        consumed=consumed,
    )


# Statements of the per-step hot path, built once (a step runs about ten of them).
_LEAD = _lead_query().where(leads.c.id == bindparam("lead_id"))
_LEAD_LOCKED = _LEAD.with_for_update(of=leads)
_ENROLMENT = select(program_enrollments).where(program_enrollments.c.id == bindparam("eid"))
_ENROLMENT_LOCKED = _ENROLMENT.with_for_update(of=program_enrollments)
_RECENT = select(email_sends.c.planned_at).where(
    email_sends.c.lead_id == bindparam("lead_id"),
    email_sends.c.category == "marketing",
    email_sends.c.status.in_(COUNTED_STATUSES),
    email_sends.c.planned_at > bindparam("start"),
    email_sends.c.planned_at <= bindparam("now"),
)
_SENT_ASSETS = select(email_sends.c.asset_key).where(
    email_sends.c.lead_id == bindparam("lead_id"),
    email_sends.c.asset_key.is_not(None),
    email_sends.c.status.in_(COUNTED_STATUSES),
)
_FORM_ASSETS = select(form_submissions.c.asset_key).where(
    form_submissions.c.lead_id == bindparam("lead_id"), form_submissions.c.asset_key.is_not(None)
)
_CONSUMING_EVENTS = select(events.c.type, events.c.properties, events.c.page_url).where(
    events.c.lead_id == bindparam("lead_id"),
    (events.c.type == "page")
    | ((events.c.type == "track") & (events.c.name == "content_download")),
)
_ADVANCE = (
    update(program_enrollments)
    .where(program_enrollments.c.id == bindparam("eid"))
    .values(step_index=bindparam("next_index"), last_step_at=bindparam("at"))
)


def recent_marketing_sends(
    conn: Connection, lead_ids: Sequence[int], cap: FrequencyCap, now: datetime
) -> dict[int, list[datetime]]:
    """``planned_at`` of each lead's marketing emails (planned, sending or sent) in the
    cap window ending at ``now``."""
    out: dict[int, list[datetime]] = {i: [] for i in lead_ids}
    if not lead_ids:
        return out
    rows = conn.execute(
        select(email_sends.c.lead_id, email_sends.c.planned_at).where(
            email_sends.c.lead_id.in_(list(lead_ids)),
            email_sends.c.category == "marketing",
            email_sends.c.status.in_(COUNTED_STATUSES),
            email_sends.c.planned_at > now - timedelta(days=cap.days),
            email_sends.c.planned_at <= now,
        )
    )
    for lead_id, planned_at in rows:
        out[int(lead_id)].append(planned_at)
    return out


def send_blockers(
    conn: Connection, lead_ids: Iterable[int], category: str, model: LeadModel, now: datetime
) -> dict[int, str | None]:
    """For each lead, the first send rule that forbids ``category`` email now (see
    :func:`leadflow.core.nurture.send_blockers`), or None when it may be sent. A lead id
    that does not exist gets ``no_email``."""
    ids = sorted({int(i) for i in lead_ids})
    if not ids:
        return {}
    cap = nurture_of(model).frequency_cap
    rows = {int(r.id): r for r in conn.execute(_lead_query().where(leads.c.id.in_(ids)))}
    recent = recent_marketing_sends(conn, list(rows), cap, now)
    out: dict[int, str | None] = {}
    for lead_id in ids:
        row = rows.get(lead_id)
        if row is None:
            out[lead_id] = "no_email"
            continue
        view = _view(row, model)
        out[lead_id] = core.send_blockers(
            view,
            category,
            stage_allows_marketing(model, view.stage),
            now,
            recent.get(lead_id, []),
            cap,
        )
    return out


def _url_path(url: str | None) -> str | None:
    if not url:
        return None
    path = urlsplit(url).path.lower() or "/"
    return path.rstrip("/") or "/"


def consumed_assets(conn: Connection, lead_id: int, assets: Sequence[core.Asset]) -> frozenset[str]:
    """Assets the lead already has: emailed (planned or sent), downloaded
    (``content_download`` with ``properties.asset_key``), unlocked by a form, or viewed (a
    page whose path is the asset URL's path)."""
    params = {"lead_id": lead_id}
    consumed: set[str] = set(conn.execute(_SENT_ASSETS, params).scalars())
    consumed.update(k for k in conn.execute(_FORM_ASSETS, params).scalars() if k)
    by_path: dict[str, str] = {}
    for asset in assets:
        path = _url_path(asset.url)
        if path is not None:
            by_path.setdefault(path, asset.key)
    for kind, properties, page_url in conn.execute(_CONSUMING_EVENTS, params):
        if kind == "track":
            key = (properties or {}).get("asset_key")
            if isinstance(key, str):
                consumed.add(key)
        else:
            path = _url_path(page_url)
            if path is not None and path in by_path:
                consumed.add(by_path[path])
    return frozenset(consumed)


def load_assets(conn: Connection) -> list[core.Asset]:
    rows = conn.execute(
        select(content_assets)
        .where(content_assets.c.active.is_(True))
        .order_by(content_assets.c.key)
    ).mappings()
    return [
        core.Asset(
            key=r["key"],
            title=r["title"],
            type=r["type"],
            stage=r["stage"],
            gated=bool(r["gated"]),
            industries=tuple(r["industries"] or ()),
            url=r["url"],
        )
        for r in rows
    ]


def _lead_events(conn: Connection, lead_id: int, since: datetime | None) -> list[Event]:
    """The lead's events, read as scoring reads them (``lifecycle.event_from_row``)."""
    query = select(*lifecycle.EVENT_COLUMNS).where(events.c.lead_id == lead_id)
    if since is not None:
        query = query.where(events.c.occurred_at > since)
    query = query.order_by(events.c.occurred_at, events.c.id)
    return [lifecycle.event_from_row(r) for r in conn.execute(query)]


# --------------------------------------------------------------------------- enrolment


@dataclass(slots=True)
class SyncReport:
    enrolled: int = 0
    exited: int = 0


def _schedule_first(
    conn: Connection, program: ProgramSpec, enrolled: Iterable[tuple[int, int, datetime]]
) -> None:
    wait = timedelta(days=program.steps[0].wait_days)
    duework.schedule_many(
        conn,
        [
            {
                "key": step_key(eid, 0),
                "kind": STEP_KIND,
                "ref_id": eid,
                "data": {"program": program.key, "step": 0, "lead_id": lead_id},
                "due_at": at + wait,
                "created_at": at,
            }
            for eid, lead_id, at in enrolled
        ],
    )


def _in_stages(stages: Sequence[str]) -> Any:
    return exists().where(
        lead_states.c.lead_id == program_enrollments.c.lead_id, lead_states.c.stage.in_(stages)
    )


def _member_of(segment_key: str, lead_id: Any) -> Any:
    """The lead is a member of the saved segment ``segment_key``."""
    return exists().where(
        segment_members.c.lead_id == lead_id,
        segment_members.c.segment_id == segments.c.id,
        segments.c.key == segment_key,
    )


def _in_audience(program: ProgramSpec, stages: Sequence[str]) -> Any:
    """An enrolment's lead is still in the program's stages (and segment, if any)."""
    inside = _in_stages(stages)
    if program.segment is not None:
        inside = and_(inside, _member_of(program.segment, program_enrollments.c.lead_id))
    return inside


def sync_enrolments(conn: Connection, model: LeadModel, now: datetime) -> SyncReport:
    """Enrol leads by stage (and segment membership, for programs with a ``segment``) and
    take out those who left (set-based; see the module doc)."""
    report = SyncReport()
    programs = programs_of(model)
    dead_end = model.dead_end_stage
    # Programs no longer in the model: their active enrolments end.
    gone = update(program_enrollments).where(program_enrollments.c.status == "active")
    if programs:
        gone = gone.where(program_enrollments.c.program_key.not_in(list(programs)))
    result = conn.execute(
        gone.values(status="exited", active_key=None, exited_at=now, exit_reason="program_removed")
    )
    report.exited += max(result.rowcount or 0, 0)
    erased = exists().where(
        leads.c.id == program_enrollments.c.lead_id, leads.c.erased_at.is_not(None)
    )
    result = conn.execute(
        update(program_enrollments)
        .where(program_enrollments.c.status == "active", erased)
        .values(status="exited", active_key=None, exited_at=now, exit_reason="erased")
    )
    report.exited += max(result.rowcount or 0, 0)
    for program in programs.values():
        stages = [s for s in program.stages if s != dead_end]
        mine = and_(
            program_enrollments.c.program_key == program.key,
            program_enrollments.c.exited_at.is_(None),
            ~_in_audience(program, stages),
        )
        result = conn.execute(
            update(program_enrollments)
            .where(mine, program_enrollments.c.status == "active")
            .values(status="exited", active_key=None, exited_at=now, exit_reason="stage_changed")
        )
        report.exited += max(result.rowcount or 0, 0)
        # Completed (or condition-exited) enrolments: the lead left, so it may enter again.
        conn.execute(
            update(program_enrollments)
            .where(mine, program_enrollments.c.status != "active")
            .values(exited_at=now)
        )
        if not stages:
            continue
        blocking = [
            program_enrollments.c.program_key == program.key,
            program_enrollments.c.lead_id == lead_states.c.lead_id,
        ]
        if program.reenroll:
            blocking.append(program_enrollments.c.exited_at.is_(None))
        wanted = select(lead_states.c.lead_id).join(leads, leads.c.id == lead_states.c.lead_id)
        wanted = wanted.where(
            lead_states.c.stage.in_(stages),
            leads.c.erased_at.is_(None),
            ~exists().where(*blocking),
        )
        if program.segment is not None:
            wanted = wanted.where(_member_of(program.segment, lead_states.c.lead_id))
        candidates = list(conn.execute(wanted.order_by(lead_states.c.lead_id)).scalars())
        for start in range(0, len(candidates), 1000):
            chunk = candidates[start : start + 1000]
            rows = conn.execute(
                insert_ignore(conn.engine, program_enrollments, "active_key").returning(
                    program_enrollments.c.id, program_enrollments.c.lead_id
                ),
                [
                    {
                        "program_key": program.key,
                        "lead_id": lead_id,
                        "active_key": f"{program.key}:{lead_id}",
                        "status": "active",
                        "step_index": 0,
                        "enrolled_at": now,
                    }
                    for lead_id in chunk
                ],
            ).all()
            _schedule_first(conn, program, [(int(r.id), int(r.lead_id), now) for r in rows])
            report.enrolled += len(rows)
    return report


class EnrolError(errors.LeadflowError, ValueError):
    """A manual enrolment refused."""


class EnrolNotFound(errors.NotFound, EnrolError):
    """No such program in the active model, or no such lead."""


class EnrolRefused(errors.Conflict, EnrolError):
    """The rules refuse it (already enrolled, dead end, erased, wrong stage)."""


def enrol(
    conn: Connection, model: LeadModel, program_key: str, lead_id: int, now: datetime
) -> dict[str, Any]:
    """Enrol one lead by hand (ignores ``reenroll``); the lead must be in one of the
    program's stages (otherwise the next sync would take it out again)."""
    program = programs_of(model).get(program_key)
    if program is None:
        raise EnrolNotFound(f"program {program_key!r} not found in the active model")
    row = conn.execute(_lead_query().where(leads.c.id == lead_id)).first()
    if row is None:
        raise EnrolNotFound(f"lead {lead_id} not found")
    if row.erased_at is not None:
        raise EnrolRefused(f"lead {lead_id} was erased")
    stage = row.stage or model.initial_stage
    if stage == model.dead_end_stage:
        raise EnrolRefused(f"lead {lead_id} is in the dead end and is never nurtured")
    if stage not in program.stages:
        raise EnrolRefused(
            f"lead {lead_id} is in stage {stage!r}; program {program_key!r} takes stages "
            f"{', '.join(program.stages)}",
        )
    new_id = conn.execute(
        insert_ignore(conn.engine, program_enrollments, "active_key")
        .values(
            program_key=program_key,
            lead_id=lead_id,
            active_key=f"{program_key}:{lead_id}",
            status="active",
            step_index=0,
            enrolled_at=now,
        )
        .returning(program_enrollments.c.id)
    ).scalar_one_or_none()
    if new_id is None:
        raise EnrolRefused(f"lead {lead_id} is already enrolled in program {program_key!r}")
    _schedule_first(conn, program, [(int(new_id), lead_id, now)])
    return get_enrolment(conn, int(new_id)) or {}


def get_enrolment(conn: Connection, enrollment_id: int) -> dict[str, Any] | None:
    row = (
        conn.execute(select(program_enrollments).where(program_enrollments.c.id == enrollment_id))
        .mappings()
        .first()
    )
    return dict(row) if row is not None else None


def list_enrolments(
    conn: Connection, program_key: str, *, status: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    query = (
        select(
            program_enrollments.c.id,
            program_enrollments.c.program_key,
            program_enrollments.c.lead_id,
            program_enrollments.c.status,
            program_enrollments.c.step_index,
            program_enrollments.c.enrolled_at,
            program_enrollments.c.last_step_at,
            program_enrollments.c.exited_at,
            program_enrollments.c.exit_reason,
            leads.c.email,
            lead_states.c.stage,
        )
        .join(leads, leads.c.id == program_enrollments.c.lead_id)
        .outerjoin(lead_states, lead_states.c.lead_id == program_enrollments.c.lead_id)
        .where(program_enrollments.c.program_key == program_key)
        .order_by(program_enrollments.c.id.desc())
        .limit(limit)
    )
    if status is not None:
        query = query.where(program_enrollments.c.status == status)
    return [dict(r) for r in conn.execute(query).mappings()]


def program_stats(conn: Connection, model: LeadModel) -> list[dict[str, Any]]:
    """Every program of the active model with enrolment counts and, per step, the sends
    (planned / sent / failed / skipped by reason), opens, clicks and who waits at it."""
    programs = programs_of(model)
    enrol_counts: dict[str, Counter[str]] = {k: Counter() for k in programs}
    at_step: dict[tuple[str, int], int] = {}
    for key, status, step_index, n in conn.execute(
        select(
            program_enrollments.c.program_key,
            program_enrollments.c.status,
            program_enrollments.c.step_index,
            func.count(),
        ).group_by(
            program_enrollments.c.program_key,
            program_enrollments.c.status,
            program_enrollments.c.step_index,
        )
    ):
        if key not in enrol_counts:
            continue
        enrol_counts[key][status] += int(n)
        if status == "active":
            at_step[(key, int(step_index))] = int(n)
    sends: dict[tuple[str, str], dict[str, Any]] = {}
    for key, step_id, status, reason, n, opens, clicks in conn.execute(
        select(
            email_sends.c.program_key,
            email_sends.c.step_id,
            email_sends.c.status,
            email_sends.c.skip_reason,
            func.count(),
            func.count(email_sends.c.opened_at),
            func.count(email_sends.c.clicked_at),
        )
        .where(email_sends.c.program_key.is_not(None))
        .group_by(
            email_sends.c.program_key,
            email_sends.c.step_id,
            email_sends.c.status,
            email_sends.c.skip_reason,
        )
    ):
        s = sends.setdefault(
            (key, step_id),
            {
                "planned": 0,
                "sending": 0,
                "sent": 0,
                "failed": 0,
                "skipped": {},
                "opens": 0,
                "clicks": 0,
            },
        )
        if status == "skipped":
            s["skipped"][reason or "unknown"] = s["skipped"].get(reason or "unknown", 0) + int(n)
        else:
            s[status] = s.get(status, 0) + int(n)
        s["opens"] += int(opens)
        s["clicks"] += int(clicks)
    out: list[dict[str, Any]] = []
    for key, program in programs.items():
        counts = enrol_counts[key]
        steps = []
        for i, step in enumerate(program.steps):
            s = sends.get(
                (key, step.id),
                {
                    "planned": 0,
                    "sending": 0,
                    "sent": 0,
                    "failed": 0,
                    "skipped": {},
                    "opens": 0,
                    "clicks": 0,
                },
            )
            steps.append(
                {
                    "index": i,
                    "id": step.id,
                    "wait_days": step.wait_days,
                    "action": [
                        a
                        for a, v in (
                            ("send", step.send),
                            ("set", step.set),
                            ("notify", step.notify),
                        )
                        if v
                    ],
                    "waiting": at_step.get((key, i), 0),
                    **s,
                }
            )
        out.append(
            {
                "key": key,
                "name": program.name.en,
                "name_ko": program.name.ko,
                "stages": list(program.stages),
                "reenroll": program.reenroll,
                "enrolled": sum(counts.values()),
                "active": counts.get("active", 0),
                "completed": counts.get("completed", 0),
                "exited": counts.get("exited", 0),
                "steps": steps,
            }
        )
    return out


# --------------------------------------------------------------------------- due steps


@dataclass(slots=True)
class StepReport:
    claimed: int = 0
    planned: int = 0
    ran: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    deferred: int = 0
    exited: int = 0
    completed: int = 0
    stale: int = 0
    failed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "claimed": self.claimed,
            "planned": self.planned,
            "ran": self.ran,
            "skipped": dict(self.skipped),
            "duplicates": self.duplicates,
            "deferred": self.deferred,
            "exited": self.exited,
            "completed": self.completed,
            "stale": self.stale,
            "failed": self.failed,
        }


def _sync_content(engine: Engine, model: LeadModel, now: datetime) -> None:
    for attempt in range(3):
        try:
            with engine.begin() as conn:
                content_service.sync_from_model(conn, model, now)
            return
        except IntegrityError:  # another worker inserted the same asset first
            if attempt == 2:
                raise


def _locked(conn: Connection, plain: Any, locking: Any, params: dict[str, Any]) -> Any:
    """The row, locked until commit on PostgreSQL (SQLite's write transaction is
    exclusive already)."""
    return conn.execute(locking if is_postgres(conn.engine) else plain, params).first()


def _record_skip(
    conn: Connection,
    view: core.LeadView,
    program: ProgramSpec,
    step_id: str,
    enrollment_id: int,
    send: core.PlannedSend,
    reason: str,
    now: datetime,
) -> None:
    conn.execute(
        insert_ignore(conn.engine, email_sends, "idempotency_key").values(
            idempotency_key=f"skipped:{send_key(program.key, step_id, view.lead_id)}:"
            f"{enrollment_id}",
            message_id=new_message_id(),
            lead_id=view.lead_id,
            category=send.category,
            program_key=program.key,
            step_id=step_id,
            template=send.template,
            asset_key=send.asset.key if send.asset else None,
            to_email=view.email or "",
            subject=send.subject,
            status="skipped",
            skip_reason=reason,
            attempts=0,
            planned_at=now,
        )
    )


def _notify(
    conn: Connection,
    model: LeadModel,
    lead_id: int,
    program: ProgramSpec,
    step_id: str,
    note: str,
    enrollment_id: int,
    now: datetime,
) -> None:
    # Unique on (name, lead, at, rule): the same step's note at the same moment is one signal.
    conn.execute(
        insert_ignore(conn.engine, signals, "name", "lead_id", "at", "rule").values(
            name="program.notify",
            lead_id=lead_id,
            at=now,
            rule=f"program:{program.key}:{step_id}",
            model_version=model.version,
            data={
                "program": program.key,
                "step": step_id,
                "note": note,
                "enrollment_id": enrollment_id,
            },
            created_at=now,
        )
    )


def _close(conn: Connection, enrollment_id: int, now: datetime, **values: Any) -> None:
    conn.execute(
        update(program_enrollments)
        .where(program_enrollments.c.id == enrollment_id)
        .values(active_key=None, last_step_at=now, **values)
    )


def run_step(
    conn: Connection,
    model: LeadModel,
    work: Mapping[str, Any],
    now: datetime,
    assets: Sequence[core.Asset],
) -> str:
    """Run one claimed ``program_step`` row inside the caller's transaction; returns the
    outcome (planned, skipped:<reason>, duplicate, deferred, exited, completed, stale...)."""
    data = work.get("data") or {}
    step_index = int(data.get("step", -1))
    enrolment = _locked(conn, _ENROLMENT, _ENROLMENT_LOCKED, {"eid": work["ref_id"]})
    if enrolment is None or enrolment.status != "active" or enrolment.step_index != step_index:
        duework.cancel(conn, work["id"], now)
        return "stale"
    program = programs_of(model).get(enrolment.program_key)
    if program is None:
        _close(
            conn, enrolment.id, now, status="exited", exited_at=now, exit_reason="program_removed"
        )
        duework.cancel(conn, work["id"], now)
        return "exited"
    lead_row = _locked(conn, _LEAD, _LEAD_LOCKED, {"lead_id": enrolment.lead_id})
    if lead_row is None:
        duework.cancel(conn, work["id"], now)
        return "stale"
    if step_index >= len(program.steps):
        _close(conn, enrolment.id, now, status="completed")
        duework.complete(conn, work["id"], now)
        return "completed"
    step = program.steps[step_index]
    nurture = nurture_of(model)
    consumed: frozenset[str] = frozenset()
    if step.send is not None and step.send.asset == "next_best":
        consumed = consumed_assets(conn, enrolment.lead_id, assets)
    view = _view(lead_row, model, consumed)
    lead_events: list[Event] = []
    if step.when is not None and step.when.event is not None:
        since = now - timedelta(days=step.when.within_days) if step.when.within_days else None
        lead_events = _lead_events(conn, enrolment.lead_id, since)
    recent: list[datetime] = []
    if step.send is not None and step.send.category == "marketing":
        start = now - timedelta(days=nurture.frequency_cap.days)
        params = {"lead_id": view.lead_id, "start": start, "now": now}
        recent = list(conn.execute(_RECENT, params).scalars())
    decision = core.decide_step(
        program,
        step_index,
        view,
        assets=assets,
        content_stages=model.content_stages,
        events=lead_events,
        now=now,
        stage_allows_marketing=stage_allows_marketing(model, view.stage),
        recent_marketing_sends=recent,
        cap=nurture.frequency_cap,
    )
    if decision.action == "wait":
        assert decision.wait_until is not None
        duework.defer(conn, work["id"], max(decision.wait_until, now))
        return "deferred"
    if decision.action == "exit":
        _close(conn, enrolment.id, now, status="exited", exit_reason=f"condition:{step.id}")
        duework.complete(conn, work["id"], now)
        return "exited"
    outcome = "skipped:condition"
    if decision.action == "run":
        outcome = "ran"
        if decision.send is not None:
            send = decision.send
            if decision.blocked is not None:
                _record_skip(
                    conn, view, program, step.id, enrolment.id, send, decision.blocked, now
                )
                outcome = f"skipped:{decision.blocked}"
            else:
                new_id = plan_email(
                    conn,
                    idempotency_key=send_key(program.key, step.id, view.lead_id),
                    lead_id=view.lead_id,
                    subject=send.subject,
                    now=now,
                    category=send.category,
                    template=send.template,
                    asset_key=send.asset.key if send.asset else None,
                    program_key=program.key,
                    step_id=step.id,
                )
                outcome = "planned" if new_id is not None else "duplicate"
        if decision.set_fields:
            attributes = dict(lead_row.attributes or {})
            attributes.update(decision.set_fields)
            conn.execute(
                update(leads)
                .where(leads.c.id == view.lead_id)
                .values(attributes=attributes, updated_at=now)
            )
        if decision.notify:
            _notify(conn, model, view.lead_id, program, step.id, decision.notify, enrolment.id, now)
    _advance(conn, program, enrolment, step_index, now)
    duework.complete(conn, work["id"], now)
    return outcome


def _advance(
    conn: Connection, program: ProgramSpec, enrolment: Any, step_index: int, now: datetime
) -> None:
    following = step_index + 1
    if following >= len(program.steps):
        _close(conn, enrolment.id, now, status="completed", step_index=following)
        return
    conn.execute(_ADVANCE, {"eid": enrolment.id, "next_index": following, "at": now})
    duework.schedule(
        conn,
        step_key(enrolment.id, following),
        STEP_KIND,
        now + timedelta(days=program.steps[following].wait_days),
        ref_id=enrolment.id,
        data={"program": program.key, "step": following, "lead_id": enrolment.lead_id},
        created_at=now,
    )


def run_due_steps(
    services: Services, now: datetime, worker_id: str, limit: int = 500
) -> StepReport:
    """Claim due program steps (up to ``limit``) and run each in its own transaction."""
    report = StepReport()
    engine = services.engine
    with engine.begin() as conn:
        model = services.models.active(conn, now)
    claimed = duework.claim(engine, worker_id, now, [STEP_KIND], limit)
    report.claimed = len(claimed)
    if not claimed:
        return report
    _sync_content(engine, model, now)
    with engine.connect() as conn:
        assets = load_assets(conn)
    for work in claimed:
        try:
            with engine.begin() as conn:
                outcome = run_step(conn, model, work, now, assets)
        except Exception as exc:  # the step stays due: retried with back-off
            log.exception("program step %s failed", work["key"])
            report.failed += 1
            with engine.begin() as conn:  # back-off: duework's retry policy
                duework.retry(conn, work["id"], now, f"{exc.__class__.__name__}: {exc}")
            continue
        if outcome == "planned":
            report.planned += 1
        elif outcome.startswith("skipped:"):
            report.skipped[outcome.split(":", 1)[1]] += 1
        elif outcome == "ran":
            report.ran += 1
        elif outcome == "duplicate":
            report.duplicates += 1
        elif outcome == "deferred":
            report.deferred += 1
        elif outcome == "exited":
            report.exited += 1
        elif outcome == "completed":
            report.completed += 1
        elif outcome == "stale":
            report.stale += 1
    return report
