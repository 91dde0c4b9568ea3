"""The lead stage machine (The Model, seed 002), configured entirely by ``leadflow.yaml``.

Entry points
------------
- :func:`new_lead` - the state of a lead nothing has happened to yet (initial stage).
- :func:`apply_event` - fold one event into a lead: ``(state, changes, signals)``.
- :func:`apply_action` (and :func:`accept`, :func:`not_now`, :func:`qualify`, :func:`win`,
  :func:`lose`) - a sales action; the stage change or the reason it was refused.
- :func:`advance` - let time pass (a recycle pause ends) without an event.
- :func:`replay` - recompute a lead from all its events and actions (batch).
- :func:`is_paused`, :func:`email_eligibility`, :func:`returning_alert`,
  :func:`check_return` - questions asked by nurture, suppression and alerting.

Semantics (what makes incremental processing equal batch recompute)
-------------------------------------------------------------------
A lead's derived state - stage, stage history, pause, signals, scores - is a pure function
of (base profile, the *set* of its events, the set of accepted sales actions, the model, and
the time it has been advanced to). Nothing depends on arrival order:

1. **Inputs are deduplicated** - events by ``message_id``, actions by ``action_id``; a
   repeated id is ignored (the first copy wins).
2. **Inputs are processed in event-time order**: by ``(time, kind, id)`` where events sort
   before actions at the same instant and ids break ties. This total order is what a batch
   :func:`replay` uses.
3. **Incremental = replay.** :func:`apply_event` takes the fast path (one step) when the
   new input sorts after everything the state has seen and is not before the time the state
   was advanced to. Otherwise (an out-of-order or late event) it recomputes the lead from its
   full input set - cheap, one lead's events - so the result is exactly what :func:`replay`
   gives. A recompute may rewrite stage history: the returned changes are the ones that are
   new, and a ``lead.history_revised`` signal lists the changes that no longer hold (the
   services layer replaces the lead's history with ``state.history``). A state computed with
   another model (different ``content_hash``) is recomputed the same way.
4. **One step** at time ``t``: (a) time passes to ``t`` - a recycle pause that ended at
   ``p <= t`` moves the lead to the recycle stage's ``return_to`` stage, stamped ``p``;
   (b) ``identify``/``group`` traits update the effective profile (``email_unsubscribe``
   sets consent to denied); (c) engagement rules score the event (caps, see
   :mod:`leadflow.core.scoring`); (d) transitions are evaluated (below); (e) a page view may
   raise the return alert.
5. **Transitions of one step**: the dead-end rules first (a matching lead in a stage listed
   in ``dead_end.from`` goes to the dead end, which nothing automatic ever leaves); then,
   repeatedly, among fastpass rules and stage criteria (``enter_when``) applicable from the
   current stage, the one leading to the *nearest* stage on the main path wins (ties: fastpass
   first, then file order), so a single event can walk a lead through several stages (an
   unknown visitor who identifies with consent and requests a catalogue becomes acquired, then
   MQL, both stamped with that event's time). Automatic moves only go forward on the main
   path (or out of stages off it, such as recycle boxes). Conditions: ``event`` matches the
   event being processed; ``profile`` is tested on the effective profile; ``score`` on the
   engagement score at ``t`` over the events processed so far (the current one included).
   What each key means is read from :mod:`leadflow.core.conditions`, the table the
   vectorised backtest reads too.
6. **Sales actions** are inputs too: one accepted at time ``t`` joins the input set; if a
   later recompute finds it no longer applies (a late event moved the lead elsewhere first),
   it is kept but has no effect. A refused action is not recorded at all.
7. **Recycling**: entering a stage with ``recycle`` starts a pause of ``pause_days``; while
   paused the lead gets no marketing e-mail (:func:`is_paused`, :func:`email_eligibility`);
   at the end it returns to ``return_to`` (nurturing). Leaving the recycle box earlier (a
   fastpass on a quote request) ends the pause.
8. **Return alert**: entering a watched stage (recycle B: the deal was lost) starts watching
   the lead; watching goes on after the pause, back in nurturing, until the lead enters a
   ``clear_at`` stage (sales works it again). With ``when_account_lost`` the lead's account
   is watched too (``profile.account_watch``, from :func:`account_watches`: a colleague's
   lost deal until one of its people is worked again), so any of its people who is not in
   the dead end counts. A page view by a watched lead raises ``lead.returning`` (rule
   ``return_alert``, or ``return_alert.account`` naming the lost deal) when it is the N-th
   visit within M days (3 in 14), at most once per window, with the pages visited. Visits
   count from the start of watching.

Scores are not stored: :meth:`LeadState.engagement` evaluates them at any ``as_of``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from leadflow.core import conditions, traits
from leadflow.core.config import Condition, DeadEndRule, LeadModel
from leadflow.core.model import (
    AccountWatch,
    Bant,
    EngagementScore,
    Event,
    LeadProfile,
    SalesAction,
    Signal,
    StageChange,
)
from leadflow.core.scoring import (
    EngagementCounter,
    Occurrence,
    dedupe,
    event_key,
    has_term,
    positive_ceiling,
    score_engagement,
    score_qualification,
    total_at,
)
from leadflow.core.traits import consent_trait as consent_trait  # the one reading, re-exported

RETURNING = "lead.returning"
RETURN_RULE = "return_alert"
ACCOUNT_RETURN_RULE = "return_alert.account"
HISTORY_REVISED = "lead.history_revised"
FASTPASS_RULE = "fastpass"
STAGE_RULE = "stages"
OPEN_DEAL = "open_deal"
"""A built-in sales action (unless the model defines one of that name): a deal was opened
for the lead, which moves it to the stage with role ``opportunity`` from any stage before
it (or a recycle box). History backfill and CRM updates use it so that a deal's own open
date puts the lead at the opportunity stage before its past win or loss."""
OPEN_DEAL_FROM_ROLES = frozenset(
    {"entry", "acquired", "nurture", "handoff", "sales_accepted", "recycle", "lost"}
)
_EMAIL = re.compile(r"^[^@\s]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$")

InputKey = tuple[datetime, int, str]


def entered_automatically(rule: str) -> bool:
    """Was a stage change (its ``rule``) made by an automatic rule of the model - a
    fast-pass, a stage's ``enter_when`` criteria or the end of a recycle pause - rather than
    by a sales action, a dead-end rule or a model switch?"""
    return rule.startswith((f"{FASTPASS_RULE}.", f"{STAGE_RULE}."))


def action_key(action: SalesAction) -> InputKey:
    return (action.at, 1, action.action_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class LeadState:
    """Everything the machine knows about one lead. Immutable; every call returns a new one."""

    lead: LeadProfile
    """The base profile, as given to :func:`new_lead` / :func:`replay`."""
    profile: LeadProfile
    """The base profile updated by identify / group traits processed so far."""
    stage: str
    stage_since: datetime | None = None
    pause_until: datetime | None = None
    history: tuple[StageChange, ...] = ()
    signals: tuple[Signal, ...] = ()
    events: tuple[Event, ...] = ()
    """Deduplicated, in event-time order."""
    actions: tuple[SalesAction, ...] = ()
    """Accepted sales actions, in time order."""
    occurrences: tuple[Occurrence, ...] = ()
    """Engagement-rule occurrences counted so far (after caps, before decay)."""
    watch_since: datetime | None = None
    """When the return alert started watching this lead (it was lost), if it is watching."""
    seen: frozenset[str] = frozenset()
    clock: datetime | None = None
    """The latest time the state has been advanced to."""
    last_key: InputKey | None = None
    model_hash: str = ""

    @property
    def lead_id(self) -> int:
        return self.lead.id

    def engagement(self, as_of: datetime, model: LeadModel) -> EngagementScore:
        """The engagement score at ``as_of``, with the rules that fired."""
        return score_engagement(self.events, as_of, model)


@dataclass(frozen=True, slots=True)
class ActionOutcome:
    """The result of a sales action: the new state and the stage change, or a refusal."""

    state: LeadState
    change: StageChange | None
    refusal: str | None
    changes: tuple[StageChange, ...] = ()
    """Every new stage change (a pause that ended before the action comes first)."""
    signals: tuple[Signal, ...] = ()

    @property
    def accepted(self) -> bool:
        return self.refusal is None


@dataclass(frozen=True, slots=True)
class EmailEligibility:
    allowed: bool
    reason: str
    until: datetime | None = None


# --------------------------------------------------------------------------- profile updates


WITHDRAWN_BY_UNSUBSCRIBE = "withdrawn: unsubscribe"
"""Prefix of ``consent_method`` when an unsubscribe withdrew a granted consent."""


def withdrawal_method(how: str) -> str:
    """The ``consent_method`` recorded when an unsubscribe (``how``: one_click, page)
    withdraws a granted consent; the lead's consent then reads ``denied``."""
    return f"{WITHDRAWN_BY_UNSUBSCRIBE} ({how})"


