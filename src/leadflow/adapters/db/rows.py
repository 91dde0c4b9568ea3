"""Result rows as the name-keyed mappings the services and the core read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from sqlalchemy import RowMapping


def as_record(row: RowMapping) -> Mapping[str, Any]:
    """``row`` under its column names, unchanged (no copy).

    SQLAlchemy types ``RowMapping`` as keyed by ``str | column`` (both look-ups work), which
    a ``Mapping[str, Any]`` parameter does not accept; iterating it yields the column names,
    so the cast only states what the row is."""
    return cast(Mapping[str, Any], row)
