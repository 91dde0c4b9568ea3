"""Scores and stages in the store: the pure stage machine applied to stored leads.

- :func:`recompute` replays the given leads under the active model (core
  :func:`~leadflow.core.lifecycle.replay`) inside the caller's transaction and writes the
  derived state (``lead_states``), the stage-history log (``stage_changes``) and signals.
  The ingestion service calls it for every lead a request touched, in the request's
  transaction (:func:`ingest_hook`): the event, the new scores and any stage change commit
  together or not at all.
- The log is append-only in practice: a recompute appends the changes the replay has that
  the log lacks. A late event that rewrites history (see the core's semantics) replaces the
  lead's log after the first difference, so the log always equals the replay.
- A model switch (:func:`apply_model`) keeps the history that happened: each lead whose
  stage differs under the new model gets one change ``rule = model.apply`` at the switch
  time, and its log mirrors the new model's replay from then on (``lead_states.epoch``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import (
    BindParameter,
    Connection,
    Engine,
    bindparam,
    delete,
    func,
    insert,
    null,
    select,
    union_all,
    update,
)

from leadflow.adapters.db.engine import insert_ignore
from leadflow.adapters.db.tables import (
    accounts,
    events,
    lead_models,
    lead_predictions,
    lead_states,
    leads,
    opportunities,
    sales_actions,
    signals,
    stage_changes,
)
from leadflow.core.config import LeadModel, load_default_model, load_model
from leadflow.core.lifecycle import (
    ACCOUNT_RETURN_RULE,
    HISTORY_REVISED,
    RETURNING,
    LeadState,
    account_clear_stages,
    account_watches,
    advance,
    apply_action,
    apply_events,
    base_consent,
    replay,
)
from leadflow.core.model import (
    AccountWatch,
    Bant,
    Event,
    FitScore,
    LeadProfile,
    SalesAction,
    StageChange,
)
from leadflow.core.scoring import score_fit, score_qualification, total_at

CHUNK = 500
MODEL_APPLY_RULE = "model.apply"


# --------------------------------------------------------------------------- models


class ModelCache:
    """The active model, parsed once per content hash (cheap to ask on every request)."""

    def __init__(self) -> None:
        self._parsed: dict[str, LeadModel] = {}

    def active(self, conn: Connection, now: datetime) -> LeadModel:
        """The active model; on a fresh database the shipped one is installed first."""
        found = self.installed(conn)
        if found is not None:
            return found
        model = load_default_model()
        install_model(conn, model, default_source(), now, activate=True)
        self._parsed[model.content_hash] = model
        return model

    def installed(self, conn: Connection) -> LeadModel | None:
        """The active model, or None on a database where none is installed yet (reads only:
        safe on a read-only connection)."""
        row = conn.execute(
            select(lead_models.c.content_hash, lead_models.c.source).where(lead_models.c.active)
        ).first()
        if row is None:
            return None
        cached = self._parsed.get(row.content_hash)
        if cached is None:
            cached = load_model(row.source)
            self._parsed[row.content_hash] = cached
        return cached


def default_source() -> str:
    from importlib import resources

    return resources.files("leadflow").joinpath("default.yaml").read_text(encoding="utf-8")


def install_model(
    conn: Connection, model: LeadModel, source: str, now: datetime, *, activate: bool
) -> None:
    """Store a model version (once per content hash); optionally make it the active one."""
    conn.execute(
        insert_ignore(conn.engine, lead_models, "content_hash").values(
            version=model.version,
            content_hash=model.content_hash,
            source=source,
            created_at=now,
            active=False,
        )
    )
    if activate:
        conn.execute(update(lead_models).where(lead_models.c.active).values(active=False))
        conn.execute(
            update(lead_models)
            .where(lead_models.c.content_hash == model.content_hash)
            .values(active=True, activated_at=now)
        )


def model_history(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(
            lead_models.c.version,
            lead_models.c.content_hash,
            lead_models.c.created_at,
            lead_models.c.activated_at,
            lead_models.c.active,
        ).order_by(lead_models.c.id)
    ).mappings()
    return [dict(r) for r in rows]


# --------------------------------------------------------------------------- inputs


_T = TypeVar("_T")


def _chunks(ids: Sequence[_T], size: int = CHUNK) -> Iterator[list[_T]]:
    for i in range(0, len(ids), size):
        yield list(ids[i : i + size])


def _bant(value: Any) -> Bant:
    if not isinstance(value, dict):
        return Bant()
    known = {k: value.get(k) for k in ("budget", "authority", "need", "timeframe")}
    clean = {
        k: v
        for k, v in known.items()
        if isinstance(v, str | int | float) and not isinstance(v, bool)
    }
    return Bant(**clean)


def load_account_watches(
    conn: Connection, account_ids: Iterable[int], model: LeadModel
) -> dict[int, tuple[AccountWatch, ...]]:
    """Each account's return-alert watches (core :func:`account_watches`), from the stage
    changes of all its people into the watched and ``clear_at`` stages and from its lost
    opportunities: derived, nothing stored."""
    spec = model.spec.return_alert
    ids = sorted(set(account_ids))
    if spec is None or not spec.when_account_lost or not ids:
        return {}
    wanted = sorted({*spec.stages, *account_clear_stages(model)})
    changes: dict[int, list[tuple[datetime, int, str]]] = defaultdict(list)
    lost: dict[int, list[tuple[datetime, int | None]]] = defaultdict(list)
    for part in _chunks(ids):
        # One statement: the people's stage changes and the account's lost opportunities
        # (``to_stage`` NULL marks an opportunity row).
        moves = (
            select(
                leads.c.account_id,
                stage_changes.c.at,
                stage_changes.c.lead_id,
                stage_changes.c.to_stage,
            )
            .join(leads, leads.c.id == stage_changes.c.lead_id)
            .where(leads.c.account_id.in_(part), stage_changes.c.to_stage.in_(wanted))
        )
        losses = select(
            opportunities.c.account_id,
            opportunities.c.closed_at,
            opportunities.c.lead_id,
            null().label("to_stage"),
        ).where(
            opportunities.c.account_id.in_(part),
            opportunities.c.stage == "lost",
            opportunities.c.closed_at.is_not(None),
        )
        for account_id, at, lead_id, to_stage in conn.execute(union_all(moves, losses)):
            if to_stage is None:
                lost[account_id].append((at, lead_id))
            else:
                changes[account_id].append((at, lead_id, to_stage))
    found = {}
    for account_id in changes.keys() | lost.keys():
        watches = account_watches(changes.get(account_id, ()), lost.get(account_id, ()), model)
        if watches:
            found[account_id] = watches
    return found


_PROFILE_COLUMNS = (
    leads.c.id,
    leads.c.consent_status,
    leads.c.consent_method,
    leads.c.attributes,
    leads.c.account_id,
    accounts.c.industry,
    accounts.c.employee_count,
    accounts.c.country,
    accounts.c.is_target,
    lead_predictions.c.probability,
)
_N_PROFILE = len(_PROFILE_COLUMNS)
_ACCOUNT_COLUMNS = (
    accounts.c.domain,
    accounts.c.external_id,
    accounts.c.owner,
)
"""Account fields the hand-off routes by, loaded with the profile and passed along."""
_PROFILE_FROM = leads.outerjoin(accounts, accounts.c.id == leads.c.account_id).outerjoin(
    lead_predictions, lead_predictions.c.lead_id == leads.c.id
)


def _profiles_from(
    conn: Connection,
    rows: Sequence[Any],
    model: LeadModel | None,
    known: Mapping[int, _Cached] | None = None,
) -> dict[int, LeadProfile]:
    """Profiles from rows of :data:`_PROFILE_COLUMNS`; a lead whose row and account watches
    are what its cached fold was built from (``known``) gets that fold's profile back."""
    watches = (
        load_account_watches(conn, {r.account_id for r in rows if r.account_id}, model)
        if model is not None
        else {}
    )
    profiles = {}
    for r in rows:
        watch = watches.get(r.account_id, ())
        cached = known.get(r.id) if known else None
        if cached is not None and cached.source == (tuple(r[:_N_PROFILE]), watch):
            profiles[r.id] = cached.fold.lead
            continue
        attributes = dict(r.attributes or {})
        # Contact details and title are left out on purpose: they arrive with identify
        # events (tracking, forms, imports all write one), so a replay learns them when
        # they were given - a lead is "acquired" at its sign-up, not at its first visit.
        profiles[r.id] = LeadProfile(
            id=r.id,
            industry=r.industry,
            employee_count=r.employee_count,
            country=r.country,
            is_target_account=bool(r.is_target),
            consent=base_consent(r.consent_status, r.consent_method),
            account_id=r.account_id,
            bant=_bant(attributes.get("bant")),
            attributes=attributes,
            predicted=r.probability,
            account_watch=watch,
        )
    return profiles


