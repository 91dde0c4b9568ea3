"""The content library: assets by evaluation stage, from leadflow.yaml and the API.

``content_assets`` is the library at run time. Assets declared in the model's
``nurture.content`` are upserted into it (``source='config'``) by :func:`sync_from_model`,
which is idempotent and cheap, so every nurture pass and content read can call it; assets
added through ``/api/content`` or ``leadflow content add`` have ``source='api'``. A config
asset removed from the model is deactivated, never deleted (sends and reports refer to it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update

from leadflow.adapters.db.tables import content_assets
from leadflow.core.config import LeadModel


def sync_from_model(conn: Connection, model: LeadModel, now: datetime) -> int:
    """Upsert the model's ``nurture.content`` into ``content_assets``; returns rows changed.

    An API-managed asset with the same key is left alone (the API owns it)."""
    declared = model.spec.nurture.content if model.spec.nurture is not None else []
    existing = {
        row.key: row
        for row in conn.execute(
            select(
                content_assets.c.key,
                content_assets.c.source,
                content_assets.c.title,
                content_assets.c.type,
                content_assets.c.stage,
                content_assets.c.gated,
                content_assets.c.industries,
                content_assets.c.url,
                content_assets.c.active,
            )
        )
    }
    changed = 0
    for spec in declared:
        values: dict[str, Any] = {
            "title": spec.title,
            "type": spec.type,
            "stage": spec.stage,
            "gated": spec.gated,
            "industries": list(spec.industries),
            "url": spec.url,
            "active": True,
        }
        row = existing.get(spec.key)
        if row is None:
            conn.execute(
                content_assets.insert().values(
                    key=spec.key, source="config", created_at=now, updated_at=now, **values
                )
            )
            changed += 1
        elif row.source == "config" and any(getattr(row, k) != v for k, v in values.items()):
            conn.execute(
                update(content_assets)
                .where(content_assets.c.key == spec.key)
                .values(updated_at=now, **values)
            )
            changed += 1
    keys = {spec.key for spec in declared}
    gone = [
        k for k, row in existing.items() if row.source == "config" and row.active and k not in keys
    ]
    if gone:
        conn.execute(
            update(content_assets)
            .where(content_assets.c.key.in_(gone))
            .values(active=False, updated_at=now)
        )
        changed += len(gone)
    return changed


def list_assets(conn: Connection, *, active_only: bool = True) -> list[dict[str, Any]]:
    """Every asset as a plain dict (key, title, type, stage, gated, industries, url, source,
    active, created_at, updated_at), ordered by key."""
    query = select(content_assets).order_by(content_assets.c.key)
    if active_only:
        query = query.where(content_assets.c.active.is_(True))
    return [dict(row) for row in conn.execute(query).mappings()]
