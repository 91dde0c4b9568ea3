"""Engine creation and the SQLite / PostgreSQL differences, in one place."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Engine, Table, create_engine, event
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
            json_serializer=_json_dumps,
            json_deserializer=orjson.loads,
            connect_args={"timeout": 30, "check_same_thread": False},
            pool_size=8,
            max_overflow=8,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN; take control so that
        # BEGIN IMMEDIATE can be issued for writers (no deadlock on lock upgrade).
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_engine(
            parsed,
            echo=echo,
            json_serializer=_json_dumps,
            json_deserializer=orjson.loads,
            pool_size=10,
            max_overflow=10,
            pool_pre_ping=True,
        )
    raise DatabaseUnavailable(f"unsupported database backend {parsed.get_backend_name()!r}")


def _json_dumps(value: Any) -> str:
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
