"""Revenue analytics over the store: flow & balance, attribution, campaigns, KPIs by role.

One module per report family: ``common`` (choices, period, error), ``loading`` (one query per
table), ``store`` (stage history, slices, :func:`load_store`), ``flow`` (funnel),
``attribution``, ``points`` (suggest points), ``campaigns``, ``role_kpis`` and ``pipeline``
(deal figures come from :mod:`leadflow.core.deals`).
Import the names from this package (``from leadflow.services import reports``).

This package only *loads* plain tables and hands them to the pure analytics core
(:mod:`leadflow.core.funnel`, :mod:`leadflow.core.attribution`); every figure is computed
there or in Polars expressions here, never in per-row ORM loops. Each table is read with
one SQL query (``pl.read_database`` on the SQLAlchemy connection; timestamps are read as
plain ``DateTime`` and marked UTC in Polars, which is what makes a million-row load cheap).

Definitions the reports share (also in ``docs/reports.md``):

- **stage log**: ``stage_changes`` plus, per lead, one synthetic entry into the stage the
  lead started in (the first change's ``from_stage``, else its current stage) at the
  lead's first sign of life (earliest of ``leads.created_at``, its first event and its first
  stage change). So a lead is *in* the initial stage (``anonymous``) from when it was first
  seen, and the Sankey starts at ``(new)``.
- **slices** (one value per lead, so the balance identity holds per slice):
  ``channel`` / ``campaign``: channel / ``utm_campaign`` of the lead's first event that has
  one; ``industry``: the account's industry; ``account_tier``: ``target`` or ``other``
  (``accounts.is_target``); ``employee_band``: the account's size band from the model's
  ``fit.company_size`` labels; ``acquisition_month``: UTC month of the lead's first entry
  into a stage that is neither the initial stage nor dead end; ``model_version``: the
  version recorded on the lead's last stage change before the period end (the model that
  put the lead where it stands at the end). Missing values show as null.
- **conversion** (attribution): a lead's first entry into ``to_stage`` (default: the stage
  with role ``won``) inside the period. Its **value** is the ``amount`` of the lead's latest
  ``qualify`` sales action at or before the conversion, else 1 (a count). When the
  opportunities table (issue 5) exists, won and pipeline values will be read from it instead.
- **touchpoints**: the lead's events up to its conversion (the event that caused it
  included; before the period end for leads that did not convert): every ``track`` and
  ``page`` event except ``email_sent`` and ``email_bounce`` (things we did, not things the
  person did). Touch keys: ``channel``, ``campaign`` (``utm_campaign``, ``(none)`` when
  absent) and ``content`` (``properties.asset``, else the page path; touches without
  content are left out).
"""

from __future__ import annotations

from leadflow.core import funnel
from leadflow.core.deals import DEAL_STAGES
from leadflow.services.reports.attribution import (
    attribution_inputs,
    attribution_report,
    conversions,
)
from leadflow.services.reports.campaigns import (
    FORM_AFTER_EMAIL,
    campaigns_report,
    program_email_funnel,
)
from leadflow.services.reports.common import (
    LEVELS,
    MODEL_CHOICES,
    NONE,
    NOT_TOUCHES,
    ROLES,
    SLICES,
    TOUCH_KEYS,
    UNITS,
    Period,
    ReportError,
    _check_choice,
    check_currency,
    parse_day,
    stage_model_for,
)
from leadflow.services.reports.flow import deal_funnel_report, funnel_report
from leadflow.services.reports.loading import (
    DEAL_SEGMENTS,
    active_model_source,
    load_actions,
    load_events,
    load_form_submissions,
    load_leads,
    load_opportunities,
    load_sends,
    load_stage_log,
)
from leadflow.services.reports.pipeline import (
    SEGMENT_HELP,
    check_segment,
    load_deals,
    pipeline_report,
)
from leadflow.services.reports.points import SUGGEST_FORMULA, PointsSuggestion, suggest_points
from leadflow.services.reports.role_kpis import kpis
from leadflow.services.reports.store import Store, lead_attributes, load_store, stage_history

__all__ = [
    "DEAL_SEGMENTS",
    "DEAL_STAGES",
    "FORM_AFTER_EMAIL",
    "LEVELS",
    "MODEL_CHOICES",
    "NONE",
    "NOT_TOUCHES",
    "ROLES",
    "SEGMENT_HELP",
    "SLICES",
    "SUGGEST_FORMULA",
    "TOUCH_KEYS",
    "UNITS",
    "Period",
    "PointsSuggestion",
    "ReportError",
    "Store",
    "_check_choice",
    "active_model_source",
    "attribution_inputs",
    "attribution_report",
    "campaigns_report",
    "check_currency",
    "check_segment",
    "conversions",
    "deal_funnel_report",
    "funnel",
    "funnel_report",
    "kpis",
    "lead_attributes",
    "load_actions",
    "load_deals",
    "load_events",
    "load_form_submissions",
    "load_leads",
    "load_opportunities",
    "load_sends",
    "load_stage_log",
    "load_store",
    "parse_day",
    "pipeline_report",
    "program_email_funnel",
    "stage_history",
    "stage_model_for",
    "suggest_points",
]
