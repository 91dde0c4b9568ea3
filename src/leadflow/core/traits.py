"""What ``identify`` and ``group`` traits mean: the one reading of a message's traits.

Ingestion stores a reading on the lead and its account
(:mod:`leadflow.services.ingest`) and the stage machine folds the same reading into the
replayed profile (:func:`leadflow.core.lifecycle.merge_traits`), so the two cannot read a
trait differently. What each side does with a reading differs only where the stored row has
a policy of its own, said here once:

- the stored lead's ``email`` is an identity (unique): it is set once, never replaced; the
  profile takes the latest address given;
- the stored account's columns are shared by its people and other sources (imports,
  target discovery): a value fills a blank and never replaces one, except ``is_target``
  (the sender's latest yes/no); the profile takes the latest value its own events give,
  and a trait can mark the account a target but never unmark it there;
- names given as ``name`` fill blanks; ``first_name``/``last_name`` replace.

Values that say nothing (None, empty or blank text, a dict or list where text is meant)
never erase what is known.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from leadflow.core.config import CONSENT_VALUES
from leadflow.core.inputs import count_problem

PERSON_TEXT = {
    "firstName": "first_name",
    "first_name": "first_name",
    "lastName": "last_name",
    "last_name": "last_name",
    "title": "title",
    "phone": "phone",
    "Original Source": "source",
    "Lead Source": "source",
    "leadSource": "source",
    "lead_source": "source",
    "source": "source",
}
"""Identify traits kept in a text column of the lead (trait -> column). The lead source may
be given as ``source``, ``lead_source``/``leadSource``, HubSpot's ``Original Source`` or
Salesforce's ``Lead Source``; when several are given, the last in this order wins (a later
key overwrites an earlier one, as ``first_name`` does ``firstName``)."""
PERSON_LENGTHS = {"first_name": 255, "last_name": 255, "title": 255, "phone": 64, "source": 100}
"""The lead columns' lengths (``adapters.db.tables.leads``): longer text is cut to fit, on
the lead and in the profile alike."""
ACCOUNT_LENGTH = 100
"""Length of the account's ``industry`` and ``country`` columns."""
NAME_LENGTH = 255
COUNT_KEYS = ("employees", "employee_count")
"""Employee-count traits, the first usable one wins."""
TARGET_KEYS = ("is_target_account", "is_target", "target_account")
IDENTITY_KEYS = frozenset({"id", "userId", "anonymousId"})
PERSON_KEYS = frozenset({*PERSON_TEXT, "email", "name", "consent", "company", *IDENTITY_KEYS})
"""Identify traits with a meaning of their own; every other one is a free attribute."""
ACCOUNT_COLUMN_TRAITS = frozenset(
    {"name", "domain", "website", "industry", "employees", "employee_count", "country"}
)
"""Group traits with an account column; the others are kept in ``accounts.traits``."""
FREE_MAIL_DOMAINS = frozenset(
    {
        "gmail.com",
        "googlemail.com",
        "yahoo.com",
        "hotmail.com",
        "outlook.com",
        "live.com",
        "icloud.com",
        "naver.com",
        "daum.net",
        "hanmail.net",
        "kakao.com",
        "proton.me",
        "protonmail.com",
    }
)


def consent_trait(value: Any) -> str | None:
    """What a ``consent`` trait says: ``true``/``false``, a status string (``granted``,
    ``denied``, ``unknown``, any case), or Segment-style ``{"status": "granted", ...}``;
    None when it says nothing."""
    if isinstance(value, Mapping):
        value = value.get("status")
    if isinstance(value, bool):
        return "granted" if value else "denied"
    if isinstance(value, str) and value.strip().lower() in CONSENT_VALUES:
        return value.strip().lower()
    return None


def consent_method(value: Any) -> str:
    """How a consent trait was given: its ``method`` when it names one, else ``identify``."""
    method = value.get("method") if isinstance(value, Mapping) else None
    return str(method or "identify")[:255]


def person_text(value: Any, length: int) -> str | None:
    """A person's text trait (names, title, phone, source): text or a number, stripped and
    cut to ``length``; None for nothing, a yes/no, a dict or a list."""
    if value is None or isinstance(value, dict | list | bool):
        return None
    return str(value).strip()[:length] or None


def account_text(value: Any) -> str | None:
    """An account's text trait (industry, country): text only, stripped and cut to fit."""
    return value.strip()[:ACCOUNT_LENGTH] or None if isinstance(value, str) else None


def employee_count(value: Any) -> int | None:
    """An employee count from a trait; None when it is not one or out of range (events
    stored before the tracking API bounded counts must not break a replay)."""
    if count_problem(value) is not None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit() and value.isascii():
        return int(value.strip())
    return None


def email_domain(email: str | None) -> str | None:
    """The company domain of an address; None for free-mail providers."""
    if not email or "@" not in email:
        return None
    domain = email.rsplit("@", 1)[1].lower()
    return None if domain in FREE_MAIL_DOMAINS else domain