def load_profiles(
    conn: Connection, lead_ids: Sequence[int], model: LeadModel | None = None
) -> dict[int, LeadProfile]:
    """The base profiles of ``lead_ids``; with ``model``, each with its account's
    return-alert watches (``account_watch``)."""
    rows = conn.execute(
        select(*_PROFILE_COLUMNS).select_from(_PROFILE_FROM).where(leads.c.id.in_(lead_ids))
    ).all()
    return _profiles_from(conn, rows, model)


@dataclass(frozen=True, slots=True)
class _Stored:
    """What the store holds for a lead besides its inputs: its state row (None before the
    first recompute) and how many events and sales actions it has up to ``now``."""

    stage: str | None
    stage_since: datetime | None
    pause_until: datetime | None
    epoch: datetime | None
    revision: int | None
    events: int
    actions: int
    account: Mapping[str, Any]
    """The lead's account as routing reads it (empty without an account)."""
    source: tuple[Any, ...]
    """The profile columns as read (a cached fold's profile is reused while they match)."""


def _live_query() -> Any:
    """Profile, account, state row and input counts of leads (built once: building the
    statement per call costs more than running it)."""
    now: BindParameter[datetime] = bindparam("now", type_=events.c.occurred_at.type)
    n_events = (
        select(func.count())
        .where(events.c.lead_id == leads.c.id, events.c.occurred_at <= now)
        .scalar_subquery()
    )
    n_actions = (
        select(func.count())
        .where(sales_actions.c.lead_id == leads.c.id, sales_actions.c.at <= now)
        .scalar_subquery()
    )
    return (
        select(
            *_PROFILE_COLUMNS,
            *_ACCOUNT_COLUMNS,
            lead_states.c.stage,
            lead_states.c.stage_since,
            lead_states.c.pause_until,
            lead_states.c.epoch,
            lead_states.c.revision,
            n_events.label("n_events"),
            n_actions.label("n_actions"),
        )
        .select_from(_PROFILE_FROM.outerjoin(lead_states, lead_states.c.lead_id == leads.c.id))
        .where(leads.c.id.in_(bindparam("ids", expanding=True)))
    )


