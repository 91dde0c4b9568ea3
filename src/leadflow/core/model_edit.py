"""The one editor of a lead model's YAML text: set values by key path, keep every other byte.

Whoever changes a model (``report acceptance``'s candidate thresholds, ``report engagement
--suggest-points``, a new ``version``) says *what* to change as key paths --
``stages.mql.enter_when[2].score``, ``qualification.handoff_threshold``, ``version`` -- and
:func:`edit` does the rest:

- the text is parsed with the model loader's own YAML parser (PyYAML, YAML 1.1, so the editor
  and :func:`~leadflow.core.config.load_model` agree on what every scalar is), and each path
  is walked down the node tree to one scalar;
- that scalar's span (the parser's start and end marks) is replaced by the new value, written
  in the old scalar's style (a double-quoted version stays double-quoted); every other byte
  -- comments, key order, quoting, flow mappings spread over several lines -- is kept;
- the result must parse to the old document with exactly those values changed (an alias, a
  value the old style cannot carry... is refused) and pass the model loader, so a bad edit
  raises :class:`~leadflow.core.config.ModelConfigError` naming the key path.

Stages are data: :func:`mql_threshold_path` finds the hand-off stage by its role
(:attr:`LeadModel.mql_condition`), never by id. Pure: text in, text out.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from typing import Any

import yaml

from leadflow.core.config import LeadModel, ModelConfigError, load_model

Key = str | int
Path = tuple[Key, ...]
Scalar = str | int | float | bool

VERSION: Path = ("version",)
HANDOFF_THRESHOLD: Path = ("qualification", "handoff_threshold")


def format_path(path: Path) -> str:
    """``("stages", "mql", "enter_when", 2, "score")`` -> ``stages.mql.enter_when[2].score``
    (the form :class:`ModelConfigError` uses)."""
    out = ""
    for key in path:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else key)
    return out


def parse_path(text: str) -> Path:
    """The inverse of :func:`format_path` (keys without ``.``, ``[`` or ``]``)."""
    path: list[Key] = []
    for part in text.split("."):
        name, *indexes = part.split("[")
        if not name and not (indexes and path):
            raise ValueError(f"{text}: not a key path")
        if name:
            path.append(name)
        for index in indexes:
            if not index.endswith("]") or not index[:-1].isdigit():
                raise ValueError(f"{text}: not a key path")
            path.append(int(index[:-1]))
    return tuple(path)


def mql_threshold_path(model: LeadModel) -> Path:
    """Where the MQL score threshold (:attr:`LeadModel.mql_threshold`) is written."""
    stage, index = model.handoff_stage, model.mql_condition
    if index is None:
        raise ModelConfigError(f"stages.{stage}.enter_when", "no score condition to change")
    return ("stages", stage, "enter_when", index, "score")


def rule_points_path(model: LeadModel, rule_id: str) -> Path:
    """Where the ``points`` of engagement rule ``rule_id`` are written."""
    for i, rule in enumerate(model.spec.engagement.rules):
        if rule.id == rule_id:
            return ("engagement", "rules", i, "points")
    raise ModelConfigError("engagement.rules", f"no rule with id '{rule_id}'")


def _find(root: yaml.Node, path: Path) -> yaml.ScalarNode:
    node = root
    for depth, key in enumerate(path):
        where = format_path(path[: depth + 1])
        child: yaml.Node | None = None
        if isinstance(key, str) and isinstance(node, yaml.MappingNode):
            child = next(
                (v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key),
                None,
            )
        elif isinstance(key, int) and isinstance(node, yaml.SequenceNode):
            child = node.value[key] if 0 <= key < len(node.value) else None
        if child is None:
            raise ModelConfigError(where, "not found")
        node = child
    if not isinstance(node, yaml.ScalarNode):
        raise ModelConfigError(format_path(path), "not a single value: cannot be set")
    if node.style in ("|", ">"):
        raise ModelConfigError(format_path(path), "a block scalar: edit it by hand")
    return node


def _number(value: float) -> str:
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    text = repr(float(value))
    mantissa, e, exponent = text.partition("e")
    if e and "." not in mantissa:  # YAML 1.1 reads 1e-05 as text, 1.0e-05 as a number
        text = f"{mantissa}.0e{exponent}"
    return text


def _plain_ok(value: str) -> bool:
    safe = value and all(c.isalnum() or c in "._-/" for c in value)
    return bool(safe) and yaml.safe_load(value) == value


def _render(value: Scalar, style: str | None) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number(value)
    if style == "'" and value.isprintable():
        return "'" + value.replace("'", "''") + "'"
    if style is None and _plain_ok(value):
        return value
    return json.dumps(value, ensure_ascii=False)


def _set(data: Any, path: Path, value: Scalar) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


def edit(source: str, changes: Mapping[Path, Scalar] | Mapping[str, Scalar]) -> str:
    """``source`` with each key path set to its value (a number, text or a boolean that
    replaces an existing single value); every other byte kept. The result is checked with
    the model loader: raises :class:`ModelConfigError` naming the key path of a missing
    key or of the first problem the edit makes."""
    wanted = {parse_path(p) if isinstance(p, str) else tuple(p): v for p, v in changes.items()}
    if not wanted:
        return source
    try:
        root = yaml.compose(source, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        load_model(source)  # raises the loader's own refusal, with line and column
        raise
    if root is None:
        raise ModelConfigError("(root)", "expected a mapping")
    spans = []
    for path, value in wanted.items():
        node = _find(root, path)
        try:
            text = _render(value, node.style)
        except ValueError as exc:
            raise ModelConfigError(format_path(path), str(exc)) from None
        spans.append((node.start_mark.index, node.end_mark.index, text))
    out = source
    for start, end, text in sorted(spans, reverse=True):
        out = out[:start] + text + out[end:]
    expected = copy.deepcopy(yaml.safe_load(source))
    try:
        for path, value in wanted.items():
            _set(expected, path, value)
    except (KeyError, IndexError, TypeError):
        expected = None  # a key the parser reads as another type: refused below
    try:
        same = yaml.safe_load(out) == expected
    except yaml.YAMLError:
        same = False  # the span held an anchor another key's alias refers to
    if not same:  # an alias shared the node, the old style could not carry the value...
        where = ", ".join(format_path(p) for p in wanted)
        raise ModelConfigError(where, "the edit would change more than these keys")
    load_model(out)
    return out


def set_mql_threshold(source: str, threshold: float, *, version: str | None = None) -> str:
    """The hand-off stage's score condition set to ``threshold`` (and ``version``, if given)."""
    changes: dict[Path, Scalar] = {mql_threshold_path(load_model(source)): threshold}
    if version is not None:
        changes[VERSION] = version
    return edit(source, changes)


def set_handoff_threshold(source: str, threshold: float, *, version: str | None = None) -> str:
    """``qualification.handoff_threshold`` (the BANT score that opens an opportunity) set."""
    changes: dict[Path, Scalar] = {HANDOFF_THRESHOLD: threshold}
    if version is not None:
        changes[VERSION] = version
    return edit(source, changes)


def set_rule_points(source: str, points: Mapping[str, float], *, version: str | None = None) -> str:
    """The ``points`` of each engagement rule (by id) set."""
    model = load_model(source)
    changes: dict[Path, Scalar] = {rule_points_path(model, k): v for k, v in points.items()}
    if version is not None:
        changes[VERSION] = version
    return edit(source, changes)


__all__ = [
    "HANDOFF_THRESHOLD",
    "VERSION",
    "Path",
    "edit",
    "format_path",
    "mql_threshold_path",
    "parse_path",
    "rule_points_path",
    "set_handoff_threshold",
    "set_mql_threshold",
    "set_rule_points",
]
