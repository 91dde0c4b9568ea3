"""The whole model: :class:`ModelSpec` (the file's top level) and :class:`LeadModel`,
the validated spec with the indexes scoring and the stage machine use."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated

from pydantic import Field

from leadflow.core.config.base import NonEmptyStr, _Spec
from leadflow.core.config.channels import ChannelsSection
from leadflow.core.config.nurture import NurtureSpec
from leadflow.core.config.roles import MULTI_ROLES, ROLE_CONTENT_STAGES, STAGE_ROLES
from leadflow.core.config.sales import SalesSpec
from leadflow.core.config.schema import (
    ActionSpec,
    DeadEndSpec,
    EngagementSpec,
    FastpassSpec,
    FitSpec,
    LifecycleSpec,
    QualificationSpec,
    ReturnAlertSpec,
    StageSpec,
)


class ModelSpec(_Spec):
    version: NonEmptyStr
    name: str | None = None
    description: str | None = None
    lifecycle: LifecycleSpec
    stages: Annotated[dict[str, StageSpec], Field(min_length=1)]
    fastpass: list[FastpassSpec] = Field(default_factory=list)
    actions: dict[str, ActionSpec] = Field(default_factory=dict)
    engagement: EngagementSpec
    fit: FitSpec = Field(default_factory=FitSpec)
    qualification: QualificationSpec
    dead_end: DeadEndSpec = Field(default_factory=DeadEndSpec)
    return_alert: ReturnAlertSpec | None = None
    sales: SalesSpec | None = None
    nurture: NurtureSpec | None = None
    channels: ChannelsSection | None = None
    """The company's own channel taxonomy (:mod:`leadflow.core.config.channels`)."""


@dataclass(frozen=True)
class LeadModel:
    """A validated model with the indexes scoring and the stage machine use."""

    spec: ModelSpec
    content_hash: str
    stage_order: Mapping[str, int] = field(repr=False)
    criteria_from: Mapping[str, frozenset[str]] = field(repr=False)
    dead_end_from: frozenset[str] = field(repr=False)

    @property
    def version(self) -> str:
        return self.spec.version

    @property
    def stages(self) -> tuple[str, ...]:
        return tuple(self.spec.stages)

    @property
    def initial_stage(self) -> str:
        return self.spec.lifecycle.initial

    @property
    def dead_end_stage(self) -> str:
        return self.spec.lifecycle.dead_end

    @property
    def roles(self) -> Mapping[str, tuple[str, ...]]:
        """Role -> the stages that play it, in model order (roles nobody plays are absent)."""
        found: dict[str, list[str]] = {}
        for key, stage in self.spec.stages.items():
            if stage.role is not None:
                found.setdefault(stage.role, []).append(key)
        return {role: tuple(keys) for role, keys in found.items()}

    def stages_for(self, role: str) -> tuple[str, ...]:
        """Every stage that plays ``role`` (empty when none does)."""
        if role not in STAGE_ROLES:
            raise ValueError(f"unknown stage role {role!r}")
        return self.roles.get(role, ())

    def stage_for(self, role: str) -> str | None:
        """The stage that plays ``role`` (a unique role), or None when no stage does."""
        if role in MULTI_ROLES:
            raise ValueError(f"stage role {role!r} may name several stages: use stages_for")
        found = self.stages_for(role)
        return found[0] if found else None

    def require_stage(self, role: str) -> str:
        """The stage of a required role (``REQUIRED_ROLES``): a checked model always has it."""
        found = self.stage_for(role)
        if found is None:
            raise ValueError(f"the model names no stage with role {role!r}")
        return found

    @property
    def handoff_stage(self) -> str:
        """The hand-off (MQL) stage: ``lead.mql`` fires, and KPIs count MQLs, on entering it."""
        return self.require_stage("handoff")

    @property
    def mql_condition(self) -> int | None:
        """Index in the hand-off stage's ``enter_when`` of its first ``score`` condition."""
        conditions = self.spec.stages[self.handoff_stage].enter_when
        return next((i for i, c in enumerate(conditions) if c.score is not None), None)

    @property
    def mql_threshold(self) -> float | None:
        """The MQL score threshold: that condition's ``score`` (None when it has none)."""
        i = self.mql_condition
        score = None if i is None else self.spec.stages[self.handoff_stage].enter_when[i].score
        return None if score is None else float(score)

    @property
    def won_stage(self) -> str:
        return self.require_stage("won")

    @property
    def content_stages(self) -> Mapping[str, str]:
        """``nurture.content_stages``, by default each stage's role's (``ROLE_CONTENT_STAGES``)."""
        nurture = self.spec.nurture
        if nurture is not None and nurture.content_stages is not None:
            return nurture.content_stages
        return {
            key: ROLE_CONTENT_STAGES[stage.role]
            for key, stage in self.spec.stages.items()
            if stage.role is not None and stage.role in ROLE_CONTENT_STAGES
        }

    @property
    def handoff_stages(self) -> tuple[str, ...]:
        """``sales.handoff_stages``, by default the hand-off role's stage."""
        sales = self.spec.sales
        if sales is not None and sales.handoff_stages is not None:
            return tuple(sales.handoff_stages)
        return (self.handoff_stage,)

    def role_of(self, stage: str) -> str | None:
        spec = self.spec.stages.get(stage)
        return spec.role if spec is not None else None

    def display_name(self, stage: str, language: str = "en") -> str:
        display = self.spec.stages[stage].display
        return display.ko if language == "ko" else display.en

    def rank(self, stage: str) -> int:
        """Position on the main path; stages off the path rank -1."""
        return self.stage_order.get(stage, -1)
