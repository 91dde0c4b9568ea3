"""Every key of leadflow.yaml is documented in docs/model.md."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from leadflow.core.config import ModelSpec

DOCS = Path(__file__).resolve().parents[2] / "docs" / "model.md"


def _keys(model: type[BaseModel], seen: set[type]) -> set[str]:
    if model in seen:
        return set()
    seen.add(model)
    keys: set[str] = set()
    for name, info in model.model_fields.items():
        keys.add(info.alias or name)
        for arg in _types(info.annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                keys |= _keys(arg, seen)
    return keys


def _types(annotation: object) -> list[object]:
    found = [annotation]
    for arg in getattr(annotation, "__args__", ()) or ():
        found += _types(arg)
    for meta in getattr(annotation, "__metadata__", ()) or ():
        found.append(meta)
    origin = getattr(annotation, "__origin__", None)
    if origin is not None:
        found.append(origin)
    return found


def test_every_model_key_is_documented():
    text = DOCS.read_text()
    keys = _keys(ModelSpec, set())
    assert len(keys) > 30  # the walk really reached the nested specs
    missing = sorted(k for k in keys if f"`{k}`" not in text)
    assert missing == []
