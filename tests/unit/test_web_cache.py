"""The dashboard's figure cache: fresh hits, stale-while-revalidate, invalidation."""

from __future__ import annotations

import threading

from leadflow.entrypoints.web.cache import TTLCache


class Counter:
    def __init__(self) -> None:
        self.calls = 0
        self.done = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.fail = False

    def __call__(self) -> int:
        self.release.wait(5)
        self.calls += 1
        self.done.set()
        if self.fail:
            raise RuntimeError("database went away")
        return self.calls


def test_fresh_entries_are_served_without_computing_again():
    cache, compute = TTLCache(ttl=3600), Counter()
    assert cache.get(("k",), compute) == 1
    assert cache.get(("k",), compute) == 1
    assert compute.calls == 1


def test_a_stale_entry_is_served_at_once_and_refreshed_in_the_background():
    cache, compute = TTLCache(ttl=0), Counter()
    assert cache.get(("k",), compute) == 1  # nothing cached: computed while waiting
    compute.done.clear()
    compute.release.clear()  # the refresh will block until released
    assert cache.get(("k",), compute) == 1  # stale value, immediately
    assert cache.get(("k",), compute) == 1  # one refresh at a time
    compute.release.set()
    assert compute.done.wait(5)
    for _ in range(100):  # the refresh stores its value right after computing it
        if cache._items[("k",)][1] == 2:
            break
        threading.Event().wait(0.01)
    assert compute.calls == 2
    assert cache._items[("k",)][1] == 2


def test_a_failed_refresh_keeps_the_stale_value():
    cache, compute = TTLCache(ttl=0), Counter()
    cache.get(("k",), compute)
    compute.fail, compute.done = True, threading.Event()
    assert cache.get(("k",), compute) == 1
    assert compute.done.wait(5)
    compute.fail = False
    assert cache.get(("k",), compute) == 1  # still served; a new refresh starts


def test_invalidate_makes_the_next_request_compute_fresh_figures():
    cache, compute = TTLCache(ttl=3600), Counter()
    cache.get(("funnel", 1), compute)
    cache.get(("home", 1), compute)
    cache.invalidate("funnel")
    assert cache.get(("funnel", 1), compute) == 3  # a write the page shows: no stale value
    assert cache.get(("home", 1), compute) == 2


def test_a_second_request_waits_for_the_first_computation_instead_of_repeating_it():
    cache, compute = TTLCache(ttl=3600), Counter()
    compute.release.clear()
    first = threading.Thread(target=cache.get, args=(("k",), compute))
    first.start()
    for _ in range(500):  # the first request has started computing
        if ("k",) in cache._inflight:
            break
        threading.Event().wait(0.01)
    results: list[int] = []
    second = threading.Thread(target=lambda: results.append(cache.get(("k",), compute)))
    second.start()
    compute.release.set()
    first.join(5)
    second.join(5)
    assert results == [1] and compute.calls == 1
