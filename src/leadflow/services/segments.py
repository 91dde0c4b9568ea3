"""Segments: saved lists defined by criteria, kept current, and synced to ad audiences.

- :func:`members_query` compiles :class:`~leadflow.core.segments.Criteria` into ONE SQL
  query over ``leads``, ``lead_states``, ``accounts``, ``events`` and
  ``program_enrollments`` (SQLAlchemy Core, the same on SQLite and PostgreSQL; every value
  from the criteria is a bound parameter). Erased leads are never members.
- :func:`refresh` brings ``segment_members`` in line with the query and appends each join
  and leave to ``segment_changes`` (the audience-sync feed, ``GET .../changes?after=``).
  For a segment with ``sync`` on it also writes ``segment.joined`` / ``segment.left``
  rows to the ``signals`` outbox, which the webhook worker delivers as events of those
  types. Their ``data`` holds what customer-match style ad audiences (Google, Meta,
  LinkedIn) need: ``segment``, ``segment_name``, ``email`` and ``email_sha256`` (SHA-256
  hex of the trimmed, lower-cased address). A lead that left because it was erased has no
  address any more: its ``segment.left`` carries only the hash remembered from its join,
  enough to remove it from the audience.
- :func:`refresh_all` refreshes every segment, each in its own transaction: the worker
  calls it once per pass.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Select,
    String,
    and_,
    case,
    cast,
    delete,
    false,
    func,
    insert,
    literal,
    not_,
    or_,
    select,
    true,
    update,
)

from leadflow.adapters.db.engine import is_postgres
from leadflow.adapters.db.rows import as_record
from leadflow.adapters.db.tables import (
    accounts,
    events,
    lead_models,
    lead_states,
    leads,
    program_enrollments,
    segment_changes,
    segment_members,
    segments,
    signals,
)
from leadflow.core import errors
from leadflow.core.segments import (
    Criteria,
    CriteriaError,
    EventRule,
    Range,
    check_key,
    glob_to_like,
    parse_criteria,
)
from leadflow.core.tracking import email_hash

log = logging.getLogger(__name__)

SEGMENT_JOINED = "segment.joined"
SEGMENT_LEFT = "segment.left"
SIGNAL_NAMES = (SEGMENT_JOINED, SEGMENT_LEFT)


class NotFound(errors.NotFound):
    """No segment with this key."""


class Conflict(errors.Conflict):
    """A segment with this key exists already."""


# --------------------------------------------------------------------------- compiling


def _range(column: Any, rng: Range | None) -> list[ColumnElement[bool]]:
    if rng is None:
        return []
    found: list[ColumnElement[bool]] = []
    if rng.min is not None:
        found.append(column >= rng.min)
    if rng.max is not None:
        found.append(column <= rng.max)
    return found


def _lower_in(column: Any, values: Iterable[str]) -> ColumnElement[bool]:
    return func.lower(column).in_(sorted({v.lower() for v in values}))


def _attribute(name: str, values: list[Any], pg: bool) -> ColumnElement[bool]:
    element = leads.c.attributes[name]
    texts = [str(v).lower() for v in values if not isinstance(v, bool)]
    texts += [str(int(v)) for v in values if isinstance(v, float) and v.is_integer()]
    conds: list[ColumnElement[bool]] = []
    if texts:
        conds.append(func.lower(cast(element.as_string(), String)).in_(sorted(set(texts))))
    for flag in sorted({v for v in values if isinstance(v, bool)}):
        word = "true" if flag else "false"
        if pg:
            conds.append(func.jsonb_typeof(element) == "boolean")
            conds[-1] = and_(conds[-1], element.as_string() == word)
        else:
            path = '$."' + name + '"'  # the name is validated: no quotes or backslashes
            conds.append(func.json_type(leads.c.attributes, path) == word)
    return or_(*conds)


def _url_path(pg: bool) -> Any:
    """The path part of ``events.page_url`` (scheme and host removed), lower-cased."""
    pos = func.strpos if pg else func.instr
    url = events.c.page_url
    rest = case((pos(url, "://") > 0, func.substr(url, pos(url, "://") + 3)), else_=url)
    path = case((pos(rest, "/") > 0, func.substr(rest, pos(rest, "/"))), else_="/")
    return func.lower(path)


def _event(rule: EventRule, now: datetime, pg: bool) -> ColumnElement[bool]:
    where: list[ColumnElement[bool]] = [events.c.lead_id.is_not(None)]
    if rule.type is not None:
        where.append(events.c.type == rule.type)
    if rule.name is not None:
        where.append(events.c.name == rule.name)
    if rule.within_days is not None:
        where.append(events.c.occurred_at >= now - timedelta(days=rule.within_days))
        where.append(events.c.occurred_at <= now)
    if rule.path is not None:
        pattern = glob_to_like(rule.path)
        path = _url_path(pg)
        where.append(events.c.page_url.is_not(None))
        where.append(
            or_(
                path.like(pattern, escape="\\"),
                path.like(pattern + "?%", escape="\\"),
                path.like(pattern + "#%", escape="\\"),
            )
        )
    sub = select(events.c.lead_id).where(*where).group_by(events.c.lead_id)
    if rule.min_count > 1:
        sub = sub.having(func.count() >= rule.min_count)
    return leads.c.id.in_(sub)


def condition(criteria: Criteria, now: datetime, *, pg: bool) -> ColumnElement[bool]:
    """The WHERE condition (over leads ⟕ lead_states ⟕ accounts) for ``criteria``."""
    c = criteria
    conds: list[ColumnElement[bool]] = []
    if c.stage is not None:
        conds.append(lead_states.c.stage.in_(c.stage))
    conds += _range(lead_states.c.engagement, c.score)
    conds += _range(lead_states.c.fit, c.fit)
    if c.fit_grade is not None:
        conds.append(lead_states.c.fit_grade.in_(c.fit_grade))
    for name, values in sorted((c.attributes or {}).items()):
        conds.append(_attribute(name, values, pg))
    if c.lead is not None:
        if c.lead.source is not None:
            conds.append(_lower_in(leads.c.source, c.lead.source))
        if c.lead.consent is not None:
            conds.append(leads.c.consent_status.in_(c.lead.consent))
        if c.lead.has_email is not None:
            has = leads.c.email.is_not(None)
            conds.append(has if c.lead.has_email else leads.c.email.is_(None))
    if c.account is not None:
        a = c.account
        if a.industry is not None:
            conds.append(_lower_in(accounts.c.industry, a.industry))
        if a.country is not None:
            conds.append(_lower_in(accounts.c.country, a.country))
        conds += _range(accounts.c.employee_count, a.employee_count)
        if a.is_target is not None:
            target = accounts.c.is_target.is_(True)
            conds.append(target if a.is_target else not_(func.coalesce(target, false())))
        if a.owner is not None:
            conds.append(accounts.c.owner.in_(a.owner))
    for rule in c.event_rules():
        conds.append(_event(rule, now, pg))
    if c.program is not None:
        conds.append(
            leads.c.id.in_(
                select(program_enrollments.c.lead_id).where(
                    program_enrollments.c.program_key == c.program.key,
                    program_enrollments.c.status.in_(c.program.status),
                )
            )
        )
    if c.all:
        conds.append(and_(*(condition(x, now, pg=pg) for x in c.all)))
    if c.any:
        conds.append(or_(*(condition(x, now, pg=pg) for x in c.any)))
    if c.not_ is not None:
        # NOT over SQL's three-valued logic: "unknown" (no state, no account) is "not in".
        inner = condition(c.not_, now, pg=pg)
        conds.append(case((inner, literal(1)), else_=literal(0)) == 0)
    return and_(true(), *conds)


def members_query(criteria: Criteria, now: datetime, *, pg: bool) -> Select[Any]:
    """``SELECT leads.id`` of every lead matching ``criteria`` (never an erased one)."""
    source = leads.outerjoin(lead_states, lead_states.c.lead_id == leads.c.id).outerjoin(
        accounts, accounts.c.id == leads.c.account_id
    )
    return (
        select(leads.c.id)
        .select_from(source)
        .where(leads.c.erased_at.is_(None), condition(criteria, now, pg=pg))
    )


# --------------------------------------------------------------------------- CRUD


def _public(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": int(row["id"]),
        "key": row["key"],
        "name": row["name"],
        "criteria": row["criteria"],
        "sync": bool(row["sync"]),
        "member_count": int(row["member_count"]),
        "refreshed_at": row["refreshed_at"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _normalised(criteria: Any) -> dict[str, Any]:
    parsed = criteria if isinstance(criteria, Criteria) else parse_criteria(criteria)
    return parsed.model_dump(by_alias=True, exclude_none=True, mode="json")


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise CriteriaError("name", "is empty")
    if len(name) > 255:
        raise CriteriaError("name", "longer than 255 characters")
    return name.strip()


def _row(conn: Connection, segment: str | Mapping[str, Any], *, lock: bool = False) -> Any:
    key = segment if isinstance(segment, str) else segment["key"]
    query = select(segments).where(segments.c.key == key)
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).mappings().first()
    if row is None:
        raise NotFound(f"segment {key!r} not found")
    return row


def create(
    conn: Connection,
    key: str,
    name: str,
    criteria: Any,
    now: datetime,
    *,
    sync: bool = False,
) -> dict[str, Any]:
    """A new segment (not yet refreshed). Raises CriteriaError / Conflict."""
    key = check_key(key)
    name = _check_name(name)
    stored = _normalised(criteria)
    if conn.execute(select(segments.c.id).where(segments.c.key == key)).first() is not None:
        raise Conflict(f"key: segment {key!r} exists already")
    conn.execute(
        insert(segments).values(
            key=key,
            name=name,
            criteria=stored,
            sync=bool(sync),
            member_count=0,
            refreshed_at=None,
            created_at=now,
            updated_at=now,
        )
    )
    return _public(_row(conn, key))


def update_segment(
    conn: Connection,
    key: str,
    now: datetime,
    *,
    name: str | None = None,
    criteria: Any = None,
    sync: bool | None = None,
) -> dict[str, Any]:
    """Change name, criteria or sync; membership follows at the next refresh."""
    row = _row(conn, key)
    values: dict[str, Any] = {"updated_at": now}
    if name is not None:
        values["name"] = _check_name(name)
    if criteria is not None:
        values["criteria"] = _normalised(criteria)
    if sync is not None:
        values["sync"] = bool(sync)
    conn.execute(update(segments).where(segments.c.id == row["id"]).values(**values))
    return _public(_row(conn, key))


def delete_segment(conn: Connection, key: str) -> None:
    row = _row(conn, key)
    conn.execute(delete(segment_changes).where(segment_changes.c.segment_id == row["id"]))
    conn.execute(delete(segment_members).where(segment_members.c.segment_id == row["id"]))
    conn.execute(delete(segments).where(segments.c.id == row["id"]))


def get(conn: Connection, key: str) -> dict[str, Any]:
    return _public(_row(conn, key))


def list_segments(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(select(segments).order_by(segments.c.key)).mappings().all()
    return [_public(as_record(r)) for r in rows]


# --------------------------------------------------------------------------- refreshing


def _model_version(conn: Connection) -> str:
    version = conn.execute(
        select(lead_models.c.version).where(lead_models.c.active.is_(True)).limit(1)
    ).scalar_one_or_none()
    return str(version) if version else "-"


def _signal_rows(
    conn: Connection,
    seg: Mapping[str, Any],
    joined: list[int],
    left: list[int],
    now: datetime,
) -> list[dict[str, Any]]:
    ids = joined + left
    if not ids:
        return []
    emails = {
        int(r.id): r.email
        for r in conn.execute(select(leads.c.id, leads.c.email).where(leads.c.id.in_(ids)))
    }
    rule = f"segment:{seg['key']}"
    remembered: dict[int, str] = {}
    gone = [i for i in left if not emails.get(i)]
    if gone:
        for r in conn.execute(
            select(signals.c.lead_id, signals.c.data)
            .where(
                signals.c.name == SEGMENT_JOINED,
                signals.c.rule == rule,
                signals.c.lead_id.in_(gone),
            )
            .order_by(signals.c.id)
        ):
            digest = (r.data or {}).get("email_sha256")
            if digest:
                remembered[int(r.lead_id)] = digest
    # ``signals`` is unique on (name, lead, at, rule): a lead joining two segments in the
    # same pass gets one signal per segment (the rule names the segment).
    at = now
    version = _model_version(conn)
    rows: list[dict[str, Any]] = []
    for name, lead_ids in ((SEGMENT_JOINED, joined), (SEGMENT_LEFT, left)):
        for lead_id in lead_ids:
            email = emails.get(lead_id)
            rows.append(
                {
                    "name": name,
                    "lead_id": lead_id,
                    "at": at,
                    "rule": rule,
                    "model_version": version,
                    "data": {
                        "segment": seg["key"],
                        "segment_name": seg["name"],
                        "change": "join" if name == SEGMENT_JOINED else "leave",
                        "email": email,
                        "email_sha256": email_hash(email) if email else remembered.get(lead_id),
                    },
                    "created_at": now,
                    "delivered_at": None,
                }
            )
    return rows


def refresh(conn: Connection, segment: str | Mapping[str, Any], now: datetime) -> tuple[int, int]:
    """Bring the segment's members up to date inside the caller's transaction.

    Returns ``(joined, left)``. Raises :class:`NotFound`, or :class:`CriteriaError` when
    the stored criteria no longer validate.
    """
    seg = _row(conn, segment, lock=True)  # FOR UPDATE on PostgreSQL: one refresher at once
    criteria = parse_criteria(seg["criteria"])
    sid = int(seg["id"])
    desired = members_query(criteria, now, pg=is_postgres(conn.engine)).subquery("desired")
    current = select(segment_members.c.lead_id).where(segment_members.c.segment_id == sid)
    joined = sorted(
        int(i)
        for i in conn.execute(select(desired.c.id).where(desired.c.id.not_in(current))).scalars()
    )
    left = sorted(
        int(i)
        for i in conn.execute(
            select(segment_members.c.lead_id).where(
                segment_members.c.segment_id == sid,
                segment_members.c.lead_id.not_in(select(desired.c.id)),
            )
        ).scalars()
    )
    if joined:
        conn.execute(
            insert(segment_members),
            [{"segment_id": sid, "lead_id": i, "joined_at": now} for i in joined],
        )
    if left:
        for start in range(0, len(left), 500):
            chunk = left[start : start + 500]
            conn.execute(
                delete(segment_members).where(
                    segment_members.c.segment_id == sid, segment_members.c.lead_id.in_(chunk)
                )
            )
    changes = [{"segment_id": sid, "lead_id": i, "change": "join", "at": now} for i in joined]
    changes += [{"segment_id": sid, "lead_id": i, "change": "leave", "at": now} for i in left]
    if changes:
        conn.execute(insert(segment_changes), changes)
    if seg["sync"]:
        rows = _signal_rows(conn, seg, joined, left, now)
        if rows:
            conn.execute(insert(signals), rows)
    count = conn.execute(
        select(func.count()).select_from(segment_members).where(segment_members.c.segment_id == sid)
    ).scalar_one()
    conn.execute(
        update(segments)
        .where(segments.c.id == sid)
        .values(member_count=int(count), refreshed_at=now)
    )
    return len(joined), len(left)


def refresh_all(engine: Engine, now: datetime) -> dict[str, tuple[int, int]]:
    """Refresh every segment, each in its own transaction; ``{key: (joined, left)}``.

    A segment whose stored criteria fail validation is logged and skipped.
    """
    with engine.connect() as conn:
        keys = list(conn.execute(select(segments.c.key).order_by(segments.c.key)).scalars())
    done: dict[str, tuple[int, int]] = {}
    for key in keys:
        try:
            with engine.begin() as conn:
                done[key] = refresh(conn, key, now)
        except NotFound:
            continue  # deleted meanwhile
        except CriteriaError as exc:
            log.warning("segment %s not refreshed: %s", key, exc)
    return done


# --------------------------------------------------------------------------- reading


def member_ids(conn: Connection, key: str) -> list[int]:
    sid = _row(conn, key)["id"]
    return [
        int(i)
        for i in conn.execute(
            select(segment_members.c.lead_id)
            .where(segment_members.c.segment_id == sid)
            .order_by(segment_members.c.lead_id)
        ).scalars()
    ]


def _member_select(sid: int) -> Select[Any]:
    source = (
        segment_members.join(leads, leads.c.id == segment_members.c.lead_id)
        .outerjoin(lead_states, lead_states.c.lead_id == leads.c.id)
        .outerjoin(accounts, accounts.c.id == leads.c.account_id)
    )
    return (
        select(
            leads.c.id.label("lead_id"),
            leads.c.email,
            leads.c.first_name,
            leads.c.last_name,
            accounts.c.name.label("company"),
            lead_states.c.stage,
            segment_members.c.joined_at,
        )
        .select_from(source)
        .where(segment_members.c.segment_id == sid, leads.c.erased_at.is_(None))
        .order_by(leads.c.id)
    )


def members(
    conn: Connection, key: str, *, limit: int = 100, offset: int = 0
) -> tuple[list[dict[str, Any]], int]:
    """One page of members (by lead id) and the total."""
    sid = int(_row(conn, key)["id"])
    rows = conn.execute(_member_select(sid).limit(limit).offset(offset)).mappings().all()
    total = conn.execute(
        select(func.count()).select_from(_member_select(sid).order_by(None).subquery())
    ).scalar_one()
    return [dict(r) for r in rows], int(total)


AUDIENCE_COLUMNS = ["email", "email_sha256", "first_name", "last_name", "company", "stage"]


def audience_rows(conn: Connection, key: str) -> list[dict[str, Any]]:
    """Members with an address, as an ad-audience upload (email and its SHA-256)."""
    sid = int(_row(conn, key)["id"])
    rows = conn.execute(_member_select(sid).where(leads.c.email.is_not(None))).mappings()
    return [{**dict(r), "email_sha256": email_hash(r["email"])} for r in rows]


def changes(
    conn: Connection, key: str, *, after: int = 0, limit: int = 1000
) -> list[dict[str, Any]]:
    """Joins and leaves with ``id > after``, oldest first (the audience-sync feed)."""
    sid = int(_row(conn, key)["id"])
    rows = conn.execute(
        select(
            segment_changes.c.id,
            segment_changes.c.lead_id,
            segment_changes.c.change,
            segment_changes.c.at,
            leads.c.email,
        )
        .select_from(segment_changes.join(leads, leads.c.id == segment_changes.c.lead_id))
        .where(segment_changes.c.segment_id == sid, segment_changes.c.id > after)
        .order_by(segment_changes.c.id)
        .limit(limit)
    ).mappings()
    return [
        {**dict(r), "email_sha256": email_hash(r["email"]) if r["email"] else None} for r in rows
    ]


def scrub_erased(conn: Connection, lead_id: int, now: datetime) -> None:
    """Erase hook (``privacy.erase_person(hooks=[...])``): drop the address from this
    lead's segment signals, keeping only its SHA-256 (as suppressions do)."""
    rows = conn.execute(
        select(signals.c.id, signals.c.data).where(
            signals.c.lead_id == lead_id, signals.c.name.in_(SIGNAL_NAMES)
        )
    ).all()
    for row in rows:
        data = dict(row.data or {})
        if data.get("email") is not None:
            data["email"] = None
            conn.execute(update(signals).where(signals.c.id == row.id).values(data=data))
