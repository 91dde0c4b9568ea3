"""The vectorised backtest equals the per-lead core (``lifecycle.replay`` and
``score_engagement``) on random histories - duplicates, shuffled rows, several leads - and
``compare`` reports what a changed model changes."""

from __future__ import annotations

import copy
import dataclasses
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadflow.core import backtest as bt
from leadflow.core import lifecycle as lc
from leadflow.core.backtest import machine as bt_machine
from leadflow.core.backtest import prepare as bt_prepare
from leadflow.core.config import LeadModel, build_model, load_default_model
from leadflow.core.model import Event, LeadProfile, SalesAction
from leadflow.core.scoring import score_engagement

MODEL = load_default_model()
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def model_with(edit: Any) -> LeadModel:
    data = copy.deepcopy(MODEL.spec.model_dump(mode="json", by_alias=True, exclude_none=True))
    edit(data)
    return build_model(yaml.safe_load(yaml.safe_dump(data, allow_unicode=True)))


def _candidate(data: dict[str, Any]) -> None:
    data["version"] = "2024.2-candidate"
    rules = data["engagement"]["rules"]
    for rule in rules:
        if rule["id"] == "pricing_page":
            rule["points"] = 20
        if rule["id"] == "email_open":
            rule["points"] = 3
    rules.append({"id": "docs_page", "match": {"type": "page", "path": "/docs/*"}, "points": 8})
    mql = data["stages"]["mql"]["enter_when"]
    for cond in mql:
        if "score" in cond:
            cond["score"] = 80


CANDIDATE = model_with(_candidate)

KINDS: dict[str, dict[str, Any]] = {
    "signup": {"type": "identify", "properties": {"email": "lee@acme.io", "consent": "granted"}},
    "signup_no_consent": {"type": "identify", "properties": {"email": "lee@acme.io"}},
    "bad_email": {"type": "identify", "properties": {"email": "lee@mailinator.com"}},
    "becomes_student": {"type": "identify", "properties": {"title": "PhD student"}},
    "target_account": {"type": "group", "properties": {"is_target": True, "industry": "software"}},
    "product": {"type": "page", "page_url": "https://acme.io/product/scanner"},
    "pricing": {"type": "page", "page_url": "https://acme.io/Pricing/"},
    "docs": {"type": "page", "page_url": "https://acme.io/docs/api"},
    "blog": {"type": "page", "page_url": "https://acme.io/blog/a"},
    "careers": {"type": "page", "page_url": "https://acme.io/careers"},
    "email_open": {"type": "track", "name": "email_open"},
    "email_click": {"type": "track", "name": "email_click"},
    "white_paper": {
        "type": "track",
        "name": "content_download",
        "properties": {"asset_type": "White_Paper"},
    },
    "pricing_sheet": {
        "type": "track",
        "name": "content_download",
        "properties": {"asset_type": "pricing"},
    },
    "webinar": {"type": "track", "name": "webinar_attended"},
    "demo": {"type": "track", "name": "demo_request"},
    "catalogue": {"type": "track", "name": "catalogue_request"},
    "contact": {"type": "track", "name": "contact_request"},
    "quote": {"type": "track", "name": "quote_request"},
    "our_event": {"type": "track", "name": "event_attended"},
    "unsubscribe": {"type": "track", "name": "email_unsubscribe"},
    "soft_bounce": {"type": "track", "name": "email_bounce", "properties": {"bounce_type": "soft"}},
    "hard_bounce": {"type": "track", "name": "email_bounce", "properties": {"bounce_type": "hard"}},
}
RARE = ["becomes_student", "hard_bounce", "bad_email"]
KIND_NAMES = [
    *(k for k in KINDS if k not in RARE),
    *["signup", "email_click", "product", "demo", "webinar", "pricing", "white_paper"] * 3,
]
# Hours over ~ten months: same-hour collisions (ties broken by id) and exact threshold
# hits (100 points in one instant) happen; decay matters.
hours = st.integers(min_value=0, max_value=24 * 300)


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Event], dict[int, LeadProfile]]:
    n_leads = draw(st.integers(min_value=1, max_value=4))
    events: list[Event] = []
    profiles: dict[int, LeadProfile] = {}
    for lead in range(1, n_leads + 1):
        specs = draw(st.lists(st.tuples(st.sampled_from(KIND_NAMES), hours), max_size=30))
        if draw(st.integers(min_value=0, max_value=6)) == 0:
            specs.append((draw(st.sampled_from(RARE)), draw(hours)))
        for i, (kind, hour) in enumerate(specs):
            fields = KINDS[kind]
            events.append(
                Event(
                    message_id=f"L{lead}-e{i:03d}",
                    lead_id=lead,
                    occurred_at=T0 + timedelta(hours=hour, minutes=draw(st.sampled_from([0, 7]))),
                    type=fields["type"],
                    name=fields.get("name"),
                    properties=fields.get("properties", {}),
                    page_url=fields.get("page_url"),
                )
            )
        profiles[lead] = LeadProfile(
            id=lead,
            email=draw(st.sampled_from([None, None, "kim@acme.co.kr", "x@rival-software.example"])),
            title=draw(st.sampled_from([None, None, "CTO", "Manager", "Retired", "학생"])),
            consent=draw(st.sampled_from(["unknown", "granted", "denied"])),
            is_target_account=draw(st.booleans()),
        )
    repeats = draw(st.lists(st.sampled_from(events), max_size=8)) if events else []
    arrivals = draw(st.permutations([*events, *repeats]))
    return arrivals, profiles


