"""The one retry policy: waits, jitter, the attempt count and the deadline that end it."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from leadflow.core import retry as r
from leadflow.core import webhooks

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def test_exponential_waits_double_up_to_the_cap():
    policy = r.RetryPolicy(base=MIN, cap=60 * MIN)
    assert [policy.ceiling(n) for n in range(1, 9)] == [
        MIN * m for m in (1, 2, 4, 8, 16, 32, 60, 60)
    ]
    assert policy.ceiling(10_000) == 60 * MIN  # no overflow on a huge attempt count
    assert policy.next_at(3, T0) == T0 + 4 * MIN
    with pytest.raises(ValueError, match="counts from 1"):
        policy.ceiling(0)


def test_it_gives_up_after_max_attempts():
    policy = r.RetryPolicy(base=MIN, cap=MIN, max_attempts=3)
    assert [policy.next_at(n, T0) for n in (1, 2, 3, 4)] == [T0 + MIN, T0 + MIN, None, None]


def test_the_deadline_shortens_the_last_wait_then_ends_it():
    policy = r.RetryPolicy(base=timedelta(hours=1), cap=timedelta(hours=1), expiry=90 * MIN)
    deadline = policy.deadline(T0)
    assert deadline == T0 + 90 * MIN
    assert policy.next_at(1, T0, deadline=deadline) == T0 + 60 * MIN
    assert policy.next_at(2, T0 + 60 * MIN, deadline=deadline) == deadline  # shortened
    assert policy.next_at(3, deadline, deadline=deadline) is None
    assert r.RetryPolicy().deadline(T0) is None


def test_full_jitter_stays_within_one_second_and_the_ceiling_and_is_reproducible():
    policy = r.RetryPolicy(base=timedelta(seconds=30), cap=timedelta(hours=2), jitter=True)
    rng = random.Random(7)
    for n in range(1, 12):
        wait = policy.next_at(n, T0, rng=rng) - T0  # type: ignore[operator]
        assert timedelta(seconds=1) <= wait <= policy.ceiling(n)
    a = [policy.next_at(n, T0, rng=random.Random(3)) for n in range(1, 6)]
    assert a == [policy.next_at(n, T0, rng=random.Random(3)) for n in range(1, 6)]
    with pytest.raises(ValueError, match="rng"):
        policy.next_at(1, T0)


def test_a_fixed_schedule_repeats_nothing_and_ends_after_its_last_delay():
    policy = r.EMAIL_RETRY
    assert policy.max_attempts == 5
    waits = [policy.next_at(n, T0) for n in range(1, 6)]
    assert waits == [T0 + 5 * MIN, T0 + 30 * MIN, T0 + 120 * MIN, T0 + 360 * MIN, None]
    longer = r.RetryPolicy.schedule(MIN, 2 * MIN, max_attempts=5)
    assert [longer.ceiling(n) for n in (1, 2, 3, 4)] == [MIN, 2 * MIN, 2 * MIN, 2 * MIN]


def test_bad_policies_are_refused():
    for kwargs in (
        {"base": timedelta(0)},
        {"base": MIN, "cap": timedelta(seconds=1)},
        {"factor": 0.5},
        {"max_attempts": 0},
    ):
        with pytest.raises(ValueError):
            r.RetryPolicy(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        r.RetryPolicy.schedule()


def test_the_shipped_policies_keep_their_numbers():
    assert r.DUE_WORK_RETRY.next_at(1, T0) == T0 + MIN
    assert r.DUE_WORK_RETRY.next_at(9, T0) == T0 + 60 * MIN
    assert r.DUE_WORK_RETRY.next_at(10, T0) is None
    assert webhooks.RETRY_WINDOW == timedelta(hours=24) == r.WEBHOOK_RETRY.expiry
    assert webhooks.backoff_ceiling(1) == timedelta(seconds=30)
    # core.webhooks schedules with the one policy: same draws from the same random source.
    deadline = T0 + webhooks.RETRY_WINDOW
    for n in range(1, 10):
        assert webhooks.next_attempt_at(n, T0, deadline, random.Random(n)) == (
            r.WEBHOOK_RETRY.next_at(n, T0, deadline=deadline, rng=random.Random(n))
        )
