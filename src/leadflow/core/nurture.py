"""Nurture decisions, pure: what a person should get next, and whether we may send it.

Everything here works on plain data (:class:`Asset`, :class:`LeadView`, the model's
``ProgramSpec``) and takes ``now`` as an argument; the services layer loads the data,
locks the rows and carries the decision out.

Next best content (:func:`next_best_content`)
    The lead's lifecycle stage maps to an evaluation stage (``nurture.content_stages``:
    early / middle / late). Candidates are assets of that evaluation stage, then of the
    adjacent ones (the later one first: content exists to move a person forward). Within
    one evaluation stage, assets made for the lead's industry (case-insensitive) come
    before generic assets (no industries); assets made for *other* industries never
    qualify. Anything the lead already consumed is skipped. Ties break on the asset key.

Send rules (:func:`send_blockers`), first reason wins, in this order:
    ``no_email``, ``erased``, ``bounced``, ``unsubscribed``, ``no_consent``, ``stage``
    (a stage with ``marketing_email: false``, e.g. the dead end), ``paused`` (recycle
    window), ``frequency_cap`` (at most ``cap.emails`` marketing emails per
    ``cap.days`` days, across all programs). Transactional email skips consent, stage,
    pause, cap and unsubscribe (an unsubscribe is from marketing) but still never goes to
    a missing, erased or hard-bounced address.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from leadflow.core.config import (
    EVALUATION_STAGES,
    FrequencyCap,
    ProgramCondition,
    ProgramSpec,
    Scalar,
)
from leadflow.core.model import Event
from leadflow.core.scoring import event_matches

SEND_BLOCK_REASONS = (
    "no_email",
    "erased",
    "bounced",
    "unsubscribed",
    "no_consent",
    "stage",
    "paused",
    "frequency_cap",
)
# Reasons that do not end the step: it runs again when the reason has passed.
WAIT_REASONS = frozenset({"frequency_cap"})


@dataclass(frozen=True, slots=True)
class Asset:
    key: str
    title: str
    type: str
    stage: str
    gated: bool = False
    industries: tuple[str, ...] = ()
    url: str = ""


@dataclass(frozen=True, slots=True)
class LeadView:
    """What the nurture decisions need to know about one lead."""

    lead_id: int
    email: str | None
    stage: str
    engagement: float = 0.0
    fit_grade: str | None = None
    industry: str | None = None
    consent_status: str = "unknown"
    unsubscribed_at: datetime | None = None
    bounced_at: datetime | None = None
    erased: bool = False
    pause_until: datetime | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    consumed: frozenset[str] = frozenset()


# --------------------------------------------------------------------------- content


def _stage_order(evaluation_stage: str) -> list[str]:
    """The evaluation stage, then the adjacent ones (later first)."""
    if evaluation_stage not in EVALUATION_STAGES:
        return []
    i = EVALUATION_STAGES.index(evaluation_stage)
    order = [evaluation_stage]
    if i + 1 < len(EVALUATION_STAGES):
        order.append(EVALUATION_STAGES[i + 1])
    if i - 1 >= 0:
        order.append(EVALUATION_STAGES[i - 1])
    return order


def next_best_content(
    lead: LeadView, assets: Iterable[Asset], content_stages: Mapping[str, str]
) -> Asset | None:
    """The best asset for the lead's stage and industry that the lead has not consumed."""
    evaluation = content_stages.get(lead.stage)
    if evaluation is None:
        return None
    order = _stage_order(evaluation)
    industry = (lead.industry or "").strip().casefold()
    ranked: list[tuple[int, int, str, Asset]] = []
    for asset in assets:
        if asset.key in lead.consumed or asset.stage not in order:
            continue
        suits = {i.strip().casefold() for i in asset.industries}
        if suits:
            if not industry or industry not in suits:
                continue
            tier = 0
        else:
            tier = 1
        ranked.append((order.index(asset.stage), tier, asset.key, asset))
    if not ranked:
        return None
    return min(ranked, key=lambda r: (r[0], r[1], r[2]))[3]


# --------------------------------------------------------------------------- send rules


def _in_window(sends: Iterable[datetime], cap: FrequencyCap, now: datetime) -> list[datetime]:
    start = now - timedelta(days=cap.days)
    return sorted(t for t in sends if start < t <= now)


def send_blockers(
    lead: LeadView,
    category: str,
    stage_allows_marketing: bool,
    now: datetime,
    recent_marketing_sends: Sequence[datetime],
    cap: FrequencyCap,
) -> str | None:
    """The first rule that forbids sending ``category`` email to the lead now, or None."""
    if not lead.email:
        return "no_email"
    if lead.erased:
        return "erased"
    if lead.bounced_at is not None:
        return "bounced"
    if category == "transactional":
        return None
    if lead.unsubscribed_at is not None:
        return "unsubscribed"
    if lead.consent_status != "granted":
        return "no_consent"
    if not stage_allows_marketing:
        return "stage"
    if lead.pause_until is not None and lead.pause_until > now:
        return "paused"
    if len(_in_window(recent_marketing_sends, cap, now)) >= cap.emails:
        return "frequency_cap"
    return None


