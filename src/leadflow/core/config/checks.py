"""The semantic checks a schema cannot express: stage references, roles (and the roles
of a model written before roles, ``LEGACY_ROLES``), unique ids, grades, weights, the
sales and nurture sections. Each problem is a ``(key path, reason)`` pair."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from leadflow.core.config.lead_model import ModelSpec
from leadflow.core.config.roles import LEGACY_ROLES, MULTI_ROLES, REQUIRED_ROLES
from leadflow.core.config.schema import Condition


def _stage_ref_errors(spec: ModelSpec) -> list[tuple[str, str]]:
    known = set(spec.stages)
    errors: list[tuple[str, str]] = []

    def need(path: str, name: str) -> None:
        if name not in known:
            errors.append((path, f"unknown stage '{name}'"))

    need("lifecycle.initial", spec.lifecycle.initial)
    need("lifecycle.dead_end", spec.lifecycle.dead_end)
    seen: set[str] = set()
    for i, name in enumerate(spec.lifecycle.main_path):
        need(f"lifecycle.main_path[{i}]", name)
        if name in seen:
            errors.append((f"lifecycle.main_path[{i}]", f"stage '{name}' is listed twice"))
        seen.add(name)
    for key, stage in spec.stages.items():
        for i, name in enumerate(stage.from_ or ()):
            need(f"stages.{key}.from[{i}]", name)
        if stage.recycle is not None:
            need(f"stages.{key}.recycle.return_to", stage.recycle.return_to)
    for i, rule in enumerate(spec.fastpass):
        need(f"fastpass[{i}].to", rule.to)
        for j, name in enumerate(rule.from_):
            need(f"fastpass[{i}].from[{j}]", name)
    for key, action in spec.actions.items():
        need(f"actions.{key}.to", action.to)
        for j, name in enumerate(action.from_):
            need(f"actions.{key}.from[{j}]", name)
    for j, name in enumerate(spec.dead_end.from_ or ()):
        need(f"dead_end.from[{j}]", name)
    if spec.return_alert is not None:
        for j, name in enumerate(spec.return_alert.stages):
            need(f"return_alert.stages[{j}]", name)
        for j, name in enumerate(spec.return_alert.clear_at):
            need(f"return_alert.clear_at[{j}]", name)
    return errors


def _role_errors(spec: ModelSpec) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    holder: dict[str, str] = {}
    for key, stage in spec.stages.items():
        role = stage.role
        if role is None:
            continue
        if role not in MULTI_ROLES and role in holder:
            errors.append(
                (
                    f"stages.{key}.role",
                    f"role '{role}' is already stage '{holder[role]}' (only one stage may have it)",
                )
            )
        holder.setdefault(role, key)
    for required in REQUIRED_ROLES:
        if required not in holder:
            errors.append(("stages", f"no stage has role '{required}' (required)"))
    for path, name, expected in (
        ("lifecycle.initial", spec.lifecycle.initial, "entry"),
        ("lifecycle.dead_end", spec.lifecycle.dead_end, "dead_end"),
    ):
        if expected in holder and name in spec.stages and holder[expected] != name:
            errors.append(
                (path, f"must be the stage with role '{expected}' ('{holder[expected]}')")
            )
    return errors


def _grade_refs(
    condition: Condition, path: str, grades: Mapping[str, float]
) -> list[tuple[str, str]]:
    if condition.profile is None or condition.profile.fit_grade is None:
        return []
    return [
        (f"{path}.profile.fit_grade[{i}]", f"unknown grade '{g}'")
        for i, g in enumerate(condition.profile.fit_grade)
        if g not in grades
    ]


def _with_legacy_roles(spec: ModelSpec) -> ModelSpec:
    """``spec`` with the roles of ``LEGACY_ROLES`` when none of its stages names a role."""
    if any(stage.role is not None for stage in spec.stages.values()):
        return spec
    structural = {spec.lifecycle.initial: "entry", spec.lifecycle.dead_end: "dead_end"}
    stages = {
        key: stage.model_copy(update={"role": structural.get(key) or LEGACY_ROLES.get(key)})
        for key, stage in spec.stages.items()
    }
    return spec.model_copy(update={"stages": stages})


def _semantic_errors(spec: ModelSpec) -> list[tuple[str, str]]:
    errors = _stage_ref_errors(spec)
    errors += _role_errors(spec)
    ids: set[str] = set()
    for i, rule in enumerate(spec.engagement.rules):
        if rule.id in ids:
            errors.append((f"engagement.rules[{i}].id", f"duplicate rule id '{rule.id}'"))
        ids.add(rule.id)
    ids = set()
    for i, fp in enumerate(spec.fastpass):
        if fp.id in ids:
            errors.append((f"fastpass[{i}].id", f"duplicate rule id '{fp.id}'"))
        ids.add(fp.id)
        errors += _grade_refs(fp.when, f"fastpass[{i}].when", spec.fit.grades)
    for key, stage in spec.stages.items():
        for i, cond in enumerate(stage.enter_when):
            errors += _grade_refs(cond, f"stages.{key}.enter_when[{i}]", spec.fit.grades)
    for key, stage in spec.stages.items():
        for i, cond in enumerate(stage.enter_when):
            if cond.event is None and cond.score is None and cond.profile is None:
                errors.append((f"stages.{key}.enter_when[{i}]", "empty condition"))
    for i, fp in enumerate(spec.fastpass):
        w = fp.when
        if w.event is None and w.score is None and w.profile is None:
            errors.append((f"fastpass[{i}].when", "empty condition"))
    ids = set()
    for i, dead_rule in enumerate(spec.dead_end.rules):
        if dead_rule.id in ids:
            errors.append((f"dead_end.rules[{i}].id", f"duplicate rule id '{dead_rule.id}'"))
        ids.add(dead_rule.id)
        if not (
            dead_rule.title_contains
            or dead_rule.email_domains
            or dead_rule.invalid_email
            or dead_rule.event
        ):
            errors.append((f"dead_end.rules[{i}]", "rule matches nothing"))
    weights = spec.qualification.weights
    total = weights.budget + weights.authority + weights.need + weights.timeframe
    if abs(total - 100) > 1e-9:
        errors.append(("qualification.weights", f"weights must add up to 100 (got {total:g})"))
    grades = list(spec.fit.grades.items())
    if not grades:
        errors.append(("fit.grades", "at least one grade is required"))
    for (_, prev), (name, low) in itertools.pairwise(grades):
        if low >= prev:
            errors.append((f"fit.grades.{name}", "grades must be listed best first, lower each"))
    for i, band in enumerate(spec.fit.company_size):
        if band.max is not None and band.max < band.min:
            errors.append((f"fit.company_size[{i}].max", "must not be below min"))
    for i, name in enumerate(spec.lifecycle.main_path):
        if name == spec.lifecycle.dead_end:
            errors.append((f"lifecycle.main_path[{i}]", "the dead-end stage is not on the path"))
    if spec.sales is not None:
        errors += _sales_errors(spec)
    if spec.nurture is not None:
        errors += _nurture_errors(spec)
    return errors


def _unique(items: list[Any], path: str, what: str) -> list[tuple[str, str]]:
    seen: set[str] = set()
    errors: list[tuple[str, str]] = []
    for i, item in enumerate(items):
        if item.key in seen:
            errors.append((f"{path}[{i}].key", f"duplicate {what} '{item.key}'"))
        seen.add(item.key)
    return errors


def _nurture_errors(spec: ModelSpec) -> list[tuple[str, str]]:
    nurture = spec.nurture
    assert nurture is not None
    errors = _unique(nurture.content, "nurture.content", "content key")
    errors += _unique(nurture.forms, "nurture.forms", "form key")
    errors += _unique(nurture.programs, "nurture.programs", "program key")
    assets = {c.key for c in nurture.content}
    for name in nurture.content_stages or {}:
        if name not in spec.stages:
            errors.append((f"nurture.content_stages.{name}", f"unknown stage '{name}'"))
    for i, form in enumerate(nurture.forms):
        path = f"nurture.forms[{i}]"
        names = [f.name for f in form.fields]
        if "email" not in names:
            errors.append((f"{path}.fields", "a form needs an 'email' field"))
        for j, name in enumerate(names):
            if name in names[:j]:
                errors.append((f"{path}.fields[{j}].name", f"duplicate field '{name}'"))
        for j, fld in enumerate(form.fields):
            if fld.type == "select" and not fld.options:
                errors.append((f"{path}.fields[{j}].options", "a select field needs options"))
        if form.asset is not None and form.asset not in assets:
            errors.append((f"{path}.asset", f"unknown content '{form.asset}'"))
        if form.consent_required and form.consent is None:
            errors.append((f"{path}.consent", "consent_required needs the consent text"))
    for i, program in enumerate(nurture.programs):
        path = f"nurture.programs[{i}]"
        for j, name in enumerate(program.stages):
            if name not in spec.stages:
                errors.append((f"{path}.stages[{j}]", f"unknown stage '{name}'"))
        ids: set[str] = set()
        for j, step in enumerate(program.steps):
            spath = f"{path}.steps[{j}]"
            if step.id in ids:
                errors.append((f"{spath}.id", f"duplicate step id '{step.id}'"))
            ids.add(step.id)
            actions = [a for a in (step.send, step.set, step.notify) if a is not None]
            if len(actions) != 1:
                errors.append((spath, "a step needs exactly one of send, set, notify"))
            send = step.send
            if send is not None and send.asset != "next_best" and send.asset not in assets:
                errors.append((f"{spath}.send.asset", f"unknown content '{send.asset}'"))
            if step.when is not None:
                for k, name in enumerate(step.when.stage or ()):
                    if name not in spec.stages:
                        errors.append((f"{spath}.when.stage[{k}]", f"unknown stage '{name}'"))
                for k, grade in enumerate(step.when.fit_grade or ()):
                    if grade not in spec.fit.grades:
                        errors.append((f"{spath}.when.fit_grade[{k}]", f"unknown grade '{grade}'"))
    return errors


def _sales_errors(spec: ModelSpec) -> list[tuple[str, str]]:
    sales = spec.sales
    assert sales is not None
    errors: list[tuple[str, str]] = []
    try:
        ZoneInfo(sales.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        errors.append(("sales.timezone", f"unknown time zone '{sales.timezone}'"))
    for i, name in enumerate(sales.handoff_stages or ()):
        if name not in spec.stages:
            errors.append((f"sales.handoff_stages[{i}]", f"unknown stage '{name}'"))
    seen: set[str] = set()
    for i, rep in enumerate(sales.reps):
        if rep.key in seen:
            errors.append((f"sales.reps[{i}].key", f"duplicate rep key '{rep.key}'"))
        seen.add(rep.key)
    hours = sales.working_hours
    if hours.end <= hours.start:
        errors.append(("sales.working_hours.end", "must be later than start"))
    for name in ("reject_reasons", "lost_reasons"):
        keys: set[str] = set()
        for i, reason in enumerate(getattr(sales, name)):
            if reason.key in keys:
                errors.append((f"sales.{name}[{i}].key", f"duplicate reason '{reason.key}'"))
            keys.add(reason.key)
    for i, reason in enumerate(sales.reject_reasons):
        action = "disqualify" if reason.dead_end else "reject"
        if action not in spec.actions:
            errors.append(
                (f"sales.reject_reasons[{i}]", f"needs an action '{action}' under actions")
            )
    for i, reason in enumerate(sales.lost_reasons):
        if reason.dead_end:
            errors.append((f"sales.lost_reasons[{i}].dead_end", "only reject reasons lead there"))
    return errors