def is_withdrawal(status: str, method: str | None) -> bool:
    """Was this stored consent withdrawn by an unsubscribe?"""
    return status == "denied" and method is not None and method.startswith(WITHDRAWN_BY_UNSUBSCRIBE)


def base_consent(status: str, method: str | None) -> str:
    """The consent a replay of the lead starts from. A consent withdrawn by an unsubscribe
    was ``granted`` until then: the withdrawal itself is the ``email_unsubscribe`` event in
    the lead's stream, which the fold applies at its time, so the lead's earlier stages
    (acquired on that consent) stay as they happened."""
    return "granted" if is_withdrawal(status, method) else status


def merge_traits(profile: LeadProfile, event: Event) -> LeadProfile:
    """The profile after an event: identify traits, group (account) traits, unsubscribe.
    Traits are read by :func:`leadflow.core.traits.read_traits` / ``read_group``, as
    ingestion reads them for the stored lead and account."""
    if event.type == "track" and event.name == "email_unsubscribe":
        return replace(profile, consent="denied") if profile.consent != "denied" else profile
    if event.type not in ("identify", "group") or not event.properties:
        return profile
    changes: dict[str, Any] = {}
    if event.type == "identify":
        reading = traits.read_traits(event.properties)
        account = reading.account
        if reading.email is not None:
            changes["email"] = reading.email
        current = {"first_name": profile.first_name, "last_name": profile.last_name}
        for column, value in reading.person_changes(current).items():
            if column != "source":  # not a profile field
                changes[column] = value
        if reading.consent is not None:
            changes["consent"] = reading.consent
        if reading.attributes:
            changes["attributes"] = {**profile.attributes, **reading.attributes}
    else:
        account = traits.read_group(event.properties, None)
    for attr in ("industry", "country", "employee_count"):
        if (value := getattr(account, attr)) is not None:
            changes[attr] = value
    # A trait can mark the account a target but never unmark it here: the profile starts
    # from the account's ``is_target`` column as it is now (written by group calls at
    # ingestion and by target discovery), which an old ``false`` trait must not undo.
    if account.is_target is True:
        changes["is_target_account"] = True
    return replace(profile, **changes) if changes else profile


