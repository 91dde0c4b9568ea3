"""The live path as domain events and a declared table of their handlers.

What happens after inputs are stored is not an ordered list of callbacks that each read the
store again: each step is a handler of a domain event, takes what the previous step decided
and may publish the next event. All of it runs in the unit of work that stored the inputs
(one transaction): an acknowledgement means scores, stages and hand-offs are committed.

    InputsStored ──> lifecycle: recompute the leads ──> LeadsRecomputed
    LeadsRecomputed ──> hand-off: release departed leads, route the ones just made due

:data:`HANDLERS` is the whole table; :class:`Pipeline` is the after-ingest hook every
entrypoint gets from the composition root (``Services.after_ingest``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from leadflow.core.config import LeadModel
from leadflow.core.model import Event
from leadflow.services import handoff, lifecycle
from leadflow.services.ingest import STORED_EVENTS
from leadflow.services.lifecycle import LeadOutcome, ModelCache, StateCache


@dataclass(frozen=True, slots=True)
class InputsStored:
    """New inputs (events, traits) of ``lead_ids`` were stored in this unit of work."""

    lead_ids: frozenset[int]
    at: datetime
    events: Mapping[int, Sequence[Event]] | None = None
    """The stored events by lead, when the storing step knows them (else read back)."""


@dataclass(frozen=True, slots=True)
class LeadsRecomputed:
    """Leads were brought up to date: their new stage, scores and fold."""

    at: datetime
    model: LeadModel
    outcomes: Mapping[int, LeadOutcome]


DomainEvent = InputsStored | LeadsRecomputed


@dataclass(frozen=True, slots=True)
class Caches:
    """Per-process state the handlers share (built once in the composition root)."""

    models: ModelCache
    states: StateCache | None


Handler = Callable[[Connection, Any, Caches], Iterable[DomainEvent]]


def recompute_leads(conn: Connection, event: InputsStored, caches: Caches) -> list[DomainEvent]:
    model = caches.models.active(conn, event.at)
    result = lifecycle.recompute(
        conn, event.lead_ids, model, event.at, cache=caches.states, passed=event.events
    )
    return [LeadsRecomputed(event.at, model, result.outcomes)] if result.outcomes else []


def hand_off(conn: Connection, event: LeadsRecomputed, _caches: Caches) -> list[DomainEvent]:
    handoff.on_leads_recomputed(conn, event.model, event.outcomes.values(), event.at)
    return []


HANDLERS: Mapping[type, tuple[Handler, ...]] = {
    InputsStored: (recompute_leads,),
    LeadsRecomputed: (hand_off,),
}
"""Every domain event of the live path and the handlers it runs, in order."""


class Pipeline:
    """Publishes domain events to :data:`HANDLERS` inside the caller's transaction."""

    def __init__(
        self,
        models: ModelCache,
        states: StateCache | None = None,
        handlers: Mapping[type, tuple[Handler, ...]] = HANDLERS,
    ) -> None:
        self.caches = Caches(models, states)
        self.handlers = handlers

    def publish(self, conn: Connection, event: DomainEvent) -> None:
        pending: deque[DomainEvent] = deque([event])
        while pending:
            current = pending.popleft()
            for handler in self.handlers.get(type(current), ()):
                pending.extend(handler(conn, current, self.caches))

    def __call__(self, conn: Connection, lead_ids: set[int], received_at: datetime) -> None:
        """The after-ingest hook: the stored inputs, passed along when ingestion knows them."""
        if lead_ids:
            passed = conn.info.get(STORED_EVENTS)
            self.publish(conn, InputsStored(frozenset(lead_ids), received_at, passed))
