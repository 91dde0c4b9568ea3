"""The content library: assets by evaluation stage, from leadflow.yaml and the API.

``content_assets`` is the library at run time. Assets declared in the model's
``nurture.content`` are upserted into it (``source='config'``) by :func:`sync_from_model`,
which is idempotent and cheap, so every nurture pass and content read can call it; assets
added through ``/api/content`` or ``leadflow content add`` have ``source='api'``. A config
asset removed from the model is deactivated, never deleted (sends and reports refer to it).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, select, update

from leadflow.adapters.db.tables import (
    accounts,
    content_assets,
    events,
    form_submissions,
    identities,
    lead_states,
    leads,
)
from leadflow.core import errors
from leadflow.core.config import ContentSpec, LeadModel


def _columns(spec: ContentSpec) -> dict[str, Any]:
    """The ``content_assets`` columns an asset's spec sets (all but key and bookkeeping)."""
    return {
        "title": spec.title,
        "type": spec.type,
        "stage": spec.stage,
        "gated": spec.gated,
        "industries": list(spec.industries),
        "url": spec.url,
    }


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
        values = {**_columns(spec), "active": True}
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


# --------------------------------------------------------------------------- API-managed CRUD


class ContentError(errors.LeadflowError):
    """A refused content change (the kind of each is its second base class)."""


class AssetNotFound(errors.NotFound, ContentError):
    pass


class AssetExists(errors.Conflict, ContentError):
    pass


class ConfigManaged(errors.Conflict, ContentError):
    """The asset is declared in leadflow.yaml: it is changed there."""


_SPEC_FIELDS = ("key", "title", "type", "stage", "gated", "industries", "url")


def to_spec(row: Any) -> ContentSpec:
    """A ``content_assets`` row (or dict) as a :class:`ContentSpec`."""
    data = dict(row) if not hasattr(row, "_mapping") else dict(row._mapping)
    return ContentSpec.model_validate({k: data[k] for k in _SPEC_FIELDS})


def library(conn: Connection, model: LeadModel) -> list[ContentSpec]:
    """The active library as specs, ordered as declared in the model, then API assets by key.

    Reads only: a config asset not synced yet is taken from the model itself."""
    declared = model.spec.nurture.content if model.spec.nurture is not None else []
    rows = {r["key"]: r for r in list_assets(conn)}
    out: list[ContentSpec] = []
    seen: set[str] = set()
    for spec in declared:
        row = rows.get(spec.key)
        if row is None or row["source"] == "config":
            out.append(spec)
        else:
            out.append(to_spec(row))
        seen.add(spec.key)
    out.extend(to_spec(r) for k, r in rows.items() if k not in seen)
    return out


def find_asset(conn: Connection, model: LeadModel, key: str) -> ContentSpec | None:
    return next((a for a in library(conn, model) if a.key == key), None)


def filter_assets(
    rows: list[dict[str, Any]],
    *,
    stage: str | None = None,
    type: str | None = None,
    industry: str | None = None,
) -> list[dict[str, Any]]:
    """Assets of ``stage`` and ``type``; with ``industry``, the assets that suit it (made for
    it, or for every industry). Case-insensitive on the industry."""
    wanted = industry.strip().casefold() if industry else None
    out = []
    for row in rows:
        if stage and row["stage"] != stage:
            continue
        if type and row["type"] != type:
            continue
        if wanted is not None:
            suits = {str(i).strip().casefold() for i in row["industries"] or []}
            if suits and wanted not in suits:
                continue
        out.append(row)
    return out


def _row(conn: Connection, key: str) -> Any:
    return (
        conn.execute(select(content_assets).where(content_assets.c.key == key)).mappings().first()
    )


def create_asset(conn: Connection, spec: ContentSpec, now: datetime) -> dict[str, Any]:
    """Add an API-managed asset; :class:`AssetExists` if the key is taken (by any source)."""
    existing = _row(conn, spec.key)
    if existing is not None:
        where = "leadflow.yaml" if existing["source"] == "config" else "the API"
        raise AssetExists(f"key: an asset {spec.key!r} already exists (managed in {where})")
    conn.execute(
        content_assets.insert().values(
            key=spec.key,
            **_columns(spec),
            source="api",
            active=True,
            created_at=now,
            updated_at=now,
        )
    )
    return dict(_row(conn, spec.key))


def _api_row(conn: Connection, key: str) -> Any:
    row = _row(conn, key)
    if row is None:
        raise AssetNotFound(f"no content asset {key!r}")
    if row["source"] == "config":
        raise ConfigManaged(
            f"asset {key!r} is declared in leadflow.yaml (nurture.content): "
            "edit it there and apply the model"
        )
    return row


def update_asset(
    conn: Connection, key: str, changes: dict[str, Any], now: datetime
) -> dict[str, Any]:
    """Change an API-managed asset; the result is validated as a whole like ContentSpec
    (raises pydantic's ValidationError). ``active`` may be changed too."""
    row = _api_row(conn, key)
    merged = {k: row[k] for k in _SPEC_FIELDS}
    merged.update({k: v for k, v in changes.items() if k in _SPEC_FIELDS and k != "key"})
    spec = ContentSpec.model_validate(merged)
    values: dict[str, Any] = {**_columns(spec), "updated_at": now}
    if isinstance(changes.get("active"), bool):
        values["active"] = changes["active"]
    conn.execute(update(content_assets).where(content_assets.c.key == key).values(**values))
    return dict(_row(conn, key))


