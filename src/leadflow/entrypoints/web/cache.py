"""A tiny per-process, stale-while-revalidate cache for the dashboard's aggregate figures
(home tiles, reports, filter options). Not SQL: the figures come from the repositories in
:mod:`leadflow.adapters.db.repositories`."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


# How long a request waits for another thread's computation of the same figures.
WAIT_FOR_INFLIGHT = 300.0


class TTLCache:
    """A tiny per-process cache for aggregate figures (home tiles, reports, filter options).

    Stale-while-revalidate: an entry older than ``ttl`` is still served at once while one
    background thread recomputes it, so only the very first request for a view (or the first
    after :meth:`invalidate`, which a write the page shows calls) waits for the computation.
    A refresh that fails keeps the stale value and is retried on the next request.
    """

    def __init__(self, ttl: float = 30.0, max_items: int = 512) -> None:
        self.ttl = ttl
        self.max_items = max_items
        self._items: dict[Hashable, tuple[float, Any]] = {}
        self._refreshing: set[Hashable] = set()
        # Keys being computed for a first request: others asking wait instead of repeating it.
        self._inflight: dict[Hashable, threading.Event] = {}
        self._lock = threading.Lock()

    def invalidate(self, prefix: str) -> None:
        """Drop every entry whose key starts with ``prefix`` (after a write the page shows)."""
        with self._lock:
            for key in [k for k in self._items if isinstance(k, tuple) and k[:1] == (prefix,)]:
                del self._items[key]

    def _store(self, key: Hashable, value: Any) -> None:
        with self._lock:
            if key not in self._items and len(self._items) >= self.max_items:
                self._items.clear()
            self._items[key] = (time.monotonic() + self.ttl, value)

    def _refresh(self, key: Hashable, compute: Callable[[], Any]) -> None:
        try:
            self._store(key, compute())
        except Exception:  # keep serving the stale value; the next request retries
            log.exception("refreshing cached figures %r failed", key)
        finally:
            with self._lock:
                self._refreshing.discard(key)

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        with self._lock:
            hit = self._items.get(key)
            stale = hit is not None and hit[0] <= time.monotonic()
            start = stale and key not in self._refreshing
            if start:
                self._refreshing.add(key)
            waiting = self._inflight.get(key) if hit is None else None
            leader = hit is None and waiting is None
            if leader:
                self._inflight[key] = threading.Event()
        if waiting is not None:
            # Someone (a request or the start-up warmer) is computing it: use their result.
            waiting.wait(WAIT_FOR_INFLIGHT)
            with self._lock:
                done = self._items.get(key)
            return done[1] if done is not None else compute()
        if hit is None:
            try:
                value = compute()
                self._store(key, value)
            finally:
                with self._lock:
                    self._inflight.pop(key).set()
            return value
        if start:
            threading.Thread(
                target=self._refresh, args=(key, compute), name="leadflow-cache", daemon=True
            ).start()
        return hit[1]
