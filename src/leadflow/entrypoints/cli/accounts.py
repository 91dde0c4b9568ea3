"""``leadflow accounts ...``: accounts and target-account discovery (look-alike of won ones)."""

from __future__ import annotations

import json
from typing import Any

import typer

from leadflow.entrypoints.cli.common import DatabaseOption, fail, services_for
from leadflow.entrypoints.cli.output import Format, render
from leadflow.services import targets as svc

app = typer.Typer(help="Accounts: list, target-account discovery.", no_args_is_help=True)
FormatOption = typer.Option(Format.table, "--format", help="Output format.")
TARGET_COLUMNS = [
    "rank",
    "account_id",
    "name",
    "industry",
    "size",
    "country",
    "leads",
    "score",
    "value",
    "value_basis",
    "is_target",
    "reasons",
]
LIST_COLUMNS = [
    "account_id",
    "name",
    "domain",
    "industry",
    "employee_count",
    "country",
    "is_target",
    "set_by",
    "target_score",
    "target_value",
    "targeted_at",
]


def _flat(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {**r, "reasons": "; ".join(r["reasons"]), "against": "; ".join(r["against"])} for r in rows
    ]


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, default=str, ensure_ascii=False, indent=2))


@app.command("targets")
def targets_cmd(
    top: str = typer.Option(..., "--top", help=f"How many accounts (1-{svc.MAX_TOP})."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Rank only; change nothing."),
    replace: bool = typer.Option(
        True,
        "--replace/--keep-previous",
        help="Clear marks of earlier runs that fell out of the top (default) or keep them.",
    ),
    trait: list[str] = typer.Option(
        [], "--trait", help="Also compare this account trait (categorical; repeatable)."
    ),
    min_deals: int = typer.Option(
        3, "--min-deals", help="Won deals a segment/industry needs to be its own value basis."
    ),
    fmt: Format = FormatOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """Rank accounts by likeness to the won ones and mark the top N as target accounts,
    each valued at its segment's average won deal."""
    try:
        n = int(top.strip())
    except ValueError:
        fail(f"--top: {top[:40]!r} is not a whole number")
    if not 1 <= n <= svc.MAX_TOP:
        fail(f"--top: {n} must be between 1 and {svc.MAX_TOP}")
    if not 1 <= min_deals <= 1000:
        fail(f"--min-deals: {min_deals} must be between 1 and 1000")
    with services_for(database_url) as services:
        now = services.clock()
        try:
            if dry_run:
                rows = svc.rank_targets(
                    services.engine,
                    now,
                    n,
                    traits=trait,
                    min_deals=min_deals,
                    models=services.models,
                )
                report = None
            else:
                report = svc.mark_targets(
                    services.engine,
                    now,
                    n,
                    replace=replace,
                    traits=trait,
                    min_deals=min_deals,
                    models=services.models,
                )
                rows = report["targets"]
        except svc.NoWonAccounts as exc:
            fail(f"{exc}; nothing was changed")
        except svc.TargetsError as exc:
            fail(str(exc).replace("traits:", "--trait:", 1))
    if fmt is Format.json:
        _echo_json(rows if report is None else report)
        return
    if fmt is Format.csv:
        render(_flat(rows), [*TARGET_COLUMNS, "against", "evidence", "value_deals"], fmt)
        return
    render(_flat(rows), TARGET_COLUMNS, fmt, title=f"top {len(rows)} look-alike accounts")
    if report is None:
        typer.echo("dry run: nothing was changed")
        return
    typer.echo(
        f"marked {report['marked']} new target accounts, kept {report['kept']}, "
        f"{report['already_target']} already targets by other means, cleared "
        f"{report['cleared']}; {report['leads_recomputed']} leads recomputed "
        f"({report['fit_grade_changed']} fit grades, {report['stage_changed']} stages changed)"
    )


@app.command("list")
def list_cmd(
    targets: bool = typer.Option(False, "--targets", help="Only target accounts."),
    limit: int = typer.Option(100, "--limit", min=1, max=100_000, help="Rows to show."),
    fmt: Format = FormatOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """Accounts, best look-alike score first; ``set_by`` says who made a target one."""
    with services_for(database_url) as services, services.engine.connect() as conn:
        rows = svc.list_accounts(conn, targets_only=targets, limit=limit)
    render(
        rows,
        LIST_COLUMNS,
        fmt,
        title=f"{'target ' if targets else ''}accounts ({len(rows)})",
    )
