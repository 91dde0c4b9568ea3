"""The rep's day in core: ranking with reasons, SLA timers, claims, highlights, qualify."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from leadflow.core.queue import (
    Activity,
    ClaimCheck,
    QueueItem,
    decide_claim,
    decide_reassign,
    highlights,
    qualify_outcome,
    rank,
    sla_timer,
)
from leadflow.core.routing import WorkCalendar

# A Wednesday, 10:00 in Seoul (working hours 09:00-18:00 Mon-Fri).
NOW = datetime(2026, 12, 2, 1, 0, tzinfo=UTC)
CAL = WorkCalendar(zone=ZoneInfo("Asia/Seoul"))
ROUND_THE_CLOCK = WorkCalendar(
    zone=ZoneInfo("UTC"), days=frozenset(range(7)), start=time(0), end=None
)


def item(lead_id: int, status: str = "routed", **kw: object) -> QueueItem:
    base: dict[str, object] = {
        "lead_id": lead_id,
        "status": status,
        "stage_role": "handoff",
        "engagement": 100.0,
        "fit": 50.0,
        "assigned_at": NOW - timedelta(hours=1),
        "due_at": NOW + timedelta(hours=20),
    }
    if status == "waiting":
        base.update(assigned_at=None, due_at=None, queued_at=NOW - timedelta(hours=1))
    base.update(kw)
    return QueueItem(**base)  # type: ignore[arg-type]


# ---------------------------------------------------------------- SLA timer


def test_sla_timer_counts_working_hours_left_and_overdue():
    left = sla_timer(item(1, due_at=NOW + timedelta(hours=3)), NOW, CAL, 24)
    assert (left.state, left.hours) == ("due_soon", 3.0)  # under a quarter of 24 h
    plenty = sla_timer(item(1, due_at=NOW + timedelta(hours=7)), NOW, CAL, 24)
    assert (plenty.state, plenty.hours) == ("on_time", 7.0)
    # due at 18:00 yesterday (Tuesday): 1 working hour overdue at 10:00 today
    late = sla_timer(item(1, due_at=datetime(2026, 12, 1, 9, 0, tzinfo=UTC)), NOW, CAL, 24)
    assert (late.state, late.hours, late.overdue) == ("overdue", 1.0, True)
    assert sla_timer(item(1, "accepted"), NOW, CAL, 24).state == "met"


def test_a_waiting_lead_is_overdue_once_it_waited_the_whole_sla():
    short = sla_timer(item(1, "waiting"), NOW, ROUND_THE_CLOCK, 24)
    assert (short.state, short.hours) == ("waiting", 1.0)
    long = sla_timer(
        item(1, "waiting", queued_at=NOW - timedelta(hours=30)), NOW, ROUND_THE_CLOCK, 24
    )
    assert (long.state, long.hours, long.overdue) == ("waiting_long", 30.0, True)


# ---------------------------------------------------------------- ranking


def test_rank_puts_the_missed_sla_first_then_intent_then_new_then_score():
    items = [
        item(1, "accepted", engagement=400.0, fit=100.0),  # hot but already accepted
        item(2, engagement=10.0),  # new hand-off, cold
        item(3, due_at=NOW - timedelta(hours=2), engagement=5.0),  # overdue
        item(4, "accepted", last_intent=("demo_request", NOW - timedelta(days=1))),
        item(5, "waiting", queued_at=NOW - timedelta(days=5)),  # waited past the SLA
    ]
    ranked = rank(items, NOW, calendar=ROUND_THE_CLOCK, sla_hours=24)
    assert [r.item.lead_id for r in ranked] == [3, 5, 4, 2, 1]
    assert ranked[0].reasons[0].key == "overdue" and ranked[0].overdue
    assert ranked[1].reasons[0].key == "waiting_long"
    intent = ranked[2].reasons[0]
    assert intent.key == "intent" and intent.values == {"event": "demo_request", "days": 1}
    assert ranked[3].reasons[0].key == "new"
    assert ranked[4].reasons[0].key == "score"  # accepted: the score speaks


def test_an_old_request_does_not_count_and_higher_score_wins_a_tie():
    stale = item(1, "accepted", last_intent=("demo_request", NOW - timedelta(days=30)))
    hot = item(2, "accepted", engagement=300.0)
    ranked = rank([stale, hot], NOW, calendar=CAL, sla_hours=24)
    assert [r.item.lead_id for r in ranked] == [2, 1]
    assert all(reason.key != "intent" for reason in ranked[1].reasons)


def test_rank_is_deterministic_on_equal_priority():
    a, b = item(7, "accepted"), item(3, "accepted")
    assert [r.item.lead_id for r in rank([a, b], NOW, calendar=CAL, sla_hours=24)] == [3, 7]


# ---------------------------------------------------------------- claims


def check(**kw: object) -> ClaimCheck:
    base: dict[str, object] = {
        "rep_key": "rep1",
        "rep_known": True,
        "rep_active": True,
        "capacity": 5,
        "today": 2,
        "waiting": True,
    }
    base.update(kw)
    return ClaimCheck(**base)  # type: ignore[arg-type]


def test_a_rep_claims_within_capacity():
    decision = decide_claim(check())
    assert decision.ok and decision.reason.values == {"rep": "rep1", "n": 3, "capacity": 5}


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        ({"today": 5}, "capacity"),
        ({"waiting": False, "holder": "rep2"}, "taken"),
        ({"waiting": False, "holder": "rep1"}, "yours"),
        ({"rep_known": False}, "no_rep"),
        ({"rep_active": False}, "inactive"),
        ({"account_owner": "rep2", "owner_active": True}, "owner"),
        ({"excluded": frozenset({"rep1"})}, "excluded"),
    ],
)
def test_a_claim_is_refused_with_its_reason(kw, key):
    decision = decide_claim(check(**kw))
    assert not decision.ok and decision.key == key


def test_an_inactive_owner_does_not_block_a_claim_and_an_admin_overrides_the_owner():
    assert decide_claim(check(account_owner="rep2", owner_active=False)).ok
    assert decide_claim(check(account_owner="rep2", owner_active=True), by_admin=True).ok
    refused = decide_claim(check(today=5), by_admin=True)
    assert refused.key == "capacity" and refused.reason.values["capacity"] == 5


def test_reassign_moves_a_taken_lead_but_not_to_its_holder():
    assert decide_reassign(check(waiting=False, holder="rep2")).ok
    assert decide_reassign(check(waiting=False, holder="rep1")).key == "yours"
    assert decide_reassign(check(waiting=False, holder=None)).key == "not_waiting"


# ---------------------------------------------------------------- highlights


def test_highlights_are_dated_and_de_duplicated():
    days = [NOW - timedelta(days=d) for d in (1, 3, 8)]
    acts = [Activity("content_download", at, "Enterprise price list", "pricing") for at in days] + [
        Activity("content_download", NOW - timedelta(days=2), "enterprise price list ", "pricing"),
        Activity("page", NOW - timedelta(days=1), "/pricing"),
        Activity("page", NOW - timedelta(days=4), "/pricing"),
        Activity("page", NOW - timedelta(days=4), "/about"),  # once: not a highlight
        Activity("demo_request", NOW - timedelta(days=6)),
        Activity("email_open", NOW),  # not a highlight
    ]
    found = highlights(acts)
    assert [(h.verb, h.subject, h.count) for h in found] == [
        ("request.demo_request", None, 1),
        ("content.pricing", "Enterprise price list", 4),
        ("page", "/pricing", 2),
    ]
    price = found[1]
    assert price.last_at == days[0] and price.first_at == days[2]


def test_highlights_keep_the_newest_first_within_a_kind_and_cap_at_top():
    acts = [
        Activity("content_download", NOW - timedelta(days=n), f"Asset {n}", "case_study")
        for n in range(10)
    ]
    found = highlights(acts, top=3)
    assert [h.subject for h in found] == ["Asset 0", "Asset 1", "Asset 2"]


# ---------------------------------------------------------------- qualify

WEIGHTS = {"budget": 25.0, "authority": 25.0, "need": 25.0, "timeframe": 25.0}
LEVELS = {"confirmed": 1.0, "likely": 0.5, "unknown": 0.0, "none": 0.0}


def test_qualify_with_every_field_unknown_changes_nothing_and_names_what_is_needed():
    unknown = dict.fromkeys(WEIGHTS, "unknown")
    out = qualify_outcome({}, unknown, weights=WEIGHTS, levels=LEVELS, threshold=75)
    assert out.changed == () and out.score == 0 and not out.ready
    assert out.missing == ("budget", "authority", "need")


def test_qualify_names_the_fields_that_changed_and_the_one_still_missing():
    before = {"authority": "confirmed"}
    after = {"authority": "confirmed", "need": "confirmed", "timeframe": "likely"}
    out = qualify_outcome(before, after, weights=WEIGHTS, levels=LEVELS, threshold=75)
    assert out.changed == ("need", "timeframe")
    assert out.score == 62.5 and out.missing == ("budget",)
    ready = qualify_outcome(
        after, {**after, "budget": "confirmed"}, weights=WEIGHTS, levels=LEVELS, threshold=75
    )
    assert ready.ready and ready.missing == () and ready.changed == ("budget",)


def test_qualify_prefers_the_heaviest_field_when_weights_differ():
    weights = {"budget": 40.0, "authority": 10.0, "need": 30.0, "timeframe": 20.0}
    out = qualify_outcome({}, {}, weights=weights, levels=LEVELS, threshold=60)
    assert out.missing == ("budget", "need")


def test_cached_working_hours_agree_with_the_calendar():
    import random

    from leadflow.core.queue import working_hours

    rng = random.Random(5)
    holiday = WorkCalendar(
        zone=ZoneInfo("America/New_York"), holidays=frozenset({datetime(2026, 12, 25).date()})
    )
    for calendar in (CAL, ROUND_THE_CLOCK, holiday):
        for _ in range(300):
            a = NOW + timedelta(hours=rng.uniform(-400, 400))
            b = a + timedelta(hours=rng.uniform(-50, 300))
            assert working_hours(calendar, a, b) == pytest.approx(
                calendar.working_hours_between(a, b), abs=1e-9
            )
