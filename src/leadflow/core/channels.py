"""Which marketing channel a touch came through, from its UTM tags and referrer.

The built-in channels are the ones the demo world and the reports use: organic_search,
paid_search, social, email, events, webinar, referral, direct. The rules follow the common
"default channel grouping" of web analytics tools: the event itself when it can only
happen in one channel (an ``email_open`` is e-mail), then explicit UTM medium, then the
referring host, then direct.

A company's own channels are a :class:`ChannelTaxonomy`: channels in order, each with match
rules on ``utm_source``, ``utm_medium``, referrer host and event name. The first channel one
of whose rules matches wins; a touch no custom channel matches falls back to the built-in
grouping above.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
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
# Track events that happen in one channel only, whatever the UTM tags say.
EVENT_CHANNELS = {
    "email_sent": "email",
    "email_open": "email",
    "email_click": "email",
    "email_unsubscribe": "email",
    "email_bounce": "email",
    "webinar_registered": "webinar",
    "webinar_attended": "webinar",
    "event_attended": "events",
}


def _host(url: str | None) -> str:
    if not url:
        return ""
    try:
        return (urlsplit(url).hostname or "").lower().removeprefix("www.")
    except ValueError:
        return ""


def _host_matches(host: str, patterns: tuple[str, ...]) -> bool:
    """``google.`` matches a ``google`` label anywhere but last (www.google.co.kr);
    ``x.com`` matches that domain and its subdomains, never a longer name (t.company.com)."""
    labels = host.split(".")
    for pattern in patterns:
        if pattern.endswith("."):
            if pattern[:-1] in labels[:-1]:
                return True
        elif host == pattern or host.endswith("." + pattern):
            return True
    return False


def _source_matches(source: str, patterns: tuple[str, ...]) -> bool:
    """A ``utm_source`` is a brand (``google``, ``linkedin``) or a host (``t.co``)."""
    brands = {p.rstrip(".").split(".")[0] for p in patterns}
    return source in brands or _host_matches(source, patterns)


def classify_channel(
    *,
    utm_medium: str | None,
    utm_source: str | None,
    referrer: str | None,
    page_url: str | None = None,
    event: str | None = None,
) -> str:
    """Return one of :data:`CHANNELS` for a touch. ``page_url`` is used only to ignore
    self-referrals (a referrer on the same host as the page counts as direct); ``event``
    is a track event's name."""
    if event is not None and event in EVENT_CHANNELS:
        return EVENT_CHANNELS[event]
    medium = (utm_medium or "").strip().lower()
    source = (utm_source or "").strip().lower()
    if medium:
        if medium in PAID_MEDIUMS:
            return "social" if _source_matches(source, SOCIAL_HOSTS) else "paid_search"
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
    if source and _source_matches(source, SEARCH_HOSTS):
        return "organic_search"
    if source and _source_matches(source, SOCIAL_HOSTS):
        return "social"
    return "direct"


# --------------------------------------------------------------------------- custom taxonomy


@dataclass(frozen=True)
class ChannelRule:
    """Every key given must match (AND); a key's values are alternatives (OR). ``utm_source``,
    ``utm_medium`` and ``event`` are case-insensitive globs (``paid_*``); ``referrer`` holds
    host patterns as in the built-in grouping (``partner.com`` matches it and its subdomains,
    ``google.`` a ``google`` label) or globs (``*.partner.*``). A missing value never
    matches; a referrer from the page's own host (a self-referral) is no referrer."""

    utm_source: tuple[str, ...] | None = None
    utm_medium: tuple[str, ...] | None = None
    referrer: tuple[str, ...] | None = None
    event: tuple[str, ...] | None = None

    def matches(self, *, utm_source: str, utm_medium: str, referrer_host: str, event: str) -> bool:
        checks = (
            (self.utm_source, utm_source),
            (self.utm_medium, utm_medium),
            (self.event, event),
        )
        for patterns, value in checks:
            if patterns is not None and not (
                value and any(fnmatchcase(value, p.lower()) for p in patterns)
            ):
                return False
        if self.referrer is not None:
            if not referrer_host:
                return False
            globs = tuple(p.lower() for p in self.referrer if "*" in p or "?" in p)
            hosts = tuple(p.lower() for p in self.referrer if p not in globs)
            if not (
                _host_matches(referrer_host, hosts)
                or any(fnmatchcase(referrer_host, g) for g in globs)
            ):
                return False
        return True


@dataclass(frozen=True)
class CustomChannel:
    name: str
    rules: tuple[ChannelRule, ...]


@dataclass(frozen=True)
class ChannelTaxonomy:
    """A company's channels in order; empty = the built-in grouping alone."""

    channels: tuple[CustomChannel, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """Every channel a touch can get: the custom ones, then the built-in ones."""
        own = tuple(c.name for c in self.channels)
        return own + tuple(c for c in CHANNELS if c not in own)

    def match(
        self,
        *,
        utm_source: str | None,
        utm_medium: str | None,
        referrer_host: str | None,
        page_host: str | None = None,
        event: str | None = None,
    ) -> str | None:
        """The first custom channel matching the touch, or None (hosts already lower-case,
        without ``www.``)."""
        ref = (referrer_host or "").strip().lower().removeprefix("www.")
        if ref and ref == (page_host or "").strip().lower().removeprefix("www."):
            ref = ""
        fields = {
            "utm_source": (utm_source or "").strip().lower(),
            "utm_medium": (utm_medium or "").strip().lower(),
            "referrer_host": ref,
            "event": (event or "").strip().lower(),
        }
        for channel in self.channels:
            if any(rule.matches(**fields) for rule in channel.rules):
                return channel.name
        return None

    def classify(
        self,
        *,
        utm_medium: str | None,
        utm_source: str | None,
        referrer: str | None,
        page_url: str | None = None,
        event: str | None = None,
    ) -> str:
        """A custom channel when one matches, else the built-in :func:`classify_channel`."""
        own = self.match(
            utm_source=utm_source,
            utm_medium=utm_medium,
            referrer_host=_host(referrer),
            page_host=_host(page_url),
            event=event,
        )
        if own is not None:
            return own
        return classify_channel(
            utm_medium=utm_medium,
            utm_source=utm_source,
            referrer=referrer,
            page_url=page_url,
            event=event,
        )


DEFAULT_TAXONOMY = ChannelTaxonomy()
