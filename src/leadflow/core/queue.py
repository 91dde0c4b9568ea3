"""A rep's day in the sales queue: which lead to work first and why, each hand-off's SLA
timer, whether a rep may claim a waiting lead, dated and de-duplicated highlights, and what
a qualify changed.

Pure: plain data in, decisions with reasons out; time is always a parameter. Reasons are
``(key, values)`` pairs the dashboard words in the reader's language
(``queue.why.<key>``, ``queue.claim.<key>``, ``queue.hl.<verb>``).

- :func:`rank` orders open hand-offs and waiting leads: an SLA already missed first, then
  one about to be missed, then recent high-intent activity (a demo, quote or contact
  request), then new hand-offs not yet accepted, then the stage (a hand-off before an open
  deal), then the score (:func:`leadflow.core.routing.priority`: engagement × fit × BANT).
- :func:`sla_timer` says how long a hand-off has left (working hours, the model's
  ``sales`` calendar), or for how long it is overdue; a waiting lead's timer is the time it
  has waited against the same SLA.
- :func:`decide_claim` decides whether a rep may take a waiting lead (capacity, the
  account's owner, an SLA re-route away from the rep, an inactive rep, already taken).
- :func:`highlights` folds a lead's events into "downloaded 'Price list' · 3×, last Tue".
- :func:`qualify_outcome` says which BANT fields changed, the score against the hand-off
  threshold and which fields would reach it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal

from leadflow.core.routing import WorkCalendar, priority

BANT_FIELDS = ("budget", "authority", "need", "timeframe")

HIGH_INTENT = ("demo_request", "quote_request", "contact_request", "catalogue_request")
"""Events that mean "call me": a recent one moves the lead up the queue."""

INTENT_WINDOW = timedelta(days=7)
DUE_SOON_SHARE = 0.25
"""A hand-off with less than this share of its SLA left is "due soon"."""

# Points of each priority component (a missed SLA always outranks everything else).
P_OVERDUE = 10_000.0
P_WAITING_LONG = 8_000.0
P_DUE_SOON = 6_000.0
P_INTENT = 3_000.0
P_NEW = 1_500.0
P_WAITING = 1_000.0
SCORE_CAP = 999.0

STAGE_POINTS = {"handoff": 300.0, "sales_accepted": 200.0, "opportunity": 100.0}
"""A lead in the hand-off stage needs first contact before a deal already open."""

SlaState = Literal["on_time", "due_soon", "overdue", "waiting", "waiting_long", "met"]


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a lead ranks where it does (or why a claim is refused), to be put in words."""

    key: str
    values: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueItem:
    """One card of the queue: an open hand-off (``routed``, ``accepted``, ``escalated``)
    or a lead waiting for a rep (``waiting``)."""

    lead_id: int
    status: str
    stage_role: str | None = None
    engagement: float = 0.0
    fit: float = 0.0
    qualification: float | None = None
    rep_key: str | None = None
    queued_at: datetime | None = None
    assigned_at: datetime | None = None
    due_at: datetime | None = None
    last_intent: tuple[str, datetime] | None = None
    """The newest high-intent event: (name, when)."""


@dataclass(frozen=True, slots=True)
class Sla:
    state: SlaState
    hours: float
    """Working hours left (on time, due soon), overdue by (overdue), or waited (waiting)."""
    due_at: datetime | None = None

    @property
    def overdue(self) -> bool:
        return self.state in ("overdue", "waiting_long")


@dataclass(frozen=True, slots=True)
class Ranked:
    item: QueueItem
    priority: float
    reasons: tuple[Reason, ...]
    sla: Sla

    @property
    def overdue(self) -> bool:
        return self.sla.overdue


@lru_cache(maxsize=4096)
def _window(calendar: WorkCalendar, day: date) -> tuple[datetime, datetime] | None:
    """The UTC working window of a local day (None on a day off), cached: ranking a long
    queue asks for the same few days thousands of times."""
    if not calendar.is_working_day(day):
        return None
    return calendar._window(day)