def cap_frees_at(
    recent_marketing_sends: Sequence[datetime], cap: FrequencyCap, now: datetime
) -> datetime:
    """When the frequency cap next allows a marketing email (``now`` if it does already).

    A send counts while ``planned_at > at - days``; the cap frees when enough of the sends
    in the window have aged out of it."""
    window = _in_window(recent_marketing_sends, cap, now)
    if len(window) < cap.emails:
        return now
    return window[len(window) - cap.emails] + timedelta(days=cap.days)


# --------------------------------------------------------------------------- conditions


def _value_matches(value: Any, allowed: Sequence[Scalar]) -> bool:
    if value is None:
        return False
    if isinstance(value, list | tuple | set | frozenset):
        return any(_value_matches(v, allowed) for v in value)
    if isinstance(value, str):
        folded = value.casefold()
        return any(isinstance(a, str) and a.casefold() == folded for a in allowed)
    return any(value == a and type(value) is type(a) for a in allowed)


def lead_field(lead: LeadView, name: str) -> Any:
    """A lead attribute, or one of the view's own fields (industry, fit_grade, ...)."""
    if name in lead.attributes:
        return lead.attributes[name]
    if name in ("email", "stage", "industry", "fit_grade", "consent_status"):
        return getattr(lead, name)
    return None


def condition_holds(
    condition: ProgramCondition | None, lead: LeadView, events: Iterable[Event], now: datetime
) -> bool:
    """Every given part of the condition holds (no condition always holds).

    ``event`` looks at the lead's events up to ``now`` (within ``within_days`` if given);
    with ``seen: false`` it holds when no such event exists."""
    if condition is None:
        return True
    if condition.score_at_least is not None and lead.engagement < condition.score_at_least:
        return False
    if condition.score_below is not None and lead.engagement >= condition.score_below:
        return False
    if condition.stage is not None and lead.stage not in condition.stage:
        return False
    if condition.fit_grade is not None and lead.fit_grade not in condition.fit_grade:
        return False
    for name, allowed in condition.attributes.items():
        if not _value_matches(lead_field(lead, name), allowed):
            return False
    if condition.event is not None:
        start = now - timedelta(days=condition.within_days) if condition.within_days else None
        seen = any(
            e.occurred_at <= now
            and (start is None or e.occurred_at > start)
            and event_matches(condition.event, e)
            for e in events
        )
        if seen != condition.seen:
            return False
    return True


# --------------------------------------------------------------------------- steps


@dataclass(frozen=True, slots=True)
class PlannedSend:
    subject: str
    template: str
    category: str
    asset: Asset | None


@dataclass(frozen=True, slots=True)
class StepDecision:
    """What to do with one due step.

    ``action``:
    - ``run``: the step happens — ``send`` (if any) is planned, or recorded as skipped
      with ``blocked``; ``set`` and ``notify`` are applied; the enrolment moves on;
    - ``skip``: the condition failed and the step says ``otherwise: skip`` — move on;
    - ``exit``: the condition failed with ``otherwise: exit`` — leave the program;
    - ``wait``: try the same step again at ``wait_until`` (frequency cap);
    - ``complete``: there is no such step: the program is finished.
    """

    action: Literal["run", "skip", "exit", "wait", "complete"]
    step_id: str | None = None
    send: PlannedSend | None = None
    blocked: str | None = None
    set_fields: Mapping[str, Scalar] = field(default_factory=dict)
    notify: str | None = None
    wait_until: datetime | None = None


def subject_for(lead: LeadView, subject: Any) -> str:
    """The subject in the lead's language (attribute ``locale``/``language``; English by
    default). ``subject`` is a ``Display`` (en/ko) or a plain string."""
    if isinstance(subject, str):
        return subject
    locale = str(lead.attributes.get("locale") or lead.attributes.get("language") or "en")
    if locale.lower().startswith("ko"):
        return str(subject.ko)
    return str(subject.en)


def decide_step(
    program: ProgramSpec,
    step_index: int,
    lead: LeadView,
    *,
    assets: Sequence[Asset],
    content_stages: Mapping[str, str],
    events: Iterable[Event],
    now: datetime,
    stage_allows_marketing: bool,
    recent_marketing_sends: Sequence[datetime],
    cap: FrequencyCap,
) -> StepDecision:
    """Decide step ``step_index`` of ``program`` for ``lead`` at ``now``."""
    if step_index < 0 or step_index >= len(program.steps):
        return StepDecision("complete")
    step = program.steps[step_index]
    if not condition_holds(step.when, lead, events, now):
        return StepDecision("exit" if step.otherwise == "exit" else "skip", step_id=step.id)
    send: PlannedSend | None = None
    blocked: str | None = None
    if step.send is not None:
        spec = step.send
        if spec.asset == "next_best":
            asset = next_best_content(lead, assets, content_stages)
        else:
            asset = next((a for a in assets if a.key == spec.asset), None)
        send = PlannedSend(subject_for(lead, spec.subject), spec.template, spec.category, asset)
        blocked = send_blockers(
            lead, spec.category, stage_allows_marketing, now, recent_marketing_sends, cap
        )
        if blocked in WAIT_REASONS:
            return StepDecision(
                "wait",
                step_id=step.id,
                send=send,
                blocked=blocked,
                wait_until=cap_frees_at(recent_marketing_sends, cap, now),
            )
        if blocked is None and asset is None:
            blocked = "no_content"
    return StepDecision(
        "run",
        step_id=step.id,
        send=send,
        blocked=blocked,
        set_fields=dict(step.set or {}),
        notify=step.notify,
    )
