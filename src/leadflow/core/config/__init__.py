"""The scoring and lifecycle model (``leadflow.yaml``): schema, loading, checking.

A model file is YAML. It is validated strictly (unknown keys, wrong types and dangling
references are refused) and a refusal names the key path and the reason in one line::

    stages.mql.enter_when[1].score: expected a number

:func:`load_model` returns a :class:`LeadModel`: the validated spec plus the indexes the
scoring and lifecycle code need. ``version`` is the model's own label (bump it when you
change the rules); ``content_hash`` is a SHA-256 over the validated content in canonical
JSON, so it is stable across key order, comments and formatting. :func:`check` backs
``leadflow model check FILE`` and ``POST /api/model/check``: it never raises for a bad
model, it reports.

Both take the YAML *text*, never a file name: whatever the string looks like (``x.yaml``
included), it is parsed, not opened. Reading a file is the CLI's job
(``entrypoints/cli/model.py``); a request can never make the server read one.

The shipped model is ``leadflow/default.yaml`` (:func:`load_default_model`).

One module per part: ``base`` (value lists, :class:`ModelConfigError`, the spec base),
``roles`` (stage roles), ``schema`` (stages and scores), ``sales``, ``nurture``,
``lead_model`` (:class:`ModelSpec`, :class:`LeadModel`), ``checks`` (semantic checks) and
``loading`` (:func:`load_model`, :func:`check`). Import the names from this package
(``from leadflow.core.config import LeadModel``).
"""

from __future__ import annotations

from leadflow.core.config.base import (
    BANT_CRITERIA,
    CONSENT_VALUES,
    EVENT_TYPES,
    ModelConfigError,
    NonEmptyStr,
    Scalar,
    ScalarList,
    StrList,
)
from leadflow.core.config.lead_model import LeadModel, ModelSpec
from leadflow.core.config.loading import (
    CheckReport,
    build_model,
    check,
    load_default_model,
    load_model,
)
from leadflow.core.config.nurture import (
    CONTENT_TYPES,
    EVALUATION_STAGES,
    FIELD_TYPES,
    ContentSpec,
    ContentType,
    EvaluationStage,
    FormFieldSpec,
    FormSpec,
    FrequencyCap,
    NurtureSpec,
    ProgramCondition,
    ProgramSpec,
    SafeUrl,
    SendSpec,
    Slug,
    StepSpec,
)
from leadflow.core.config.roles import (
    LEGACY_ROLES,
    MULTI_ROLES,
    REQUIRED_ROLES,
    ROLE_CONTENT_STAGES,
    STAGE_ROLES,
    StageRole,
)
from leadflow.core.config.sales import (
    WEEKDAYS,
    Clock,
    Day,
    ReasonSpec,
    RepSpec,
    SalesSpec,
    TerritorySpec,
    Weekday,
    WorkingHoursSpec,
)
from leadflow.core.config.schema import (
    ActionSpec,
    AttributeFitRule,
    BantWeights,
    Condition,
    DeadEndRule,
    DeadEndSpec,
    Display,
    EngagementRule,
    EngagementSpec,
    EventMatch,
    FastpassSpec,
    FitSpec,
    LifecycleSpec,
    ProfileMatch,
    QualificationSpec,
    RecycleSpec,
    ReturnAlertSpec,
    SeniorityRule,
    SizeBand,
    StageSpec,
)

__all__ = [
    "BANT_CRITERIA",
    "CONSENT_VALUES",
    "CONTENT_TYPES",
    "EVALUATION_STAGES",
    "EVENT_TYPES",
    "FIELD_TYPES",
    "LEGACY_ROLES",
    "MULTI_ROLES",
    "REQUIRED_ROLES",
    "ROLE_CONTENT_STAGES",
    "STAGE_ROLES",
    "WEEKDAYS",
    "ActionSpec",
    "AttributeFitRule",
    "BantWeights",
    "CheckReport",
    "Clock",
    "Condition",
    "ContentSpec",
    "ContentType",
    "Day",
    "DeadEndRule",
    "DeadEndSpec",
    "Display",
    "EngagementRule",
    "EngagementSpec",
    "EvaluationStage",
    "EventMatch",
    "FastpassSpec",
    "FitSpec",
    "FormFieldSpec",
    "FormSpec",
    "FrequencyCap",
    "LeadModel",
    "LifecycleSpec",
    "ModelConfigError",
    "ModelSpec",
    "NonEmptyStr",
    "NurtureSpec",
    "ProfileMatch",
    "ProgramCondition",
    "ProgramSpec",
    "QualificationSpec",
    "ReasonSpec",
    "RecycleSpec",
    "RepSpec",
    "ReturnAlertSpec",
    "SafeUrl",
    "SalesSpec",
    "Scalar",
    "ScalarList",
    "SendSpec",
    "SeniorityRule",
    "SizeBand",
    "Slug",
    "StageRole",
    "StageSpec",
    "StepSpec",
    "StrList",
    "TerritorySpec",
    "Weekday",
    "WorkingHoursSpec",
    "build_model",
    "check",
    "load_default_model",
    "load_model",
]
