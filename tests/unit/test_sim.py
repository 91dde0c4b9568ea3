"""The demo world generator: deterministic, realistic in shape, valid Segment messages."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from leadflow.core.tracking import parse_message
from leadflow.sim import WorldConfig, build_world, iter_messages, iter_tagged
from leadflow.sim import catalog as C
from leadflow.sim.catalog import CHANNELS, LATE_STAGE_EVENTS
from leadflow.sim.world import World

RECEIVED = datetime(2030, 1, 1, tzinfo=UTC)
LATE_PAGES = {"/pricing", "/pricing/enterprise", "/pricing/quote", "/demo", "/trial"}


@pytest.fixture(scope="module")
def world() -> World:
    return build_world(WorldConfig(leads=600, months=9, seed=11))


@pytest.fixture(scope="module")
def messages(world: World) -> list[dict[str, Any]]:
    return list(iter_messages(world))


@pytest.fixture(scope="module")
def tagged(world: World) -> list[tuple[int, dict[str, Any]]]:
    return list(iter_tagged(world))


def _small(seed: int, **kw: Any) -> list[dict[str, Any]]:
    return list(iter_messages(build_world(WorldConfig(leads=80, months=3, seed=seed, **kw))))


def test_same_seed_gives_the_identical_message_stream():
    assert _small(5) == _small(5)


def test_different_seeds_give_different_worlds():
    a, b = _small(5), _small(6)
    assert a != b
    assert {m["messageId"] for m in a}.isdisjoint(m["messageId"] for m in b)


def test_other_settings_change_every_id_so_worlds_never_collide():
    a = _small(5)
    b = _small(5, until=datetime(2024, 6, 1, tzinfo=UTC))
    assert {m["messageId"] for m in a}.isdisjoint(m["messageId"] for m in b)
    assert {m.get("userId") for m in a} & {m.get("userId") for m in b} <= {None}


def test_message_ids_are_unique_and_timestamps_in_order_within_the_period(world, messages):
    ids = [m["messageId"] for m in messages]
    assert len(ids) == len(set(ids))
    stamps = [m["timestamp"] for m in messages]
    assert stamps == sorted(stamps)
    start = world.config.start.strftime("%Y-%m-%dT%H:%M:%S")
    until = world.config.until.strftime("%Y-%m-%dT%H:%M:%S")
    assert start <= stamps[0] and stamps[-1] < until


def test_every_message_is_a_valid_segment_message(messages):
    parsed = [parse_message(m, received_at=RECEIVED) for m in messages]
    assert {p.type for p in parsed} == {"page", "track", "identify", "group"}
    assert all(p.occurred_at < RECEIVED for p in parsed)


def test_exactly_the_requested_number_of_people_identify(world, messages):
    users = {m["userId"] for m in messages if m["type"] == "identify"}
    assert len(users) == world.config.leads == world.lead_count


def test_buying_committees_have_two_to_ten_people_with_roles(world):
    prospects = [a for a in world.accounts if a.kind == "prospect"]
    sizes = [len(a.members) for a in prospects]
    assert min(sizes) >= 2 and max(sizes) <= 10
    assert len(set(sizes)) >= 4  # sizes vary
    roles = Counter(C.ROLES[world.people.role[p]] for a in prospects for p in a.members)
    assert set(roles) == set(C.ROLES)
    assert all({0, 1} <= {world.people.role[p] for p in a.members} for a in prospects)


def test_accounts_span_industries_sizes_countries_and_some_have_no_leads(world):
    prospects = [a for a in world.accounts if a.kind == "prospect"]
    assert {a.industry for a in prospects} == set(range(len(C.INDUSTRIES)))
    assert {a.band for a in prospects} == {band for band, _, _ in C.EMPLOYEE_BANDS}
    countries = Counter(a.country for a in prospects)
    assert countries.most_common(1)[0][0] == "KR" and len(countries) >= 4
    assert len({a.domain for a in world.accounts}) == len(world.accounts)
    assert all(a.domain.endswith(".example") for a in world.accounts)
    identified = world.arr["identified"]
    empty = [a for a in prospects if not any(identified[m] for m in a.members)]
    assert empty
    assert any(a.is_target for a in prospects) and not all(a.is_target for a in prospects)
    assert all(0.0 <= a.intent <= 1.0 for a in world.accounts)


def test_landing_pages_are_classified_as_the_channel_the_simulator_meant(tagged):
    landings = [(ch, m) for ch, m in tagged if ch >= 0]
    mix = Counter(CHANNELS[ch] for ch, _ in landings)
    assert set(mix) == set(CHANNELS)
    wrong = [
        (CHANNELS[ch], parse_message(m, received_at=RECEIVED).channel, m)
        for ch, m in landings
        if parse_message(m, received_at=RECEIVED).channel != CHANNELS[ch]
    ]
    assert wrong == []
    # UTM tags and search/social referrers both occur.
    assert any("campaign" in m["context"] for _, m in landings)
    referrers = {m["context"].get("page", {}).get("referrer", "") for _, m in landings}
    assert any("naver.com" in r for r in referrers)
    assert any("google." in r for r in referrers)
    assert any("linkedin.com" in r for r in referrers)


def test_internal_pages_refer_to_the_site_itself(tagged):
    internal = [m for ch, m in tagged if ch < 0 and m["type"] == "page"]
    refs = [m["context"].get("page", {}).get("referrer") for m in internal]
    assert refs and all(r is None or r.startswith(C.SITE) for r in refs)


def _account_of_user(world: World) -> dict[str, int]:
    people = world.people
    return {
        people.user_id[p]: people.account[p]
        for p in range(len(people))
        if people.identified[p] and people.persona[p] == 0
    }


def test_high_intent_accounts_show_far_more_late_stage_behaviour(world, messages):
    account_of = _account_of_user(world)
    late: Counter[int] = Counter()
    for m in messages:
        user = m.get("userId")
        if user not in account_of:
            continue
        if (m["type"] == "track" and m["event"] in LATE_STAGE_EVENTS) or (
            m["type"] == "page" and m["properties"]["path"] in LATE_PAGES
        ):
            late[account_of[user]] += 1
    per_person: dict[int, list[float]] = defaultdict(list)
    intents = np.array([a.intent for a in world.accounts])
    high, low = np.quantile(intents, 0.75), np.quantile(intents, 0.25)
    for user, acct in account_of.items():
        del user
        n = len([p for p in world.accounts[acct].members if world.people.identified[p]])
        bucket = 1 if intents[acct] >= high else 0 if intents[acct] <= low else -1
        if bucket >= 0:
            per_person[bucket].append(late[acct] / n)
    assert np.mean(per_person[1]) > 3 * np.mean(per_person[0])


def test_anonymous_visits_precede_identify_for_some_people_and_not_others(messages):
    anon_pages: Counter[str] = Counter()
    with_history = without_history = 0
    for m in messages:
        if m["type"] == "page" and "userId" not in m:
            anon_pages[m["anonymousId"]] += 1
        elif m["type"] == "identify" and "firstName" in m["traits"]:
            if anon_pages[m.get("anonymousId", "")] >= 2:
                with_history += 1
            else:
                without_history += 1
    assert with_history > 0.25 * (with_history + without_history)
    assert without_history > 0


def test_some_people_identify_from_a_second_device(messages):
    devices: dict[str, set[str]] = defaultdict(set)
    for m in messages:
        if m["type"] == "identify" and "anonymousId" in m:
            devices[m["userId"]].add(m["anonymousId"])
    assert any(len(d) == 2 for d in devices.values())


def test_identify_carries_contact_details_and_form_consent(messages):
    first = [m for m in messages if m["type"] == "identify" and "firstName" in m["traits"]]
    assert all("@" in m["traits"]["email"] for m in first)
    methods = Counter(m["traits"]["consent"]["method"].split("-")[0] for m in first)
    assert all(k.startswith("form:") for k in methods)
    assert {"form:newsletter", "form:webinar", "form:tradeshow", "form:whitepaper"} <= set(methods)
    statuses = Counter(m["traits"]["consent"]["status"] for m in first)
    assert statuses["granted"] > statuses["denied"] > 0
    titles = {m["traits"]["title"] for m in first}
    assert {"대표이사", "부장", "과장"} & titles and {"CTO", "Head of Marketing"} & titles
    forms = {m["properties"]["form"] for m in messages if m.get("event") == "form_submit"}
    assert len(forms) >= 5


def test_dead_end_material_is_present(messages):
    first = [m["traits"] for m in messages if m["type"] == "identify" and "title" in m["traits"]]
    titles = Counter(t["title"] for t in first)
    assert titles["학생"] + titles["Student"] > 0
    assert titles["은퇴"] + titles["Retired"] > 0
    competitor_domains = {d for _, d in C.COMPETITORS}
    assert any(t["email"].split("@")[1] in competitor_domains for t in first)
    assert any(t["email"].split("@")[1] in C.JUNK_DOMAINS for t in first)


def test_true_intent_is_only_in_group_traits(world, messages):
    groups = [m for m in messages if m["type"] == "group"]
    assert groups and all(0 <= m["traits"]["demo_true_intent"] <= 1 for m in groups)
    keys = {a.key: a for a in world.accounts}
    assert all(m["traits"]["demo_true_intent"] == round(keys[m["groupId"]].intent, 4)
               for m in groups)  # fmt: skip
    others = [m for m in messages if m["type"] != "group"]
    assert all("demo_true_intent" not in repr(m) for m in others)


def test_email_stops_after_unsubscribe_or_hard_bounce(messages):
    stopped: dict[str, str] = {}
    kinds: Counter[str] = Counter()
    late_sends = []
    for m in messages:
        event = m.get("event", "")
        if event.startswith("email_"):
            assert "userId" in m and "anonymousId" not in m
            assert m["context"]["campaign"]["medium"] == "email"
            kinds[event] += 1
        if event == "email_unsubscribe" or (
            event == "email_bounce" and m["properties"]["bounce_type"] == "hard"
        ):
            stopped[m["userId"]] = m["timestamp"]
        elif event == "email_sent" and m["userId"] in stopped:
            late_sends.append(m)
    assert {"email_sent", "email_open", "email_click", "email_unsubscribe", "email_bounce"} <= set(
        kinds
    )
    assert kinds["email_sent"] > kinds["email_open"] > kinds["email_click"]
    assert late_sends == []


def test_webinars_trade_shows_downloads_and_careers_visits_occur(messages):
    events = Counter(m.get("event") for m in messages)
    for name in ("webinar_registered", "webinar_attended", "event_attended", "content_download",
                 "demo_request", "quote_request", "trial_signup", "form_submit"):  # fmt: skip
        assert events[name] > 0, name
    assert events["webinar_registered"] > events["webinar_attended"]
    asset_types = {m["properties"]["asset_type"] for m in messages
                   if m.get("event") == "content_download"}  # fmt: skip
    assert {"white_paper", "case_study"} <= asset_types
    paths = Counter(m["properties"]["path"] for m in messages if m["type"] == "page")
    assert paths["/careers"] + paths["/careers/openings"] > 0


def test_events_per_lead_are_in_the_intended_range(world, messages):
    per_lead = len(messages) / world.lead_count
    assert 20 <= per_lead <= 70


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"leads": 0}, "leads"),
        ({"leads": -5}, "leads"),
        ({"leads": 10_000_001}, "leads"),
        ({"months": 0}, "months"),
        ({"months": 1000}, "months"),
        ({"seed": -1}, "seed"),
        ({"until": datetime(2025, 1, 1)}, "until"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}: "):
        WorldConfig(**kwargs)
