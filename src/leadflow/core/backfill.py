"""CRM history backfill, as plain data: accounts, opportunities and activities exported by
HubSpot, Salesforce or Pipedrive, read into records; and, per person, the sales actions that
write a deal history into the stage log at the source's own dates.

Column recognition works like the lead import's (:mod:`leadflow.core.importing`): headers are
compared after case-folding and dropping spaces, punctuation and underscores
(``Deal - Deal created`` = ``dealdealcreated``), ``--map COLUMN=FIELD`` overrides it, and every
other column is kept as a typed attribute (:class:`~leadflow.core.importing.ColumnTypes`).
Placeholder cells (``-``, ``Select``, ``--None--``...) are empty.

Decisions:

- **Dates** (:func:`parse_when`): Salesforce ``2023-01-09T09:30:00.000+0000``, ISO 8601 with
  ``Z`` or an offset, HubSpot ``2023-01-09 09:30``, Pipedrive ``2023-01-09 09:30:00``, plain
  days ``2023-01-09`` and US ``1/9/2023`` (with ``9:30 AM`` too). A time without an offset
  is UTC. A date outside 1900-2999 is refused.
- **Amounts** (:func:`parse_amount`): thousands separators (``12,500.50``, European
  ``12.500,50``, spaces), a currency symbol or ISO code before or after the number. A code
  (``USD 1,200``) or an unambiguous symbol (``€`` EUR, ``£`` GBP, ``₩`` KRW, ``₹`` INR)
  gives the currency; ``$`` and ``¥`` do not (several currencies use them). A negative
  amount is refused.
- **Currency**: the row's currency column, else the amount's code or symbol, else
  ``--currency``; a row with none of these is rejected. There is no silent default.
- **Stage** (:func:`deal_outcome`): Salesforce ``IsWon`` / ``IsClosed`` win over everything;
  then a status column (Pipedrive ``Deal - Status``: open/won/lost); then the stage name
  through ``--stage NAME=open|won|lost`` options, then :data:`DEFAULT_STAGES` (the standard
  stage names of the three CRMs). An unknown stage name is rejected naming it: it is never
  guessed open.
- **Dates of a deal**: the created (engaged) date is required: a deal without one cannot be
  placed in history. A won or lost deal needs its close date (Pipedrive: ``Won time`` /
  ``Lost time``); a close before the open date is refused. The close date of an open deal
  is its expected close.
- **Lost reason**: matched to the model's ``sales.lost_reasons`` by key or label
  (``No Decision`` = ``no_decision``); an unmatched reason is ``other`` (the source's text is
  kept in the deal's attributes) when the model has ``other``, else the row is rejected.
- **Contacts**: one or more e-mails in the contact column (separated by ``;``, ``,`` or
  spaces, or as ``Name <a@b.c>``); the first is the primary contact, whose stage the deal
  moves. A contact role column gives the buying role (``Decision Maker`` =
  ``decision_maker``; unknown roles are ``contact``). No e-mail: a CRM-only deal.
- **The stage log** (:func:`deal_actions`): for each new or changed deal of a person, the
  built-in ``open_deal`` action at its created date (the person moves to the stage with role
  ``opportunity``), then ``win`` or ``lose`` at its close date; applied in date order
  through the stage machine, so a refused one (a customer's later deal, a person in the
  dead end) only closes the deal. A loss while another deal of the person is still open
  then closes only that deal, as the live ``lose`` does.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from leadflow.core.config import LeadModel, SalesSpec
from leadflow.core.importing import (
    IGNORE,
    MAX_ATTRIBUTE_LENGTH,
    ColumnPlan,
    ColumnType,
    MappingError,
    _attribute_key,
    domain_of,
    header_key,
    is_placeholder,
    parse_employee_count,
    typed_value,
)
from leadflow.core.lifecycle import OPEN_DEAL, LeadState, apply_action
from leadflow.core.model import SalesAction
from leadflow.core.tracking import is_valid_email, normalise_email

Kind = Literal["accounts", "opportunities", "activities"]
KINDS: tuple[Kind, ...] = ("accounts", "opportunities", "activities")
Outcome = Literal["open", "won", "lost"]
OUTCOMES: tuple[Outcome, ...] = ("open", "won", "lost")
_OUTCOME: dict[str, Outcome] = {o: o for o in OUTCOMES}

# Target fields per kind, with the longest text each accepts.
ACCOUNT_FIELDS: dict[str, int] = {
    "account_id": 255,
    "name": 255,
    "domain": 255,
    "website": 2048,
    "industry": 100,
    "employees": 32,
    "revenue": 64,
    "country": 100,
    "owner": 255,
}
OPPORTUNITY_FIELDS: dict[str, int] = {
    "opportunity_id": 255,
    "name": 255,
    "account_id": 255,
    "account": 255,
    "contact_email": 2048,
    "contact_role": 64,
    "amount": 64,
    "currency": 16,
    "stage": 255,
    "status": 32,
    "is_won": 16,
    "is_closed": 16,
    "created_at": 64,
    "closed_at": 64,
    "won_at": 64,
    "lost_at": 64,
    "lost_reason": 255,
    "owner": 64,
    "product": 255,
}
ACTIVITY_FIELDS: dict[str, int] = {
    "activity_id": 255,
    "date": 64,
    "type": 100,
    "channel": 100,
    "source": 255,
    "campaign": 255,
    "content": 2048,
    "contact_email": 320,
    "url": 2048,
}
FIELDS_BY_KIND: dict[Kind, dict[str, int]] = {
    "accounts": ACCOUNT_FIELDS,
    "opportunities": OPPORTUNITY_FIELDS,
    "activities": ACTIVITY_FIELDS,
}
REQUIRED: dict[Kind, tuple[tuple[str, ...], ...]] = {
    # Each inner tuple: at least one of these fields must have a column.
    "accounts": (("account_id", "name", "domain", "website"),),
    "opportunities": (
        ("opportunity_id",),
        ("created_at",),
        ("stage", "status", "is_won"),
    ),
    "activities": (("date",), ("contact_email",), ("type", "channel", "campaign")),
}

_ALIASES: dict[Kind, dict[str, tuple[str, ...]]] = {
    "accounts": {
        "account_id": (
            "id",
            "account id",
            "record id",
            "company id",
            "organization - id",
            "organization id",
            "org id",
        ),
        "name": (
            "name",
            "account name",
            "company name",
            "company",
            "organization - name",
            "organization name",
            "organisation name",
        ),
        "domain": ("domain", "company domain name", "company domain", "domain name"),
        "website": ("website", "website url", "web site", "url", "organization - website"),
        "industry": ("industry", "organization - industry"),
        "employees": (
            "employees",
            "numberofemployees",
            "number of employees",
            "employee count",
            "organization - number of employees",
            "company size",
        ),
        "revenue": ("annualrevenue", "annual revenue", "revenue", "organization - annual revenue"),
        "country": (
            "country",
            "billingcountry",
            "billing country",
            "country/region",
            "organization - country",
            "organization - address - country",
        ),
        "owner": (
            "owner",
            "ownerid",
            "owner id",
            "owner name",
            "account owner",
            "company owner",
            "organization - owner",
        ),
    },
    "opportunities": {
        "opportunity_id": (
            "id",
            "opportunity id",
            "opportunityid",
            "record id",
            "deal id",
            "deal - id",
        ),
        "name": ("name", "opportunity name", "deal name", "deal - title", "title"),
        "account_id": ("accountid", "account id", "company id", "deal - organization id"),
        "account": (
            "accountname",
            "account name",
            "account.name",
            "account",
            "associated company",
            "associated company (primary)",
            "company",
            "company name",
            "deal - organization",
            "organization",
        ),
        "contact_email": (
            "contactemail",
            "contact email",
            "contact.email",
            "email",
            "associated contact",
            "associated contact email",
            "associated contacts",
            "person - email",
            "person - email - work",
            "deal - contact person email",
        ),
        "contact_role": ("contact role", "contactrole", "role", "buying role"),
        "amount": ("amount", "deal amount", "deal - value", "value", "amount (company currency)"),
        "currency": (
            "currency",
            "currencyisocode",
            "currency iso code",
            "deal currency code",
            "deal - currency",
            "currency code",
        ),
        "stage": ("stagename", "stage name", "stage", "deal stage", "deal - stage"),
        "status": ("status", "deal - status", "deal status"),
        "is_won": ("iswon", "is won", "won"),
        "is_closed": ("isclosed", "is closed", "closed"),
        "created_at": (
            "createddate",
            "created date",
            "create date",
            "created",
            "created at",
            "deal - deal created",
            "deal created",
            "engaged date",
            "engage date",
        ),
        "closed_at": (
            "closedate",
            "close date",
            "closed date",
            "deal - close date",
            "deal - closed on",
            "deal - expected close date",
            "expected close date",
        ),
        "won_at": ("deal - won time", "won time", "won date"),
        "lost_at": ("deal - lost time", "lost time", "lost date"),
        "lost_reason": (
            "lossreason",
            "loss reason",
            "loss_reason__c",
            "lost reason",
            "closed lost reason",
            "deal - lost reason",
        ),
        "owner": (
            "ownerid",
            "owner id",
            "owner",
            "owner name",
            "opportunity owner",
            "deal owner",
            "deal - owner",
            "sales agent",
            "sales rep",
        ),
        "product": ("product", "product name", "product2.name", "deal - product", "products"),
    },
    "activities": {
        "activity_id": (
            "id",
            "activity id",
            "activity - id",
            "task id",
            "record id",
            "engagement id",
        ),
        "date": (
            "date",
            "activitydate",
            "activity date",
            "activity - due date",
            "activity - done time",
            "activity - add time",
            "createddate",
            "created date",
            "create date",
            "timestamp",
            "occurred at",
            "activity timestamp",
        ),
        "type": (
            "type",
            "activity type",
            "activity - type",
            "tasksubtype",
            "task subtype",
            "event",
            "event name",
            "engagement type",
        ),
        "channel": ("channel", "medium", "utm medium", "utm_medium"),
        "source": ("source", "utm source", "utm_source", "lead source"),
        "campaign": (
            "campaign",
            "campaign name",
            "campaign.name",
            "utm campaign",
            "utm_campaign",
            "associated campaign",
        ),
        "content": (
            "content",
            "subject",
            "activity - subject",
            "description",
            "asset",
            "content name",
            "body",
        ),
        "contact_email": (
            "email",
            "contact email",
            "contactemail",
            "who.email",
            "person - email",
            "associated contact",
            "contact",
        ),
        "url": ("url", "page url", "page", "landing page"),
    },
}

KNOWN_HEADERS: dict[Kind, dict[str, str]] = {
    kind: {header_key(alias): target for target, aliases in table.items() for alias in aliases}
    for kind, table in _ALIASES.items()
}

_STAGE_NAMES: tuple[tuple[Outcome, tuple[str, ...]], ...] = (
    (
        "won",
        (
            "closed won",
            "closedwon",
            "closed - won",
            "won",
            "deal won",
            "closed/won",
        ),
    ),
    (
        "lost",
        ("closed lost", "closedlost", "closed - lost", "lost", "deal lost", "closed/lost"),
    ),
    (
        "open",
        (
            "open",
            # Salesforce's standard opportunity stages
            "prospecting",
            "qualification",
            "needs analysis",
            "value proposition",
            "id. decision makers",
            "perception analysis",
            "proposal/price quote",
            "negotiation/review",
            "negotiation",
            "proposal",
            # HubSpot's default sales pipeline (internal names and labels)
            "appointmentscheduled",
            "appointment scheduled",
            "qualifiedtobuy",
            "qualified to buy",
            "presentationscheduled",
            "presentation scheduled",
            "decisionmakerboughtin",
            "decision maker bought-in",
            "contractsent",
            "contract sent",
            # Pipedrive's default pipeline
            "lead in",
            "qualified",
            "contact made",
            "demo scheduled",
            "proposal made",
            "negotiations started",
            # common ones
            "engaging",
            "discovery",
            "demo",
        ),
    ),
)
DEFAULT_STAGES: dict[str, Outcome] = {
    header_key(name): outcome for outcome, names in _STAGE_NAMES for name in names
}
"""Stage names every CRM ships, read as open / won / lost without ``--stage``."""

_TRUE = frozenset({"true", "yes", "1", "y", "t"})
_FALSE = frozenset({"false", "no", "0", "n", "f"})
_EMAIL_IN_TEXT = re.compile(r"[^\s<>(),;\"']+@[^\s<>(),;\"']+")
_CURRENCY_CODE = re.compile(r"[A-Za-z]{3}")
SYMBOLS: dict[str, str | None] = {
    "€": "EUR",
    "£": "GBP",
    "₩": "KRW",
    "₹": "INR",
    "$": None,
    "¥": None,
    "US$": "USD",
    "A$": "AUD",
    "C$": "CAD",
}
"""Currency symbols an amount may carry; None where the symbol names several currencies."""
ROLE_ALIASES: dict[str, str] = {
    header_key(k): v
    for k, v in {
        "decision maker": "decision_maker",
        "economic buyer": "economic_buyer",
        "economic decision maker": "economic_buyer",
        "executive sponsor": "economic_buyer",
        "influencer": "influencer",
        "champion": "champion",
        "user": "user",
        "business user": "user",
        "end user": "user",
        "technical buyer": "technical_evaluator",
        "technical evaluator": "technical_evaluator",
        "evaluator": "technical_evaluator",
        "gatekeeper": "gatekeeper",
        "contact": "contact",
        "other": "contact",
    }.items()
}


# --------------------------------------------------------------------------- columns


def parse_map_options(kind: Kind, options: Sequence[str]) -> dict[str, str]:
    """``["Amt=amount"]`` → ``{"Amt": "amount"}``; the field must be one of ``kind``'s."""
    fields = (*FIELDS_BY_KIND[kind], IGNORE)
    mapping: dict[str, str] = {}
    for option in options:
        column, sep, target = option.partition("=")
        column, target = column.strip(), target.strip().lower()
        if not sep or not column or not target:
            raise MappingError(f"--map {option!r}: expected COLUMN=FIELD")
        if target not in fields:
            raise MappingError(
                f"--map {option!r}: unknown field {target!r} for {kind}; "
                f"fields are {', '.join(fields)}"
            )
        if column in mapping:
            raise MappingError(f"--map: column {column!r} is mapped twice")
        mapping[column] = target
    return mapping


