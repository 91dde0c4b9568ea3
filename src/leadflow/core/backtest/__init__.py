"""Backtest a lead model: replay the event history as columns, compare two models.

:func:`evaluate` computes, for every lead of an event table and under one
:class:`~leadflow.core.config.LeadModel`, what the per-lead core
(:func:`leadflow.core.lifecycle.replay`, :func:`leadflow.core.scoring.score_engagement`)
computes - engagement score at ``as_of``, stage at ``as_of``, every stage change with its
time and rule - but as vectorised Polars/NumPy operations over the whole table.
:func:`compare` runs two models over the same history and reports the differences
(``leadflow model backtest``).

Why Polars (with NumPy for the stage rounds): the work is sorts, window functions
(``cum_sum``/``cum_count`` over lead, rule and day), joins on small dictionaries and
boolean masks; Polars does them multi-threaded in-process on Arrow memory, and the
per-lead state of the stage machine (a few integers per lead) is gathered and scattered
with NumPy fancy indexing. DuckDB can express the same steps in SQL, but the stage
machine is a loop of rounds whose state lives in Python between queries; measured on the
1,000,000-event demo table the Polars path was faster end to end, so SQL buys nothing here.

Inputs
------
An :class:`EventTable`: a Polars frame with one row per event - ``lead_id``,
``message_id``, ``type``, ``name``, ``occurred_at`` (UTC), ``path`` (normalised as
:attr:`Event.path`), ``page_url``, ``channel``, ``utm_source``, ``utm_medium``,
``utm_campaign``, one column per event property a model references (``asset_type``,
``bounce_type``, ...; string values) and the profile traits an event sets, as
:func:`leadflow.core.lifecycle.merge_traits` reads them (``set_email``, ``set_phone``,
``set_title``, ``set_consent``, ``set_is_target_account``, ``set_industry``,
``set_country``, ``set_employee_count``; ``email_unsubscribe`` sets ``set_consent`` to
``denied``). :func:`events_frame` builds one from :class:`Event` objects using the core's
own ``merge_traits``, so the columns mean exactly what the core would do. Profiles are a
frame with ``id``, the base :class:`LeadProfile` traits and ``predicted``
(:func:`profiles_frame`).

What is vectorised (exactly the core's semantics)
------------------------------------------------
- Duplicates dropped per lead by ``message_id`` (first row wins); event-time order
  ``(occurred_at, message_id)``; only events at or before ``as_of``.
- Engagement rule matching: ``type``/``name``/``channel``/``utm_*`` as set membership,
  property equality (a string value or its lower-case form in the allowed list), path
  globs evaluated with the core's own ``path_matches`` once per distinct path (a
  dictionary-encoded match, then a hash lookup per row).
- Caps: ``max_per_day`` is the rank of the event among the rule's events of that lead and
  UTC day; ``max_total`` the running count of the per-day survivors - the earliest events
  count, as in the fold.
- Decay: the score at ``as_of`` sums ``points * 0.5 ** (age_days / half_life)`` per
  occurrence (``decay: false`` and models without a half-life: undecayed). The score at
  each event's own time (for ``score:`` criteria) is a per-lead running sum rebased at the
  lead's first event: ``2 ** -s_i * cumsum(points_j * 2 ** s_j)`` with ``s`` in
  half-lives; the ``score`` criterion also checks the running positive-points ceiling like
  the fold does.
- The effective profile after each event (identify/group traits, unsubscribe) as a
  forward fill of the ``set_*`` columns over the base profile; ``profile`` conditions on
  ``has_contact``, ``consent`` and ``is_target_account`` (every condition key is read
  through :mod:`leadflow.core.conditions`, the stage machine's own table); dead-end tests on title
  (``has_term`` per distinct title), e-mail domain and invalid e-mail (per distinct
  address) and on the event.
- Transitions: every criterion (fastpass rules, ``enter_when`` conditions, dead-end rules)
  is one bit of a per-event mask; which bits hold does not depend on the stage. One step
  of the machine (dead end first, then nearest stage wins, walking several stages) is a
  pure function of ``(stage, mask)``, evaluated once per distinct pair by emulating
  ``lifecycle``'s step. The stage history is then found in rounds: each round, for every
  lead still moving, the first event after its last change whose step moves it - looked
  up per lead in a "next moving event" array per stage (a reverse running minimum over
  all events, built only for the stages leads are in); a round per stage change, so a
  handful of rounds in all.
- Weekly MQL volume: the first change of each lead into the MQL stage or beyond on the
  main path, counted per ISO week (Monday, UTC).

Speed (``benchmarks/backtest.py``)
----------------------------------
- Preparation is done once per table, profiles frame and ``as_of`` and kept on the
  :class:`EventTable` (the latest one): the event order, dictionary codes, effective
  traits and every rule match already evaluated (keyed by what it tests, so ``compare``
  evaluates a rule both models share once). The table is treated as read-only.
- Event order without a string sort: duplicates are found through one 64-bit mix of
  lead and message-id hash (the exact strings decide only if it repeats); rows already in
  time order are radix-sorted by lead, otherwise by one packed (lead, time) integer; only
  events of the same lead and instant are ordered by ``message_id``.
- Mostly null columns (the ``set_*`` traits) are dictionary-encoded over their non-null
  rows only; per-lead running sums add in each lead's own order (zero-padded matrices
  summed down their rows, one per power-of-two history length), bit for bit the sums a
  per-lead loop makes.

Fallback (the per-lead core, ``lifecycle.replay``), and why
-----------------------------------------------------------
- Leads with sales actions (actions move stages and start recycle pauses).
- Every lead, when the model has something the rounds cannot express: an automatic move
  into a stage with ``recycle`` (a time-driven pause end), a ``fit_grade`` or
  ``predicted_at_least`` profile condition (a key :mod:`leadflow.core.conditions` gives no
  vectorised form), or more than 63 criteria.
- Leads whose score at some event is within 1e-6 of a ``score:`` threshold (the rebased
  running sum is exact to ~1e-12, not bit-identical, and an exact tie - e.g. 100 points
  in one instant - must be decided as the core decides it), and leads whose history spans
  more than 1,000 half-lives (the rebasing factor would overflow).
- Leads whose events carry a non-string value in a referenced property (when the table
  was built with :func:`events_frame`; it flags them).

The fallback replays :class:`Event` objects: the originals when the table keeps them,
otherwise events rebuilt from the columns (equivalent for every rule the model can
express over those columns). Return-alert signals are not computed (they never change a
stage); ``lead.returning`` is the live system's business.

Modules
-------
- :mod:`~leadflow.core.backtest.tables`: the input tables (:func:`events_frame`,
  :func:`profiles_frame`) and their columns.
- :mod:`~leadflow.core.backtest.prepare`: per table - event order, dictionary codes,
  effective traits, event matches (through :mod:`leadflow.core.conditions`), per-lead sums.
- :mod:`~leadflow.core.backtest.engagement`: counted occurrences and scores.
- :mod:`~leadflow.core.backtest.machine`: criteria as bit masks, the stage rounds.
- :mod:`~leadflow.core.backtest.evaluate`: :func:`evaluate` and the per-lead fallback.
- :mod:`~leadflow.core.backtest.compare`: :func:`compare` and its report.
"""

from leadflow.core.backtest.compare import (
    BacktestReport,
    ModelSummary,
    compare,
    week_of,
)
from leadflow.core.backtest.evaluate import Backtest, evaluate
from leadflow.core.backtest.tables import (
    EventTable,
    events_frame,
    profiles_frame,
    referenced_properties,
    trait_updates,
)

__all__ = [
    "Backtest",
    "BacktestReport",
    "EventTable",
    "ModelSummary",
    "compare",
    "evaluate",
    "events_frame",
    "profiles_frame",
    "referenced_properties",
    "trait_updates",
    "week_of",
]
