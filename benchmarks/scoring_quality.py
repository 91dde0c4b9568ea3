"""Does scoring find the accounts that really intend to buy? The lift on a demo world.

The demo world gives every account a hidden "true intent" (0..1, ``demo_true_intent`` in
the ``group`` traits) that drives its people's behaviour; scoring never sees it. This
script builds a world with :mod:`leadflow.sim`, runs every lead's history through the
default model with the vectorised backtest (no database; the event table is built as in
``benchmarks/backtest.py``), and prints the share of MQLs whose account has high intent
next to the share among all leads, and their ratio (the lift). High intent is shown two
ways: ``intent >= 0.6`` (the headline figure) and the top quartile of the leads'
accounts' intent. Leads without an account (students, retirees, junk sign-ups) count as
not high-intent.

    python benchmarks/scoring_quality.py [--leads 20000] [--seed 1]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
import polars as pl

from leadflow.core import backtest as bt
from leadflow.core.config import load_default_model
from leadflow.sim import WorldConfig, build_world

HIGH = 0.6


def _demo_tables():  # type: ignore[no-untyped-def]
    path = Path(__file__).with_name("backtest.py")
    spec = importlib.util.spec_from_file_location("_backtest_bench", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.demo_tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leads", type=int, default=20_000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    world = build_world(WorldConfig(leads=args.leads, months=args.months, seed=args.seed))
    table, profiles, intent = _demo_tables()(world)
    model = load_default_model()
    result = bt.evaluate(model, table, profiles, as_of=world.config.until)
    ids = profiles["id"].to_numpy()
    intent_of = dict(zip(ids.tolist(), intent.tolist(), strict=True))
    leads = result.leads.with_columns(
        pl.col("lead_id").replace_strict(intent_of, default=None).fill_nan(None).alias("intent")
    )
    mql = leads.filter(pl.col("mql_at").is_not_null())
    known = intent[~np.isnan(intent)]
    quartile = float(np.quantile(known, 0.75))
    print(
        f"demo world: {args.leads:,} leads ({len(result.leads):,} with events), "
        f"{len(table):,} events, {args.months} months, seed {args.seed}; "
        f"{mql.height:,} MQLs ({mql.height / leads.height:.1%}); "
        f"{result.fallback_leads} leads via the per-lead core"
    )
    for label, cut in (
        (f"intent >= {HIGH}", HIGH),
        (f"top quartile (>= {quartile:.3f})", quartile),
    ):
        high = (pl.col("intent") >= cut).fill_null(False)
        share_all = leads.select(high.mean()).item()
        share_mql = mql.select(high.mean()).item() if mql.height else float("nan")
        print(
            f"high intent = {label}: {share_mql:.1%} of MQLs vs {share_all:.1%} of all leads"
            f" -> lift {share_mql / share_all:.2f}"
        )
    # what made the MQLs: the rule of the first change into MQL or beyond
    qualified = [s for s, r in model.stage_order.items() if r >= model.rank("mql")]
    first = (
        result.changes.filter(pl.col("to_stage").is_in(qualified))
        .sort("at")
        .group_by("lead_id", maintain_order=True)
        .first()
        .join(leads.select("lead_id", "intent"), on="lead_id")
    )
    print("MQL by rule (leads, mean hidden intent):")
    for row in (
        first.group_by("rule")
        .agg(pl.len().alias("n"), pl.col("intent").mean().alias("mean_intent"))
        .sort("n", descending=True)
        .iter_rows(named=True)
    ):
        mean = row["mean_intent"]
        print(f"  {row['rule']}: {row['n']:,} (intent {mean:.2f})" if mean is not None else
              f"  {row['rule']}: {row['n']:,}")  # fmt: skip
    by_bucket = (
        leads.with_columns((pl.col("intent").fill_null(0) * 5).floor().clip(0, 4).alias("bucket"))
        .group_by("bucket")
        .agg(pl.len().alias("leads"), pl.col("mql_at").is_not_null().mean().alias("mql_rate"))
    )
    print("MQL rate by hidden intent (0.2-wide buckets; no account counts as 0):")
    for row in by_bucket.sort("bucket").iter_rows(named=True):
        lo = row["bucket"] / 5
        print(f"  {lo:.1f}-{lo + 0.2:.1f}: {row['leads']:,} leads, {row['mql_rate']:.1%} MQL")


if __name__ == "__main__":
    main()