def parse_stage_options(options: Sequence[str]) -> dict[str, Outcome]:
    """``["Signed=won", "Closed Won=won"]`` → stage name key → outcome."""
    found: dict[str, Outcome] = {}
    for option in options:
        name, sep, outcome = option.rpartition("=")
        outcome = outcome.strip().lower()
        if not sep or not name.strip():
            raise MappingError(f"--stage {option!r}: expected STAGE NAME=open|won|lost")
        if outcome not in OUTCOMES:
            raise MappingError(f"--stage {option!r}: {outcome!r} is not one of open, won, lost")
        found[header_key(name)] = _OUTCOME[outcome]
    return found


def check_currency(code: str) -> str:
    """``--currency``: an ISO 4217 code."""
    text = code.strip().upper()
    if not _CURRENCY_CODE.fullmatch(text):
        raise ValueError(f"--currency: {code!r} is not an ISO 4217 code of 3 letters")
    return text


def plan_columns(
    kind: Kind, headers: Sequence[str], overrides: Mapping[str, str] | None = None
) -> ColumnPlan:
    """Recognise a header row of ``kind``; ``overrides`` (column → field) win."""
    clean = tuple(h.replace("\ufeff", "").strip() for h in headers)
    if not any(clean):
        raise MappingError("the header row is empty: the first line must name the columns")
    known = KNOWN_HEADERS[kind]
    fields: dict[int, str] = {}
    by_name = {h: i for i, h in reversed(list(enumerate(clean)))}
    for column, target in (overrides or {}).items():
        index = by_name.get(column.strip())
        if index is None:
            matches = [i for i, h in enumerate(clean) if header_key(h) == header_key(column)]
            index = matches[0] if len(matches) == 1 else None
        if index is None:
            raise MappingError(
                f"--map {column}={target}: the file has no column {column!r} "
                f"(columns: {', '.join(repr(h) for h in clean if h)})"
            )
        if target != IGNORE and target in fields.values():
            raise MappingError(f"--map: field {target!r} is the target of two columns")
        fields[index] = target
    explicit = set(fields)
    attributes: dict[int, str] = {}
    for index, header in enumerate(clean):
        if index in explicit:
            continue
        recognised = known.get(header_key(header))
        if recognised is not None and recognised not in fields.values():
            fields[index] = recognised
        elif header:
            attributes[index] = _attribute_key(header)
    fields = {i: t for i, t in fields.items() if t != IGNORE}
    present = set(fields.values())
    for options in REQUIRED[kind]:
        if not present & set(options):
            names = " or ".join(options)
            raise MappingError(
                f"no {names} column: name one with --map COLUMN={options[0]} "
                f"(columns: {', '.join(repr(h) for h in clean if h)})"
            )
    return ColumnPlan(headers=clean, fields=fields, attributes=attributes)


