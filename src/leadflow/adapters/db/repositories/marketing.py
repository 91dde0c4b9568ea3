"""Read models of the marketing pages (programs, content, forms): grouped SQL, no row loops.

Every figure is one ``GROUP BY`` query over its table (SQLAlchemy Core, the same SQL on
SQLite and PostgreSQL); the pages combine the small results in Python.

A *conversion* of a program step is a lead whose stage moved forward on the model's main
path (a stage change from one main-path stage to a later one) within
:data:`CONVERSION_DAYS` days after the step's email was sent to them (``sent_at <= at <
sent_at + 14 days``); each lead counts once per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Engine, Interval, and_, case, func, literal, or_, select
from sqlalchemy.sql import ColumnElement

from leadflow.adapters.db.engine import is_postgres, read_only
from leadflow.adapters.db.tables import (
    accounts,
    content_assets,
    email_sends,
    events,
    form_submissions,
    leads,
    program_enrollments,
    stage_changes,
)

CONVERSION_DAYS = 14
LATEST_SUBMISSIONS = 20
PLANNED = ("planned", "sending")

StepKey = tuple[str, str]


@dataclass
class StepFigures:
    planned: int = 0
    sent: int = 0
    skipped: int = 0
    failed: int = 0
    opened: int = 0
    clicked: int = 0
    unsubscribed: int = 0
    conversions: int = 0
    skip_reasons: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class ProgramFigures:
    enrolled: int = 0
    active: int = 0
    completed: int = 0
    exited: int = 0
    exit_reasons: list[tuple[str, int]] = field(default_factory=list)
    totals: StepFigures = field(default_factory=StepFigures)
    converted_leads: int = 0
    steps: dict[str, StepFigures] = field(default_factory=dict)


def _rank(column: ColumnElement[Any], main_path: Sequence[str]) -> ColumnElement[int]:
    return case({s: i for i, s in enumerate(main_path)}, value=column, else_=-1)


def _within(engine: Engine) -> ColumnElement[bool]:
    """``stage_changes.at`` is in [sent_at, sent_at + 14 days)."""
    if is_postgres(engine):
        upper: ColumnElement[Any] = email_sends.c.sent_at + literal(
            timedelta(days=CONVERSION_DAYS), Interval()
        )
        return and_(stage_changes.c.at >= email_sends.c.sent_at, stage_changes.c.at < upper)
    days = func.julianday(stage_changes.c.at) - func.julianday(email_sends.c.sent_at)
    return and_(days >= 0, days < CONVERSION_DAYS)


def program_figures(engine: Engine, main_path: Sequence[str]) -> dict[str, ProgramFigures]:
    """Enrolment, send, engagement and conversion figures per program and step."""
    out: dict[str, ProgramFigures] = {}

    def prog(key: str) -> ProgramFigures:
        return out.setdefault(key, ProgramFigures())

    def step(key: str, step_id: str | None) -> StepFigures:
        return prog(key).steps.setdefault(step_id or "", StepFigures())

    pe, es, sc = program_enrollments.c, email_sends.c, stage_changes.c
    in_program = es.program_key.is_not(None)
    with read_only(engine).connect() as conn:
        for key, status, n in conn.execute(
            select(pe.program_key, pe.status, func.count()).group_by(pe.program_key, pe.status)
        ):
            p = prog(key)
            p.enrolled += n
            if status in ("active", "completed", "exited"):
                setattr(p, status, getattr(p, status) + n)
        for key, reason, n in conn.execute(
            select(pe.program_key, pe.exit_reason, func.count())
            .where(pe.status == "exited")
            .group_by(pe.program_key, pe.exit_reason)
            .order_by(func.count().desc())
        ):
            prog(key).exit_reasons.append((reason or "–", int(n)))
        for key, step_id, status, n in conn.execute(
            select(es.program_key, es.step_id, es.status, func.count())
            .where(in_program)
            .group_by(es.program_key, es.step_id, es.status)
        ):
            s = step(key, step_id)
            name = "planned" if status in PLANNED else status
            if name in ("planned", "sent", "skipped", "failed"):
                setattr(s, name, getattr(s, name) + int(n))
        for key, step_id, reason, n in conn.execute(
            select(es.program_key, es.step_id, es.skip_reason, func.count())
            .where(in_program, es.status == "skipped")
            .group_by(es.program_key, es.step_id, es.skip_reason)
            .order_by(func.count().desc())
        ):
            step(key, step_id).skip_reasons.append((reason or "–", int(n)))
        for key, step_id, opened, clicked, unsub in conn.execute(
            select(
                es.program_key,
                es.step_id,
                func.count(es.opened_at),
                func.count(es.clicked_at),
                func.count(es.unsubscribed_at),
            )
            .where(in_program)
            .group_by(es.program_key, es.step_id)
        ):
            s = step(key, step_id)
            s.opened, s.clicked, s.unsubscribed = int(opened), int(clicked), int(unsub)
        forward = and_(
            _rank(sc.from_stage, main_path) >= 0,
            _rank(sc.to_stage, main_path) > _rank(sc.from_stage, main_path),
        )
        converted = (
            select(es.program_key, es.step_id, es.lead_id)
            .join(stage_changes, sc.lead_id == es.lead_id)
            .where(in_program, es.status == "sent", es.sent_at.is_not(None), forward)
            .where(_within(engine))
            .distinct()
            .subquery()
        )
        for key, step_id, n in conn.execute(
            select(converted.c.program_key, converted.c.step_id, func.count()).group_by(
                converted.c.program_key, converted.c.step_id
            )
        ):
            step(key, step_id).conversions = int(n)
        for key, n in conn.execute(
            select(
                converted.c.program_key, func.count(func.distinct(converted.c.lead_id))
            ).group_by(converted.c.program_key)
        ):
            prog(key).converted_leads = int(n)
    for p in out.values():
        for s in p.steps.values():
            for name in ("planned", "sent", "skipped", "failed", "opened", "clicked"):
                setattr(p.totals, name, getattr(p.totals, name) + getattr(s, name))
            p.totals.unsubscribed += s.unsubscribed
            p.totals.conversions += s.conversions
    return out


# ---------------------------------------------------------------- content


def content_rows(engine: Engine) -> list[dict[str, Any]]:
    ca = content_assets.c
    with read_only(engine).connect() as conn:
        rows = conn.execute(
            select(ca.key, ca.title, ca.type, ca.stage, ca.gated, ca.industries, ca.url, ca.source)
            .where(ca.active.is_(True))
            .order_by(ca.stage, ca.type, ca.title)
        ).mappings()
        return [dict(r) for r in rows]


def url_path(url: str | None) -> str | None:
    """The URL's path as events are matched: lower-cased, no trailing slash (root ``/``)."""
    if not url:
        return None
    try:
        path = urlsplit(url).path.lower() or "/"
    except ValueError:
        return None
    return path.rstrip("/") or "/"