def working_hours(calendar: WorkCalendar, start: datetime, end: datetime) -> float:
    """:meth:`WorkCalendar.working_hours_between`, with the day windows cached."""
    if end <= start:
        return 0.0
    total = timedelta()
    day = calendar.local_day(start)
    last = calendar.local_day(end)
    while day <= last:
        window = _window(calendar, day)
        if window is not None:
            lo, hi = max(window[0], start), min(window[1], end)
            if hi > lo:
                total += hi - lo
        day += timedelta(days=1)
    return total.total_seconds() / 3600


def sla_timer(item: QueueItem, now: datetime, calendar: WorkCalendar, sla_hours: float) -> Sla:
    """The hand-off's SLA clock: accepted ones have met it; routed and escalated ones have
    ``due_at``; a waiting lead has waited ``hours`` of the SLA since it was queued."""
    if item.status == "accepted":
        return Sla("met", 0.0)
    if item.status == "waiting":
        since = item.queued_at or now
        waited = round(working_hours(calendar, since, now), 2)
        return Sla("waiting_long" if waited >= sla_hours else "waiting", waited)
    if item.due_at is None:
        return Sla("met", 0.0)
    if item.due_at <= now:
        over = round(working_hours(calendar, item.due_at, now), 2)
        return Sla("overdue", over, item.due_at)
    left = round(working_hours(calendar, now, item.due_at), 2)
    state: SlaState = "due_soon" if left < sla_hours * DUE_SOON_SHARE else "on_time"
    return Sla(state, left, item.due_at)


def rank(
    items: Iterable[QueueItem],
    now: datetime,
    *,
    calendar: WorkCalendar,
    sla_hours: float,
    top_reasons: int = 3,
) -> list[Ranked]:
    """The queue in the order to work it, each lead with its priority and the reasons
    (largest first). Ties: the earlier deadline (or the longer wait), then the lead id."""
    ranked = [_rank_one(item, now, calendar, sla_hours, top_reasons) for item in items]
    ranked.sort(key=lambda r: (-r.priority, _tie_time(r.item, now), r.item.lead_id))
    return ranked


def _tie_time(item: QueueItem, now: datetime) -> datetime:
    return item.due_at or item.queued_at or item.assigned_at or now


def _rank_one(
    item: QueueItem, now: datetime, calendar: WorkCalendar, sla_hours: float, top: int
) -> Ranked:
    sla = sla_timer(item, now, calendar, sla_hours)
    parts: list[tuple[float, Reason]] = []
    hours = _hours(sla.hours)
    if sla.state == "overdue":
        parts.append((P_OVERDUE + min(sla.hours, 500.0), Reason("overdue", {"hours": hours})))
    elif sla.state == "waiting_long":
        parts.append(
            (P_WAITING_LONG + min(sla.hours, 500.0), Reason("waiting_long", {"hours": hours}))
        )
    elif sla.state == "due_soon":
        parts.append((P_DUE_SOON - sla.hours, Reason("due_soon", {"hours": hours})))
    elif sla.state == "waiting":
        share = sla.hours / sla_hours if sla_hours else 0.0
        parts.append(
            (P_WAITING * share, Reason("waiting", {"hours": hours, "sla": _hours(sla_hours)}))
        )
    if item.last_intent is not None:
        name, at = item.last_intent
        age = now - at
        if timedelta(0) <= age <= INTENT_WINDOW:
            fresh = 1.0 - age / INTENT_WINDOW
            days = age.days
            parts.append(
                (P_INTENT * (0.5 + fresh / 2), Reason("intent", {"event": name, "days": days}))
            )
    if item.status == "escalated":
        parts.append((P_NEW, Reason("escalated")))
    elif item.status == "routed":
        parts.append((P_NEW, Reason("new")))
    stage_points = STAGE_POINTS.get(item.stage_role or "", 0.0)
    if stage_points:
        parts.append((stage_points, Reason(f"stage_{item.stage_role}")))
    score = min(priority(item.engagement, item.fit, item.qualification), SCORE_CAP)
    parts.append(
        (
            score,
            Reason(
                "score",
                {"engagement": round(item.engagement), "fit": round(item.fit)},
            ),
        )
    )
    total = round(sum(p for p, _ in parts), 6)
    reasons = tuple(r for _, r in sorted(parts, key=lambda p: -p[0])[:top])
    return Ranked(item, total, reasons, sla)


def _hours(value: float) -> float:
    """Hours for people: one decimal under 10, whole hours above."""
    return round(value, 1) if value < 10 else float(round(value))


