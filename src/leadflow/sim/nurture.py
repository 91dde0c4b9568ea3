"""The demo world's nurture at work: programs, emails, opens and clicks, seminars, forms.

After the demo's events are scored and the sales team has played, :func:`play_nurture`
runs the nurture machinery the way the worker runs it in production, with the clock
stepping one day at a time through the last :data:`WINDOW` of the world (ending at
``until``). Every tick does what a worker pass does for nurture: segments are refreshed
(:func:`leadflow.services.segments.refresh_all`), leads enter and leave programs by stage
(:func:`~leadflow.services.nurture.sync_enrolments`), due program steps run
(:func:`~leadflow.services.nurture.run_due_steps`), seminar reminders and follow-ups are
planned (:func:`leadflow.services.seminars.run_due`) and planned emails are delivered
(:func:`leadflow.services.mailing.deliver_planned`) to :class:`NullMailer`, the demo's
mailbox. Every rule holds as in production (consent, unsubscribes, the frequency cap, one
send per step and lead).

The recipients are simulated from each account's hidden intent
(``accounts.traits['demo_true_intent']``, 0-1; a lead without an account gets
:data:`DEFAULT_INTENT`) with a NumPy generator seeded from ``seed``: they open
(:func:`~leadflow.services.mailing.record_open`), click the asset's link
(:func:`~leadflow.services.mailing.record_click`), rarely unsubscribe, register for the
webinar from its invitation, fill in the white-paper form after clicking the white paper
(:func:`leadflow.services.forms.submit`), and some registrants attend. Each response
happens hours to days after its send, and never after ``until`` (later ones are dropped);
they are applied in time order when the clock passes them, between worker passes, and go
through the real scoring path, so leads progress (a click moves acquired to nurturing;
some reach MQL).

Two simplifications, both deliberate for a demo:

- Enrolment by stage uses the lead's *current* state (as of ``until``), since the world was
  scored once at the end; so a lead that became a lead late in the window may be enrolled
  from the first tick. Nobody responds to an email sent before they became a lead.
- Scoring (the real after-ingest hooks: lifecycle, then hand-off) runs as of ``until`` (or
  the sales team's last action, a minute later), not as of each tick: the leads' histories
  already reach ``until``, and scoring an earlier "now" would leave out the later part of
  that history. The recorded events and stage changes still carry their simulated times.
  The hooks run once per batch of responses (those due before a worker pass, and before
  an invitation or attendance, which read stages) rather than once per response: batch
  equals incremental in the lifecycle store, so the states are the same, and faster.

Running it again on the same database plays nothing (the demo webinar exists already) and
reports what is stored.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import Connection, func, or_, select

from leadflow.adapters.db.tables import (
    accounts,
    email_sends,
    form_submissions,
    identities,
    leads,
    program_enrollments,
    sales_actions,
    seminar_attendees,
    seminars,
    stage_changes,
)
from leadflow.adapters.email import NullMailer
from leadflow.bootstrap import Services
from leadflow.core import email_tokens
from leadflow.core import forms as form_rules
from leadflow.core.config import FormSpec, LeadModel
from leadflow.services import content as content_service
from leadflow.services import forms as form_service
from leadflow.services import mailing, nurture, segments
from leadflow.services import seminars as seminar_service

WINDOW = timedelta(days=28)  # the nurture play covers the world's last four weeks
TICK = timedelta(days=1)  # one worker pass per simulated day
DEFAULT_INTENT = 0.2
WORKER_ID = "demo-nurture"
WEBINAR_KEY = "demo-webinar"
SEMINAR_KEY = "demo-customer-day"
AUDIENCE_SEGMENT = "nurturing-and-mql"
RETARGET_SEGMENT = "retarget-mql"
FORM_KEY = "white-paper"
# Our own events: what the nurture play recorded (stage changes they caused are counted).
OWN_EVENT_PREFIXES = ("email_open:", "email_click:", "email_unsubscribe:", "seminar:", "form-")


@dataclass(slots=True)
class SeminarFigures:
    key: str
    title: str
    kind: str
    starts_at: datetime
    invited: int = 0
    registered: int = 0
    attended: int = 0
    no_show: int = 0
    followed_up: int = 0


@dataclass(slots=True)
class NurturePlay:
    """What the play did (``played``) and what is stored (counted from the database)."""

    played: bool = False
    start: datetime | None = None
    until: datetime | None = None
    ticks: int = 0
    seconds: float = 0.0
    # Counted from the database at the end.
    enrolled: int = 0
    enrolled_leads: int = 0
    planned: int = 0
    sent: int = 0
    skipped: int = 0
    opened: int = 0
    clicked: int = 0
    unsubscribed: int = 0
    form_submissions: int = 0
    to_nurturing: int = 0  # stage changes acquired -> nurturing caused by the play's events
    to_mql: int = 0  # stage changes into mql caused by the play's events
    seminars: list[SeminarFigures] = field(default_factory=list)
    segments: dict[str, int] = field(default_factory=dict)  # key -> members
    # Counted while playing (equal to the stored figures after a first play).
    recorded_opens: int = 0
    recorded_clicks: int = 0
    recorded_unsubscribes: int = 0
    recorded_registrations: int = 0
    recorded_forms: int = 0
    mailer_accepted: int = 0

    @property
    def days(self) -> int:
        return (self.until - self.start).days if self.start and self.until else 0

    def summary(self) -> str:
        forms = self.form_submissions
        return (
            f"{self.sent:,} emails sent (opened {self.opened:,}, clicked {self.clicked:,}, "
            f"{self.unsubscribed:,} unsubscribed), {self.enrolled_leads:,} leads enrolled in "
            f"programs, {forms:,} form submission{'' if forms == 1 else 's'}; "
            f"{self.to_nurturing:,} leads moved to nurturing and {self.to_mql:,} to MQL by it"
        )

    def seminar_summary(self) -> str:
        return "; ".join(
            f"{s.key}: {s.invited:,} invited, {s.registered:,} registered, "
            f"{s.attended:,} attended, {s.followed_up:,} followed up"
            for s in self.seminars
        )


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True, slots=True)
class _Lead:
    intent: float
    created_at: datetime


@dataclass(order=True)
class _Action:
    at: datetime
    seq: int
    kind: str = field(compare=False)
    data: dict[str, Any] = field(compare=False, default_factory=dict)


class _ScoringAtHorizon:
    """The after-ingest hooks (scoring, stages, hand-off) of ``services``, run as of
    ``horizon`` and once per batch of responses (see the module docstring): the play's
    services collect the leads its responses touch, and :meth:`flush` runs the real hooks
    for all of them in one transaction."""

    def __init__(self, services: Services, horizon: datetime) -> None:
        self.base = services
        self.horizon = horizon
        self.touched: set[int] = set()
        self.services = dataclasses.replace(services, after_ingest=[self.collect])

    def collect(self, conn: Connection, lead_ids: set[int], received_at: datetime) -> None:
        self.touched |= set(lead_ids)

    def flush(self) -> None:
        if not self.touched:
            return
        ids, self.touched = self.touched, set()
        with self.base.engine.begin() as conn:
            for hook in self.base.after_ingest:
                hook(conn, ids, self.horizon)


def _intent(traits: Any) -> float:
    value = (traits or {}).get("demo_true_intent") if isinstance(traits, Mapping) else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return min(1.0, max(0.0, float(value)))
    return DEFAULT_INTENT


def _leads(conn: Connection) -> dict[int, _Lead]:
    rows = conn.execute(
        select(leads.c.id, leads.c.created_at, accounts.c.traits)
        .select_from(leads.outerjoin(accounts, accounts.c.id == leads.c.account_id))
        .where(leads.c.erased_at.is_(None))
    )
    return {int(r.id): _Lead(_intent(r.traits), r.created_at) for r in rows}


def _pick_asset(model: LeadModel, kinds: tuple[str, ...]) -> str | None:
    content = model.spec.nurture.content if model.spec.nurture is not None else []
    for kind in kinds:
        for spec in content:
            if spec.type == kind:
                return spec.key
    return content[0].key if content else None


def _asset_urls(services: Services, model: LeadModel) -> dict[str, str]:
    base = services.settings.public_url
    out: dict[str, str] = {}
    for spec in model.spec.nurture.content if model.spec.nurture is not None else []:
        resolved = email_tokens.resolve_destination(spec.url, base)
        if resolved is not None:
            out[spec.key] = resolved
    return out


def _form_values(
    conn: Connection, form: FormSpec, lead_id: int, *, other_device: bool
) -> tuple[str, list[Any], dict[str, Any]]:
    """The visitor's anonymous id, the fields the form shows it and what it types into
    them, from the lead's own row. In the browser the lead's history came from, known
    fields are not asked again (progressive profiling); on another device (no cookie: a new
    anonymous id, stitched to the lead by the address it types) every field is asked."""
    row = (
        conn.execute(
            select(
                leads.c.email,
                leads.c.first_name,
                leads.c.last_name,
                leads.c.title,
                leads.c.phone,
                accounts.c.name.label("company"),
                accounts.c.industry,
            )
            .select_from(leads.outerjoin(accounts, accounts.c.id == leads.c.account_id))
            .where(leads.c.id == lead_id)
        )
        .mappings()
        .first()
    )
    if row is None or not row["email"]:
        return "", [], {}
    if other_device:
        name = f"leadflow-demo:{row['email']}:{form.key}"
        anonymous_id: str | None = f"demo-{uuid.uuid5(uuid.NAMESPACE_URL, name).hex}"
    else:
        anonymous_id = conn.execute(
            select(identities.c.value)
            .where(identities.c.lead_id == lead_id, identities.c.kind == "anonymous")
            .order_by(identities.c.id)
            .limit(1)
        ).scalar_one_or_none()
    if anonymous_id is None:
        return "", [], {}
    shown = form_rules.fields_to_ask(form, form_service.visitor(conn, anonymous_id).known)
    raw: dict[str, Any] = {"consent": True}
    for spec in shown:
        value = row.get(spec.name)
        if value not in (None, "") and (not spec.options or value in spec.options):
            raw[spec.name] = str(value)
    return anonymous_id, shown, raw


# --------------------------------------------------------------------------- the play


class _Play:
    def __init__(self, services: Services, model: LeadModel, until: datetime, seed: int) -> None:
        self.services = services
        self.model = model
        self.until = until
        self.start = until - WINDOW
        self.rng = np.random.default_rng([int(seed), 0x6E75_7274])  # "nurt": its own stream
        self.report = NurturePlay(played=True, start=self.start, until=until)
        self.mailer = NullMailer()
        self.queue: list[_Action] = []
        self.seq = 0
        with services.engine.connect() as conn:
            self.leads = _leads(conn)
            last_action = conn.execute(select(func.max(sales_actions.c.at))).scalar_one()
        horizon = max(until, last_action) if last_action is not None else until
        self.hooks = _ScoringAtHorizon(services, horizon)
        self.scoring = self.hooks.services
        self.urls = _asset_urls(services, model)
        self.form = form_service.find_form(model, FORM_KEY)
        self.webinar_asset = _pick_asset(model, ("webinar", "white_paper"))

    # ---- the timeline

    def at(self, when: datetime, kind: str, **data: Any) -> None:
        if when <= self.until:  # nothing happens after the world's last day
            self.seq += 1
            self.queue.append(_Action(when, self.seq, kind, data))

    def run(self) -> None:
        self.setup()
        tick = self.start
        while tick <= self.until:
            self.apply_due(tick)
            self.worker_pass(tick)
            self.report.ticks += 1
            tick += TICK
        self.apply_due(self.until)

    def apply_due(self, now: datetime) -> None:
        while True:
            due = sorted(a for a in self.queue if a.at <= now)
            if not due:
                return
            self.queue = [a for a in self.queue if a.at > now]
            for action in due:
                if action.kind in ("invite", "attendance"):
                    self.hooks.flush()  # they read stages (segments, send rules)
                getattr(self, f"do_{action.kind}")(action.at, **action.data)
            self.hooks.flush()

    # ---- set-up: segments, seminars, and when their steps happen

    def setup(self) -> None:
        engine, start, until = self.services.engine, self.start, self.until
        nurturing, handoff = list(self.model.stages_for("nurture")), self.model.handoff_stage
        with engine.begin() as conn:
            content_service.sync_from_model(conn, self.model, start)
            segments.create(
                conn,
                AUDIENCE_SEGMENT,
                "Nurturing and MQL (consented)",
                {"stage": [*nurturing, handoff], "lead": {"consent": ["granted"]}},
                start,
            )
            segments.create(
                conn, RETARGET_SEGMENT, "Retarget MQLs (ad audience)", {"stage": [handoff]}, start,
                sync=True,
            )  # fmt: skip
            webinar_start = (until - timedelta(days=21)).replace(hour=5, minute=0)
            seminar_service.create(
                conn,
                key=WEBINAR_KEY,
                title="Webinar: Lead scoring that sales trusts",
                kind="webinar",
                starts_at=webinar_start,
                ends_at=webinar_start + timedelta(hours=1),
                location="https://webinar.example.com/lead-scoring",
                asset_key=self.webinar_asset,
                now=start,
            )
            seminar_start = (until + timedelta(days=7)).replace(hour=5, minute=0)
            seminar_service.create(
                conn,
                key=SEMINAR_KEY,
                title="Customer day: B2B marketing automation in practice",
                kind="seminar",
                starts_at=seminar_start,
                ends_at=seminar_start + timedelta(hours=3),
                location="Seoul, COEX Conference Room 301",
                capacity=60,
                now=until - timedelta(days=7),
            )
        self.at(start + timedelta(hours=2), "invite", seminar=WEBINAR_KEY)
        self.at(webinar_start + timedelta(hours=1, minutes=15), "attendance", seminar=WEBINAR_KEY)
        self.at(until - timedelta(days=6) + timedelta(hours=2), "invite", seminar=SEMINAR_KEY)

    # ---- one worker pass (the nurture part of services.worker.run_once)

    def worker_pass(self, now: datetime) -> None:
        services = self.scoring
        segments.refresh_all(services.engine, now)
        with services.engine.begin() as conn:
            nurture.sync_enrolments(conn, self.model, now)
        while nurture.run_due_steps(services, now, WORKER_ID).claimed >= 500:
            pass
        with services.engine.begin() as conn:
            seminar_service.run_due(conn, self.model, now)
        while True:
            delivered = mailing.deliver_planned(services, self.mailer, now, worker_id=WORKER_ID)
            if delivered.claimed < 500:
                break
        with services.engine.connect() as conn:
            sent = conn.execute(
                select(
                    email_sends.c.id,
                    email_sends.c.lead_id,
                    email_sends.c.category,
                    email_sends.c.template,
                    email_sends.c.asset_key,
                    email_sends.c.seminar_id,
                    seminars.c.key.label("seminar"),
                    seminars.c.starts_at,
                )
                .select_from(
                    email_sends.outerjoin(seminars, seminars.c.id == email_sends.c.seminar_id)
                )
                .where(email_sends.c.status == "sent", email_sends.c.sent_at == now)
                .order_by(email_sends.c.planned_at, email_sends.c.id)
            ).all()
        for row in sent:
            self.respond(row, now)

    # ---- recipients

    def respond(self, send: Any, now: datetime) -> None:
        """Draw what the recipient of one delivered email does (always the same number of
        draws, so one send's outcome never shifts the next one's)."""
        u = self.rng.random(6)
        z = float(self.rng.standard_normal())
        lead = self.leads.get(int(send.lead_id))
        if lead is None or lead.created_at > now:
            return  # not a lead yet when it was sent (see the module docstring)
        intent = lead.intent
        if u[0] >= 0.2 + 0.5 * intent:
            return
        # Opened after minutes to a few days: median about 5 hours, at most 4 days.
        delay = float(np.clip(5.0 * np.exp(1.1 * z), 0.1, 96.0))
        opened = now + timedelta(hours=delay)
        self.at(opened, "open", send_id=int(send.id))
        link = self.link(send)
        clicked = opened + timedelta(minutes=1 + 20 * float(u[3]))
        invite = send.template == "seminar_invite"
        click_p = (0.3 + 0.5 * intent) if invite else (0.12 + 0.45 * intent)
        if u[2] < click_p:
            self.at(clicked, "click", send_id=int(send.id), url=link)
            if invite and send.seminar is not None and clicked < send.starts_at:
                self.at(
                    clicked + timedelta(minutes=2),
                    "register",
                    seminar=send.seminar,
                    lead_id=int(send.lead_id),
                )
            elif (
                self.form is not None
                and send.asset_key is not None
                and send.asset_key == self.form.asset
                and u[4] < 0.3 + 0.5 * intent
            ):
                self.at(
                    clicked + timedelta(minutes=4),
                    "form",
                    lead_id=int(send.lead_id),
                    other_device=bool(u[5] < 0.5),
                )
        elif send.category == "marketing" and u[5] < 0.01 + 0.03 * (1.0 - intent):
            self.at(clicked, "unsubscribe", send_id=int(send.id))

    def link(self, send: Any) -> str:
        if send.asset_key is not None and send.asset_key in self.urls:
            return self.urls[send.asset_key]
        if send.seminar is not None:
            return f"{self.services.settings.public_url}/seminars/{send.seminar}"
        return self.services.settings.public_url

    # ---- actions (each through the service the API uses)

    def do_open(self, at: datetime, *, send_id: int) -> None:
        if mailing.record_open(self.scoring, send_id, at):
            self.report.recorded_opens += 1

    def do_click(self, at: datetime, *, send_id: int, url: str) -> None:
        if mailing.record_click(self.scoring, send_id, url, at):
            self.report.recorded_clicks += 1

    def do_unsubscribe(self, at: datetime, *, send_id: int) -> None:
        if mailing.unsubscribe(self.scoring, send_id, at, method="one-click") is not None:
            self.report.recorded_unsubscribes += 1

    def do_register(self, at: datetime, *, seminar: str, lead_id: int) -> None:
        try:
            with self.services.engine.begin() as conn:
                done = seminar_service.register(
                    conn, seminar, lead_id, at, after=self.scoring.after_ingest
                )
        except seminar_service.SeminarError:  # full or over: the demo moves on
            return
        if done["new"]:
            self.report.recorded_registrations += 1

    def do_form(self, at: datetime, *, lead_id: int, other_device: bool) -> None:
        form = self.form
        if form is None:
            return
        with self.services.engine.connect() as conn:
            anonymous_id, shown, raw = _form_values(conn, form, lead_id, other_device=other_device)
        if not anonymous_id:
            return
        clean, errors = form_rules.validate(form, shown, raw)
        if errors:
            return  # e.g. no company known: the visitor gives up
        form_service.submit(
            self.scoring,
            form,
            clean=clean,
            consent_given=form_rules.consent_given(raw),
            anonymous_id=anonymous_id,
            now=at,
            page_url=f"{self.services.settings.public_url}/f/{form.key}",
        )
        self.report.recorded_forms += 1

    def do_invite(self, at: datetime, *, seminar: str) -> None:
        with self.services.engine.begin() as conn:
            segments.refresh(conn, AUDIENCE_SEGMENT, at)
            seminar_service.invite(conn, seminar, AUDIENCE_SEGMENT, self.model, at)

    def do_attendance(self, at: datetime, *, seminar: str) -> None:
        a = seminar_attendees.c
        with self.services.engine.begin() as conn:
            sid = seminar_service.get(conn, seminar)["id"]
            registered = list(
                conn.execute(
                    select(a.lead_id)
                    .where(a.seminar_id == sid, a.registered_at.is_not(None))
                    .order_by(a.lead_id)
                ).scalars()
            )
            draws = self.rng.random(len(registered))
            came = [
                int(lead_id)
                for lead_id, u in zip(registered, draws, strict=True)
                if u < 0.4 + 0.4 * self.leads.get(int(lead_id), _Lead(DEFAULT_INTENT, at)).intent
            ]
            seminar_service.mark_attendance(
                conn, seminar, came, at, after=self.scoring.after_ingest
            )


# --------------------------------------------------------------------------- reading


def _count(conn: Connection, table: Any, *where: Any) -> int:
    return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def _fill(conn: Connection, report: NurturePlay, model: LeadModel) -> None:
    e = email_sends.c
    report.enrolled = _count(conn, program_enrollments)
    report.enrolled_leads = int(
        conn.execute(select(func.count(func.distinct(program_enrollments.c.lead_id)))).scalar_one()
    )
    report.planned = _count(conn, email_sends, e.status.in_(("planned", "sending")))
    report.sent = _count(conn, email_sends, e.status == "sent")
    report.skipped = _count(conn, email_sends, e.status == "skipped")
    report.opened = _count(conn, email_sends, e.opened_at.is_not(None))
    report.clicked = _count(conn, email_sends, e.clicked_at.is_not(None))
    report.unsubscribed = _count(conn, email_sends, e.unsubscribed_at.is_not(None))
    report.form_submissions = _count(conn, form_submissions)
    mine = or_(*(stage_changes.c.cause.startswith(p) for p in OWN_EVENT_PREFIXES))
    report.to_nurturing = int(
        conn.execute(
            select(func.count(func.distinct(stage_changes.c.lead_id))).where(
                mine, stage_changes.c.to_stage.in_(model.stages_for("nurture"))
            )
        ).scalar_one()
    )
    report.to_mql = int(
        conn.execute(
            select(func.count(func.distinct(stage_changes.c.lead_id))).where(
                mine, stage_changes.c.to_stage == model.handoff_stage
            )
        ).scalar_one()
    )
    report.seminars = [
        SeminarFigures(
            key=r["key"],
            title=r["title"],
            kind=r["kind"],
            starts_at=r["starts_at"],
            invited=r["invited"],
            registered=r["registered"],
            attended=r["attended"],
            no_show=r["no_show"],
            followed_up=r["followed_up"],
        )
        for r in seminar_service.funnel(conn, model)
        if r["key"] in (WEBINAR_KEY, SEMINAR_KEY)
    ]
    report.segments = {
        s["key"]: int(s["member_count"])
        for s in segments.list_segments(conn)
        if s["key"] in (AUDIENCE_SEGMENT, RETARGET_SEGMENT)
    }


def play_nurture(services: Services, model: LeadModel, until: datetime, seed: int) -> NurturePlay:
    """Play the last :data:`WINDOW` of the demo world's nurture (see the module docstring);
    deterministic from ``seed``. A database where it was played already is only read."""
    started = time.perf_counter()
    with services.engine.connect() as conn:
        done_before = (
            conn.execute(select(seminars.c.id).where(seminars.c.key == WEBINAR_KEY)).first()
            is not None
        )
    if done_before:
        report = NurturePlay(played=False, start=until - WINDOW, until=until)
    else:
        play = _Play(services, model, until, seed)
        play.run()
        report = play.report
        report.mailer_accepted = play.mailer.accepted
    with services.engine.connect() as conn:
        _fill(conn, report, model)
    report.seconds = time.perf_counter() - started
    return report
