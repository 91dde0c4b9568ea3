"""Lead import from CSV files, as plain data: which column is which field, and which rows are
good.

Column recognition covers HubSpot and Salesforce export headers, plain snake_case names and
business-card / trade-show lists (Korean headers included) without a map; ``--map
column=field`` overrides it. Headers are compared after case-folding and dropping spaces,
punctuation and underscores, so ``First Name``, ``FirstName`` and ``first_name`` are one.

Decisions:

- A row is rejected, with a reason, for a missing or invalid e-mail, a value longer than its
  column allows (never silently truncated), a NUL character, or a consent value that is not
  recognisably yes or no.
- A value that looks like a spreadsheet formula (``=HYPERLINK(...)``, ``+82 10 ...``,
  ``@SUM``) is stored as the text it is: nothing in leadflow evaluates it, and every CSV that
  leadflow writes neutralises such cells (OWASP), so it cannot run in someone's spreadsheet.
- ``이름`` is a given name when the file also has ``성`` (family name); alone it is the full
  name. A full name with a space is split into first and last name (Hangul: family name
  first); without a space it is stored whole as the first name.
- Columns that are not lead fields are kept as free attributes under their header
  (``--map column=ignore`` drops one), typed per column (:class:`ColumnTypes`): a column
  whose every filled cell is a number is stored as numbers, likewise dates (ISO
  ``2024-03-05``, HubSpot ``2024-03-05 14:22``, Salesforce ``3/5/2024`` and ``3/5/2024,
  2:22 PM``; stored as ISO text) and yes/no (``true``/``false``/``yes``/``no``, stored as
  booleans); anything else is text. Numbers with a leading zero (``01234``) stay text.
- Placeholder cells (:data:`PLACEHOLDERS`: ``Select``, ``-``, ``--``, ``N/A``, ``none``,
  ``null``, ``(none)``, ``(blank)``, ``#N/A``, Salesforce's ``--None--`` and ``[not
  provided]``, case-insensitive; ``Unknown`` too in choice
  columns, :data:`CHOICE_FIELDS`) are read as empty: they never fill or replace a value.
- A row without an e-mail is rejected unless ``allow_without_email`` (``--without-email``)
  is set and the row has a record id (HubSpot ``Record ID``, Salesforce ``Lead ID`` /
  ``Id``, Pipedrive ``Person - ID``...): the record id is then the lead's identity.
- Country, industry and employees describe the company. With a company (or a domain) they go
  to its account; without one they are kept on the lead (attributes ``industry``,
  ``country``, ``employees``) and given to the profile by the import's ``identify``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

from leadflow.core.tracking import is_valid_email, normalise_email

# Target fields and the longest value each accepts (the storage column's width).
FIELD_LIMITS: dict[str, int] = {
    "email": 320,
    "first_name": 255,
    "last_name": 255,
    "full_name": 511,
    "title": 255,
    "phone": 64,
    "mobile": 64,
    "department": 255,
    "company": 255,
    "domain": 255,
    "website": 2048,
    "industry": 100,
    "employee_count": 32,
    "country": 100,
    "source": 100,
    "consent": 32,
    "lead_status": 100,
    "crm_id": 255,
}
IGNORE = "ignore"
FIELDS = (*FIELD_LIMITS, IGNORE)
MAX_ATTRIBUTE_LENGTH = 2048
MAX_ATTRIBUTE_KEY_LENGTH = 100
MAX_SOURCE_LENGTH = FIELD_LIMITS["source"]
MAX_RECORD_ID_LENGTH = 251
"""A record id that identifies a lead without an e-mail is kept as ``crm:<id>`` in an
identity (255 characters)."""
# Cells a spreadsheet would run as a formula (OWASP CSV injection); the same rule as the
# CLI's output module, kept here so services need not import an entrypoint.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

_ALIASES: dict[str, tuple[str, ...]] = {
    "email": (
        "email",
        "e-mail",
        "email address",
        "emailaddress",
        "mail",
        "work email",
        "person - email",
        "person - email - work",
        "business email",
        "이메일",
        "이메일주소",
        "메일",
        "전자우편",
    ),
    "first_name": ("first name", "firstname", "given name", "forename", "first"),
    "last_name": ("last name", "lastname", "surname", "family name", "last", "성"),
    "full_name": (
        "name",
        "full name",
        "fullname",
        "contact name",
        "person - name",
        "contact",
        "이름",
        "성명",
        "성함",
        "담당자",
        "담당자명",
        "고객명",
    ),
    "title": ("title", "job title", "jobtitle", "position", "role", "직함", "직책", "직위", "직급"),
    "phone": (
        "phone",
        "phone number",
        "phonenumber",
        "telephone",
        "tel",
        "work phone",
        "person - phone",
        "person - phone - work",
        "business phone",
        "전화",
        "전화번호",
        "회사전화",
        "연락처",
    ),
    "mobile": (
        "mobile",
        "mobile phone",
        "mobilephone",
        "mobile phone number",
        "cell",
        "cell phone",
        "휴대폰",
        "휴대전화",
        "핸드폰",
        "휴대폰번호",
    ),
    "department": ("department", "dept", "부서", "부서명", "소속"),
    "company": (
        "company",
        "company name",
        "company / account",
        "companyname",
        "account name",
        "accountname",
        "account",
        "organization",
        "organisation",
        "person - organization",
        "organization - name",
        "회사",
        "회사명",
        "기업명",
        "소속회사",
    ),
    "domain": ("domain", "company domain name", "company domain", "email domain"),
    "website": ("website", "website url", "web site", "url", "homepage", "홈페이지", "웹사이트"),
    "industry": ("industry", "업종", "산업"),
    "employee_count": (
        "employee count",
        "employees",
        "number of employees",
        "numberofemployees",
        "no. of employees",
        "company size",
        "직원수",
        "임직원수",
    ),
    "country": ("country", "country/region", "country region", "국가"),
    "source": (
        "source",
        "lead source",
        "leadsource",
        "original source",
        "original source type",
        "유입경로",
        "출처",
    ),
    "consent": (
        "consent",
        "email consent",
        "marketing consent",
        "opt in",
        "optin",
        "email opt in",
        "수신동의",
        "마케팅수신동의",
        "개인정보수집동의",
    ),
    "lead_status": ("lead status", "leadstatus", "status", "리드상태"),
    "crm_id": (
        "record id",
        "recordid",
        "id",
        "lead id",
        "leadid",
        "contact id",
        "contactid",
        "person - id",
        "person id",
    ),
}

PLACEHOLDERS = frozenset(
    {
        *("select", "-", "--", "---", "n/a", "#n/a", "none", "null", "nil"),
        *("(none)", "(blank)", "--none--", "[not provided]"),
    }
)
"""Cells CRM exports write for "nothing chosen" (case-insensitive): read as empty."""
CHOICE_FIELDS = frozenset({"industry", "country", "source", "lead_status", "employee_count"})
"""Fields filled from a choice list, where ``Unknown`` also means nothing was chosen."""
CHOICE_PLACEHOLDERS = frozenset({"unknown"})


def is_placeholder(text: str, *, choice: bool = False) -> bool:
    """True for a cell that says nothing (see :data:`PLACEHOLDERS`)."""
    key = text.strip().casefold()
    return not key or key in PLACEHOLDERS or (choice and key in CHOICE_PLACEHOLDERS)


def neutralise_cell(value: Any) -> Any:
    """Prefix a formula-like text cell with a quote, for CSV files leadflow writes."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def header_key(header: str) -> str:
    """``First Name`` / ``FirstName`` / ``first_name`` → ``firstname``; Hangul is kept."""
    return re.sub(r"[\W_]+", "", header.replace("\ufeff", "").casefold())