_LIVE = _live_query()


def _load_leads(
    conn: Connection,
    lead_ids: Sequence[int],
    model: LeadModel,
    now: datetime,
    known: Mapping[int, _Cached] | None = None,
) -> tuple[dict[int, LeadProfile], dict[int, _Stored]]:
    """Profiles and stored state of ``lead_ids`` in one statement (plus one for account
    watches): the input counts let a cached fold be checked without reading every id."""
    rows = conn.execute(_LIVE, {"ids": list(lead_ids), "now": now}).all()
    stored = {
        r.id: _Stored(
            stage=r.stage,
            stage_since=r.stage_since,
            pause_until=r.pause_until,
            epoch=r.epoch,
            revision=r.revision,
            events=r.n_events,
            actions=r.n_actions,
            account={
                "account_id": r.account_id,
                "industry": r.industry,
                "country": r.country,
                "domain": r.domain,
                "external_id": r.external_id,
                "owner": r.owner,
            }
            if r.account_id is not None
            else {},
            source=tuple(r[:_N_PROFILE]),
        )
        for r in rows
    }
    return _profiles_from(conn, rows, model, known), stored


def event_from_row(row: Any) -> Event:
    props = row.properties or {}
    if row.type in ("identify", "group"):
        traits = props.get("traits")
        props = traits if isinstance(traits, dict) else {}
    return Event(
        message_id=row.message_id,
        type=row.type,
        occurred_at=row.occurred_at,
        lead_id=row.lead_id,
        name=row.name,
        properties=props,
        page_url=row.page_url,
        referrer=row.referrer,
        utm_campaign=row.utm_campaign,
        utm_source=row.utm_source,
        utm_medium=row.utm_medium,
        channel=row.channel,
    )


EVENT_COLUMNS = (
    events.c.message_id,
    events.c.type,
    events.c.occurred_at,
    events.c.lead_id,
    events.c.name,
    events.c.properties,
    events.c.page_url,
    events.c.referrer,
    events.c.utm_campaign,
    events.c.utm_source,
    events.c.utm_medium,
    events.c.channel,
)


def load_events(conn: Connection, lead_ids: Sequence[int]) -> dict[int, list[Event]]:
    found: dict[int, list[Event]] = defaultdict(list)
    rows = conn.execute(
        select(*EVENT_COLUMNS)
        .where(events.c.lead_id.in_(lead_ids))
        .order_by(events.c.lead_id, events.c.occurred_at, events.c.id)
    )
    for row in rows:
        found[row.lead_id].append(event_from_row(row))
    return found


def load_actions(conn: Connection, lead_ids: Sequence[int]) -> dict[int, list[SalesAction]]:
    found: dict[int, list[SalesAction]] = defaultdict(list)
    rows = conn.execute(
        select(sales_actions)
        .where(sales_actions.c.lead_id.in_(lead_ids))
        .order_by(sales_actions.c.at, sales_actions.c.id)
    ).mappings()
    for r in rows:
        found[r["lead_id"]].append(
            SalesAction(
                action_id=r["action_id"],
                name=r["name"],
                at=r["at"],
                lead_id=r["lead_id"],
                amount=r["amount"],
                bant=_bant(r["bant"]) if r["bant"] else None,
                reason=r["reason"],
                actor=r["actor"],
            )
        )
    return found


# --------------------------------------------------------------------------- recompute


@dataclass(slots=True)
class RecomputeResult:
    leads: int = 0
    changes_added: int = 0
    changes_removed: int = 0
    signals_added: int = 0
    incremental: int = 0
    """Leads brought up to date from the cache with only their new inputs."""
    stages: dict[int, str] = field(default_factory=dict)
    outcomes: dict[int, LeadOutcome] = field(default_factory=dict)
    """Per lead: what the recompute decided, for the handlers that act on it."""