# --------------------------------------------------------------------------- values


_WHEN_FORMATS = (
    "%Y-%m-%d",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%dT%H:%M:%S.%f",
    "%Y-%m-%dT%H:%M:%S%z",
    "%Y-%m-%dT%H:%M:%S.%f%z",
    "%Y-%m-%d %H:%M:%S%z",
    "%Y/%m/%d",
    "%Y/%m/%d %H:%M",
    "%m/%d/%Y",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y, %I:%M %p",
    "%m/%d/%Y %I:%M %p",
)
_ISO_START = re.compile(r"\d{4}-\d{2}-\d{2}(?:$|[T ])")
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)


def parse_when(text: str) -> datetime | None:
    """A CRM export's date or time as an aware UTC datetime; None when it is none."""
    t = text.strip()
    if _ISO_START.match(t):
        try:  # the common case, fast: ISO 8601 with or without time, offset or "Z"
            found = datetime.fromisoformat(t)
        except ValueError:
            pass
        else:
            found = found.replace(tzinfo=UTC) if found.tzinfo is None else found.astimezone(UTC)
            return found if EARLIEST <= found < LATEST else None
    if t.endswith("Z"):
        t = t[:-1] + "+0000"
    for fmt in _WHEN_FORMATS:
        try:
            found = datetime.strptime(t, fmt)
        except ValueError:
            continue
        found = found.replace(tzinfo=UTC) if found.tzinfo is None else found.astimezone(UTC)
        return found if EARLIEST <= found < LATEST else None
    return None


