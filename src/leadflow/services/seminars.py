"""Seminars and webinars: invitation → registration → reminder → attended / no-show →
follow-up, each step recorded per person in ``seminar_attendees`` so :func:`funnel` can
report every step's conversion (DOMAIN.md section 5).

- :func:`invite` plans ``seminar_invite`` emails (marketing: only to leads
  :func:`leadflow.services.nurture.send_blockers` allows) with the idempotency key
  ``seminar:{id}:invite:{lead}``, so inviting again never mails anyone twice.
- :func:`register` records the registration and a ``webinar_registered`` event (scoring
  reacts); a full seminar refuses with :class:`CapacityFull`.
- :func:`run_due` (the worker, every pass) plans reminders (transactional,
  ``seminar_reminder``) in the 24 hours before the start and, once attendance is known
  and the seminar has ended, the follow-ups: ``followup_attended`` (with the seminar's
  asset) or ``followup_no_show`` (the recording), for 7 days after the end.
- :func:`mark_attendance` records who came: ``webinar_attended`` (webinar) or
  ``event_attended`` (seminar) events, so scoring and the fast-pass rule for target
  accounts react; registered people who did not come are no-shows.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, case, exists, func, insert, select, update

from leadflow.adapters.db.engine import insert_ignore
from leadflow.adapters.db.rows import as_record
from leadflow.adapters.db.tables import (
    content_assets,
    email_sends,
    leads,
    opportunities,
    seminar_attendees,
    seminars,
    stage_changes,
)
from leadflow.core import errors
from leadflow.core.config import LeadModel
from leadflow.core.tracking import is_valid_email
from leadflow.services import segments as segment_service
from leadflow.services.events import LeadEvent, record_events_in
from leadflow.services.ingest import AfterIngest
from leadflow.services.mailing import plan_email

KEY_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
KINDS = ("seminar", "webinar")
REMINDER_WINDOW = timedelta(hours=24)
FOLLOWUP_WINDOW = timedelta(days=7)
DEFAULT_LENGTH = timedelta(hours=2)  # when a seminar has no end time
ATTENDED_EVENT = {"webinar": "webinar_attended", "seminar": "event_attended"}
REGISTERED_EVENT = "webinar_registered"
SEMINAR_CHANNEL = {"webinar": "webinar", "seminar": "events"}
MAX_CSV_BYTES = 5_000_000


class SeminarError(errors.InvalidInput):
    """Bad input; ``str()`` is ``<field>: <reason>``."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class CapacityFull(errors.Conflict, SeminarError):
    """Every place is taken."""


class NotFound(errors.NotFound):
    """No such seminar or lead."""


def send_key(seminar_id: int, kind: str, lead_id: int) -> str:
    """The idempotency key of a seminar email (kind: invite, reminder, followup_attended,
    followup_no_show)."""
    return f"seminar:{seminar_id}:{kind}:{lead_id}"


def _public(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: row[k]
        for k in (
            "id",
            "key",
            "title",
            "kind",
            "starts_at",
            "ends_at",
            "location",
            "asset_key",
            "capacity",
            "status",
            "created_at",
            "updated_at",
        )
    }


def _row(conn: Connection, seminar: str | int | Mapping[str, Any], *, lock: bool = False) -> Any:
    if isinstance(seminar, Mapping):
        seminar = int(seminar["id"])
    cond = seminars.c.id == seminar if isinstance(seminar, int) else seminars.c.key == seminar
    query = select(seminars).where(cond)
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).mappings().first()
    if row is None:
        raise NotFound(f"seminar {seminar!r} not found")
    return row