def dead_end_rule_matches(rule: DeadEndRule, profile: LeadProfile, event: Event | None) -> bool:
    """A dead-end rule holds when any one of its tests does."""
    if rule.title_contains and any(has_term(profile.title, t) for t in rule.title_contains):
        return True
    domain = profile.email_domain
    if rule.email_domains and domain is not None:
        for listed in rule.email_domains:
            listed = listed.lower().lstrip("@")
            if domain == listed or domain.endswith("." + listed):
                return True
    if rule.invalid_email and profile.email and not _EMAIL.match(profile.email):
        return True
    return (
        rule.event is not None and event is not None and conditions.event_matches(rule.event, event)
    )


# --------------------------------------------------------------------------- the machine


class _Machine:
    """Mutable working copy of a :class:`LeadState`; ``freeze`` returns the immutable one."""

    def __init__(self, state: LeadState, model: LeadModel) -> None:
        self.model = model
        self.lead = state.lead
        self.profile = state.profile
        self.stage = state.stage
        self.stage_since = state.stage_since
        self.pause_until = state.pause_until
        self.watch_since = state.watch_since
        self.history = list(state.history)
        self.signals = list(state.signals)
        self.events = list(state.events)
        self.actions = list(state.actions)
        self.counter = EngagementCounter(model, state.occurrences)
        self.ceiling = positive_ceiling(state.occurrences)
        self.seen = set(state.seen)
        self.clock = state.clock
        self.last_key = state.last_key
        self.new_changes: list[StageChange] = []
        self.new_signals: list[Signal] = []
        self.refusals: dict[str, str] = {}
        self._score_cache: tuple[datetime, float] | None = None

    def freeze(self) -> LeadState:
        return LeadState(
            lead=self.lead,
            profile=self.profile,
            stage=self.stage,
            stage_since=self.stage_since,
            pause_until=self.pause_until,
            history=tuple(self.history),
            signals=tuple(self.signals),
            events=tuple(self.events),
            actions=tuple(self.actions),
            occurrences=tuple(self.counter.occurrences),
            watch_since=self.watch_since,
            seen=frozenset(self.seen),
            clock=self.clock,
            last_key=self.last_key,
            model_hash=self.model.content_hash,
        )

    # -- time and moves

    def advance(self, at: datetime) -> None:
        spec = self.model.spec.stages[self.stage]
        if spec.recycle is not None and self.pause_until is not None and self.pause_until <= at:
            self.move(
                spec.recycle.return_to, self.pause_until, f"{STAGE_RULE}.{self.stage}.recycle", None
            )
        if self.clock is None or at > self.clock:
            self.clock = at

    def move(self, to: str, at: datetime, rule: str, cause: str | None) -> StageChange:
        change = StageChange(
            lead_id=self.lead.id,
            from_stage=self.stage,
            to_stage=to,
            at=at,
            rule=rule,
            model_version=self.model.version,
            cause=cause,
        )
        self.history.append(change)
        self.new_changes.append(change)
        self.stage, self.stage_since = to, at
        recycle = self.model.spec.stages[to].recycle
        self.pause_until = at + timedelta(days=recycle.pause_days) if recycle else None
        alert = self.model.spec.return_alert
        if alert is not None and to in alert.stages:
            self.watch_since = at
        elif alert is not None and to in alert.clear_at:
            self.watch_since = None
        return change

    def signal(self, name: str, at: datetime, rule: str, data: Mapping[str, Any]) -> None:
        sig = Signal(
            name=name,
            lead_id=self.lead.id,
            at=at,
            rule=rule,
            model_version=self.model.version,
            data=dict(data),
        )
        self.signals.append(sig)
        self.new_signals.append(sig)

    # -- events

    def step_event(self, event: Event) -> None:
        self.advance(event.occurred_at)
        self.events.append(event)
        self.seen.add(event.message_id)
        self.last_key = event_key(event)
        self.profile = merge_traits(self.profile, event)
        counted, _ = self.counter.add(event)
        self.ceiling += sum(o.points for o in counted if o.points > 0)
        self._score_cache = None
        self.evaluate(event)
        if event.type == "page":
            self.check_return(event)

    def score_at(self, at: datetime) -> float:
        if self._score_cache is None or self._score_cache[0] != at:
            self._score_cache = (at, total_at(self.counter.occurrences, at))
        return self._score_cache[1]

    def holds(self, cond: Condition, event: Event) -> bool:
        return conditions.holds(cond, self, event)

    def next_move(self, event: Event) -> tuple[str, str] | None:
        """The nearest stage an automatic rule moves the lead to now, and the rule's name."""
        model, here = self.model, self.stage
        floor = model.rank(here)
        best: tuple[int, str, str] | None = None

        def offer(to: str, rule: str) -> None:
            nonlocal best
            rank = model.rank(to)
            if to == here or (floor >= 0 and rank <= floor):
                return
            key = rank if rank >= 0 else len(model.stage_order)
            if best is None or key < best[0]:
                best = (key, to, rule)

        for fp in model.spec.fastpass:
            if here in fp.from_ and self.holds(fp.when, event):
                offer(fp.to, f"{FASTPASS_RULE}.{fp.id}")
        for name, spec in model.spec.stages.items():
            if here not in model.criteria_from[name]:
                continue
            for i, cond in enumerate(spec.enter_when):
                if self.holds(cond, event):
                    offer(name, f"{STAGE_RULE}.{name}.enter_when[{i}]")
                    break
        return (best[1], best[2]) if best else None

    def evaluate(self, event: Event) -> None:
        at, dead = event.occurred_at, self.model.dead_end_stage
        for _ in range(len(self.model.stages) + 1):
            if self.stage == dead:
                return
            if self.stage in self.model.dead_end_from:
                for rule in self.model.spec.dead_end.rules:
                    if dead_end_rule_matches(rule, self.profile, event):
                        self.move(dead, at, f"dead_end.{rule.id}", event.message_id)
                        return
            target = self.next_move(event)
            if target is None:
                return
            self.move(target[0], at, target[1], event.message_id)

    def check_return(self, event: Event) -> None:
        spec = self.model.spec.return_alert
        if spec is None:
            return
        at = event.occurred_at
        since, rule = self.watch_since, RETURN_RULE
        extra: dict[str, Any] = {"watch": "lead"}
        if since is None:
            watch = (
                account_watch_at(self.profile.account_watch, at)
                if spec.when_account_lost and self.stage != self.model.dead_end_stage
                else None
            )
            if watch is not None:
                since, rule = watch.since, ACCOUNT_RETURN_RULE
                extra = {
                    "watch": "account",
                    "account_id": self.profile.account_id,
                    "lost_at": watch.since,
                    "lost_lead_id": watch.lost_lead_id,
                }
            elif not (spec.when_account_lost and self.profile.account_lost_opportunity):
                return
        window = timedelta(days=spec.window_days)
        visits: list[Event] = []
        for past in reversed(self.events):
            if past.occurred_at <= at - window or (since is not None and past.occurred_at < since):
                break
            if past.type == "page":
                visits.append(past)
        last = next((s.at for s in reversed(self.signals) if s.name == RETURNING), None)
        if returning_alert(
            [v.occurred_at for v in visits],
            at,
            last_alert_at=last,
            visits_needed=spec.visits,
            window=window,
        ):
            self.signal(
                RETURNING,
                at,
                rule,
                {
                    "stage": self.stage,
                    "visits": len(visits),
                    "window_days": spec.window_days,
                    "message_id": event.message_id,
                    "page_url": event.page_url,
                    # What they looked at, oldest first.
                    "pages": [v.page_url for v in reversed(visits)],
                    **extra,
                },
            )

    # -- sales actions

    def step_action(self, action: SalesAction) -> str | None:
        """Apply an action; return the refusal reason, or None when it took effect."""
        self.advance(action.at)
        self.actions.append(action)
        self.seen.add(f"action:{action.action_id}")
        self.last_key = action_key(action)
        reason = self.refuse(action)
        if reason is not None:
            self.refusals[action.action_id] = reason
            return reason
        spec = self.model.spec.actions.get(action.name)
        if spec is None:  # the built-in OPEN_DEAL (refuse() checked it)
            target = self.model.stage_for("opportunity")
            assert target is not None
            self.move(target, action.at, f"actions.{action.name}", action.action_id)
            return None
        if action.bant is not None:
            self.profile = replace(self.profile, bant=action.bant)
        self.move(spec.to, action.at, f"actions.{action.name}", action.action_id)
        return None

    def refuse(self, action: SalesAction) -> str | None:
        spec = self.model.spec.actions.get(action.name)
        if spec is None and action.name == OPEN_DEAL:
            return self._refuse_open_deal()
        if spec is None:
            return f"unknown action '{action.name}'"
        if self.stage not in spec.from_:
            allowed = ", ".join(spec.from_)
            return f"cannot {action.name} a lead in stage '{self.stage}' (allowed from: {allowed})"
        if spec.requires_amount and (action.amount is None or action.amount <= 0):
            return f"{action.name} needs an amount greater than 0"
        if spec.requires_qualification:
            bant = action.bant if action.bant is not None else self.profile.bant
            try:
                q = score_qualification(bant, self.model)
            except ValueError as exc:
                return str(exc)
            if not q.ready_for_handoff:
                return f"BANT score {q.score:g} is below the hand-off threshold {q.threshold:g}"
        return None

    def _refuse_open_deal(self) -> str | None:
        target = self.model.stage_for("opportunity")
        if target is None:
            return "the model names no stage with role 'opportunity'"
        role = self.model.role_of(self.stage)
        if role not in OPEN_DEAL_FROM_ROLES:
            return f"cannot {OPEN_DEAL} a lead in stage '{self.stage}' (role {role})"
        return None