def parse_amount(text: str) -> tuple[float, str | None]:
    """``$12,500.50`` → (12500.5, None); ``€ 1.200,00`` → (1200.0, 'EUR');
    ``USD 3,000`` → (3000.0, 'USD'). ``ValueError`` for anything else."""
    t = text.strip().replace("\u00a0", " ")
    currency: str | None = None
    for symbol in sorted(SYMBOLS, key=len, reverse=True):
        if t.startswith(symbol) or t.endswith(symbol):
            currency = SYMBOLS[symbol]
            t = (t[len(symbol) :] if t.startswith(symbol) else t[: -len(symbol)]).strip()
            break
    else:
        code = re.fullmatch(r"([A-Za-z]{3})\s*(.+)|(.+?)\s*([A-Za-z]{3})", t)
        if code is not None:
            currency = (code.group(1) or code.group(4)).upper()
            t = (code.group(2) or code.group(3)).strip()
    if t.startswith("-"):
        raise ValueError("must not be negative")
    t = t.replace(" ", "").replace("'", "")
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?", t):
        number = float(t.replace(",", ""))
    elif re.fullmatch(r"\d{1,3}(?:\.\d{3})+(?:,\d+)?|\d+,\d{1,2}", t):
        number = float(t.replace(".", "").replace(",", "."))
    else:
        raise ValueError(f"{text[:40]!r} is not an amount")
    if number > 1e15:
        raise ValueError("larger than 1e15")
    return number, currency


