"""``leadflow sales ...``: the team, the ready queue, routing, SLA and sales actions."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

import typer

from leadflow.bootstrap import Services
from leadflow.core.config import LeadModel
from leadflow.entrypoints.cli.common import DatabaseOption, fail, services_for
from leadflow.entrypoints.cli.output import Format, render
from leadflow.services import handoff
from leadflow.services.leads import lead_id_by_email
from leadflow.services.lifecycle import ActionRefused

app = typer.Typer(
    help="Sales hand-off: reps, ready queue, routing, SLA and sales actions.",
    no_args_is_help=True,
)
FormatOption = typer.Option(Format.table, "--format", help="Output format.")
ActorOption = typer.Option(None, "--actor", help="Who did it (a rep key or a name).")


def _act(
    database_url: str | None,
    email: str,
    do: Callable[[Any, LeadModel, int, Services], handoff.ActionResult],
) -> None:
    with services_for(database_url) as services:
        try:
            with services.engine.begin() as conn:
                lead_id = lead_id_by_email(conn, email)
                if lead_id is None:
                    fail(f"no lead with e-mail {email!r}")
                model = services.models.active(conn, services.clock())
                result = do(conn, model, lead_id, services)
        except ActionRefused as exc:
            fail(f"refused: {exc}")
        except (ValueError, LookupError) as exc:
            fail(str(exc))
    parts = [f"{email}: {result.action} -> stage {result.stage}"]
    if result.duplicate:
        parts.append("(already recorded)")
    if result.opportunity_id is not None:
        parts.append(f"opportunity {result.opportunity_id}")
    if result.qualification is not None:
        parts.append(f"qualification {result.qualification:g}")
    if result.detail:
        parts.append(f"- {result.detail}")
    typer.echo(" ".join(parts))


@app.command("reps")
def reps(fmt: Format = FormatOption, database_url: str | None = DatabaseOption) -> None:
    """The sales team with today's hand-offs and capacity."""
    with services_for(database_url) as services, services.engine.begin() as conn:
        now = services.clock()
        model = services.models.active(conn, now)
        handoff.sync_config_reps(conn, model, now)
        today = handoff._today_counts(conn, handoff.calendar_for(model), now)
        rows = [{**r, "today": today.get(r["key"], 0)} for r in handoff.list_reps(conn)]
    render(
        rows,
        ["key", "name", "email", "active", "daily_capacity", "today", "weight", "territories"],
        fmt,
        title="sales reps",
    )


@app.command("route")
def route_cmd(database_url: str | None = DatabaseOption) -> None:
    """Queue new MQLs and hand off as many as today's capacity allows."""
    with services_for(database_url) as services, services.engine.begin() as conn:
        now = services.clock()
        report = handoff.route_due(conn, services.models.active(conn, now), now)
    by_rep = ", ".join(f"{k} {n}" for k, n in sorted(report.by_rep.items())) or "nobody"
    typer.echo(f"{report.routed:,} handed off ({by_rep}); {report.waiting:,} waiting in the queue")


@app.command("queue")
def queue_cmd(
    limit: int = typer.Option(50, "--limit", min=1, max=100_000, help="Rows to show."),
    fmt: Format = FormatOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """The ready queue in the order it drains (highest priority first)."""
    with services_for(database_url) as services, services.engine.connect() as conn:
        rows = handoff.queue(conn, limit)
    render(
        rows,
        ["lead_id", "email", "account", "priority", "engagement", "fit", "queued_at", "reason"],
        fmt,
        title="ready queue",
    )


@app.command("sla")
def sla(database_url: str | None = DatabaseOption) -> None:
    """Escalate or re-route hand-offs not accepted within the SLA (working hours)."""
    with services_for(database_url) as services, services.engine.begin() as conn:
        now = services.clock()
        report = handoff.process_sla(conn, services.models.active(conn, now), now)
    typer.echo(f"{len(report.escalated)} escalated, {len(report.rerouted)} re-routed")


@app.command("accept")
def accept(
    email: str, actor: str | None = ActorOption, database_url: str | None = DatabaseOption
) -> None:
    """Sales accepted the lead and set a meeting (MQL -> appointment)."""
    _act(database_url, email, lambda c, m, i, s: handoff.accept(c, m, i, s.clock(), actor=actor))


@app.command("reject")
def reject(
    email: str,
    reason: str = typer.Option(..., "--reason", help="A key of sales.reject_reasons."),
    actor: str | None = ActorOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """Reject the hand-off: back to nurturing, or the dead end for dead-end reasons."""
    _act(
        database_url,
        email,
        lambda c, m, i, s: handoff.reject(c, m, i, reason, s.clock(), actor=actor),
    )


@app.command("not-now")
def not_now(
    email: str,
    reason: str | None = typer.Option(None, "--reason", help="Free text."),
    actor: str | None = ActorOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """ "Not evaluating for now": recycle A with its mail pause."""
    _act(
        database_url,
        email,
        lambda c, m, i, s: handoff.not_now(c, m, i, s.clock(), reason=reason, actor=actor),
    )


@app.command("qualify")
def qualify(
    email: str,
    budget: str | None = typer.Option(None, "--budget", help="A level (confirmed, likely...)."),
    authority: str | None = typer.Option(None, "--authority", help="A level."),
    need: str | None = typer.Option(None, "--need", help="A level."),
    timeframe: str | None = typer.Option(None, "--timeframe", help="A level."),
    amount: float | None = typer.Option(None, "--amount", help="Opportunity amount (> 0)."),
    currency: str = typer.Option("KRW", "--currency", help="ISO 4217 code."),
    expected_close: str | None = typer.Option(None, "--expected-close", help="YYYY-MM-DD."),
    role: str = typer.Option("contact", "--role", help="The contact's buying role."),
    actor: str | None = ActorOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """Record BANT; with --amount (and BANT at the hand-off threshold) open an opportunity."""
    if len(currency) != 3 or not currency.isalpha():
        fail("--currency: expected a three-letter ISO 4217 code")
    close: date | None = None
    if expected_close is not None:
        try:
            close = date.fromisoformat(expected_close)
        except ValueError:
            fail("--expected-close: expected a date YYYY-MM-DD")
    bant = {"budget": budget, "authority": authority, "need": need, "timeframe": timeframe}
    _act(
        database_url,
        email,
        lambda c, m, i, s: handoff.qualify(
            c,
            m,
            i,
            s.clock(),
            bant=bant,
            amount=amount,
            currency=currency.upper(),
            expected_close=close,
            role=role,
            actor=actor,
        ),
    )


@app.command("won")
def won(
    email: str,
    amount: float | None = typer.Option(None, "--amount", help="Final amount."),
    actor: str | None = ActorOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """The deal closed: opportunity -> won."""
    _act(
        database_url,
        email,
        lambda c, m, i, s: handoff.win(c, m, i, s.clock(), amount=amount, actor=actor),
    )


@app.command("lost")
def lost(
    email: str,
    reason: str = typer.Option(..., "--reason", help="A key of sales.lost_reasons."),
    actor: str | None = ActorOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """The deal was lost: opportunity -> recycle B."""
    _act(
        database_url,
        email,
        lambda c, m, i, s: handoff.lose(c, m, i, reason, s.clock(), actor=actor),
    )
