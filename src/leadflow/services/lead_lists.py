"""Smart lists: one SQL query (SQLAlchemy Core) from a :class:`~leadflow.core.lead_lists.LeadQuery`.

Serves the dashboard's lead list, ``GET /api/leads``, ``leadflow leads list`` and CSV
exports, so a filter means the same thing everywhere. Each row carries the lead's stage,
engagement and fit scores, fit grade, owner (its account's owner), last activity (its newest
event) and active nurture program.

Semantics (the integration tests compute each from the seed in Python):

- ``q``: case-insensitive substring of e-mail, first name, last name, "first last",
  company name or company domain; ``%`` and ``_`` are literal characters.
- a lead with no stored state is in the model's initial stage and has no scores or grade
  (score ranges and grades never match it).
- ``active_after X``: some event at or after X; ``active_before X``: no event at or after X
  (leads never active included).
- sorting puts leads without a value last in either direction and breaks ties by id in the
  sort's direction; ``stage`` sorts by the model's order.
- a sales rep (``rep``) only ever sees the leads of the accounts they own.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Float,
    and_,
    case,
    cast,
    exists,
    func,
    literal,
    not_,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import ColumnElement, Select

from leadflow.adapters.csv_export import plain
from leadflow.adapters.db.engine import read_only
from leadflow.adapters.db.repositories.common import COUNT_CAP, aware, lead_scope
from leadflow.adapters.db.tables import (
    accounts,
    email_sends,
    events,
    form_submissions,
    lead_states,
    leads,
    program_enrollments,
    sales_actions,
    sales_reps,
    saved_views,
    segment_members,
    segments,
    stage_changes,
    users,
)
from leadflow.core import errors
from leadflow.core.config import LeadModel
from leadflow.core.importing import neutralise_cell
from leadflow.core.lead_lists import NEW, FieldFilter, LeadQuery
from leadflow.services.reports.common import NONE, NOT_TOUCHES

EXPORT_LIMIT = 100_000
"""Most rows one CSV export writes (the file says when it was cut)."""

EXPORT_COLUMNS: tuple[str, ...] = (
    "id",
    "email",
    "first_name",
    "last_name",
    "title",
    "company",
    "domain",
    "stage",
    "engagement",
    "fit",
    "fit_grade",
    "owner",
    "last_activity",
    "program",
    "source",
    "created_at",
)


@dataclass(frozen=True, slots=True)
class ListPage:
    rows: list[dict[str, Any]]
    query: LeadQuery
    has_previous: bool
    has_next: bool
    next_cursor: int | None
    count: int
    count_capped: bool


def _last_activity() -> Any:
    return (
        select(func.max(events.c.occurred_at))
        .where(events.c.lead_id == leads.c.id)
        .correlate(leads)
        .scalar_subquery()
    )


def _program() -> Any:
    return (
        select(func.min(program_enrollments.c.program_key))
        .where(
            program_enrollments.c.lead_id == leads.c.id, program_enrollments.c.status == "active"
        )
        .correlate(leads)
        .scalar_subquery()
    )


def _stage(model: LeadModel) -> ColumnElement[Any]:
    return func.coalesce(lead_states.c.stage, literal(model.initial_stage))


def _stage_rank(model: LeadModel) -> ColumnElement[Any]:
    order = {stage: i for i, stage in enumerate(model.stages)}
    return case(order, value=_stage(model), else_=len(order))


def _sort_key(column: str, model: LeadModel) -> ColumnElement[Any]:
    keys: dict[str, Any] = {
        "id": leads.c.id,
        "name": func.lower(
            func.coalesce(leads.c.first_name, "") + " " + func.coalesce(leads.c.last_name, "")
        ),
        "email": leads.c.email,
        "title": func.lower(leads.c.title),
        "company": func.lower(accounts.c.name),
        "domain": accounts.c.domain,
        "stage": _stage_rank(model),
        "engagement": lead_states.c.engagement,
        "fit": lead_states.c.fit,
        "fit_grade": lead_states.c.fit_grade,
        "owner": accounts.c.owner,
        "last_activity": _last_activity(),
        "source": leads.c.source,
        "created_at": leads.c.created_at,
    }
    return keys[column]


def _search(q: str) -> ColumnElement[bool]:
    text = q.strip().lower()
    full = func.coalesce(leads.c.first_name, "") + " " + func.coalesce(leads.c.last_name, "")
    # Companies are matched on their own (a few rows per 8 leads), then by account id.
    companies = select(accounts.c.id).where(
        or_(
            accounts.c.name.icontains(text, autoescape=True),
            accounts.c.domain.icontains(text, autoescape=True),
        )
    )
    return or_(
        leads.c.email.icontains(text, autoescape=True),
        leads.c.first_name.icontains(text, autoescape=True),
        leads.c.last_name.icontains(text, autoescape=True),
        full.icontains(text, autoescape=True),
        leads.c.account_id.in_(companies),
    )


def _json_type(dialect: str, name: str) -> ColumnElement[Any]:
    if dialect == "postgresql":
        return func.jsonb_typeof(leads.c.attributes[name])
    return func.json_type(leads.c.attributes, f'$."{name}"')


def _field(dialect: str, f: FieldFilter) -> ColumnElement[bool]:
    kind = _json_type(dialect, f.name)
    if f.value is not None:
        return and_(
            kind == ("string" if dialect == "postgresql" else "text"),
            leads.c.attributes[f.name].as_string() == f.value,
        )
    numeric = kind == "number" if dialect == "postgresql" else kind.in_(("integer", "real"))
    if dialect == "postgresql":
        raw: Any = cast(leads.c.attributes[f.name].as_string(), Float)
    else:
        raw = cast(func.json_extract(leads.c.attributes, f'$."{f.name}"'), Float)
    number = case((numeric, raw), else_=None)
    parts: list[ColumnElement[bool]] = [numeric]
    if f.low is not None:
        parts.append(number >= f.low)
    if f.high is not None:
        parts.append(number <= f.high)
    return and_(*parts)


def conditions(
    query: LeadQuery, model: LeadModel, *, rep: str | None, dialect: str
) -> list[ColumnElement[bool]]:
    """The WHERE clauses of ``query`` (over leads outer-joined to accounts and lead_states)."""
    where: list[ColumnElement[bool]] = [leads.c.erased_at.is_(None), *lead_scope(rep)]
    if query.q.strip():
        where.append(_search(query.q))
    stages = set(query.stages)
    for role in query.roles:
        stages.update(model.stages_for(role))
    if (query.stages or query.roles) and query.as_of is None:
        chosen = sorted(stages)
        clause: ColumnElement[bool] = lead_states.c.stage.in_(chosen)
        if model.initial_stage in stages:
            clause = or_(clause, lead_states.c.lead_id.is_(None))
        where.append(clause)
    for column, low, high in (
        (lead_states.c.engagement, query.engagement_min, query.engagement_max),
        (lead_states.c.fit, query.fit_min, query.fit_max),
    ):
        if low is not None:
            where.append(column >= low)
        if high is not None:
            where.append(column <= high)
    if query.grades:
        where.append(lead_states.c.fit_grade.in_(query.grades))
    if query.owner:
        where.append(accounts.c.owner == query.owner)
    if query.active_after is not None:
        where.append(
            exists().where(
                events.c.lead_id == leads.c.id, events.c.occurred_at >= query.active_after
            )
        )
    if query.active_before is not None:
        where.append(
            not_(
                exists().where(
                    events.c.lead_id == leads.c.id, events.c.occurred_at >= query.active_before
                )
            )
        )
    if query.program and not query.enrolment and not query.step:
        where.append(
            leads.c.id.in_(
                select(program_enrollments.c.lead_id).where(
                    program_enrollments.c.program_key == query.program,
                    program_enrollments.c.status == "active",
                )
            )
        )
    if query.segment:
        where.append(
            leads.c.id.in_(
                select(segment_members.c.lead_id)
                .join(segments, segments.c.id == segment_members.c.segment_id)
                .where(segments.c.key == query.segment)
            )
        )
    if query.form:
        where.append(
            leads.c.id.in_(
                select(form_submissions.c.lead_id).where(
                    form_submissions.c.form_key == query.form,
                    form_submissions.c.lead_id.is_not(None),
                )
            )
        )
    if query.campaign:
        where.append(
            exists().where(events.c.lead_id == leads.c.id, events.c.utm_campaign == query.campaign)
        )
    if query.source:
        where.append(leads.c.source == query.source)
    if query.account_id is not None:
        where.append(leads.c.account_id == query.account_id)
    if query.domain:
        where.append(accounts.c.domain == query.domain)
    if query.cursor is not None:
        where.append(leads.c.id < query.cursor)
    where += [_field(dialect, f) for f in query.fields]
    where += drill_conditions(query, model, stages)
    return where


def _from() -> Any:
    return leads.outerjoin(accounts, accounts.c.id == leads.c.account_id).outerjoin(
        lead_states, lead_states.c.lead_id == leads.c.id
    )


def _columns(model: LeadModel) -> list[Any]:
    return [
        leads.c.id,
        leads.c.email,
        leads.c.first_name,
        leads.c.last_name,
        leads.c.title,
        leads.c.account_id,
        accounts.c.name.label("company"),
        accounts.c.domain.label("domain"),
        _stage(model).label("stage"),
        lead_states.c.engagement,
        lead_states.c.fit,
        lead_states.c.fit_grade,
        lead_states.c.pause_until,
        accounts.c.owner.label("owner"),
        _last_activity().label("last_activity"),
        _program().label("program"),
        leads.c.source,
        leads.c.consent_status,
        leads.c.created_at,
        leads.c.updated_at,
    ]


def _ordering(query: LeadQuery, model: LeadModel) -> list[Any]:
    key = _sort_key(query.sort, model)
    tie = leads.c.id.desc() if query.descending else leads.c.id.asc()
    order = key.desc() if query.descending else key.asc()
    return [tie] if query.sort == "id" else [order.nulls_last(), tie]


def statement(query: LeadQuery, model: LeadModel, *, rep: str | None, dialect: str) -> Select[Any]:
    """The rows of ``query`` in its order (no paging)."""
    return (
        select(*_columns(model))
        .select_from(_from())
        .where(*conditions(query, model, rep=rep, dialect=dialect))
        .order_by(*_ordering(query, model))
    )


def _page_ids(query: LeadQuery, model: LeadModel, *, rep: str | None, dialect: str) -> Any:
    """The ids of one page (and one more): only the sort key is computed for each match,
    the row's other columns (last activity, program) only for the page's rows."""
    return (
        select(leads.c.id)
        .select_from(_from())
        .where(*conditions(query, model, rep=rep, dialect=dialect))
        .order_by(*_ordering(query, model))
        .offset(query.offset)
        .limit(query.size + 1)
    )


def _row(row: Any, model: LeadModel, locale: str) -> dict[str, Any]:
    out = dict(row)
    out["last_activity"] = aware(out["last_activity"])
    stage = out["stage"]
    out["stage_label"] = model.display_name(stage, locale) if stage in model.spec.stages else stage
    out["name"] = " ".join(p for p in (out["first_name"], out["last_name"]) if p) or None
    return out


def list_page(
    engine: Engine,
    query: LeadQuery,
    model: LeadModel,
    *,
    rep: str | None = None,
    locale: str = "en",
    count: bool = True,
) -> ListPage:
    """One page of ``query``: rows, whether there is a previous / next page, a capped count."""
    dialect = engine.dialect.name
    with read_only(engine).connect() as conn:
        ids = [int(i) for (i,) in conn.execute(_page_ids(query, model, rep=rep, dialect=dialect))]
        found = {
            int(r["id"]): r
            for r in conn.execute(
                select(*_columns(model)).select_from(_from()).where(leads.c.id.in_(ids))
            ).mappings()
        }
        rows = [_row(found[i], model, locale) for i in ids if i in found]
        more = len(rows) > query.size
        if not count:
            total, capped = 0, False
        elif not more and (rows or query.offset == 0):
            # The last page: the count is known without a second pass over the matches
            # (a search that matches few leads scans the table once, not twice).
            total, capped = (
                min(query.offset + len(rows), COUNT_CAP),
                query.offset + len(rows) > COUNT_CAP,
            )
        else:
            total, capped = _count(conn, query, model, rep, dialect)
    rows = rows[: query.size]
    next_cursor = (
        int(rows[-1]["id"]) if more and rows and query.sort == "id" and query.descending else None
    )
    return ListPage(
        rows=rows,
        query=query,
        has_previous=query.page > 1,
        has_next=more,
        next_cursor=next_cursor,
        count=total,
        count_capped=capped,
    )


def _count(
    conn: Connection, query: LeadQuery, model: LeadModel, rep: str | None, dialect: str
) -> tuple[int, bool]:
    where = conditions(query, model, rep=rep, dialect=dialect)
    limited = select(literal(1)).select_from(_from()).where(*where).limit(COUNT_CAP + 1)
    found = int(conn.execute(select(func.count()).select_from(limited.subquery())).scalar_one())
    return min(found, COUNT_CAP), found > COUNT_CAP


def export_rows(
    engine: Engine,
    query: LeadQuery,
    model: LeadModel,
    *,
    rep: str | None = None,
    limit: int = EXPORT_LIMIT,
    batch: int = 2000,
) -> Any:
    """Every row of ``query`` in its order (paging ignored), streamed, at most ``limit``."""
    stmt = statement(query, model, rep=rep, dialect=engine.dialect.name).limit(limit)
    with read_only(engine).connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=batch).execute(stmt)
        for row in result.mappings():
            yield _row(row, model, "en")


def lead_ids(
    engine: Engine,
    query: LeadQuery,
    model: LeadModel,
    *,
    rep: str | None = None,
    limit: int = COUNT_CAP,
) -> list[int]:
    """The ids of every lead ``query`` matches (paging ignored), at most ``limit``."""
    where = conditions(query, model, rep=rep, dialect=engine.dialect.name)
    stmt = select(leads.c.id).select_from(_from()).where(*where).order_by(leads.c.id).limit(limit)
    with read_only(engine).connect() as conn:
        return [int(i) for (i,) in conn.execute(stmt)]


def export_columns(query: LeadQuery) -> tuple[str, ...]:
    """The CSV's columns: the chosen ones (``name`` as first and last name, ``company`` with
    its domain), else every exportable column."""
    if not query.explicit_columns:
        return EXPORT_COLUMNS
    out: list[str] = ["id"]
    for column in query.columns:
        parts = {"name": ("first_name", "last_name"), "company": ("company", "domain")}.get(
            column, (column,)
        )
        out += [p for p in parts if p not in out]
    return tuple(out)


def csv_chunks(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> Iterator[str]:
    """CSV text in chunks, formula-like cells neutralised (see :mod:`adapters.csv_export`)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for n, row in enumerate(rows, 1):
        writer.writerow([neutralise_cell(plain(row.get(c))) for c in columns])
        if n % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


