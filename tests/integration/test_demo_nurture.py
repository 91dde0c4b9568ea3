"""The demo world's nurture play (leadflow.sim.nurture) on SQLite and PostgreSQL: programs
send through the real delivery path, recipients respond through the real tracking
services, every send rule holds, and the same seed gives the same figures."""

from __future__ import annotations

import shutil
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from tests.conftest import _truncate

from leadflow.adapters.db.tables import (
    email_sends,
    events,
    form_submissions,
    leads,
    program_enrollments,
    seminar_attendees,
    seminars,
    stage_changes,
)
from leadflow.bootstrap import Services, build_services
from leadflow.core.lifecycle import is_withdrawal
from leadflow.entrypoints.cli import app
from leadflow.entrypoints.cli.common import run_guarded
from leadflow.services.lifecycle import all_lead_ids, recompute_all
from leadflow.settings import Settings
from leadflow.sim import WorldConfig, build_world
from leadflow.sim.loader import load_world
from leadflow.sim.nurture import (
    WEBINAR_KEY,
    WINDOW,
    NurturePlay,
    play_nurture,
)
from leadflow.sim.sales import play_sales

CONFIG = WorldConfig(leads=60, months=3, seed=3)


def _play(services: Services) -> NurturePlay:
    """What `leadflow demo` does: load, score, play sales, then play nurture."""
    world = build_world(CONFIG)
    load_world(services.engine, world)
    with services.engine.connect() as conn:
        ids = all_lead_ids(conn)
    recompute_all(services.engine, services.models, CONFIG.until, lead_ids=ids)
    play_sales(services.engine, services.models, CONFIG.until, CONFIG.seed)
    with services.engine.begin() as conn:
        model = services.models.active(conn, CONFIG.until)
    return play_nurture(services, model, CONFIG.until, CONFIG.seed)


def _count(services: Services, table: Any, *where: Any) -> int:
    with services.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def _fingerprint(services: Services, report: NurturePlay) -> dict[str, Any]:
    """Everything the play stored that the seed decides (no ids, no Message-IDs)."""
    e = email_sends.c
    a = seminar_attendees.c
    with services.engine.connect() as conn:
        sends = conn.execute(
            select(
                e.to_email,
                e.template,
                e.program_key,
                e.step_id,
                e.asset_key,
                e.status,
                e.skip_reason,
                e.planned_at,
                e.sent_at,
                e.opened_at,
                e.clicked_at,
                e.unsubscribed_at,
            ).order_by(e.planned_at, e.to_email, e.template, e.step_id)
        ).all()
        attendees = conn.execute(
            select(seminars.c.key, leads.c.email, a.invited_at, a.registered_at, a.attended_at)
            .join(seminars, seminars.c.id == a.seminar_id)
            .join(leads, leads.c.id == a.lead_id)
            .order_by(seminars.c.key, leads.c.email)
        ).all()
        changes = conn.execute(
            select(leads.c.email, stage_changes.c.to_stage, stage_changes.c.at)
            .join(leads, leads.c.id == stage_changes.c.lead_id)
            .order_by(leads.c.email, stage_changes.c.at, stage_changes.c.to_stage)
        ).all()
    figures = {
        k: getattr(report, k)
        for k in (
            "enrolled",
            "sent",
            "skipped",
            "opened",
            "clicked",
            "unsubscribed",
            "form_submissions",
            "to_nurturing",
            "to_mql",
            "segments",
        )
    }
    return {
        "figures": figures,
        "sends": [tuple(r) for r in sends],
        "attendees": [tuple(r) for r in attendees],
        "stage_changes": [tuple(r) for r in changes],
    }


def _second_database(backend: str, db_url: str, request: pytest.FixtureRequest, tmp: Path) -> str:
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp / "second.db"
        shutil.copyfile(template, path)
        return f"sqlite:///{path}"
    _truncate(db_url)  # the same schema, emptied (the first run's figures are kept above)
    return db_url


def _check_send_rules(services: Services) -> None:
    e = email_sends.c
    with services.engine.connect() as conn:
        rows = conn.execute(
            select(
                e.lead_id,
                e.category,
                e.status,
                e.planned_at,
                e.sent_at,
                leads.c.consent_status,
                leads.c.consent_at,
                leads.c.consent_method,
                leads.c.unsubscribed_at,
            )
            .join(leads, leads.c.id == e.lead_id)
            .where(e.status.in_(("planned", "sending", "sent")))
        ).all()
        keys = list(conn.execute(select(e.idempotency_key)).scalars())
    assert len(keys) == len(set(keys))
    marketing: dict[int, list[Any]] = defaultdict(list)
    for r in rows:
        if r.category != "marketing":
            continue
        marketing[r.lead_id].append(r.planned_at)
        if r.consent_status != "granted":
            # Consent withdrawn by an unsubscribe: every send was planned or sent before.
            assert is_withdrawal(r.consent_status, r.consent_method)
            assert (r.sent_at or r.planned_at) <= r.consent_at
        if r.unsubscribed_at is not None and r.sent_at is not None:
            assert r.sent_at <= r.unsubscribed_at
    for planned in marketing.values():
        planned.sort()
        for first, third in zip(planned, planned[2:], strict=False):
            assert third - first >= timedelta(days=7)  # at most 2 in any 7 days


