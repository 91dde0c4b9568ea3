"""What every entrypoint refuses before a value reaches storage, as plain rules.

PostgreSQL text and JSONB cannot hold a NUL character, and neither backend can encode
half of a UTF-16 surrogate pair (Python's JSON decoder lets ``"\\ud800"`` through); a
64-bit integer column cannot hold 2^63; date arithmetic overflows near year 1 and year
9999; a JSON document nested thousands of levels deep exhausts the parser's stack. Each
entrypoint (the ``/v1`` message parser, the HTTP guard of the API and dashboard, the CLI)
applies these rules at its door and names the field in its own way
(``batch[2].event``, ``criteria.any[0].value``, ``--name``), so a refused value never
reaches a transaction and the answer is the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime
from typing import Any

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MIN_YEAR = 1900
MAX_YEAR = 2999
MAX_JSON_DEPTH = 32
MAX_EMPLOYEES = 10_000_000
"""Largest employee count a trait may carry into ``accounts.employee_count``."""

_SURROGATE = re.compile("[\ud800-\udfff]")
_ISO_DATE = re.compile(r"\s*(\d{4})-\d{2}-\d{2}")
_NUMBER = re.compile(r"\s*[+-]?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?\s*$")
_ISO_ARGUMENT = re.compile(r"\s*(\d{4})-\d{2}-\d{2}(?:[T ][0-9:.+\-Z]*)?\s*$")


class InputError(ValueError):
    """A value is refused; ``field`` names it (a JSON path, a parameter, an option)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text, or None."""
    if "\x00" in value:
        return "contains a NUL character"
    if not value.isascii() and _SURROGATE.search(value) is not None:
        return "contains an unpaired UTF-16 surrogate (not valid Unicode text)"
    return None


def int_problem(value: int) -> str | None:
    """Why ``value`` fits no 64-bit integer column, or None."""
    if INT64_MIN <= value <= INT64_MAX:
        return None
    return f"out of range (a 64-bit integer, at most {INT64_MAX})"


def number_problem(value: float) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return int_problem(value)
    if not math.isfinite(value):
        return "not a finite number"
    return None


def year_problem(year: int) -> str | None:
    if MIN_YEAR <= year <= MAX_YEAR:
        return None
    return f"out of range (years {MIN_YEAR} to {MAX_YEAR})"


def date_problem(value: date | datetime) -> str | None:
    """Why a date is outside what reports and schedules can compute with, or None."""
    return year_problem(value.year)


def iso_date_problem(text: str) -> str | None:
    """For a date or date-time given as text: a year outside the supported range
    (``0001-01-01``), or a number (Unix seconds or milliseconds reach year 1 unnoticed).
    Other text is left to the caller's own date parsing."""
    found = _ISO_DATE.match(text)
    if found is not None:
        return year_problem(int(found.group(1)))
    if _NUMBER.match(text) is not None:
        return "expected an ISO 8601 date (YYYY-MM-DD), not a number"
    return None


def declared_length_over(declared: str | None, limit: int) -> bool:
    """Does a ``Content-Length`` header declare more than ``limit`` bytes? Only ASCII digits
    are a length (``'²'.isdigit()`` is true, ``int('²')`` fails), and more digits than
    ``int()`` reads (4,300) are larger than any limit too."""
    if declared is None or not declared.isascii() or not declared.isdigit():
        return False
    return len(declared) > 18 or int(declared) > limit


def count_problem(value: Any, maximum: int = MAX_EMPLOYEES) -> str | None:
    """For a trait stored in an integer column (employee counts): a number or a numeric
    string outside ``0..maximum`` is refused; other values (``"51-200"``) are not counts
    and are left to the caller."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text.isdigit() or not text.isascii():
            return None
        if len(text) > 18:
            return f"out of range (0 to {maximum})"
        number: float = int(text)
    elif isinstance(value, int | float):
        number = value
    else:
        return None
    if isinstance(number, float) and not math.isfinite(number):
        return "not a finite number"
    if not 0 <= number <= maximum:
        return f"out of range (0 to {maximum})"
    return None


def argument_problem(args: list[str]) -> tuple[str, str] | None:
    """For a command line: the first argument whose text cannot be stored (bytes that are
    not UTF-8 arrive as lone surrogates) or that is a date (``YYYY-MM-DD...``) outside the
    supported years, as ``(option, reason)``; the option is the argument's own ``--name``
    (``--name=value``), the option before it, or its position."""
    for i, arg in enumerate(args):
        value = arg.split("=", 1)[1] if arg.startswith("--") and "=" in arg else arg
        if text_problem(arg) is not None:
            reason = "contains a NUL character" if "\x00" in arg else "is not valid UTF-8 text"
        elif (found := _ISO_ARGUMENT.match(value)) is not None and (
            problem := year_problem(int(found.group(1)))
        ):
            reason = problem  # --from 0001-01-01, --as-of 9999-12-31: dates overflow
        else:
            continue
        if arg.startswith("--") and "=" in arg:
            return arg.split("=", 1)[0], reason
        if i > 0 and args[i - 1].startswith("-") and text_problem(args[i - 1]) is None:
            return args[i - 1], reason
        return f"argument {i + 1}", reason
    return None


def child_path(path: str, key: Any) -> str:
    """``path`` extended by an object key (``a.b``) or a list index (``a[3]``)."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def check_text(value: str, field: str) -> None:
    if (problem := text_problem(value)) is not None:
        raise InputError(field, problem)


def check_json(
    value: Any, path: str = "", max_depth: int = MAX_JSON_DEPTH, *, numbers: bool = True
) -> None:
    """Refuse, naming the path, what no backend stores faithfully anywhere in a decoded
    JSON value: text that cannot be stored (in values and keys), integers beyond 64 bits,
    non-finite numbers (``NaN``, ``1e400``), containers nested more than ``max_depth``
    levels below the top one. ``numbers=False`` checks text and nesting only."""
    _check(value, path, 0, max_depth, numbers)


def _check(value: Any, path: str, depth: int, max_depth: int, numbers: bool = True) -> None:
    if isinstance(value, str):
        if (problem := text_problem(value)) is not None:
            raise InputError(path or "body", problem)
        return
    if numbers and isinstance(value, int | float) and not isinstance(value, bool):
        if (problem := number_problem(value)) is not None:
            raise InputError(path or "body", problem)
        return
    if isinstance(value, dict):
        pairs: Any = value.items()
    elif isinstance(value, list | tuple):
        pairs = enumerate(value)
    else:
        return
    if depth > max_depth:
        raise InputError(path or "body", f"nested deeper than {max_depth} levels")
    for key, item in pairs:
        if isinstance(key, str) and (problem := text_problem(key)) is not None:
            raise InputError(path or "body", f"a key {problem}")
        _check(item, child_path(path, key), depth + 1, max_depth, numbers)