# ---------------------------------------------------------------- saved views

MAX_VIEW_NAME = 100
MAX_VIEWS_PER_USER = 200


def _view_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise errors.BadRequest("name: a view needs a name", field="name")
    if len(name) > MAX_VIEW_NAME:
        raise errors.BadRequest(f"name: longer than {MAX_VIEW_NAME} characters", field="name")
    if any(ord(c) < 32 for c in name):
        raise errors.BadRequest("name: contains a control character", field="name")
    return name


def save_view(
    engine: Engine,
    *,
    user_id: int,
    name: str,
    query: LeadQuery,
    shared: bool,
    now: datetime,
) -> int:
    """Store ``query`` (without its page) as a view; the same name of the same user is
    replaced. Returns the view's id."""
    name = _view_name(name)
    text = query.query_string(paging=False)
    with engine.begin() as conn:
        found = conn.execute(
            select(saved_views.c.id).where(
                saved_views.c.user_id == user_id,
                saved_views.c.list == "leads",
                saved_views.c.name == name,
            )
        ).scalar_one_or_none()
        if found is not None:
            conn.execute(
                update(saved_views)
                .where(saved_views.c.id == found)
                .values(query=text, shared=shared, updated_at=now)
            )
            return int(found)
        mine = conn.execute(
            select(func.count()).where(saved_views.c.user_id == user_id)
        ).scalar_one()
        if mine >= MAX_VIEWS_PER_USER:
            raise errors.BadRequest(
                f"name: at most {MAX_VIEWS_PER_USER} saved views per user", field="name"
            )
        return int(
            conn.execute(
                saved_views.insert()
                .values(
                    user_id=user_id,
                    list="leads",
                    name=name,
                    query=text,
                    shared=shared,
                    created_at=now,
                    updated_at=now,
                )
                .returning(saved_views.c.id)
            ).scalar_one()
        )


