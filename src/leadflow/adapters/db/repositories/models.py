"""The stored lead models (``lead_models``): the active row and a version's YAML source."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, select

from leadflow.adapters.db.engine import read_only
from leadflow.adapters.db.tables import lead_models


def active_model_row(engine: Engine) -> dict[str, Any] | None:
    with read_only(engine).connect() as conn:
        row = conn.execute(
            select(
                lead_models.c.version,
                lead_models.c.content_hash,
                lead_models.c.source,
                lead_models.c.activated_at,
            ).where(lead_models.c.active)
        ).first()
    return dict(row._mapping) if row is not None else None


def model_source(conn: Connection, content_hash: str) -> str:
    """The YAML source of the stored model with ``content_hash`` (it must exist)."""
    source: str = conn.execute(
        select(lead_models.c.source).where(lead_models.c.content_hash == content_hash)
    ).scalar_one()
    return source
