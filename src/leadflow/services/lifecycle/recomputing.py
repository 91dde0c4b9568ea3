""":func:`recompute`: bring leads up to date (from the cache with their new inputs, or by a
replay) and write their state rows, stage log and signals."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from leadflow.adapters.db.engine import insert_ignore
from leadflow.adapters.db.tables import accounts, events, lead_states, signals
from leadflow.core.config import LeadModel
from leadflow.core.lifecycle import (
    ACCOUNT_RETURN_RULE,
    HISTORY_REVISED,
    RETURNING,
    LeadState,
    advance,
    apply_action,
    apply_events,
    replay,
)
from leadflow.core.model import Bant, Event, LeadProfile
from leadflow.core.scoring import score_fit, score_qualification, total_at
from leadflow.services.lifecycle.cache import StateCache, _Cached
from leadflow.services.lifecycle.history import _stored_changes, _sync_history
from leadflow.services.lifecycle.loading import (
    EVENT_COLUMNS,
    _chunks,
    _load_leads,
    _Stored,
    event_from_row,
    load_actions,
    load_events,
)
from leadflow.services.lifecycle.results import LeadOutcome, RecomputeResult


def _qualification_bant(state: LeadState) -> Bant:
    for action in reversed(state.actions):
        if action.bant is not None:
            return action.bant
    return state.profile.bant


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
        known = (
            {i: e for i in chunk if (e := cache.get(i)) is not None} if cache is not None else {}
        )
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
