"""What every part of the model schema shares: the event types and value lists, the
error a refused model raises (:class:`ModelConfigError`) and the strict spec base."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

EVENT_TYPES = ("identify", "track", "page", "screen", "group", "alias")
BANT_CRITERIA = ("budget", "authority", "need", "timeframe")
CONSENT_VALUES = ("granted", "denied", "unknown")


class ModelConfigError(ValueError):
    """A model file is refused. ``path`` names the key, ``reason`` says what is wrong.

    ``str(error)`` is the first problem as ``path: reason``; ``errors`` lists every problem
    found (``leadflow model check`` prints them all).
    """

    def __init__(self, path: str, reason: str, errors: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.errors: tuple[tuple[str, str], ...] = errors or ((path, reason),)

    @property
    def messages(self) -> tuple[str, ...]:
        return tuple(f"{p}: {r}" for p, r in self.errors)


def _as_list(value: Any) -> Any:
    """Let a single value stand for a one-element list (``type: page``)."""
    if value is None or isinstance(value, list):
        return value
    return [value]


Scalar = str | int | float | bool
StrList = Annotated[list[str], BeforeValidator(_as_list)]
ScalarList = Annotated[list[Scalar], BeforeValidator(_as_list)]
NonEmptyStr = Annotated[str, Field(min_length=1)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)