def core_view(
    model: LeadModel,
    arrivals: list[Event],
    profiles: dict[int, LeadProfile],
    as_of: datetime,
    actions: dict[int, list[SalesAction]] | None = None,
) -> dict[int, tuple[str, float, list[tuple[Any, ...]]]]:
    out = {}
    for lead, profile in profiles.items():
        mine = [e for e in arrivals if e.lead_id == lead]
        if not any(e.occurred_at <= as_of for e in mine):
            continue  # not a lead of the history yet
        state = lc.replay(profile, mine, model, actions=(actions or {}).get(lead, ()), as_of=as_of)
        history = [(c.from_stage, c.to_stage, c.at, c.rule, c.cause) for c in state.history]
        out[lead] = (state.stage, score_engagement(mine, as_of, model).total, history)
    return out


def vector_view(result: bt.Backtest) -> dict[int, tuple[str, float, list[tuple[Any, ...]]]]:
    history: dict[int, list[tuple[Any, ...]]] = {}
    for row in result.changes.iter_rows(named=True):
        history.setdefault(row["lead_id"], []).append(
            (row["from_stage"], row["to_stage"], row["at"], row["rule"], row["cause"])
        )
    return {
        row["lead_id"]: (row["stage"], row["score"], history.get(row["lead_id"], []))
        for row in result.leads.iter_rows(named=True)
    }


def assert_same(
    vector: dict[int, tuple[str, float, list[tuple[Any, ...]]]],
    core: dict[int, tuple[str, float, list[tuple[Any, ...]]]],
) -> None:
    assert vector.keys() == core.keys()
    for lead, (stage, score, history) in core.items():
        v_stage, v_score, v_history = vector[lead]
        assert v_stage == stage, lead
        assert abs(v_score - score) <= 1e-9 + 1e-12, (lead, v_score, score)
        assert v_history == history, lead


def tables(
    arrivals: list[Event], profiles: dict[int, LeadProfile], *, keep_originals: bool = True
) -> tuple[bt.EventTable, pl.DataFrame]:
    table = bt.events_frame(
        arrivals, bt.referenced_properties(MODEL, CANDIDATE), keep_originals=keep_originals
    )
    return table, bt.profiles_frame(profiles.values())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=histories(), later=st.integers(min_value=-24 * 100, max_value=24 * 400))
def test_vectorised_backtest_equals_per_lead_replay_on_random_histories(
    history: tuple[list[Event], dict[int, LeadProfile]], later: int
):
    arrivals, profiles = history
    as_of = T0 + timedelta(hours=24 * 200 + later)
    table, frame = tables(arrivals, profiles)
    for model in (MODEL, CANDIDATE):
        result = bt.evaluate(model, table, frame, as_of=as_of)
        assert_same(vector_view(result), core_view(model, arrivals, profiles, as_of))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=histories())
