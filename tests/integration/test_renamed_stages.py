"""Stage ids are data: the demo world under a model with every stage renamed (roles kept)
gives the same figures as under the shipped model, on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import func, select, text

from leadflow.adapters.db.engine import create_db_engine
from leadflow.adapters.db.tables import metadata, webhook_deliveries
from leadflow.bootstrap import Services, build_services
from leadflow.core.config import LeadModel, build_model, load_default_model
from leadflow.entrypoints.cli import app
from leadflow.entrypoints.cli.common import run_guarded
from leadflow.services import backtest, crm, reports, seminars, webhooks
from leadflow.services.lifecycle import default_source, install_model
from leadflow.settings import Settings
from leadflow.sim import WorldConfig

CONFIG = WorldConfig(leads=40, months=3, seed=5)


def renamed_data(mapping: Mapping[str, str]) -> dict[str, Any]:
    """The shipped model with every stage id replaced by ``mapping[id]`` wherever the
    schema names a stage (keys, references); roles, rules and numbers unchanged."""
    data = copy.deepcopy(yaml.safe_load(default_source()))

    def one(value: str) -> str:
        return mapping[value]

    def many(values: list[str]) -> list[str]:
        return [mapping[v] for v in values]

    life = data["lifecycle"]
    life["initial"], life["dead_end"] = one(life["initial"]), one(life["dead_end"])
    life["main_path"] = many(life["main_path"])
    stages = {}
    for key, stage in data["stages"].items():
        if "from" in stage:
            stage["from"] = many(stage["from"])
        if "recycle" in stage:
            stage["recycle"]["return_to"] = one(stage["recycle"]["return_to"])
        stages[one(key)] = stage
    data["stages"] = stages
    for rule in data.get("fastpass", []):
        rule["to"], rule["from"] = one(rule["to"]), many(rule["from"])
    for action in data.get("actions", {}).values():
        action["to"], action["from"] = one(action["to"]), many(action["from"])
    if "from" in data.get("dead_end", {}):
        data["dead_end"]["from"] = many(data["dead_end"]["from"])
    alert = data.get("return_alert")
    if alert:
        for name in ("stages", "clear_at"):
            if name in alert:
                alert[name] = many(alert[name])
    sales = data.get("sales") or {}
    if "handoff_stages" in sales:
        sales["handoff_stages"] = many(sales["handoff_stages"])
    nurture = data.get("nurture") or {}
    if "content_stages" in nurture:
        nurture["content_stages"] = {one(k): v for k, v in nurture["content_stages"].items()}
    for program in nurture.get("programs", []):
        program["stages"] = many(program["stages"])
        for step in program["steps"]:
            when = step.get("when") or {}
            if "stage" in when:
                when["stage"] = many(when["stage"])
    return data


def _renamed() -> tuple[LeadModel, str, dict[str, str]]:
    shipped = load_default_model()
    mapping = {s: f"st{i}_{s[::-1]}" for i, s in enumerate(shipped.stages)}
    data = renamed_data(mapping)
    model = build_model(data)
    assert not set(model.stages) & set(shipped.stages)  # every id really changed
    assert model.roles == {r: tuple(mapping[s] for s in ss) for r, ss in shipped.roles.items()}
    return model, yaml.safe_dump(data, allow_unicode=True, sort_keys=False), mapping


def _figures(
    services: Services, db_url: str, rename: Mapping[str, str]
) -> tuple[dict[str, Any], str]:
    """Run the demo world, then read every figure that depends on stage roles. Stage ids in
    the funnel are mapped back through ``rename`` so two runs compare."""
    until = CONFIG.until
    with services.engine.begin() as conn:  # subscribed before the world happens
        webhooks.create_endpoint(
            conn,
            "http://127.0.0.1:9/hook",
            ["lead.mql"],
            CONFIG.until - timedelta(days=400),
            allow_private=True,
        )
    args = ["demo", "--leads", str(CONFIG.leads), "--months", str(CONFIG.months)]
    args += ["--seed", str(CONFIG.seed), "--database-url", db_url]
    assert run_guarded(app, args) == 0
    with services.engine.begin() as conn:
        model = services.models.active(conn, until)
        webhooks.enqueue_new(conn, until, model)
        mql_hooks = conn.execute(select(func.count()).select_from(webhook_deliveries)).scalar_one()
        _, crm_rows = crm.export_rows(conn, "leads", "hubspot", model)
        seminar_rates = [
            (r["key"], r.get("mql"), r["rates"]["mql"]) for r in seminars.funnel(conn, model)
        ]
    store = reports.load_store(services.engine, model)
    period = reports.Period(CONFIG.start, until + timedelta(days=1))
    department = reports.kpis(store, period, "department")
    executive = reports.kpis(store, period, "executive")
    flow = reports.funnel_report(store, period)
    back = rename.get
    stages = sorted(
        (back(r["stage"], r["stage"]), r["flow_in"], r["flow_out"], r["balance_end"])
        for r in flow["stages"]
    )
    test = backtest.run_backtest(services.engine, services.models, model, until)
    figures = {
        "mql_entries": department["kpis"]["mql_entries"],
        "accepted": department["kpis"]["accepted"],
        "executive": executive["kpis"],
        "funnel": stages,
        "bottleneck": back(flow["bottleneck"]["stage"], flow["bottleneck"]["stage"]),
        "seminars": seminar_rates,
        "backtest_mql": test.current.mql,
        "backtest_weekly": test.weekly.rows(),
        "backtest_rates": (test.current.opportunity_rate, test.current.won_rate),
        "lead_mql_webhooks": mql_hooks,
        "crm_status": sorted(
            (r["Email"], r["Lifecycle Stage"], r["Lead Status"] or "") for r in crm_rows
        ),
    }
    return figures, model.content_hash


def _fresh(backend: str, db_url: str, tmp_path: Path, template: Path | None) -> str:
    """A second empty database of the same backend (SQLite: a new copy of the migrated
    template; PostgreSQL: the test's schema truncated)."""
    if backend == "sqlite":
        assert template is not None
        path = tmp_path / "renamed.db"
        shutil.copyfile(template, path)
        return f"sqlite:///{path}"
    engine = create_db_engine(db_url)
    names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return db_url


def _services(url: str, tmp_path: Path, name: str) -> Services:
    return build_services(
        Settings(database_url=url, mail_dir=str(tmp_path / name), warm_reports=False)
    )


def test_renamed_stages_give_the_same_figures_everywhere(backend, db_url, tmp_path, request):
    model, source, mapping = _renamed()
    first = _services(db_url, tmp_path, "shipped")
    try:
        shipped, used = _figures(first, db_url, {})
    finally:
        first.close()
    assert shipped["mql_entries"] > 0 and shipped["lead_mql_webhooks"] > 0
    assert shipped["backtest_mql"] > 0 and shipped["backtest_weekly"]
    assert shipped["seminars"] and shipped["executive"]["won_leads"] > 0
    assert {status for _, status, _ in shipped["crm_status"]} - {"other", "lead"}

    template = request.getfixturevalue("sqlite_template") if backend == "sqlite" else None
    url = _fresh(backend, db_url, tmp_path, template)
    second = _services(url, tmp_path, "renamed")
    try:
        with second.engine.begin() as conn:  # the renamed model is active before any data
            install_model(conn, model, source, CONFIG.until - timedelta(days=400), activate=True)
        back = {new: old for old, new in mapping.items()}
        renamed, used_renamed = _figures(second, url, back)
    finally:
        second.close()
    assert used == load_default_model().content_hash
    assert used_renamed == model.content_hash  # the demo really ran under the renamed model
    assert renamed == shipped
