"""Registration point for CLI nouns beyond db/keys/init/serve."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    from leadflow.entrypoints.cli import accounts as accounts_cli
    from leadflow.entrypoints.cli import content as content_cli
    from leadflow.entrypoints.cli import crm, demo, imports, leads, model, predict, sales
    from leadflow.entrypoints.cli import email as email_cli
    from leadflow.entrypoints.cli import programs as programs_cli
    from leadflow.entrypoints.cli import report as report_cli
    from leadflow.entrypoints.cli import secret as secret_cli
    from leadflow.entrypoints.cli import segments as segments_cli
    from leadflow.entrypoints.cli import seminars as seminars_cli
    from leadflow.entrypoints.cli import users as users_cli
    from leadflow.entrypoints.cli import webhooks as webhooks_cli

    app.add_typer(leads.app, name="leads", help="Leads: list, show, export, erase.")
    app.add_typer(imports.app, name="import", help="Import leads from CSV files.")
    app.command("demo", help="Load the simulated demo world (deterministic from --seed).")(
        demo.demo
    )
    app.add_typer(model.app, name="model", help="The lead model: check, show, apply, backtest.")
    app.add_typer(model.score_app, name="score", help="Scores: explain a lead's scores.")
    app.add_typer(predict.app, name="predict", help="Predictive scoring: train, evaluate, score.")
    app.add_typer(users_cli.app, name="users", help="Dashboard users and roles.")
    app.add_typer(
        report_cli.app, name="report", help="Reports: funnel, attribution, campaigns, KPIs."
    )
    app.add_typer(sales.app, name="sales", help="Sales hand-off: reps, queue, routing, actions.")
    app.add_typer(webhooks_cli.app, name="webhooks", help="Outbound webhooks and deliveries.")
    app.add_typer(secret_cli.app, name="secret", help="The signing key: show, rotate.")
    app.add_typer(crm.app, name="crm", help="CRM sync: HubSpot/Salesforce export, CRM updates.")
    app.add_typer(email_cli.app, name="email", help="Email: sends, bounces, test messages.")
    app.add_typer(segments_cli.app, name="segments", help="Segments and audience exports.")
    app.add_typer(seminars_cli.app, name="seminars", help="Seminars and webinars, their funnel.")
    app.add_typer(programs_cli.app, name="programs", help="Nurture programs: list, show, run due.")
    app.add_typer(content_cli.app, name="content", help="Content library: list, add, update.")
    app.add_typer(content_cli.forms_app, name="forms", help="Hosted forms and their submissions.")
    app.add_typer(accounts_cli.app, name="accounts", help="Accounts and look-alike targets.")