def parse_flag(text: str) -> bool | None:
    key = text.strip().casefold()
    return True if key in _TRUE else False if key in _FALSE else None


def emails_in(text: str) -> list[str]:
    """The e-mail addresses of a contact cell, in order, without repeats."""
    found: list[str] = []
    for match in _EMAIL_IN_TEXT.findall(text):
        email = normalise_email(match.strip(".:"))
        if email not in found:
            found.append(email)
    return found


def buying_role(text: str | None) -> str:
    if not text:
        return "contact"
    return ROLE_ALIASES.get(header_key(text), "contact")


def lost_reason_key(model: LeadModel, text: str | None) -> tuple[str | None, str | None]:
    """(the model's reason key, the source's text when it did not match) or ``ValueError``."""
    reasons = (model.spec.sales or SalesSpec()).lost_reasons
    keys = [r.key for r in reasons]
    if not keys:
        return ((text or "other")[:64], None)
    if text:
        wanted = header_key(text)
        for r in reasons:
            if wanted in (header_key(r.key), header_key(r.label or r.key)):
                return r.key, None
    if "other" in keys:
        return "other", text
    raise ValueError(
        f"lost reason: {text!r} is none of the model's reasons ({', '.join(keys)}); "
        "add it to sales.lost_reasons or fix the cell"
    )


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class RowRejected:
    reason: str


@dataclass(frozen=True, slots=True)
class AccountRecord:
    key: str
    """What the account is matched by: its source id, else its domain, else its name."""
    account_id: str | None
    name: str
    domain: str | None = None
    industry: str | None = None
    employees: int | None = None
    country: str | None = None
    owner: str | None = None
    traits: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DealRecord:
    opportunity_id: str
    name: str
    outcome: Outcome
    created_at: datetime
    closed_at: datetime | None
    """When the deal was won or lost (None while open)."""
    expected_close: datetime | None = None
    amount: float | None = None
    currency: str = ""
    account_id: str | None = None
    account: str | None = None
    contacts: tuple[str, ...] = ()
    role: str = "contact"
    lost_reason: str | None = None
    owner: str | None = None
    product: str | None = None
    stage_name: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ActivityRecord:
    message_id: str
    email: str
    at: datetime
    type: str
    channel: str | None = None
    source: str | None = None
    campaign: str | None = None
    content: str | None = None
    url: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)


