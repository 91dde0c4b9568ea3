"""Which marketing channel a touch came through, from its UTM tags and referrer.

The channels are the ones the demo world and the reports use: organic_search, paid_search,
social, email, events, webinar, referral, direct. The rules follow the common
"default channel grouping" of web analytics tools: explicit UTM medium first, then the
referring host, then direct.
"""

from __future__ import annotations

from urllib.parse import urlsplit

CHANNELS = (
    "organic_search",
    "paid_search",
    "social",
    "email",
    "events",
    "webinar",
    "referral",
    "direct",
)

SEARCH_HOSTS = ("google.", "bing.", "naver.", "daum.", "yahoo.", "duckduckgo.", "baidu.")
SOCIAL_HOSTS = (
    "linkedin.",
    "facebook.",
    "twitter.",
    "x.com",
    "t.co",
    "instagram.",
    "youtube.",
    "lnkd.in",
)
PAID_MEDIUMS = {"cpc", "ppc", "paid", "paidsearch", "paid_search", "sem", "display", "cpm"}
SOCIAL_MEDIUMS = {"social", "social-media", "social_media", "sns", "paid_social", "paidsocial"}
EMAIL_MEDIUMS = {"email", "e-mail", "newsletter", "mail"}
EVENT_MEDIUMS = {"event", "events", "tradeshow", "trade_show", "trade-show", "booth", "offline"}
WEBINAR_MEDIUMS = {"webinar", "seminar", "online_seminar"}
REFERRAL_MEDIUMS = {"referral", "partner", "affiliate"}


def _host(url: str | None) -> str:
    if not url:
        return ""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def _host_matches(host: str, patterns: tuple[str, ...]) -> bool:
    return any(host.startswith(p) or f".{p}" in host or host == p for p in patterns)


def classify_channel(
    *,
    utm_medium: str | None,
    utm_source: str | None,
    referrer: str | None,
    page_url: str | None = None,
) -> str:
    """Return one of :data:`CHANNELS` for a touch. ``page_url`` is used only to ignore
    self-referrals (a referrer on the same host as the page counts as direct)."""
    medium = (utm_medium or "").strip().lower()
    source = (utm_source or "").strip().lower()
    if medium:
        if medium in PAID_MEDIUMS:
            return "paid_search" if not _host_matches(source, SOCIAL_HOSTS) else "social"
        if medium in SOCIAL_MEDIUMS:
            return "social"
        if medium in EMAIL_MEDIUMS:
            return "email"
        if medium in EVENT_MEDIUMS:
            return "events"
        if medium in WEBINAR_MEDIUMS:
            return "webinar"
        if medium in REFERRAL_MEDIUMS:
            return "referral"
        if medium == "organic":
            return "organic_search"
    ref_host = _host(referrer)
    if ref_host and ref_host != _host(page_url):
        if _host_matches(ref_host, SEARCH_HOSTS):
            return "organic_search"
        if _host_matches(ref_host, SOCIAL_HOSTS):
            return "social"
        return "referral"
    if source and _host_matches(source, SEARCH_HOSTS):
        return "organic_search"
    return "direct"
