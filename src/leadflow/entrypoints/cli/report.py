"""``leadflow report funnel|attribution|campaigns|kpis|pipeline``: revenue analytics from the store.

Numbers come from :mod:`leadflow.services.reports`; this module parses options, prints
tables (``--format table|json|csv``) and draws charts (``--chart FILE.html|FILE.png``).
HTML charts are self-contained SVG (no script, no network); PNG needs matplotlib.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypedDict

import typer

from leadflow.entrypoints.cli.common import DatabaseOption, fail, services_for
from leadflow.entrypoints.cli.output import Format, render
from leadflow.services import reports as svc

app = typer.Typer(
    help="Revenue analytics: funnel flow & balance, attribution, campaigns, KPIs by role.",
    no_args_is_help=True,
)

FromOption = typer.Option(
    None, "--from", help="Period start, YYYY-MM-DD (UTC; default 90 days before --to)."
)
ToOption = typer.Option(
    None, "--to", help="Period end, YYYY-MM-DD, exclusive (UTC; default: tomorrow)."
)
FormatOption = typer.Option(Format.table, "--format", help="Output format.")
ChartOption = typer.Option(
    None, "--chart", help="Also write a chart: FILE.html (self-contained) or FILE.png."
)
CurrencyOption = typer.Option(
    None,
    "--currency",
    help="Only the deals in this currency (ISO 4217). Amounts are never summed across "
    "currencies: without it, deals in several currencies show amounts per currency.",
    show_default=False,
)


def _period(start: str | None, end: str | None, now: datetime) -> svc.Period:
    try:
        to = (
            svc.parse_day(end, "--to")
            if end
            else now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        )
        frm = svc.parse_day(start, "--from") if start else to - timedelta(days=90)
        return svc.Period(frm, to)
    except svc.ReportError as exc:
        fail(str(exc))


def _check_chart(chart: Path | None) -> None:
    if chart is None:
        return
    if chart.suffix.lower() not in (".html", ".htm", ".png"):
        fail(f"--chart: {chart.name!r} must end in .html or .png")
    if chart.suffix.lower() == ".png":
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            fail("--chart: PNG charts need matplotlib (pip install matplotlib); use FILE.html")
    if not chart.parent.exists():
        fail(f"--chart: directory {chart.parent} does not exist")


def _load(database_url: str | None, *, events: bool = True) -> svc.Store:
    with services_for(database_url) as services:
        with services.engine.begin() as conn:
            model = services.models.active(conn, services.clock())
        return svc.load_store(services.engine, model, with_events=events)


def _now() -> datetime:
    from leadflow.bootstrap import utc_now

    return utc_now()


def _guard(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except svc.ReportError as exc:
        fail(str(exc))


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    return value


def _rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [{k: _fmt(v) for k, v in r.items()} for r in rows]


# --------------------------------------------------------------------------- commands


FUNNEL_COLUMNS = [
    "stage",
    "balance_start",
    "flow_in",
    "out_next",
    "out_recycle",
    "out_dead_end",
    "out_other",
    "flow_out",
    "balance_end",
    "cvr",
    "median_days_in_stage",
    "p90_days_in_stage",
]


@app.command("funnel")
def funnel_cmd(
    start: str | None = FromOption,
    end: str | None = ToOption,
    by: str | None = typer.Option(
        None, "--by", help=f"Slice: {', '.join(svc.SLICES)}.", show_default=False
    ),
    unit: str = typer.Option(
        "lead", "--unit", help="lead (stages of the lead model) or deal (open -> won/lost)."
    ),
    currency: str | None = CurrencyOption,
    fmt: Format = FormatOption,
    chart: Path | None = ChartOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """Flow & balance per stage: flow in, flow out by destination, balances, CVR, time in
    stage, the bottleneck and a Sankey of the period's stage flows. With --unit deal: deals
    per deal stage, the period's opened deals step by step with conversions and amounts."""
    period = _period(start, end, _now())
    _guard(svc._check_choice, unit, svc.UNITS, "--unit")
    if unit == "lead":
        _guard(svc._check_choice, by, svc.SLICES, "--by")
    else:
        _guard(svc.check_currency, currency)
    _check_chart(chart)
    store = _load(database_url, events=unit == "lead")
    data = _guard(svc.funnel_report, store, period, by, unit=unit, currency=currency)
    if unit == "deal":
        _print_deal_funnel(data, fmt, period)
        if chart is not None:
            _write_chart(
                chart,
                "sankey",
                data["sankey"],
                _title("deal flows", period, None),
                order=svc.DEAL_STAGES,
            )
        return
    columns = ([by] if by else []) + FUNNEL_COLUMNS
    if fmt is Format.json:
        _echo_json(data)
    else:
        render(_rows(data["stages"]), columns, fmt, title=_title("funnel", period, by))
        if fmt is Format.table:
            neck = data["bottleneck"]
            typer.echo(f"bottleneck: {neck['reason']}" if neck["stage"] else neck["reason"])
    if chart is not None:
        _write_chart(
            chart,
            "sankey",
            data["sankey"],
            _title("stage flows", period, None),
            order=store.stage_model.stages,
        )


