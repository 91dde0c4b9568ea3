"""Stage roles (a stage's ``role`` key), the roles of a model written before roles, and
the content stage each role defaults to."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, get_args

# What a stage means to the code that reads the model (reports, KPIs, webhooks, backtest,
# seminars, dashboard, CLI). Code asks ``model.stage_for(role)``; it never names a stage id.
StageRole = Literal[
    "entry",
    "acquired",
    "nurture",
    "handoff",
    "sales_accepted",
    "opportunity",
    "won",
    "customer",
    "expansion",
    "recycle",
    "lost",
    "dead_end",
]
STAGE_ROLES: tuple[str, ...] = get_args(StageRole)
"""Every role, in the order reports list them (the ``role`` key accepts exactly these)."""
MULTI_ROLES = frozenset({"nurture", "recycle"})
"""Roles several stages may share; every other role names at most one stage."""
REQUIRED_ROLES = ("entry", "handoff", "won", "dead_end")
"""Roles every model must give a stage: the code needs exactly one of each."""

LEGACY_ROLES: Mapping[str, str] = {
    "acquired": "acquired",
    "nurturing": "nurture",
    "mql": "handoff",
    "appointment": "sales_accepted",
    "opportunity": "opportunity",
    "won": "won",
    "customer": "customer",
    "expansion": "expansion",
    "recycle_a": "recycle",
    "recycle_b": "lost",
}
"""Roles of a model written before stages had roles (the shipped models up to 2024.3, kept
as versioned history in every database, and files copied from them): a model in which no
stage names a role gets these by its stage ids, plus ``entry`` for ``lifecycle.initial`` and
``dead_end`` for ``lifecycle.dead_end``. Only such a model is read this way; a model that
names one role must name them all."""


ROLE_CONTENT_STAGES: Mapping[str, str] = {
    "entry": "early",
    "acquired": "early",
    "nurture": "middle",
    "recycle": "middle",
    "lost": "middle",
    "handoff": "late",
    "sales_accepted": "late",
    "opportunity": "late",
    "won": "late",
    "customer": "late",
    "expansion": "late",
}
"""Default ``nurture.content_stages``: the evaluation stage of each stage role's content."""