def views_for(engine: Engine, user_id: int) -> list[dict[str, Any]]:
    """The user's own lead views and the ones others shared, by name."""
    with read_only(engine).connect() as conn:
        return [
            dict(r)
            for r in conn.execute(
                select(
                    saved_views.c.id,
                    saved_views.c.name,
                    saved_views.c.query,
                    saved_views.c.shared,
                    saved_views.c.user_id,
                    users.c.name.label("owner_name"),
                    (saved_views.c.user_id == user_id).label("mine"),
                )
                .join(users, users.c.id == saved_views.c.user_id)
                .where(
                    saved_views.c.list == "leads",
                    or_(saved_views.c.user_id == user_id, saved_views.c.shared.is_(True)),
                )
                .order_by(func.lower(saved_views.c.name), saved_views.c.id)
            ).mappings()
        ]


def _own_view(conn: Connection, view_id: int, user_id: int, admin: bool) -> dict[str, Any]:
    row = conn.execute(select(saved_views).where(saved_views.c.id == view_id)).mappings().first()
    if row is None:
        raise errors.NotFound(f"view: no view {view_id}", field="view")
    if row["user_id"] != user_id and not (admin and row["shared"]):
        raise errors.Forbidden("view: only its owner may change it", field="view")
    return dict(row)