KNOWN_HEADERS: dict[str, str] = {
    header_key(alias): target for target, aliases in _ALIASES.items() for alias in aliases
}


class MappingError(ValueError):
    """A ``--map`` option or the header row cannot be used; the message names it."""


@dataclass(frozen=True, slots=True)
class ColumnPlan:
    """Which file column feeds which field; everything else becomes an attribute."""

    headers: tuple[str, ...]
    fields: Mapping[int, str]  # column index → target field
    attributes: Mapping[int, str]  # column index → attribute key

    def field_column(self, target: str) -> int | None:
        for index, name in self.fields.items():
            if name == target:
                return index
        return None


def parse_map_options(options: Sequence[str]) -> dict[str, str]:
    """``["Mail=email", "Firma=company"]`` → ``{"Mail": "email", "Firma": "company"}``."""
    mapping: dict[str, str] = {}
    for option in options:
        column, sep, target = option.partition("=")
        column, target = column.strip(), target.strip().lower()
        if not sep or not column or not target:
            raise MappingError(f"--map {option!r}: expected COLUMN=FIELD")
        if target not in FIELDS:
            raise MappingError(
                f"--map {option!r}: unknown field {target!r}; fields are {', '.join(FIELDS)}"
            )
        if column in mapping:
            raise MappingError(f"--map: column {column!r} is mapped twice")
        mapping[column] = target
    return mapping


