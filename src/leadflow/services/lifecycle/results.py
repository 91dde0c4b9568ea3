"""What a recompute gives back: its counts, each lead's outcome, the stored stage log rows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from leadflow.core.lifecycle import LeadState


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