def delete_view(engine: Engine, view_id: int, *, user_id: int, admin: bool = False) -> str:
    """Delete a view (its owner's, or an admin for a shared one); returns its name."""
    with engine.begin() as conn:
        row = _own_view(conn, view_id, user_id, admin)
        conn.execute(saved_views.delete().where(saved_views.c.id == view_id))
    return str(row["name"])


def share_view(engine: Engine, view_id: int, shared: bool, *, user_id: int, now: datetime) -> str:
    with engine.begin() as conn:
        row = _own_view(conn, view_id, user_id, admin=False)
        conn.execute(
            update(saved_views)
            .where(saved_views.c.id == view_id)
            .values(shared=shared, updated_at=now)
        )
    return str(row["name"])


# ---------------------------------------------------------------- choices and bulk actions

DESCENDING_FIRST = frozenset({"engagement", "fit", "last_activity", "created_at", "id"})
"""Columns whose header sorts biggest / newest first on the first click."""


def segment_keys(engine: Engine) -> list[str]:
    with read_only(engine).connect() as conn:
        return [k for (k,) in conn.execute(select(segments.c.key).order_by(segments.c.key))]


def rep_choices(engine: Engine) -> list[str]:
    """Whom leads may be assigned to: the sales reps' keys and every current account owner."""
    with read_only(engine).connect() as conn:
        keys = {k for (k,) in conn.execute(select(sales_reps.c.key))}
        owners = {
            o
            for (o,) in conn.execute(
                select(accounts.c.owner).where(accounts.c.owner.is_not(None)).distinct().limit(500)
            )
        }
    return sorted(keys | owners)


