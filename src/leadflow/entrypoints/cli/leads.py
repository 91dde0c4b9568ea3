"""``leadflow leads list|show|export|erase``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

from leadflow.core import lead_lists as list_spec
from leadflow.core.tracking import is_valid_email, normalise_email
from leadflow.entrypoints.cli.common import DatabaseOption, fail, services_for
from leadflow.entrypoints.cli.output import Format, render
from leadflow.services import lead_lists, privacy
from leadflow.services import leads as lead_service

app = typer.Typer(help="Leads: list, show, export, erase.", no_args_is_help=True)

FormatOption = typer.Option(Format.table, "--format", help="Output format: table, json or csv.")


def _email(value: str) -> str:
    email = normalise_email(value)
    if not is_valid_email(email):
        fail(f"EMAIL: {value[:80]!r} is not a valid e-mail address")
    return email


LIST_COLUMNS = (
    "id",
    "email",
    "first_name",
    "last_name",
    "title",
    "company",
    "domain",
    "stage",
    "engagement",
    "fit",
    "fit_grade",
    "owner",
    "last_activity",
    "program",
    "source",
    "created_at",
)


@app.command("list")
def list_(
    search: str | None = typer.Option(
        None, "--search", "-q", help="Part of name, e-mail, e-mail domain or company."
    ),
    stage: list[str] = typer.Option([], "--stage", help="Stage id (repeatable)."),
    role: list[str] = typer.Option([], "--role", help="Stage role, e.g. handoff (repeatable)."),
    grade: list[str] = typer.Option([], "--grade", help="Fit grade (repeatable)."),
    engagement_min: str | None = typer.Option(None, "--engagement-min"),
    engagement_max: str | None = typer.Option(None, "--engagement-max"),
    fit_min: str | None = typer.Option(None, "--fit-min"),
    fit_max: str | None = typer.Option(None, "--fit-max"),
    owner: str | None = typer.Option(None, "--owner", help="Sales rep owning the account."),
    active_after: str | None = typer.Option(None, "--active-after", help="Date or ISO time."),
    active_before: str | None = typer.Option(
        None, "--active-before", help="No activity since this date or ISO time."
    ),
    program: str | None = typer.Option(None, "--program", help="Active in this program."),
    segment: str | None = typer.Option(None, "--segment", help="Member of this segment."),
    form: str | None = typer.Option(None, "--form", help="Submitted this form."),
    campaign: str | None = typer.Option(None, "--campaign", help="Has an event of this campaign."),
    source: str | None = typer.Option(None, "--source", help="Only leads from this source."),
    account: str | None = typer.Option(None, "--account", help="Only this account's domain."),
    where: list[str] = typer.Option(
        [], "--where", help="Any list parameter as KEY=VALUE, e.g. f.tier=gold (repeatable)."
    ),
    sort: str | None = typer.Option(None, "--sort", help="Column; -column descends."),
    cols: str | None = typer.Option(None, "--cols", help="Comma-separated columns."),
    page: int = typer.Option(1, "--page", help="Page number (from 1)."),
    limit: int = typer.Option(50, "--limit", help=f"At most N leads (1-{lead_service.MAX_LIMIT})."),
    cursor: int | None = typer.Option(None, "--after", help="Continue after this lead id."),
    fmt: Format = FormatOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """List leads (newest first unless --sort) with stage, scores, owner and activity."""
    pairs: list[tuple[str, str]] = [("size", str(limit)), ("page", str(page))]
    single = {
        "q": search,
        "engagement_min": engagement_min,
        "engagement_max": engagement_max,
        "fit_min": fit_min,
        "fit_max": fit_max,
        "owner": owner,
        "active_after": active_after,
        "active_before": active_before,
        "program": program,
        "segment": segment,
        "form": form,
        "campaign": campaign,
        "source": source,
        "domain": account,
        "sort": sort,
        "cols": cols,
        "cursor": None if cursor is None else str(cursor),
    }
    pairs += [(k, v) for k, v in single.items() if v is not None]
    pairs += [("stage", v) for v in stage] + [("role", v) for v in role]
    pairs += [("grade", v) for v in grade]
    for item in where:
        key, sep, value = item.partition("=")
        if not sep:
            fail(f"--where: {item[:80]!r} is not KEY=VALUE")
        pairs.append((key.strip(), value))
    option = {"q": "search", "size": "limit", "domain": "account", "cursor": "after"}
    with services_for(database_url) as services:
        model = services.active_model()
        try:
            query = list_spec.parse(pairs, stages=model.stages)
        except list_spec.ListQueryError as exc:
            name = exc.field or ""
            flag = option.get(name, name).replace("_", "-")
            fail(f"--{flag}: {exc.reason}")
        result = lead_lists.list_page(services.engine, query, model, count=False)
    columns = ("id", *[c for c in query.columns if c != "id"]) if cols else LIST_COLUMNS
    if fmt is Format.table:
        for row in result.rows:
            if row.get("engagement") is not None:
                row["engagement"] = round(row["engagement"], 1)
    render(result.rows, columns, fmt, title="leads")
    if fmt is Format.table and result.has_next:
        hint = f"--after {result.next_cursor}" if result.next_cursor else f"--page {page + 1}"
        typer.echo(f"more: {hint}", err=True)


@app.command("show")
def show(
    email: str = typer.Argument(..., help="The lead's e-mail address."),
    events: int = typer.Option(50, "--events", help="How many recent events to show."),
    fmt: Format = FormatOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """Show one lead, its account and its event timeline."""
    address = _email(email)
    if not 1 <= events <= lead_service.MAX_LIMIT:
        fail(f"--events: must be between 1 and {lead_service.MAX_LIMIT}")
    with services_for(database_url) as services:
        lead_id = lead_service.find_lead_id(services.engine, address)
        if lead_id is None:
            fail(f"no lead with e-mail {address}")
        lead = lead_service.get_lead(services.engine, lead_id)
        timeline, _ = lead_service.lead_events(services.engine, lead_id, limit=events)
    assert lead is not None
    timeline.reverse()  # oldest first reads as a story
    account = lead.pop("account")
    state = lead.pop("state")
    if fmt is Format.json:
        typer.echo(
            json.dumps(
                {"lead": lead, "account": account, "state": state, "events": timeline},
                default=str,
                ensure_ascii=False,
                indent=2,
            )
        )
        return
    fields = [{"field": k, "value": v} for k, v in lead.items() if k != "erased"]
    if state is not None:
        fields += [{"field": f"state.{k}", "value": v} for k, v in state.items()]
    if account is not None:
        fields += [
            {"field": f"account.{k}", "value": account[k]}
            for k in ("name", "domain", "industry", "employee_count", "country")
        ]
    render(fields, ["field", "value"], fmt, title=f"lead {lead_id}")
    if fmt is Format.csv:
        return
    render(timeline, lead_service.EVENT_COLUMNS, fmt, title="timeline (oldest first)")


@app.command("export")
def export(
    email: str = typer.Argument(..., help="The person's e-mail address."),
    out: Path | None = typer.Option(None, "--out", help="Write the JSON here (default stdout)."),
    database_url: str | None = DatabaseOption,
) -> None:
    """Write everything stored about a person as JSON (data-subject access request)."""
    address = _email(email)
    with services_for(database_url) as services:
        try:
            data = privacy.export_person(services.engine, address, now=services.clock())
        except privacy.PersonNotFound as exc:
            fail(str(exc))
    text = json.dumps(data, default=str, ensure_ascii=False, indent=2) + "\n"
    if out is None:
        sys.stdout.write(text)
        return
    try:
        # Personal data: readable by the owner only.
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as exc:
        fail(f"--out {out}: {exc.strerror}")
    rows = sum(len(v) for v in data.values() if isinstance(v, list))
    typer.echo(f"wrote {rows} rows about {address} to {out}", err=True)


@app.command("erase")
def erase(
    email: str = typer.Argument(..., help="The person's e-mail address."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
    database_url: str | None = DatabaseOption,
) -> None:
    """Remove a person's data and identities, anonymise their events, suppress the address."""
    address = _email(email)
    with services_for(database_url) as services:
        if lead_service.find_lead_id(services.engine, address) is None:
            # Let the service phrase it (it knows whether the address was already erased).
            try:
                privacy.export_person(services.engine, address, now=services.clock())
            except privacy.PersonNotFound as exc:
                fail(str(exc))
        if not yes:
            if not sys.stdin.isatty():
                fail("erase is permanent: pass --yes to confirm (no terminal to ask)")
            typer.confirm(f"Erase {address} permanently?", abort=True)
        try:
            result = privacy.erase_person(services.engine, address, now=services.clock())
        except privacy.PersonNotFound as exc:
            fail(str(exc))
    typer.echo(
        f"erased lead {result.lead_id}: {result.events_anonymised} events anonymised, "
        f"{result.identities_removed} identities removed, {result.rows_scrubbed} other rows "
        "scrubbed; address suppressed"
    )
