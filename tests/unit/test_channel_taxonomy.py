"""A company's own channel taxonomy: the pure core rules and the model's ``channels:``."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from leadflow.core.channels import (
    CHANNELS,
    DEFAULT_TAXONOMY,
    ChannelRule,
    ChannelTaxonomy,
    CustomChannel,
    classify_channel,
)
from leadflow.core.config import ModelConfigError, load_model
from leadflow.core.config.channels import taxonomy

DEFAULT_TEXT = (
    Path(__file__).resolve().parents[2] / "src" / "leadflow" / "default.yaml"
).read_text(encoding="utf-8")

OWN = ChannelTaxonomy(
    (
        CustomChannel(
            "partner_webinar",
            (
                ChannelRule(utm_source=("partnerco",), utm_medium=("webinar",)),
                ChannelRule(referrer=("partnerco.com",)),
            ),
        ),
        CustomChannel(
            "paid_social",
            (ChannelRule(utm_medium=("cpc", "paid_*"), utm_source=("linkedin", "facebook")),),
        ),
        CustomChannel("g2", (ChannelRule(referrer=("g2.*",)),)),
        CustomChannel("demo_day", (ChannelRule(event=("demo_day_*",)),)),
    )
)


def classify(**kw: Any) -> str:
    base = {
        "utm_medium": None,
        "utm_source": None,
        "referrer": None,
        "page_url": "https://acme.io/",
    }
    return OWN.classify(**(base | kw))


def test_rules_and_within_a_match_or_across_matches_first_channel_wins() -> None:
    assert classify(utm_source="PartnerCo", utm_medium="Webinar") == "partner_webinar"
    # one key alone of an AND rule does not match: built-in grouping
    assert classify(utm_medium="webinar") == "webinar"
    assert classify(referrer="https://blog.partnerco.com/post") == "partner_webinar"
    assert classify(utm_medium="paid_social", utm_source="linkedin") == "paid_social"
    assert classify(utm_medium="cpc", utm_source="google") == "paid_search"  # fallback
    assert classify(referrer="https://www.g2.com/products/x") == "g2"
    assert classify(event="demo_day_signup") == "demo_day"
    assert classify() == "direct"


def test_a_self_referral_is_no_referrer() -> None:
    assert classify(referrer="https://partnerco.com/a", page_url="https://partnerco.com/b") == (
        "direct"
    )


def test_a_longer_host_does_not_match_a_domain_pattern() -> None:
    assert classify(referrer="https://notpartnerco.com/") == "referral"


def test_the_default_taxonomy_is_the_built_in_grouping() -> None:
    cases = [
        {"utm_medium": "cpc", "utm_source": "google"},
        {"referrer": "https://www.linkedin.com/feed"},
        {"event": "email_open"},
        {},
    ]
    for kw in cases:
        full = {"utm_medium": None, "utm_source": None, "referrer": None, "page_url": None} | kw
        assert DEFAULT_TAXONOMY.classify(**full) == classify_channel(**full)
    assert DEFAULT_TAXONOMY.names == CHANNELS
    assert OWN.names[:4] == ("partner_webinar", "paid_social", "g2", "demo_day")


def model_with(channels: Any) -> dict[str, Any]:
    data = copy.deepcopy(yaml.safe_load(DEFAULT_TEXT))
    data["channels"] = channels
    return data


def refusal(channels: Any) -> str:
    with pytest.raises(ModelConfigError) as err:
        load_model(yaml.safe_dump(model_with(channels)))
    return str(err.value)


def test_model_channels_section_loads_into_the_taxonomy() -> None:
    model = load_model(
        yaml.safe_dump(
            model_with(
                [
                    {"name": "partner_webinar", "match": [{"utm_source": "partnerco"}]},
                    {"name": "g2", "match": [{"referrer": ["g2.com"], "event": ["page_view"]}]},
                ]
            )
        )
    )
    tax = taxonomy(model.spec.channels)
    assert [c.name for c in tax.channels] == ["partner_webinar", "g2"]
    assert tax.channels[1].rules[0] == ChannelRule(referrer=("g2.com",), event=("page_view",))
    assert taxonomy(load_model(DEFAULT_TEXT).spec.channels) == DEFAULT_TAXONOMY


@pytest.mark.parametrize(
    ("channels", "path"),
    [
        ([{"name": "Bad Name!", "match": [{"utm_source": "x"}]}], "channels[0].name"),
        ([{"name": "x" * 33, "match": [{"utm_source": "x"}]}], "channels[0].name"),
        ([{"name": "ok", "match": []}], "channels[0].match"),
        ([{"name": "ok", "match": [{}]}], "channels[0].match[0]"),
        ([{"name": "ok", "match": [{"utm_source": []}]}], "channels[0].match[0]"),
        ([{"name": "ok", "match": [{"utm_campaign": "x"}]}], "channels[0].match[0].utm_campaign"),
        ([{"name": "ok", "match": [{"utm_source": 5}]}], "channels[0].match[0].utm_source"),
        (
            [{"name": "a", "match": [{"event": "e"}]}, {"name": "a", "match": [{"event": "f"}]}],
            "channels",
        ),
        ({"name": "a"}, "channels"),
    ],
)
def test_bad_channels_are_refused_naming_the_field(channels: Any, path: str) -> None:
    message = refusal(channels)
    assert message.startswith(path), message
