"""The retry policy: after a failed attempt, when to try again, or give up.

One :class:`RetryPolicy` says it for every kind of work that is retried (webhook deliveries,
due work such as nurture program steps, e-mail sends):

- the wait after failed attempt ``n`` (1-based) is ``base * factor ** (n - 1)``, capped at
  ``cap`` -- or, with ``delays``, the ``n``-th of a fixed schedule (its last one repeated);
- with ``jitter`` ("full jitter"), the wait is drawn uniformly from ``[1 s, that wait]``
  (a wait under a second is kept as is), so many failures at once do not retry together;
- it gives up after ``max_attempts`` failed attempts, and never schedules past a deadline
  (``expiry`` after the first attempt, or one given per item): a wait that would pass it
  is shortened to one last attempt exactly at the deadline; after that, none.

Pure: the failure time and the random source are parameters.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base: timedelta = timedelta(seconds=30)
    """The wait after the first failure."""
    cap: timedelta = timedelta(hours=2)
    """The longest wait."""
    factor: float = 2.0
    max_attempts: int | None = None
    """Give up once this many attempts have failed (None: only the deadline ends it)."""
    expiry: timedelta | None = None
    """Give up once this long has passed since the first attempt (:meth:`deadline`)."""
    jitter: bool = False
    delays: tuple[timedelta, ...] = ()
    """A fixed schedule instead of ``base * factor ** n`` (``cap`` still bounds it)."""

    def __post_init__(self) -> None:
        if self.base <= timedelta(0) and not self.delays:
            raise ValueError("base: must be positive")
        if self.cap < self.base and not self.delays:
            raise ValueError("cap: must be at least base")
        if self.factor < 1:
            raise ValueError("factor: must be at least 1")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts: must be at least 1")
        if any(d < timedelta(0) for d in self.delays):
            raise ValueError("delays: must not be negative")

    @classmethod
    def schedule(cls, *delays: timedelta, max_attempts: int | None = None) -> RetryPolicy:
        """A fixed schedule: wait ``delays[0]`` after the first failure, ...; by default the
        attempt after the last delay is the final one."""
        if not delays:
            raise ValueError("delays: name at least one")
        return cls(
            base=delays[0],
            cap=max(delays),
            delays=tuple(delays),
            max_attempts=len(delays) + 1 if max_attempts is None else max_attempts,
        )

    def deadline(self, first_attempt_at: datetime) -> datetime | None:
        """The last moment an item first tried at ``first_attempt_at`` may be retried."""
        return None if self.expiry is None else first_attempt_at + self.expiry

    def ceiling(self, attempt: int) -> timedelta:
        """The wait after failed attempt ``attempt`` (1-based) before jitter."""
        if attempt < 1:
            raise ValueError("attempt: counts from 1")
        if self.delays:
            return min(self.delays[min(attempt, len(self.delays)) - 1], self.cap)
        seconds = self.base.total_seconds() * self.factor ** min(attempt - 1, 60)
        return timedelta(seconds=min(seconds, self.cap.total_seconds()))

    def gives_up(self, attempt: int) -> bool:
        """No attempt follows failed attempt ``attempt`` (by count; see :meth:`next_at`)."""
        return self.max_attempts is not None and attempt >= self.max_attempts

    def next_at(
        self,
        attempt: int,
        failed_at: datetime,
        *,
        deadline: datetime | None = None,
        rng: random.Random | None = None,
    ) -> datetime | None:
        """When to try again after failed attempt ``attempt`` (1-based) at ``failed_at``, or
        None: give up. ``deadline`` (e.g. :meth:`deadline` of the first attempt, stored with
        the item) bounds it; ``rng`` draws the jitter (required when ``jitter``)."""
        ceiling = self.ceiling(attempt)
        if self.gives_up(attempt) or (deadline is not None and failed_at >= deadline):
            return None
        wait = ceiling
        if self.jitter:
            if rng is None:
                raise ValueError("rng: a jittered policy needs a random source")
            top = ceiling.total_seconds()
            wait = timedelta(seconds=rng.uniform(min(1.0, top), top))
        at = failed_at + wait
        return at if deadline is None else min(at, deadline)


WEBHOOK_RETRY = RetryPolicy(
    base=timedelta(seconds=30), cap=timedelta(hours=2), expiry=timedelta(hours=24), jitter=True
)
"""Webhook deliveries: 30 s doubling up to two hours, full jitter, dead after 24 hours."""

DUE_WORK_RETRY = RetryPolicy(base=timedelta(minutes=1), cap=timedelta(hours=1), max_attempts=10)
"""Due work (nurture program steps...): 1 minute doubling up to an hour; failed after 10."""

EMAIL_RETRY = RetryPolicy.schedule(
    timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2), timedelta(hours=6)
)
"""E-mail sends after a temporary SMTP failure: 5 min, 30 min, 2 h, 6 h; the fifth attempt
is the last."""


__all__ = ["DUE_WORK_RETRY", "EMAIL_RETRY", "WEBHOOK_RETRY", "RetryPolicy"]
