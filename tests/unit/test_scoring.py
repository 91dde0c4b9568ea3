"""Engagement (caps, decay, negatives), fit grades and BANT, each with its reasons."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import pytest
import yaml

from leadflow.core.config import LeadModel, build_model, load_default_model
from leadflow.core.model import Bant, Event, LeadProfile
from leadflow.core.scoring import has_term, score_engagement, score_fit, score_qualification

T0 = datetime(2024, 3, 4, 9, 0, tzinfo=UTC)
MODEL = load_default_model()
_ids = count()


def track(name: str, at: datetime, **properties: Any) -> Event:
    return Event(
        message_id=f"m{next(_ids)}", type="track", name=name, occurred_at=at, properties=properties
    )


def page(path: str, at: datetime) -> Event:
    return Event(
        message_id=f"m{next(_ids)}", type="page", occurred_at=at, page_url=f"https://acme.io{path}"
    )


def contribution(score: Any, rule_id: str) -> Any:
    return next(c for c in score.contributions if c.rule_id == rule_id)


def model_with(**changes: Any) -> LeadModel:
    data = copy.deepcopy(MODEL.spec.model_dump(mode="json", by_alias=True, exclude_none=True))
    for dotted, value in changes.items():
        target = data
        *parents, last = dotted.split("__")
        for key in parents:
            target = target[key]
        target[last] = value
    return build_model(yaml.safe_load(yaml.safe_dump(data, allow_unicode=True)))


def test_daily_cap_limits_occurrences_per_rule_per_day():
    views = [page("/about", T0 + timedelta(minutes=i)) for i in range(7)]
    score = score_engagement(views, T0 + timedelta(hours=1), MODEL)
    views_rule = contribution(score, "page_view")
    assert views_rule.occurrences == 5
    assert views_rule.capped == 2
    assert views_rule.points_before_decay == 5
    assert views_rule.message_ids == tuple(v.message_id for v in views[:5])


def test_daily_cap_starts_again_on_the_next_utc_day():
    views = [page("/about", T0 + timedelta(minutes=i)) for i in range(7)]
    views += [page("/about", T0 + timedelta(days=1, minutes=i)) for i in range(3)]
    score = score_engagement(views, T0 + timedelta(days=1, hours=1), MODEL)
    assert contribution(score, "page_view").occurrences == 8


def test_lifetime_cap_limits_occurrences_ever():
    downloads = [
        track("content_download", T0 + timedelta(days=i), asset_type="white_paper")
        for i in range(7)
    ]
    score = score_engagement(downloads, T0 + timedelta(days=7), MODEL)
    rule = contribution(score, "download_white_paper")
    assert (rule.occurrences, rule.capped, rule.points_before_decay) == (5, 2, 100)


def test_points_halve_every_half_life():
    demo = track("demo_request", T0)
    assert score_engagement([demo], T0, MODEL).total == 40
    assert score_engagement([demo], T0 + timedelta(days=30), MODEL).total == pytest.approx(20)
    later = score_engagement([demo], T0 + timedelta(days=60), MODEL)
    assert later.total == pytest.approx(10)
    rule = contribution(later, "demo_request")
    assert rule.points_before_decay == 40
    assert rule.points_after_decay == pytest.approx(10)


def test_half_life_is_configurable_and_can_be_overridden_per_rule():
    model = model_with(engagement__half_life_days=10)
    demo = track("demo_request", T0)
    assert score_engagement([demo], T0 + timedelta(days=10), model).total == pytest.approx(20)
    rules = MODEL.spec.model_dump(mode="json", by_alias=True, exclude_none=True)["engagement"]
    rules = rules["rules"]
    for rule in rules:
        if rule["id"] == "demo_request":
            rule["half_life_days"] = 5
    model = model_with(engagement__rules=rules)
    assert score_engagement([demo], T0 + timedelta(days=10), model).total == pytest.approx(10)


def test_unsubscribe_costs_points_that_do_not_decay():
    score = score_engagement([track("email_unsubscribe", T0)], T0 + timedelta(days=300), MODEL)
    assert score.total == -30


def test_careers_page_visits_lower_the_score():
    score = score_engagement([page("/careers", T0)], T0, MODEL)
    assert contribution(score, "careers_page").points_before_decay == -10
    assert score.total == -10 + 1  # the careers page is also a page view


def test_property_conditions_pick_the_rule():
    events = [
        track("content_download", T0, asset_type="white_paper"),
        track("content_download", T0, asset_type="blog_post"),
        track("content_download", T0, asset_type="unknown_kind"),
    ]
    score = score_engagement(events, T0, MODEL)
    assert {c.rule_id for c in score.contributions} == {
        "download_white_paper",
        "download_blog_post",
    }
    assert score.total == 25


def test_url_path_patterns_match_product_pages_only():
    events = [page("/product/scanner", T0), page("/products/", T0), page("/productivity", T0)]
    score = score_engagement(events, T0, MODEL)
    assert contribution(score, "product_page").message_ids == (
        events[0].message_id,
        events[1].message_id,
    )


def test_events_after_as_of_and_repeated_message_ids_do_not_count():
    demo = track("demo_request", T0)
    later = track("quote_request", T0 + timedelta(days=2))
    score = score_engagement([demo, demo, later], T0 + timedelta(days=1), MODEL)
    assert [c.rule_id for c in score.contributions] == ["demo_request"]
    assert contribution(score, "demo_request").occurrences == 1


def test_score_names_its_model_version_and_as_of():
    score = score_engagement([], T0, MODEL)
    assert (score.total, score.model_version, score.as_of) == (0, "2024.4", T0)


def test_ideal_customer_gets_grade_a_and_lists_its_reasons():
    lead = LeadProfile(
        id=1,
        title="CTO",
        industry="Software",
        employee_count=300,
        country="kr",
        is_target_account=True,
    )
    fit = score_fit(lead, MODEL)
    assert (fit.score, fit.grade) == (100, "A")
    reasons = {c.criterion: (c.value, c.points) for c in fit.contributions}
    assert reasons == {
        "industry": ("software", 25),
        "company_size": ("250-999", 25),
        "title_seniority": ("c_level", 25),
        "country": ("KR", 15),
        "target_account": ("yes", 20),
    }


@pytest.mark.parametrize(
    ("profile", "score", "grade"),
    [
        (dict(title="Director of IT", industry="manufacturing", employee_count=120), 60, "B"),
        (dict(title="Sales Manager", industry="retail", employee_count=20), 27, "C"),
        (dict(title="Graduate student", industry="education", employee_count=5), 5, "D"),
        (
            dict(title="부사장", industry="transportation", employee_count=2000, country="JP"),
            65,
            "B",
        ),
    ],
)
def test_fit_grades_follow_the_thresholds(profile: dict[str, Any], score: float, grade: str):
    fit = score_fit(LeadProfile(id=1, **profile), MODEL)
    assert (fit.score, fit.grade) == (score, grade)


def test_latin_titles_match_whole_words_and_korean_titles_substrings():
    assert not has_term("Director", "cto")
    assert has_term("Chief Technology Officer", "chief")
    assert has_term("Head of Marketing", "head")
    assert has_term("대표이사", "대표")


def test_bant_with_equal_weights_reaches_the_handoff_at_75():
    three = Bant(budget="confirmed", authority="confirmed", need="confirmed")
    q = score_qualification(three, MODEL)
    assert (q.score, q.ready_for_handoff, q.threshold) == (75, True, 75)
    assert [(c.criterion, c.points) for c in q.contributions] == [
        ("budget", 25),
        ("authority", 25),
        ("need", 25),
        ("timeframe", 0),
    ]
    half = Bant(budget="confirmed", authority="likely", need="confirmed", timeframe=0.5)
    assert score_qualification(half, MODEL).score == 75
    short = Bant(budget="confirmed", authority="likely", need="confirmed")
    q = score_qualification(short, MODEL)
    assert (q.score, q.ready_for_handoff) == (62.5, False)


def test_bant_weights_can_favour_budget_need_and_authority():
    model = model_with(
        qualification__weights={"budget": 40, "authority": 20, "need": 30, "timeframe": 10}
    )
    q = score_qualification(Bant(budget="confirmed", need="confirmed"), model)
    assert (q.score, q.ready_for_handoff) == (70, False)
    q = score_qualification(Bant(budget="confirmed", need="confirmed", authority="likely"), model)
    assert (q.score, q.ready_for_handoff) == (80, True)


def test_unknown_bant_level_is_refused_by_name():
    with pytest.raises(ValueError, match=r"bant\.budget: unknown level 'huge'"):
        score_qualification(Bant(budget="huge"), MODEL)


def test_fit_attribute_rules_match_values_and_ranges():
    from leadflow.core.config import AttributeFitRule
    from leadflow.core.scoring import attribute_matches

    revenue = AttributeFitRule(name="annual_revenue", min=1_000_000, points=10)
    assert attribute_matches(revenue, 1_500_000)
    assert not attribute_matches(revenue, 999_999)
    assert not attribute_matches(revenue, "1500000")  # text is not a number
    assert not attribute_matches(revenue, None)
    assert not attribute_matches(revenue, True)
    plan = AttributeFitRule(name="plan", values=["Enterprise"], points=5)
    assert attribute_matches(plan, "enterprise") and not attribute_matches(plan, "Pro")
    flag = AttributeFitRule(name="webinar", values=[True], points=3)
    assert attribute_matches(flag, True) and not attribute_matches(flag, False)
