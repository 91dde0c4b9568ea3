"""Every key of a stage condition means the same to the stage machine and the backtest.

The keys are walked from the pydantic models (``Condition`` and the models nested in it),
so a new key is picked up here without editing this file - and fails until it has an entry
in ``leadflow.core.conditions`` and a witness below (a value, a lead for which it holds and
one for which it does not). For each key, a model whose only criterion is that key is run
through ``lifecycle.replay`` and ``backtest.evaluate``: both must move the lead when the key
holds and leave it when it does not, so neither can ignore the key.
"""

from __future__ import annotations

import copy
import types
import typing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from leadflow.core import backtest as bt
from leadflow.core import conditions
from leadflow.core import lifecycle as lc
from leadflow.core.config import Condition, LeadModel, build_model, load_default_model
from leadflow.core.model import Event, LeadProfile

MODEL = load_default_model()
T0 = datetime(2024, 3, 4, 9, tzinfo=UTC)
INITIAL = MODEL.initial_stage
TARGET = MODEL.spec.lifecycle.main_path[1]


# --------------------------------------------------------------------------- walking the models


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (``EventMatch | None`` -> ``EventMatch``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _nested_model(arg)
            if found is not None:
                return found
    return None


def leaf_paths(model: type[BaseModel] = Condition, prefix: str = "") -> list[str]:
    paths: list[str] = []
    for name, info in model.model_fields.items():
        nested = _nested_model(info.annotation)
        if nested is None:
            paths.append(prefix + name)
        else:
            paths += leaf_paths(nested, f"{prefix}{name}.")
    return paths


def condition_of(path: str, value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(path.split(".")):
        out = {part: out}
    return out


def registry_entry(path: str) -> Any:
    top, _, rest = path.partition(".")
    if top == "event":
        return conditions.EVENT_FIELDS[rest]
    if top == "profile":
        return conditions.PROFILE_FIELDS[rest]
    return conditions.CONDITION_FIELDS[top]


def vectorised(path: str) -> bool:
    entry = registry_entry(path)
    return not isinstance(entry, conditions.ProfileField) or entry.vector is not None


# --------------------------------------------------------------------------- witnesses


@dataclass(frozen=True)
class Lead:
    """A lead's base profile and the one event after which its stage is read."""

    profile: dict[str, Any] = field(default_factory=dict)
    event: dict[str, Any] = field(default_factory=lambda: {"type": "track", "name": "ping"})


@dataclass(frozen=True)
class Witness:
    value: Any
    holds: Lead
    fails: Lead


def _track(**kw: Any) -> dict[str, Any]:
    return {"type": "track", "name": "ping", **kw}


FIT_A = {
    "industry": "software",
    "employee_count": 500,
    "title": "CTO",
    "country": "KR",
    "is_target_account": True,
}

WITNESSES: dict[str, Witness] = {
    "event.type": Witness(
        ["track"], Lead(event=_track()), Lead(event={"type": "page", "page_url": "https://a.io/x"})
    ),
    "event.name": Witness(
        ["demo_request"], Lead(event=_track(name="demo_request")), Lead(event=_track())
    ),
    "event.path": Witness(
        ["/product/*"],
        Lead(event={"type": "page", "page_url": "https://a.io/Product/scanner/"}),
        Lead(event={"type": "page", "page_url": "https://a.io/blog/product"}),
    ),
    "event.properties": Witness(
        {"asset_type": ["pricing"]},
        Lead(event=_track(properties={"asset_type": "Pricing"})),
        Lead(event=_track(properties={"asset_type": "white_paper"})),
    ),
    "event.channel": Witness(
        ["email"], Lead(event=_track(channel="email")), Lead(event=_track(channel="web"))
    ),
    "event.utm_source": Witness(
        ["newsletter"],
        Lead(event=_track(utm_source="newsletter")),
        Lead(event=_track(utm_source="google")),
    ),
    "event.utm_medium": Witness(
        ["email"], Lead(event=_track(utm_medium="email")), Lead(event=_track(utm_medium="cpc"))
    ),
    "event.utm_campaign": Witness(
        ["spring"], Lead(event=_track(utm_campaign="spring")), Lead(event=_track())
    ),
    # a pricing page scores page_view + pricing_page (11 points); a ping scores nothing
    "score": Witness(
        5.0,
        Lead(event={"type": "page", "page_url": "https://a.io/pricing"}),
        Lead(event=_track()),
    ),
    "profile.has_contact": Witness(True, Lead(profile={"phone": "010-1234-5678"}), Lead()),
    "profile.consent": Witness(
        ["granted"], Lead(profile={"consent": "granted"}), Lead(profile={"consent": "denied"})
    ),
    "profile.is_target_account": Witness(
        True, Lead(profile={"is_target_account": True}), Lead(profile={"is_target_account": False})
    ),
    "profile.fit_grade": Witness(["A"], Lead(profile=FIT_A), Lead(profile={"title": "CTO"})),
    "profile.predicted_at_least": Witness(
        0.5, Lead(profile={"predicted": 0.8}), Lead(profile={"predicted": 0.2})
    ),
}


# --------------------------------------------------------------------------- running both


def model_with(criteria: list[dict[str, Any]]) -> LeadModel:
    """The default model with every automatic rule removed but ``criteria`` for entering
    the first stage after the initial one."""
    data = copy.deepcopy(MODEL.spec.model_dump(mode="json", by_alias=True, exclude_none=True))
    data["fastpass"] = []
    data["dead_end"]["rules"] = []
    for stage in data["stages"].values():
        stage["enter_when"] = []
    data["stages"][TARGET]["enter_when"] = criteria
    return build_model(data)


def make_event(lead_id: int, i: int, fields: dict[str, Any], at: datetime) -> Event:
    return Event(message_id=f"L{lead_id}-{i:03d}", lead_id=lead_id, occurred_at=at, **fields)


def both_stages(
    model: LeadModel, leads: dict[int, tuple[LeadProfile, list[Event]]], as_of: datetime
) -> tuple[dict[int, str], dict[int, str], bt.Backtest]:
    core = {
        i: lc.replay(profile, events, model, as_of=as_of).stage
        for i, (profile, events) in leads.items()
    }
    events = [e for _, evs in leads.values() for e in evs]
    table = bt.events_frame(events, bt.referenced_properties(model))
    profiles = bt.profiles_frame(p for p, _ in leads.values())
    result = bt.evaluate(model, table, profiles, as_of=as_of)
    leads_df = result.leads
    vector = dict(zip(leads_df["lead_id"].to_list(), leads_df["stage"].to_list(), strict=True))
    return core, vector, result


# --------------------------------------------------------------------------- the walk


def test_every_condition_key_has_a_registry_entry_and_a_witness():
    conditions.check_registry()
    paths = leaf_paths()
    assert {"event.type", "score", "profile.consent"} <= set(paths)  # the walk walks
    for path in paths:
        registry_entry(path)  # KeyError: the key has no entry in leadflow.core.conditions
    assert sorted(WITNESSES) == sorted(paths), "give every condition key a witness here"


@pytest.mark.parametrize("path", leaf_paths())
def test_stage_machine_and_backtest_both_read_the_key(path: str):
    witness = WITNESSES[path]
    model = model_with([condition_of(path, witness.value)])
    leads = {}
    for lead_id, lead in ((1, witness.holds), (2, witness.fails)):
        profile = LeadProfile(id=lead_id, **lead.profile)
        leads[lead_id] = (profile, [make_event(lead_id, 0, lead.event, T0)])
    core, vector, result = both_stages(model, leads, T0 + timedelta(hours=1))
    assert core == {1: TARGET, 2: INITIAL}, f"stage machine ignores or misreads {path}"
    assert vector == {1: TARGET, 2: INITIAL}, f"backtest ignores or misreads {path}"
    fallback = result.leads["fallback"].to_list()
    if vectorised(path):
        assert fallback == [False, False], (path, result.fallback_reasons)
    else:
        assert registry_entry(path).fallback in result.fallback_reasons
        assert fallback == [True, True]


def test_a_condition_key_without_an_entry_fails_loudly():
    class Wider(Condition):
        newly_added: bool | None = None

    with pytest.raises(TypeError, match="newly_added"):
        conditions._check_complete(Wider, conditions.CONDITION_FIELDS, "CONDITION_FIELDS")


def test_a_key_without_a_vectorised_form_is_never_read_as_true():
    class NoColumns:
        def row_count(self) -> int:
            return 3  # nothing else: the key must raise before reading any column

    rows = NoColumns()
    want = Condition.model_validate({"profile": {"fit_grade": ["A"]}})
    with pytest.raises(ValueError, match="fit_grade"):
        conditions.rows_holding(want, rows)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- random conditions

EVENT_POOL = [
    _track(),
    _track(name="demo_request"),
    _track(name="demo_request", channel="email", utm_source="newsletter"),
    _track(name="content_download", properties={"asset_type": "Pricing"}),
    _track(name="content_download", properties={"asset_type": "white_paper"}),
    _track(utm_medium="email", utm_campaign="spring"),
    {"type": "page", "page_url": "https://a.io/pricing"},
    {"type": "page", "page_url": "https://a.io/product/scanner", "channel": "web"},
    {"type": "page", "page_url": "https://a.io/blog/a"},
    {"type": "identify", "properties": {"email": "lee@acme.io", "consent": "granted"}},
    {"type": "identify", "properties": {"phone": "010-1111-2222"}},
    {"type": "group", "properties": {"is_target": True, "industry": "software"}},
    _track(name="email_unsubscribe"),
]
VALUES: dict[str, list[Any]] = {
    "event.type": [["track"], ["page"], ["track", "identify"]],
    "event.name": [["demo_request"], ["content_download", "ping"]],
    "event.path": [["/product/*"], ["/pricing", "/blog/*"]],
    "event.properties": [{"asset_type": ["pricing"]}, {"asset_type": ["white_paper", "x"]}],
    "event.channel": [["email"], ["web"]],
    "event.utm_source": [["newsletter"]],
    "event.utm_medium": [["email"]],
    "event.utm_campaign": [["spring"]],
    "score": [1.0, 5.0, 12.0, 20.0],
    "profile.has_contact": [True, False],
    "profile.consent": [["granted"], ["unknown", "denied"]],
    "profile.is_target_account": [True, False],
    "profile.fit_grade": [["A"], ["C", "D"]],
    "profile.predicted_at_least": [0.3, 0.7],
}
PROFILE_POOL = [
    {},
    {"consent": "granted", "email": "kim@acme.co.kr"},
    {"consent": "denied", "predicted": 0.5},
    {**FIT_A, "predicted": 0.9},
]


def _merge(into: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    for part in parts[:-1]:
        into = into.setdefault(part, {})
    into[parts[-1]] = value


@st.composite
def criteria(draw: st.DrawFn) -> list[dict[str, Any]]:
    out = []
    for _ in range(draw(st.integers(min_value=1, max_value=2))):
        keys = draw(st.lists(st.sampled_from(sorted(VALUES)), min_size=1, max_size=3, unique=True))
        cond: dict[str, Any] = {}
        for key in keys:
            _merge(cond, key, draw(st.sampled_from(VALUES[key])))
        out.append(cond)
    return out


@st.composite
def histories(draw: st.DrawFn) -> dict[int, tuple[LeadProfile, list[Event]]]:
    leads = {}
    for lead_id in range(1, draw(st.integers(min_value=1, max_value=3)) + 1):
        profile = LeadProfile(id=lead_id, **draw(st.sampled_from(PROFILE_POOL)))
        picks = draw(
            st.lists(
                st.tuples(st.sampled_from(EVENT_POOL), st.integers(0, 24 * 20)),
                min_size=1,
                max_size=8,
            )
        )
        events = [
            make_event(lead_id, i, fields, T0 + timedelta(hours=h))
            for i, (fields, h) in enumerate(picks)
        ]
        leads[lead_id] = (profile, events)
    return leads


def test_the_random_conditions_cover_every_key():
    assert sorted(VALUES) == sorted(leaf_paths())


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chosen=criteria(), leads=histories())
def test_random_conditions_give_the_same_stages_in_both_evaluators(
    chosen: list[dict[str, Any]], leads: dict[int, tuple[LeadProfile, list[Event]]]
):
    model = model_with(chosen)
    core, vector, _ = both_stages(model, leads, T0 + timedelta(days=30))
    assert vector == core
