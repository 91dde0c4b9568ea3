"""Hosted forms: progressive profiling, validation, safe redirects.

Pure logic (no database, no clock). The HTTP side is ``entrypoints/api/forms.py``; the
storage side is ``services/forms.py``.

- :func:`fields_to_ask` — progressive profiling: a field already known for the visitor is
  not asked again (the e-mail address too, once the visitor is identified); required
  unknown fields are always asked; at most ``ask_at_most`` unknown optional fields.
- :func:`skip_form` — late-stage content needs no form for a known contact (DOMAIN.md 5).
- :func:`validate` — server-side validation with a reason per field. Values are stored as
  the text the person typed (after stripping control characters): a value that looks like
  a spreadsheet formula (``=``, ``+``, ``-``, ``@``) is legitimate in a form (``+82 10 ...``,
  ``-``) and is neutralised where leadflow writes CSV (``core.importing.neutralise_cell``),
  never refused or altered here.
- :func:`safe_site_path` — a redirect target is a site path only: never another host.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from leadflow.core.config import ContentSpec, FormFieldSpec, FormSpec
from leadflow.core.tracking import is_valid_email, normalise_email

# Lead columns and account fields a form can fill; any other field name is a lead attribute.
LEAD_COLUMNS = ("email", "first_name", "last_name", "title", "phone")
ACCOUNT_FIELDS = ("company", "industry", "employee_count", "country")

# Reasons (codes) a value is refused; :func:`describe` words them in English or Korean.
REASONS: dict[str, tuple[str, str]] = {
    "required": ("is required", "필수 항목입니다"),
    "invalid_email": ("is not a valid email address", "올바른 이메일 주소가 아닙니다"),
    "invalid_phone": ("is not a valid phone number", "올바른 전화번호가 아닙니다"),
    "invalid_number": ("is not a number", "숫자가 아닙니다"),
    "not_an_option": ("is not one of the options", "선택지에 없는 값입니다"),
    "too_long": ("is too long", "너무 깁니다"),
    "invalid": ("is not valid", "올바르지 않은 값입니다"),
    "consent_required": ("your consent is required", "동의가 필요합니다"),
}

_TRUE = frozenset({"on", "true", "1", "yes", "y", "checked"})
_FALSE = frozenset({"", "off", "false", "0", "no", "n"})
_PHONE_RE = re.compile(r"^\+?[0-9][0-9 ()./-]{3,31}$")
# Bidirectional overrides and isolates: they make text display differently from its content.
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")


def is_known(value: Any) -> bool:
    return value is not None and value != "" and value != [] and value != {}


def fields_to_ask(form: FormSpec, known: Mapping[str, Any]) -> list[FormFieldSpec]:
    """The fields to show this visitor, in the form's order.

    ``known`` maps field names to what is known about the visitor (lead columns, account
    fields, attributes); an empty value counts as unknown. Required unknown fields are
    always asked; of the optional unknown ones, the first ``ask_at_most`` (all if None)."""
    asked: list[FormFieldSpec] = []
    optional_left = form.ask_at_most
    for spec in form.fields:
        if is_known(known.get(spec.name)):
            continue
        if spec.required:
            asked.append(spec)
        elif optional_left is None or optional_left > 0:
            asked.append(spec)
            if optional_left is not None:
                optional_left -= 1
    return asked


def skip_form(form: FormSpec, asset: ContentSpec | None, known_contact: bool) -> bool:
    """True when the visitor goes straight to the asset: late-stage content for a contact
    whose details are already known (seed 002: "if contact details are known, don't ask
    again"). Early and middle content, or an unknown visitor, always get the form."""
    return known_contact and asset is not None and asset.stage == "late"


def clean_text(value: str, *, multiline: bool = False) -> str:
    """Strip control characters (keeping newlines and tabs in a multi-line field), bidi
    overrides and surrounding whitespace; normalise newlines to ``\\n``."""
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    out = []
    for ch in value:
        if ch in _BIDI:
            continue
        if unicodedata.category(ch) == "Cc":
            if multiline and ch in "\n\t":
                out.append(ch)
            elif ch in "\n\t":
                out.append(" ")
            continue
        out.append(ch)
    return "".join(out).strip()


def validate(
    form: FormSpec, shown_fields: Sequence[FormFieldSpec], raw: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Check a submission; returns ``(clean, errors)`` with ``errors`` mapping field names to
    reason codes (:data:`REASONS`; ``consent`` for the consent box).

    Every field of the form that has a value is checked and kept (a field the visitor was not
    shown may still be sent by an older page); ``required`` applies to the shown fields only.
    Names that are not fields of the form are ignored. Text is stored as typed after
    :func:`clean_text` (see the module docstring on CSV formulas)."""
    clean: dict[str, Any] = {}
    errors: dict[str, str] = {}
    shown = {f.name for f in shown_fields}
    for spec in form.fields:
        value, reason = _check_field(spec, raw.get(spec.name))
        if reason is not None:
            errors[spec.name] = reason
        elif is_known(value) and value is not False:
            clean[spec.name] = value
        elif spec.required and spec.name in shown:
            errors[spec.name] = "required"
    if form.consent is not None and form.consent_required and not _is_checked(raw.get("consent")):
        errors["consent"] = "consent_required"
    return clean, errors


def consent_given(raw: Mapping[str, Any]) -> bool:
    return _is_checked(raw.get("consent"))


def _is_checked(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.strip().lower() in _TRUE
    return False


def _check_field(spec: FormFieldSpec, value: Any) -> tuple[Any, str | None]:
    """(clean value or None, reason code or None)."""
    if value is None:
        return None, None
    if spec.type == "checkbox":
        if isinstance(value, bool):
            return value, None
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE, None
        return None, "not_an_option"
    if isinstance(value, bool | list | dict):
        return None, _type_reason(spec)
    if isinstance(value, int | float):
        value = repr(value) if isinstance(value, float) else str(value)
    if not isinstance(value, str):
        return None, _type_reason(spec)
    text = clean_text(value, multiline=spec.type == "textarea")
    if text == "":
        return None, None
    if len(text) > spec.max_length:
        return None, "too_long"
    if spec.type == "email":
        address = normalise_email(text)
        return (address, None) if is_valid_email(address) else (None, "invalid_email")
    if spec.type == "tel":
        digits = sum(ch.isdigit() for ch in text)
        return (text, None) if _PHONE_RE.match(text) and digits >= 5 else (None, "invalid_phone")
    if spec.type == "number":
        try:
            number = float(text.replace(",", ""))
        except ValueError:
            return None, "invalid_number"
        if not math.isfinite(number):
            return None, "invalid_number"
        return (int(number) if number.is_integer() and abs(number) < 2**53 else number), None
    if spec.type == "select":
        return (text, None) if text in spec.options else (None, "not_an_option")
    return text, None


def _type_reason(spec: FormFieldSpec) -> str:
    return {
        "email": "invalid_email",
        "tel": "invalid_phone",
        "number": "invalid_number",
        "select": "not_an_option",
    }.get(spec.type, "invalid")


def describe(reason: str, lang: str = "en") -> str:
    """A reason code in words (``en`` or ``ko``); unknown codes are returned as they are."""
    words = REASONS.get(reason)
    if words is None:
        return reason
    return words[1] if lang == "ko" else words[0]


def error_detail(errors: Mapping[str, str]) -> str:
    """One line for an API ``detail``: ``email: is not a valid email address; ...``."""
    return "; ".join(f"{name}: {describe(code)}" for name, code in errors.items())


def safe_site_path(target: str | None) -> str | None:
    """``target`` if it is a path on this site (``/thanks``, ``/a/b?x=1``), else None.

    Refuses absolute URLs, scheme-relative ``//host`` and ``/\\host`` (browsers treat a
    backslash as a slash), control characters and whitespace."""
    if not isinstance(target, str) or not target.startswith("/") or len(target) > 2000:
        return None
    if len(target) > 1 and target[1] in "/\\":
        return None
    if any(ch in target for ch in "\\<>\"'") or any(
        unicodedata.category(ch) in ("Cc", "Zs", "Zl", "Zp") or ch in _BIDI for ch in target
    ):
        return None
    return target


def lead_traits(clean: Mapping[str, Any]) -> dict[str, Any]:
    """Segment identify traits from clean form values: lead columns as they are, the
    company (with industry, size and country) as a ``company`` object, the rest as
    attributes."""
    traits: dict[str, Any] = {}
    company: dict[str, Any] = {}
    for name, value in clean.items():
        if name == "company":
            company["name"] = value
        elif name in ("industry", "employee_count", "country"):
            company[name] = value
        else:
            traits[name] = value
    if "name" in company:
        traits["company"] = company
    else:  # no company named: kept on the lead (and filled into its account, if any)
        traits.update(company)
    return traits


_ANON_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,200}$")


def clean_anonymous_id(value: str | None) -> str | None:
    """An analytics.js anonymous id from a cookie or a query parameter, or None.

    analytics.js stores the id JSON-encoded (``"abc-123"``, URL-encoded in the cookie);
    anything but a plain token of letters, digits and ``._:-`` is ignored."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    return text if _ANON_RE.match(text) else None
