"""Demo world throughput: generation alone, and loading through ingestion into SQLite.

Prints messages/s for the generator (the baseline) and for the full load (parse +
ingest + commit), and their ratio. The target is a world of ~1,000,000 events; if loading
it would take longer than the budget (default 6 minutes, ``--budget``), a smaller world is
loaded and the time for 1,000,000 events is extrapolated — clearly labelled as such.

    python benchmarks/demo_world.py [--events 1000000] [--budget 360] [--seed 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from leadflow.adapters.db import migrate
from leadflow.adapters.db.engine import create_db_engine
from leadflow.sim import WorldConfig, build_world, iter_messages
from leadflow.sim.loader import load_world

MONTHS = 12


def generate(config: WorldConfig) -> tuple[int, float]:
    started = time.perf_counter()
    world = build_world(config)
    count = sum(1 for _ in iter_messages(world))
    return count, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--budget", type=float, default=360.0, help="seconds for the load")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    # Calibrate events per lead on a small world, then size the target world.
    probe = WorldConfig(leads=2000, months=MONTHS, seed=args.seed)
    probe_events, _ = generate(probe)
    per_lead = probe_events / probe.leads
    target = WorldConfig(leads=max(1, round(args.events / per_lead)), months=MONTHS, seed=args.seed)
    gen_events, gen_seconds = generate(target)
    gen_rate = gen_events / gen_seconds
    print(f"world: {target.leads:,} leads, {MONTHS} months, {per_lead:.1f} events per lead")
    print(f"generation only: {gen_events:,} messages in {gen_seconds:.1f} s = {gen_rate:,.0f}/s")

    # Measure the load rate on a slice first, to stay inside the budget.
    with tempfile.TemporaryDirectory() as tmp:
        probe_db = create_db_engine(f"sqlite:///{Path(tmp) / 'probe.db'}")
        migrate.upgrade(probe_db)
        small = WorldConfig(leads=1000, months=MONTHS, seed=args.seed)
        report = load_world(probe_db, build_world(small))
        probe_db.dispose()
        probe_rate = report.messages / report.seconds
        print(f"probe load: {report.messages:,} messages in {report.seconds:.1f} s "
              f"= {probe_rate:,.0f}/s")  # fmt: skip
        expected = gen_events / probe_rate
        if expected <= args.budget:
            config, label = target, "measured"
        else:
            leads = max(1000, int(target.leads * args.budget / expected * 0.6))
            config, label = WorldConfig(leads=leads, months=MONTHS, seed=args.seed), "scaled"
        engine = create_db_engine(f"sqlite:///{Path(tmp) / 'bench.db'}")
        migrate.upgrade(engine)
        report = load_world(engine, build_world(config))
        engine.dispose()
    load_rate = report.messages / report.seconds
    print(f"load ({label}): {report.messages:,} messages, {config.leads:,} leads in "
          f"{report.seconds:.1f} s = {load_rate:,.0f} events/s "
          f"({report.events:,} events, {report.leads:,} leads, {report.accounts:,} accounts "
          "stored)")  # fmt: skip
    if label == "scaled":
        minutes = gen_events / load_rate / 60
        print(f"EXTRAPOLATED (not measured): {gen_events:,} events would load in about "
              f"{minutes:.1f} minutes at {load_rate:,.0f} events/s")  # fmt: skip
    print(f"ratio load / generation: {load_rate / gen_rate:.3f} "
          f"(generation is {gen_rate / load_rate:.0f}x faster than loading)")  # fmt: skip


if __name__ == "__main__":
    main()
