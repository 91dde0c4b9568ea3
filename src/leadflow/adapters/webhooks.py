"""Sending webhooks over HTTP (httpx), behind an SSRF guard.

- :func:`check_target` resolves the URL's host and refuses loopback, private, link-local,
  multicast, reserved and unspecified addresses (IPv4 and IPv6, including IPv4-mapped
  IPv6) unless ``allow_private`` (setting ``LEADFLOW_WEBHOOKS_ALLOW_PRIVATE_TARGETS``).
  It runs when an endpoint is created and again before every send.
- :class:`HttpSender` never follows redirects (a 3xx counts as a failed attempt), has
  connect/read timeouts and reads at most :data:`MAX_RESPONSE_BYTES` of a response.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from leadflow.core.webhooks import InvalidTarget, check_target_url

MAX_RESPONSE_BYTES = 4096
USER_AGENT = "leadflow-webhooks/1"


class TargetRefused(InvalidTarget):
    """The target resolves to an address leadflow must not call."""


@dataclass(frozen=True)
class SendResult:
    status_code: int | None
    error: str | None
    body_excerpt: str = ""

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class Sender(Protocol):
    def send(self, url: str, headers: dict[str, str], body: bytes) -> SendResult: ...


def _refused(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


def check_target(url: str, *, allow_private: bool) -> str:
    """The URL if it may be called; raises :class:`InvalidTarget` / :class:`TargetRefused`."""
    url = check_target_url(url)
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetRefused(f"url: host {host!r} does not resolve ({exc})") from None
    if allow_private:
        return url
    for info in infos:
        address = str(info[4][0]).split("%", 1)[0]
        ip = ipaddress.ip_address(address)
        if _refused(ip):
            raise TargetRefused(
                f"url: host {host!r} resolves to {ip}, a private/loopback/link-local or "
                "reserved address (set LEADFLOW_WEBHOOKS_ALLOW_PRIVATE_TARGETS=true to allow)"
            )
    return url


class HttpSender:
    """POSTs signed JSON; one instance per worker run (it holds a connection pool)."""

    def __init__(
        self, *, allow_private: bool = False, timeout: float = 10.0, connect_timeout: float = 5.0
    ) -> None:
        self.allow_private = allow_private
        self._client = httpx.Client(
            follow_redirects=False,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            headers={"User-Agent": USER_AGENT},
            trust_env=False,
        )

    def send(self, url: str, headers: dict[str, str], body: bytes) -> SendResult:
        try:
            check_target(url, allow_private=self.allow_private)
        except InvalidTarget as exc:
            return SendResult(None, f"refused: {exc}")
        try:
            with self._client.stream(
                "POST",
                url,
                content=body,
                headers={**headers, "Content-Type": "application/json"},
            ) as response:
                excerpt = b""
                for chunk in response.iter_bytes():
                    excerpt += chunk
                    if len(excerpt) >= MAX_RESPONSE_BYTES:
                        break
                text = excerpt[:MAX_RESPONSE_BYTES].decode("utf-8", "replace")
                status = response.status_code
        except httpx.HTTPError as exc:
            return SendResult(None, f"{exc.__class__.__name__}: {exc}"[:500])
        if 300 <= status < 400:
            return SendResult(
                status, f"redirect to {response.headers.get('location')!r} not followed"[:500], text
            )
        if not 200 <= status < 300:
            return SendResult(status, f"HTTP {status}", text)
        return SendResult(status, None, text)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