@dataclass(frozen=True, slots=True)
class LeadOutcome:
    """A lead after a recompute, passed along so that no handler reads it back."""

    lead_id: int
    before: str | None
    """The stored stage before this recompute (None: the lead had no state yet)."""
    state: LeadState
    """The fold advanced to the recompute's time."""
    engagement: float
    fit: float
    qualification: float
    account: Mapping[str, Any]
    """The lead's account as the store held it (id, industry, country, domain,
    external_id, owner), empty without one."""

    @property
    def stage(self) -> str:
        return self.state.stage

    @property
    def entry_rule(self) -> str | None:
        """The rule of the change that entered the current stage."""
        last = self.state.history[-1] if self.state.history else None
        return last.rule if last is not None and last.to_stage == self.state.stage else None


@dataclass(frozen=True, slots=True)
class StoredChange:
    """A row of the stage log as the services layer needs it."""

    id: int
    from_stage: str
    to_stage: str
    at: datetime
    rule: str


@dataclass(slots=True)
class _Cached:
    revision: int
    model_hash: str
    epoch: datetime | None
    fold: LeadState
    """Every input folded in, time not advanced past the last input."""
    stored: list[StoredChange]
    events: int
    """Events folded in (the store's count up to the fold's time must match)."""
    actions: int
    source: tuple[tuple[Any, ...], tuple[AccountWatch, ...]] | None = None
    """The profile columns and account watches the fold's profile was built from."""
    scored: tuple[LeadProfile, Bant, FitScore, float] | None = None
    """The profile and BANT last scored, with their fit and qualification scores: reused
    while the fold still holds the same objects (most events change neither)."""


