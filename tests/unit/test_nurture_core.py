"""Pure nurture decisions: next best content, send rules, frequency cap, conditions, steps."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from leadflow.core.config import FrequencyCap, ProgramCondition, ProgramSpec
from leadflow.core.model import Event
from leadflow.core.nurture import (
    Asset,
    LeadView,
    StepDecision,
    cap_frees_at,
    condition_holds,
    decide_step,
    next_best_content,
    send_blockers,
    subject_for,
)

NOW = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
CAP = FrequencyCap(emails=2, days=7)
STAGES = {"acquired": "early", "nurturing": "middle", "mql": "late", "customer": "late"}

ASSETS = [
    Asset("blog-b", "Blog B", "blog_post", "early", url="/blog/b"),
    Asset("blog-a", "Blog A", "blog_post", "early", url="/blog/a"),
    Asset("wp", "White paper", "white_paper", "middle", gated=True, url="/wp"),
    Asset(
        "case-finance",
        "Finance",
        "case_study",
        "middle",
        industries=("Financial Services",),
        url="/case/finance",
    ),
    Asset(
        "case-logistics",
        "Logistics",
        "case_study",
        "middle",
        industries=("Transport & Logistics",),
        url="/case/logistics",
    ),
    Asset("pricing", "Pricing", "pricing", "late", url="/pricing"),
    Asset("demo", "Demo", "demo_video", "late", url="/demo"),
]


def lead(**kw: object) -> LeadView:
    base = LeadView(
        lead_id=1,
        email="kim@acme.example",
        stage="nurturing",
        engagement=10.0,
        fit_grade="B",
        industry=None,
        consent_status="granted",
    )
    return replace(base, **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- content


def nb(view: LeadView) -> str | None:
    asset = next_best_content(view, ASSETS, STAGES)
    return asset.key if asset is not None else None


def test_next_best_matches_evaluation_stage_and_breaks_ties_on_key() -> None:
    assert nb(lead(stage="acquired")) == "blog-a"
    assert nb(lead(stage="mql")) == "demo"


def test_industry_specific_first_case_insensitive_and_other_industries_never() -> None:
    fin = lead(industry="financial services")
    assert nb(fin) == "case-finance"
    transport = lead(industry="TRANSPORT & LOGISTICS ")
    assert nb(transport) == "case-logistics"
    # No industry known: only generic assets qualify.
    assert nb(lead()) == "wp"
    # Finance consumed: generic middle content next, never another industry's case study.
    fin2 = lead(industry="Financial Services", consumed=frozenset({"case-finance"}))
    assert nb(fin2) == "wp"


def test_consumed_assets_are_skipped_then_adjacent_stages_later_first() -> None:
    done_middle = frozenset({"wp"})
    # Middle exhausted -> late (forward) before early.
    assert nb(lead(consumed=done_middle)) == "demo"
    done = done_middle | {"demo", "pricing"}
    assert nb(lead(consumed=done)) == "blog-a"
    everything = frozenset(a.key for a in ASSETS)
    assert next_best_content(lead(consumed=everything), ASSETS, STAGES) is None
    # Early only reaches middle (adjacent), never late.
    early_done = lead(stage="acquired", consumed=frozenset({"blog-a", "blog-b", "wp"}))
    assert next_best_content(early_done, ASSETS, STAGES) is None


def test_stage_without_content_mapping_gets_nothing() -> None:
    assert next_best_content(lead(stage="dead_end"), ASSETS, STAGES) is None


def test_next_best_is_independent_of_asset_order() -> None:
    for stage in STAGES:
        a = next_best_content(lead(stage=stage), ASSETS, STAGES)
        b = next_best_content(lead(stage=stage), list(reversed(ASSETS)), STAGES)
        assert a == b


# --------------------------------------------------------------------------- send rules


def blockers(view: LeadView, category: str = "marketing", **kw: object) -> str | None:
    args: dict[str, object] = {
        "stage_allows_marketing": True,
        "now": NOW,
        "recent_marketing_sends": [],
        "cap": CAP,
    }
    args.update(kw)
    return send_blockers(view, category, **args)  # type: ignore[arg-type]


def test_eligible_lead_has_no_blocker() -> None:
    assert blockers(lead()) is None


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"email": None}, "no_email"),
        ({"email": ""}, "no_email"),
        ({"erased": True}, "erased"),
        ({"bounced_at": NOW}, "bounced"),
        ({"unsubscribed_at": NOW}, "unsubscribed"),
        ({"consent_status": "unknown"}, "no_consent"),
        ({"consent_status": "denied"}, "no_consent"),
        ({"pause_until": NOW + timedelta(days=1)}, "paused"),
    ],
)
def test_each_rule_blocks_marketing(changes: dict[str, object], reason: str) -> None:
    assert blockers(lead(**changes)) == reason


def test_dead_end_stage_blocks_marketing() -> None:
    assert blockers(lead(stage="dead_end"), stage_allows_marketing=False) == "stage"


def test_pause_that_ended_does_not_block() -> None:
    assert blockers(lead(pause_until=NOW)) is None
    assert blockers(lead(pause_until=NOW - timedelta(days=1))) is None


def test_first_reason_wins_in_documented_order() -> None:
    everything = lead(
        email="x@y.example",
        erased=True,
        bounced_at=NOW,
        unsubscribed_at=NOW,
        consent_status="denied",
        pause_until=NOW + timedelta(days=3),
    )
    assert blockers(everything, stage_allows_marketing=False) == "erased"
    assert blockers(replace(everything, erased=False), stage_allows_marketing=False) == "bounced"
    v = replace(everything, erased=False, bounced_at=None)
    assert blockers(v, stage_allows_marketing=False) == "unsubscribed"
    v = replace(v, unsubscribed_at=None)
    assert blockers(v, stage_allows_marketing=False) == "no_consent"
    v = replace(v, consent_status="granted")
    assert blockers(v, stage_allows_marketing=False) == "stage"
    assert blockers(v) == "paused"


def test_frequency_cap_two_in_seven_days() -> None:
    one = [NOW - timedelta(days=1)]
    two = [NOW - timedelta(days=6), NOW - timedelta(hours=1)]
    assert blockers(lead(), recent_marketing_sends=one) is None
    assert blockers(lead(), recent_marketing_sends=two) == "frequency_cap"
    old = [NOW - timedelta(days=7), NOW - timedelta(days=8)]  # out of the window
    assert blockers(lead(), recent_marketing_sends=old) is None


def test_transactional_skips_consent_cap_stage_pause_but_not_address_rules() -> None:
    two = [NOW - timedelta(days=1), NOW - timedelta(hours=1)]
    relaxed = lead(
        consent_status="unknown", pause_until=NOW + timedelta(days=9), unsubscribed_at=NOW
    )
    assert (
        blockers(relaxed, "transactional", stage_allows_marketing=False, recent_marketing_sends=two)
        is None
    )
    assert blockers(lead(bounced_at=NOW), "transactional") == "bounced"
    assert blockers(lead(erased=True), "transactional") == "erased"
    assert blockers(lead(email=None), "transactional") == "no_email"


def test_cap_frees_when_oldest_counting_send_ages_out() -> None:
    sends = [NOW - timedelta(days=6), NOW - timedelta(days=2)]
    frees = cap_frees_at(sends, CAP, NOW)
    assert frees == NOW + timedelta(days=1)
    assert blockers(lead(), now=frees, recent_marketing_sends=sends) is None
    assert (
        blockers(lead(), now=frees - timedelta(seconds=1), recent_marketing_sends=sends)
        == "frequency_cap"
    )
    three = [NOW - timedelta(days=5), NOW - timedelta(days=4), NOW - timedelta(days=1)]
    assert cap_frees_at(three, CAP, NOW) == NOW - timedelta(days=4) + timedelta(days=7)
    assert cap_frees_at([NOW - timedelta(days=1)], CAP, NOW) == NOW


# --------------------------------------------------------------------------- conditions


def ev(name: str, at: datetime, **kw: object) -> Event:
    return Event(
        message_id=f"{name}-{at.isoformat()}", type="track", occurred_at=at, name=name, **kw
    )  # type: ignore[arg-type]


def test_condition_scores_stage_grade_attributes() -> None:
    c = ProgramCondition(
        score_at_least=10, score_below=50, stage=["nurturing"], fit_grade=["A", "B"]
    )
    assert condition_holds(c, lead(), [], NOW)
    assert not condition_holds(c, lead(engagement=9.9), [], NOW)
    assert not condition_holds(c, lead(engagement=50), [], NOW)
    assert not condition_holds(c, lead(stage="mql"), [], NOW)
    assert not condition_holds(c, lead(fit_grade="D"), [], NOW)
    assert condition_holds(None, lead(), [], NOW)
    attrs = ProgramCondition(attributes={"role": ["CTO", "cio"], "industry": ["retail"]})
    assert condition_holds(attrs, lead(attributes={"role": "cto"}, industry="Retail"), [], NOW)
    assert not condition_holds(
        attrs, lead(attributes={"role": "intern"}, industry="Retail"), [], NOW
    )
    assert not condition_holds(attrs, lead(attributes={}, industry="Retail"), [], NOW)


def test_condition_event_seen_within_days_and_not_seen() -> None:
    seen = ProgramCondition.model_validate(
        {"event": {"name": "webinar_attended"}, "within_days": 7}
    )
    recent = [ev("webinar_attended", NOW - timedelta(days=2))]
    old = [ev("webinar_attended", NOW - timedelta(days=8))]
    future = [ev("webinar_attended", NOW + timedelta(days=1))]
    assert condition_holds(seen, lead(), recent, NOW)
    assert not condition_holds(seen, lead(), old, NOW)
    assert not condition_holds(seen, lead(), future, NOW)
    unseen = ProgramCondition.model_validate({"event": {"name": "webinar_attended"}, "seen": False})
    assert condition_holds(unseen, lead(), [], NOW)
    assert not condition_holds(unseen, lead(), old, NOW)


# --------------------------------------------------------------------------- steps


PROGRAM = ProgramSpec.model_validate(
    {
        "key": "edu",
        "name": {"en": "Education", "ko": "교육"},
        "stages": ["nurturing"],
        "steps": [
            {"id": "hello", "send": {"subject": {"en": "Hello", "ko": "안녕하세요"}}},
            {
                "id": "gate",
                "when": {"score_at_least": 20},
                "otherwise": "exit",
                "set": {"nurtured": True},
                "notify": "hot lead",
            },
            {
                "id": "pricing",
                "when": {"fit_grade": ["A"]},
                "send": {"subject": {"en": "Pricing", "ko": "요금"}, "asset": "pricing"},
            },
            {
                "id": "welcome",
                "send": {
                    "subject": {"en": "Welcome", "ko": "환영"},
                    "asset": "demo",
                    "category": "transactional",
                },
            },
        ],
    }
)


def decide(index: int, view: LeadView, **kw: object) -> StepDecision:
    args: dict[str, object] = {
        "assets": ASSETS,
        "content_stages": STAGES,
        "events": [],
        "now": NOW,
        "stage_allows_marketing": True,
        "recent_marketing_sends": [],
        "cap": CAP,
    }
    args.update(kw)
    return decide_step(PROGRAM, index, view, **args)  # type: ignore[arg-type]


def test_send_step_picks_next_best_asset_and_subject_language() -> None:
    d = decide(0, lead())
    assert d.action == "run" and d.blocked is None
    assert d.send is not None and d.send.asset is not None
    assert d.send.asset.key == "wp" and d.send.subject == "Hello"
    ko = decide(0, lead(attributes={"locale": "ko-KR"}))
    assert ko.send is not None and ko.send.subject == "안녕하세요"
    assert subject_for(lead(), "plain") == "plain"


def test_blocked_send_runs_with_reason_and_cap_waits() -> None:
    d = decide(0, lead(consent_status="unknown"))
    assert (d.action, d.blocked) == ("run", "no_consent")
    sends = [NOW - timedelta(days=3), NOW - timedelta(days=1)]
    w = decide(0, lead(), recent_marketing_sends=sends)
    assert w.action == "wait" and w.wait_until == NOW + timedelta(days=4)
    nothing = decide(0, lead(consumed=frozenset(a.key for a in ASSETS)))
    assert (nothing.action, nothing.blocked) == ("run", "no_content")


def test_condition_failure_skips_or_exits_and_actions_carry_over() -> None:
    assert decide(1, lead(engagement=5)).action == "exit"
    run = decide(1, lead(engagement=25))
    assert run.action == "run" and run.send is None
    assert dict(run.set_fields) == {"nurtured": True} and run.notify == "hot lead"
    assert decide(2, lead(fit_grade="C")).action == "skip"
    fixed = decide(2, lead(fit_grade="A", consumed=frozenset({"pricing"})))
    assert fixed.send is not None and fixed.send.asset is not None
    assert fixed.send.asset.key == "pricing"  # fixed assets are sent even if consumed


def test_transactional_step_ignores_cap_and_consent() -> None:
    sends = [NOW - timedelta(days=3), NOW - timedelta(days=1)]
    d = decide(3, lead(consent_status="unknown"), recent_marketing_sends=sends)
    assert (d.action, d.blocked) == ("run", None)
    assert d.send is not None and d.send.category == "transactional"


def test_past_the_last_step_completes() -> None:
    assert decide(4, lead()).action == "complete"
