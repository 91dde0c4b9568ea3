"""Analytics benchmark: flow & balance on a 1,000,000-lead stage history, and Markov order-1
attribution on 1,000,000 paths (12 and 500 channels) next to ChannelAttribution.

Run: ``PYTHONPATH=src .venv/bin/python benchmarks/analytics.py [--leads N] [--paths N]
[--ca-paths-500 N] [--ca-timeout S] [--quick] [--no-before]``. Prints figures with the load
average (the machine is shared); asserts nothing about time. ``--quick`` skips the
ChannelAttribution runs. The "before" flow figures time the pre-issue-6 implementation kept
as the oracle in tests/unit/test_funnel.py (``--no-before`` skips them). ChannelAttribution
is optional here (a test-only dependency); without it the comparison lines say so.

Our Markov figures are the best of 3 runs, path grouping timed separately and added for the
ratio (ChannelAttribution is handed the paths already grouped). Each Markov size also checks
the order-1 removal effects (one inverse, Sherman-Morrison for every channel) against the
other exact route, one sparse LU solve of the reduced chain per channel (about 9 s at 500
channels). At 500 channels ChannelAttribution's time hardly depends on the number of paths
(it simulates per removed channel) and exceeds 400 s on all 1,000,000, so it gets the first
``--ca-paths-500`` (5,000) paths: about 80-190 s.

Attribution from the store (issue 14): ``--journeys`` (100,000) seeded journeys over 12 and
over 250 channels are written to a fresh SQLite database (one lead per journey, one page
event per touch, acquired -> won for converted journeys); a fresh process loads the store
and runs ``report attribution --model all`` (7 heuristics, Markov orders 1-3, Shapley) and
reports its time and peak RSS; the Markov order-2/3 removal effects are timed alone with
their traced allocations. ChannelAttribution (heuristics + ``markov_model`` orders 1-3 on
the grouped paths) and mam (first/last/linear + ``run_markov``, order 1 only) run on the
same journeys in child processes stopped after ``--ca-timeout`` s, and leadflow's order-1
``--allocation removal`` credits are compared per channel with ChannelAttribution's.
``--only-store`` runs only this part. The default run takes about 20 minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing as mp
import os
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from queue import Empty
from typing import Any

import numpy as np
import polars as pl
from rich.console import Console
from rich.progress import Progress

from leadflow.core.attribution import PathSummary, group_paths, markov, removal_effects
from leadflow.core.funnel import StageModel, flow_and_balance

console = Console()
START = datetime(2023, 1, 1, tzinfo=UTC)
CHANNELS = ("email", "events", "webinar", "paid_search", "organic_search", "social")


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"(load {one:.1f}/{five:.1f}, {os.cpu_count()} cores)"


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def best_of(n: int, fn: Callable[[], Any]) -> tuple[Any, float]:
    """The fastest of ``n`` runs (the machine is shared: the minimum is the least noisy)."""
    runs = [timed(fn) for _ in range(n)]
    return runs[0][0], min(took for _, took in runs)


def stage_history(n_leads: int, seed: int = 1) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Leads acquired over 2023-2024 walking the shipped model, with recycle and dead end."""
    rng = np.random.default_rng(seed)
    model = StageModel.default()
    # (stage) -> (choices, probabilities); "stay" ends the walk
    walk = {
        "acquired": (["nurturing", "dead_end", "stay"], [0.7, 0.1, 0.2]),
        "nurturing": (["mql", "stay"], [0.35, 0.65]),
        "mql": (["appointment", "nurturing", "stay"], [0.5, 0.2, 0.3]),
        "appointment": (["opportunity", "recycle_a", "stay"], [0.6, 0.3, 0.1]),
        "opportunity": (["won", "recycle_b", "stay"], [0.35, 0.55, 0.1]),
        "won": (["customer"], [1.0]),
        "customer": (["expansion", "stay"], [0.2, 0.8]),
        "recycle_a": (["nurturing", "stay"], [0.4, 0.6]),
        "recycle_b": (["nurturing", "stay"], [0.3, 0.7]),
    }
    lead = np.arange(n_leads)
    t = START + timedelta(0)
    at = rng.uniform(0, 730, n_leads)  # days since START
    stage = np.full(n_leads, "acquired", dtype=object)
    schema = {
        "lead_id": pl.Int64,
        "from_stage": pl.String,
        "to_stage": pl.String,
        "day": pl.Float64,
    }
    frames = [
        pl.DataFrame(
            {
                "lead_id": lead,
                "from_stage": [None] * n_leads,
                "to_stage": stage.tolist(),
                "day": at.copy(),
            },
            schema=schema,
        )
    ]
    alive = np.ones(n_leads, dtype=bool)
    steps = 10
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("generating stage history", total=steps)
        for _ in range(steps):
            new_stage = stage.copy()
            for src, (choices, probs) in walk.items():
                idx = np.flatnonzero(alive & (stage == src))
                if len(idx):
                    new_stage[idx] = rng.choice(np.array(choices, dtype=object), len(idx), p=probs)
            moved = alive & (new_stage != "stay") & np.isin(stage, list(walk))
            moved &= new_stage != stage
            idx = np.flatnonzero(moved)
            at[idx] += rng.exponential(20, len(idx)) + 0.01
            frames.append(
                pl.DataFrame(
                    {
                        "lead_id": lead[idx],
                        "from_stage": stage[idx].tolist(),
                        "to_stage": new_stage[idx].tolist(),
                        "day": at[idx],
                    },
                    schema=schema,
                )
            )
            stage[idx] = new_stage[idx]
            alive = moved
            progress.advance(task)
    history = (
        pl.concat(frames)
        .with_columns(
            pl.col("from_stage").cast(pl.String),
            pl.col("to_stage").cast(pl.String),
            at=pl.lit(t) + pl.duration(microseconds=(pl.col("day") * 86_400e6).cast(pl.Int64)),
        )
        .drop("day")
    )
    assert set(history["to_stage"].unique()) <= set(model.stages)
    attributes = pl.DataFrame(
        {"lead_id": lead, "channel": rng.choice(np.array(CHANNELS, dtype=object), n_leads)}
    ).with_columns(pl.col("channel").cast(pl.String))
    return history, attributes