def _check_clicks_moved_leads_on(services: Services) -> None:
    """A click on a nurture email moves an acquired lead to nurturing (the shipped model):
    right after each of the play's clicks, no lead is still acquired."""
    with services.engine.connect() as conn:
        clicks = conn.execute(
            select(events.c.lead_id, events.c.occurred_at).where(
                events.c.message_id.startswith("email_click:")
            )
        ).all()
        history: dict[int, list[Any]] = defaultdict(list)
        for lead_id, at, to_stage in conn.execute(
            select(stage_changes.c.lead_id, stage_changes.c.at, stage_changes.c.to_stage).order_by(
                stage_changes.c.at, stage_changes.c.id
            )
        ):
            history[lead_id].append((at, to_stage))
    assert clicks
    for lead_id, at in clicks:
        before = [stage for changed, stage in history[lead_id] if changed <= at]
        assert before and before[-1] != "acquired", (lead_id, at)


def test_the_demo_nurture_play_uses_the_real_paths_and_is_deterministic(
    services: Services,
    backend: str,
    db_url: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    report = _play(services)
    until, start = CONFIG.until, CONFIG.until - WINDOW
    e = email_sends.c

    # Nurture did something visible, and the report is what the database holds.
    assert report.played and report.ticks == WINDOW.days + 1
    assert report.sent > 0 and report.opened > 0 and report.clicked > 0
    assert report.sent == _count(services, email_sends, e.status == "sent")
    assert report.sent == report.mailer_accepted
    assert report.opened == _count(services, email_sends, e.opened_at.is_not(None))
    assert report.opened == report.recorded_opens
    assert report.clicked == _count(services, email_sends, e.clicked_at.is_not(None))
    assert report.clicked == report.recorded_clicks
    assert report.unsubscribed == report.recorded_unsubscribes
    assert report.unsubscribed == _count(services, email_sends, e.unsubscribed_at.is_not(None))
    assert _count(services, leads, leads.c.unsubscribed_at.is_not(None)) <= report.unsubscribed
    assert report.form_submissions == report.recorded_forms
    assert report.form_submissions == _count(services, form_submissions)
    assert report.enrolled == _count(services, program_enrollments) > 0
    assert report.planned == 0  # everything planned by the last pass was delivered

    # Opens and clicks became scored events; none is later than the world's last day.
    own = [events.c.message_id.startswith(p) for p in ("email_open:", "email_click:")]
    assert _count(services, events, own[0]) == report.opened
    assert _count(services, events, own[1]) == report.clicked
    with services.engine.connect() as conn:
        latest = [
            conn.execute(select(func.max(column))).scalar_one()
            for column in (e.planned_at, e.sent_at, e.opened_at, e.clicked_at)
        ]
        earliest = conn.execute(select(func.min(e.planned_at))).scalar_one()
        own_events = conn.execute(
            select(func.min(events.c.occurred_at), func.max(events.c.occurred_at)).where(
                events.c.message_id.startswith("email_")
            )
        ).one()
        nurtured_stages = conn.execute(
            select(func.count()).where(
                stage_changes.c.cause.startswith("email_click:"),
                stage_changes.c.to_stage == "nurturing",
            )
        ).scalar_one()
    assert all(t is not None and t <= until for t in latest)
    assert earliest >= start
    assert own_events[0] >= start and own_events[1] <= until
    assert report.to_nurturing >= nurtured_stages
    _check_clicks_moved_leads_on(services)

    # The webinar ran its lifecycle: invited, registered, attended or not, followed up.
    webinar = next(s for s in report.seminars if s.key == WEBINAR_KEY)
    with services.engine.connect() as conn:
        invite_clicks = conn.execute(
            select(func.count())
            .select_from(email_sends.join(seminars, seminars.c.id == e.seminar_id))
            .where(
                seminars.c.key == WEBINAR_KEY,
                e.template == "seminar_invite",
                e.clicked_at < seminars.c.starts_at,
            )
        ).scalar_one()
    assert webinar.invited > 0
    assert webinar.registered == invite_clicks  # registering is following the invitation
    assert webinar.attended + webinar.no_show == webinar.registered
    assert webinar.followed_up == webinar.registered
    assert len(report.seminars) == 2 and set(report.segments) == {
        "nurturing-and-mql",
        "retarget-mql",
    }
    _check_send_rules(services)
    assert not (tmp_path / "outbox").exists()  # the demo's mailer writes nothing

    # Played again on the same database: nothing new, the same figures.
    first = _fingerprint(services, report)
    with services.engine.begin() as conn:
        model = services.models.active(conn, until)
    replay = play_nurture(services, model, until, CONFIG.seed)
    assert not replay.played
    assert _fingerprint(services, replay) == first

    # The same seed on a fresh database gives the same play.
    url = _second_database(backend, db_url, request, tmp_path)
    other = build_services(Settings(database_url=url, mail_dir=str(tmp_path / "outbox2")))
    try:
        second = _play(other)
        assert _fingerprint(other, second) == first
    finally:
        other.close()


def test_the_demo_command_prints_the_nurture_figures(db_url: str, capsys) -> None:
    args = ["demo", "--leads", "60", "--months", "3", "--seed", "3", "--database-url", db_url]
    assert run_guarded(app, args) == 0
    out = " ".join(capsys.readouterr().out.replace("│", " ").split())
    services = build_services(Settings(database_url=db_url))
    try:
        sent = _count(services, email_sends, email_sends.c.status == "sent")
        opened = _count(services, email_sends, email_sends.c.opened_at.is_not(None))
    finally:
        services.close()
    assert sent > 0
    assert f"{sent:,} emails sent (opened {opened:,}" in out
    assert "demo-webinar:" in out and "nurturing-and-mql" in out
