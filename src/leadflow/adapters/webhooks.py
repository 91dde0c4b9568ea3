"""Sending webhooks over HTTP (httpx), behind an SSRF guard.

- :func:`resolve_target` resolves the URL's host once and refuses it when any address is
  one webhooks may not call (:func:`leadflow.core.webhooks.address_refusal`: loopback,
  private, link-local, multicast, reserved, unspecified, and IPv6 forms carrying such an
  IPv4 address: 6to4, Teredo, NAT64, IPv4-mapped/compatible/translated), unless
  ``allow_private`` (setting ``LEADFLOW_WEBHOOKS_ALLOW_PRIVATE_TARGETS``). It runs when an
  endpoint is created and again before every send. A refusal names the host and the kind
  of address, never the resolved address.
- :class:`HttpSender` connects to the address that was checked, never resolving the name a
  second time (no DNS rebinding between check and connect): its connections are opened by
  :class:`PinnedBackend`, which only dials the address pinned for that request. The URL,
  the ``Host`` header, TLS SNI and certificate verification stay those of the hostname.
- It never follows redirects (a 3xx counts as a failed attempt), has connect/read timeouts
  and reads at most :data:`MAX_RESPONSE_BYTES` of a response.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import httpcore
import httpx

from leadflow.core.webhooks import InvalidTarget, address_refusal, check_target_url

MAX_RESPONSE_BYTES = 4096
USER_AGENT = "leadflow-webhooks/1"

# host, port -> the addresses it resolves to (as strings, without any %scope).
Resolver = Callable[[str, int], Sequence[str]]


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


def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's answer (``getaddrinfo``), in its order, without duplicates."""
    found: list[str] = []
    for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = str(info[4][0]).split("%", 1)[0]
        if address not in found:
            found.append(address)
    return found


@dataclass(frozen=True)
class CheckedTarget:
    """A URL whose host resolved to ``addresses``, every one of them allowed. ``host`` is
    the name as it goes on the wire (IDNA-encoded; an IPv6 literal without brackets)."""

    url: str
    host: str
    port: int
    addresses: tuple[str, ...]


def resolve_target(
    url: str, *, allow_private: bool, resolver: Resolver = system_resolver
) -> CheckedTarget:
    """Check the URL, resolve its host once and check every address; raises
    :class:`InvalidTarget` / :class:`TargetRefused` naming the host, never an address."""
    url = check_target_url(url)
    try:
        parsed = httpx.URL(url)
        host = parsed.raw_host.decode("ascii")
    except (httpx.InvalidURL, UnicodeError) as exc:
        raise InvalidTarget(f"url: not a valid URL ({exc})") from None
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    shown = parsed.host
    try:
        addresses = tuple(resolver(host, port))
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "lookup failed"
        raise TargetRefused(f"url: host {shown!r} does not resolve ({reason})") from None
    if not addresses:
        raise TargetRefused(f"url: host {shown!r} does not resolve (no address)")
    for address in addresses:
        try:
            refusal = address_refusal(address.split("%", 1)[0])
        except ValueError:
            raise TargetRefused(f"url: host {shown!r} resolves to an unusable address") from None
        if refusal is not None and not allow_private:
            raise TargetRefused(
                f"url: host {shown!r} resolves to a {refusal} address, which webhooks may not "
                "call (set LEADFLOW_WEBHOOKS_ALLOW_PRIVATE_TARGETS=true to allow)"
            )
    return CheckedTarget(url, host, port, addresses)


def check_target(url: str, *, allow_private: bool, resolver: Resolver = system_resolver) -> str:
    """The URL if it may be called; raises :class:`InvalidTarget` / :class:`TargetRefused`."""
    return resolve_target(url, allow_private=allow_private, resolver=resolver).url


class PinnedBackend(httpcore.NetworkBackend):
    """httpcore's network layer for :class:`HttpSender`: a connection to ``host:port`` goes
    to the addresses pinned for the current request (this thread), tried in order, and
    nowhere else; with no pin, or a pin for another host, nothing is dialled. It never
    resolves a name."""

    def __init__(self, inner: httpcore.NetworkBackend | None = None) -> None:
        self._inner = inner or httpcore.SyncBackend()
        self._local = threading.local()
        self.dialled: list[tuple[str, int]] = []  # the last few (address, port), newest last

    @contextmanager
    def pinned(self, host: str, port: int, addresses: Sequence[str]) -> Iterator[None]:
        self._local.pin = (host, port, tuple(addresses))
        try:
            yield
        finally:
            self._local.pin = None

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        pin = getattr(self._local, "pin", None)
        if pin is None or pin[0] != host or pin[1] != port:
            raise httpcore.ConnectError("no checked address for this host")
        failure: Exception = httpcore.ConnectError("no checked address for this host")
        for address in pin[2]:
            self.dialled = [*self.dialled[-15:], (address, port)]
            try:
                return self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not webhook targets")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _PinnedTransport(httpx.HTTPTransport):
    """httpx's own transport (requests, responses, errors as usual; TLS verified against
    the URL's host), with a connection pool that dials through :class:`PinnedBackend`."""

    def __init__(self, backend: PinnedBackend, ssl_context: ssl.SSLContext | None) -> None:
        super().__init__(trust_env=False)
        self._pool.close()  # the default pool: replaced before any use
        limits = httpx.Limits(max_connections=20, max_keepalive_connections=10)
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )


class HttpSender:
    """POSTs signed JSON; one instance per worker run (it holds a connection pool)."""

    def __init__(
        self,
        *,
        allow_private: bool = False,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        resolver: Resolver = system_resolver,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``resolver`` answers which addresses a host has (the system's DNS by default);
        ``ssl_context`` says which certificate authorities are trusted (certifi's by
        default). Certificates are always checked against the URL's host name."""
        self.allow_private = allow_private
        self.resolver = resolver
        self.backend = PinnedBackend()
        self._client = httpx.Client(
            follow_redirects=False,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            headers={"User-Agent": USER_AGENT},
            trust_env=False,
            transport=_PinnedTransport(self.backend, ssl_context),
        )

    def send(self, url: str, headers: dict[str, str], body: bytes) -> SendResult:
        try:
            target = resolve_target(url, allow_private=self.allow_private, resolver=self.resolver)
        except InvalidTarget as exc:
            return SendResult(None, f"refused: {exc}")
        try:
            with (
                self.backend.pinned(target.host, target.port, target.addresses),
                self._client.stream(
                    "POST",
                    url,
                    content=body,
                    headers={**headers, "Content-Type": "application/json"},
                ) as response,
            ):
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