def synthetic_paths(n_paths: int, n_channels: int, seed: int = 2) -> tuple[pl.DataFrame, ...]:
    rng = np.random.default_rng(seed)
    popularity = rng.dirichlet(np.full(n_channels, 1.5))
    lift = rng.uniform(0.005, 0.06, n_channels)
    lengths = rng.geometric(0.35, n_paths).clip(1, 12)
    owner = np.repeat(np.arange(n_paths), lengths)
    chans = rng.choice(n_channels, size=len(owner), p=popularity)
    log_miss = np.bincount(owner, weights=np.log1p(-lift[chans]), minlength=n_paths)
    converted = rng.random(n_paths) < 1 - np.exp(log_miss)
    value = np.where(converted, rng.integers(100, 5000, n_paths), 0).astype(float)
    names = np.array([f"c{i:03d}" for i in range(n_channels)], dtype=object)
    pos = np.arange(len(owner)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    touches = pl.DataFrame(
        {"path_id": owner, "at": pos, "channel": names[chans]},
        schema={"path_id": pl.Int64, "at": pl.Int64, "channel": pl.String},
    ).with_columns(at=pl.lit(START) + pl.duration(hours=pl.col("at")))
    conversions = pl.DataFrame(
        {"path_id": np.arange(n_paths), "converted": converted, "value": value}
    )
    return touches, conversions


def _run_channel_attribution(frame: Any, queue: Any) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        import ChannelAttribution as ca

        result, took = timed(
            lambda: ca.markov_model(
                frame,
                "path",
                "total_conversions",
                var_value="total_conversion_value",
                var_null="total_null",
                order=1,
                sep=">",
                verbose=False,
                flg_pro=False,
            )
        )
    queue.put((result, took))


def channel_attribution_markov(paths: PathSummary, timeout: float) -> tuple[Any, float] | str:
    """ChannelAttribution's markov_model in a child process, stopped after ``timeout`` s."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            import ChannelAttribution  # noqa: F401
    except ImportError:
        return "ChannelAttribution not installed: no comparison"
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_run_channel_attribution, args=(paths.to_frame().to_pandas(), queue))
    child.start()
    try:
        return queue.get(timeout=timeout)
    except Empty:
        child.terminate()
        return f"ChannelAttribution markov_model did not finish within {timeout:.0f} s (stopped)"
    finally:
        child.join()


def _reference_flow() -> Callable[..., Any] | None:
    """The pre-issue-6 implementation, kept as the oracle of the unit tests."""
    tests = Path(__file__).resolve().parent.parent / "tests" / "unit"
    sys.path.insert(0, str(tests))
    try:
        from test_funnel import _reference_flow as reference  # type: ignore[import-not-found]
    except ImportError:
        return None
    finally:
        sys.path.remove(str(tests))
    return reference


def bench_flow(n_leads: int, before: bool, repeat: int = 3) -> None:
    console.rule(f"flow & balance: {n_leads:,} leads")
    (history, attributes), gen = timed(lambda: stage_history(n_leads))
    console.print(f"generated {history.height:,} stage changes in {gen:.1f} s")
    period = {"start": datetime(2024, 1, 1, tzinfo=UTC), "end": datetime(2025, 1, 1, tzinfo=UTC)}
    flow_and_balance(history.head(1000), **period)  # warm-up
    report, took = best_of(
        repeat, lambda: flow_and_balance(history, attributes=attributes, by="channel", **period)
    )
    console.print(f"best of {repeat} runs:")
    console.print(f"12-month flow & balance sliced by channel: {took:.2f} s {load()}")
    _, took_all = best_of(repeat, lambda: flow_and_balance(history, **period))
    console.print(f"12-month flow & balance, no slice:        {took_all:.2f} s {load()}")
    reference = _reference_flow() if before else None
    if reference is not None:
        model, start, end = StageModel.default(), period["start"], period["end"]
        (table, _), old = best_of(
            repeat, lambda: reference(history, model, start, end, end, attributes, "channel")
        )
        console.print(
            f"  before (pre-issue-6 implementation), sliced by channel: {old:.2f} s "
            f"-> {old / took:.1f}x {load()}; same figures: {table.equals(report.stages)}"
        )
        _, old = best_of(repeat, lambda: reference(history, model, start, end, end))
        console.print(f"  before, no slice: {old:.2f} s -> {old / took_all:.1f}x {load()}")
    elif before:
        console.print("  before: reference implementation not found (tests/unit/test_funnel.py)")
    acquired = report.stages.filter(pl.col("stage") == "acquired")["flow_in"].sum()
    console.print(f"  (acquired flow in 2024: {acquired:,}; rows out: {report.stages.height})")

    # the per-lead previous/next window that every figure needs: Polars vs DuckDB
    import duckdb

    def polars_window() -> int:
        same = pl.col("lead_id").shift(1) == pl.col("lead_id")
        return (
            history.sort("lead_id", "at")
            .with_columns(
                prev=pl.when(same).then(pl.col("to_stage").shift(1)),
                next_at=pl.when(same.shift(-1)).then(pl.col("at").shift(-1)),
            )
            .height
        )

    arrow = history.to_arrow()
    con = duckdb.connect()
    con.register("h", arrow)

    def duckdb_window() -> int:
        return len(
            con.sql(
                'select lead_id, to_stage, "at", lag(to_stage) over w as prev, '
                'lead("at") over w as next_at from h '
                'window w as (partition by lead_id order by "at")'
            ).to_arrow_table()
        )

    _, pt = timed(polars_window)
    _, dt = timed(duckdb_window)
    console.print(f"per-lead window (prev/next row): Polars {pt:.2f} s, DuckDB {dt:.2f} s {load()}")


def check_exact(paths: PathSummary) -> None:
    """Order 1 takes every removal effect from one inverse (Sherman-Morrison); compare with
    the other exact route, one sparse LU solve of the reduced chain per channel."""
    dense = removal_effects(paths, order=1)
    sparse, took = timed(lambda: removal_effects(paths, order=1, solver="lu"))
    rel = max(
        float(np.max(np.abs(d - s) / np.maximum(np.abs(s), 1e-300)))
        for d, s in (
            (dense.removal_conversions, sparse.removal_conversions),
            (dense.removal_value, sparse.removal_value),
        )
    )
    console.print(
        f"exactness: largest relative difference of the removal effects against one sparse LU "
        f"solve per channel ({took:.1f} s): {rel:.1e}"
    )


def bench_markov(
    n_paths: int, n_channels: int, ca_paths: int, ca_timeout: float, quick: bool = False
) -> None:
    console.rule(f"Markov order 1: {n_paths:,} paths, {n_channels} channels")
    with Progress(console=console, transient=True) as progress:
        progress.add_task("generating paths", total=None)
        (touches, conversions), gen = timed(lambda: synthetic_paths(n_paths, n_channels))
    console.print(f"generated {touches.height:,} touches in {gen:.1f} s")
    group_paths(touches.head(1000), conversions.head(1000))  # warm-up
    paths, took_group = best_of(3, lambda: group_paths(touches, conversions))
    console.print(f"grouping identical paths: {took_group:.2f} s -> {paths.n_unique:,} unique")
    result, ours = best_of(3, lambda: markov(paths, order=1))
    console.print(f"leadflow exact removal effects (grouped): {ours:.3f} s {load()}")
    console.print(f"leadflow total, grouping included: {took_group + ours:.2f} s (best of 3 each)")
    check_exact(paths)
    if quick:
        console.print("ChannelAttribution skipped (--quick)")
        return
    if ca_paths < n_paths:
        touches = touches.filter(pl.col("path_id") < ca_paths)
        conversions = conversions.filter(pl.col("path_id") < ca_paths)
        paths, group_small = best_of(3, lambda: group_paths(touches, conversions))
        _, ours_small = best_of(3, lambda: markov(paths, order=1))
        console.print(
            f"ChannelAttribution capped at the first {ca_paths:,} paths "
            f"({paths.n_unique:,} unique); leadflow on the same: {ours_small:.3f} s "
            f"(+ {group_small:.2f} s grouping)"
        )
    else:
        ours_small, group_small = ours, took_group
    theirs = channel_attribution_markov(paths, ca_timeout)
    if isinstance(theirs, str):
        console.print(theirs)
        console.print(
            f"-> ratio at least {ca_timeout / (ours_small + group_small):,.0f}x "
            f"(grouping included) {load()}"
        )
        return
    frame, ca_time = theirs
    console.print(
        f"ChannelAttribution markov_model (Monte Carlo, 1 core, paths given grouped): "
        f"{ca_time:.2f} s {load()}"
    )
    console.print(
        f"-> ratio ChannelAttribution / leadflow: {ca_time / (ours_small + group_small):,.1f}x "
        f"with our grouping included, {ca_time / ours_small:,.0f}x solve against solve"
    )
    if ca_paths < n_paths:
        console.print(
            f"-> ChannelAttribution on {ca_paths:,} paths against leadflow on all "
            f"{n_paths:,} (grouping included): {ca_time / (ours + took_group):,.0f}x"
        )
    if ca_paths >= n_paths:
        ours_tab = dict(result.credits.select("touch", "conversions").iter_rows())
        diffs = {
            r.channel_name: abs(r.total_conversions - ours_tab[r.channel_name])
            for r in frame.itertuples()
        }
        total = sum(ours_tab.values())
        big = [c for c, v in ours_tab.items() if v >= 0.05 * total]
        worst = max(diffs[c] / ours_tab[c] for c in big)
        console.print(
            f"Monte Carlo vs exact: sum of |differences| = {sum(diffs.values()) / total:.2%} of "
            f"conversions; largest relative difference among channels with >= 5% of credit: "
            f"{worst:.2%}"
        )


# --------------------------------------------------------------------------- from the store


def _ts(value: datetime) -> str:
    return value.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def build_store(path: Path, touches: pl.DataFrame, conversions: pl.DataFrame) -> None:
    """A migrated SQLite database holding the journeys: lead = path, one page event per
    touch with its channel, anonymous -> acquired at the first touch and acquired -> won one
    hour after the last touch for converted journeys (value 1: a count)."""
    import sqlite3

    from leadflow.adapters.db import migrate
    from leadflow.adapters.db.engine import create_db_engine

    engine = create_db_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    span = touches.group_by("path_id").agg(first=pl.col("at").min(), last=pl.col("at").max())
    span = span.join(conversions, on="path_id").sort("path_id")
    con.executemany(
        "INSERT INTO leads (id, email, consent_status, attributes, created_at, updated_at) "
        "VALUES (?,?,'unknown','{}',?,?)",
        (
            (pid + 1, f"j{pid}@bench.example", _ts(first), _ts(first))
            for pid, first in span.select("path_id", "first").iter_rows()
        ),
    )
    rows = []
    for pid, first, last, converted in span.select(
        "path_id", "first", "last", "converted"
    ).iter_rows():
        rows.append((pid + 1, "anonymous", "acquired", _ts(first)))
        if converted:
            rows.append((pid + 1, "acquired", "won", _ts(last + timedelta(hours=1))))
    con.executemany(
        "INSERT INTO stage_changes (lead_id, from_stage, to_stage, at, rule, model_version, "
        "recorded_at) VALUES (?,?,?,?,'bench','bench',?)",
        ((lead, a, b, at, at) for lead, a, b, at in rows),
    )
    con.executemany(
        "INSERT INTO events (message_id, type, lead_id, properties, context, page_url, channel, "
        "occurred_at, received_at) VALUES (?,'page',?,'{}','{}','https://x.example/',?,?,?)",
        (
            (f"e{i}", pid + 1, ch, _ts(at), _ts(at))
            for i, (pid, at, ch) in enumerate(
                touches.select("path_id", "at", "channel").iter_rows()
            )
        ),
    )
    con.commit()
    con.close()


def _store_run(url: str, queue: Any) -> None:
    """In a fresh process (its peak memory is its own): load the store, then every model."""
    import resource

    from leadflow.adapters.db.engine import create_db_engine
    from leadflow.core.config import load_default_model
    from leadflow.services import reports as svc

    engine = create_db_engine(url)
    t0 = time.perf_counter()
    store = svc.load_store(engine, load_default_model())
    t_load = time.perf_counter() - t0
    period = svc.Period(START - timedelta(days=1), START + timedelta(days=400))
    t0 = time.perf_counter()
    report = svc.attribution_report(store, period, model="all")
    t_all = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB
    queue.put((t_load, t_all, peak, report))


def _in_child(target: Callable[..., Any], args: tuple[Any, ...], timeout: float, how: str) -> Any:
    """``target(*args, queue)`` in a child process; its answer, or a message on timeout."""
    ctx = mp.get_context(how)
    queue = ctx.Queue()
    child = ctx.Process(target=target, args=(*args, queue))
    child.start()
    try:
        return queue.get(timeout=timeout)
    except Empty:
        child.terminate()
        return f"did not finish within {timeout:.0f} s (stopped)"
    finally:
        child.join()


def _ca_all(frame: Any, queue: Any) -> None:
    """ChannelAttribution's heuristics and markov_model orders 1-3 (1 core, seeded)."""
    import resource

    with contextlib.redirect_stdout(io.StringIO()):
        import ChannelAttribution as ca

        kw = {"var_value": "total_conversion_value", "sep": ">", "flg_pro": False}
        took: dict[str, float] = {}
        t0 = time.perf_counter()
        ca.heuristic_models(frame, "path", "total_conversions", **kw)
        took["heuristics"] = time.perf_counter() - t0
        first = None
        for order in (1, 2, 3):
            t0 = time.perf_counter()
            out = ca.markov_model(
                frame,
                "path",
                "total_conversions",
                var_null="total_null",
                order=order,
                verbose=False,
                seed=1,
                **kw,
            )
            took[f"markov{order}"] = time.perf_counter() - t0
            if order == 1:
                first = out
            queue.put(("partial", dict(took), first))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(("done", took, first, peak))


def channel_attribution_all(paths: PathSummary, timeout: float) -> Any:
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            import ChannelAttribution  # noqa: F401
    except ImportError:
        return "ChannelAttribution not installed: no comparison"
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_ca_all, args=(paths.to_frame().to_pandas(), queue))
    child.start()
    last: Any = None
    deadline = time.perf_counter() + timeout
    try:
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                raise Empty
            last = queue.get(timeout=left)
            if last[0] == "done":
                return last
    except Empty:
        child.terminate()
        return last if last is not None else f"did not finish within {timeout:.0f} s (stopped)"
    finally:
        child.join()


