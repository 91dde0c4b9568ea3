"""The per-process cache of folded lead states (:class:`StateCache`)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from leadflow.core.lifecycle import LeadState
from leadflow.core.model import AccountWatch, Bant, FitScore, LeadProfile
from leadflow.services.lifecycle.results import StoredChange


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
