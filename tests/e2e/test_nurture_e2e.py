"""Nurture end to end on a demo world (issue 4).

A simulated world is loaded and scored; the worker (the same ``run_once`` that
``leadflow worker`` and ``leadflow serve`` run) enrols leads in programs by stage and
delivers their emails to a real SMTP server (aiosmtpd on loopback). The test then reads
each received message like a recipient, loads its open pixel and follows its tracked
links through the API, day after day, and checks that those opens and clicks raise the
leads' scores until one of them becomes an MQL because of an email click.
"""

from __future__ import annotations

import email
import email.policy
import re
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from leadflow.adapters.db.tables import (
    email_sends,
    events,
    lead_states,
    leads,
    program_enrollments,
    stage_changes,
)
from leadflow.adapters.email import SmtpMailer
from leadflow.adapters.webhooks import HttpSender
from leadflow.bootstrap import Services, build_services
from leadflow.entrypoints.api import build_app
from leadflow.services import reports
from leadflow.services.lifecycle import recompute_all
from leadflow.services.worker import run_once
from leadflow.settings import Settings
from leadflow.sim import WorldConfig, build_world
from leadflow.sim.loader import load_world

UNTIL = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
PUBLIC = "http://testserver"
ENGAGED = 5  # the most engaged leads still short of MQL read and click everything


