"""Engine creation and the SQLite / PostgreSQL differences, in one place."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson
from sqlalchemy import Connection, Dialect, Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.sql.dml import Insert


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached or opened; the message is meant for a person."""


def create_db_engine(url: str, *, echo: bool = False) -> Engine:
    """Build an engine. SQLite gets WAL, foreign keys and a busy timeout on every connection."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseUnavailable(f"LEADFLOW_DATABASE_URL is not a database URL: {url!r}") from exc
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(
            parsed,
            echo=echo,
            json_serializer=dump_json,
            json_deserializer=orjson.loads,
            connect_args={"timeout": 30, "check_same_thread": False},
            pool_size=8,
            max_overflow=8,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN; take control so that
        # BEGIN IMMEDIATE can be issued for writers (no deadlock on lock upgrade), and a
        # plain BEGIN for readers (`read_only`), which must never hold the write lock: a
        # dashboard page or a report load would otherwise stop every writer until it ends.
        event.listen(engine, "begin", _sqlite_begin)
        event.listen(engine, "before_cursor_execute", _refuse_writes)
        return engine
    if parsed.get_backend_name() == "postgresql":
        engine = create_engine(
            parsed,
            echo=echo,
            json_serializer=dump_json,
            json_deserializer=orjson.loads,
            pool_size=10,
            max_overflow=10,
            pool_pre_ping=True,
        )
        event.listen(engine, "before_cursor_execute", _refuse_writes)
        return engine
    raise DatabaseUnavailable(f"unsupported database backend {parsed.get_backend_name()!r}")


READ_ONLY = "leadflow_read_only"
"""Execution option: this connection only reads (see :func:`read_only`)."""


def read_only(engine: Engine) -> Engine:
    """The same engine and pool, for work that only reads. On SQLite its transactions
    begin DEFERRED, so they take a snapshot and never wait for, or block, a writer;
    elsewhere nothing changes. A write through it is refused (:func:`_refuse_writes`)."""
    return engine.execution_options(**{READ_ONLY: True})


def _sqlite_begin(conn: Connection) -> None:
    reading = conn.get_execution_options().get(READ_ONLY, False)
    conn.exec_driver_sql("BEGIN" if reading else "BEGIN IMMEDIATE")


class ReadOnlyViolation(RuntimeError):
    """A write was sent through a :func:`read_only` engine: a programming error."""


def _refuse_writes(
    conn: Connection, _cursor: Any, statement: str, _params: Any, context: Any, _many: bool
) -> None:
    writes = context is not None and (context.isinsert or context.isupdate or context.isdelete)
    if writes and conn.get_execution_options().get(READ_ONLY, False):
        raise ReadOnlyViolation(f"write through a read-only connection: {statement[:80]}")


def dump_json(value: Any) -> str:
    """orjson for JSON columns: several times faster than json.dumps on the ingest path,
    and it encodes datetimes as ISO 8601 instead of failing."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # autocommit at the driver; SQLAlchemy issues BEGIN
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode: a committed transaction survives a killed process (the OS keeps
    # the WAL pages); only a power loss can roll back the last commits.
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def insert_ignore(engine: Engine, table: Table, *conflict_columns: str) -> Insert:
    """INSERT ... ON CONFLICT (cols) DO NOTHING, for the engine's dialect."""
    if is_postgres(engine):
        return postgresql.insert(table).on_conflict_do_nothing(
            index_elements=list(conflict_columns)
        )
    return sqlite.insert(table).on_conflict_do_nothing(index_elements=list(conflict_columns))


RowProcessor = Callable[[Any], Any] | None
_BULK_SQL: dict[tuple[str, str, tuple[str, ...], tuple[str, ...]], str] = {}
_PROCESSORS: dict[tuple[str, str, tuple[str, ...]], list[RowProcessor]] = {}


def bind_processors(dialect: Dialect, table: Table, columns: Sequence[str]) -> list[RowProcessor]:
    """SQLAlchemy's own value conversions (UTC datetimes, JSON) for ``columns``, so rows sent
    straight to the driver by :func:`bulk_insert_ignore` are stored exactly as SQLAlchemy
    stores them (SQLite datetime text format, JSONB wrapping on psycopg)."""
    key = (dialect.name, table.name, tuple(columns))
    procs = _PROCESSORS.get(key)
    if procs is None:
        procs = [table.c[name].type._cached_bind_processor(dialect) for name in columns]
        _PROCESSORS[key] = procs
    return procs


def bulk_insert_ignore(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    rows: list[tuple[Any, ...]],
    conflict: Sequence[str],
) -> int:
    """``INSERT ... ON CONFLICT (conflict) DO NOTHING`` for many rows in one driver call
    (sqlite3's prepared-statement executemany; psycopg 3's pipelined executemany), skipping
    SQLAlchemy's per-row parameter handling. ``rows`` hold values already converted with
    :func:`bind_processors`. Returns the number of rows inserted."""
    if not rows:
        return 0
    key = (conn.dialect.name, table.name, tuple(columns), tuple(conflict))
    sql = _BULK_SQL.get(key)
    if sql is None:
        mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        cols = ", ".join(f'"{c}"' for c in columns)
        marks = ", ".join([mark] * len(columns))
        keys = ", ".join(f'"{c}"' for c in conflict)
        sql = (
            f'INSERT INTO "{table.name}" ({cols}) VALUES ({marks}) ON CONFLICT ({keys}) DO NOTHING'
        )
        _BULK_SQL[key] = sql
    result = conn.exec_driver_sql(sql, rows)
    count = result.rowcount
    return len(rows) if count is None or count < 0 else int(count)


def check_connection(engine: Engine) -> None:
    """Open one connection, turning driver errors into a one-line DatabaseUnavailable."""
    try:
        with engine.connect():
            pass
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseUnavailable(
            f"cannot open database {engine.url.render_as_string(hide_password=True)}: {reason}"
        ) from exc