def _cells(
    kind: Kind, plan: ColumnPlan, values: Sequence[str], types: Mapping[int, ColumnType] | None
) -> tuple[dict[str, str], dict[str, Any]] | RowRejected:
    """The row's mapped fields (placeholders dropped) and its typed free columns."""
    if len(values) > len(plan.headers) and any(v.strip() for v in values[len(plan.headers) :]):
        return RowRejected(
            f"row has {len(values)} fields but the header has {len(plan.headers)} columns"
        )
    limits = FIELDS_BY_KIND[kind]
    data: dict[str, str] = {}
    for index, target in plan.fields.items():
        text = (values[index] if index < len(values) else "").strip()
        if is_placeholder(text, choice=target in ("industry", "country", "stage", "status")):
            continue
        if "\x00" in text:
            return RowRejected(f"{plan.headers[index]}: contains a NUL character")
        if len(text) > limits[target]:
            return RowRejected(f"{plan.headers[index]}: longer than {limits[target]} characters")
        data[target] = text
    attributes: dict[str, Any] = {}
    for index, key in plan.attributes.items():
        text = values[index].strip() if index < len(values) else ""
        if is_placeholder(text):
            continue
        if "\x00" in text:
            return RowRejected(f"{plan.headers[index]}: contains a NUL character")
        if len(text) > MAX_ATTRIBUTE_LENGTH:
            return RowRejected(
                f"{plan.headers[index]}: longer than {MAX_ATTRIBUTE_LENGTH} characters"
            )
        attributes[key] = typed_value(text, types.get(index, "text") if types else "text")
    return data, attributes


def _header(plan: ColumnPlan, target: str) -> str:
    index = plan.field_column(target)
    return plan.headers[index] if index is not None else target


def read_account(
    plan: ColumnPlan, values: Sequence[str], types: Mapping[int, ColumnType] | None = None
) -> AccountRecord | RowRejected:
    cells = _cells("accounts", plan, values, types)
    if isinstance(cells, RowRejected):
        return cells
    data, traits = cells
    domain = None
    for target in ("domain", "website"):
        if target in data:
            domain = domain_of(data[target])
            if domain is None and target == "domain":
                return RowRejected(
                    f"{_header(plan, 'domain')}: {data['domain'][:80]!r} is not a domain name"
                )
            if domain is not None:
                break
    if "website" in data:
        traits["website"] = data["website"]
    name = data.get("name") or domain
    if name is None:
        return RowRejected("missing account name (and no domain to name it by)")
    employees = None
    if "employees" in data:
        employees = parse_employee_count(data["employees"])
        if employees is None:  # "51-200": kept as written
            traits["employees"] = data["employees"]
    if "revenue" in data:
        try:
            traits["revenue"], code = parse_amount(data["revenue"])
        except ValueError as exc:
            return RowRejected(f"{_header(plan, 'revenue')}: {exc}")
        if code:
            traits["revenue_currency"] = code
    account_id = data.get("account_id")
    key = (
        f"id:{account_id}"
        if account_id
        else (f"domain:{domain}" if domain else f"name:{name.casefold()}")
    )
    return AccountRecord(
        key=key,
        account_id=account_id,
        name=name,
        domain=domain,
        industry=data.get("industry"),
        employees=employees,
        country=data.get("country"),
        owner=data.get("owner"),
        traits=traits,
    )


def deal_outcome(
    data: Mapping[str, str], stages: Mapping[str, Outcome], plan: ColumnPlan
) -> Outcome | RowRejected:
    """Open, won or lost from the row's flags, status and stage name (module docs)."""
    won = parse_flag(data["is_won"]) if "is_won" in data else None
    closed = parse_flag(data["is_closed"]) if "is_closed" in data else None
    if "is_won" in data and won is None:
        return RowRejected(f"{_header(plan, 'is_won')}: {data['is_won'][:40]!r} is not true/false")
    if "is_closed" in data and closed is None:
        return RowRejected(
            f"{_header(plan, 'is_closed')}: {data['is_closed'][:40]!r} is not true/false"
        )
    if won:
        return "won"
    if closed is not None:
        return "lost" if closed else "open"
    status = data.get("status")
    if status is not None:
        key = header_key(status)
        found = stages.get(key) or DEFAULT_STAGES.get(key)
        if found is None:
            return RowRejected(f"{_header(plan, 'status')}: unknown status {status[:60]!r}")
        return found
    stage = data.get("stage")
    if stage is None:
        return RowRejected(f"{_header(plan, 'stage')}: missing stage")
    key = header_key(stage)
    found = stages.get(key) or DEFAULT_STAGES.get(key)
    if found is None:
        return RowRejected(
            f"{_header(plan, 'stage')}: unknown stage {stage[:60]!r}; "
            f"say what it is with --stage '{stage[:60]}=open|won|lost'"
        )
    return found


