"""Drill-down lists: how long the lead list behind a figure takes (p50 / p95 per kind of
figure) on a bulk-built SQLite world with a stage log.

The world is :mod:`benchmarks.dashboard`'s (accounts, leads, events, lead states), plus a
stage log: each lead walks 1-4 steps of the main path over the last 120 days, one in ten
of those falling out to dead end. Each kind of link the dashboard writes (a balance at a
date, a flow into a stage, a Sankey move, a conversion, a touched channel) is opened
through :func:`leadflow.services.lead_lists.list_page`, the call the list page makes.

    python benchmarks/drilldown.py [--leads 1000000] [--events 2000000] [--runs 10]
                                   [--db PATH]
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "dashboard_bench", Path(__file__).with_name("dashboard.py")
)
assert _spec is not None and _spec.loader is not None
dashboard = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dashboard)


def build_log(path: Path, n_leads: int, now: datetime) -> None:
    from leadflow.core.config import load_default_model

    model = load_default_model()
    main = list(model.spec.lifecycle.main_path)
    dead = model.spec.lifecycle.dead_end
    rng = random.Random(7)

    def rows():  # type: ignore[no-untyped-def]
        for lead in range(1, n_leads + 1):
            at = now - timedelta(days=rng.uniform(5, 120))
            stage = main[0]
            for step in range(rng.randint(1, 4)):
                target = dead if rng.random() < 0.1 else main[min(step + 1, len(main) - 1)]
                if target == stage:
                    break
                yield (lead, stage, target, dashboard.ts(at), dashboard.ts(at))
                if target == dead:
                    break
                stage, at = target, at + timedelta(days=rng.uniform(0.5, 20))

    con = sqlite3.connect(path)
    con.execute("PRAGMA synchronous=OFF")
    con.executemany(
        "INSERT INTO stage_changes (lead_id, from_stage, to_stage, at, rule, model_version, "
        "recorded_at) VALUES (?,?,?,?,'bench','bench',?)",
        rows(),
    )
    con.commit()
    con.execute("ANALYZE")
    con.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--db", type=Path, default=None)
    args = parser.parse_args()

    from leadflow.bootstrap import build_services
    from leadflow.core.lead_lists import parse
    from leadflow.services import lead_lists
    from leadflow.settings import Settings

    now = datetime(2026, 6, 1, tzinfo=UTC)
    path = args.db or Path(tempfile.mkdtemp(prefix="lf-drill-bench-")) / "bench.db"
    if not path.exists():
        t0 = time.perf_counter()
        dashboard.build(path, args.leads, args.events, now)
        build_log(path, args.leads, now)
        print(f"built {args.leads:,} leads in {time.perf_counter() - t0:.0f} s", flush=True)
    services = build_services(Settings(database_url=f"sqlite:///{path}"))
    model = services.active_model()
    start, end = (now - timedelta(days=90)).date(), (now + timedelta(days=1)).date()
    period = f"moved_after={start}&moved_before={end}"
    links = {
        "balance (stage as_of)": f"stage=nurturing&as_of={end}",
        "flow in": f"move_to=mql&{period}",
        "Sankey link": f"move_from=nurturing&move_to=mql&{period}",
        "new leads ((new) ->)": f"move_from=(new)&move_to=anonymous&{period}",
        "conversion": f"converted_to=mql&converted_after={start}&converted_before={end}",
        "touched channel": (
            f"converted_to=mql&converted_after={start}&converted_before={end}&touched_channel=email"
        ),
    }
    print(f"{'figure':<24} {'count':>8} {'p50 ms':>8} {'p95 ms':>8}")
    for name, text in links.items():
        pairs = [tuple(p.split("=", 1)) for p in text.split("&")]
        query = parse(pairs, stages=model.stages)
        times, count = [], 0
        for _ in range(args.runs):
            t0 = time.perf_counter()
            count = lead_lists.list_page(services.engine, query, model).count
            times.append((time.perf_counter() - t0) * 1000)
        p95 = statistics.quantiles(times, n=20)[-1] if len(times) > 1 else times[0]
        print(f"{name:<24} {count:>8,} {statistics.median(times):>8.0f} {p95:>8.0f}", flush=True)
    services.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
