"""``leadflow content ...`` (the content library) and ``leadflow forms ...`` (hosted forms).

Assets declared in leadflow.yaml are edited there; ``add``/``update``/``remove`` manage the
API-owned ones (the same rules as ``/api/content``). CSV output is formula-safe.
"""

from __future__ import annotations

from typing import Any

import typer
from pydantic import ValidationError

from leadflow.core.config import ContentSpec
from leadflow.entrypoints.cli.common import DatabaseOption, fail, services_for
from leadflow.entrypoints.cli.output import Format, render
from leadflow.services import content
from leadflow.services import forms as form_service

app = typer.Typer(help="The content library: list, add, update, remove.", no_args_is_help=True)
forms_app = typer.Typer(help="Hosted forms: list, submissions.", no_args_is_help=True)
FormatOption = typer.Option(Format.table, "--format", help="Output format: table, json, csv.")
COLUMNS = ["key", "title", "type", "stage", "gated", "industries", "url", "source", "active"]


def _invalid(exc: ValidationError) -> str:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "asset"
    return f"{loc}: {first['msg']}"


def _industries(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [i.strip() for i in value.split(",") if i.strip()]


def _sync(conn: Any, services: Any) -> None:
    now = services.clock()
    content.sync_from_model(conn, services.models.active(conn, now), now)


@app.command("list")
def list_cmd(
    stage: str | None = typer.Option(None, "--stage", help="early, middle or late."),
    type_: str | None = typer.Option(None, "--type", help="blog_post, white_paper, ..."),
    industry: str | None = typer.Option(None, "--industry", help="Assets that suit it."),
    include_inactive: bool = typer.Option(False, "--all", help="Also inactive assets."),
    fmt: Format = FormatOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """The library (config and API assets)."""
    if stage is not None and stage not in ("early", "middle", "late"):
        fail(f"--stage: {stage!r} is not one of early, middle, late")
    with services_for(database_url) as services, services.engine.begin() as conn:
        _sync(conn, services)
        rows = content.list_assets(conn, active_only=not include_inactive)
    rows = content.filter_assets(rows, stage=stage, type=type_, industry=industry)
    render(rows, COLUMNS, fmt, title="content")


@app.command("add")
def add(
    key: str = typer.Argument(..., help="A slug: a-z, 0-9, - and _."),
    title: str = typer.Option(..., "--title"),
    type_: str = typer.Option(..., "--type", help="blog_post, white_paper, case_study, ..."),
    stage: str = typer.Option(..., "--stage", help="early, middle or late."),
    url: str = typer.Option(..., "--url", help="https://... or a site path (/blog/x)."),
    gated: bool = typer.Option(False, "--gated/--open", help="Behind a form?"),
    industries: str | None = typer.Option(None, "--industries", help="Comma-separated."),
    database_url: str | None = DatabaseOption,
) -> None:
    """Add an API-managed asset."""
    try:
        spec = ContentSpec.model_validate(
            {
                "key": key,
                "title": title,
                "type": type_,
                "stage": stage,
                "url": url,
                "gated": gated,
                "industries": _industries(industries) or [],
            }
        )
    except ValidationError as exc:
        fail(_invalid(exc))
    with services_for(database_url) as services:
        try:
            with services.engine.begin() as conn:
                _sync(conn, services)
                row = content.create_asset(conn, spec, services.clock())
        except content.ContentError as exc:
            fail(str(exc))
    typer.echo(f"added {row['key']} ({row['type']}, {row['stage']})")


@app.command("update")
def update_cmd(
    key: str = typer.Argument(...),
    title: str | None = typer.Option(None, "--title"),
    type_: str | None = typer.Option(None, "--type"),
    stage: str | None = typer.Option(None, "--stage"),
    url: str | None = typer.Option(None, "--url"),
    gated: bool | None = typer.Option(None, "--gated/--open"),
    industries: str | None = typer.Option(None, "--industries", help="Comma-separated."),
    active: bool | None = typer.Option(None, "--active/--inactive"),
    database_url: str | None = DatabaseOption,
) -> None:
    """Change an API-managed asset."""
    changes: dict[str, Any] = {
        k: v
        for k, v in {
            "title": title,
            "type": type_,
            "stage": stage,
            "url": url,
            "gated": gated,
            "industries": _industries(industries),
            "active": active,
        }.items()
        if v is not None
    }
    if not changes:
        fail("nothing to change: give at least one of --title, --type, --stage, --url, ...")
    with services_for(database_url) as services:
        try:
            with services.engine.begin() as conn:
                _sync(conn, services)
                row = content.update_asset(conn, key, changes, services.clock())
        except content.ContentError as exc:
            fail(str(exc))
        except ValidationError as exc:
            fail(_invalid(exc))
    typer.echo(f"updated {row['key']}")


@app.command("remove")
def remove(key: str = typer.Argument(...), database_url: str | None = DatabaseOption) -> None:
    """Remove an API-managed asset."""
    with services_for(database_url) as services:
        try:
            with services.engine.begin() as conn:
                _sync(conn, services)
                content.delete_asset(conn, key)
        except content.ContentError as exc:
            fail(str(exc))
    typer.echo(f"removed {key}")


@forms_app.command("list")
def forms_list(fmt: Format = FormatOption, database_url: str | None = DatabaseOption) -> None:
    """The forms declared in the active model (leadflow.yaml ``nurture.forms``)."""
    with services_for(database_url) as services, services.engine.begin() as conn:
        model = services.models.active(conn, services.clock())
        rows = [
            {
                "key": f.key,
                "title": f.title.en,
                "fields": ", ".join(x.name for x in f.fields),
                "asset": f.asset,
                "ask_at_most": f.ask_at_most,
                "consent_required": f.consent_required,
                "event": f.event,
                "url": f"/f/{f.key}",
            }
            for f in form_service.forms_of(model)
        ]
    columns = ["key", "title", "fields", "asset", "ask_at_most", "consent_required", "event", "url"]
    render(rows, columns, fmt, title="forms")


@forms_app.command("submissions")
def submissions(
    form: str = typer.Argument(..., help="The form key."),
    limit: int = typer.Option(100, "--limit", min=1, max=100_000),
    fmt: Format = FormatOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """A form's submissions, newest first: one column per field (CSV cells formula-safe)."""
    with services_for(database_url) as services, services.engine.begin() as conn:
        model = services.models.active(conn, services.clock())
        spec = form_service.find_form(model, form)
        if spec is None:
            known = ", ".join(f.key for f in form_service.forms_of(model)) or "none"
            fail(f"form: no form {form!r} (forms: {known})")
        rows = form_service.list_submissions(conn, form, limit=limit)
    names = [f.name for f in spec.fields]
    out = []
    for row in rows:
        fields = row["fields"] or {}
        consent = row["consent"] or {}
        out.append(
            {
                "id": row["id"],
                "submitted_at": row["submitted_at"],
                "lead_id": row["lead_id"],
                **{n: fields.get(n) for n in names},
                "consent": consent.get("granted") if consent else None,
                "asset_key": row["asset_key"],
                "page_url": row["page_url"],
                "ip": row["ip"],
            }
        )
    columns = ["id", "submitted_at", "lead_id", *names, "consent", "asset_key", "page_url", "ip"]
    render(out, columns, fmt, title=f"submissions: {form}")
