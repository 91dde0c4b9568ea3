"""Signed tokens for email tracking links: open pixel, click redirect, unsubscribe.

A token is ``<payload>.<mac>``, both base64url without padding. The payload is
``<kind>.<send id>`` and, for a click, ``.<destination URL>``; the MAC is the first 16 bytes
(128 bits) of HMAC-SHA256 under a key derived from the server's signing key for this
purpose only (so a token can never be replayed as a session cookie or the other way round).
Verification checks the MAC in constant time, then the kind the route expects, then the
shape of the payload; a click destination must still be an absolute http(s) URL without
whitespace or control characters (never ``javascript:``, never scheme-relative ``//host``).

Why the standard library and not ``itsdangerous``: it would be a new dependency for about
thirty lines of code, and its serializers put a JSON document (and, with timestamps, a time)
in the token, which makes every tracked link longer; our payload is fixed and tiny, and
these links must not expire (a reader clicks a year-old email). ``hmac.compare_digest`` is
the same primitive ``itsdangerous`` uses.

Pure: no clock, no I/O. The key is passed in (:mod:`leadflow.services.signing`: the
current key signs; during a rotation window the previous one still verifies).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urljoin, urlsplit

Kind = Literal["o", "c", "u"]
KINDS: tuple[Kind, ...] = ("o", "c", "u")
MAC_BYTES = 16
# Longer than any link we sign (URLs are at most 2,000 characters in the content library).
MAX_TOKEN_CHARS = 4096
MAX_URL_CHARS = 2048

_PURPOSE = b"leadflow email tracking v1"
_UNSAFE_URL = re.compile(r"[\x00-\x20\x7f<>\"'\\]")


class InvalidToken(ValueError):
    """The token was not made by this server for this purpose (tampered, truncated,
    another kind, another key). The message never echoes the token."""


@dataclass(frozen=True, slots=True)
class EmailToken:
    kind: Kind
    send_id: int
    url: str | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not text or not re.fullmatch(r"[A-Za-z0-9_-]+", text):
        raise InvalidToken("malformed token")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken("malformed token") from None
    if _b64(data) != text:  # non-canonical (stray padding bits): one token, one spelling
        raise InvalidToken("malformed token")
    return data


def _mac(key: bytes, payload: bytes) -> bytes:
    subkey = hmac.new(key, _PURPOSE, hashlib.sha256).digest()
    return hmac.new(subkey, payload, hashlib.sha256).digest()[:MAC_BYTES]


def is_safe_destination(url: str) -> bool:
    """An absolute http(s) URL with a host, no whitespace, quotes or control characters."""
    if not url or len(url) > MAX_URL_CHARS or _UNSAFE_URL.search(url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def resolve_destination(url: str, base: str) -> str | None:
    """Where a link in an email may point: an absolute http(s) URL as it is, or a site path
    (``/pricing``) made absolute against ``base`` (an absolute http(s) URL: the asset's own
    URL or the public URL). Anything else (``javascript:``, ``//host``, ``mailto:``,
    relative paths) gives ``None``."""
    url = url.strip()
    if url.startswith(("http://", "https://")):
        return url if is_safe_destination(url) else None
    if not url.startswith("/") or url.startswith(("//", "/\\")):
        return None
    if not is_safe_destination(base):
        return None
    # A site root: append the path; an asset URL (https://site/blog/post): keep its host.
    plain = urlsplit(base).path in ("", "/")
    resolved = base.rstrip("/") + url if plain else urljoin(base, url)
    return resolved if is_safe_destination(resolved) else None


def sign(key: bytes, kind: Kind, send_id: int, url: str | None = None) -> str:
    """A token for one send; ``url`` is required for a click and refused otherwise."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    if send_id < 1:
        raise ValueError("send_id must be positive")
    if (kind == "c") != (url is not None):
        raise ValueError("a click token needs a url; other kinds take none")
    if url is not None and not is_safe_destination(url):
        raise ValueError("url must be an absolute http(s) URL")
    text = f"{kind}.{send_id}" + (f".{url}" if url is not None else "")
    payload = text.encode("utf-8")
    return f"{_b64(payload)}.{_b64(_mac(key, payload))}"


def verify(key: bytes, token: str, kind: Kind) -> EmailToken:
    """The token's content, or :class:`InvalidToken`."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
        raise InvalidToken("malformed token")
    encoded_payload, encoded_mac = token.split(".")
    payload, mac = _unb64(encoded_payload), _unb64(encoded_mac)
    if not hmac.compare_digest(mac, _mac(key, payload)):
        raise InvalidToken("bad signature")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidToken("malformed token") from None
    parts = text.split(".", 2)
    if len(parts) < 2 or parts[0] != kind:
        raise InvalidToken("wrong kind of token")
    if not parts[1].isdigit() or not parts[1].isascii() or len(parts[1]) > 19:
        raise InvalidToken("malformed token")
    send_id = int(parts[1])
    if send_id < 1:
        raise InvalidToken("malformed token")
    if kind == "c":
        if len(parts) != 3 or not is_safe_destination(parts[2]):
            raise InvalidToken("unsafe destination")
        return EmailToken(kind, send_id, parts[2])
    if len(parts) != 2:
        raise InvalidToken("malformed token")
    return EmailToken(kind, send_id)


def open_token(key: bytes, send_id: int) -> str:
    return sign(key, "o", send_id)


def click_token(key: bytes, send_id: int, url: str) -> str:
    return sign(key, "c", send_id, url)


def unsubscribe_token(key: bytes, send_id: int) -> str:
    return sign(key, "u", send_id)
