"""Sign-in throttling: failed attempts counted per key in a sliding window.

Pure (the caller passes ``now``). A key (an e-mail address, a client address) that
reached ``limit`` failures within ``window`` seconds is refused until the oldest of them
leaves the window; a success clears the key. Kept in memory per server process: with
``--workers N`` each process counts on its own, so the effective limit is at most N times
higher — still enough to stop password guessing at useful rates.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field


@dataclass
class FailureLimiter:
    limit: int
    window: float
    max_keys: int = 100_000
    _failures: dict[str, deque[float]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _trim(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def retry_after(self, key: str, now: float) -> float:
        """Seconds until ``key`` may try again; 0 when it may now."""
        with self._lock:
            times = self._trim(key, now)
            if times is None or len(times) < self.limit:
                return 0.0
            return max(times[0] + self.window - now, 0.0)

    def failed(self, key: str, now: float) -> None:
        with self._lock:
            times = self._trim(key, now)
            if times is None:
                if len(self._failures) >= self.max_keys:
                    # Bounded memory under a flood of distinct keys: drop the stalest key.
                    stalest = min(self._failures, key=lambda k: self._failures[k][-1])
                    del self._failures[stalest]
                times = self._failures[key] = deque()
            times.append(now)
            while len(times) > self.limit:
                times.popleft()

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)
