"""The deal list's query: typed and validated, parsed from query-string parameters.

What the dashboard's deal figures (won revenue, pipeline, deals per stage) link to:
``/deals?<filters>``. Every refusal is a :class:`~leadflow.core.lead_lists.ListQueryError`
naming the parameter. Parameters (each at most once unless marked *repeatable*):

- ``status`` (*repeatable*): ``open``, ``won`` or ``lost`` (the stored stage); with ``as_of``
  the status *at* that instant, as the deal funnel reads it (:mod:`leadflow.core.deals`:
  a deal exists once opened; it is won or lost once closed with a close date before then)
- ``created_after`` / ``created_before``: opened at ``created_after`` <= at < ``created_before``
- ``closed_after`` / ``closed_before``: closed (won or lost, with a close date) in the period
- ``owner``, ``currency`` (ISO 4217), ``account`` (id), ``lead`` (the contact's id)
- ``sort``: ``amount``, ``created_at``, ``closed_at``, ``expected_close``, ``name`` or
  ``id`` (``-column`` descending; default ``-created_at``); ``page``, ``size``
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from urllib.parse import urlencode

from leadflow.core.deals import DEAL_STAGES
from leadflow.core.lead_lists import (
    DEFAULT_SIZE,
    MAX_OFFSET,
    MAX_QUERY_STRING,
    ListQueryError,
    _integer,
    _items,
    _moment,
    _moment_text,
    _text,
)

MAX_SIZE = 500
SORTABLE = ("amount", "created_at", "closed_at", "expected_close", "name", "id")
_MOMENTS = ("created_after", "created_before", "closed_after", "closed_before", "as_of")
_SINGLE = frozenset({*_MOMENTS, "owner", "currency", "account", "lead", "sort", "page", "size"})


@dataclass(frozen=True, slots=True)
class DealQuery:
    statuses: tuple[str, ...] = ()
    as_of: datetime | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    closed_after: datetime | None = None
    closed_before: datetime | None = None
    owner: str = ""
    currency: str = ""
    account_id: int | None = None
    lead_id: int | None = None
    sort: str = "created_at"
    descending: bool = True
    page: int = 1
    size: int = DEFAULT_SIZE

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.size

    def with_page(self, page: int) -> DealQuery:
        return replace(self, page=page)

    def params(self, *, paging: bool = True) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = [("status", s) for s in self.statuses]
        for name in _MOMENTS:
            value = getattr(self, name)
            if value is not None:
                out.append((name, _moment_text(value)))
        for name in ("owner", "currency"):
            if getattr(self, name):
                out.append((name, getattr(self, name)))
        if self.account_id is not None:
            out.append(("account", str(self.account_id)))
        if self.lead_id is not None:
            out.append(("lead", str(self.lead_id)))
        if self.sort != "created_at" or not self.descending:
            out.append(("sort", ("-" if self.descending else "") + self.sort))
        if paging:
            if self.size != DEFAULT_SIZE:
                out.append(("size", str(self.size)))
            if self.page != 1:
                out.append(("page", str(self.page)))
        return out

    def query_string(self, *, paging: bool = True) -> str:
        return urlencode(self.params(paging=paging))

    def without(self, name: str, value: str | None = None) -> str:
        return urlencode(
            [
                (k, v)
                for k, v in self.params(paging=False)
                if not (k == name and (value is None or v == value))
            ]
        )


def parse(params: Mapping[str, str | Sequence[str]] | Iterable[tuple[str, str]]) -> DealQuery:
    """A :class:`DealQuery` from query-string parameters, or :class:`ListQueryError`."""
    pairs = _items(params)
    if sum(len(k) + len(v) for k, v in pairs) > MAX_QUERY_STRING:
        raise ListQueryError("query", f"longer than {MAX_QUERY_STRING} characters")
    seen: dict[str, str] = {}
    statuses: list[str] = []
    for key, value in pairs:
        if key == "status":
            text = _text("status", value, 20)
            if not text:
                continue
            if text not in DEAL_STAGES:
                raise ListQueryError(
                    "status", f"unknown status {text[:20]!r} (one of {', '.join(DEAL_STAGES)})"
                )
            if text not in statuses:
                statuses.append(text)
            continue
        if key not in _SINGLE:
            raise ListQueryError(key[:80] or "(empty name)", "unknown parameter")
        if key in seen:
            raise ListQueryError(key, "given more than once")
        if value.strip():
            seen[key] = value
    values: dict[str, object] = {"statuses": tuple(statuses)}
    for name in _MOMENTS:
        if name in seen:
            values[name] = _moment(name, seen[name])
    for after, before in (("created_after", "created_before"), ("closed_after", "closed_before")):
        low, high = values.get(after), values.get(before)
        if isinstance(low, datetime) and isinstance(high, datetime) and low >= high:
            raise ListQueryError(before, f"must be after {after}")
    if "owner" in seen:
        values["owner"] = _text("owner", seen["owner"], 64)
    if "currency" in seen:
        code = _text("currency", seen["currency"], 3).upper()
        if not (len(code) == 3 and code.isascii() and code.isalpha()):
            raise ListQueryError("currency", "a currency is a 3-letter ISO 4217 code")
        values["currency"] = code
    if "account" in seen:
        values["account_id"] = _integer("account", seen["account"], 1, 2**62)
    if "lead" in seen:
        values["lead_id"] = _integer("lead", seen["lead"], 1, 2**62)
    if "sort" in seen:
        text = _text("sort", seen["sort"], 40)
        column = text.lstrip("-+")
        if column not in SORTABLE:
            raise ListQueryError(
                "sort", f"unknown column {column[:40]!r} (one of {', '.join(SORTABLE)})"
            )
        values["sort"], values["descending"] = column, text.startswith("-")
    if "size" in seen:
        values["size"] = _integer("size", seen["size"], 1, MAX_SIZE)
    if "page" in seen:
        values["page"] = _integer("page", seen["page"], 1, MAX_OFFSET // 10)
    query = DealQuery(**values)  # type: ignore[arg-type]
    if query.offset > MAX_OFFSET:
        raise ListQueryError("page", f"starts past deal {MAX_OFFSET}: narrow the filter")
    return query