# --------------------------------------------------------------------------- public API


def new_lead(lead: LeadProfile, model: LeadModel) -> LeadState:
    """A lead nothing has happened to yet: in the model's initial stage."""
    return LeadState(
        lead=lead, profile=lead, stage=model.initial_stage, model_hash=model.content_hash
    )


def _run(
    lead: LeadProfile,
    events: Iterable[Event],
    actions: Iterable[SalesAction],
    model: LeadModel,
    until: datetime | None,
) -> _Machine:
    machine = _Machine(new_lead(lead, model), model)
    unique_actions: dict[str, SalesAction] = {}
    for action in actions:
        unique_actions.setdefault(action.action_id, action)
    inputs: list[tuple[InputKey, Event | SalesAction]] = [(event_key(e), e) for e in dedupe(events)]
    inputs += [(action_key(a), a) for a in unique_actions.values()]
    inputs.sort(key=lambda pair: pair[0])
    for key, item in inputs:
        if until is not None and key[0] > until:
            break
        if isinstance(item, Event):
            machine.step_event(item)
        else:
            machine.step_action(item)
    if until is not None:
        machine.advance(until)
    return machine


def replay(
    lead: LeadProfile,
    events: Iterable[Event],
    model: LeadModel,
    *,
    actions: Iterable[SalesAction] = (),
    as_of: datetime | None = None,
) -> LeadState:
    """Recompute a lead from all its events and sales actions (batch).

    Duplicates are dropped, inputs are processed in event-time order; with ``as_of`` only
    inputs up to ``as_of`` count and time is advanced to it (pauses ending by then end).
    """
    events = list(events)
    actions = list(actions)
    for item in events:
        _check_lead(lead.id, item.lead_id)
    for action in actions:
        _check_lead(lead.id, action.lead_id)
    return _run(lead, events, actions, model, as_of).freeze()


