"""No code compares a stage to a stage id of the shipped model: it asks the model for a
role (``model.stage_for("handoff")``), so renaming a stage changes no figure.

``won``, ``lost`` and ``anonymous`` are left out: they are also the opportunity stages
(open/won/lost), sales outcomes and an identity kind, which are not lead stages.
"""

from __future__ import annotations

import ast
from pathlib import Path

from leadflow.core.config import load_default_model

SRC = Path(__file__).resolve().parents[2] / "src" / "leadflow"
GUARDED = frozenset(load_default_model().stages) - {"won", "lost", "anonymous"}


def _constants(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        return [v for item in node.elts for v in _constants(item)]
    return []


def _compared(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        values: list[str] = []
        if isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                values += _constants(side)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in {"in_", "is_in"}
        ):
            for arg in node.args:
                values += _constants(arg)
        found += [(getattr(node, "lineno", 0), v) for v in values if v in GUARDED]
    return found


def test_the_guard_sees_a_literal_comparison():
    tree = ast.parse('x = stage == "mql"\ny = col.is_in(["nurturing"])\n')
    assert [v for _, v in _compared(tree)] == ["mql", "nurturing"]


def test_no_stage_id_is_compared_in_code():
    offenders = [
        f"{path.relative_to(SRC)}:{line}: {value!r}"
        for path in sorted(SRC.rglob("*.py"))
        for line, value in _compared(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert offenders == []
