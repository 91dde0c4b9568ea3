"""Import a generated Salesforce opportunities export of N deals and print rows/second for
the first run and a re-run, per backend.

    .venv/bin/python benchmarks/backfill.py [N] [sqlite,postgresql]

Defaults: 20,000 deals (about 3 per person, over two years) on both backends.
"""

from __future__ import annotations

import csv
import random
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _databases import each_database

from leadflow.adapters.db import migrate
from leadflow.bootstrap import build_services
from leadflow.services.backfill import import_backfill
from leadflow.settings import Settings

HEADERS = ["Id", "AccountName", "ContactEmail", "Amount", "CurrencyIsoCode", "StageName"]
HEADERS += ["CreatedDate", "CloseDate", "LossReason", "OwnerId", "Region__c"]
STAGES = ["Closed Won", "Closed Lost", "Closed Lost", "Prospecting"]


def write_file(path: Path, n: int, seed: int = 14) -> None:
    rnd = random.Random(seed)
    start = datetime(2024, 1, 1, 8, tzinfo=UTC)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(HEADERS)
        for i in range(n):
            person = rnd.randrange(max(1, n // 3))
            opened = start + timedelta(days=rnd.randrange(660), minutes=rnd.randrange(540))
            stage = rnd.choice(STAGES)
            w.writerow(
                [
                    f"006{i:012d}AAA",
                    f"Account {person % 1000}",
                    f"buyer{person}@acct{person % 1000}.example",
                    f"{rnd.randrange(1_000, 250_000):,}.00",
                    "USD",
                    stage,
                    opened.strftime("%Y-%m-%dT%H:%M:%S.000+0000"),
                    (opened + timedelta(days=rnd.randrange(1, 120))).date().isoformat(),
                    "Price" if stage == "Closed Lost" else "",
                    f"005{person % 9:012d}AAA",
                    rnd.choice(["EMEA", "APAC", "Select"]),
                ]
            )


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    backends = sys.argv[2] if len(sys.argv) > 2 else "sqlite,postgresql"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "opportunities.csv"
        write_file(path, n)
        for backend, url in each_database(backends):
            services = build_services(
                Settings(database_url=url, mail_dir=f"{tmp}/outbox", warm_reports=False)
            )
            migrate.upgrade(services.engine)
            now = datetime.now(UTC)
            for label in ("first run", "re-run"):
                began = time.perf_counter()
                summary = import_backfill(
                    services.engine,
                    "opportunities",
                    path,
                    now=now,
                    model_for=lambda conn, now=now, models=services.models: models.active(
                        conn, now
                    ),
                )
                elapsed = time.perf_counter() - began
                print(
                    f"[{backend}] {label}: {n} deals in {elapsed:.1f}s = {n / elapsed:,.0f} "
                    f"rows/s; created={summary.created} unchanged={summary.unchanged} "
                    f"leads={summary.leads_created} stage actions={summary.stage_actions}"
                )
            services.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {peak:.0f} MB")


if __name__ == "__main__":
    main()
