"""Segment criteria: strict validation with errors naming the path (pure, no database)."""

from __future__ import annotations

import pytest

from leadflow.core.segments import CriteriaError, check_key, glob_to_like, parse_criteria


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"score": {"min": "50"}}, "criteria.score.min: expected a number"),
        ({"fit": {"max": True}}, "criteria.fit.max: expected a number"),
        ({"score": {"min": 80, "max": 10}}, "criteria.score: min must not be greater than max"),
        ({"stage": "mql"}, "criteria.stage: expected a list"),
        ({"stage": ["mql", 3]}, "criteria.stage[1]: expected a string"),
        ({"colour": ["red"]}, "criteria.colour: unknown field"),
        ({"lead": {"consent": ["yes"]}}, "criteria.lead.consent[0]: expected one of"),
        ({"lead": {"has_email": "yes"}}, "criteria.lead.has_email: expected true or false"),
        ({"account": {"employee_count": {"min": "10"}}}, "criteria.account.employee_count.min"),
        ({"account": {"is_target": 1}}, "criteria.account.is_target: expected true or false"),
        ({"event": {"within_days": 14}}, "criteria.event: give at least one of type, name, path"),
        ({"event": {"path": "pricing"}}, "criteria.event: path must start with /"),
        ({"event": {"path": "/p", "within_days": 0}}, "criteria.event.within_days"),
        ({"event": {"name": "x", "min_count": 1.5}}, "criteria.event.min_count"),
        ({"any": [{"score": {"min": "x"}}]}, "criteria.any[0].score.min: expected a number"),
        ({"all": [{}, {"not": {"fit_grade": [1]}}]}, "criteria.all[1].not.fit_grade[0]"),
        ({"attributes": {"plan": []}}, "criteria.attributes.plan: give at least one value"),
        ({"attributes": {"plan": "pro"}}, "criteria.attributes.plan: expected a list"),
        ({"program": {"status": ["active"]}}, "criteria.program.key: required"),
    ],
)
def test_bad_criteria_name_the_path_and_reason(data, message):
    with pytest.raises(CriteriaError) as err:
        parse_criteria(data)
    assert str(err.value).startswith(message), str(err.value)


def test_not_a_mapping():
    with pytest.raises(CriteriaError, match=r"^criteria: expected a mapping$"):
        parse_criteria(["stage"])


@pytest.mark.parametrize(
    "name", ["plan'; DROP TABLE leads; --", 'a"b', "a.b", "$.x", "a\\b", "", "x" * 65]
)
def test_hostile_attribute_names_are_refused(name):
    with pytest.raises(CriteriaError, match=r"criteria\.attributes\."):
        parse_criteria({"attributes": {name: ["x"]}})


def test_nesting_depth_is_bounded():
    data: dict = {"stage": ["mql"]}
    for _ in range(6):
        data = {"any": [data]}
    with pytest.raises(CriteriaError, match="deeper than 5"):
        parse_criteria(data)


def test_valid_criteria_round_trip():
    data = {
        "stage": ["mql"],
        "score": {"min": 50},
        "fit_grade": ["A", "B"],
        "attributes": {"plan": ["pro", 3, True], "지역": ["서울"]},
        "lead": {"consent": ["granted"], "has_email": True},
        "account": {"industry": ["Financial services"], "employee_count": {"min": 100}},
        "event": {"type": "page", "path": "/pricing/*", "within_days": 14},
        "not": {"account": {"is_target": False}},
    }
    parsed = parse_criteria(data)
    dumped = parsed.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert parse_criteria(dumped) == parsed
    assert dumped["not"] == {"account": {"is_target": False}}
    assert [r.path for r in parsed.event_rules()] == ["/pricing/*"]


def test_glob_becomes_an_escaped_like_pattern():
    assert glob_to_like("/Pricing/*") == "/pricing/%"
    assert glob_to_like("/a?c") == "/a_c"
    assert glob_to_like("/100%_off\\") == "/100\\%\\_off\\\\"


def test_keys():
    assert check_key("mql-retarget_1") == "mql-retarget_1"
    for bad in ("", "MQL", "a b", "a'--", "x" * 65, None):
        with pytest.raises(CriteriaError, match=r"^key: "):
            check_key(bad)