def _mam_all(touches: pl.DataFrame, conversions: pl.DataFrame, queue: Any) -> None:
    """mam (marketing_attribution_models): its heuristics and run_markov (order 1 only)."""
    from mam import MAM

    t0 = time.perf_counter()
    journeys = (
        touches.sort("path_id", "at")
        .group_by("path_id", maintain_order=True)
        .agg(pl.col("channel"))
        .join(conversions, on="path_id")
        .select(
            journey_id=pl.col("path_id").cast(pl.String),
            path=pl.col("channel").list.join(" > "),
            time_till_conv=pl.col("channel").list.eval(pl.lit("0")).list.join(" > "),
            converted=pl.col("converted"),
            value=pl.col("value"),
        )
    )
    with contextlib.redirect_stdout(io.StringIO()):
        model = MAM(
            journeys,
            format_type="journey",
            channels_colname="path",
            journey_with_conv_colname="converted",
            user_id_colname="journey_id",
            time_till_conv_colname="time_till_conv",
            conversion_value_colname="value",
        )
        model.run_first_click()
        model.run_last_click()
        model.run_linear()
        t_heur = time.perf_counter() - t0
        t0 = time.perf_counter()
        model.run_markov()
    queue.put((t_heur, time.perf_counter() - t0))


def bench_store_attribution(n_journeys: int, n_channels: int, timeout: float, quick: bool) -> None:
    console.rule(f"attribution from the store: {n_journeys:,} journeys, {n_channels} channels")
    touches, conversions = synthetic_paths(n_journeys, n_channels, seed=3)
    conversions = conversions.with_columns(value=pl.col("converted").cast(pl.Float64))
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "attr.db"
        with Progress(console=console, transient=True) as progress:
            progress.add_task("writing the journeys to SQLite", total=None)
            _, took = timed(lambda: build_store(db, touches, conversions))
        console.print(
            f"wrote {touches.height:,} touches of {n_journeys:,} journeys in {took:.0f} s"
        )
        out = _in_child(_store_run, (f"sqlite:///{db}",), 1800, "spawn")
    if isinstance(out, str):
        console.print(f"leadflow: {out}")
        return
    t_load, t_all, peak, report = out
    ours = t_load + t_all
    console.print(
        f"leadflow: load {t_load:.1f} s + all models (7 heuristics, Markov 1-3, Shapley) "
        f"{t_all:.1f} s = {ours:.1f} s; peak memory of that process {peak:,.0f} MiB {load()}"
    )
    for m in report["models"]:
        console.print(
            f"  {m['model']}: {m['definition']}"
            + (f" ({m['parameters']['states']:,} states)" if "states" in m["parameters"] else "")
        )
    paths = group_paths(touches, conversions)
    for order in (2, 3):
        import tracemalloc

        tracemalloc.start()
        _, t_m = timed(lambda order=order: removal_effects(paths, order))
        _, heap = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        console.print(
            f"  Markov order {order} removal effects alone: {t_m:.1f} s, "
            f"peak traced allocations {heap / 2**20:,.0f} MiB"
        )
    if quick:
        console.print("ChannelAttribution and mam skipped (--quick)")
        return
    theirs = channel_attribution_all(paths, timeout)
    if isinstance(theirs, str):
        console.print(f"ChannelAttribution: {theirs}")
    else:
        took, first = theirs[1], theirs[2]
        total = sum(took.values())
        done = "done" if theirs[0] == "done" else f"stopped at {timeout:.0f} s"
        console.print(
            f"ChannelAttribution (paths given grouped, 1 core; {done}): "
            + ", ".join(f"{k} {v:.1f} s" for k, v in took.items())
            + f" = {total:.1f} s"
            + (f", peak {theirs[3]:,.0f} MiB" if len(theirs) > 3 else "")
        )
        console.print(
            f"-> ratio ChannelAttribution / leadflow (load from the store included): "
            f"{(total if theirs[0] == 'done' else max(total, timeout)) / ours:.2f}x"
            + ("" if theirs[0] == "done" else " at least")
        )
        if first is not None:
            ours_c = {
                r["touch"]: r["conversions"]
                for r in report["credits"]
                if r["model"] == "markov_order_1"
            }
            total_conv = sum(ours_c.values())
            rel = []
            for r in first.itertuples():
                mine = ours_c.get(r.channel_name, 0.0)
                if mine >= 0.01 * total_conv:
                    rel.append(abs(r.total_conversions - mine) / mine)
            absdiff = sum(
                abs(r.total_conversions - ours_c.get(r.channel_name, 0.0))
                for r in first.itertuples()
            )
            console.print(
                f"Markov order 1, --allocation removal vs ChannelAttribution markov_model: "
                f"sum |difference| {absdiff / total_conv:.2%} of conversions; per channel "
                f"with >= 1% of credit: median {np.median(rel):.2%}, max {max(rel):.2%} "
                f"({len(rel)} channels)"
            )
    mam_out = _in_child(_mam_all, (touches, conversions), timeout, "spawn")
    if isinstance(mam_out, str):
        console.print(f"mam: {mam_out}")
    else:
        t_heur, t_markov = mam_out
        console.print(
            f"mam: first/last/linear {t_heur:.1f} s, run_markov (order 1 only) {t_markov:.1f} s "
            f"= {t_heur + t_markov:.1f} s -> ratio mam / leadflow "
            f"{(t_heur + t_markov) / ours:.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--paths", type=int, default=1_000_000)
    parser.add_argument(
        "--ca-paths-500",
        type=int,
        default=5_000,
        help="paths given to ChannelAttribution at 500 channels (it is slow there)",
    )
    parser.add_argument("--ca-timeout", type=float, default=180.0)
    parser.add_argument("--quick", action="store_true", help="skip the ChannelAttribution runs")
    parser.add_argument("--journeys", type=int, default=100_000, help="store attribution size")
    parser.add_argument(
        "--only-store", action="store_true", help="run only the attribution-from-the-store part"
    )
    parser.add_argument(
        "--no-before", action="store_true", help="skip timing the pre-issue-6 flow implementation"
    )
    args = parser.parse_args()
    t0 = time.perf_counter()
    if not args.only_store:
        bench_flow(args.leads, before=not args.no_before)
        bench_markov(args.paths, 12, args.paths, args.ca_timeout, args.quick)
        bench_markov(
            args.paths, 500, min(args.paths, args.ca_paths_500), args.ca_timeout, args.quick
        )
    for n_channels in (12, 250):
        bench_store_attribution(args.journeys, n_channels, args.ca_timeout, args.quick)
    console.rule(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
