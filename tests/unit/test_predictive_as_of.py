"""Attribute features as of a cut-off, on plain data: title, source, first touch, account
facts, custom fields and the fit and engagement scores see only what was known strictly
before the cut-off; what changed after it (planted here) is not used."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from importlib import resources

import polars as pl
import yaml

from leadflow.core.config import build_model
from leadflow.core.model import Event, LeadProfile
from leadflow.core.predictive_features import (
    ATTRIBUTES,
    FeatureSpec,
    StoredLead,
    attributes_as_of,
    choose_attribute_keys,
    feature_frame,
)
from leadflow.core.scoring import score_engagement, score_fit

T0 = datetime(2025, 1, 1, tzinfo=UTC)
CUT = T0 + timedelta(days=10)
SPEC = FeatureSpec(lead_keys=("budget_band", "imported_col"), account_keys=("segment",))


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def _model():
    text = resources.files("leadflow").joinpath("default.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    data["fit"]["attributes"] = [{"name": "budget_band", "values": ["large"], "points": 30}]
    return build_model(data)


MODEL = _model()


def _before() -> list[Event]:
    return [
        Event(
            message_id="p0", type="page", occurred_at=day(-1), page_url="https://x.example/",
            channel="paid_search", utm_source="google", utm_medium="cpc",
        ),
        Event(
            message_id="i1", type="identify", occurred_at=day(0),
            properties={"email": "kim@acme.example", "consent": "granted",
                        "title": "Data Engineer", "Lead Source": "Webinar",
                        "budget_band": "small", "industry": "Retail", "employees": 40},
        ),
        Event(
            message_id="g1", type="group", occurred_at=day(1),
            properties={"name": "Acme", "country": "kr", "segment": "smb"},
        ),
        Event(message_id="t1", type="track", name="email_click", occurred_at=day(2)),
        Event(message_id="t2", type="track", name="content_download", occurred_at=day(5)),
    ]  # fmt: skip


def _after() -> list[Event]:
    """Planted after the outcome: a promotion, a bigger budget, another industry, a target
    flag, a new custom field value, a quote request."""
    return [
        Event(
            message_id="i2", type="identify", occurred_at=CUT,  # at the cut-off: not before it
            properties={"title": "CEO", "budget_band": "large", "industry": "Software",
                        "employees": 5000, "Lead Source": "Sales"},
        ),
        Event(
            message_id="g2", type="group", occurred_at=day(12),
            properties={"segment": "enterprise", "target_account": True, "country": "US"},
        ),
        Event(message_id="t3", type="track", name="quote_request", occurred_at=day(11)),
        Event(message_id="t4", type="track", name="email_click", occurred_at=day(30)),
    ]  # fmt: skip


# The rows as ingestion leaves them after every event: the latest values, plus an import's
# custom column (no event carries it) and sales' BANT.
STORED_NOW = StoredLead(
    lead_id=7,
    title="CEO",
    source="Webinar",
    attributes={"budget_band": "large", "imported_col": "x", "bant": {"budget": "confirmed"}},
    industry="Retail",
    employee_count=40,
    country="kr",
    is_target=True,
    account_traits={"segment": "enterprise", "target_account": True},
)
STORED_THEN = StoredLead(
    lead_id=7,
    title="Data Engineer",
    source="Webinar",
    attributes={"budget_band": "small", "imported_col": "x"},
    industry="Retail",
    employee_count=40,
    country="kr",
    account_traits={"segment": "smb"},
)


def test_values_are_those_known_before_the_cut_off():
    (row,) = attributes_as_of(STORED_NOW, _before() + _after(), [CUT], MODEL, SPEC)
    assert row["title"] == "Data Engineer" and row["title_seniority"] == "staff"
    assert row["source"] == "Webinar"
    assert (row["first_touch_channel"], row["first_touch_utm_source"]) == ("paid_search", "google")
    assert row["first_touch_utm_medium"] == "cpc"
    assert (row["industry"], row["employee_count"], row["country"]) == ("Retail", 40, "KR")
    assert row["is_target"] == 0.0
    assert row["attributes.budget_band"] == "small"
    assert row["attributes.imported_col"] == "x"  # undated: used as stored
    assert row["account.segment"] == "smb"
    profile = LeadProfile(
        id=7, title="Data Engineer", industry="Retail", employee_count=40, country="kr",
        attributes={"budget_band": "small"},
    )  # fmt: skip
    fit = score_fit(profile, MODEL)
    assert (row["fit"], row["fit_grade"]) == (fit.score, fit.grade)
    assert row["engagement"] == score_engagement(_before(), CUT, MODEL).total > 0
    assert set(ATTRIBUTES) <= set(row)


def test_whatever_happens_after_the_cut_off_changes_nothing():
    """Planted post-outcome changes (events and the rows they rewrote) leave the features
    as they were with the history cut at the outcome."""
    planted = attributes_as_of(STORED_NOW, _before() + _after(), [CUT], MODEL, SPEC)
    history_only = attributes_as_of(STORED_THEN, _before(), [CUT], MODEL, SPEC)
    assert planted == history_only
    # and the planted values are really there later on
    (later,) = attributes_as_of(STORED_NOW, _before() + _after(), [day(40)], MODEL, SPEC)
    assert later["title_seniority"] == "c_level" and later["attributes.budget_band"] == "large"
    assert later["industry"] == "Software" and later["is_target"] == 1.0
    assert later["account.segment"] == "enterprise" and later["source"] == "Sales"
    assert later["fit"] > planted[0]["fit"]


def test_a_target_mark_counts_from_the_time_discovery_set_it():
    marked = replace(STORED_THEN, is_target=True, targeted_at=day(20))
    (before, after) = attributes_as_of(marked, _before(), [CUT, day(21)], MODEL, SPEC)
    assert (before["is_target"], after["is_target"]) == (0.0, 1.0)
    by_hand = replace(STORED_THEN, is_target=True)  # no date: a fact of the account
    assert attributes_as_of(by_hand, _before(), [CUT], MODEL, SPEC)[0]["is_target"] == 1.0


def test_custom_keys_are_chosen_from_the_stored_fields_never_bant_nor_simulator_truth():
    """Never: BANT (given at qualification), the CRM's lead status, simulator truth,
    identifying keys, over-long keys or keys with control characters."""
    leads = [
        StoredLead(
            lead_id=i,
            attributes={"budget_band": "s", "bant": {"b": 1}, "industry": "x",
                        "rare": "y" if i == 0 else None, "nested": {"a": 1},
                        "k" * 65: "long key", "bad\nkey": "control character",
                        "lead_status": "Closed", "full_name": f"Kim {i}"},
            account_traits={"demo_true_intent": 0.4, "segment": "smb", "target_account": True},
        )
        for i in range(200)
    ]  # fmt: skip
    lead_keys, account_keys = choose_attribute_keys(leads, ["fit_only"])
    assert lead_keys == ("fit_only", "budget_band")  # fit rule keys first
    assert account_keys == ("segment",)


def test_events_only_spec_has_no_attribute_columns():
    as_of = pl.DataFrame(
        {"lead_id": [7], "as_of": [CUT]},
        schema={"lead_id": pl.Int64, "as_of": pl.Datetime("us", "UTC")},
    )
    events = pl.DataFrame(
        {"lead_id": [7], "type": ["track"], "name": ["email_click"], "occurred_at": [day(2)],
         "path": [None], "content": [None]},
        schema={"lead_id": pl.Int64, "type": pl.Utf8, "name": pl.Utf8,
                "occurred_at": pl.Datetime("us", "UTC"), "path": pl.Utf8, "content": pl.Utf8},
    )  # fmt: skip
    only = feature_frame(as_of, None, events, FeatureSpec(attributes=False))
    assert not set(ATTRIBUTES) & set(only.columns)
    assert FeatureSpec.from_dict(FeatureSpec(attributes=False).to_dict()).attributes is False
    assert FeatureSpec.from_dict({}).attributes is True  # models stored before: attributes