def delete_asset(conn: Connection, key: str) -> None:
    """Remove an API-managed asset (config assets: :class:`ConfigManaged`)."""
    _api_row(conn, key)
    conn.execute(delete(content_assets).where(content_assets.c.key == key))


# --------------------------------------------------------------------------- personalisation


def consumed_assets(conn: Connection, lead_id: int) -> set[str]:
    """Asset keys the lead already has: downloads (``content_download`` events with an
    ``asset_key``) and form submissions that unlocked an asset."""
    keys: set[str] = set()
    for props in conn.execute(
        select(events.c.properties).where(
            events.c.lead_id == lead_id,
            events.c.type == "track",
            events.c.name == "content_download",
        )
    ).scalars():
        if isinstance(props, dict) and isinstance(props.get("asset_key"), str):
            keys.add(props["asset_key"])
    keys.update(
        k
        for k in conn.execute(
            select(form_submissions.c.asset_key).where(
                form_submissions.c.lead_id == lead_id, form_submissions.c.asset_key.is_not(None)
            )
        ).scalars()
        if k
    )
    return keys


def resolve_visitor(
    conn: Connection, *, anonymous_id: str | None = None, user_id: str | None = None
) -> int | None:
    """The lead behind an anonymous id or a user id (None if unknown or erased)."""
    for kind, value in (("user", user_id), ("anonymous", anonymous_id)):
        if not value:
            continue
        lead_id = conn.execute(
            select(identities.c.lead_id)
            .join(leads, leads.c.id == identities.c.lead_id)
            .where(
                identities.c.kind == kind,
                identities.c.value == value,
                leads.c.erased_at.is_(None),
            )
        ).scalar_one_or_none()
        if lead_id is not None:
            return int(lead_id)
    return None


def recommendations(
    assets: list[ContentSpec],
    *,
    stage: str,
    industry: str | None,
    consumed: set[str],
    content_stages: Mapping[str, str],
    limit: int,
) -> list[ContentSpec]:
    """The ``limit`` best assets in order: :func:`leadflow.core.nurture.next_best_content`
    (the ranking the nurture emails use) asked again with each pick counted as consumed."""
    from leadflow.core.nurture import Asset, LeadView, next_best_content

    by_key = {a.key: a for a in assets}
    pool = [
        Asset(a.key, a.title, a.type, a.stage, a.gated, tuple(a.industries), a.url) for a in assets
    ]
    taken = set(consumed)
    picked: list[ContentSpec] = []
    while len(picked) < limit:
        view = LeadView(
            lead_id=0, email=None, stage=stage, industry=industry, consumed=frozenset(taken)
        )
        best = next_best_content(view, pool, content_stages)
        if best is None:
            break
        picked.append(by_key[best.key])
        taken.add(best.key)
    return picked


def personalize(
    conn: Connection,
    model: LeadModel,
    *,
    anonymous_id: str | None = None,
    user_id: str | None = None,
    industry_hint: str | None = None,
    limit: int = 5,
) -> dict[str, Any]:
    """What a website should show this visitor: ``{stage, evaluation_stage, industry,
    recommendations: [{key, title, type, url, gated}]}``.

    An unknown or anonymous visitor is at the model's initial stage (early content); the
    industry is the lead's account industry, else ``industry_hint``. Nothing else about
    the lead is returned."""
    lead_id = resolve_visitor(conn, anonymous_id=anonymous_id, user_id=user_id)
    stage = model.initial_stage
    industry: str | None = None
    consumed: set[str] = set()
    if lead_id is not None:
        row = conn.execute(
            select(lead_states.c.stage, accounts.c.industry, leads.c.attributes)
            .select_from(
                leads.outerjoin(lead_states, lead_states.c.lead_id == leads.c.id).outerjoin(
                    accounts, accounts.c.id == leads.c.account_id
                )
            )
            .where(leads.c.id == lead_id)
        ).first()
        if row is not None:
            stage = row.stage or model.stage_for("acquired") or model.initial_stage
            attributes = row.attributes if isinstance(row.attributes, dict) else {}
            own = attributes.get("industry")
            industry = row.industry or (own if isinstance(own, str) and own else None)
        consumed = consumed_assets(conn, lead_id)
    if not industry and industry_hint:
        industry = industry_hint.strip()[:100] or None
    evaluation_stage = model.content_stages.get(stage)
    picked = recommendations(
        library(conn, model),
        stage=stage,
        industry=industry,
        consumed=consumed,
        content_stages=model.content_stages,
        limit=limit,
    )
    return {
        "stage": stage,
        "evaluation_stage": evaluation_stage,
        "industry": industry,
        "recommendations": [
            {"key": a.key, "title": a.title, "type": a.type, "url": a.url, "gated": a.gated}
            for a in picked
        ],
    }