class Inbox:
    """The SMTP server's mailbox: every accepted message, parsed."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        return "250 Message accepted for delivery"


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    handler = Inbox()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


@pytest.fixture
def world_services(db_url: str, tmp_path: Path, inbox: tuple[Inbox, int]) -> Iterator[Services]:
    _, port = inbox
    settings = Settings(
        database_url=db_url,
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_security="none",
        public_url=PUBLIC,
        mail_dir=str(tmp_path / "outbox"),
    )
    services = build_services(settings)
    world = build_world(WorldConfig(leads=120, months=3, seed=3, until=UNTIL))
    load_world(services.engine, world)
    with services.engine.connect() as conn:
        ids = list(conn.execute(select(leads.c.id)).scalars())
    recompute_all(services.engine, services.models, UNTIL, lead_ids=ids)
    yield services
    services.close()


def _links(message: EmailMessage) -> tuple[str, list[str]]:
    html = message.get_body(("html",)).get_content()
    pixel = re.search(r'<img[^>]+src="([^"]+/e/o/[^"]+)"', html)
    assert pixel, "no open pixel"
    clicks = sorted(set(re.findall(r'href="([^"]+/e/c/[^"]+)"', html)))
    return pixel.group(1), clicks


def _path(url: str) -> str:
    assert url.startswith(PUBLIC + "/"), url
    return urlsplit(url).path


def _engagement(services: Services, lead_id: int) -> float:
    with services.engine.connect() as conn:
        return float(
            conn.execute(
                select(lead_states.c.engagement).where(lead_states.c.lead_id == lead_id)
            ).scalar_one()
        )


def test_email_engagement_through_the_api_makes_an_mql(world_services, inbox):
    services = world_services
    box, port = inbox
    with services.engine.connect() as conn:
        candidates = conn.execute(
            select(leads.c.id, leads.c.email, lead_states.c.engagement)
            .join(lead_states, lead_states.c.lead_id == leads.c.id)
            .where(
                lead_states.c.stage.in_(["acquired", "nurturing"]),
                leads.c.consent_status == "granted",
                lead_states.c.engagement < 100,
            )
            .order_by(lead_states.c.engagement.desc(), leads.c.id)
            .limit(ENGAGED)
        ).all()
        dead_end = set(
            conn.execute(
                select(leads.c.email)
                .join(lead_states, lead_states.c.lead_id == leads.c.id)
                .where(lead_states.c.stage == "dead_end")
            ).scalars()
        )
    assert len(candidates) == ENGAGED
    engaged = {row.email: row.id for row in candidates}
    start = {row.id: _engagement(services, row.id) for row in candidates}

    mailer = SmtpMailer("127.0.0.1", port, security="none", timeout=10)
    client = TestClient(build_app(services))
    followed: set[str] = set()
    became_mql: int | None = None
    with HttpSender(allow_private=True) as sender, mailer:
        for day in range(21):
            now = UNTIL + timedelta(days=day, hours=1)
            services.clock = lambda now=now: now  # the API records opens/clicks at "now"
            report = run_once(services, sender, now=now, mailer=mailer)
            assert report.emails_failed == 0
            for message in box.messages:
                lead_id = engaged.get(str(message["To"]).lower())
                if lead_id is None:
                    continue
                pixel, clicks = _links(message)
                opened = client.get(_path(pixel))
                assert opened.status_code == 200 and opened.headers["content-type"] == "image/gif"
                for link in clicks:
                    r = client.get(_path(link), follow_redirects=False)
                    assert r.status_code == 302, r.text
                    assert r.headers["location"].startswith(PUBLIC + "/")
                    followed.add(link)
            with services.engine.connect() as conn:
                became_mql = conn.execute(
                    select(stage_changes.c.lead_id)
                    .join(events, events.c.message_id == stage_changes.c.cause)
                    .where(
                        stage_changes.c.to_stage == "mql",
                        events.c.name.in_(["email_click", "email_open"]),
                        stage_changes.c.lead_id.in_(list(engaged.values())),
                    )
                    .limit(1)
                ).scalar_one_or_none()
            if became_mql is not None:
                break

    # Leads entered programs by stage and every email reached the SMTP server once.
    with services.engine.connect() as conn:
        enrolled = dict(
            conn.execute(
                select(program_enrollments.c.program_key, func.count()).group_by(
                    program_enrollments.c.program_key
                )
            ).all()
        )
        sent = conn.execute(
            select(email_sends.c.message_id).where(email_sends.c.status == "sent")
        ).scalars()
        sent_ids = set(sent)
    assert enrolled.get("education", 0) > 0 and enrolled.get("mql-case-studies", 0) > 0
    received_ids = [str(m["Message-ID"]) for m in box.messages]
    assert len(received_ids) == len(set(received_ids)) == len(sent_ids)
    assert set(received_ids) == sent_ids
    # Each delivery is on the lead's timeline, so campaign reports count sends per program.
    with services.engine.connect() as conn:
        logged = conn.execute(
            select(func.count())
            .select_from(events)
            .where(events.c.name == "email_sent", events.c.utm_source == "leadflow")
        ).scalar_one()
        model = services.models.active(conn, UNTIL)
    assert logged == len(sent_ids)
    period = reports.Period(UNTIL - timedelta(days=1), UNTIL + timedelta(days=30))
    campaigns = reports.campaigns_report(reports.load_store(services.engine, model), period)
    by_campaign = {r["campaign"]: r for r in campaigns["email"]}
    assert by_campaign["education"]["sent"] > 0
    assert by_campaign["education"]["clicked"] <= by_campaign["education"]["sent"]
    assert sum(r["sent"] for r in campaigns["programs"]) == len(sent_ids)

    # Nobody in the dead end was mailed; every marketing message can be left in one click.
    assert not {str(m["To"]).lower() for m in box.messages} & dead_end
    assert all(m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click" for m in box.messages)

    # The opens and clicks raised the scores of the people who engaged...
    assert followed
    raised = [lead for lead in start if _engagement(services, lead) > start[lead]]
    assert raised
    # ...and at least one of them became an MQL because of an email click.
    assert became_mql is not None, {lead: _engagement(services, lead) for lead in start}
    with services.engine.connect() as conn:
        stage = conn.execute(
            select(lead_states.c.stage).where(lead_states.c.lead_id == became_mql)
        ).scalar_one()
    assert stage in ("mql", "appointment", "opportunity")