def domain_of(traits: Mapping[str, Any]) -> str | None:
    """The web domain in ``domain`` or ``website`` (scheme, ``www.`` and path dropped)."""
    for key in ("domain", "website"):
        value = traits.get(key)
        if isinstance(value, str) and value.strip():
            host = value.strip().lower()
            for prefix in ("https://", "http://"):
                host = host.removeprefix(prefix)
            host = host.split("/", 1)[0].removeprefix("www.")
            if host and " " not in host and "." in host:
                return host[:255]
    return None


@dataclass(frozen=True, slots=True)
class AccountReading:
    """What traits say about an account (a ``group`` call, an identify's ``company``, or an
    identify's own account-level traits)."""

    name: str | None = None
    domain: str | None = None
    external_id: str | None = None
    industry: str | None = None
    employee_count: int | None = None
    country: str | None = None
    is_target: bool | None = None
    """True if a target key says true, False if one says false and none true."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Traits without a column (``accounts.traits``), empty values left out."""
    dropped_count: Any = None
    """An employee count no column can hold (out of range), to be logged."""

    def fields(self) -> dict[str, Any]:
        """The account columns this reading sets."""
        found = {
            "industry": self.industry,
            "employee_count": self.employee_count,
            "country": self.country,
            "is_target": self.is_target,
        }
        return {k: v for k, v in found.items() if v is not None}


def read_account(traits: Mapping[str, Any], external_id: str | None = None) -> AccountReading:
    """The reading of account traits (a ``group`` call's, or a ``company`` object)."""
    name = traits.get("name")
    count = None
    dropped = None
    for key in COUNT_KEYS:
        if key in traits and (count := employee_count(traits[key])) is not None:
            break
    else:
        dropped = next(
            (traits[k] for k in COUNT_KEYS if count_problem(traits.get(k)) is not None), None
        )
    said = [traits[k] for k in TARGET_KEYS if isinstance(traits.get(k), bool)]
    return AccountReading(
        name=name.strip()[:NAME_LENGTH] or None if isinstance(name, str) else None,
        domain=domain_of(traits),
        external_id=external_id,
        industry=account_text(traits.get("industry")),
        employee_count=count,
        country=account_text(traits.get("country")),
        is_target=(True in said) if said else None,
        extra={
            k: v
            for k, v in traits.items()
            if k not in ACCOUNT_COLUMN_TRAITS and v is not None and v != ""
        },
        dropped_count=dropped,
    )


def read_group(traits: Mapping[str, Any], group_id: str | None) -> AccountReading:
    """A ``group`` call: its account, matched by the group id, then domain, then name."""
    return read_account(traits, group_id)


@dataclass(frozen=True, slots=True)
class TraitReading:
    """What an ``identify`` call's traits say."""

    email: str | None = None
    """The address, stripped and lower-cased."""
    person: Mapping[str, str] = field(default_factory=dict)
    """Lead text columns given explicitly (``first_name``, ``title``...): they replace."""
    names: Mapping[str, str] = field(default_factory=dict)
    """``first_name``/``last_name`` split from ``name``: they fill blanks."""
    consent: str | None = None
    consent_method: str | None = None
    company: AccountReading | None = None
    """The account of the ``company`` trait (a name, or an object with id, domain...)."""
    account: AccountReading = field(default_factory=AccountReading)
    """Account-level traits given on the person (industry, employees...): the profile
    reads them; the lead keeps them as attributes."""
    attributes: Mapping[str, Any] = field(default_factory=dict)
    """Every other trait (latest value wins; empty values never erase)."""

    def person_changes(self, current: Mapping[str, Any]) -> dict[str, str]:
        """The lead text fields (``PERSON_LENGTHS``) that change from ``current``."""
        changes = dict(self.person)
        for column, value in self.names.items():
            if column not in changes and not current.get(column):
                changes[column] = value
        return {k: v for k, v in changes.items() if current.get(k) != v}


def read_traits(traits: Mapping[str, Any]) -> TraitReading:
    """The one reading of an ``identify`` call's traits."""
    person: dict[str, str] = {}
    for key, column in PERSON_TEXT.items():
        if key in traits and (text := person_text(traits[key], PERSON_LENGTHS[column])):
            person[column] = text
    names: dict[str, str] = {}
    name = traits.get("name")
    if isinstance(name, str) and name.strip():
        first, _, last = name.strip().partition(" ")
        names["first_name"] = first[: PERSON_LENGTHS["first_name"]]
        if last.strip():
            names["last_name"] = last.strip()[: PERSON_LENGTHS["last_name"]]
    email = traits.get("email")
    consent = consent_trait(traits.get("consent"))
    company = traits.get("company")
    if isinstance(company, str):
        company_reading: AccountReading | None = (
            AccountReading(name=company.strip()[:NAME_LENGTH]) if company.strip() else None
        )
    elif isinstance(company, dict):
        cid = company.get("id")
        company_reading = read_account(company, str(cid) if cid is not None else None)
    else:
        company_reading = None
    return TraitReading(
        email=email.strip().lower() or None if isinstance(email, str) else None,
        person=person,
        names=names,
        consent=consent,
        consent_method=consent_method(traits["consent"]) if consent is not None else None,
        company=company_reading,
        account=read_account(traits),
        attributes={
            k: v for k, v in traits.items() if k not in PERSON_KEYS and v is not None and v != ""
        },
    )