def _check_lead(lead_id: int, other: int | None) -> None:
    if other is not None and other != lead_id:
        raise ValueError(f"input for lead {other} given to lead {lead_id}")


def _in_order(state: LeadState, key: InputKey, model: LeadModel) -> bool:
    if state.model_hash != model.content_hash:
        return False
    if state.last_key is not None and key <= state.last_key:
        return False
    return state.clock is None or key[0] >= state.clock


def _recompute(
    old: LeadState,
    model: LeadModel,
    events: Iterable[Event],
    actions: Iterable[SalesAction],
    until: datetime | None = None,
) -> tuple[_Machine, list[StageChange], list[Signal]]:
    machine = _run(old.lead, events, actions, model, until or old.clock)
    new_history = set(machine.history)
    old_history = set(old.history)
    added = [c for c in machine.history if c not in old_history]
    removed = [c for c in old.history if c not in new_history]
    old_signals = set((s.name, s.at, s.rule) for s in old.signals)
    signals = [s for s in machine.signals if (s.name, s.at, s.rule) not in old_signals]
    if removed:
        at = machine.clock or removed[0].at
        signals.append(
            Signal(
                name=HISTORY_REVISED,
                lead_id=old.lead.id,
                at=at,
                rule="recompute",
                model_version=model.version,
                data={"removed": tuple(removed), "added": tuple(added)},
            )
        )
    return machine, added, signals