def plan_columns(
    headers: Sequence[str],
    overrides: Mapping[str, str] | None = None,
    *,
    allow_without_email: bool = False,
) -> ColumnPlan:
    """Recognise the header row; ``overrides`` (column → field) win over recognition."""
    clean = tuple(h.replace("\ufeff", "").strip() for h in headers)
    if not any(clean):
        raise MappingError("the header row is empty: the first line must name the columns")
    overrides = dict(overrides or {})
    by_name = {h: i for i, h in reversed(list(enumerate(clean)))}
    fields: dict[int, str] = {}
    for column, target in overrides.items():
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
    has_last = "last_name" in fields.values() or any(
        KNOWN_HEADERS.get(header_key(h)) == "last_name"
        for i, h in enumerate(clean)
        if i not in explicit
    )
    attributes: dict[int, str] = {}
    for index, header in enumerate(clean):
        if index in explicit:
            continue
        known = KNOWN_HEADERS.get(header_key(header))
        if known == "full_name" and has_last and header_key(header) == "이름":
            known = "first_name"
        if known is not None and known not in fields.values():
            fields[index] = known
        elif header:
            attributes[index] = _attribute_key(header)
    fields = {i: t for i, t in fields.items() if t != IGNORE}
    if "email" not in fields.values() and not (allow_without_email and "crm_id" in fields.values()):
        raise MappingError(
            "no e-mail column: name one with --map COLUMN=email "
            f"(columns: {', '.join(repr(h) for h in clean if h)})"
        )
    return ColumnPlan(headers=clean, fields=fields, attributes=attributes)


def _attribute_key(header: str) -> str:
    key = re.sub(r"[\W]+", "_", header.strip().casefold()).strip("_")
    return (key or "column")[:MAX_ATTRIBUTE_KEY_LENGTH]


ColumnType = Literal["number", "date", "boolean", "text"]
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_TRUE = frozenset({"true", "yes"})
_FALSE = frozenset({"false", "no"})
_DATE_FORMATS = (
    ("%Y-%m-%d", False),
    ("%m/%d/%Y", False),
    ("%Y-%m-%d %H:%M", True),
    ("%Y-%m-%d %H:%M:%S", True),
    ("%Y-%m-%dT%H:%M:%S", True),
    ("%Y-%m-%dT%H:%M:%SZ", True),
    ("%m/%d/%Y %H:%M", True),
    ("%m/%d/%Y, %I:%M %p", True),
    ("%m/%d/%Y %I:%M %p", True),
)


def as_number(text: str) -> int | float | None:
    """``1,200`` → 1200, ``3.5`` → 3.5; None for anything else (``01234`` stays text)."""
    t = text.strip()
    if not _NUMBER.fullmatch(t):
        return None
    digits = t.lstrip("-")
    if len(digits) > 1 and digits[0] == "0" and digits[1] != ".":
        return None  # a code (zip, id) with a leading zero
    plain = t.replace(",", "")
    if "." in plain:
        return float(plain)
    return int(plain) if len(plain.lstrip("-")) <= 15 else None


def as_date(text: str) -> str | None:
    """A date (or date and time) in a CRM export's format, as ISO text; None otherwise."""
    t = text.strip()
    for fmt, has_time in _DATE_FORMATS:
        try:
            parsed = datetime.strptime(t, fmt)
        except ValueError:
            continue
        return parsed.isoformat() if has_time else date.isoformat(parsed.date())
    return None