# --------------------------------------------------------------------------- claims


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimCheck:
    """What a claim (or an admin's assignment) needs to know about the rep and the lead."""

    rep_key: str
    rep_known: bool
    rep_active: bool
    capacity: int
    today: int
    """Hand-offs the rep already got on the local day (routed, claimed, assigned)."""
    waiting: bool
    """The lead is in the waiting pool (not taken by anyone)."""
    holder: str | None = None
    """The rep holding the lead's open hand-off, when it is taken."""
    account_owner: str | None = None
    owner_active: bool = False
    excluded: frozenset[str] = frozenset()
    """Reps an SLA breach took the lead away from."""


@dataclass(frozen=True, slots=True)
class ClaimDecision:
    ok: bool
    reason: Reason

    @property
    def key(self) -> str:
        return self.reason.key


def decide_claim(check: ClaimCheck, *, by_admin: bool = False) -> ClaimDecision:
    """May the rep take the lead? A rep claims only from the waiting pool, within today's
    capacity, not against the account's active owner (one account, one rep) and not a lead
    an SLA breach took from them. An admin assigning overrides the owner and the re-route
    rule but not capacity or an inactive rep."""
    rep = check.rep_key
    if not check.waiting:
        if check.holder == rep:
            return ClaimDecision(False, Reason("yours", {"rep": rep}))
        if check.holder is not None:
            return ClaimDecision(False, Reason("taken", {"rep": check.holder}))
        return ClaimDecision(False, Reason("not_waiting"))
    if not check.rep_known:
        return ClaimDecision(False, Reason("no_rep", {"rep": rep}))
    if not check.rep_active:
        return ClaimDecision(False, Reason("inactive", {"rep": rep}))
    if not by_admin:
        owner = check.account_owner
        if owner and owner != rep and check.owner_active:
            return ClaimDecision(False, Reason("owner", {"rep": owner}))
        if rep in check.excluded:
            return ClaimDecision(False, Reason("excluded"))
    if check.today >= check.capacity:
        return ClaimDecision(
            False, Reason("capacity", {"rep": rep, "n": check.today, "capacity": check.capacity})
        )
    return ClaimDecision(
        True, Reason("ok", {"rep": rep, "n": check.today + 1, "capacity": check.capacity})
    )


def decide_reassign(check: ClaimCheck) -> ClaimDecision:
    """May an admin move a lead's open hand-off to ``check.rep_key``?"""
    rep = check.rep_key
    if check.holder is None and not check.waiting:
        return ClaimDecision(False, Reason("not_waiting"))
    if check.holder == rep:
        return ClaimDecision(False, Reason("yours", {"rep": rep}))
    return decide_claim(
        ClaimCheck(
            rep_key=rep,
            rep_known=check.rep_known,
            rep_active=check.rep_active,
            capacity=check.capacity,
            today=check.today,
            waiting=True,
        ),
        by_admin=True,
    )


# --------------------------------------------------------------------------- highlights


@dataclass(frozen=True, slots=True)
class Activity:
    """One event of the lead, as the highlights need it."""

    name: str
    """The track event's name, or ``page`` for a page view."""
    at: datetime
    subject: str | None = None
    """Asset, webinar, event name, or the page path."""
    asset_type: str | None = None


@dataclass(frozen=True, slots=True)
class Highlight:
    verb: str
    """``content.<asset type>``, ``webinar``, ``event``, ``request.<name>``, ``page``."""
    subject: str | None
    count: int
    first_at: datetime
    last_at: datetime


CONTENT_TYPES = frozenset(
    {"white_paper", "case_study", "demo_video", "pricing", "webinar", "trial", "blog_post"}
)
_VERB_ORDER = {"request": 0, "event": 1, "webinar": 2, "content": 3, "page": 4}


def _verb(activity: Activity) -> str | None:
    name = activity.name
    if name == "content_download":
        kind = activity.asset_type if activity.asset_type in CONTENT_TYPES else "other"
        return f"content.{kind}"
    if name == "webinar_attended":
        return "webinar"
    if name == "event_attended":
        return "event"
    if name in HIGH_INTENT:
        return f"request.{name}"
    if name == "page":
        return "page"
    return None


