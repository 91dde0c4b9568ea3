"""Reading the plain tables: one SQL query per table into a Polars frame (timestamps read
as plain ``DateTime`` and marked UTC here)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import polars as pl
from sqlalchemy import Connection, DateTime, select, type_coerce

from leadflow.adapters.db.tables import (
    accounts,
    email_sends,
    events,
    form_submissions,
    lead_models,
    lead_states,
    leads,
    opportunities,
    sales_actions,
    stage_changes,
)
from leadflow.core.config import LeadModel

# --------------------------------------------------------------------------- loading


def _utc_cols(frame: pl.DataFrame, *names: str) -> pl.DataFrame:
    return frame.with_columns(
        pl.col(n).cast(pl.Datetime("us")).dt.replace_time_zone("UTC") for n in names
    )


def _ts(column: Any, name: str) -> Any:
    # Plain DateTime: parsed by SQLAlchemy's C processors (no per-value tz decoration).
    return type_coerce(column, DateTime()).label(name)


def _read(conn: Connection, stmt: Any, schema: Mapping[str, Any]) -> pl.DataFrame:
    frame = pl.read_database(stmt, conn, schema_overrides=dict(schema))
    if frame.width == 0 or frame.height == 0:
        frame = pl.DataFrame(schema=dict(schema))
    return frame


def load_stage_log(conn: Connection) -> pl.DataFrame:
    """``stage_changes`` as a frame: lead_id, from_stage, to_stage, at, model_version."""
    stmt = select(
        stage_changes.c.lead_id,
        stage_changes.c.from_stage,
        stage_changes.c.to_stage,
        _ts(stage_changes.c.at, "at"),
        stage_changes.c.model_version,
    ).order_by(stage_changes.c.lead_id, stage_changes.c.at, stage_changes.c.id)
    schema = {
        "lead_id": pl.Int64,
        "from_stage": pl.String,
        "to_stage": pl.String,
        "at": pl.Datetime("us"),
        "model_version": pl.String,
    }
    return _utc_cols(_read(conn, stmt, schema), "at")


def load_leads(conn: Connection) -> pl.DataFrame:
    """One row per lead with its account attributes and current stage."""
    stmt = select(
        leads.c.id.label("lead_id"),
        leads.c.account_id,
        _ts(leads.c.created_at, "created_at"),
        accounts.c.industry,
        accounts.c.employee_count,
        accounts.c.is_target,
        lead_states.c.stage.label("current_stage"),
    ).select_from(
        leads.outerjoin(accounts, accounts.c.id == leads.c.account_id).outerjoin(
            lead_states, lead_states.c.lead_id == leads.c.id
        )
    )
    schema = {
        "lead_id": pl.Int64,
        "account_id": pl.Int64,
        "created_at": pl.Datetime("us"),
        "industry": pl.String,
        "employee_count": pl.Int64,
        "is_target": pl.Boolean,
        "current_stage": pl.String,
    }
    return _utc_cols(_read(conn, stmt, schema), "created_at")


def load_events(conn: Connection, until: datetime | None = None) -> pl.DataFrame:
    """Events of known leads (``identify``/``group``/``alias`` left out), with the columns
    the reports use: content from ``properties.asset`` or the page path."""
    props = events.c.properties
    stmt = select(
        events.c.lead_id,
        _ts(events.c.occurred_at, "at"),
        events.c.type,
        events.c.name,
        events.c.channel,
        events.c.utm_campaign.label("campaign"),
        events.c.utm_source,
        events.c.utm_medium,
        events.c.page_url,
        events.c.referrer,
        events.c.anonymous_id,
        props["asset"].as_string().label("asset"),
        props["asset_type"].as_string().label("asset_type"),
        props["bounce_type"].as_string().label("bounce_type"),
        props["webinar"].as_string().label("webinar"),
        props["form"].as_string().label("form"),
    ).where(events.c.type.in_(("track", "page", "screen")))
    if until is not None:
        stmt = stmt.where(events.c.occurred_at < until)
    schema = {
        "lead_id": pl.Int64,
        "at": pl.Datetime("us"),
        "type": pl.String,
        "name": pl.String,
        "channel": pl.String,
        "campaign": pl.String,
        "utm_source": pl.String,
        "utm_medium": pl.String,
        "page_url": pl.String,
        "referrer": pl.String,
        "anonymous_id": pl.String,
        "asset": pl.String,
        "asset_type": pl.String,
        "bounce_type": pl.String,
        "webinar": pl.String,
        "form": pl.String,
    }
    frame = _utc_cols(_read(conn, stmt, schema), "at")
    # The same normalisation as core.model.Event.path: URL path, lower-cased, no trailing /.
    path = (
        pl.col("page_url")
        .str.replace(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*", "")
        .str.replace(r"[?#].*$", "")
        .str.to_lowercase()
        .str.strip_chars_end("/")
    )
    path = (
        pl.when(pl.col("page_url").is_null())
        .then(None)
        .otherwise(pl.when(path == "").then(pl.lit("/")).otherwise(path))
    )
    return frame.with_columns(path=path).with_columns(
        content=pl.coalesce(pl.col("asset"), pl.col("path"))
    )


def load_actions(conn: Connection) -> pl.DataFrame:
    stmt = select(
        sales_actions.c.lead_id,
        sales_actions.c.name,
        _ts(sales_actions.c.at, "at"),
        sales_actions.c.amount,
    ).order_by(sales_actions.c.at, sales_actions.c.id)
    schema = {"lead_id": pl.Int64, "name": pl.String, "at": pl.Datetime("us"), "amount": pl.Float64}
    return _utc_cols(_read(conn, stmt, schema), "at")


def active_model_source(conn: Connection) -> str | None:
    return conn.execute(select(lead_models.c.source).where(lead_models.c.active)).scalar()


def load_sends(conn: Connection) -> pl.DataFrame:
    """``email_sends`` as a frame (no addresses): program, step, seminar, status, times."""
    stmt = select(
        email_sends.c.id,
        email_sends.c.lead_id,
        email_sends.c.category,
        email_sends.c.program_key,
        email_sends.c.step_id,
        email_sends.c.seminar_id,
        email_sends.c.template,
        email_sends.c.status,
        _ts(email_sends.c.sent_at, "sent_at"),
        _ts(email_sends.c.opened_at, "opened_at"),
        _ts(email_sends.c.clicked_at, "clicked_at"),
        _ts(email_sends.c.unsubscribed_at, "unsubscribed_at"),
        _ts(email_sends.c.bounced_at, "bounced_at"),
    ).order_by(email_sends.c.id)
    times = ("sent_at", "opened_at", "clicked_at", "unsubscribed_at", "bounced_at")
    schema = {
        "id": pl.Int64,
        "lead_id": pl.Int64,
        "category": pl.String,
        "program_key": pl.String,
        "step_id": pl.String,
        "seminar_id": pl.Int64,
        "template": pl.String,
        "status": pl.String,
        **{t: pl.Datetime("us") for t in times},
    }
    return _utc_cols(_read(conn, stmt, schema), *times)


def load_form_submissions(conn: Connection) -> pl.DataFrame:
    stmt = select(
        form_submissions.c.lead_id,
        form_submissions.c.form_key,
        _ts(form_submissions.c.submitted_at, "submitted_at"),
    ).order_by(form_submissions.c.id)
    schema = {"lead_id": pl.Int64, "form_key": pl.String, "submitted_at": pl.Datetime("us")}
    return _utc_cols(_read(conn, stmt, schema), "submitted_at")


def _seminar_funnel(conn: Connection, model: LeadModel) -> list[dict[str, Any]]:
    from leadflow.services.seminars import funnel as seminar_funnel

    return seminar_funnel(conn, model)


def load_opportunities(conn: Connection) -> pl.DataFrame:
    """``opportunities`` as a frame: id, lead_id, account_id, amount, stage, created_at,
    closed_at, expected_close."""
    stmt = select(
        opportunities.c.id,
        opportunities.c.lead_id,
        opportunities.c.account_id,
        opportunities.c.amount,
        opportunities.c.stage,
        _ts(opportunities.c.created_at, "created_at"),
        _ts(opportunities.c.closed_at, "closed_at"),
        opportunities.c.expected_close,
    ).order_by(opportunities.c.id)
    schema = {
        "id": pl.Int64,
        "lead_id": pl.Int64,
        "account_id": pl.Int64,
        "amount": pl.Float64,
        "stage": pl.String,
        "created_at": pl.Datetime("us"),
        "closed_at": pl.Datetime("us"),
        "expected_close": pl.Date,
    }
    return _utc_cols(_read(conn, stmt, schema), "created_at", "closed_at")
