"""Pure scrubbing of personal data out of text and JSON (no database).

- :class:`Personal` holds what identifies one person: *strong* values (e-mail address and its
  local part, phone, user and anonymous ids, full name) are removed wherever they appear as
  a substring; a first or last name alone is removed where it is a word of free text, or the
  whole of a JSON value (a surname such as "Won" must not blank ``opportunity.won``).
- :func:`scrub_event_properties` / :func:`scrub_event_context` anonymise tracked events
  (stricter: any property named like personal data goes, any e-mail address goes).
- :func:`scrub_text` / :func:`scrub_json` clean free text and JSON in every other table.
- :func:`addresses_in` / :func:`strip_addresses` find and remove given e-mail addresses in any
  JSON-like value, percent-encoded ones included (the suppression guard).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

import orjson

ERASED = "[erased]"
PII_KEYS = frozenset(
    {
        "email",
        "emailaddress",
        "mail",
        "name",
        "firstname",
        "lastname",
        "fullname",
        "username",
        "phone",
        "phonenumber",
        "mobile",
        "telephone",
        "address",
        "street",
        "postalcode",
        "zip",
        "ip",
        "ipaddress",
        "useragent",
        "userid",
        "anonymousid",
        "birthday",
        "birthdate",
        "age",
        "gender",
        "password",
        "traits",
    }
)
# Outside events a key called "name" is mostly not a person's (segment, rep, asset...).
PERSON_KEYS = PII_KEYS - {"name", "traits"}
CONTEXT_KEPT = ("campaign", "library")
PAGE_KEPT = ("path", "title", "url", "referrer")
EMAIL_IN_TEXT = re.compile(r"[^@\s<>\"'(),;:/?#&=%\\]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
MAX_DEPTH = 20
_KEY = re.compile(r"[\W_]+")


def _key(name: Any) -> str:
    return _KEY.sub("", str(name).casefold())


@dataclass(frozen=True, slots=True)
class Personal:
    """What identifies one person, case-folded."""

    strong: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    _words: re.Pattern[str] | None = field(default=None, compare=False)

    @classmethod
    def of(
        cls,
        *,
        email: str | None,
        first_name: str | None,
        last_name: str | None,
        others: Iterable[str | None] = (),
    ) -> Personal:
        full = " ".join(v.strip() for v in (first_name, last_name) if v and v.strip()) or None
        values = [email, full, *others]
        if email:
            values.append(email.split("@", 1)[0])
        # Very short values ("Al", "Kim") would blank unrelated text as substrings.
        strong = sorted(
            {v.strip().casefold() for v in values if v and len(v.strip()) >= 3},
            key=len,
            reverse=True,
        )
        names = sorted(
            {v.strip().casefold() for v in (first_name, last_name) if v and len(v.strip()) >= 2},
            key=len,
            reverse=True,
        )
        words = (
            re.compile(r"(?<!\w)(?:" + "|".join(re.escape(n) for n in names) + r")(?!\w)", re.I)
            if names
            else None
        )
        return cls(tuple(strong), tuple(names), words)

    def strong_only(self) -> Personal:
        """Only the values that identify on their own (for a company's own data)."""
        return Personal(self.strong)

    def in_text(self, text: str) -> bool:
        """A strong value anywhere, or a name as a word (also percent-decoded)."""
        lowered = text.casefold()
        if "%" in lowered or "+" in lowered:
            lowered = lowered + "\x00" + unquote_plus(lowered)
        if any(p in lowered for p in self.strong):
            return True
        return self._words is not None and self._words.search(lowered) is not None

    def is_value(self, text: str) -> bool:
        """A JSON string naming the person: a strong value anywhere; a name as a word of
        prose (text with spaces), or as the whole value unless that is a lower-case code
        (a surname "Won" must not blank the stage ``won`` or ``opportunity.won``)."""
        if any(c.isspace() for c in text.strip()):
            return self.in_text(text)
        lowered = text.casefold()
        if "%" in lowered:
            lowered = lowered + "\x00" + unquote_plus(lowered)
        if any(p in lowered for p in self.strong):
            return True
        bare = text.strip()
        return bare != bare.lower() and bare.casefold() in self.names


def strip_url(url: str) -> str:
    """The URL without its query string and fragment (where personal data travels)."""
    try:
        parts = urlsplit(url)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    except ValueError:
        return ERASED


def _is_url(value: str) -> bool:
    return value.startswith(("http://", "https://", "/"))


def scrub_text(text: str | None, personal: Personal, *, any_email: bool = True) -> str | None:
    """Free text: URLs lose their query; text naming the person becomes ``[erased]``;
    other e-mail addresses in it become ``[erased]`` (``any_email``)."""
    if not text:
        return text
    if _is_url(text):
        text = strip_url(text)
    if personal.in_text(text):
        return ERASED
    return EMAIL_IN_TEXT.sub(ERASED, text) if any_email else text


def scrub_json(value: Any, personal: Personal, depth: int = 0, *, by_key: bool = True) -> Any:
    """JSON kept in other tables: a person-named key (email, first_name, phone...) loses its
    value (``by_key``); a string that holds a strong value or is a name becomes
    ``[erased]``; URLs lose their query string. Shapes and everything else stay."""
    if depth > MAX_DEPTH:
        return None
    if isinstance(value, dict):
        return {
            k: None
            if by_key and isinstance(v, str) and _key(k) in PERSON_KEYS
            else scrub_json(v, personal, depth + 1, by_key=by_key)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [scrub_json(v, personal, depth + 1, by_key=by_key) for v in value]
    if isinstance(value, str):
        if _is_url(value) and personal.in_text(value):
            value = strip_url(value)
        return ERASED if personal.is_value(value) else value
    return value


# --------------------------------------------------------------------------- events


def _event_text(text: str, personal: Personal) -> str:
    if personal.in_text(text):
        return ERASED
    return EMAIL_IN_TEXT.sub(ERASED, text)


def _event_value(value: Any, personal: Personal, depth: int = 0, *, by_key: bool = True) -> Any:
    if depth > MAX_DEPTH:
        return None
    if isinstance(value, dict):
        return {
            k: _event_value(v, personal, depth + 1, by_key=by_key)
            for k, v in value.items()
            if not by_key or _key(k) not in PII_KEYS
        }
    if isinstance(value, list):
        return [_event_value(v, personal, depth + 1, by_key=by_key) for v in value]
    if isinstance(value, str):
        if _is_url(value):
            value = strip_url(value)
        return _event_text(value, personal)
    return value


def scrub_event_url(url: str | None, personal: Personal) -> str | None:
    if not url:
        return url
    return _event_text(strip_url(url), personal)


def scrub_event_properties(
    event_type: str, properties: Mapping[str, Any], personal: Personal
) -> dict[str, Any]:
    if event_type in ("identify", "alias"):
        return {}
    if event_type == "group":
        group_id = properties.get("groupId")
        return {"groupId": group_id} if isinstance(group_id, str) else {}
    scrubbed = _event_value(dict(properties), personal)
    return scrubbed if isinstance(scrubbed, dict) else {}


def scrub_event_context(context: Mapping[str, Any], personal: Personal) -> dict[str, Any]:
    # campaign.name and library.name are not personal: scrub their values, keep the keys.
    kept: dict[str, Any] = {
        key: _event_value(context[key], personal, by_key=False)
        for key in CONTEXT_KEPT
        if key in context
    }
    page = context.get("page")
    if isinstance(page, dict):
        kept["page"] = {
            key: _event_value(page[key], personal)
            for key in PAGE_KEPT
            if key in page and isinstance(page[key], str)
        }
    return kept


# --------------------------------------------------------------------------- addresses


def addresses_in(*values: Any) -> set[str]:
    """Every e-mail address in these values (strings, JSON), lower-cased; percent-encoded
    ones (``?email=a%40b.example``) included. Fast on the hot path (every tracked message):
    one JSON encoding and a byte test per value; the pattern runs only where an ``@`` is."""
    found: set[str] = set()
    for value in values:
        try:
            data = _dumps(value, default=str)
        except TypeError:  # keys that are not strings, deeper than orjson goes
            data = repr(value).encode()
        if b"@" not in data and b"%40" not in data:
            continue
        text = data.decode()
        if "%" in text or "+" in text:
            text = text + " " + unquote_plus(text)
        found.update(m.lower() for m in EMAIL_IN_TEXT.findall(text))
    return found


_dumps = orjson.dumps


def _holds(text: str, blocked: frozenset[str]) -> bool:
    lowered = text.casefold()
    if "%" in lowered or "+" in lowered:
        lowered = lowered + " " + unquote_plus(lowered)
    return any(b in lowered for b in blocked)


def strip_text(text: str, blocked: frozenset[str]) -> str:
    """``text`` without the blocked addresses (a URL also loses its query string)."""
    if not _holds(text, blocked):
        return text
    if _is_url(text):
        text = strip_url(text)
        if not _holds(text, blocked):
            return text
    for address in blocked:
        text = re.sub(re.escape(address), ERASED, text, flags=re.IGNORECASE)
    return ERASED if _holds(text, blocked) else text


def strip_addresses(value: Any, blocked: Iterable[str], depth: int = 0) -> Any:
    """``value`` (JSON-like) without the blocked addresses: an entry whose value is one of
    them is dropped, a string holding one loses it."""
    gone = frozenset(blocked)
    if not gone:
        return value
    return _strip(value, gone, depth)


def _strip(value: Any, gone: frozenset[str], depth: int) -> Any:
    if isinstance(value, str):
        return strip_text(value, gone)
    if depth > MAX_DEPTH:
        return None
    if isinstance(value, Mapping):
        return {
            k: _strip(v, gone, depth + 1)
            for k, v in value.items()
            if not (isinstance(v, str) and v.strip().casefold() in gone)
        }
    if isinstance(value, list | tuple):
        return [_strip(v, gone, depth + 1) for v in value]
    return value