@dataclass(frozen=True, slots=True)
class AssignPlan:
    leads: int
    accounts: int
    without_account: int
    already: int
    """Accounts the rep owns already."""


@dataclass(frozen=True, slots=True)
class AssignResult:
    rep: str
    leads: int
    without_account: int
    previous: dict[int, str | None]
    """Account id -> its owner before (only the accounts that changed)."""


def _accounts_of(conn: Connection, lead_ids: Sequence[int]) -> tuple[dict[int, str | None], int]:
    found: dict[int, str | None] = {}
    without = 0
    for start in range(0, len(lead_ids), 500):
        chunk = list(lead_ids[start : start + 500])
        rows = conn.execute(
            select(leads.c.account_id, accounts.c.owner)
            .select_from(leads.outerjoin(accounts, accounts.c.id == leads.c.account_id))
            .where(leads.c.id.in_(chunk))
        ).all()
        for account_id, owner in rows:
            if account_id is None:
                without += 1
            else:
                found[int(account_id)] = owner
    return found, without


def plan_assign(engine: Engine, lead_ids: Sequence[int], rep: str | None = None) -> AssignPlan:
    """What assigning these leads would touch (a lead's owner is its account's owner)."""
    with read_only(engine).connect() as conn:
        found, without = _accounts_of(conn, lead_ids)
    return AssignPlan(
        leads=len(lead_ids),
        accounts=len(found),
        without_account=without,
        already=sum(1 for o in found.values() if rep is not None and o == rep),
    )


