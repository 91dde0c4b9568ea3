"""What the dashboard's read models share: page sizes, the count cap, index-friendly prefix
search, a sales rep's scope and UTC for SQLite aggregates.

Built to stay fast at 1,000,000 leads:
- lists page by keyset (``id < cursor ORDER BY id DESC``), never OFFSET;
- filtered counts are capped (``COUNT`` over at most :data:`COUNT_CAP` + 1 rows);
- search is by prefix on indexed expressions (email, lower(first_name), lower(last_name),
  lower(account name)), as ranges so both backends use the indexes;
- a sales rep's scope is ``accounts.owner = rep`` (leads have no owner column yet, so a
  lead belongs to the owner of its account).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.sql import ColumnElement, Select

from leadflow.adapters.db.tables import accounts, leads

COUNT_CAP = 10_000
PAGE_SIZE = 50


def prefix(column: ColumnElement[Any], text: str) -> ColumnElement[bool]:
    """``column`` starts with ``text``, as an index-friendly range."""
    upper = prefix_upper_bound(text)
    return column >= text if upper is None else and_(column >= text, column < upper)


def prefix_upper_bound(text: str) -> str | None:
    """The least string above every string that starts with ``text`` (its last character
    raised by one code point), or None when there is none (``text`` is all U+10FFFF).
    Surrogates are skipped: no backend can store or compare one."""
    stem = text.rstrip("\U0010ffff")
    if not stem:
        return None
    following = ord(stem[-1]) + 1
    if 0xD800 <= following <= 0xDFFF:
        following = 0xE000
    return stem[:-1] + chr(following)


def rep_accounts(rep: str) -> Select[Any]:
    return select(accounts.c.id).where(accounts.c.owner == rep)


def lead_scope(rep: str | None) -> list[ColumnElement[bool]]:
    if rep is None:
        return []
    return [leads.c.account_id.in_(rep_accounts(rep))]


# The columns of a lead row in the lists (with its account's name and owner).
LEAD_COLUMNS = (
    leads.c.id,
    leads.c.email,
    leads.c.first_name,
    leads.c.last_name,
    leads.c.title,
    leads.c.source,
    leads.c.created_at,
    leads.c.account_id,
    accounts.c.name.label("account_name"),
    accounts.c.owner.label("owner"),
)


def aware(value: Any) -> datetime | None:
    """Aggregates (min/max) bypass the column type on SQLite: re-apply UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value
