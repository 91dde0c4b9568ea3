"""``leadflow demo [--leads N] [--months M] [--seed S] [--until DATE]``.

Loads the simulated demo world (see :mod:`leadflow.sim`) through the ingestion service,
scores it, plays the sales team (:mod:`leadflow.sim.sales`) and the last weeks of nurture
(:mod:`leadflow.sim.nurture`: programs, emails and their opens and clicks, seminars, forms,
segments). The history ends at ``--until`` (default 2025-01-01, fixed, so the same command
always builds the same world); running it again adds nothing.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from leadflow.entrypoints.cli.common import DatabaseOption, fail, services_for
from leadflow.entrypoints.cli.output import Format, render
from leadflow.services import handoff
from leadflow.services.lifecycle import all_lead_ids, recompute_all, stage_counts
from leadflow.services.users import ensure_demo_users
from leadflow.sim.loader import load_world
from leadflow.sim.nurture import play_nurture
from leadflow.sim.sales import play_sales
from leadflow.sim.world import (
    DEFAULT_LEADS,
    DEFAULT_MONTHS,
    DEFAULT_UNTIL,
    WorldConfig,
    build_world,
)


def _until(value: str) -> datetime:
    try:
        day = date.fromisoformat(value.strip())
    except ValueError:
        fail(f"--until: expected a date as YYYY-MM-DD, got {value[:40]!r}")
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def demo(
    leads: int = typer.Option(
        DEFAULT_LEADS, "--leads", help="People who identify (become leads).", show_default=True
    ),
    months: int = typer.Option(DEFAULT_MONTHS, "--months", help="Months of history."),
    seed: int = typer.Option(1, "--seed", help="Random seed: same seed, same world."),
    until: str = typer.Option(
        DEFAULT_UNTIL.date().isoformat(),
        "--until",
        help="Last day of the history (fixed by default, so worlds are reproducible).",
    ),
    database_url: str | None = DatabaseOption,
) -> None:
    """Load a simulated B2B market (accounts, buying committees, campaigns, anonymous
    visits that later identify) through the tracking ingestion. Deterministic from
    --seed; running it twice adds nothing."""
    try:
        config = WorldConfig(leads=leads, months=months, seed=seed, until=_until(until))
    except ValueError as exc:
        fail(f"--{exc}")
    with services_for(database_url) as services:
        world = build_world(config)
        console = Console(stderr=True)
        columns = (
            TextColumn("[bold]demo world[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("days"),
            TextColumn("{task.fields[events]:>10,} events"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task("load", total=config.days, events=0)

            def advance(messages: int, day: int, _days: int) -> None:
                bar.update(task, completed=day, events=messages)

            report = load_world(services.engine, world, progress=advance)
        # The loader writes events in bulk without the per-request scoring hook; scores
        # and stages are then computed once per lead, as of the world's last day (batch
        # equals incremental, so this is what the tracking API would have produced).
        with services.engine.connect() as conn:
            lead_ids = all_lead_ids(conn)
        with Progress(
            TextColumn("[bold]scores and stages[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("leads"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as bar:
            task = bar.add_task("score", total=len(lead_ids))
            scored = recompute_all(
                services.engine,
                services.models,
                config.until,
                lead_ids=lead_ids,
                progress=lambda n: bar.advance(task, n),
            )
        play = play_sales(services.engine, services.models, config.until, config.seed)
        with services.engine.begin() as conn:
            model = services.models.active(conn, config.until)
        with console.status("[bold]nurture programs, seminars and forms[/]"):
            nurtured = play_nurture(services, model, config.until, config.seed)
        with services.engine.connect() as conn:
            stages = stage_counts(conn)
            first_rep = next(iter(handoff.list_reps(conn)), None)
        credentials = ensure_demo_users(
            services.engine,
            services.clock(),
            sales_rep_key=first_rep["key"] if first_rep else None,
        )
    rate = report.messages / report.seconds if report.seconds > 0 else 0.0
    rows = [
        {"item": "world", "value": f"seed {config.seed}, {config.start:%Y-%m-%d} to "
         f"{config.until:%Y-%m-%d} ({config.months} months), id {config.world_id}"},
        {"item": "accounts in the world", "value": f"{len(world.accounts):,}"},
        {"item": "people (leads + anonymous)", "value": f"{world.people_count:,}"},
        {"item": "leads in the world", "value": f"{world.lead_count:,}"},
        {"item": "messages sent", "value": f"{report.messages:,}"},
        {"item": "events stored", "value": f"{report.stored:,}"},
        {"item": "duplicates (already loaded)", "value": f"{report.duplicates:,}"},
        {"item": "accounts in the database", "value": f"{report.accounts:,}"},
        {"item": "leads in the database", "value": f"{report.leads:,}"},
        {"item": "events in the database", "value": f"{report.events:,}"},
        {"item": "time taken", "value": f"{report.seconds:.1f} s ({rate:,.0f} events/s)"},
        {"item": "leads scored", "value": f"{scored.leads:,}"},
        {"item": "stage changes recorded", "value": f"{scored.changes_added:,}"},
        {"item": "sales hand-offs", "value": f"{play.routed:,} routed ({play.waiting:,} "
         f"waiting for capacity): {play.accepted:,} accepted, {play.rejected:,} rejected, "
         f"{play.not_now:,} not now, {play.won:,} won, {play.lost:,} lost"},
        {"item": f"nurture (last {nurtured.days} days)", "value": nurtured.summary()
         + (f" (played in {nurtured.seconds:.1f} s)" if nurtured.played else "")},
        {"item": "seminars", "value": nurtured.seminar_summary() or "none"},
        {"item": "segments", "value": ", ".join(
            f"{key} {members:,} members" for key, members in nurtured.segments.items())
         or "none"},
        {"item": "leads per stage", "value": ", ".join(
            f"{stage} {count:,}" for stage, count in sorted(stages.items()))},
    ]  # fmt: skip
    render(rows, ["item", "value"], Format.table, title="Demo world loaded")
    render(
        [{"role": r, "email": e, "password": p} for r, e, p in credentials],
        ["role", "email", "password"],
        Format.table,
        title="Dashboard users (sign in at /login; passwords are shown once)",
    )