def assign_owner(
    engine: Engine, lead_ids: Sequence[int], rep: str, *, now: datetime
) -> AssignResult:
    """Make ``rep`` the owner of these leads' accounts, in one transaction; the result
    holds the previous owners for :func:`undo_assign`. Leads without an account are
    counted, not changed."""
    with engine.begin() as conn:
        found, without = _accounts_of(conn, lead_ids)
        previous = {a: o for a, o in found.items() if o != rep}
        ids = sorted(previous)
        for start in range(0, len(ids), 500):
            conn.execute(
                update(accounts)
                .where(accounts.c.id.in_(ids[start : start + 500]))
                .values(owner=rep, updated_at=now)
            )
    return AssignResult(rep=rep, leads=len(lead_ids), without_account=without, previous=previous)


def undo_token(result: AssignResult, key: str) -> str:
    """The undo of ``result``, signed with ``key`` (the session's secret: only the session
    that made the change can undo it, and nobody can forge owners into it)."""
    payload = json.dumps(
        {"rep": result.rep, "previous": {str(k): v for k, v in result.previous.items()}},
        separators=(",", ":"),
    )
    return payload + "." + _mac(payload, key)


def _mac(payload: str, key: str) -> str:
    return hmac.new(key.encode(), payload.encode(), hashlib.sha256).hexdigest()


def undo_assign(engine: Engine, token: str, key: str, *, now: datetime) -> int:
    """Give accounts back to their previous owners, unless their owner changed since the
    assignment (then the later change stays). Returns how many accounts were restored."""
    payload, _, mac = token.rpartition(".")
    if not hmac.compare_digest(mac.encode(), _mac(payload, key).encode()):
        raise errors.BadRequest("undo: not an undo this session made", field="undo")
    data = json.loads(payload)
    rep = data["rep"]
    previous = {int(k): v for k, v in data["previous"].items()}
    restored = 0
    with engine.begin() as conn:
        for account_id, owner in previous.items():
            restored += conn.execute(
                update(accounts)
                .where(accounts.c.id == account_id, accounts.c.owner == rep)
                .values(owner=owner, updated_at=now)
            ).rowcount
    return restored


@dataclass(frozen=True, slots=True)
class EnrolResult:
    program: str
    enrolled: int
    refused: dict[str, int]
    """Why the others were not enrolled (the reason in words) -> how many."""