def test_fallback_from_rebuilt_events_equals_replay_of_the_originals(
    history: tuple[list[Event], dict[int, LeadProfile]],
):
    # Without the original events, leads the rounds cannot decide are replayed from
    # events rebuilt from the columns; a model that sends everyone there shows it.
    arrivals, profiles = history
    as_of = T0 + timedelta(days=320)

    def to_recycle(data: dict[str, Any]) -> None:
        data["stages"]["recycle_a"]["enter_when"] = [{"event": {"type": "track", "name": "x"}}]
        data["stages"]["recycle_a"]["from"] = ["mql"]

    everyone = model_with(to_recycle)
    table, frame = tables(arrivals, profiles, keep_originals=False)
    result = bt.evaluate(everyone, table, frame, as_of=as_of)
    assert result.fallback_leads == result.leads.height
    assert_same(vector_view(result), core_view(everyone, arrivals, profiles, as_of))


def burst(lead: int, start: datetime, kinds: list[str], step: timedelta) -> list[Event]:
    out = []
    for i, kind in enumerate(kinds):
        fields = KINDS[kind]
        out.append(
            Event(
                message_id=f"b{lead}-{i}",
                lead_id=lead,
                occurred_at=start + i * step,
                type=fields["type"],
                name=fields.get("name"),
                properties=fields.get("properties", {}),
                page_url=fields.get("page_url"),
            )
        )
    return out


def population() -> tuple[list[Event], dict[int, LeadProfile]]:
    """Forty leads with spaced-out behaviour: most cross thresholds away from a tie."""
    events: list[Event] = []
    plays = [
        ["signup", "product", "pricing", "white_paper", "webinar", "demo", "pricing"],
        ["signup", "email_click", "blog", "docs", "docs", "pricing", "white_paper", "pricing"],
        ["signup", "product", "catalogue"],
        ["blog", "careers", "signup", "our_event", "quote"],
        ["signup", "email_open", "email_open", "hard_bounce", "demo"],
        ["pricing", "docs", "white_paper", "pricing_sheet", "signup", "webinar"],
    ]
    for lead in range(1, 41):
        play = plays[lead % len(plays)]
        step = timedelta(hours=7 + lead, minutes=13 * lead)
        events += burst(lead, T0 + timedelta(days=lead), play, step)
    profiles = {
        lead: LeadProfile(id=lead, is_target_account=lead % 3 == 0) for lead in range(1, 41)
    }
    return events, profiles


def test_default_model_on_a_population_is_mostly_vectorised_and_equal_to_replay():
    events, profiles = population()
    as_of = T0 + timedelta(days=90)
    table, frame = tables(events, profiles)
    result = bt.evaluate(MODEL, table, frame, as_of=as_of)
    assert result.fallback_leads < result.leads.height // 4
    assert_same(vector_view(result), core_view(MODEL, events, profiles, as_of))
    assert set(result.leads["stage"]) >= {"mql", "appointment", "dead_end"}


def test_leads_with_sales_actions_take_the_per_lead_path():
    events, profiles = population()
    as_of = T0 + timedelta(days=90)
    mql_lead = 3  # catalogue request -> MQL
    actions = {
        mql_lead: [
            SalesAction(action_id="acc", name="accept", at=T0 + timedelta(days=60), lead_id=3)
        ]
    }
    table, frame = tables(events, profiles)
    result = bt.evaluate(MODEL, table, frame, as_of=as_of, actions=actions)
    assert result.fallback_reasons.get("sales actions") == 1
    assert_same(vector_view(result), core_view(MODEL, events, profiles, as_of, actions))
    assert vector_view(result)[mql_lead][0] == "appointment"


