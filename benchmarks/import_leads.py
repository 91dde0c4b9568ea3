"""Import a generated CSV of N leads and print rows/second for the first run and a re-run.

    .venv/bin/python benchmarks/import_leads.py [N] [DATABASE_URL]

Defaults: 100,000 rows into a fresh SQLite file in a temporary directory. Also prints the
peak resident memory, which must stay flat as N grows (batches of 1,000 rows).
"""

from __future__ import annotations

import csv
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from leadflow.adapters.db import migrate
from leadflow.adapters.db.engine import create_db_engine
from leadflow.services.importer import import_leads


def write_file(path: Path, n: int) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["Email", "First Name", "Last Name", "Job Title", "Company Name", "Industry"])
        for i in range(n):
            w.writerow(
                [
                    f"person{i}@company{i % 5000}.example",
                    f"First{i}",
                    f"Last{i}",
                    "Engineer",
                    f"Company {i % 5000}",
                    "Software",
                ]
            )


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with tempfile.TemporaryDirectory() as tmp:
        url = sys.argv[2] if len(sys.argv) > 2 else f"sqlite:///{tmp}/bench.db"
        engine = create_db_engine(url)
        migrate.upgrade(engine)
        path = Path(tmp) / "leads.csv"
        write_file(path, n)
        size_mb = path.stat().st_size / 1e6
        for label in ("first run", "re-run"):
            start = time.perf_counter()
            summary = import_leads(engine, path, now=datetime.now(UTC))
            elapsed = time.perf_counter() - start
            print(
                f"{label}: {n} rows ({size_mb:.1f} MB) in {elapsed:.1f}s = "
                f"{n / elapsed:,.0f} rows/s; created={summary.created} "
                f"unchanged={summary.unchanged} accounts={summary.accounts_created}"
            )
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS: {peak:.0f} MB")
        engine.dispose()


if __name__ == "__main__":
    main()