def read_deal(
    plan: ColumnPlan,
    values: Sequence[str],
    model: LeadModel,
    *,
    types: Mapping[int, ColumnType] | None = None,
    stages: Mapping[str, Outcome] | None = None,
    currency: str | None = None,
) -> DealRecord | RowRejected:
    """One opportunity row (module docs); ``currency`` is ``--currency``."""
    cells = _cells("opportunities", plan, values, types)
    if isinstance(cells, RowRejected):
        return cells
    data, attributes = cells
    deal_id = data.get("opportunity_id")
    if deal_id is None:
        return RowRejected(f"{_header(plan, 'opportunity_id')}: missing deal id")
    outcome = deal_outcome(data, stages or {}, plan)
    if isinstance(outcome, RowRejected):
        return outcome
    moments: dict[str, datetime] = {}
    for target in ("created_at", "closed_at", "won_at", "lost_at"):
        if target in data:
            when = parse_when(data[target])
            if when is None:
                return RowRejected(
                    f"{_header(plan, target)}: {data[target][:40]!r} is not a date "
                    "(or not between 1900 and 2999)"
                )
            moments[target] = when
    if "created_at" not in moments:
        return RowRejected(f"{_header(plan, 'created_at')}: missing created date")
    opened = moments["created_at"]
    closed: datetime | None = None
    expected: datetime | None = None
    if outcome == "open":
        expected = moments.get("closed_at")
    else:
        own = "won_at" if outcome == "won" else "lost_at"
        closed = moments.get(own) or moments.get("closed_at")
        if closed is None:
            column = _header(plan, "closed_at" if "closed_at" in plan.fields.values() else own)
            return RowRejected(f"{column}: missing close date for a {outcome} deal")
        if closed.time() == datetime.min.time() and closed.date() == opened.date():
            # A close given as a day, on the day the deal opened: the end of that day
            # rather than before the open time.
            closed = opened if closed < opened else closed
        if closed < opened:
            column = _header(plan, own if own in moments else "closed_at")
            return RowRejected(
                f"{column}: {closed.date()} is before the deal was created ({opened.date()})"
            )
    amount: float | None = None
    code: str | None = None
    if "amount" in data:
        try:
            amount, code = parse_amount(data["amount"])
        except ValueError as exc:
            return RowRejected(f"{_header(plan, 'amount')}: {exc}")
    if "currency" in data:
        given = data["currency"].strip().upper()
        if not _CURRENCY_CODE.fullmatch(given):
            return RowRejected(
                f"{_header(plan, 'currency')}: {data['currency'][:20]!r} is not an ISO 4217 code"
            )
        if code is not None and code != given:
            return RowRejected(
                f"{_header(plan, 'amount')}: in {code} but the currency column says {given}"
            )
        code = given
    code = code or currency
    if code is None:
        return RowRejected(
            f"{_header(plan, 'currency')}: missing currency (give a currency column or "
            "--currency CODE; there is no default)"
        )
    contacts: tuple[str, ...] = ()
    if "contact_email" in data:
        found = emails_in(data["contact_email"])
        bad = [e for e in found if not is_valid_email(e)]
        if bad or not found:
            shown = bad[0] if bad else data["contact_email"][:80]
            return RowRejected(f"{_header(plan, 'contact_email')}: invalid email {shown!r}")
        contacts = tuple(found)
    reason: str | None = None
    if outcome == "lost":
        try:
            reason, unmatched = lost_reason_key(model, data.get("lost_reason"))
        except ValueError as exc:
            return RowRejected(f"{_header(plan, 'lost_reason')}: {exc}")
        if unmatched:
            attributes["lost_reason_source"] = unmatched
    elif "lost_reason" in data:
        attributes["lost_reason_source"] = data["lost_reason"]
    if "stage" in data:
        attributes.setdefault("stage_name", data["stage"])
    account = data.get("account")
    return DealRecord(
        opportunity_id=deal_id,
        name=data.get("name") or (f"{account} - {deal_id}" if account else f"CRM {deal_id}"),
        outcome=outcome,
        created_at=opened,
        closed_at=closed,
        expected_close=expected,
        amount=amount,
        currency=code,
        account_id=data.get("account_id"),
        account=account,
        contacts=contacts,
        role=buying_role(data.get("contact_role")),
        lost_reason=reason,
        owner=data.get("owner"),
        product=data.get("product"),
        stage_name=data.get("stage"),
        attributes=attributes,
    )