DEAL_FUNNEL_COLUMNS = [
    "stage",
    "balance_start",
    "flow_in",
    "flow_out",
    "out_won",
    "out_lost",
    "balance_end",
    "amount_in",
    "amount_end",
    "cvr",
    "win_rate",
    "median_days_open",
    "p90_days_open",
]


def _money_line(data: Mapping[str, Any]) -> str | None:
    if data.get("amounts_summed", True):
        return None
    return (
        f"deals in {', '.join(data['currencies'])}: amounts are not summed across currencies "
        "(see the per-currency table, or choose one with --currency)"
    )


def _print_deal_funnel(data: Mapping[str, Any], fmt: Format, period: svc.Period) -> None:
    if fmt is Format.json:
        _echo_json(data)
        return
    cur = f" ({data['currency']})" if data.get("currency") else ""
    render(
        _rows(data["stages"]),
        DEAL_FUNNEL_COLUMNS,
        fmt,
        title=_title(f"deal funnel{cur}", period, None),
    )
    if fmt is Format.csv:
        return
    render(
        _rows(data["steps"]),
        ["step", "deals", "amount", "conversion"],
        fmt,
        title="deals opened in the period, where they stand at its end",
    )
    render(_rows(data["lost_reasons"]), ["reason", "deals", "amount"], fmt, title="lost deals")
    if data["money_by_currency"]:
        render(
            _rows(data["money_by_currency"]),
            ["currency", "won_deals", "won_amount", "lost_deals", "open_deals", "open_amount"],
            fmt,
            title="amounts per currency",
        )
    note = _money_line(data)
    if note:
        typer.echo(note)


