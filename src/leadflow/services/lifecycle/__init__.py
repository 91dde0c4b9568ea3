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

One module per seam: ``models`` (the active model, installs, history), ``loading``
(profiles, stored state, events and actions as a recompute reads them), ``results``
(:class:`RecomputeResult`, :class:`LeadOutcome`, the stored log rows), ``cache``
(:class:`StateCache`), ``history`` (the stage log kept equal to the replay),
``recomputing`` (:func:`recompute` and its writes), ``bulk`` (:func:`recompute_all`,
:func:`apply_model`) and ``queries`` (one lead: :func:`record_action`, :func:`explain`...).
Import the names from this package (``from leadflow.services import lifecycle``).
"""

from __future__ import annotations

from leadflow.services.lifecycle.bulk import ApplyReport, all_lead_ids, apply_model, recompute_all
from leadflow.services.lifecycle.cache import StateCache
from leadflow.services.lifecycle.history import MODEL_APPLY_RULE
from leadflow.services.lifecycle.loading import (
    CHUNK,
    EVENT_COLUMNS,
    event_from_row,
    load_account_watches,
    load_actions,
    load_events,
    load_profiles,
)
from leadflow.services.lifecycle.models import (
    ModelCache,
    default_source,
    install_model,
    model_history,
)
from leadflow.services.lifecycle.queries import (
    ActionRefused,
    current_state,
    explain,
    explanation,
    lead_history,
    lead_signals,
    record_action,
    stage_counts,
)
from leadflow.services.lifecycle.recomputing import _plain, recompute
from leadflow.services.lifecycle.results import LeadOutcome, RecomputeResult, StoredChange

__all__ = [
    "CHUNK",
    "EVENT_COLUMNS",
    "MODEL_APPLY_RULE",
    "ActionRefused",
    "ApplyReport",
    "LeadOutcome",
    "ModelCache",
    "RecomputeResult",
    "StateCache",
    "StoredChange",
    "_plain",
    "all_lead_ids",
    "apply_model",
    "current_state",
    "default_source",
    "event_from_row",
    "explain",
    "explanation",
    "install_model",
    "lead_history",
    "lead_signals",
    "load_account_watches",
    "load_actions",
    "load_events",
    "load_profiles",
    "model_history",
    "recompute",
    "recompute_all",
    "record_action",
    "stage_counts",
]