@dataclass(frozen=True, slots=True)
class Consumption:
    downloads: dict[str, int]
    page_views: dict[str, int]  # by URL path
    emails: dict[str, int]


def consumption(engine: Engine, paths: Sequence[str]) -> Consumption:
    """``content_download`` events by ``properties.asset_key``, page views by URL path (of
    the given paths only) and sent emails by ``asset_key``."""
    asset_key = events.c.properties["asset_key"].as_string()
    wanted = sorted({p for p in paths if p})
    with read_only(engine).connect() as conn:
        downloads = {
            str(k): int(n)
            for k, n in conn.execute(
                select(asset_key, func.count())
                .where(events.c.type == "track", events.c.name == "content_download")
                .group_by(asset_key)
            )
            if k is not None
        }
        views: dict[str, int] = {}
        likes = [events.c.page_url.contains(p, autoescape=True) for p in wanted if p != "/"]
        if likes:
            for page_url, n in conn.execute(
                select(events.c.page_url, func.count())
                .where(events.c.type == "page", or_(*likes))
                .group_by(events.c.page_url)
            ):
                path = url_path(page_url)
                if path in wanted:
                    views[path] = views.get(path, 0) + int(n)
        emails = {
            str(k): int(n)
            for k, n in conn.execute(
                select(email_sends.c.asset_key, func.count())
                .where(email_sends.c.status == "sent", email_sends.c.asset_key.is_not(None))
                .group_by(email_sends.c.asset_key)
            )
        }
    return Consumption(downloads, views, emails)


# ---------------------------------------------------------------- forms


def submission_counts(engine: Engine, now: datetime) -> dict[str, tuple[int, int]]:
    """form key -> (all submissions, submissions in the last 30 days)."""
    fs = form_submissions.c
    recent = func.sum(case((fs.submitted_at >= now - timedelta(days=30), 1), else_=0))
    with read_only(engine).connect() as conn:
        return {
            k: (int(n), int(r or 0))
            for k, n, r in conn.execute(
                select(fs.form_key, func.count(), recent).group_by(fs.form_key)
            )
        }


def latest_submissions(engine: Engine, form_key: str = "") -> list[dict[str, Any]]:
    """The latest submissions; what the form did not ask (a known visitor) comes from the
    lead and its account."""
    fs = form_submissions.c
    stmt = select(
        fs.id,
        fs.form_key,
        fs.lead_id,
        fs.fields,
        fs.consent,
        fs.asset_key,
        fs.submitted_at,
        leads.c.first_name.label("lead_first_name"),
        leads.c.last_name.label("lead_last_name"),
        leads.c.email.label("lead_email"),
        accounts.c.name.label("account_name"),
    ).select_from(
        form_submissions.outerjoin(leads, leads.c.id == fs.lead_id).outerjoin(
            accounts, accounts.c.id == leads.c.account_id
        )
    )
    if form_key:
        stmt = stmt.where(fs.form_key == form_key)
    stmt = stmt.order_by(fs.submitted_at.desc(), fs.id.desc()).limit(LATEST_SUBMISSIONS)
    with read_only(engine).connect() as conn:
        rows = [dict(r) for r in conn.execute(stmt).mappings()]
    for row in rows:
        fields = row["fields"] if isinstance(row["fields"], dict) else {}
        known = {
            "first_name": row.pop("lead_first_name"),
            "last_name": row.pop("lead_last_name"),
            "email": row.pop("lead_email"),
            "company": row.pop("account_name"),
        }
        for key, fallback in known.items():
            row[key] = _text(fields.get(key) or fallback)
        row["name"] = _text(fields.get("name"))
    return rows


def _text(value: Any) -> str:
    return "" if value is None else str(value)[:255]


__all__ = [
    "CONVERSION_DAYS",
    "Consumption",
    "ProgramFigures",
    "StepFigures",
    "consumption",
    "content_rows",
    "latest_submissions",
    "program_figures",
    "submission_counts",
    "url_path",
]