def enrol_all(
    engine: Engine, model: LeadModel, program: str, lead_ids: Sequence[int], *, now: datetime
) -> EnrolResult:
    """Enrol each lead in ``program`` by hand, in one transaction; a lead the program does
    not take (stage, dead end, already enrolled) is counted with its reason, not enrolled."""
    from leadflow.services import nurture

    if program not in nurture.programs_of(model):
        raise errors.BadRequest(
            f"program: no program {program[:64]!r} in the model", field="program"
        )
    enrolled = 0
    refused: dict[str, int] = {}
    with engine.begin() as conn:
        for lead_id in lead_ids:
            try:
                nurture.enrol(conn, model, program, lead_id, now)
                enrolled += 1
            except nurture.EnrolError as exc:
                # "lead 12 is in stage 'mql'; ..." -> the reason without the lead's id
                reason = str(exc.args[0] if exc.args else exc).split(" ", 2)[-1]
                reason = re.sub(r"^(is|was) ", "", reason)
                refused[reason] = refused.get(reason, 0) + 1
    return EnrolResult(program=program, enrolled=enrolled, refused=refused)


# ---------------------------------------------------------------- drill-down filters
#
# The figures of the funnel, KPI and attribution pages are computed over the *stage log*
# (services.reports.store.stage_history): stage_changes plus one synthetic first entry per
# lead into the stage it started in (its first change's from_stage, else its current
# stage), at its first sign of life (the earlier of leads.created_at and its first stage
# change). These expressions are that log in SQL, so a figure and its list agree.


def _first_change(column: Any) -> Any:
    return (
        select(column)
        .where(stage_changes.c.lead_id == leads.c.id)
        .order_by(stage_changes.c.at, stage_changes.c.id)
        .limit(1)
        .correlate(leads)
        .scalar_subquery()
    )


def _entry_stage(model: LeadModel) -> ColumnElement[Any]:
    """The stage of the lead's synthetic first entry."""
    return func.coalesce(
        _first_change(stage_changes.c.from_stage), lead_states.c.stage, model.initial_stage
    )


def _entry_at() -> ColumnElement[Any]:
    """When the lead was first seen: the earlier of its creation and its first change."""
    first = _first_change(stage_changes.c.at)
    return case(
        (first.is_(None), leads.c.created_at),
        (first < leads.c.created_at, first),
        else_=leads.c.created_at,
    )


def _in_period(column: Any, after: datetime | None, before: datetime | None) -> list[Any]:
    out = []
    if after is not None:
        out.append(column >= after)
    if before is not None:
        out.append(column < before)
    return out


def _moved(query: LeadQuery, model: LeadModel) -> ColumnElement[bool]:
    """A move of the log (a real one, or the synthetic first entry) that matches."""
    parts: list[ColumnElement[bool]] = []
    sources = [s for s in query.move_from if s != NEW]
    if sources or not query.move_from:
        real = [
            stage_changes.c.lead_id == leads.c.id,
            *_in_period(stage_changes.c.at, query.moved_after, query.moved_before),
        ]
        if query.move_to:
            real.append(stage_changes.c.to_stage.in_(query.move_to))
        if sources:
            real.append(stage_changes.c.from_stage.in_(sources))
        parts.append(exists().where(*real))
    if NEW in query.move_from or not query.move_from:
        first = _in_period(_entry_at(), query.moved_after, query.moved_before)
        if query.move_to:
            first.append(_entry_stage(model).in_(query.move_to))
        parts.append(and_(true(), *first))
    return or_(*parts)


def _stage_at(model: LeadModel, moment: datetime) -> ColumnElement[Any]:
    """The stage the lead was in at ``moment`` (its latest move before it), else NULL."""
    latest = (
        select(stage_changes.c.to_stage)
        .where(stage_changes.c.lead_id == leads.c.id, stage_changes.c.at < moment)
        .order_by(stage_changes.c.at.desc(), stage_changes.c.id.desc())
        .limit(1)
        .correlate(leads)
        .scalar_subquery()
    )
    return case(
        (latest.is_not(None), latest),
        (leads.c.created_at < moment, _entry_stage(model)),
        else_=None,
    )


