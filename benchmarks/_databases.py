"""Shared by the benchmarks (not a benchmark itself: ``make bench`` skips ``_*.py``):
a fresh database per backend, removed afterwards."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator

from sqlalchemy import create_engine, text

PG_URL = os.environ.get("LEADFLOW_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def each_database(backends: str) -> Iterator[tuple[str, str]]:
    """``(backend, url)`` for each name in ``backends`` ("sqlite,postgresql"): a new SQLite
    file or PostgreSQL schema, dropped when the caller moves on. An unreachable PostgreSQL
    is reported and skipped."""
    for backend in backends.split(","):
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                yield "sqlite", f"sqlite:///{tmp}/bench.db"
        elif backend == "postgresql":
            schema = f"lf_bench_{uuid.uuid4().hex[:8]}"
            admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
            try:
                with admin.connect() as conn:
                    conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            except Exception as exc:
                print(f"[postgresql] skipped: cannot reach {PG_URL} ({exc.__class__.__name__})")
                continue
            try:
                yield "postgresql", f"{PG_URL}?options=-csearch_path%3D{schema}"
            finally:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
                admin.dispose()
        else:
            print(f"unknown backend {backend!r}: use sqlite and/or postgresql")