def read_activity(
    plan: ColumnPlan, values: Sequence[str], types: Mapping[int, ColumnType] | None = None
) -> ActivityRecord | RowRejected:
    cells = _cells("activities", plan, values, types)
    if isinstance(cells, RowRejected):
        return cells
    data, attributes = cells
    if "contact_email" not in data:
        return RowRejected(f"{_header(plan, 'contact_email')}: missing email")
    found = emails_in(data["contact_email"])
    if not found or not is_valid_email(found[0]):
        return RowRejected(
            f"{_header(plan, 'contact_email')}: invalid email {data['contact_email'][:80]!r}"
        )
    if "date" not in data:
        return RowRejected(f"{_header(plan, 'date')}: missing date")
    at = parse_when(data["date"])
    if at is None:
        return RowRejected(
            f"{_header(plan, 'date')}: {data['date'][:40]!r} is not a date "
            "(or not between 1900 and 2999)"
        )
    kind = data.get("type") or "activity"
    name = re.sub(r"[^\w]+", "_", kind.strip().casefold()).strip("_")[:100] or "activity"
    email = found[0]
    if "activity_id" in data:
        identity = f"id:{data['activity_id']}"
    else:
        identity = "|".join(
            [email, at.isoformat(), name, *(data.get(k, "") for k in ("campaign", "content"))]
        )
    digest = hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()[:40]
    return ActivityRecord(
        message_id=f"backfill-activity-{digest}",
        email=email,
        at=at,
        type=name,
        channel=data.get("channel"),
        source=data.get("source"),
        campaign=data.get("campaign"),
        content=data.get("content"),
        url=data.get("url"),
        attributes=attributes,
    )


# --------------------------------------------------------------------------- stage log


@dataclass(frozen=True, slots=True)
class DealSpan:
    """A stored deal of one person, as the stage log needs it."""

    id: int
    key: str
    outcome: Outcome
    created_at: datetime
    closed_at: datetime | None
    amount: float | None = None
    lost_reason: str | None = None

    def open_at(self, at: datetime) -> bool:
        return self.created_at <= at and (self.closed_at is None or self.closed_at > at)


@dataclass(frozen=True, slots=True)
class DealActions:
    actions: tuple[SalesAction, ...]
    """To store, in date order; each was accepted by the stage machine in its place."""
    refused: tuple[tuple[str, str], ...] = ()
    """(action id, the machine's reason): the deal closed without moving the person."""
    closed_alone: tuple[str, ...] = ()
    """Losses while another deal of the person was open: only the deal closed."""


def open_action_id(opportunity_id: int) -> str:
    """The ``open_deal`` action of a deal (the CRM update path uses the same id)."""
    return f"{OPEN_DEAL}:{opportunity_id}"


def close_action_id(key: str, outcome: Outcome) -> str:
    return f"backfill:{'win' if outcome == 'won' else 'lose'}:{key}"[:255]


def deal_actions(
    state: LeadState,
    deals: Sequence[DealSpan],
    changed: Collection[int],
    model: LeadModel,
    *,
    actor: str = "backfill",
) -> DealActions:
    """The sales actions that put the ``changed`` deals of one person in its stage log at
    their own dates (module docs). ``state`` is the person's current fold; ``deals`` are all
    its deals as primary contact (for "another deal is open then")."""
    seen_open = {a.action_id for a in state.actions}
    candidates: list[tuple[datetime, int, str, SalesAction]] = []
    for deal in deals:
        if deal.id not in changed:
            continue
        opened = SalesAction(
            action_id=open_action_id(deal.id),
            name=OPEN_DEAL,
            at=deal.created_at,
            lead_id=state.lead_id,
            actor=actor,
        )
        candidates.append((deal.created_at, 0, deal.key, opened))
        if deal.outcome != "open" and deal.closed_at is not None:
            closing = SalesAction(
                action_id=close_action_id(deal.key, deal.outcome),
                name="win" if deal.outcome == "won" else "lose",
                at=deal.closed_at,
                lead_id=state.lead_id,
                amount=deal.amount if deal.outcome == "won" else None,
                reason=deal.lost_reason if deal.outcome == "lost" else None,
                actor=actor,
            )
            candidates.append((deal.closed_at, 1, deal.key, closing))
    candidates.sort(key=lambda c: (c[0], c[1], c[2]))
    accepted: list[SalesAction] = []
    refused: list[tuple[str, str]] = []
    alone: list[str] = []
    by_key = {d.key: d for d in deals}
    for at, order, key, action in candidates:
        if action.action_id in seen_open:
            continue
        if order == 1 and action.name == "lose":
            this = by_key[key]
            if any(d.id != this.id and d.open_at(at) for d in deals):
                alone.append(key)
                continue
        outcome = apply_action(state, action, model)
        if outcome.refusal is not None:
            refused.append((action.action_id, outcome.refusal))
            continue
        state = outcome.state
        accepted.append(action)
    return DealActions(tuple(accepted), tuple(refused), tuple(alone))


def earliest(moments: Sequence[datetime]) -> datetime:
    """The earliest of ``moments`` (a person created by a backfill is identified then)."""
    return min(moments) - timedelta(seconds=1)