def apply_event(
    state: LeadState, event: Event, model: LeadModel
) -> tuple[LeadState, list[StageChange], list[Signal]]:
    """Fold one event into a lead. A repeated ``message_id`` is ignored; an event out of
    event-time order makes the lead recompute from its full input set (see module docs)."""
    _check_lead(state.lead.id, event.lead_id)
    if event.message_id in state.seen and state.model_hash == model.content_hash:
        return state, [], []
    if _in_order(state, event_key(event), model):
        machine = _Machine(state, model)
        machine.step_event(event)
        return machine.freeze(), machine.new_changes, machine.new_signals
    events = [*state.events, event]
    machine, added, signals = _recompute(state, model, events, state.actions)
    return machine.freeze(), added, signals


def apply_events(state: LeadState, events: Iterable[Event], model: LeadModel) -> LeadState:
    """Fold several events: the same state as :func:`apply_event` for each in event-time
    order, but with one machine when they all come after what the state has seen (the live
    path's case: the cost is the new inputs, not a copy of the lead's history per event)."""
    fresh = state.model_hash == model.content_hash
    pending = sorted(
        (e for e in events if not (fresh and e.message_id in state.seen)), key=event_key
    )
    for event in pending:
        _check_lead(state.lead.id, event.lead_id)
    if not pending:
        return state
    if not _in_order(state, event_key(pending[0]), model):
        for event in pending:
            state, _, _ = apply_event(state, event, model)
        return state
    machine = _Machine(state, model)
    for event in pending:
        if event.message_id not in machine.seen:
            machine.step_event(event)
    return machine.freeze()


