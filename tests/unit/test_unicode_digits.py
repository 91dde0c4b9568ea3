"""``str.isdigit()`` is true for '²' and other digits ``int()`` refuses: every parser that
checked ``isdigit()`` before ``int()`` raised ValueError (a 500 from the API). Digits are
ASCII digits."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from leadflow.core import webhooks
from leadflow.core.importing import parse_employee_count
from leadflow.core.traits import employee_count as _int
from leadflow.entrypoints.api.forms import check_token
from leadflow.entrypoints.web.pages import _int_or_none

NOT_ASCII_DIGITS = ["²", "1²", "³⁴", "①"]


@pytest.mark.parametrize("text", NOT_ASCII_DIGITS)
def test_parsers_refuse_digits_int_cannot_read(text: str) -> None:
    assert text.isdigit()
    assert parse_employee_count(text) is None
    assert _int(text) is None
    assert _int_or_none(text) is None
    assert check_token(b"k", "white-paper", "anon", f"{text}.abc", 0.0) is False
    header = f"t={text},v1=00"
    assert webhooks.verify("secret", header, b"{}", datetime.now(UTC)) is False


def test_ascii_digits_still_parse() -> None:
    assert parse_employee_count("1,200") == 1200
    assert _int(" 42 ") == 42
    assert _int_or_none("7") == 7
