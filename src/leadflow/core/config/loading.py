"""Loading and checking a model from its YAML text: parse, validate (pydantic errors
turned into key paths and plain reasons), semantic checks, the indexes and the content
hash; :func:`check` reports instead of raising."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml
from pydantic import ValidationError

from leadflow.core.config.base import ModelConfigError
from leadflow.core.config.checks import _semantic_errors, _with_legacy_roles
from leadflow.core.config.lead_model import LeadModel, ModelSpec
from leadflow.core.config.roles import STAGE_ROLES
from leadflow.core.inputs import InputError, check_json


def _loc_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if part == "[key]":
            continue
        if isinstance(part, bool):
            part = str(part).lower()
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(root)"


_REASONS = {
    "missing": "required key is missing",
    "extra_forbidden": "unknown key",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "finite_number": "expected a finite number",
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "string_type": "expected a string",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "string_too_short": "must not be empty",
    "too_short": "must not be empty",
    "union_tag_invalid": "unexpected value",
}


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, int | float) else str(value)


def _reason(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind in _REASONS:
        return _REASONS[kind]
    if kind == "greater_than":
        return f"must be greater than {_num(ctx.get('gt'))}"
    if kind == "greater_than_equal":
        return f"must be at least {_num(ctx.get('ge'))}"
    if kind == "less_than_equal":
        return f"must be at most {_num(ctx.get('le'))}"
    if kind == "less_than":
        return f"must be less than {_num(ctx.get('lt'))}"
    if kind == "literal_error":
        return f"expected one of {ctx.get('expected')}"
    return str(error.get("msg", kind))


def _dedupe_union_errors(errors: list[tuple[str, str]]) -> list[tuple[str, str]]:
    seen: set[tuple[str, str]] = set()
    out = []
    for item in errors:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def _parse_yaml(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.reader.ReaderError as exc:
        pos = max(0, min(int(exc.position), len(text)))
        line, column = text.count("\n", 0, pos) + 1, pos - text.rfind("\n", 0, pos)
        char = exc.character if isinstance(exc.character, int) else -1
        what = f"U+{char:04X}" if char >= 0 else "a byte"
        raise ModelConfigError(
            f"line {line}, column {column}", f"invalid YAML: {what} is not allowed in YAML text"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ModelConfigError(where, f"invalid YAML: {problem}") from None


def _text(source: str) -> str:
    if not isinstance(source, str):
        raise TypeError(
            f"a lead model is YAML text, not {type(source).__name__}: read the file first"
        )
    return source


def _content_hash(spec: ModelSpec) -> str:
    canonical = json.dumps(
        spec.model_dump(mode="json", by_alias=True),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def build_model(data: Any) -> LeadModel:
    """Validate already-parsed YAML (a mapping) into a :class:`LeadModel`."""
    if not isinstance(data, Mapping):
        raise ModelConfigError("(root)", "expected a mapping")
    try:  # text no backend can store (a YAML "\0" escape) never reaches a stored model
        check_json(data, max_depth=64, numbers=False)
    except InputError as exc:
        raise ModelConfigError(exc.field, exc.reason) from None
    try:
        spec = ModelSpec.model_validate(data)
    except ValidationError as exc:
        found = _dedupe_union_errors(
            [
                (_loc_path(e["loc"]), _reason(e) + (" as a key" if "[key]" in e["loc"] else ""))
                for e in exc.errors()
            ]
        )
        raise ModelConfigError(found[0][0], found[0][1], tuple(found)) from None
    spec = _with_legacy_roles(spec)
    problems = _semantic_errors(spec)
    if problems:
        raise ModelConfigError(problems[0][0], problems[0][1], tuple(problems))
    order = {name: i for i, name in enumerate(spec.lifecycle.main_path)}
    criteria_from = {}
    for key, stage in spec.stages.items():
        if stage.from_ is not None:
            criteria_from[key] = frozenset(stage.from_)
        elif key in order:
            criteria_from[key] = frozenset(s for s, i in order.items() if i < order[key])
        else:
            criteria_from[key] = frozenset()
    dead_from = (
        frozenset(spec.dead_end.from_)
        if spec.dead_end.from_ is not None
        else frozenset(s for s in spec.stages if s != spec.lifecycle.dead_end)
    )
    return LeadModel(
        spec=spec,
        content_hash=_content_hash(spec),
        stage_order=order,
        criteria_from=criteria_from,
        dead_end_from=dead_from,
    )


def load_model(source: str) -> LeadModel:
    """Load a model from its YAML text (never a file name: ``"x.yaml"`` is parsed as YAML).

    Raises :class:`ModelConfigError` naming the key path and the reason.
    """
    return build_model(_parse_yaml(_text(source)))


def load_default_model() -> LeadModel:
    """The shipped model, ``leadflow/default.yaml`` (the articles' stages and numbers)."""
    text = resources.files("leadflow").joinpath("default.yaml").read_text(encoding="utf-8")
    return load_model(text)


@dataclass(frozen=True)
class CheckReport:
    """What ``leadflow model check FILE`` prints."""

    ok: bool
    errors: tuple[str, ...] = ()
    version: str | None = None
    content_hash: str | None = None
    stages: tuple[str, ...] = ()
    engagement_rules: int = 0
    fastpass_rules: int = 0
    roles: tuple[tuple[str, str], ...] = ()
    """(role, stage) for every stage that has a role, in role order."""

    def lines(self) -> list[str]:
        if not self.ok:
            return list(self.errors)
        return [
            f"ok: model {self.version} (sha256 {self.content_hash})",
            f"stages: {', '.join(self.stages)}",
            f"engagement rules: {self.engagement_rules}, fastpass rules: {self.fastpass_rules}",
            "roles: " + ", ".join(f"{role} {stage}" for role, stage in self.roles),
        ]


def check(source: str) -> CheckReport:
    """Validate a model's YAML text and report every problem found; never raises for a bad
    model."""
    try:
        model = load_model(source)
    except ModelConfigError as exc:
        return CheckReport(ok=False, errors=exc.messages)
    return CheckReport(
        ok=True,
        version=model.version,
        content_hash=model.content_hash,
        stages=model.stages,
        engagement_rules=len(model.spec.engagement.rules),
        fastpass_rules=len(model.spec.fastpass),
        roles=tuple((role, stage) for role in STAGE_ROLES for stage in model.roles.get(role, ())),
    )