def advance(
    state: LeadState, at: datetime, model: LeadModel
) -> tuple[LeadState, list[StageChange], list[Signal]]:
    """Let time pass to ``at`` with no event: a recycle pause that ended by then ends (the
    change is stamped with the pause's end). Earlier times change nothing."""
    if state.model_hash != model.content_hash:
        until = at if state.clock is None or at > state.clock else state.clock
        machine, added, signals = _recompute(state, model, state.events, state.actions, until)
        return machine.freeze(), added, signals
    if state.clock is not None and at <= state.clock:
        return state, [], []
    if state.pause_until is None or state.pause_until > at:
        # Nothing is due by ``at`` (only a recycle pause ends with time): the clock moves.
        return replace(state, clock=at), [], []
    machine = _Machine(state, model)
    machine.advance(at)
    return machine.freeze(), machine.new_changes, machine.new_signals


def apply_action(state: LeadState, action: SalesAction, model: LeadModel) -> ActionOutcome:
    """Apply a sales action. A refused action leaves the state as it was and says why; an
    action id seen before returns the state unchanged with the change it caused then."""
    _check_lead(state.lead.id, action.lead_id)
    if f"action:{action.action_id}" in state.seen and state.model_hash == model.content_hash:
        earlier = next((c for c in state.history if c.cause == action.action_id), None)
        refusal = None if earlier else "this action was already applied and had no effect"
        return ActionOutcome(state=state, change=earlier, refusal=refusal)
    if _in_order(state, action_key(action), model):
        machine = _Machine(state, model)
        refusal = machine.step_action(action)
        if refusal is not None:
            return ActionOutcome(state=state, change=None, refusal=refusal)
        changes, signals = machine.new_changes, machine.new_signals
    else:
        machine, changes, signals = _recompute(state, model, state.events, [*state.actions, action])
        if action.action_id in machine.refusals:
            return ActionOutcome(
                state=state, change=None, refusal=machine.refusals[action.action_id]
            )
    change = next((c for c in machine.history if c.cause == action.action_id), None)
    return ActionOutcome(
        state=machine.freeze(),
        change=change,
        refusal=None,
        changes=tuple(changes),
        signals=tuple(signals),
    )


def _action(
    name: str,
    state: LeadState,
    model: LeadModel,
    at: datetime,
    action_id: str,
    **extra: Any,
) -> ActionOutcome:
    action = SalesAction(action_id=action_id, name=name, at=at, lead_id=state.lead.id, **extra)
    return apply_action(state, action, model)


def accept(
    state: LeadState, model: LeadModel, *, at: datetime, action_id: str, actor: str | None = None
) -> ActionOutcome:
    """Sales accepted the lead and set a meeting (MQL -> appointment)."""
    return _action("accept", state, model, at, action_id, actor=actor)


def not_now(
    state: LeadState,
    model: LeadModel,
    *,
    at: datetime,
    action_id: str,
    reason: str | None = None,
    actor: str | None = None,
) -> ActionOutcome:
    """ "Not evaluating for now": appointment -> recycle A, with its mail pause."""
    return _action("not_now", state, model, at, action_id, reason=reason, actor=actor)


def qualify(
    state: LeadState,
    model: LeadModel,
    *,
    at: datetime,
    action_id: str,
    amount: float | None,
    bant: Bant | None = None,
    actor: str | None = None,
) -> ActionOutcome:
    """Sales qualified the lead (BANT at or above the hand-off threshold) with an amount."""
    return _action("qualify", state, model, at, action_id, amount=amount, bant=bant, actor=actor)


def win(
    state: LeadState,
    model: LeadModel,
    *,
    at: datetime,
    action_id: str,
    amount: float | None = None,
    actor: str | None = None,
) -> ActionOutcome:
    return _action("win", state, model, at, action_id, amount=amount, actor=actor)


def lose(
    state: LeadState,
    model: LeadModel,
    *,
    at: datetime,
    action_id: str,
    reason: str | None = None,
    actor: str | None = None,
) -> ActionOutcome:
    """The opportunity was lost: opportunity -> recycle B, with its mail pause."""
    return _action("lose", state, model, at, action_id, reason=reason, actor=actor)


# --------------------------------------------------------------------------- questions


def is_paused(state: LeadState, at: datetime) -> bool:
    """Is the lead in a recycle pause at ``at`` (no marketing mail)?"""
    return state.pause_until is not None and at < state.pause_until


