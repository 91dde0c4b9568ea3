"""Channel classification: event, then UTM medium, then referrer host, then direct."""

from __future__ import annotations

import pytest

from leadflow.core.channels import CHANNELS, classify_channel


def channel(
    medium: str | None = None,
    source: str | None = None,
    referrer: str | None = None,
    page: str | None = "https://acme.io/pricing",
    event: str | None = None,
) -> str:
    return classify_channel(
        utm_medium=medium, utm_source=source, referrer=referrer, page_url=page, event=event
    )


@pytest.mark.parametrize(
    ("medium", "source", "expected"),
    [
        ("cpc", "google", "paid_search"),
        ("CPC", "naver", "paid_search"),
        ("paid", "linkedin", "social"),
        ("cpc", "facebook.com", "social"),
        ("social", None, "social"),
        ("email", "newsletter", "email"),
        ("Newsletter", None, "email"),
        ("tradeshow", "expo2024", "events"),
        ("webinar", None, "webinar"),
        ("partner", None, "referral"),
        ("organic", "google", "organic_search"),
    ],
)
def test_utm_medium_decides_first(medium: str, source: str | None, expected: str) -> None:
    assert channel(medium, source, referrer="https://news.ycombinator.com/") == expected


@pytest.mark.parametrize(
    ("referrer", "expected"),
    [
        ("https://www.google.com/search?q=crm", "organic_search"),
        ("https://www.google.co.kr/", "organic_search"),
        ("https://search.naver.com/search.naver?query=x", "organic_search"),
        ("https://duckduckgo.com/", "organic_search"),
        ("https://www.linkedin.com/feed/", "social"),
        ("https://t.co/abc", "social"),
        ("https://x.com/someone", "social"),
        ("https://lnkd.in/xyz", "social"),
        ("https://partner-blog.example.org/post", "referral"),
        # Look-alikes are not the platforms they resemble.
        ("https://t.company.com/", "referral"),
        ("https://googleish.net/", "referral"),
        ("https://notx.com/", "referral"),
    ],
)
def test_referrer_host(referrer: str, expected: str) -> None:
    assert channel(referrer=referrer) == expected


def test_self_referral_and_no_referrer_are_direct() -> None:
    assert channel(referrer="https://acme.io/blog/x") == "direct"
    assert channel(referrer="https://www.acme.io/blog/x") == "direct"
    assert channel() == "direct"
    assert channel(referrer="not a url at all") == "direct"
    assert channel(referrer="http://[broken") == "direct"


def test_utm_source_alone_names_a_search_or_social_brand() -> None:
    assert channel(source="google") == "organic_search"
    assert channel(source="linkedin") == "social"
    assert channel(source="some-partner") == "direct"


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ("email_open", "email"),
        ("email_click", "email"),
        ("email_bounce", "email"),
        ("webinar_registered", "webinar"),
        ("event_attended", "events"),
    ],
)
def test_single_channel_events_ignore_utm_tags(event: str, expected: str) -> None:
    assert channel("cpc", "google", event=event) == expected


def test_other_events_fall_back_to_tags() -> None:
    assert channel("cpc", "google", event="demo_request") == "paid_search"


def test_result_is_always_a_known_channel() -> None:
    for medium in (None, "", "weird", "cpc", "email"):
        for referrer in (None, "", "https://a.b/", "https://www.bing.com/"):
            assert channel(medium, referrer=referrer) in CHANNELS