def as_boolean(text: str) -> bool | None:
    key = text.strip().casefold()
    return True if key in _TRUE else False if key in _FALSE else None


_CONVERT = {"number": as_number, "date": as_date, "boolean": as_boolean}


class ColumnTypes:
    """The type of each free (attribute) column, inferred from every filled cell: a column
    is a number, date or boolean column when every filled, non-placeholder cell reads as
    one; else text. Feed it every row (:meth:`observe`), then read :meth:`types`."""

    def __init__(self, plan: ColumnPlan) -> None:
        self.plan = plan
        self._open: dict[int, set[str]] = {
            i: {"number", "date", "boolean"} for i in plan.attributes
        }
        self._seen: set[int] = set()

    def observe(self, values: Sequence[str]) -> None:
        for index, kinds in self._open.items():
            if not kinds or index >= len(values) or is_placeholder(values[index]):
                continue
            self._seen.add(index)
            text = values[index]
            for kind in list(kinds):
                if _CONVERT[kind](text) is None:
                    kinds.discard(kind)

    def types(self) -> dict[int, ColumnType]:
        found: dict[int, ColumnType] = {}
        for index, kinds in self._open.items():
            kind: ColumnType = "text"
            if index in self._seen:
                for candidate in ("number", "date", "boolean"):
                    if candidate in kinds:
                        kind = candidate
                        break
            found[index] = kind
        return found


def typed_value(text: str, kind: ColumnType) -> Any:
    """A cell as its column's type (text when it does not read as one)."""
    if kind == "text":
        return text
    value = _CONVERT[kind](text)
    return text if value is None else value


@dataclass(frozen=True, slots=True)
class LeadRecord:
    """One good row, normalised; ``None`` means "the file says nothing". A record without
    an e-mail is identified by ``crm_id`` (its export's record id)."""

    email: str | None
    first_name: str | None = None
    last_name: str | None = None
    title: str | None = None
    phone: str | None = None
    company: str | None = None
    domain: str | None = None
    industry: str | None = None
    employee_count: int | None = None
    country: str | None = None
    source: str | None = None
    consent: str | None = None  # 'granted' | 'denied' | None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    crm_id: str | None = None

    @property
    def key(self) -> str:
        """What the lead is matched by: its e-mail, else its record id."""
        return self.email if self.email is not None else f"crm:{self.crm_id}"

    @property
    def has_account(self) -> bool:
        """True when the row names a company (or domain): the account holds its industry,
        country and employees."""
        return bool(self.company or self.domain)


@dataclass(frozen=True, slots=True)
class RowRejected:
    reason: str


_YES = {"yes", "y", "true", "t", "1", "granted", "opt-in", "optin", "opted in", "예", "동의", "o"}
_NO = {"no", "n", "false", "f", "0", "denied", "opt-out", "optout", "opted out", "아니오"}
_NO |= {"아니요", "거부", "미동의", "x"}
HANGUL = re.compile(r"[\uac00-\ud7a3]")


def parse_consent(value: str) -> str | None:
    text = value.strip().casefold()
    if text in _YES:
        return "granted"
    if text in _NO:
        return "denied"
    raise ValueError(f"consent: {value[:40]!r} is neither yes nor no")


def split_full_name(name: str) -> tuple[str, str | None]:
    parts = name.split()
    if len(parts) < 2:
        return name, None
    if HANGUL.search(name):
        return " ".join(parts[1:]), parts[0]
    return " ".join(parts[:-1]), parts[-1]