def email_eligibility(state: LeadState, at: datetime, model: LeadModel) -> EmailEligibility:
    """May this lead get marketing e-mail at ``at`` as far as the lifecycle is concerned
    (stage, consent, recycle pause, an address)? Suppression lists are checked elsewhere."""
    spec = model.spec.stages[state.stage]
    if not spec.marketing_email:
        return EmailEligibility(False, f"stage '{state.stage}' gets no marketing e-mail")
    if not state.profile.email:
        return EmailEligibility(False, "no e-mail address")
    if state.profile.consent != "granted":
        return EmailEligibility(False, f"marketing consent is {state.profile.consent}")
    if is_paused(state, at):
        return EmailEligibility(False, "recycle pause", until=state.pause_until)
    return EmailEligibility(True, "eligible")


def returning_alert(
    visits: Iterable[datetime],
    at: datetime,
    *,
    last_alert_at: datetime | None,
    visits_needed: int = 3,
    window: timedelta = timedelta(days=14),
) -> bool:
    """Should ``lead.returning`` fire at ``at``? Yes when at least ``visits_needed`` visits
    fall in ``(at - window, at]`` and no alert fired in the window before ``at``."""
    if last_alert_at is not None and at - last_alert_at < window:
        return False
    return sum(1 for v in visits if at - window < v <= at) >= visits_needed


def account_clear_stages(model: LeadModel) -> frozenset[str]:
    """Stages whose entry by any person of an account ends the account's watch: the
    ``clear_at`` stages but the dead end."""
    spec = model.spec.return_alert
    if spec is None:
        return frozenset()
    return frozenset(spec.clear_at) - {model.dead_end_stage}


def account_watches(
    changes: Iterable[tuple[datetime, int, str]],
    lost_deals: Iterable[tuple[datetime, int | None]],
    model: LeadModel,
) -> tuple[AccountWatch, ...]:
    """When one account was watched for a return (``return_alert.when_account_lost``).

    ``changes`` are the stage changes ``(at, lead_id, to_stage)`` of every person of the
    account, ``lost_deals`` its lost opportunities ``(closed_at, lead_id)``. A deal lost - a
    person entering a ``return_alert.stages`` stage (recycle B), or an opportunity lost -
    starts a watch, unless one is running; a person entering a ``clear_at`` stage (sales
    works the account again) ends it - but not one going to the dead end (a student at the
    account says nothing about its buying). At one instant a clear comes before a loss."""
    clears = account_clear_stages(model)
    spec = model.spec.return_alert
    if spec is None or not spec.when_account_lost:
        return ()
    moves: list[tuple[datetime, int, int | None]] = []
    for at, lead_id, stage in changes:
        if stage in clears:
            moves.append((at, 0, lead_id))
        elif stage in spec.stages:
            moves.append((at, 1, lead_id))
    moves += [(at, 1, lead_id) for at, lead_id in lost_deals]
    moves.sort(key=lambda m: (m[0], m[1], m[2] if m[2] is not None else -1))
    found: list[AccountWatch] = []
    running: AccountWatch | None = None
    for at, kind, lost_lead in moves:
        if kind == 1 and running is None:
            running = AccountWatch(since=at, lost_lead_id=lost_lead)
        elif kind == 0 and running is not None:
            found.append(replace(running, until=at))
            running = None
    if running is not None:
        found.append(running)
    return tuple(found)


def account_watch_at(watches: Iterable[AccountWatch], at: datetime) -> AccountWatch | None:
    """The account watch running at ``at``, if any."""
    for watch in watches:
        if watch.since <= at and (watch.until is None or at < watch.until):
            return watch
    return None


def check_return(
    state: LeadState,
    visits: Iterable[datetime],
    at: datetime,
    model: LeadModel,
    *,
    account_lost: bool | None = None,
) -> Signal | None:
    """The return alert for visits the fold does not see (e.g. anonymous visitors from an
    account that lost a deal): the ``lead.returning`` signal to emit now, or None."""
    spec = model.spec.return_alert
    if spec is None:
        return None
    lost = state.profile.account_lost_opportunity if account_lost is None else account_lost
    if state.watch_since is None and not (spec.when_account_lost and lost):
        return None
    last = next((s.at for s in reversed(state.signals) if s.name == RETURNING), None)
    window = timedelta(days=spec.window_days)
    times = list(visits)
    if not returning_alert(times, at, last_alert_at=last, visits_needed=spec.visits, window=window):
        return None
    return Signal(
        name=RETURNING,
        lead_id=state.lead.id,
        at=at,
        rule=RETURN_RULE,
        model_version=model.version,
        data={
            "stage": state.stage,
            "visits": sum(1 for v in times if at - window < v <= at),
            "window_days": spec.window_days,
        },
    )
