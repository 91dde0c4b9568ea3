"""Backtest throughput: the vectorised path over a demo world of >= 1,000,000 events.

The event table is built straight from the demo-world simulator's numeric day records
(``leadflow.sim.stream.iter_day_records`` - the same records ``leadflow demo`` renders
into Segment messages), skipping rendering, JSON and the database: each record of a person
who identifies becomes a row of that person's lead (identity stitching puts their
anonymous and second-device visits in the lead's history too), with the event vocabulary
the renderer uses (page paths, ``content_download`` + ``asset_type``, ``email_bounce`` +
``bounce_type``, request names, ...). Identify rows carry e-mail, title, phone and the
consent *status* (ingestion reads the Segment consent object the same way); unsubscribes
set consent to denied. Base profiles carry the account's industry, size, country and
target flag. Not timed.

Then it times ``backtest.compare`` (the default model against a candidate: MQL threshold
80, pricing page 20 points, e-mail open 3, a new docs-page rule) and ``evaluate`` of one
model, prints events/s (target >= 1,000,000 events/s per model on 2 cores) - "cold" on a
fresh ``EventTable`` each run (preparation included: order, dictionaries, rule matches),
"warm" on a table already evaluated at the same ``as_of`` (the preparation kept on the
table is reused) - with the load average (the machine may be shared), and replays a random
sample of leads through the per-lead core (``lifecycle.replay`` + ``score_engagement``)
to check that stages, stage histories and scores are equal, printing the per-lead path's
events/s as the baseline.

    python benchmarks/backtest.py [--events 1000000] [--seed 1] [--sample 500]
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import time
from datetime import timedelta
from typing import Any

import numpy as np
import polars as pl
import yaml

from leadflow.core import backtest as bt
from leadflow.core import lifecycle as lc
from leadflow.core.backtest import tables as bt_tables
from leadflow.core.config import LeadModel, build_model, load_default_model
from leadflow.core.scoring import score_engagement
from leadflow.sim import WorldConfig, build_world
from leadflow.sim import catalog as C
from leadflow.sim import stream as S
from leadflow.sim.world import World

MONTHS = 12
TRACK_NAMES = {
    S.K_FORM: "form_submit",
    S.K_DOWNLOAD: "content_download",
    S.K_WEB_REG: "webinar_registered",
    S.K_WEB_ATT: "webinar_attended",
    S.K_SHOW: "event_attended",
    **S.EMAIL_EVENTS,
}


def demo_tables(world: World) -> tuple[bt.EventTable, pl.DataFrame, np.ndarray]:
    """The world's lead histories as an event table, the base profiles, and each lead's
    account's hidden intent (NaN for people without an account)."""
    parts = [day.records for day in S.iter_day_records(world)]
    rec = {c: np.concatenate([p[c] for p in parts]) for c in S.COLS}
    A = world.arr
    keep = A["identified"][rec["p"]]
    rec = {c: v[keep] for c, v in rec.items()}
    n = len(rec["t"])
    k, a, b, p = rec["k"], rec["a"], rec["b"], rec["p"]
    paths = np.array([(c.path.lower().rstrip("/") or "/") for c in C.CONTENT], dtype=object)
    assets = np.array([c.asset_type for c in C.CONTENT], dtype=object)
    requests = np.array([name for name, _ in C.REQUESTS], dtype=object)
    types = np.full(n, "track", dtype=object)
    types[k == S.K_PAGE] = "page"
    types[k == S.K_IDENTIFY] = "identify"
    types[k == S.K_GROUP] = "group"
    names = np.full(n, None, dtype=object)
    for kind, name in TRACK_NAMES.items():
        names[k == kind] = name
    req = k == S.K_REQUEST
    names[req] = requests[a[req]]
    page = k == S.K_PAGE
    path = np.full(n, None, dtype=object)
    path[page] = paths[a[page]]
    asset = np.full(n, None, dtype=object)
    dl = k == S.K_DOWNLOAD
    asset[dl] = assets[a[dl]]
    bounce = np.full(n, None, dtype=object)
    bo = k == S.K_BOUNCE
    bounce[bo] = np.where(b[bo] == 1, "hard", "soft")
    people = world.people
    ident = k == S.K_IDENTIFY
    full = ident & (rec["dev"] == 0)
    email = np.full(n, None, dtype=object)
    email[ident] = np.array(people.email, dtype=object)[p[ident]]
    title = np.full(n, None, dtype=object)
    title[full] = np.array(people.title, dtype=object)[p[full]]
    phone = np.full(n, None, dtype=object)
    phone[full] = np.array(people.phone, dtype=object)[p[full]]
    consent = np.full(n, None, dtype=object)
    consent[full] = np.where(A["consent"][p[full]], "granted", "denied")
    consent[k == S.K_UNSUB] = "denied"
    start_us = int((world.config.start - bt_tables._EPOCH) / timedelta(microseconds=1))
    frame = pl.DataFrame(
        {
            "lead_id": p.astype(np.int64),
            "message_id": pl.Series(np.arange(n)).cast(pl.String),
            "type": types.tolist(),
            "name": names.tolist(),
            "occurred_at": pl.Series(start_us + np.round(rec["t"] * 1e6).astype(np.int64)).cast(
                pl.Datetime("us", "UTC")
            ),
            "path": path.tolist(),
            "asset_type": asset.tolist(),
            "bounce_type": bounce.tolist(),
            "set_email": [e.lower() if e else None for e in email.tolist()],
            "set_title": [t.strip() or None if t else None for t in title.tolist()],
            "set_phone": phone.tolist(),
            "set_consent": consent.tolist(),
        },
        schema_overrides={c: pl.String for c in ("name", "path", "asset_type", "bounce_type")},
    )
    leads = np.flatnonzero(A["identified"])
    acct = A["account"][leads]
    accounts = world.accounts
    has = acct >= 0
    target = np.zeros(len(leads), dtype=bool)
    target[has] = [accounts[i].is_target for i in acct[has]]
    intent = np.full(len(leads), np.nan)
    intent[has] = [accounts[i].intent for i in acct[has]]
    industry = [C.INDUSTRIES[accounts[i].industry] if i >= 0 else None for i in acct]
    profiles = pl.DataFrame(
        {
            "id": leads.astype(np.int64),
            "industry": industry,
            "employee_count": [accounts[i].employees if i >= 0 else None for i in acct],
            "country": [accounts[i].country if i >= 0 else None for i in acct],
            "is_target_account": target,
        },
        schema_overrides={"industry": pl.String, "country": pl.String},
    )
    return bt.EventTable(frame), profiles, intent