def _check_location(location: str | None) -> str | None:
    if location is None or not location.strip():
        return None
    location = location.strip()
    if len(location) > 2048:
        raise SeminarError("location", "longer than 2048 characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in location):
        raise SeminarError("location", "contains control characters")
    if "://" in location and not location.lower().startswith(("http://", "https://")):
        raise SeminarError("location", "a link must be http(s)")
    if location.lower().startswith(("javascript:", "data:", "vbscript:")):
        raise SeminarError("location", "a link must be http(s)")
    return location


def create(
    conn: Connection,
    *,
    key: str,
    title: str,
    starts_at: datetime,
    now: datetime,
    kind: str = "webinar",
    ends_at: datetime | None = None,
    location: str | None = None,
    asset_key: str | None = None,
    capacity: int | None = None,
) -> dict[str, Any]:
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        raise SeminarError("key", "use 1-64 lower-case letters, digits, - or _")
    if key == "funnel":  # GET /api/seminars/funnel is the report
        raise SeminarError("key", "'funnel' is reserved")
    if not isinstance(title, str) or not title.strip():
        raise SeminarError("title", "is empty")
    if len(title) > 255:
        raise SeminarError("title", "longer than 255 characters")
    if kind not in KINDS:
        raise SeminarError("kind", "must be seminar or webinar")
    if starts_at.tzinfo is None:
        raise SeminarError("starts_at", "needs a time zone")
    if ends_at is not None:
        if ends_at.tzinfo is None:
            raise SeminarError("ends_at", "needs a time zone")
        if ends_at <= starts_at:
            raise SeminarError("ends_at", "must be after starts_at")
    if capacity is not None and capacity < 1:
        raise SeminarError("capacity", "must be at least 1")
    if asset_key is not None:
        found = conn.execute(
            select(content_assets.c.id).where(content_assets.c.key == asset_key)
        ).first()
        if found is None:
            raise SeminarError("asset_key", f"no content asset {asset_key!r}")
    if conn.execute(select(seminars.c.id).where(seminars.c.key == key)).first() is not None:
        raise SeminarError("key", f"seminar {key!r} exists already")
    conn.execute(
        insert(seminars).values(
            key=key,
            title=title.strip(),
            kind=kind,
            starts_at=starts_at,
            ends_at=ends_at,
            location=_check_location(location),
            asset_key=asset_key,
            capacity=capacity,
            status="scheduled",
            created_at=now,
            updated_at=now,
        )
    )
    return _public(_row(conn, key))


def get(conn: Connection, seminar: str | int) -> dict[str, Any]:
    return _public(_row(conn, seminar))


def list_seminars(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(select(seminars).order_by(seminars.c.starts_at, seminars.c.id)).mappings()
    return [_public(as_record(r)) for r in rows]


def _touch(conn: Connection, seminar_id: int, lead_ids: Iterable[int], source: str) -> None:
    stmt = insert_ignore(conn.engine, seminar_attendees, "seminar_id", "lead_id")
    rows = [{"seminar_id": seminar_id, "lead_id": i, "source": source} for i in lead_ids]
    if rows:
        conn.execute(stmt, rows)


def _ends(sem: Mapping[str, Any]) -> datetime:
    ends: datetime | None = sem["ends_at"]
    return ends if ends is not None else sem["starts_at"] + DEFAULT_LENGTH


def _subject(sem: Mapping[str, Any], kind: str) -> str:
    title = " ".join(str(sem["title"]).split())
    return {
        "invite": f"You're invited: {title}",
        "reminder": f"Reminder: {title} starts soon",
        "followup_attended": f"Thank you for joining {title}",
        "followup_no_show": f"Sorry we missed you: the recording of {title}",
    }[kind]


def invite(
    conn: Connection,
    seminar: str | int | Mapping[str, Any],
    audience: Sequence[int] | str,
    model: LeadModel,
    now: datetime,
) -> dict[str, Any]:
    """Invite leads (a list of ids, or a segment key): plan one ``seminar_invite`` each
    for the leads the send rules allow. Returns ``{"invited": n, "already": n,
    "blocked": {reason: n}}``; ``invited_at`` is set for the newly invited."""
    from leadflow.services.nurture import send_blockers

    sem = _row(conn, seminar)
    if sem["status"] == "cancelled":
        raise SeminarError("seminar", f"{sem['key']} is cancelled")
    if isinstance(audience, str):
        lead_ids = segment_service.member_ids(conn, audience)
    else:
        lead_ids = sorted({int(i) for i in audience})
    blockers = send_blockers(conn, lead_ids, "marketing", model, now)
    invited: list[int] = []
    already = 0
    blocked: dict[str, int] = {}
    sid = int(sem["id"])
    for lead_id in lead_ids:
        reason = blockers.get(lead_id, "no_email")
        if reason is not None:
            blocked[reason] = blocked.get(reason, 0) + 1
            continue
        planned = plan_email(
            conn,
            idempotency_key=send_key(sid, "invite", lead_id),
            lead_id=lead_id,
            subject=_subject(sem, "invite"),
            now=now,
            category="marketing",
            template="seminar_invite",
            asset_key=sem["asset_key"],
            seminar_id=sid,
        )
        if planned is None:
            already += 1
        else:
            invited.append(lead_id)
    _touch(conn, sid, invited, "invite")
    if invited:
        conn.execute(
            update(seminar_attendees)
            .where(
                seminar_attendees.c.seminar_id == sid,
                seminar_attendees.c.lead_id.in_(invited),
                seminar_attendees.c.invited_at.is_(None),
            )
            .values(invited_at=now)
        )
    return {"invited": len(invited), "already": already, "blocked": blocked}


def register(
    conn: Connection,
    seminar: str | int | Mapping[str, Any],
    lead_id: int,
    now: datetime,
    *,
    after: Iterable[AfterIngest] = (),
) -> dict[str, Any]:
    """Register a lead (idempotent). Raises :class:`CapacityFull` when every place is
    taken, :class:`NotFound` for an unknown or erased lead."""
    sem = _row(conn, seminar, lock=True)  # FOR UPDATE on PostgreSQL: capacity holds
    sid = int(sem["id"])
    if sem["status"] == "cancelled":
        raise SeminarError("seminar", f"{sem['key']} is cancelled")
    if _ends(sem) <= now:
        raise SeminarError("seminar", f"{sem['key']} is over")
    known = conn.execute(
        select(leads.c.id).where(leads.c.id == lead_id, leads.c.erased_at.is_(None))
    ).first()
    if known is None:
        raise NotFound(f"lead {lead_id} not found")
    existing = conn.execute(
        select(seminar_attendees.c.registered_at).where(
            seminar_attendees.c.seminar_id == sid, seminar_attendees.c.lead_id == lead_id
        )
    ).first()
    if existing is not None and existing.registered_at is not None:
        return {"lead_id": lead_id, "registered_at": existing.registered_at, "new": False}
    if sem["capacity"] is not None:
        taken = conn.execute(
            select(func.count())
            .select_from(seminar_attendees)
            .where(
                seminar_attendees.c.seminar_id == sid,
                seminar_attendees.c.registered_at.is_not(None),
            )
        ).scalar_one()
        if taken >= sem["capacity"]:
            raise CapacityFull(
                "capacity", f"seminar {sem['key']} is full ({sem['capacity']} places)"
            )
    _touch(conn, sid, [lead_id], "register")
    conn.execute(
        update(seminar_attendees)
        .where(seminar_attendees.c.seminar_id == sid, seminar_attendees.c.lead_id == lead_id)
        .values(registered_at=now)
    )
    record_events_in(
        conn,
        [
            LeadEvent(
                lead_id=lead_id,
                name=REGISTERED_EVENT,
                at=now,
                message_id=f"seminar:{sid}:registered:{lead_id}",
                properties={"seminar": sem["key"], "title": sem["title"], "kind": sem["kind"]},
                channel=SEMINAR_CHANNEL[sem["kind"]],
            )
        ],
        now,
        after=after,
    )
    return {"lead_id": lead_id, "registered_at": now, "new": True}


def mark_attendance(
    conn: Connection,
    seminar: str | int | Mapping[str, Any],
    attended_lead_ids: Iterable[int],
    now: datetime,
    *,
    after: Iterable[AfterIngest] = (),
) -> dict[str, int]:
    """Record who attended (walk-ins included); registered people who did not are
    no-shows. Attendance events feed scoring and fast-pass rules. Re-marking is safe."""
    sem = _row(conn, seminar, lock=True)
    sid = int(sem["id"])
    wanted = sorted({int(i) for i in attended_lead_ids})
    present = sorted(
        int(i)
        for i in conn.execute(
            select(leads.c.id).where(leads.c.id.in_(wanted), leads.c.erased_at.is_(None))
        ).scalars()
    )
    unknown = sorted(set(wanted) - set(present))
    if unknown:
        raise NotFound(f"lead {unknown[0]} not found")
    _touch(conn, sid, present, "walk-in")
    if present:
        conn.execute(
            update(seminar_attendees)
            .where(
                seminar_attendees.c.seminar_id == sid,
                seminar_attendees.c.lead_id.in_(present),
                seminar_attendees.c.attended_at.is_(None),
            )
            .values(attended_at=now, no_show_at=None)
        )
    no_show = conn.execute(
        update(seminar_attendees)
        .where(
            seminar_attendees.c.seminar_id == sid,
            seminar_attendees.c.registered_at.is_not(None),
            seminar_attendees.c.attended_at.is_(None),
            seminar_attendees.c.no_show_at.is_(None),
        )
        .values(no_show_at=now)
    ).rowcount
    conn.execute(update(seminars).where(seminars.c.id == sid).values(status="held", updated_at=now))
    name = ATTENDED_EVENT[sem["kind"]]
    recorded = record_events_in(
        conn,
        [
            LeadEvent(
                lead_id=lead_id,
                name=name,
                at=now,
                message_id=f"seminar:{sid}:attended:{lead_id}",
                properties={"seminar": sem["key"], "title": sem["title"], "kind": sem["kind"]},
                channel=SEMINAR_CHANNEL[sem["kind"]],
            )
            for lead_id in present
        ],
        now,
        after=after,
    )
    return {"attended": len(present), "new_attended": recorded, "no_show": int(no_show or 0)}


def _plan_for(
    conn: Connection,
    sem: Mapping[str, Any],
    lead_ids: list[int],
    kind: str,
    category: str,
    model: LeadModel,
    now: datetime,
    column: Any,
) -> int:
    from leadflow.services.nurture import send_blockers

    if not lead_ids:
        return 0
    sid = int(sem["id"])
    blockers = send_blockers(conn, lead_ids, category, model, now)
    done: list[int] = []
    for lead_id in lead_ids:
        if blockers.get(lead_id, "no_email") is not None:
            continue
        plan_email(
            conn,
            idempotency_key=send_key(sid, kind, lead_id),
            lead_id=lead_id,
            subject=_subject(sem, kind),
            now=now,
            category=category,
            template="seminar_reminder" if kind == "reminder" else kind,
            asset_key=sem["asset_key"] if kind == "followup_attended" else None,
            seminar_id=sid,
        )
        done.append(lead_id)  # planned now or before (same key): the step is done
    if done:
        conn.execute(
            update(seminar_attendees)
            .where(seminar_attendees.c.seminar_id == sid, seminar_attendees.c.lead_id.in_(done))
            .values({column: now})
        )
    return len(done)


def run_due(conn: Connection, model: LeadModel, now: datetime) -> dict[str, int]:
    """Plan due reminders and follow-ups (the worker calls this every pass)."""
    counts = {"reminders": 0, "followups_attended": 0, "followups_no_show": 0}
    due = conn.execute(
        select(seminars).where(
            seminars.c.status != "cancelled",
            seminars.c.starts_at > now - FOLLOWUP_WINDOW - timedelta(days=30),
            seminars.c.starts_at <= now + REMINDER_WINDOW,
        )
    ).mappings()
    for sem in [as_record(r) for r in due]:
        sid = int(sem["id"])
        a = seminar_attendees.c
        if now < sem["starts_at"]:
            ids = _ids(
                conn,
                a.seminar_id == sid,
                a.registered_at.is_not(None),
                a.reminded_at.is_(None),
            )
            counts["reminders"] += _plan_for(
                conn, sem, ids, "reminder", "transactional", model, now, "reminded_at"
            )
            continue
        ends = _ends(sem)
        if not (ends <= now < ends + FOLLOWUP_WINDOW):
            continue
        attended = _ids(conn, a.seminar_id == sid, a.attended_at.is_not(None), _open())
        counts["followups_attended"] += _plan_for(
            conn, sem, attended, "followup_attended", "marketing", model, now, "followed_up_at"
        )
        no_show = _ids(conn, a.seminar_id == sid, a.no_show_at.is_not(None), _open())
        counts["followups_no_show"] += _plan_for(
            conn, sem, no_show, "followup_no_show", "marketing", model, now, "followed_up_at"
        )
    return counts


def _open() -> Any:
    return seminar_attendees.c.followed_up_at.is_(None)


def _ids(conn: Connection, *where: Any) -> list[int]:
    rows = conn.execute(
        select(seminar_attendees.c.lead_id).where(*where).order_by(seminar_attendees.c.lead_id)
    ).scalars()
    return [int(i) for i in rows]


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def funnel(conn: Connection, model: LeadModel, seminar: str | None = None) -> list[dict[str, Any]]:
    """Per seminar: invited, registered, reminded, attended, no_show, followed_up, and
    participants (registered or attended) who reached MQL (entered ``model``'s hand-off
    stage) / got an opportunity after the start, with the rate of each step; ``emails``
    counts each template's sends, opens and clicks."""
    a = seminar_attendees.c
    participant = a.registered_at.is_not(None) | a.attended_at.is_not(None)
    reached_mql = exists().where(
        stage_changes.c.lead_id == a.lead_id,
        stage_changes.c.to_stage == model.handoff_stage,
        stage_changes.c.at >= seminars.c.starts_at,
    )
    got_opportunity = exists().where(
        opportunities.c.lead_id == a.lead_id,
        opportunities.c.created_at >= seminars.c.starts_at,
    )

    def count_if(cond: Any) -> Any:
        return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)

    query = (
        select(
            seminars.c.id,
            seminars.c.key,
            seminars.c.title,
            seminars.c.kind,
            seminars.c.starts_at,
            seminars.c.status,
            count_if(a.invited_at.is_not(None)).label("invited"),
            count_if(a.registered_at.is_not(None)).label("registered"),
            count_if(a.reminded_at.is_not(None)).label("reminded"),
            count_if(a.attended_at.is_not(None)).label("attended"),
            count_if(a.no_show_at.is_not(None)).label("no_show"),
            count_if(a.followed_up_at.is_not(None)).label("followed_up"),
            count_if(and_(participant, reached_mql)).label("mql"),
            count_if(and_(participant, got_opportunity)).label("opportunity"),
        )
        .select_from(seminars.outerjoin(seminar_attendees, a.seminar_id == seminars.c.id))
        .group_by(
            seminars.c.id,
            seminars.c.key,
            seminars.c.title,
            seminars.c.kind,
            seminars.c.starts_at,
            seminars.c.status,
        )
        .order_by(seminars.c.starts_at, seminars.c.id)
    )
    if seminar is not None:
        query = query.where(seminars.c.key == seminar)
    rows = [dict(r) for r in conn.execute(query).mappings()]
    if seminar is not None and not rows:
        raise NotFound(f"seminar {seminar!r} not found")
    emails = _email_stats(conn, [int(r["id"]) for r in rows])
    out: list[dict[str, Any]] = []
    for r in rows:
        counts = {k: int(r[k]) for k in ("invited", "registered", "reminded", "attended")}
        counts |= {k: int(r[k]) for k in ("no_show", "followed_up", "mql", "opportunity")}
        participants = max(counts["registered"], counts["attended"])
        out.append(
            {
                "key": r["key"],
                "title": r["title"],
                "kind": r["kind"],
                "starts_at": r["starts_at"],
                "status": r["status"],
                **counts,
                "rates": {
                    "register": _rate(counts["registered"], counts["invited"]),
                    "attend": _rate(counts["attended"], counts["registered"]),
                    "no_show": _rate(counts["no_show"], counts["registered"]),
                    "follow_up": _rate(
                        counts["followed_up"], counts["attended"] + counts["no_show"]
                    ),
                    "mql": _rate(counts["mql"], participants),
                    "opportunity": _rate(counts["opportunity"], participants),
                },
                "emails": emails.get(int(r["id"]), {}),
            }
        )
    return out


def _email_stats(conn: Connection, seminar_ids: list[int]) -> dict[int, dict[str, Any]]:
    if not seminar_ids:
        return {}
    e = email_sends.c
    rows = conn.execute(
        select(
            e.seminar_id,
            e.template,
            func.count().label("planned"),
            func.count(e.sent_at).label("sent"),
            func.count(e.opened_at).label("opened"),
            func.count(e.clicked_at).label("clicked"),
        )
        .where(e.seminar_id.in_(seminar_ids))
        .group_by(e.seminar_id, e.template)
    ).mappings()
    out: dict[int, dict[str, Any]] = {}
    for r in rows:
        sent = int(r["sent"])
        out.setdefault(int(r["seminar_id"]), {})[str(r["template"])] = {
            "planned": int(r["planned"]),
            "sent": sent,
            "opened": int(r["opened"]),
            "clicked": int(r["clicked"]),
            "open_rate": _rate(int(r["opened"]), sent),
            "click_rate": _rate(int(r["clicked"]), sent),
        }
    return out


def lead_ids_for_emails(conn: Connection, emails: Iterable[str]) -> tuple[list[int], list[str]]:
    """Lead ids for addresses (lower-cased, trimmed) and the addresses not found."""
    wanted = sorted({e.strip().lower() for e in emails if e and e.strip()})
    found: dict[str, int] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        for r in conn.execute(
            select(leads.c.id, leads.c.email).where(
                leads.c.email.in_(chunk), leads.c.erased_at.is_(None)
            )
        ):
            found[str(r.email)] = int(r.id)
    return [found[e] for e in wanted if e in found], [e for e in wanted if e not in found]


def emails_from_csv(raw: bytes) -> list[str]:
    """Addresses from an attendee CSV (an ``email`` column, or one address per line)."""
    if len(raw) > MAX_CSV_BYTES:
        raise SeminarError("file", f"larger than {MAX_CSV_BYTES} bytes")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SeminarError("file", "not UTF-8 text") from None
    try:
        rows = [r for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)]
    except csv.Error as exc:  # e.g. a field over the csv module's 128 KB limit
        raise SeminarError("file", f"not a readable CSV ({exc})") from None
    if not rows:
        return []
    header = [h.strip().lower() for h in rows[0]]
    column = next((i for i, h in enumerate(header) if h in ("email", "e-mail", "이메일")), None)
    body = rows[1:]
    if column is None:  # no header: a plain list of addresses
        column, body = 0, rows
    emails = [r[column].strip() for r in body if len(r) > column and r[column].strip()]
    for n, e in enumerate(emails, start=1):
        if not is_valid_email(e):
            raise SeminarError(f"file: row {n} email", "not a valid address")
    return emails