def domain_of(value: str) -> str | None:
    """``https://www.Acme.com/about`` → ``acme.com``; None when it is not a host name."""
    host = value.strip().lower()
    for prefix in ("https://", "http://"):
        host = host.removeprefix(prefix)
    host = host.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0].split(":", 1)[0]
    host = host.removeprefix("www.")
    if re.fullmatch(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+", host):
        return host[:255]
    return None


def parse_employee_count(value: str) -> int | None:
    text = value.strip().replace(",", "").replace(" ", "")
    if text.isdigit() and text.isascii() and len(text) <= 9:
        return int(text)
    return None


def check_source(source: str) -> str:
    """``--source``: a short label such as ``tradeshow``."""
    text = source.strip()
    if not text:
        raise ValueError("--source: must not be empty")
    if len(text) > MAX_SOURCE_LENGTH:
        raise ValueError(f"--source: longer than {MAX_SOURCE_LENGTH} characters")
    if any(ord(c) < 32 for c in text):
        raise ValueError("--source: contains control characters")
    return text


def read_row(
    plan: ColumnPlan,
    values: Sequence[str],
    *,
    source: str | None = None,
    types: Mapping[int, ColumnType] | None = None,
    allow_without_email: bool = False,
) -> LeadRecord | RowRejected:
    """Validate one data row against the plan; ``source`` (``--source``) wins over the file.
    ``types`` (from :class:`ColumnTypes`) types the free columns; without it they are text.
    Placeholder cells are read as empty."""
    if len(values) > len(plan.headers) and any(v.strip() for v in values[len(plan.headers) :]):
        return RowRejected(
            f"row has {len(values)} fields but the header has {len(plan.headers)} columns"
        )
    data: dict[str, str] = {}
    for index, target in plan.fields.items():
        raw = values[index] if index < len(values) else ""
        text = raw.strip()
        if is_placeholder(text, choice=target in CHOICE_FIELDS):
            continue
        if "\x00" in text:
            return RowRejected(f"{plan.headers[index]}: contains a NUL character")
        if len(text) > FIELD_LIMITS[target]:
            return RowRejected(
                f"{plan.headers[index]}: longer than {FIELD_LIMITS[target]} characters"
            )
        data[target] = text
    email_raw = data.get("email")
    email: str | None = None
    if email_raw is None:
        if not (allow_without_email and "crm_id" in data):
            return RowRejected("missing email")
        if len(data["crm_id"]) > MAX_RECORD_ID_LENGTH:
            return RowRejected(f"record id: longer than {MAX_RECORD_ID_LENGTH} characters")
    else:
        email = normalise_email(email_raw)
        if not is_valid_email(email):
            return RowRejected(f"invalid email: {email_raw[:80]!r}")

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
    for target in ("department", "lead_status", "crm_id"):
        if target in data:
            attributes[target] = data[target]

    first, last = data.get("first_name"), data.get("last_name")
    if "full_name" in data and not (first or last):
        first, last = split_full_name(data["full_name"])
        if len(first) > 255 or (last and len(last) > 255):
            return RowRejected("name: longer than 255 characters")
    elif "full_name" in data:
        attributes["full_name"] = data["full_name"]
    phone = data.get("phone")
    if "mobile" in data:
        if phone is None:
            phone = data["mobile"]
        else:
            attributes["mobile"] = data["mobile"]

    consent = None
    if "consent" in data:
        try:
            consent = parse_consent(data["consent"])
        except ValueError as exc:
            return RowRejected(str(exc))

    domain = None
    if "domain" in data:
        domain = domain_of(data["domain"])
        if domain is None:
            return RowRejected(f"domain: {data['domain'][:80]!r} is not a domain name")
    elif "website" in data:
        domain = domain_of(data["website"])
        attributes["website"] = data["website"]

    employees = None
    if "employee_count" in data:
        employees = parse_employee_count(data["employee_count"])
        if employees is None:  # "51-200", "10K+": kept as written
            attributes["employees"] = data["employee_count"]
    if not (data.get("company") or domain):
        # No account to hold them: the lead keeps what the file says about its company.
        for key, value in (
            ("industry", data.get("industry")),
            ("country", data.get("country")),
            ("employees", employees),
        ):
            if value is not None:
                attributes[key] = value

    return LeadRecord(
        email=email,
        first_name=first,
        last_name=last,
        title=data.get("title"),
        phone=phone,
        company=data.get("company"),
        domain=domain,
        industry=data.get("industry"),
        employee_count=employees,
        country=data.get("country"),
        source=source if source is not None else data.get("source"),
        consent=consent,
        attributes=attributes,
        crm_id=data.get("crm_id"),
    )