@app.command("attribution")
def attribution_cmd(
    start: str | None = FromOption,
    end: str | None = ToOption,
    model: str = typer.Option("all", "--model", help=f"{'|'.join(svc.MODEL_CHOICES)}."),
    level: str = typer.Option("lead", "--level", help="lead|account."),
    touch: str = typer.Option("channel", "--touch", help="channel|campaign|content."),
    order: int = typer.Option(1, "--order", help="Markov chain order, 1..3."),
    allocation: str = typer.Option(
        "removal",
        "--allocation",
        help="Markov credits: removal (all conversions split by normalised removal effects, "
        "as ChannelAttribution) | path (each converted path split by its touches' removal "
        "effects, as mam).",
    ),
    shapley_game: str = typer.Option(
        "conversions",
        "--shapley-game",
        help="conversions (exact at any size) | conversion_rate (sampled above 15 channels, "
        "with its standard error).",
    ),
    to_stage: str | None = typer.Option(
        None,
        "--to-stage",
        help="The conversion stage (default: the model's won stage; any stage works).",
    ),
    suggest: bool = typer.Option(
        False, "--suggest-points", help="Propose engagement points from attributed value."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="With --suggest-points: write the proposed leadflow.yaml here."
    ),
    fmt: Format = FormatOption,
    chart: Path | None = ChartOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """Multi-touch attribution of conversions and their value to channels, campaigns or
    content, per model side by side."""
    period = _period(start, end, _now())
    _guard(svc._check_choice, model, svc.MODEL_CHOICES, "--model")
    _guard(svc._check_choice, level, svc.LEVELS, "--level")
    _guard(svc._check_choice, touch, svc.TOUCH_KEYS, "--touch")
    _guard(svc._check_choice, allocation, ("removal", "path"), "--allocation")
    _guard(svc._check_choice, shapley_game, ("conversions", "conversion_rate"), "--shapley-game")
    if order not in (1, 2, 3):
        fail(f"--order: {order} is not 1, 2 or 3")
    if out is not None and not suggest:
        fail("--out: only with --suggest-points")
    if out is not None and not out.parent.exists():
        fail(f"--out: directory {out.parent} does not exist")
    _check_chart(chart)
    store = _load(database_url)
    if suggest:
        _suggest(store, period, model, to_stage, order, out, fmt)
        return
    data = _guard(
        svc.attribution_report,
        store,
        period,
        model=model,
        touch=touch,
        level=level,
        order=order,
        to_stage=to_stage,
        allocation=allocation,
        shapley_game=shapley_game,
    )
    if fmt is Format.json:
        _echo_json(data)
    else:
        if fmt is Format.table:
            typer.echo(
                f"{data['conversions']:,} conversions into {data['to_stage']} worth "
                f"{data['conversion_value']:,.2f}; {data['paths']:,} {level} paths; "
                f"markov allocation: {allocation}"
            )
            for m in data["models"]:
                if m["parameters"].get("max_std_error_conversions"):
                    typer.echo(
                        f"{m['model']}: sampled, standard error up to "
                        f"{m['parameters']['max_std_error_conversions']:,.3f} conversions"
                    )
        render(
            _rows(data["credits"]),
            ["model", "touch_key", "touch", "conversions", "value", "share_of_value"],
            fmt,
            title=_title(f"attribution by {touch}", period, None),
        )
    if chart is not None:
        _write_chart(
            chart, "bars", data["credits"], _title(f"attribution by {touch}", period, None)
        )


def _suggest(
    store: svc.Store,
    period: svc.Period,
    model: str,
    to_stage: str | None,
    order: int,
    out: Path | None,
    fmt: Format,
) -> None:
    result = _guard(svc.suggest_points, store, period, model=model, to_stage=to_stage, order=order)
    if not result.check_ok:
        fail(
            "suggest-points: the proposed model does not validate: "
            + "; ".join(result.check_errors)
        )
    if out is not None:
        out.write_text(result.proposed_source, encoding="utf-8")
    if fmt is Format.json:
        _echo_json(
            {
                "model": result.model,
                "scale": result.scale,
                "formula": svc.SUGGEST_FORMULA,
                "rules": result.rows,
                "diff": result.diff,
            }
        )
        return
    if fmt is Format.csv:
        render(
            _rows(result.rows),
            [
                "rule",
                "occurrences",
                "attributed_value",
                "value_per_occurrence",
                "points",
                "proposed",
            ],
            fmt,
        )
        return
    typer.echo(result.diff or "# no change proposed", nl=not result.diff.endswith("\n"))
    typer.echo(
        f"# {result.model} credits, scale k = {result.scale:.4g} points per unit of value"
        + (f"; proposed model written to {out}" if out else "")
        + " (evaluate it with `leadflow model backtest`)",
        err=True,
    )


@app.command("campaigns")
def campaigns_cmd(
    start: str | None = FromOption,
    end: str | None = ToOption,
    fmt: Format = FormatOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """E-mail open/click rates per campaign, form conversion, webinar attendance, content."""
    period = _period(start, end, _now())
    data = _guard(svc.campaigns_report, _load(database_url), period)
    _print_campaigns(data, fmt, period)


def _print_campaigns(data: Mapping[str, Any], fmt: Format, period: svc.Period) -> None:
    if fmt is Format.json:
        _echo_json(data)
        return
    tables = [
        (
            "email",
            [
                "campaign",
                "sent",
                "opened",
                "clicked",
                "unsubscribed",
                "bounced",
                "open_rate",
                "click_rate",
                "click_to_open",
            ],
        ),
        ("forms", ["campaign", "visitors", "form_submitters", "leads", "form_conversion"]),
        ("webinars", ["webinar", "registered", "attended", "attendance_rate"]),
        ("content", ["asset", "asset_type", "downloads", "people"]),
        (
            "programs",
            [
                "program",
                "step",
                "sent",
                "opened",
                "clicked",
                "form_submitted",
                "open_rate",
                "click_rate",
                "form_rate",
            ],
        ),
        (
            "seminars",
            [
                "key",
                "invited",
                "registered",
                "attended",
                "no_show",
                "followed_up",
                "mql",
                "opportunity",
            ],
        ),
    ]
    if fmt is Format.csv:
        # One CSV table: the e-mail rates (use --format json for every table).
        render(_rows(data["email"]), tables[0][1], fmt)
        return
    for key, cols in tables:
        render(_rows(data[key]), cols, fmt, title=_title(key, period, None))
    typer.echo(f"seminar attendees: {data['seminar_attendees']}")


@app.command("kpis")
def kpis_cmd(
    role: str = typer.Option("executive", "--role", help="executive|department|campaign."),
    start: str | None = FromOption,
    end: str | None = ToOption,
    currency: str | None = CurrencyOption,
    fmt: Format = FormatOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """The KPIs each role looks at."""
    period = _period(start, end, _now())
    _guard(svc._check_choice, role, svc.ROLES, "--role")
    _guard(svc.check_currency, currency)
    data = _guard(svc.kpis, _load(database_url), period, role, currency)
    if fmt is Format.json:
        _echo_json(data)
        return
    if role == "campaign":
        _print_campaigns(data, fmt, period)
        return
    kpi_rows = [{"kpi": k, "value": _fmt(v)} for k, v in data["kpis"].items()]
    render(kpi_rows, ["kpi", "value"], fmt, title=_title(f"{role} KPIs", period, None))
    if fmt is Format.csv:
        return
    if role == "executive":
        if data["money_by_currency"]:
            render(
                _rows(data["money_by_currency"]),
                [
                    "currency",
                    "won_deals",
                    "won_revenue",
                    "lost_deals",
                    "win_rate",
                    "pipeline_deals",
                    "pipeline_value",
                ],
                fmt,
                title="deals per currency",
            )
        note = _money_line(data)
        if note:
            typer.echo(note)
        render(
            _rows(data["revenue_by_first_channel"]),
            ["first_channel", "won", "revenue"],
            fmt,
            title="won revenue by first channel",
        )
    else:
        render(
            _rows(data["stages"]),
            [
                "stage",
                "balance_start",
                "flow_in",
                "flow_out",
                "balance_end",
                "cvr",
                "median_days_in_stage",
            ],
            fmt,
            title="stages",
        )
        typer.echo(f"bottleneck: {data['bottleneck']['reason']}")
        for row in data["velocity"]:
            if not row["won"]:
                continue
            typer.echo(
                f"velocity: {row['won']} won, median {row['median_days']} days acquired -> won"
            )


@app.command("pipeline")
def pipeline_cmd(
    as_of: str | None = typer.Option(None, "--as-of", help="Forecast date YYYY-MM-DD (UTC)."),
    months: int = typer.Option(6, "--months", help="Past months to backtest (0-36)."),
    by: str | None = typer.Option(
        None, "--by", help=f"Segment: {svc.SEGMENT_HELP}.", show_default=False
    ),
    currency: str | None = CurrencyOption,
    fmt: Format = FormatOption,
    database_url: str | None = DatabaseOption,
) -> None:
    """Open pipeline by expected close month, weighted by measured win rates, with the
    forecast's error on past months, the sales cycle, deals per stage and loss reasons;
    with --by, deals, win rate, won amount and sales cycle (median, p90) per segment."""
    at = _guard(svc.parse_day, as_of, "--as-of") if as_of else _now()
    if not 0 <= months <= 36:
        fail(f"--months: {months} must be between 0 and 36")
    _guard(svc.check_segment, by)
    _guard(svc.check_currency, currency)
    with services_for(database_url) as services:
        with services.engine.begin() as conn:
            model = services.models.active(conn, services.clock())
        data = _guard(
            svc.pipeline_report,
            services.engine,
            at,
            months,
            by=by,
            currency=currency,
            model=model,
        )
    if fmt is Format.json:
        _echo_json(data)
        return
    if by is not None and fmt is Format.csv:
        # One CSV table: the segments (use --format json for every section).
        render(_rows(_segment_rows(data, by)), [by, *SEGMENT_COLUMNS[1:]], fmt)
        return
    render(
        _rows(data["by_month"]),
        ["month", "deals", "amount", "weighted"],
        fmt,
        title=f"open pipeline as of {at.date()}: {data['open_deals']} deals, "
        f"weighted {_fmt(data['weighted_amount'])} of {_fmt(data['open_amount'])}",
    )
    if fmt is Format.csv:
        return
    render(
        _rows(data["win_rates"]),
        ["band", "closed", "won", "win_rate", "basis"],
        fmt,
        title="win rate by deal age (measured)",
    )
    bt = data["backtest"]
    render(
        _rows(bt["months"]),
        ["month", "forecast", "actual", "error", "abs_pct_error"],
        fmt,
        title=f"forecast vs actual (MAPE {_fmt(bt['mape'])})",
    )
    cycle_rows = [{"outcome": k, **v} for k, v in data["sales_cycle"].items()]
    render(
        _rows(cycle_rows),
        ["outcome", "deals", "mean_days", "median_days", "p90_days"],
        fmt,
        title="sales cycle (days from open to close)",
    )
    render(_rows(data["deals_per_stage"]), ["stage", "deals", "amount"], fmt, title="deals")
    if by is not None:
        render(
            _rows(_segment_rows(data, by)),
            [by, *SEGMENT_COLUMNS[1:]],
            fmt,
            title=f"deals, win rate and sales cycle by {by}",
        )
    for row in data.get("by_currency", []):
        typer.echo(
            f"{row['currency']}: {row['open_deals']} open deals, weighted "
            f"{_fmt(row['weighted_amount'])} of {_fmt(row['open_amount'])}"
        )
    note = _money_line(data)
    if note:
        typer.echo(note)
    market = data["addressable_market"]
    render(
        _rows(market["by_industry"]),
        ["industry", "accounts", "valued", "value"],
        fmt,
        title=f"addressable market: {market['accounts']} target accounts, "
        f"value {_fmt(market['value'])}",
    )


SEGMENT_COLUMNS = [
    "segment",
    "deals",
    "open",
    "won",
    "lost",
    "win_rate",
    "won_amount",
    "won_median_days",
    "won_p90_days",
    "closed_median_days",
    "closed_p90_days",
]


def _segment_rows(data: Mapping[str, Any], by: str) -> list[dict[str, Any]]:
    return [{**r, by: r["segment"]} for r in data["by_segment"]]


ACCEPTANCE_COLUMNS = [
    "group",
    "handoffs",
    "accepted",
    "rejected",
    "acceptance_rate",
    "won",
    "lost",
    "win_rate",
]


QUALIFICATION_COLUMNS = ["group", "opportunities", "won", "lost", "open", "win_rate"]


@app.command("acceptance")
def acceptance_cmd(
    target: float = typer.Option(0.7, "--target", help="Target acceptance rate, 0-1."),
    win_target: float = typer.Option(
        0.3,
        "--win-target",
        help="Target win rate of qualified opportunities for the BANT hand-off threshold, 0-1.",
    ),
    fmt: Format = FormatOption,
    out_model: Path | None = typer.Option(
        None,
        "--out-model",
        help="Where to write the candidate model (default ./leadflow.mqlN.yaml, .bantN, ...).",
    ),
    database_url: str | None = DatabaseOption,
) -> None:
    """Sales acceptance and win rates by score band and by MQL rule, and the MQL threshold
    that reaches --target acceptance within sales capacity; win rates by BANT qualification
    band and the hand-off threshold that reaches --win-target (with the backtest to check
    the candidate model)."""
    from leadflow.services import acceptance as acc

    if not 0 < target <= 1:
        fail(f"--target: must be between 0 and 1 (exclusive of 0), got {target}")
    if not 0 < win_target <= 1:
        fail(f"--win-target: must be between 0 and 1 (exclusive of 0), got {win_target}")
    if out_model is not None and not out_model.parent.exists():
        fail(f"--out-model: directory {out_model.parent} does not exist")
    with services_for(database_url) as services, services.engine.begin() as conn:
        model = services.models.active(conn, services.clock())
        data = acc.report(conn, model, target=target, win_target=win_target)
        source = acc.active_source(conn)
    rec = data["recommendation"]
    hrec = data["handoff_recommendation"]
    mql = rec["threshold"]
    bant = hrec["threshold"] if hrec["threshold"] != hrec["current"] else None
    if (mql is not None or bant is not None) and source is not None:
        path = out_model or Path(
            f"leadflow.{acc.candidate_suffix(mql, bant).replace('-', '.')}.yaml"
        )
        try:
            path.write_text(acc.candidate_source(source, model, mql, bant), "utf-8")
        except ValueError as exc:
            rec["candidate_error"] = str(exc)
        else:
            rec["candidate_model"] = str(path)
            rec["backtest_command"] = f"leadflow model backtest {path}"
    if fmt is Format.json:
        _echo_json(data)
        return
    render(_rows(data["by_band"]), ACCEPTANCE_COLUMNS, fmt, title="by engagement score band")
    if fmt is Format.csv:
        return
    render(_rows(data["by_rule"]), ACCEPTANCE_COLUMNS, fmt, title="by MQL rule")
    render(
        _rows(data["by_qualification_band"]),
        QUALIFICATION_COLUMNS,
        fmt,
        title="qualified opportunities by BANT score band",
    )
    typer.echo(
        f"{data['handoffs']} hand-offs, {data['mqls']} MQLs over {data['working_days']} "
        f"working days; capacity {rec['capacity_per_day']} a day"
    )
    if mql is None:
        typer.echo(f"no MQL recommendation: {rec['reason']}")
    else:
        typer.echo(
            f"recommended MQL threshold: {mql:g} (current {rec['current']}); "
            f"acceptance {rec['acceptance_rate']:.0%}, {rec['mqls_per_day']:.1f} MQLs a day "
            f"({'within' if rec['within_capacity'] else 'over'} capacity) - {rec['reason']}"
        )
    if hrec["threshold"] is None:
        typer.echo(
            f"hand-off (BANT) threshold: {data['handoff_threshold']:g} (unchanged; "
            f"{data['qualified']} qualified hand-offs) - {hrec['reason']}"
        )
    else:
        typer.echo(
            f"recommended hand-off (BANT) threshold: {hrec['threshold']:g} "
            f"(current {data['handoff_threshold']:g}); win rate {hrec['win_rate']:.0%} of "
            f"{hrec['closed']} closed opportunities - {hrec['reason']}"
        )
    if "backtest_command" in rec:
        typer.echo(f"check it: {rec['backtest_command']}")
    elif "candidate_error" in rec:
        typer.echo(f"no candidate model written: {rec['candidate_error']}")


def _title(what: str, period: svc.Period, by: str | None) -> str:
    span = f"{period.start:%Y-%m-%d} .. {period.end:%Y-%m-%d}"
    return f"{what} {span}" + (f" by {by}" if by else "")


# --------------------------------------------------------------------------- charts


PALETTE = [
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
    "#1f77b4",
    "#2ca02c",
]


class _SankeyNode(TypedDict):
    name: str
    x: float
    y: float
    w: float
    h: float


def sankey_layout(
    links: Sequence[Mapping[str, Any]],
    width: float = 960,
    height: float = 480,
    order: Sequence[str] = (),
) -> dict[str, Any]:
    """Node boxes and link bands of a left-to-right Sankey (columns by stage order: the
    active model's ``order``, else the shipped model's)."""
    order = ["(new)", *(order or svc.funnel.StageModel.default().stages)]
    names: list[str] = []
    for link in links:
        for n in (link["source"], link["target"]):
            if n not in names:
                names.append(n)
    names.sort(key=lambda n: order.index(n) if n in order else len(order))
    column = {n: i for i, n in enumerate(names)}
    # Side stages share the column after their source to keep the picture compact.
    inflow = {n: 0.0 for n in names}
    outflow = {n: 0.0 for n in names}
    for link in links:
        outflow[link["source"]] += link["value"]
        inflow[link["target"]] += link["value"]
    size = {n: max(inflow[n], outflow[n], 1.0) for n in names}
    total = max(size.values()) if size else 1.0
    pad, node_w = 40.0, 14.0
    scale = (height - 2 * pad) / total
    step = (width - 2 * pad - node_w) / max(len(names) - 1, 1)
    nodes: dict[str, _SankeyNode] = {}
    for n in names:
        h = size[n] * scale
        x = pad + column[n] * step
        y = pad + ((height - 2 * pad) - h) / 2 + (column[n] % 2) * 0.0
        nodes[n] = {"name": n, "x": x, "y": y, "w": node_w, "h": h}
    out_off = {n: 0.0 for n in names}
    in_off = {n: 0.0 for n in names}
    bands = []
    for link in sorted(links, key=lambda lk: -lk["value"]):
        s, t = nodes[link["source"]], nodes[link["target"]]
        w = link["value"] * scale
        y0 = s["y"] + out_off[s["name"]] + w / 2
        y1 = t["y"] + in_off[t["name"]] + w / 2
        out_off[s["name"]] += w
        in_off[t["name"]] += w
        bands.append(
            {**link, "x0": s["x"] + node_w, "y0": y0, "x1": t["x"], "y1": y1, "w": max(w, 1.0)}
        )
    return {"nodes": list(nodes.values()), "bands": bands, "width": width, "height": height}


def _sankey_svg(links: Sequence[Mapping[str, Any]], order: Sequence[str] = ()) -> str:
    lay = sankey_layout(links, order=order)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{lay["width"]}" '
        f'height="{lay["height"]}" role="img">'
    ]
    for i, b in enumerate(lay["bands"]):
        dx = abs(b["x1"] - b["x0"]) / 2 + 30
        c0, c1 = b["x0"] + dx, b["x1"] - dx
        color = PALETTE[i % len(PALETTE)]
        label = html.escape(f"{b['source']} -> {b['target']}: {b['value']}")
        parts.append(
            f'<path d="M{b["x0"]:.1f},{b["y0"]:.1f} C{c0:.1f},{b["y0"]:.1f} '
            f'{c1:.1f},{b["y1"]:.1f} {b["x1"]:.1f},{b["y1"]:.1f}" fill="none" '
            f'stroke="{color}" stroke-opacity="0.45" stroke-width="{b["w"]:.1f}">'
            f"<title>{label}</title></path>"
        )
    for n in lay["nodes"]:
        parts.append(
            f'<rect x="{n["x"]:.1f}" y="{n["y"]:.1f}" width="{n["w"]}" '
            f'height="{max(n["h"], 1):.1f}" fill="#333"/>'
            f'<text x="{n["x"] + n["w"] / 2:.1f}" y="{n["y"] - 6:.1f}" font-size="12" '
            f'text-anchor="middle">{html.escape(n["name"])}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _bar_series(credits: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str], dict]:
    models: list[str] = []
    touches: list[str] = []
    values: dict[tuple[str, str], float] = {}
    for row in credits:
        if row["model"] not in models:
            models.append(row["model"])
        if row["touch"] not in touches:
            touches.append(row["touch"])
        values[(row["model"], row["touch"])] = float(row["value"] or 0.0)
    return models, touches, values


def _bars_svg(credits: Sequence[Mapping[str, Any]]) -> str:
    models, touches, values = _bar_series(credits)
    width, height, pad = 960, 420, 50
    top = max(values.values(), default=1.0) or 1.0
    group = (width - 2 * pad) / max(len(touches), 1)
    bar = group * 0.8 / max(len(models), 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 60}">']
    for ti, touch in enumerate(touches):
        gx = pad + ti * group
        for mi, model in enumerate(models):
            v = values.get((model, touch), 0.0)
            h = (height - 2 * pad) * v / top
            parts.append(
                f'<rect x="{gx + mi * bar:.1f}" y="{height - pad - h:.1f}" width="{bar:.1f}" '
                f'height="{h:.1f}" fill="{PALETTE[mi % len(PALETTE)]}">'
                f"<title>{html.escape(f'{model} / {touch}: {v:,.2f}')}</title></rect>"
            )
        parts.append(
            f'<text x="{gx + group * 0.4:.1f}" y="{height - pad + 16}" font-size="11" '
            f'text-anchor="middle">{html.escape(touch)}</text>'
        )
    for mi, model in enumerate(models):
        parts.append(
            f'<rect x="{pad + mi * 150}" y="{height + 20}" width="12" height="12" '
            f'fill="{PALETTE[mi % len(PALETTE)]}"/><text x="{pad + mi * 150 + 16}" '
            f'y="{height + 31}" font-size="11">{html.escape(model)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _write_chart(
    path: Path,
    kind: str,
    data: Sequence[Mapping[str, Any]],
    title: str,
    order: Sequence[str] = (),
) -> None:
    if path.suffix.lower() == ".png":
        _write_png(path, kind, data, title, order)
    else:
        svg = _sankey_svg(data, order) if kind == "sankey" else _bars_svg(data)
        page = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title>"
            "<style>body{font-family:system-ui,sans-serif;margin:24px}</style></head>"
            f"<body><h1>{html.escape(title)}</h1>{svg}</body></html>\n"
        )
        path.write_text(page, encoding="utf-8")
    typer.echo(f"chart written to {path}", err=True)


def _write_png(
    path: Path,
    kind: str,
    data: Sequence[Mapping[str, Any]],
    title: str,
    order: Sequence[str] = (),
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path as MPath

    fig, ax = plt.subplots(figsize=(12, 6), dpi=100)
    ax.set_title(title)
    if kind == "sankey":
        lay = sankey_layout(data, order=order)
        for i, b in enumerate(lay["bands"]):
            dx = abs(b["x1"] - b["x0"]) / 2 + 30
            verts = [
                (b["x0"], b["y0"]),
                (b["x0"] + dx, b["y0"]),
                (b["x1"] - dx, b["y1"]),
                (b["x1"], b["y1"]),
            ]
            codes = [MPath.MOVETO, MPath.CURVE4, MPath.CURVE4, MPath.CURVE4]
            ax.add_patch(
                PathPatch(
                    MPath(verts, codes),
                    fill=False,
                    lw=max(b["w"] * 0.72, 0.5),
                    alpha=0.45,
                    color=PALETTE[i % len(PALETTE)],
                )
            )
        for n in lay["nodes"]:
            ax.add_patch(plt.Rectangle((n["x"], n["y"]), n["w"], max(n["h"], 1), color="#333"))
            ax.text(n["x"] + n["w"] / 2, n["y"] - 6, n["name"], ha="center", fontsize=9)
        ax.set_xlim(0, lay["width"])
        ax.set_ylim(lay["height"], 0)
        ax.axis("off")
    else:
        models, touches, values = _bar_series(data)
        width = 0.8 / max(len(models), 1)
        for mi, model in enumerate(models):
            xs = [ti + mi * width for ti in range(len(touches))]
            ax.bar(xs, [values.get((model, t), 0.0) for t in touches], width, label=model)
        ax.set_xticks([ti + 0.4 - width / 2 for ti in range(len(touches))])
        ax.set_xticklabels(touches, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("attributed value")
        ax.legend(fontsize=7, ncol=max(1, math.ceil(len(models) / 6)))
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
