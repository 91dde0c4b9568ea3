"""Reading the plain tables: one SQL query per table into a Polars frame (timestamps read
as plain ``DateTime`` and marked UTC here)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import polars as pl
from sqlalchemy import Connection, DateTime, String, cast, func, select, type_coerce

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


def _text(value: Any) -> Any:
    """A JSON member as text on both backends (SQLite's json_extract keeps numbers)."""
    return cast(value.as_string(), String)


# Segment columns every deal carries (see :func:`load_opportunities`).
DEAL_SEGMENTS = ("industry", "country", "source", "owner", "size", "currency", "product")


def load_opportunities(conn: Connection, attribute: str | None = None) -> pl.DataFrame:
    """``opportunities`` as a frame, one row per deal: id, lead_id, account_id, amount,
    currency, stage, lost_reason, owner, created_at, closed_at, expected_close, and the
    segment columns of the deal's account (its own, else its contact's) and contact:
    ``industry`` and ``country`` (the account's, else the lead attribute of that name),
    ``employee_count`` (the account's, else the lead attribute ``employees``), ``source``
    (the lead's), ``product`` (when the table stores one). With ``attribute``, also that
    custom attribute as text (``attr``: the lead attribute, else the account trait)."""
    own = accounts.alias("deal_account")
    via_lead = accounts.alias("lead_account")
    attrs = leads.c.attributes
    columns: list[Any] = [
        opportunities.c.id,
        opportunities.c.lead_id,
        func.coalesce(opportunities.c.account_id, leads.c.account_id).label("account_id"),
        opportunities.c.amount,
        opportunities.c.currency,
        opportunities.c.stage,
        opportunities.c.lost_reason,
        opportunities.c.owner,
        _ts(opportunities.c.created_at, "created_at"),
        _ts(opportunities.c.closed_at, "closed_at"),
        opportunities.c.expected_close,
        func.coalesce(own.c.industry, via_lead.c.industry, _text(attrs["industry"])).label(
            "industry"
        ),
        func.coalesce(own.c.country, via_lead.c.country, _text(attrs["country"])).label("country"),
        func.coalesce(own.c.employee_count, via_lead.c.employee_count).label("employee_count"),
        _text(attrs["employees"]).label("lead_employees"),
        leads.c.source,
    ]
    schema: dict[str, Any] = {
        "id": pl.Int64,
        "lead_id": pl.Int64,
        "account_id": pl.Int64,
        "amount": pl.Float64,
        "currency": pl.String,
        "stage": pl.String,
        "lost_reason": pl.String,
        "owner": pl.String,
        "created_at": pl.Datetime("us"),
        "closed_at": pl.Datetime("us"),
        "expected_close": pl.Date,
        "industry": pl.String,
        "country": pl.String,
        "employee_count": pl.Int64,
        "lead_employees": pl.String,
        "source": pl.String,
    }
    if "product" in opportunities.c:  # a deal's product, when the store keeps one
        columns.append(opportunities.c["product"].label("product"))
        schema["product"] = pl.String
    if attribute is not None:
        columns.append(
            func.coalesce(
                _text(attrs[attribute]),
                _text(own.c.traits[attribute]),
                _text(via_lead.c.traits[attribute]),
            ).label("attr")
        )
        schema["attr"] = pl.String
    stmt = (
        select(*columns)
        .select_from(
            opportunities.outerjoin(leads, leads.c.id == opportunities.c.lead_id)
            .outerjoin(own, own.c.id == opportunities.c.account_id)
            .outerjoin(via_lead, via_lead.c.id == leads.c.account_id)
        )
        .order_by(opportunities.c.id)
    )
    frame = _utc_cols(_read(conn, stmt, schema), "created_at", "closed_at")
    # The lead attribute ``employees`` when the account has no head count (text in JSON).
    employees = pl.col("lead_employees").str.strip_chars().cast(pl.Float64, strict=False)
    frame = frame.with_columns(
        employee_count=pl.coalesce(pl.col("employee_count"), employees.cast(pl.Int64, strict=False))
    ).drop("lead_employees")
    if "product" not in frame.columns:
        frame = frame.with_columns(product=pl.lit(None, pl.String))
    return frame
