"""Amounts in the dashboard carry their currency, in the reader's locale (Babel/CLDR)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leadflow.entrypoints.web import i18n
from leadflow.entrypoints.web.i18n import Translator


def test_won_has_no_decimals_and_abbreviates_in_korean_units() -> None:
    assert Translator("ko").money(380_000_000, "KRW", short=True) == "₩3.8억"
    assert Translator("en").money(380_000_000, "KRW", short=True) == "₩380M"
    assert Translator("en").money(1234.5, "krw") == "₩1,234"


def test_dollars_keep_cents_and_abbreviate() -> None:
    assert Translator("en").money(1234.5, "USD") == "$1,234.50"
    assert Translator("en").money(382_000_000, "USD", short=True) == "$382M"


def test_no_currency_shows_the_plain_number_and_none_a_dash() -> None:
    assert Translator("en").money(1234.5, None) == "1,234.5"
    assert Translator("en").money(None, "USD") == "–"


def test_a_key_defined_in_two_catalogue_parts_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "locales").mkdir()
    (tmp_path / "locales" / "en.json").write_text(json.dumps({"a": "A"}))
    (tmp_path / "locales" / "en.extra.json").write_text(json.dumps({"a": "again", "b": "B"}))
    monkeypatch.setattr(i18n, "files", lambda _package: tmp_path)
    with pytest.raises(ValueError, match=r"en\.extra\.json redefines a"):
        i18n._load("en")
    (tmp_path / "locales" / "en.extra.json").write_text(json.dumps({"b": "B"}))
    assert i18n._load("en") == {"a": "A", "b": "B"}
