"""Lead queries for the CLI and the admin API: list with filters and keyset paging, show.

Paging is keyset on the lead id (newest first): ``cursor`` is the last id of the previous
page, so page N costs the same as page 1 on a million leads. Erased leads (anonymised
tombstones) are left out of lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, func, or_, select

from leadflow.adapters.db.tables import accounts, events, lead_states, leads
from leadflow.core import errors
from leadflow.core.tracking import normalise_email

MAX_LIMIT = 1000
MAX_SEARCH_LENGTH = 200

LIST_COLUMNS = (
    "id",
    "email",
    "first_name",
    "last_name",
    "title",
    "company",
    "domain",
    "source",
    "consent_status",
    "created_at",
    "updated_at",
)
EVENT_COLUMNS = (
    "id",
    "occurred_at",
    "type",
    "name",
    "channel",
    "page_url",
    "utm_campaign",
    "message_id",
)


class QueryError(errors.BadRequest):
    """A filter is out of range; ``field`` names it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}", field=field)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class LeadFilter:
    search: str | None = None
    source: str | None = None
    account_domain: str | None = None
    limit: int = 50
    cursor: int | None = None

    def checked(self) -> LeadFilter:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise QueryError("limit", f"must be between 1 and {MAX_LIMIT}")
        if self.search is not None and len(self.search) > MAX_SEARCH_LENGTH:
            raise QueryError("search", f"longer than {MAX_SEARCH_LENGTH} characters")
        if self.source is not None and len(self.source) > 100:
            raise QueryError("source", "longer than 100 characters")
        if self.account_domain is not None and len(self.account_domain) > 255:
            raise QueryError("account", "longer than 255 characters")
        if self.cursor is not None and self.cursor < 0:
            raise QueryError("cursor", "must not be negative")
        for name, value in (("search", self.search), ("source", self.source)):
            if value is not None and "\x00" in value:
                raise QueryError(name, "contains a NUL character")
        return self


def _list_query() -> Any:
    return select(
        leads.c.id,
        leads.c.email,
        leads.c.first_name,
        leads.c.last_name,
        leads.c.title,
        accounts.c.name.label("company"),
        accounts.c.domain,
        leads.c.source,
        leads.c.consent_status,
        leads.c.created_at,
        leads.c.updated_at,
    ).select_from(leads.outerjoin(accounts, leads.c.account_id == accounts.c.id))


def list_leads(engine: Engine, query: LeadFilter) -> tuple[list[dict[str, Any]], int | None]:
    """One page of leads, newest first, and the cursor for the next page (None at the end)."""
    query = query.checked()
    stmt = _list_query().where(leads.c.erased_at.is_(None))
    if query.search:
        text = query.search.strip().lower()
        stmt = stmt.where(
            or_(
                leads.c.email.contains(text, autoescape=True),
                func.lower(leads.c.first_name).contains(text, autoescape=True),
                func.lower(leads.c.last_name).contains(text, autoescape=True),
                func.lower(accounts.c.name).contains(text, autoescape=True),
            )
        )
    if query.source:
        stmt = stmt.where(leads.c.source == query.source)
    if query.account_domain:
        stmt = stmt.where(accounts.c.domain == query.account_domain.strip().lower())
    if query.cursor is not None:
        stmt = stmt.where(leads.c.id < query.cursor)
    stmt = stmt.order_by(leads.c.id.desc()).limit(query.limit + 1)
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(stmt).mappings()]
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    return rows, (rows[-1]["id"] if more and rows else None)


def lead_id_by_email(conn: Connection, email: str) -> int | None:
    found = conn.execute(
        select(leads.c.id).where(leads.c.email == normalise_email(email))
    ).scalar_one_or_none()
    return int(found) if found is not None else None


def lead_exists(conn: Connection, lead_id: int) -> bool:
    return conn.execute(select(leads.c.id).where(leads.c.id == lead_id)).first() is not None


def get_lead(engine: Engine, lead_id: int) -> dict[str, Any] | None:
    """The lead with its account (``account`` is None when it has none) and its ``state``:
    stage, scores and pause (None before the lead is first scored)."""
    with engine.connect() as conn:
        lead = conn.execute(select(leads).where(leads.c.id == lead_id)).mappings().first()
        if lead is None:
            return None
        result = dict(lead)
        result["erased"] = lead["erased_at"] is not None
        account = None
        if lead["account_id"] is not None:
            found = (
                conn.execute(select(accounts).where(accounts.c.id == lead["account_id"]))
                .mappings()
                .first()
            )
            account = dict(found) if found else None
        result["account"] = account
        state = (
            conn.execute(
                select(
                    lead_states.c.stage,
                    lead_states.c.stage_since,
                    lead_states.c.engagement,
                    lead_states.c.fit,
                    lead_states.c.fit_grade,
                    lead_states.c.qualification,
                    lead_states.c.pause_until,
                    lead_states.c.scored_at,
                ).where(lead_states.c.lead_id == lead_id)
            )
            .mappings()
            .first()
        )
        result["state"] = dict(state) if state else None
        return result


def find_lead_id(engine: Engine, email: str) -> int | None:
    with engine.connect() as conn:
        return lead_id_by_email(conn, email)


def lead_events(
    engine: Engine, lead_id: int, *, limit: int = 100, cursor: int | None = None
) -> tuple[list[dict[str, Any]], int | None]:
    """The lead's timeline, newest first, keyset-paged on the event id."""
    if not 1 <= limit <= MAX_LIMIT:
        raise QueryError("limit", f"must be between 1 and {MAX_LIMIT}")
    stmt = select(
        events.c.id,
        events.c.occurred_at,
        events.c.type,
        events.c.name,
        events.c.channel,
        events.c.page_url,
        events.c.referrer,
        events.c.utm_campaign,
        events.c.utm_source,
        events.c.utm_medium,
        events.c.message_id,
        events.c.properties,
    ).where(events.c.lead_id == lead_id)
    stmt = stmt.order_by(events.c.occurred_at.desc(), events.c.id.desc()).limit(limit + 1)
    with engine.connect() as conn:
        if cursor is not None:
            # The cursor is the last event id shown; continue after its (time, id) position.
            at = conn.execute(
                select(events.c.occurred_at).where(
                    events.c.id == cursor, events.c.lead_id == lead_id
                )
            ).scalar_one_or_none()
            if at is None:
                raise QueryError("cursor", "not an event of this lead")
            stmt = stmt.where(
                or_(
                    events.c.occurred_at < at,
                    (events.c.occurred_at == at) & (events.c.id < cursor),
                )
            )
        rows = [dict(r) for r in conn.execute(stmt).mappings()]
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1]["id"] if more and rows else None)
