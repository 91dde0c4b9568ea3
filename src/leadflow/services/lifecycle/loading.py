"""What a recompute reads: base profiles (with their accounts' return-alert watches), the
stored state and input counts of leads (:data:`_LIVE`, one statement), their events and
sales actions."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import BindParameter, Connection, bindparam, func, null, select, union_all

from leadflow.adapters.db.tables import (
    accounts,
    events,
    lead_predictions,
    lead_states,
    leads,
    opportunities,
    sales_actions,
    stage_changes,
)
from leadflow.core.config import LeadModel
from leadflow.core.lifecycle import account_clear_stages, account_watches, base_consent
from leadflow.core.model import AccountWatch, Bant, Event, LeadProfile, SalesAction
from leadflow.services.lifecycle.cache import _Cached

CHUNK = 500


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
