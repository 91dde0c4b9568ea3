"""English and Korean for the dashboard: message catalogues and locale formatting.

The catalogues are data files: ``locales/<locale>.json`` next to this module, plus optional
``locales/<locale>.<area>.json`` parts (each a flat ``{"key": "text"}`` object, keys grouped
by their prefix: ``nav.``, ``stage.``, ``login.``, ...), read once at import. Both locales
have exactly the same keys (a test checks it). A missing key shows the key itself, never an
error page. Stage names use the source articles' words (리드획득, 리드 육성, ...) so later
pages can use ``stage.<id>``.
"""

from __future__ import annotations

import datetime as dt
import json
from datetime import UTC, tzinfo
from importlib.resources import files
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel.core import UnknownLocaleError
from babel.numbers import UnknownCurrencyError, format_compact_currency, format_currency

LOCALES = ("en", "ko")
DEFAULT_LOCALE = "en"


def _load(locale: str) -> dict[str, str]:
    """``<locale>.json`` plus any ``<locale>.<part>.json`` (one file per area of the dashboard).

    A key defined in two files is an error: the catalogue must never depend on file order.
    """
    folder = files(__package__) / "locales"
    names = sorted(
        (
            entry.name
            for entry in folder.iterdir()
            if entry.name.startswith(f"{locale}.") and entry.name.endswith(".json")
        ),
        key=lambda name: (name != f"{locale}.json", name),  # the main file first
    )
    catalogue: dict[str, str] = {}
    for name in names:
        part: dict[str, str] = json.loads((folder / name).read_text(encoding="utf-8"))
        twice = sorted(set(part) & set(catalogue))
        if twice:
            raise ValueError(f"locales/{name} redefines {', '.join(twice[:5])}")
        catalogue.update(part)
    return catalogue


CATALOGUES: dict[str, dict[str, str]] = {locale: _load(locale) for locale in LOCALES}
EN = CATALOGUES["en"]
KO = CATALOGUES["ko"]

_MONTHS_EN = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def pick_locale(candidate: str | None, accept_language: str | None = None) -> str:
    if candidate in LOCALES:
        return candidate
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()[:2]
        if tag in LOCALES:
            return tag
    return DEFAULT_LOCALE


class Translator:
    """``t(key, **values)`` plus number/date formatting for one locale."""

    def __init__(self, locale: str, zone: str | None = None) -> None:
        self.locale = locale if locale in LOCALES else DEFAULT_LOCALE
        self._messages = CATALOGUES[self.locale]
        # Dates and times are shown in the user's time zone (UTC when none is set).
        try:
            self.zone: tzinfo = ZoneInfo(zone) if zone else UTC
        except (ZoneInfoNotFoundError, ValueError):
            self.zone = UTC
        self.zone_name = zone if self.zone is not UTC else "UTC"

    def __call__(self, key: str, **values: object) -> str:
        text = self._messages.get(key) or EN.get(key) or key
        if values:
            for name, value in values.items():
                text = text.replace("{" + name + "}", str(value))
        return text

    def has(self, key: str) -> bool:
        return key in self._messages

    def number(self, value: int | float | None) -> str:
        if value is None:
            return "–"
        if isinstance(value, float) and not value.is_integer():
            return f"{value:,.1f}"
        return f"{int(value):,}"

    def decimal(self, value: int | float | None, digits: int = 2) -> str:
        """A number with up to ``digits`` decimals (fractional credits, amounts)."""
        if value is None:
            return "–"
        text = f"{float(value):,.{digits}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text

    def money(self, amount: float | None, currency: str | None, *, short: bool = False) -> str:
        """An amount in its currency, in the locale's way: ``$1,234.50``, ``₩1,235``, or with
        ``short`` ``$382M`` / ``₩3.8억``. The currency's own digits apply (no KRW decimals).

        Without a currency (or an unknown code) the plain number is shown, never a guessed symbol.
        """
        if amount is None:
            return "–"
        cldr = "ko_KR" if self.locale == "ko" else "en_US"
        code = (currency or "").strip().upper()
        if not code:
            return self.decimal(amount)
        try:
            if short:
                return str(format_compact_currency(amount, code, locale=cldr, fraction_digits=1))
            return str(format_currency(amount, code, locale=cldr))
        except (UnknownCurrencyError, UnknownLocaleError, ValueError):
            return f"{self.decimal(amount)} {code}"

    def percent(self, value: float | None) -> str:
        if value is None:
            return "–"
        return f"{value * 100:.0f}%"

    def date(self, value: dt.datetime | None) -> str:
        if value is None:
            return "–"
        value = value.astimezone(self.zone)
        if self.locale == "ko":
            return f"{value.year}. {value.month}. {value.day}."
        return f"{_MONTHS_EN[value.month - 1]} {value.day}, {value.year}"

    def datetime(self, value: dt.datetime | None) -> str:
        if value is None:
            return "–"
        value = value.astimezone(self.zone)
        clock = f"{value.hour:02d}:{value.minute:02d}"
        return f"{self.date(value)} {clock}"

    def relative(self, value: dt.datetime | None, now: dt.datetime) -> str:
        """'3 days ago' / '3일 전' (falls back to the date after 30 days)."""
        if value is None:
            return "–"
        seconds = (now - value).total_seconds()
        if seconds < 0 or seconds > 30 * 86400:
            return self.date(value)
        for size, en, ko in (
            (86400, "day", "일"),
            (3600, "hour", "시간"),
            (60, "minute", "분"),
        ):
            if seconds >= size:
                n = int(seconds // size)
                if self.locale == "ko":
                    return f"{n}{ko} 전"
                return f"{n} {en}{'s' if n != 1 else ''} ago"
        return "방금" if self.locale == "ko" else "just now"
