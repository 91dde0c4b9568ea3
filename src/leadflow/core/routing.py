"""Capacity-aware hand-off to sales: who gets which MQL today, and when the SLA runs out.

Pure: plain data in, plans with reasons out; time is always a parameter.

- :func:`route` assigns queued leads, highest :func:`priority` first, to reps with capacity
  left on the current day (counted in the sales time zone): the account's owner first
  (every person of one account goes to one rep; while the owner is active the lead waits for
  the owner), then a rep whose territory matches (account lists before industry / country),
  then weighted round-robin over every active rep with capacity. A lead nobody can take
  stays waiting, in priority order. No rep ever gets more than ``daily_capacity`` a day.
- :class:`WorkCalendar` does working-hour arithmetic (Mon-Fri 09:00-18:00 by default,
  holidays skipped, any IANA zone): :meth:`WorkCalendar.add_working_hours` gives an SLA due
  time.
- :func:`sla_breaches` decides, for open assignments past their due time, whether to
  escalate or re-route.
- :func:`handoff_stages` says which leads go to sales at all: every lead in a hand-off
  stage (``sales.handoff_stages``), and a lead an automatic rule (a fast-pass, a stage
  criterion) moved straight into a stage sales works in (e.g. a target-account event
  attendee fast-passed to the appointment stage) - never one a sales action moved there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal, NamedTuple
from zoneinfo import ZoneInfo

from leadflow.core.config import WEEKDAYS, LeadModel, SalesSpec
from leadflow.core.lifecycle import entered_automatically

DEFAULT_TIMEZONE = "Asia/Seoul"
FIT_FLOOR = 10.0
RULE_OWNER = "owner"
RULE_TERRITORY_ACCOUNT = "territory.account"
RULE_TERRITORY = "territory"
RULE_ROUND_ROBIN = "round_robin"
ACTIVE_STATUSES = ("routed", "accepted", "escalated")


SALES_WORK_ACTIONS = ("accept", "qualify")
"""Actions whose target stages sales works in after the hand-off (appointment, opportunity
in the default model)."""


@dataclass(frozen=True, slots=True)
class HandoffStages:
    """The model's stage sets for the hand-off."""

    handoff: frozenset[str]
    """``sales.handoff_stages``: a lead in one is handed to sales however it got there."""
    sales: frozenset[str]
    """The hand-off stages and the stages sales works in (targets of accept and qualify)."""

    def needs_handoff(self, stage: str, entry_rule: str | None) -> bool:
        """Should a lead in ``stage``, which it entered by ``entry_rule``, be handed to sales
        (when it has no open hand-off and was not handed off since)? Yes in a hand-off
        stage; yes in another sales stage when an automatic rule moved it there (a
        fast-pass): nobody in sales knows of it yet. No when a sales action moved it there:
        the rep who acted has it."""
        if stage in self.handoff:
            return True
        return stage in self.sales and entry_rule is not None and entered_automatically(entry_rule)


def handoff_stages(model: LeadModel) -> HandoffStages:
    handoff = frozenset(model.handoff_stages)
    work = {
        model.spec.actions[name].to for name in SALES_WORK_ACTIONS if name in model.spec.actions
    }
    return HandoffStages(handoff=handoff, sales=handoff | work)


def _aware(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what}: expected a timezone-aware datetime")
    return value.astimezone(UTC)


def normal_industry(value: str) -> str:
    """``"IT & Software"`` -> ``it_software`` (as ``fit.industry`` keys are compared)."""
    return re.sub(r"[^0-9a-z가-힣]+", "_", value.strip().lower()).strip("_")


# --------------------------------------------------------------------------- data


@dataclass(frozen=True, slots=True, kw_only=True)
class Territory:
    """One territory rule: every dimension given must match (a set means "any of")."""

    industries: frozenset[str] | None = None
    countries: frozenset[str] | None = None
    accounts: frozenset[str] | None = None

    @classmethod
    def of(
        cls,
        *,
        industries: Iterable[str] | None = None,
        countries: Iterable[str] | None = None,
        accounts: Iterable[str] | None = None,
    ) -> Territory:
        return cls(
            industries=None if industries is None else frozenset(map(normal_industry, industries)),
            countries=None if countries is None else frozenset(c.upper() for c in countries),
            accounts=None if accounts is None else frozenset(a.lower() for a in accounts),
        )

    def matches(self, lead: QueuedLead) -> bool:
        if self.industries is None and self.countries is None and self.accounts is None:
            return False
        if self.industries is not None and (
            lead.industry is None or normal_industry(lead.industry) not in self.industries
        ):
            return False
        if self.countries is not None and (
            lead.country is None or lead.country.upper() not in self.countries
        ):
            return False
        return self.accounts is None or bool(self.accounts & lead.account_keys)