def candidate_model() -> LeadModel:
    data = copy.deepcopy(
        load_default_model().spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    )
    data["version"] = "candidate"
    for rule in data["engagement"]["rules"]:
        if rule["id"] == "pricing_page":
            rule["points"] = 20
        if rule["id"] == "email_open":
            rule["points"] = 3
    data["engagement"]["rules"].append(
        {"id": "docs_page", "match": {"type": "page", "path": "/docs/*"}, "points": 8}
    )
    handoff = next(k for k, st in data["stages"].items() if st.get("role") == "handoff")
    for cond in data["stages"][handoff]["enter_when"]:
        if "score" in cond:
            cond["score"] = 80
    return build_model(yaml.safe_load(yaml.safe_dump(data, allow_unicode=True)))


def check_sample(
    model: LeadModel, table: bt.EventTable, profiles: pl.DataFrame, result: bt.Backtest,
    sample: list[int],
) -> tuple[int, int, float, int]:  # fmt: skip
    """Replay the sampled leads with the per-lead core; (leads equal, events, seconds,
    fallback leads in the sample)."""
    sub = table.frame.filter(pl.col("lead_id").is_in(sample))
    events: dict[int, list[Any]] = {}
    for ev in bt_tables._rebuild_events(sub, ["asset_type", "bounce_type"]):
        events.setdefault(ev.lead_id or 0, []).append(ev)
    base = {r["id"]: bt_tables._profile_of(r) for r in profiles.iter_rows(named=True)}
    leads = {r["lead_id"]: r for r in result.leads.iter_rows(named=True)}
    history: dict[int, list[tuple[Any, ...]]] = {}
    for r in result.changes.filter(pl.col("lead_id").is_in(sample)).iter_rows(named=True):
        history.setdefault(r["lead_id"], []).append(
            (r["from_stage"], r["to_stage"], r["at"], r["rule"], r["cause"])
        )
    equal = 0
    n_events = sum(len(v) for v in events.values())
    started = time.perf_counter()
    states = {
        lead: (
            lc.replay(base[lead], events[lead], model, as_of=result.as_of),
            score_engagement(events[lead], result.as_of, model).total,
        )
        for lead in sample
    }
    seconds = time.perf_counter() - started
    for lead, (state, score) in states.items():
        got = leads[lead]
        same = (
            got["stage"] == state.stage
            and abs(got["score"] - score) <= 1e-9 + 1e-12
            and history.get(lead, [])
            == [(c.from_stage, c.to_stage, c.at, c.rule, c.cause) for c in state.history]
        )
        if not same:
            print(f"  MISMATCH lead {lead}: {got['stage']} vs {state.stage}")
        equal += same
    fallback = sum(bool(leads[lead]["fallback"]) for lead in sample)
    return equal, n_events, seconds, fallback


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sample", type=int, default=500)
    args = parser.parse_args()

    probe = WorldConfig(leads=1000, months=MONTHS, seed=args.seed)
    probe_events = len(demo_tables(build_world(probe))[0])
    leads = max(1, round(args.events / (probe_events / probe.leads) * 1.1))
    started = time.perf_counter()
    world = build_world(WorldConfig(leads=leads, months=MONTHS, seed=args.seed))
    table, profiles, _ = demo_tables(world)
    print(
        f"demo world: {leads:,} leads, {MONTHS} months, {len(table):,} lead events "
        f"(built from simulator records in {time.perf_counter() - started:.1f} s, not timed)"
    )
    as_of = world.config.until
    current, candidate = load_default_model(), candidate_model()

    bt.evaluate(current, bt.EventTable(table.frame), profiles, as_of=as_of)  # thread pools
    n = len(table)

    def best_of(run: Any, fresh: bool) -> tuple[float, Any]:
        times, result = [], None
        for _ in range(3):
            target = bt.EventTable(table.frame) if fresh else table
            started = time.perf_counter()
            result = run(target)
            times.append(time.perf_counter() - started)
        return min(times), result

    def one_model(t: bt.EventTable) -> bt.Backtest:
        return bt.evaluate(current, t, profiles, as_of=as_of)

    def two_models(t: bt.EventTable) -> bt.BacktestReport:
        return bt.compare(current, candidate, t, profiles, as_of=as_of)

    print(f"load average before timing: {load()}")
    cold, one = best_of(one_model, fresh=True)
    one_model(table)
    warm, _ = best_of(one_model, fresh=False)
    print(
        f"evaluate (default model): {n:,} events in {cold:.2f} s = {n / cold:,.0f} events/s "
        f"cold, {warm:.2f} s = {n / warm:,.0f} events/s warm (best of 3)"
    )
    cold_cmp, report = best_of(two_models, fresh=True)
    warm_cmp, _ = best_of(two_models, fresh=False)
    print(
        f"compare (default vs candidate, both models): {n:,} events in {cold_cmp:.2f} s "
        f"= {n / cold_cmp:,.0f} events/s of history ({2 * n / cold_cmp:,.0f} "
        f"event-evaluations/s) cold, {warm_cmp:.2f} s = {n / warm_cmp:,.0f} events/s of "
        f"history ({2 * n / warm_cmp:,.0f} event-evaluations/s) warm"
    )
    print(f"load average after timing: {load()}")
    print(f"fallback leads (default model): {one.fallback_leads:,} {dict(one.fallback_reasons)}")
    for line in report.lines()[:8]:
        print("  " + line)

    rng = random.Random(args.seed)
    ids = one.leads["lead_id"].to_list()
    sample = rng.sample(ids, min(args.sample, len(ids)))
    fallback_ids = one.leads.filter(pl.col("fallback"))["lead_id"].to_list()
    sample += [i for i in fallback_ids[:50] if i not in sample]
    equal, n_events, seconds, in_fallback = check_sample(current, table, profiles, one, sample)
    print(
        f"equality with the per-lead core: {equal}/{len(sample)} sampled leads equal "
        f"(stage, stage history with times and rules, score to 1e-9; "
        f"{in_fallback} of them took the fallback)"
    )
    per_lead_rate = n_events / seconds
    print(
        f"per-lead core (replay + score_engagement): {n_events:,} events in {seconds:.2f} s "
        f"= {per_lead_rate:,.0f} events/s; vectorised per model evaluation: evaluate "
        f"{n / cold / per_lead_rate:,.0f}x cold ({n / warm / per_lead_rate:,.0f}x warm), "
        f"compare {2 * n / cold_cmp / per_lead_rate:,.0f}x cold "
        f"({2 * n / warm_cmp / per_lead_rate:,.0f}x warm)"
    )
    print(f"load average at the end: {load()}")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" ({os.cpu_count()} CPUs)"


if __name__ == "__main__":
    main()