def test_compare_reports_what_a_lower_threshold_and_changed_points_change():
    events, profiles = population()
    as_of = T0 + timedelta(days=90)
    table, frame = tables(events, profiles)
    outcomes = {1: "won", 2: "lost", 3: "rejected", 4: "opportunity", 7: "rejected"}
    report = bt.compare(MODEL, CANDIDATE, table, frame, outcomes, as_of=as_of, sample_size=3)

    current = core_view(MODEL, events, profiles, as_of)
    candidate = core_view(CANDIDATE, events, profiles, as_of)
    qualified = {"mql", "appointment", "opportunity", "won", "customer", "expansion"}
    cur_mql = {lead for lead, (stage, _, h) in current.items() if any(c[1] in qualified for c in h)}
    cand_mql = {
        lead for lead, (stage, _, h) in candidate.items() if any(c[1] in qualified for c in h)
    }
    assert report.current.mql == len(cur_mql)
    assert report.candidate.mql == len(cand_mql)
    assert report.candidate.mql > report.current.mql  # 80 points instead of 100
    assert report.newly_mql == len(cand_mql - cur_mql)
    assert report.no_longer_mql == len(cur_mql - cand_mql)
    changed = {lead for lead in current if current[lead][0] != candidate[lead][0]}
    assert report.changed == len(changed) > 0
    for (a, b), n in report.stage_changes.items():
        assert n == sum(1 for lead in changed if (current[lead][0], candidate[lead][0]) == (a, b))
    assert len(report.sample) == min(3, len(changed))
    assert all(lead in changed for lead, _, _ in report.sample)
    assert report.weekly["current"].sum() == report.current.mql
    assert report.weekly["candidate"].sum() == report.candidate.mql

    known = [o for lead, o in outcomes.items() if lead in cur_mql]
    assert report.current.with_outcome == len(known)
    assert report.current.won_rate == pytest.approx(known.count("won") / len(known))
    assert report.current.rejected_share == pytest.approx(known.count("rejected") / len(known))
    opp = sum(o in ("won", "lost", "opportunity") for o in known)
    assert report.current.opportunity_rate == pytest.approx(opp / len(known))
    assert any("candidate" in line or "MQL" in line for line in report.lines())


def test_compare_since_counts_only_mqls_from_that_date():
    events, profiles = population()
    as_of = T0 + timedelta(days=90)
    table, frame = tables(events, profiles)
    since = T0 + timedelta(days=20)
    everything = bt.compare(MODEL, CANDIDATE, table, frame, as_of=as_of)
    recent = bt.compare(MODEL, CANDIDATE, table, frame, as_of=as_of, since=since)
    first = bt.evaluate(MODEL, table, frame, as_of=as_of).leads
    expected = first.filter(pl.col("mql_at") >= since).height
    assert recent.current.mql == expected < everything.current.mql
    assert all(week >= bt.week_of(since) for week in recent.weekly["week"].to_list())


def test_duplicates_in_the_table_count_once_and_late_rows_are_ignored():
    events, profiles = population()
    as_of = T0 + timedelta(days=90)
    doubled = events + events[::3] + burst(99, as_of + timedelta(days=1), ["demo"], timedelta())
    table, frame = tables(doubled, profiles)
    once, _ = tables(events, profiles)
    a = bt.evaluate(MODEL, table, frame, as_of=as_of)
    b = bt.evaluate(MODEL, once, frame, as_of=as_of)
    assert a.leads.equals(b.leads)
    assert a.changes.equals(b.changes)


def test_a_rule_on_a_property_missing_from_the_table_is_refused_by_name():
    def odd(data: dict[str, Any]) -> None:
        data["engagement"]["rules"].append(
            {"id": "tier", "match": {"properties": {"plan_tier": "gold"}}, "points": 5}
        )

    events, profiles = population()
    table, frame = tables(events, profiles)
    with pytest.raises(ValueError, match="plan_tier"):
        bt.evaluate(model_with(odd), table, frame, as_of=T0 + timedelta(days=90))


def test_core_merge_traits_understands_the_consent_object_that_ingestion_accepts():
    signup = Event(
        message_id="c1",
        type="identify",
        occurred_at=T0,
        properties={"email": "lee@acme.io", "consent": {"status": "granted", "method": "form"}},
    )
    assert lc.merge_traits(LeadProfile(id=1), signup).consent == "granted"


def test_core_merge_traits_understands_the_demo_worlds_target_account_trait():
    group = Event(
        message_id="g1", type="group", occurred_at=T0, properties={"target_account": True}
    )
    assert lc.merge_traits(LeadProfile(id=1), group).is_target_account