def _converted_at(model: LeadModel, stage: str) -> ColumnElement[Any]:
    """The lead's first entry ever into ``stage`` (the attribution report's conversion)."""
    real = (
        select(func.min(stage_changes.c.at))
        .where(stage_changes.c.lead_id == leads.c.id, stage_changes.c.to_stage == stage)
        .correlate(leads)
        .scalar_subquery()
    )
    entry = _entry_at()
    return case(
        (_entry_stage(model) != stage, real),
        (real.is_(None), entry),
        (real < entry, real),
        else_=entry,
    )


def _touched(query: LeadQuery, model: LeadModel) -> ColumnElement[bool]:
    """A touch of the attribution report: a ``track``/``page``/``screen`` event the person
    made (not ``email_sent``/``email_bounce``) up to the conversion (or the period end)."""
    where: list[Any] = [
        events.c.lead_id == leads.c.id,
        events.c.type.in_(("track", "page", "screen")),
        or_(events.c.name.is_(None), events.c.name.not_in(list(NOT_TOUCHES))),
    ]
    if query.touched_channel:
        where.append(func.coalesce(events.c.channel, "direct") == query.touched_channel)
    if query.touched_campaign:
        where.append(func.coalesce(events.c.utm_campaign, NONE) == query.touched_campaign)
    if query.converted_to:
        where.append(events.c.occurred_at <= _converted_at(model, query.converted_to))
    elif query.converted_before is not None:
        where.append(events.c.occurred_at < query.converted_before)
    return exists().where(*where)


_SEND_STATUS = {
    "planned": ("planned", "sending"),
    "sent": ("sent",),
    "skipped": ("skipped",),
    "failed": ("failed",),
}


def drill_conditions(
    query: LeadQuery, model: LeadModel, stages: set[str]
) -> list[ColumnElement[bool]]:
    """The WHERE clauses of the drill-down filters (``stages``: the stage and role filter's
    stages, applied at ``as_of`` here)."""
    where: list[ColumnElement[bool]] = []
    if query.move_to or query.move_from:
        where.append(_moved(query, model))
    if query.as_of is not None and stages:
        where.append(_stage_at(model, query.as_of).in_(sorted(stages)))
    if query.converted_to:
        at = _converted_at(model, query.converted_to)
        where.append(at.is_not(None))
        where += _in_period(at, query.converted_after, query.converted_before)
    if query.touched_channel or query.touched_campaign:
        where.append(_touched(query, model))
    if query.submitted_after is not None or query.submitted_before is not None:
        sub = [
            form_submissions.c.lead_id == leads.c.id,
            *_in_period(
                form_submissions.c.submitted_at, query.submitted_after, query.submitted_before
            ),
        ]
        if query.form:
            sub.append(form_submissions.c.form_key == query.form)
        where.append(exists().where(*sub))
    if query.program and query.enrolment:
        enrol = [
            program_enrollments.c.lead_id == leads.c.id,
            program_enrollments.c.program_key == query.program,
        ]
        if query.enrolment != "any":
            enrol.append(program_enrollments.c.status == query.enrolment)
        where.append(exists().where(*enrol))
    if query.program and query.step:
        send = [
            email_sends.c.lead_id == leads.c.id,
            email_sends.c.program_key == query.program,
            email_sends.c.step_id == query.step,
        ]
        result = query.step_result
        if result in _SEND_STATUS:
            send.append(email_sends.c.status.in_(_SEND_STATUS[result]))
        elif result:
            send.append(getattr(email_sends.c, f"{result}_at").is_not(None))
        where.append(exists().where(*send))
    if query.action:
        where.append(
            exists().where(
                sales_actions.c.lead_id == leads.c.id,
                sales_actions.c.name == query.action,
                *_in_period(sales_actions.c.at, query.action_after, query.action_before),
            )
        )
    return where
