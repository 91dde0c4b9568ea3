"""Webhook signatures, the retry schedule, subscriptions and target rules (pure)."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest

from leadflow.core import webhooks as core
from leadflow.webhooks import sign, verify

NOW = 1_780_000_000
BODY = b'{"id":"sig_1","type":"lead.accepted"}'


def test_signature_verifies_and_names_timestamp_and_scheme():
    header = sign("whsec_a", NOW, BODY)
    assert header.startswith(f"t={NOW},v1=")
    assert verify("whsec_a", header, BODY, now=NOW + 10)
    assert verify(["other", "whsec_a"], header, BODY, now=datetime.fromtimestamp(NOW, UTC))


def test_tampered_body_wrong_secret_and_garbage_headers_fail():
    header = sign("whsec_a", NOW, BODY)
    assert not verify("whsec_a", header, BODY + b" ", now=NOW)
    assert not verify("whsec_b", header, BODY, now=NOW)
    forged_time = header.replace(f"t={NOW}", f"t={NOW + 1}")
    assert not verify("whsec_a", forged_time, BODY, now=NOW)
    for bad in ("", None, "v1=abc", f"t={NOW}", "t=abc,v1=00", "garbage"):
        assert not verify("whsec_a", bad, BODY, now=NOW)


def test_stale_or_future_timestamp_is_refused():
    header = sign("whsec_a", NOW, BODY)
    assert verify("whsec_a", header, BODY, now=NOW + 300)
    assert not verify("whsec_a", header, BODY, now=NOW + 301)
    assert not verify("whsec_a", header, BODY, now=NOW - 301)
    assert verify("whsec_a", header, BODY, now=NOW + 3600, tolerance=3600)


def test_rotation_sends_one_signature_per_secret_and_either_verifies():
    header = sign(["whsec_new", "whsec_old"], NOW, BODY)
    assert header.count("v1=") == 2
    assert verify("whsec_new", header, BODY, now=NOW)
    assert verify("whsec_old", header, BODY, now=NOW)
    assert not verify("whsec_other", header, BODY, now=NOW)
    with pytest.raises(ValueError, match="secrets"):
        sign([], NOW, BODY)


def test_backoff_grows_is_capped_and_jitter_stays_within_bounds():
    assert core.backoff_ceiling(1) == timedelta(seconds=30)
    assert core.backoff_ceiling(2) == timedelta(seconds=60)
    assert core.backoff_ceiling(50) == core.MAX_DELAY
    rng = random.Random(7)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    deadline = start + core.RETRY_WINDOW
    waits = set()
    for attempt in range(1, 12):
        for _ in range(50):
            at = core.next_attempt_at(attempt, start, deadline, rng)
            assert at is not None
            wait = at - start
            assert timedelta(seconds=1) <= wait <= core.backoff_ceiling(attempt)
            waits.add(wait)
    assert len(waits) > 100  # jittered, not a fixed schedule


def test_attempts_stop_at_the_deadline_with_a_last_try_at_it():
    rng = random.Random(1)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    deadline = start + core.RETRY_WINDOW
    at, attempt, times = start, 1, []
    while at is not None:
        times.append(at)
        at = core.next_attempt_at(attempt, at, deadline, rng)
        attempt += 1
    assert times[-1] == deadline
    assert all(b > a for a, b in itertools.pairwise(times))
    assert 12 < len(times) < 200
    assert core.next_attempt_at(3, deadline + timedelta(seconds=1), deadline, rng) is None


def test_seeded_schedules_repeat():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    deadline = start + core.RETRY_WINDOW
    a = [core.next_attempt_at(n, start, deadline, random.Random(3)) for n in range(1, 8)]
    b = [core.next_attempt_at(n, start, deadline, random.Random(3)) for n in range(1, 8)]
    assert a == b


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/hook", "scheme"),
        ("javascript:alert(1)", "scheme"),
        ("https://user:pw@example.com/hook", "credentials"),
        ("https://evil.example@example.com/", "credentials"),
        ("https:///nohost", "no host"),
        ("https://example.com/a b", "whitespace"),
        ("https://example.com:99999/", "not a valid URL"),
        ("", "empty"),
        ("https://example.com/" + "a" * 3000, "longer"),
    ],
)
def test_bad_target_urls_are_refused_naming_the_reason(url, reason):
    with pytest.raises(core.InvalidTarget, match=reason) as info:
        core.check_target_url(url)
    assert str(info.value).startswith("url:")


def test_good_target_urls_pass():
    assert core.check_target_url(" https://hooks.example.com/x?y=1 ") == (
        "https://hooks.example.com/x?y=1"
    )


def test_event_types_are_validated_and_wildcard_subscribes_to_all():
    assert core.check_event_types(["opportunity.won", "lead.mql", "lead.mql"]) == [
        "opportunity.won",
        "lead.mql",
    ]
    assert core.check_event_types(["*", "lead.mql"]) == ["*"]
    with pytest.raises(ValueError, match=r"event_types: unknown event type 'lead\.nope'"):
        core.check_event_types(["lead.nope"])
    with pytest.raises(ValueError, match="event_types"):
        core.check_event_types([])
    assert core.subscribed(["*"], "lead.routed")
    assert not core.subscribed(["lead.mql"], "lead.routed")


def test_stage_change_to_mql_makes_two_events_with_stable_ids():
    row = {
        "id": 9,
        "lead_id": 1,
        "from_stage": "lead",
        "to_stage": "mql",
        "at": datetime(2026, 1, 1, tzinfo=UTC),
        "rule": "threshold",
        "model_version": "v1",
        "cause": None,
    }
    found = core.stage_events(row, {"id": 1, "email": "a@b.example"}, "mql")
    assert [p["type"] for p in found] == ["lead.stage_changed", "lead.mql"]
    assert [p["id"] for p in found] == ["stg_9", "mql_9"]
    assert found[1]["data"]["to_stage"] == "mql"
    assert found[0]["occurred_at"] == "2026-01-01T00:00:00+00:00"
    assert len(core.stage_events({**row, "to_stage": "sql"}, None, "mql")) == 1
    # lead.mql follows the hand-off role, whatever the stage is called
    renamed = core.stage_events({**row, "to_stage": "hot"}, None, "hot")
    assert [p["type"] for p in renamed] == ["lead.stage_changed", "lead.mql"]


# --- the address classifier of the SSRF guard ------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.9", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("100.64.0.1", "carrier-grade NAT"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("255.255.255.255", "reserved"),
        ("192.0.0.8", "reserved"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("fd00::1", "private"),
        ("ff02::1", "multicast"),
        ("2001:db8::1", "documentation"),
        # IPv6 forms that carry a private/loopback/link-local IPv4 address
        ("::ffff:127.0.0.1", "IPv4-mapped, carrying a loopback"),
        ("::ffff:10.0.0.1", "IPv4-mapped, carrying a private"),
        ("::ffff:169.254.169.254", "IPv4-mapped, carrying a link-local"),
        ("::ffff:0:7f00:1", "IPv4-translated, carrying a loopback"),
        ("64:ff9b::7f00:1", "NAT64, carrying a loopback"),
        ("64:ff9b::a9fe:a9fe", "NAT64, carrying a link-local"),
        ("64:ff9b::c0a8:101", "NAT64, carrying a private"),
        ("64:ff9b:1::a00:1", "local-use NAT64"),
        ("2002:7f00:1::1", "6to4"),  # 127.0.0.1 inside
        ("2002:a00:1::1", "6to4"),  # 10.0.0.1 inside
        ("2002:808:808::1", "6to4"),  # deprecated tunnel: refused whatever it carries
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
        ("2001::ffff:ffff", "Teredo"),
        ("::127.0.0.1", "IPv4-compatible"),
        ("::10.0.0.1", "IPv4-compatible"),
    ],
)
def test_addresses_webhooks_may_not_call_are_named_by_kind(address, reason):
    found = core.address_refusal(address)
    assert found is not None and reason in found
    # The reason names the kind of address, never the address itself.
    assert address.split("%")[0] not in found


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "93.184.216.34",
        "2606:4700:4700::1111",
        "2001:4860:4860::8888",
        "::ffff:8.8.8.8",  # IPv4-mapped public address: a dual-stack socket reaches 8.8.8.8
        "64:ff9b::808:808",  # NAT64 of a public address (DNS64 on IPv6-only networks)
    ],
)
def test_public_addresses_are_allowed(address):
    assert core.address_refusal(address) is None


def test_embedded_ipv4_is_found_in_every_transition_form():
    import ipaddress

    def carried(text: str) -> tuple[str, str] | None:
        found = core.embedded_ipv4(ipaddress.IPv6Address(text))
        return None if found is None else (found[0], str(found[1]))

    assert carried("::ffff:10.0.0.1") == ("IPv4-mapped", "10.0.0.1")
    assert carried("::ffff:0:a00:1") == ("IPv4-translated", "10.0.0.1")
    assert carried("64:ff9b::a00:1") == ("NAT64", "10.0.0.1")
    assert carried("2002:a00:1::1") == ("6to4", "10.0.0.1")
    assert carried("2001:0:4136:e378:8000:63bf:3fff:fdd2") == ("Teredo", "192.0.2.45")
    assert carried("::a00:1") == ("IPv4-compatible", "10.0.0.1")
    assert carried("2606:4700::1111") is None