@pytest.mark.parametrize(
    "email",
    [
        "kim@acme.io",
        "kim@MAILINATOR.com",
        "kim@sub.test.com",
        "kim@nottest.com",
        "a@b",
        "no-at-sign",
        "x@rival-software.example",
        "x@@othervendor.example",
        " spaced@acme.io ",
        "kim@acme.io\n",
        "김@회사.kr",
        "kim@-bad-.io",
        "",
    ],
)
def test_email_dead_end_tests_on_columns_agree_with_the_core(email: str):
    for rule in MODEL.spec.dead_end.rules:
        if not (rule.email_domains or rule.invalid_email):
            continue
        profile = LeadProfile(id=1, email=email)
        core = lc.dead_end_rule_matches(rule, profile, None)
        assert bool(bt_machine._emails_dead(rule, [email])[0]) == core, (rule.id, email)


# --------------------------------------------------------------------------- fast paths


def _relabel(arrivals: list[Event], ids: dict[int, int]) -> list[Event]:
    return [dataclasses.replace(e, lead_id=ids[e.lead_id or 0]) for e in arrivals]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=histories(), spread=st.sampled_from([1, 70_000, 2**45]))
def test_row_order_and_lead_id_range_do_not_change_the_result(
    history: tuple[list[Event], dict[int, LeadProfile]], spread: int
):
    # Input in time order (radix path), shuffled (packed-key path), with lead ids too far
    # apart to pack with the time (lexsort path); same-instant events by message id.
    arrivals, profiles = history
    as_of = T0 + timedelta(days=250)
    ids = {lead: lead * spread for lead in profiles}
    relabelled = _relabel(arrivals, ids)
    new_profiles = {ids[k]: dataclasses.replace(p, id=ids[k]) for k, p in profiles.items()}
    by_time = sorted(relabelled, key=lambda e: e.occurred_at)
    for events in (relabelled, by_time):
        table, frame = tables(events, new_profiles)
        result = bt.evaluate(CANDIDATE, table, frame, as_of=as_of)
        assert_same(vector_view(result), core_view(CANDIDATE, events, new_profiles, as_of))


def test_kept_preparation_is_reused_only_for_the_same_profiles_and_as_of():
    events, profiles = population()
    table, frame = tables(events, profiles)
    early, late = T0 + timedelta(days=20), T0 + timedelta(days=90)
    other = bt.profiles_frame(
        dataclasses.replace(p, is_target_account=not p.is_target_account) for p in profiles.values()
    )
    first = bt.evaluate(MODEL, table, frame, as_of=late)
    for as_of, prof in ((late, frame), (early, frame), (late, other), (late, frame)):
        kept = bt.evaluate(MODEL, table, prof, as_of=as_of)
        fresh = bt.evaluate(MODEL, bt.EventTable(table.frame, table.originals), prof, as_of=as_of)
        assert kept.leads.equals(fresh.leads)
        assert kept.changes.equals(fresh.changes)
    assert not bt.evaluate(MODEL, table, frame, as_of=early).leads.equals(first.leads)
    assert not bt.evaluate(MODEL, table, other, as_of=late).leads.equals(first.leads)


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=40),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_segmented_cumsum_is_the_running_sum_of_each_lead_bit_for_bit(
    lengths: list[int], seed: int
):
    rng = np.random.default_rng(seed)
    code = np.repeat(np.arange(len(lengths)), lengths)
    values = rng.normal(size=len(code)) * np.exp2(rng.uniform(-30, 60, size=len(code)))
    values[rng.random(len(code)) < 0.5] = 0.0
    got = bt_prepare._segmented_cumsum(values, bt_prepare._segments(code))
    starts = np.concatenate(([0], np.cumsum(lengths)))
    want = np.concatenate([np.cumsum(values[a:b]) for a, b in itertools.pairwise(starts)])
    assert np.array_equal(got, want)


@pytest.mark.parametrize("top", [1, 2**10, 2**22 - 1, 2**22, 2**62])
def test_distinct_masks_agree_with_numpy_unique(top: int):
    rng = np.random.default_rng(top % 1000)
    masks = rng.integers(0, top, size=5000, dtype=np.int64, endpoint=True)
    uniq, inverse = bt_machine._distinct(masks)
    want_uniq, want_inverse = np.unique(masks, return_inverse=True)
    assert np.array_equal(uniq, want_uniq)
    assert np.array_equal(inverse, want_inverse)
