"""The lead models in the store: the active one (parsed once per content hash), installing
a version, the version history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update

from leadflow.adapters.db.engine import insert_ignore
from leadflow.adapters.db.tables import lead_models
from leadflow.core.config import LeadModel, load_default_model, load_model


class ModelCache:
    """The active model, parsed once per content hash (cheap to ask on every request)."""

    def __init__(self) -> None:
        self._parsed: dict[str, LeadModel] = {}

    def active(self, conn: Connection, now: datetime) -> LeadModel:
        """The active model; on a fresh database the shipped one is installed first."""
        found = self.installed(conn)
        if found is not None:
            return found
        model = load_default_model()
        install_model(conn, model, default_source(), now, activate=True)
        self._parsed[model.content_hash] = model
        return model

    def installed(self, conn: Connection) -> LeadModel | None:
        """The active model, or None on a database where none is installed yet (reads only:
        safe on a read-only connection)."""
        row = conn.execute(
            select(lead_models.c.content_hash, lead_models.c.source).where(lead_models.c.active)
        ).first()
        if row is None:
            return None
        cached = self._parsed.get(row.content_hash)
        if cached is None:
            cached = load_model(row.source)
            self._parsed[row.content_hash] = cached
        return cached


def default_source() -> str:
    from importlib import resources

    return resources.files("leadflow").joinpath("default.yaml").read_text(encoding="utf-8")


def install_model(
    conn: Connection, model: LeadModel, source: str, now: datetime, *, activate: bool
) -> None:
    """Store a model version (once per content hash); optionally make it the active one."""
    conn.execute(
        insert_ignore(conn.engine, lead_models, "content_hash").values(
            version=model.version,
            content_hash=model.content_hash,
            source=source,
            created_at=now,
            active=False,
        )
    )
    if activate:
        conn.execute(update(lead_models).where(lead_models.c.active).values(active=False))
        conn.execute(
            update(lead_models)
            .where(lead_models.c.content_hash == model.content_hash)
            .values(active=True, activated_at=now)
        )


def model_history(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(
            lead_models.c.version,
            lead_models.c.content_hash,
            lead_models.c.created_at,
            lead_models.c.activated_at,
            lead_models.c.active,
        ).order_by(lead_models.c.id)
    ).mappings()
    return [dict(r) for r in rows]
