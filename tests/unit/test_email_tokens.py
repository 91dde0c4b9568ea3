"""Signed email tracking tokens: round trip, and every kind of forgery fails."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leadflow.core import email_tokens as t

KEY = b"k" * 32
OTHER = b"o" * 32


def _forge(payload: str, mac: bytes = b"\0" * t.MAC_BYTES) -> str:
    enc = base64.urlsafe_b64encode(payload.encode()).rstrip(b"=").decode()
    return f"{enc}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def test_round_trip_each_kind() -> None:
    assert t.verify(KEY, t.open_token(KEY, 7), "o") == t.EmailToken("o", 7)
    assert t.verify(KEY, t.unsubscribe_token(KEY, 7), "u") == t.EmailToken("u", 7)
    url = "https://acme.example/case-studies/finance?utm=a.b&x=한글"
    assert t.verify(KEY, t.click_token(KEY, 7, url), "c") == t.EmailToken("c", 7, url)


def test_tokens_are_url_safe_and_compact() -> None:
    token = t.open_token(KEY, 123456)
    assert len(token) < 40
    assert all(c.isalnum() or c in "-_." for c in token)


def test_wrong_kind_fails() -> None:
    with pytest.raises(t.InvalidToken):
        t.verify(KEY, t.open_token(KEY, 7), "u")
    with pytest.raises(t.InvalidToken):
        t.verify(KEY, t.unsubscribe_token(KEY, 7), "c")


def test_foreign_key_fails() -> None:
    with pytest.raises(t.InvalidToken):
        t.verify(KEY, t.open_token(OTHER, 7), "o")


@pytest.mark.parametrize(
    "token",
    [
        "",
        ".",
        "abc",
        "a.b.c",
        "!!!.???",
        _forge("c.1.https://evil.com"),
        _forge("c.1.//evil.com"),
        _forge("c.1.javascript:alert(1)"),
        _forge("o.1"),
        "x" * 5000,
    ],
)
def test_malformed_and_unsigned_fail(token: str) -> None:
    for kind in t.KINDS:
        with pytest.raises(t.InvalidToken):
            t.verify(KEY, token, kind)


def test_tampered_destination_fails() -> None:
    token = t.click_token(KEY, 7, "https://acme.example/pricing")
    _payload, mac = token.split(".")
    for evil in ("https://evil.com", "//evil.com", "javascript:alert(1)"):
        forged = _forge(f"c.7.{evil}", base64.urlsafe_b64decode(mac + "=" * (-len(mac) % 4)))
        with pytest.raises(t.InvalidToken):
            t.verify(KEY, forged, "c")
    # another send id with the same MAC
    with pytest.raises(t.InvalidToken):
        t.verify(KEY, _forge("c.8.https://acme.example/pricing", b"x" * 16), "c")


def test_truncated_fails() -> None:
    token = t.click_token(KEY, 7, "https://acme.example/pricing")
    for cut in (1, 5, len(token) // 2):
        with pytest.raises(t.InvalidToken):
            t.verify(KEY, token[:-cut], "c")


@given(st.integers(min_value=1, max_value=2**62), st.binary(min_size=1, max_size=8))
def test_any_change_of_one_character_fails(send_id: int, noise: bytes) -> None:
    token = t.unsubscribe_token(KEY, send_id)
    position = noise[0] % len(token)
    replacement = "A" if token[position] != "A" else "B"
    changed = token[:position] + replacement + token[position + 1 :]
    with pytest.raises(t.InvalidToken):
        t.verify(KEY, changed, "u")


def test_sign_refuses_unsafe_destinations() -> None:
    for url in ("javascript:alert(1)", "//evil.com", "/relative", "https://a b.com", "ftp://x"):
        with pytest.raises(ValueError):
            t.click_token(KEY, 1, url)
    with pytest.raises(ValueError):
        t.sign(KEY, "o", 1, "https://a.example")
    with pytest.raises(ValueError):
        t.sign(KEY, "o", 0)


@pytest.mark.parametrize(
    ("url", "base", "expected"),
    [
        ("/pricing", "https://lf.example", "https://lf.example/pricing"),
        ("/pricing", "https://lf.example/", "https://lf.example/pricing"),
        ("/other", "https://site.example/blog/post", "https://site.example/other"),
        ("https://x.example/a", "https://lf.example", "https://x.example/a"),
        ("//evil.com", "https://lf.example", None),
        ("/\\evil.com", "https://lf.example", None),
        ("javascript:alert(1)", "https://lf.example", None),
        ("JAVASCRIPT:alert(1)", "https://lf.example", None),
        ("mailto:a@b.c", "https://lf.example", None),
        ("relative/path", "https://lf.example", None),
        ("/ok", "javascript:x", None),
        ('/a"onmouseover=x', "https://lf.example", None),
    ],
)
def test_resolve_destination(url: str, base: str, expected: str | None) -> None:
    assert t.resolve_destination(url, base) == expected