class StateCache:
    """Per-process cache of folded lead states, so a request costs its new events, not the
    lead's whole history. An entry is used only while ``lead_states.revision`` (bumped by
    every write, from any process), the model, the epoch, the base profile and the set of
    stored inputs all still match; otherwise the lead is replayed from the store."""

    def __init__(self, max_leads: int = 20_000) -> None:
        self.max_leads = max_leads
        self._entries: OrderedDict[int, _Cached] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, lead_id: int) -> _Cached | None:
        with self._lock:
            entry = self._entries.get(lead_id)
            if entry is not None:
                self._entries.move_to_end(lead_id)
            return entry

    def put(self, lead_id: int, entry: _Cached) -> None:
        with self._lock:
            self._entries[lead_id] = entry
            self._entries.move_to_end(lead_id)
            while len(self._entries) > self.max_leads:
                self._entries.popitem(last=False)

    def drop(self, lead_id: int) -> None:
        with self._lock:
            self._entries.pop(lead_id, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def _replay_stage_at(state: LeadState, at: datetime, initial: str) -> str:
    stage = initial
    for change in state.history:
        if change.at <= at:
            stage = change.to_stage
        else:
            break
    return stage


def _same(row: StoredChange, change: StageChange) -> bool:
    return (
        row.from_stage == change.from_stage
        and row.to_stage == change.to_stage
        and row.at == change.at
        and row.rule == change.rule
    )


def _change_row(change: StageChange, now: datetime) -> dict[str, Any]:
    return {
        "lead_id": change.lead_id,
        "from_stage": change.from_stage,
        "to_stage": change.to_stage,
        "at": change.at,
        "rule": change.rule,
        "model_version": change.model_version,
        "cause": change.cause,
        "recorded_at": now,
    }


def _insert_changes(conn: Connection, rows: list[dict[str, Any]]) -> list[StoredChange]:
    if not rows:
        return []
    ids = conn.execute(
        insert(stage_changes).returning(stage_changes.c.id, sort_by_parameter_order=True), rows
    ).scalars()
    return [
        StoredChange(
            id=i, from_stage=r["from_stage"], to_stage=r["to_stage"], at=r["at"], rule=r["rule"]
        )
        for i, r in zip(ids, rows, strict=True)
    ]


def _sync_history(
    conn: Connection,
    state: LeadState,
    stored: list[StoredChange],
    epoch: datetime | None,
    model: LeadModel,
    now: datetime,
    result: RecomputeResult,
) -> list[StoredChange]:
    """Make the stored log equal the replay (after ``epoch``, when the model was switched);
    return the log as it is now stored."""
    replayed = list(state.history)
    before: list[StoredChange] = []
    after = stored
    if epoch is not None:
        before = [r for r in stored if r.at <= epoch]
        after = [r for r in stored if r.at > epoch]
        replayed = [c for c in replayed if c.at > epoch]
        want = _replay_stage_at(state, epoch, model.initial_stage)
        have = before[-1].to_stage if before else model.initial_stage
        if want != have:
            last = before[-1] if before else None
            if last is not None and last.rule == MODEL_APPLY_RULE and last.at == epoch:
                if last.from_stage == want:
                    conn.execute(delete(stage_changes).where(stage_changes.c.id == last.id))
                    before.pop()
                else:
                    conn.execute(
                        update(stage_changes)
                        .where(stage_changes.c.id == last.id)
                        .values(to_stage=want)
                    )
                    before[-1] = replace(last, to_stage=want)
            else:
                before += _insert_changes(
                    conn,
                    [
                        {
                            "lead_id": state.lead_id,
                            "from_stage": have,
                            "to_stage": want,
                            "at": epoch,
                            "rule": MODEL_APPLY_RULE,
                            "model_version": model.version,
                            "cause": f"model:{model.version}",
                            "recorded_at": now,
                        }
                    ],
                )
                result.changes_added += 1
    keep = 0
    while keep < len(after) and keep < len(replayed) and _same(after[keep], replayed[keep]):
        keep += 1
    stale = [r.id for r in after[keep:]]
    if stale:
        conn.execute(delete(stage_changes).where(stage_changes.c.id.in_(stale)))
        result.changes_removed += len(stale)
    fresh = _insert_changes(conn, [_change_row(c, now) for c in replayed[keep:]])
    result.changes_added += len(fresh)
    return before + after[:keep] + fresh


def _qualification_bant(state: LeadState) -> Bant:
    for action in reversed(state.actions):
        if action.bant is not None:
            return action.bant
    return state.profile.bant


def _stored_changes(conn: Connection, lead_ids: Sequence[int]) -> dict[int, list[StoredChange]]:
    found: dict[int, list[StoredChange]] = defaultdict(list)
    for row in conn.execute(
        select(
            stage_changes.c.id,
            stage_changes.c.lead_id,
            stage_changes.c.from_stage,
            stage_changes.c.to_stage,
            stage_changes.c.at,
            stage_changes.c.rule,
        )
        .where(stage_changes.c.lead_id.in_(lead_ids))
        .order_by(stage_changes.c.lead_id, stage_changes.c.at, stage_changes.c.id)
    ):
        found[row.lead_id].append(
            StoredChange(
                id=row.id,
                from_stage=row.from_stage,
                to_stage=row.to_stage,
                at=row.at,
                rule=row.rule,
            )
        )
    return found


def _fold_new(
    conn: Connection,
    entries: dict[int, _Cached],
    profiles: dict[int, LeadProfile],
    stored: dict[int, _Stored],
    model: LeadModel,
    now: datetime,
    passed: Mapping[int, Sequence[Event]] | None,
) -> dict[int, tuple[LeadState, int, int]]:
    """Bring cached folds up to date with only their new inputs; a lead whose cache no
    longer matches the store (the profile changed, an input vanished or came another way)
    is left out, to be replayed. Returns each fold with the events and actions it holds.

    ``passed``: the events this unit of work stored, by lead. With them, a lead whose
    stored event count is what the cache holds plus those is brought up to date without
    reading its events back; without them, the new events are found by id."""
    if not entries:
        return {}
    usable = {
        i: e
        for i, e in entries.items()
        if profiles.get(i) is not None and e.fold.lead == profiles[i]
    }
    fresh_events: dict[int, list[Event]] = defaultdict(list)
    by_id = [i for i in usable if passed is None]
    for lead_id in list(usable):
        if passed is None:
            break
        entry = usable[lead_id]
        new = [
            e
            for e in passed.get(lead_id, ())
            if e.message_id not in entry.fold.seen and e.occurred_at <= now
        ]
        if entry.events + len(new) == stored[lead_id].events:
            fresh_events[lead_id] = new
        else:  # events arrived another way: find them by id
            by_id.append(lead_id)
    if by_id:
        stored_ids: dict[int, set[str]] = defaultdict(set)
        new_ids: list[str] = []
        for lead_id, message_id, at in conn.execute(
            select(events.c.lead_id, events.c.message_id, events.c.occurred_at).where(
                events.c.lead_id.in_(by_id)
            )
        ):
            stored_ids[lead_id].add(message_id)
            if message_id not in usable[lead_id].fold.seen and at <= now:
                new_ids.append(message_id)
        for lead_id in by_id:
            seen_events = {m for m in usable[lead_id].fold.seen if not m.startswith("action:")}
            if not seen_events <= stored_ids[lead_id]:
                del usable[lead_id]  # an event vanished: replay
        for part in _chunks(new_ids):
            for row in conn.execute(select(*EVENT_COLUMNS).where(events.c.message_id.in_(part))):
                if row.lead_id in usable:
                    fresh_events[row.lead_id].append(event_from_row(row))
    moved = [i for i, e in usable.items() if e.actions != stored[i].actions]
    actions_by_lead = load_actions(conn, moved) if moved else {}
    folded: dict[int, tuple[LeadState, int, int]] = {}
    for lead_id, entry in usable.items():
        fold = entry.fold
        new_events = fresh_events.get(lead_id, [])
        fold = apply_events(fold, new_events, model)
        actions = entry.actions
        for action in actions_by_lead.get(lead_id, ()):
            if f"action:{action.action_id}" not in fold.seen and action.at <= now:
                fold = apply_action(fold, action, model).state
                actions += 1
        if actions != stored[lead_id].actions:
            continue  # an action vanished: replay
        folded[lead_id] = (fold, entry.events + len(new_events), actions)
    return folded


def recompute(
    conn: Connection,
    lead_ids: Iterable[int],
    model: LeadModel,
    now: datetime,
    *,
    cache: StateCache | None = None,
    passed: Mapping[int, Sequence[Event]] | None = None,
) -> RecomputeResult:
    """Bring ``lead_ids`` up to date under ``model`` as of ``now`` and store what changed.

    With a ``cache``, leads whose cached fold still matches the store are advanced with
    their new inputs only (``passed``: the events the caller just stored, so they need not
    be read back); the others are replayed from all their events (the result is the same
    either way: batch equals incremental)."""
    result = RecomputeResult()
    ids = sorted(set(lead_ids))
    for chunk in _chunks(ids):
        known = {i: e for i in chunk if (e := cache.get(i)) is not None} if cache else {}
        profiles, rows = _load_leads(conn, chunk, model, now, known)
        usable: dict[int, _Cached] = {}
        if cache is not None:
            for lead_id in chunk:
                entry = known.get(lead_id)
                row = rows.get(lead_id)
                if (
                    entry is not None
                    and row is not None
                    and entry.revision == row.revision
                    and entry.model_hash == model.content_hash
                    and entry.epoch == row.epoch
                ):
                    usable[lead_id] = entry
        folds = _fold_new(conn, usable, profiles, rows, model, now, passed)
        full = [i for i in chunk if i in profiles and i not in folds]
        if full:
            lead_events = load_events(conn, full)
            lead_actions = load_actions(conn, full)
            for lead_id in full:
                had_events = [e for e in lead_events.get(lead_id, ()) if e.occurred_at <= now]
                had_actions = [a for a in lead_actions.get(lead_id, ()) if a.at <= now]
                fold = replay(profiles[lead_id], had_events, model, actions=had_actions)
                folds[lead_id] = (fold, len(had_events), len(had_actions))
            stored_full = _stored_changes(conn, full)
        else:
            stored_full = {}
        upserts: list[dict[str, Any]] = []
        new_signals: list[dict[str, Any]] = []
        for lead_id in chunk:
            found = folds.get(lead_id)
            if found is None:  # merged away or erased meanwhile
                continue
            fold, n_events, n_actions = found
            state, _, _ = advance(fold, now, model)
            previous = rows[lead_id]
            exists = previous.revision is not None
            epoch = previous.epoch
            if lead_id in usable and lead_id not in stored_full:
                stored = usable[lead_id].stored
                result.incremental += 1
            else:
                stored = stored_full.get(lead_id, [])
            stored = _sync_history(conn, state, stored, epoch, model, now, result)
            revision = (previous.revision or 0) + 1
            bant = _qualification_bant(state)
            scored = usable[lead_id].scored if lead_id in usable else None
            same_scores = scored is not None and scored[0] is state.profile and scored[1] is bant
            if scored is not None and same_scores:
                fit, qualification = scored[2], scored[3]
            else:
                fit = score_fit(state.profile, model)
                qualification = score_qualification(bant, model).score
            # The fold's counted occurrences, decayed to now: what score_engagement gives
            # for the same events, without matching every rule again.
            engagement = total_at(state.occurrences, now)
            upserts.append(
                {
                    "lead_id": lead_id,
                    "stage": state.stage,
                    "stage_since": state.stage_since,
                    "pause_until": state.pause_until,
                    "engagement": engagement,
                    "fit": fit.score,
                    "fit_grade": fit.grade,
                    "qualification": qualification,
                    "scored_at": now,
                    "model_version": model.version,
                    "model_hash": model.content_hash,
                    "epoch": epoch,
                    "revision": revision,
                    "updated_at": now,
                    "_exists": exists,
                    # Only the score moved (same stage, pause, fit, qualification, model):
                    "_light": same_scores
                    and (previous.stage, previous.stage_since, previous.pause_until)
                    == (state.stage, state.stage_since, state.pause_until),
                }
            )
            if cache is not None:
                cache.put(
                    lead_id,
                    _Cached(
                        revision=revision,
                        model_hash=model.content_hash,
                        epoch=epoch,
                        fold=fold,
                        stored=stored,
                        events=n_events,
                        actions=n_actions,
                        source=(previous.source, profiles[lead_id].account_watch),
                        scored=(state.profile, bant, fit, qualification),
                    ),
                )
            for sig in state.signals:
                if sig.name == HISTORY_REVISED:
                    continue
                new_signals.append(
                    {
                        "name": sig.name,
                        "lead_id": lead_id,
                        "at": sig.at,
                        "rule": sig.rule,
                        "model_version": sig.model_version,
                        "data": _plain(sig.data),
                        "created_at": now,
                    }
                )
            result.stages[lead_id] = state.stage
            result.outcomes[lead_id] = LeadOutcome(
                lead_id=lead_id,
                before=previous.stage,
                state=state,
                engagement=engagement,
                fit=fit.score,
                qualification=qualification,
                account=previous.account,
            )
            result.leads += 1
        _write_states(conn, upserts)
        _address_account_alerts(conn, new_signals)
        if new_signals:
            inserted = conn.execute(
                insert_ignore(conn.engine, signals, "name", "lead_id", "at", "rule"), new_signals
            )
            result.signals_added += max(inserted.rowcount or 0, 0)
    return result


def _address_account_alerts(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """An account's return alert is for the account's rep: ``data.account_owner``."""
    alerts = [
        r
        for r in rows
        if r["name"] == RETURNING
        and r["rule"] == ACCOUNT_RETURN_RULE
        and "account_owner" not in r["data"]
    ]
    ids = {r["data"].get("account_id") for r in alerts} - {None}
    if not ids:
        return
    owners = dict(
        conn.execute(select(accounts.c.id, accounts.c.owner).where(accounts.c.id.in_(ids))).all()
    )
    for r in alerts:
        r["data"] = {**r["data"], "account_owner": owners.get(r["data"].get("account_id"))}


_LIGHT = ("engagement", "scored_at", "revision", "updated_at")
_UPDATE_LIGHT = (
    update(lead_states)
    .where(lead_states.c.lead_id == bindparam("b_lead_id"))
    .values({k: bindparam(k) for k in _LIGHT})
)


def _write_states(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert new state rows; update the others, with only the score columns where only
    the score moved (the common case on the live path)."""
    new = [{k: v for k, v in r.items() if k[0] != "_"} for r in rows if not r["_exists"]]
    if new:
        conn.execute(insert(lead_states), new)
    light = [
        {"b_lead_id": r["lead_id"], **{k: r[k] for k in _LIGHT}}
        for r in rows
        if r["_exists"] and r["_light"]
    ]
    if light:
        conn.execute(_UPDATE_LIGHT, light)
    full = [
        {
            **{k: v for k, v in r.items() if k[0] != "_" and k != "lead_id"},
            "b_lead_id": r["lead_id"],
        }
        for r in rows
        if r["_exists"] and not r["_light"]
    ]
    if full:
        columns: dict[str, Any] = {k: bindparam(k) for k in full[0] if k != "b_lead_id"}
        conn.execute(
            update(lead_states)
            .where(lead_states.c.lead_id == bindparam("b_lead_id"))
            .values(columns),
            full,
        )


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


# --------------------------------------------------------------------------- bulk work


def all_lead_ids(conn: Connection) -> list[int]:
    return list(conn.execute(select(leads.c.id).order_by(leads.c.id)).scalars())


def recompute_all(
    engine: Engine,
    cache: ModelCache,
    now: datetime,
    *,
    lead_ids: Sequence[int] | None = None,
    progress: Callable[[int], None] | None = None,
    chunk: int = CHUNK,
) -> RecomputeResult:
    """Recompute many leads, one transaction per chunk (bounded memory, visible progress)."""
    total = RecomputeResult()
    with engine.connect() as conn:
        ids = list(lead_ids) if lead_ids is not None else all_lead_ids(conn)
    for part in _chunks(ids, chunk):
        with engine.begin() as conn:
            model = cache.active(conn, now)
            res = recompute(conn, part, model, now)
        total.leads += res.leads
        total.changes_added += res.changes_added
        total.changes_removed += res.changes_removed
        total.signals_added += res.signals_added
        if progress is not None:
            progress(len(part))
    return total


@dataclass(slots=True)
class ApplyReport:
    version: str
    content_hash: str
    previous_version: str | None
    leads: int = 0
    changed_stage: int = 0
    moves: dict[tuple[str, str], int] = field(default_factory=dict)


def apply_model(
    engine: Engine,
    cache: ModelCache,
    model: LeadModel,
    source: str,
    now: datetime,
    *,
    progress: Callable[[int], None] | None = None,
) -> ApplyReport:
    """Switch to ``model`` and recompute every lead. A lead whose stage differs under the
    new model gets one ``model.apply`` change now; history before the switch is kept."""
    with engine.begin() as conn:
        previous = cache.active(conn, now)
        install_model(conn, model, source, now, activate=True)
        ids = all_lead_ids(conn)
    report = ApplyReport(
        version=model.version, content_hash=model.content_hash, previous_version=previous.version
    )
    moves: dict[tuple[str, str], int] = defaultdict(int)
    for part in _chunks(ids):
        with engine.begin() as conn:
            before = {
                r.lead_id: r.stage
                for r in conn.execute(
                    select(lead_states.c.lead_id, lead_states.c.stage).where(
                        lead_states.c.lead_id.in_(part)
                    )
                )
            }
            # New epoch: the stored log stays as it happened; the new model's replay rules
            # from now on (the model.apply change is written by _sync_history).
            conn.execute(
                update(lead_states).where(lead_states.c.lead_id.in_(part)).values(epoch=now)
            )
            res = recompute(conn, part, model, now)
        for lead_id, stage in res.stages.items():
            old = before.get(lead_id, model.initial_stage)
            if old != stage:
                moves[(old, stage)] += 1
        report.leads += res.leads
        if progress is not None:
            progress(len(part))
    report.moves = dict(moves)
    report.changed_stage = sum(moves.values())
    return report


class ActionRefused(ValueError):
    """A sales action the stage machine refuses (wrong stage, BANT below the threshold...)."""


def current_state(conn: Connection, lead_id: int, model: LeadModel, as_of: datetime) -> LeadState:
    profile = load_profiles(conn, [lead_id], model).get(lead_id)
    if profile is None:
        raise LookupError(f"no lead with id {lead_id}")
    return replay(
        profile,
        load_events(conn, [lead_id]).get(lead_id, ()),
        model,
        actions=load_actions(conn, [lead_id]).get(lead_id, ()),
        as_of=as_of,
    )


def record_action(
    conn: Connection, action: SalesAction, model: LeadModel, now: datetime
) -> StageChange | None:
    """Apply a sales action to its lead inside the caller's transaction: refused actions
    raise :class:`ActionRefused` with the machine's reason and store nothing; accepted ones
    are stored (idempotent by ``action_id``) and the lead is recomputed."""
    assert action.lead_id is not None
    existing = conn.execute(
        select(sales_actions.c.lead_id).where(sales_actions.c.action_id == action.action_id)
    ).first()
    if existing is not None:
        if existing.lead_id != action.lead_id:
            raise ActionRefused(f"action_id {action.action_id!r} was used for another lead")
        return None
    state = current_state(conn, action.lead_id, model, max(now, action.at))
    outcome = apply_action(state, action, model)
    if outcome.refusal is not None:
        raise ActionRefused(outcome.refusal)
    bant = action.bant
    conn.execute(
        insert(sales_actions).values(
            action_id=action.action_id,
            lead_id=action.lead_id,
            name=action.name,
            at=action.at,
            amount=action.amount,
            bant=None
            if bant is None
            else {
                "budget": bant.budget,
                "authority": bant.authority,
                "need": bant.need,
                "timeframe": bant.timeframe,
            },
            reason=action.reason,
            actor=action.actor,
            created_at=now,
        )
    )
    recompute(conn, [action.lead_id], model, max(now, action.at))
    return outcome.change


def stage_counts(conn: Connection) -> dict[str, int]:
    rows = conn.execute(
        select(lead_states.c.stage, func.count()).group_by(lead_states.c.stage)
    ).all()
    return {stage: count for stage, count in rows}


def lead_history(conn: Connection, lead_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(stage_changes)
        .where(stage_changes.c.lead_id == lead_id)
        .order_by(stage_changes.c.at, stage_changes.c.id)
    ).mappings()
    return [dict(r) for r in rows]


def lead_signals(conn: Connection, lead_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(signals).where(signals.c.lead_id == lead_id).order_by(signals.c.at)
    ).mappings()
    return [dict(r) for r in rows]


def explain(conn: Connection, lead_id: int, model: LeadModel, as_of: datetime) -> dict[str, Any]:
    """Every rule that contributed to the lead's scores, before and after decay."""
    return explanation(current_state(conn, lead_id, model, as_of), model, as_of)


def explanation(state: LeadState, model: LeadModel, as_of: datetime) -> dict[str, Any]:
    """:func:`explain` for a state already folded to ``as_of`` (no reading)."""
    lead_id = state.lead_id
    engagement = state.engagement(as_of, model)
    fit = score_fit(state.profile, model)
    qualification = score_qualification(_qualification_bant(state), model)
    mql = model.mql_threshold
    return {
        "lead_id": lead_id,
        "as_of": as_of.isoformat(),
        "model_version": model.version,
        "model_hash": model.content_hash,
        "stage": state.stage,
        "stage_display": {
            "en": model.display_name(state.stage, "en"),
            "ko": model.display_name(state.stage, "ko"),
        },
        "paused_until": state.pause_until.isoformat() if state.pause_until else None,
        "engagement": {
            "total": engagement.total,
            "mql_threshold": mql,
            "half_life_days": model.spec.engagement.half_life_days,
            "rules": [
                {
                    "rule": c.rule_id,
                    "occurrences": c.occurrences,
                    "capped": c.capped,
                    "points_before_decay": c.points_before_decay,
                    "points_after_decay": c.points_after_decay,
                }
                for c in engagement.contributions
            ],
        },
        "fit": {
            "score": fit.score,
            "grade": fit.grade,
            "criteria": [
                {"criterion": c.criterion, "value": c.value, "points": c.points}
                for c in fit.contributions
            ],
        },
        "qualification": {
            "score": qualification.score,
            "threshold": qualification.threshold,
            "ready_for_handoff": qualification.ready_for_handoff,
            "criteria": [
                {
                    "criterion": c.criterion,
                    "level": c.level,
                    "weight": c.weight,
                    "points": c.points,
                }
                for c in qualification.contributions
            ],
        },
    }


__all__ = [
    "ActionRefused",
    "ApplyReport",
    "ModelCache",
    "RecomputeResult",
    "apply_model",
    "explain",
    "install_model",
    "recompute",
    "recompute_all",
    "record_action",
]