def highlights(
    activities: Iterable[Activity], *, top: int = 5, min_page_views: int = 2
) -> list[Highlight]:
    """The lead's events folded into one line per (what, subject) with how often and when
    last: requests first, then events attended, webinars, content, pages visited at least
    ``min_page_views`` times; within a kind the most recent first."""
    groups: dict[tuple[str, str | None], list[datetime]] = {}
    names: dict[tuple[str, str], str] = {}
    for a in activities:
        verb = _verb(a)
        if verb is None:
            continue
        subject = a.subject.strip() if isinstance(a.subject, str) and a.subject.strip() else None
        if verb == "page" and subject is None:
            continue
        key = (verb, subject.casefold() if subject else None)
        groups.setdefault(key, []).append(a.at)
        if subject:
            names.setdefault((verb, subject.casefold()), subject)
    found = []
    for (verb, folded), times in groups.items():
        if verb == "page" and len(times) < min_page_views:
            continue
        subject = names.get((verb, folded)) if folded else None
        found.append(Highlight(verb, subject, len(times), min(times), max(times)))
    found.sort(key=lambda h: (_VERB_ORDER[h.verb.split(".")[0]], -h.last_at.timestamp(), h.verb))
    return found[:top]


# --------------------------------------------------------------------------- qualify


@dataclass(frozen=True, slots=True)
class QualifyOutcome:
    changed: tuple[str, ...]
    """BANT fields whose value the qualify changed."""
    score: float
    threshold: float
    ready: bool
    missing: tuple[str, ...]
    """Fields to raise (largest gain first) to reach the threshold; empty when ready."""


def bant_points(
    bant: Mapping[str, Any], weights: Mapping[str, float], levels: Mapping[str, float]
) -> dict[str, float]:
    """Each field's value from 0 to 1 (a level name or a number; unknown is 0)."""
    lower = {k.lower(): float(v) for k, v in levels.items()}
    values = {}
    for name in BANT_FIELDS:
        value = bant.get(name)
        if isinstance(value, bool) or value is None:
            values[name] = 0.0
        elif isinstance(value, int | float):
            values[name] = min(max(float(value), 0.0), 1.0)
        else:
            values[name] = lower.get(str(value).lower(), 0.0)
    return values


def qualify_outcome(
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    *,
    weights: Mapping[str, float],
    levels: Mapping[str, float],
    threshold: float,
) -> QualifyOutcome:
    """What a qualify did to the BANT (``before`` and ``after`` as stored: level names or
    numbers) and what is still needed for the hand-off threshold."""
    old = bant_points(before, weights, levels)
    new = bant_points(after, weights, levels)
    changed = tuple(
        f for f in BANT_FIELDS if old[f] != new[f] or _norm(before.get(f)) != _norm(after.get(f))
    )
    score = round(sum(weights[f] * new[f] for f in BANT_FIELDS), 6)
    ready = score >= threshold
    missing: list[str] = []
    if not ready:
        top = max((float(v) for v in levels.values()), default=1.0)
        gains = sorted(
            ((weights[f] * (top - new[f]), f) for f in BANT_FIELDS if new[f] < top),
            key=lambda g: (-g[0], BANT_FIELDS.index(g[1])),
        )
        reach = score
        for gain, name in gains:
            if gain <= 0:
                continue
            missing.append(name)
            reach += gain
            if reach >= threshold:
                break
    return QualifyOutcome(changed, score, float(threshold), ready, tuple(missing))


def _norm(value: Any) -> Any:
    if value is None or (isinstance(value, str) and value.lower() == "unknown"):
        return None
    return value.lower() if isinstance(value, str) else value


def known_bant(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """The BANT stored on a lead's attributes (``attributes.bant``), fields only."""
    raw = (attributes or {}).get("bant")
    if not isinstance(raw, Mapping):
        return {}
    return {k: raw[k] for k in BANT_FIELDS if k in raw}


def merge_bant(known: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    return {**known, **{k: v for k, v in given.items() if k in BANT_FIELDS and v is not None}}


def sequence_fields(fields: Sequence[str]) -> tuple[str, ...]:
    """BANT field names in their canonical order, unknown names dropped."""
    wanted = set(fields)
    return tuple(f for f in BANT_FIELDS if f in wanted)