@dataclass(frozen=True, slots=True, kw_only=True)
class Rep:
    key: str
    name: str = ""
    email: str = ""
    active: bool = True
    daily_capacity: int = 20
    weight: float = 1.0
    territories: tuple[Territory, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class QueuedLead:
    """A lead waiting for sales, with what routing needs to know about it."""

    lead_id: int
    priority: float
    queued_at: datetime
    account_id: int | None = None
    account_keys: frozenset[str] = frozenset()
    """Lower-cased domain, external id and numeric id of the account (territory lists)."""
    industry: str | None = None
    country: str | None = None
    exclude: frozenset[str] = frozenset()
    """Reps it must not go to (re-routed after an SLA breach)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "queued_at", _aware(self.queued_at, "QueuedLead.queued_at"))


@dataclass(frozen=True, slots=True, kw_only=True)
class Assignment:
    lead_id: int
    rep_key: str
    rule: str
    """Why this rep: ``owner``, ``territory.account``, ``territory`` or ``round_robin``."""
    assigned_at: datetime
    due_at: datetime
    account_id: int | None = None
    priority: float = 0.0


class RoutePlan(NamedTuple):
    assignments: list[Assignment]
    still_waiting: list[QueuedLead]


# --------------------------------------------------------------------------- calendar


@dataclass(frozen=True, slots=True)
class WorkCalendar:
    """Working hours in one time zone: ``days`` are weekday numbers (Monday 0)."""

    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo(DEFAULT_TIMEZONE))
    days: frozenset[int] = frozenset(range(5))
    start: time = time(9, 0)
    end: time | None = time(18, 0)
    """None means midnight (``24:00``)."""
    holidays: frozenset[date] = frozenset()

    @classmethod
    def from_spec(cls, spec: SalesSpec) -> WorkCalendar:
        hours = spec.working_hours
        return cls(
            zone=ZoneInfo(spec.timezone),
            days=frozenset(WEEKDAYS.index(d) for d in hours.days),
            start=_clock(hours.start),
            end=None if hours.end == "24:00" else _clock(hours.end),
            holidays=frozenset(hours.holidays),
        )

    def local_day(self, at: datetime) -> date:
        return _aware(at, "at").astimezone(self.zone).date()

    def day_bounds(self, day: date) -> tuple[datetime, datetime]:
        """The UTC instants at which the local ``day`` starts and ends."""
        begin = datetime.combine(day, time(0), tzinfo=self.zone).astimezone(UTC)
        after = datetime.combine(day + timedelta(days=1), time(0), tzinfo=self.zone)
        return begin, after.astimezone(UTC)

    def is_working_day(self, day: date) -> bool:
        return day.weekday() in self.days and day not in self.holidays

    def _window(self, day: date) -> tuple[datetime, datetime]:
        begin = datetime.combine(day, self.start, tzinfo=self.zone).astimezone(UTC)
        if self.end is None:
            finish = datetime.combine(day + timedelta(days=1), time(0), tzinfo=self.zone)
        else:
            finish = datetime.combine(day, self.end, tzinfo=self.zone)
        return begin, finish.astimezone(UTC)

    def add_working_hours(self, start: datetime, hours: float) -> datetime:
        """The instant ``hours`` working hours after ``start`` (outside working hours the
        clock starts at the next opening)."""
        if hours < 0:
            raise ValueError("hours: must not be negative")
        if not self.days:
            raise ValueError("working_hours.days: no working day")
        at = _aware(start, "start")
        remaining = timedelta(hours=hours)
        day = self.local_day(at)
        for _ in range(3700):  # ten years of days: a calendar with no working day ends here
            if self.is_working_day(day):
                begin, finish = self._window(day)
                if at < begin:
                    at = begin
                if at < finish:
                    available = finish - at
                    if remaining <= available:
                        return at + remaining
                    remaining -= available
            day += timedelta(days=1)
            at = self.day_bounds(day)[0]
        raise ValueError("working_hours: no working hours within ten years")

    def working_hours_between(self, start: datetime, end: datetime) -> float:
        """Working hours elapsed from ``start`` to ``end`` (0 when ``end`` is earlier)."""
        a, b = _aware(start, "start"), _aware(end, "end")
        if b <= a:
            return 0.0
        total = timedelta()
        day = self.local_day(a)
        while True:
            day_start = self.day_bounds(day)[0]
            if day_start >= b:
                break
            if self.is_working_day(day):
                begin, finish = self._window(day)
                lo, hi = max(begin, a), min(finish, b)
                if hi > lo:
                    total += hi - lo
            day += timedelta(days=1)
        return total.total_seconds() / 3600


def _clock(text: str) -> time:
    hh, mm = text.split(":")
    return time(int(hh), int(mm))


# --------------------------------------------------------------------------- priority


def priority(engagement: float, fit: float, qualification: float | None = None) -> float:
    """Engagement × fit factor × BANT factor.

    The fit factor is ``max(fit, 10) / 100`` (an unknown company does not zero a hot lead);
    the BANT factor is ``1 + qualification / 100`` once sales has rated BANT, else 1.
    """
    value = max(engagement, 0.0) * max(fit, FIT_FLOOR) / 100.0
    if qualification:
        value *= 1.0 + max(qualification, 0.0) / 100.0
    return round(value, 6)


def queue_order(lead: QueuedLead) -> tuple[float, datetime, int]:
    """Highest priority first, then first queued, then lowest lead id."""
    return (-lead.priority, lead.queued_at, lead.lead_id)


# --------------------------------------------------------------------------- routing


def route(
    queue: Iterable[QueuedLead],
    reps: Sequence[Rep],
    assignments_today: Mapping[str, int],
    accounts_owner: Mapping[int, str],
    now: datetime,
    *,
    calendar: WorkCalendar | None = None,
    sla_hours: float = 24.0,
    recent_counts: Mapping[str, int] | None = None,
) -> RoutePlan:
    """Assign what today's capacity allows; return the assignments and who still waits.

    ``assignments_today``: hand-offs each rep already got on the local day of ``now``.
    ``accounts_owner``: account id -> rep key (``accounts.owner``); the plan makes the rep
    of an account's first hand-off its owner for the rest of the plan too.
    ``recent_counts``: hand-offs per rep over the round-robin window (default: today's).
    Deterministic: the same inputs give the same plan.
    """
    now = _aware(now, "now")
    calendar = calendar or WorkCalendar()
    due = calendar.add_working_hours(now, sla_hours)
    active = {r.key: r for r in sorted(reps, key=lambda r: r.key) if r.active}
    left = {k: max(r.daily_capacity - assignments_today.get(k, 0), 0) for k, r in active.items()}
    load = {k: (recent_counts or assignments_today).get(k, 0) for k in active}
    owners = dict(accounts_owner)
    assignments: list[Assignment] = []
    waiting: list[QueuedLead] = []
    seen: set[int] = set()
    for lead in sorted(queue, key=queue_order):
        if lead.lead_id in seen:
            continue
        seen.add(lead.lead_id)
        if not any(left.values()):
            waiting.append(lead)
            continue
        choice = _choose(lead, active, left, load, owners)
        if choice is None:
            waiting.append(lead)
            continue
        rep_key, rule = choice
        left[rep_key] -= 1
        load[rep_key] += 1
        if lead.account_id is not None:
            owners.setdefault(lead.account_id, rep_key)
        assignments.append(
            Assignment(
                lead_id=lead.lead_id,
                rep_key=rep_key,
                rule=rule,
                assigned_at=now,
                due_at=due,
                account_id=lead.account_id,
                priority=lead.priority,
            )
        )
    return RoutePlan(assignments, waiting)


def _choose(
    lead: QueuedLead,
    active: Mapping[str, Rep],
    left: Mapping[str, int],
    load: Mapping[str, int],
    owners: Mapping[int, str],
) -> tuple[str, str] | None:
    owner = owners.get(lead.account_id) if lead.account_id is not None else None
    if owner is not None and owner in active and owner not in lead.exclude:
        # One account, one rep: wait for the owner rather than split the account.
        return (owner, RULE_OWNER) if left[owner] > 0 else None
    open_reps = [r for k, r in active.items() if left[k] > 0 and k not in lead.exclude]
    if not open_reps:
        return None
    by_account = [
        r for r in open_reps if any(t.accounts and t.matches(lead) for t in r.territories)
    ]
    if by_account:
        return _round_robin(by_account, load), RULE_TERRITORY_ACCOUNT
    by_territory = [r for r in open_reps if any(t.matches(lead) for t in r.territories)]
    if by_territory:
        return _round_robin(by_territory, load), RULE_TERRITORY
    return _round_robin(open_reps, load), RULE_ROUND_ROBIN


def _round_robin(candidates: Sequence[Rep], load: Mapping[str, int]) -> str:
    """Weighted round-robin without stored state: the rep whose next hand-off keeps its
    share closest to its weight (fewest hand-offs per unit of weight), ties by weight, key."""
    best = min(candidates, key=lambda r: ((load[r.key] + 1) / r.weight, -r.weight, r.key))
    return best.key


# --------------------------------------------------------------------------- SLA


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenAssignment:
    id: int
    lead_id: int
    rep_key: str
    status: str
    """``routed`` or ``escalated`` (accepted ones have met the SLA)."""
    assigned_at: datetime
    due_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class SlaDecision:
    assignment_id: int
    lead_id: int
    rep_key: str
    action: Literal["escalate", "reroute"]
    overdue_hours: float
    """Working hours past the due time."""
    new_due_at: datetime | None = None
    """For an escalation that will be re-routed later: the new deadline."""


def sla_breaches(
    assignments: Iterable[OpenAssignment],
    now: datetime,
    *,
    calendar: WorkCalendar | None = None,
    on_breach: str = "escalate_then_reroute",
    escalation_hours: float = 8.0,
) -> list[SlaDecision]:
    """What to do with each open assignment not accepted by its due time."""
    now = _aware(now, "now")
    calendar = calendar or WorkCalendar()
    decisions: list[SlaDecision] = []
    for a in sorted(assignments, key=lambda a: (a.due_at, a.id)):
        if a.due_at > now or a.status not in ("routed", "escalated"):
            continue
        overdue = round(calendar.working_hours_between(a.due_at, now), 4)
        if a.status == "routed" and on_breach in ("escalate", "escalate_then_reroute"):
            new_due = (
                calendar.add_working_hours(now, escalation_hours)
                if on_breach == "escalate_then_reroute"
                else None
            )
            decisions.append(
                SlaDecision(
                    assignment_id=a.id,
                    lead_id=a.lead_id,
                    rep_key=a.rep_key,
                    action="escalate",
                    overdue_hours=overdue,
                    new_due_at=new_due,
                )
            )
        elif (a.status == "routed" and on_breach == "reroute") or (
            a.status == "escalated" and on_breach == "escalate_then_reroute"
        ):
            decisions.append(
                SlaDecision(
                    assignment_id=a.id,
                    lead_id=a.lead_id,
                    rep_key=a.rep_key,
                    action="reroute",
                    overdue_hours=overdue,
                )
            )
    return decisions


# --------------------------------------------------------------------------- reasons


def reject_action(spec: SalesSpec, reason: str) -> str:
    """The stage-machine action for a reject reason: ``disqualify`` for dead-end reasons,
    ``reject`` (back to nurturing) otherwise. Unknown reasons raise ``ValueError``."""
    for item in spec.reject_reasons:
        if item.key == reason:
            return "disqualify" if item.dead_end else "reject"
    known = ", ".join(r.key for r in spec.reject_reasons) or "none configured"
    raise ValueError(f"reason: unknown reject reason '{reason}' (known: {known})")


def check_lost_reason(spec: SalesSpec, reason: str) -> str:
    if spec.lost_reasons and reason not in {r.key for r in spec.lost_reasons}:
        known = ", ".join(r.key for r in spec.lost_reasons)
        raise ValueError(f"reason: unknown lost reason '{reason}' (known: {known})")
    return reason


def reps_from_spec(spec: SalesSpec) -> list[Rep]:
    return [
        Rep(
            key=r.key,
            name=r.name,
            email=r.email,
            active=r.active,
            daily_capacity=r.daily_capacity
            if r.daily_capacity is not None
            else spec.default_capacity,
            weight=r.weight,
            territories=tuple(
                Territory.of(industries=t.industries, countries=t.countries, accounts=t.accounts)
                for t in r.territories
            ),
        )
        for r in spec.reps
    ]
