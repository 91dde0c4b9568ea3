"""SQLite writer turns (issue 12, item 8): one lock file beside each database, and a
bounded wait, so neither another database nor a process holding the file can stall
ingestion. PostgreSQL takes no turns (row locks); its runs check that nothing changes."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, func, select

from leadflow.adapters.db.engine import create_db_engine
from leadflow.adapters.db.tables import events
from leadflow.bootstrap import build_services
from leadflow.core.tracking import TrackedMessage, parse_message
from leadflow.entrypoints.api import build_app
from leadflow.services import ingest as ingest_service
from leadflow.services import keys as key_service
from leadflow.services.ingest import ingest
from leadflow.settings import Settings

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
WARNING = "no write turn"
HOLDER = (
    "import fcntl, sys\n"
    "f = open(sys.argv[1], 'a')\n"
    "fcntl.flock(f, fcntl.LOCK_EX)\n"
    "print('held', flush=True)\n"
    "sys.stdin.read()\n"
)


@contextmanager
def _held_by_another_process(path: str) -> Iterator[None]:
    """Another local process holds ``path``'s flock until the block ends."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        assert proc.stdout.readline().strip() == "held"
        yield
    finally:
        proc.stdin.close()
        proc.wait()


def _message(n: int) -> TrackedMessage:
    return parse_message(
        {
            "type": "track",
            "event": "page_viewed",
            "anonymousId": f"anon-{n}",
            "messageId": f"turn-{n}",
            "timestamp": T0.isoformat(),
        },
        received_at=T0,
    )


def _stored(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(events)).scalar_one())


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if WARNING in r.getMessage()]


def test_each_sqlite_database_has_its_own_turn_file_beside_it(
    backend, db_url, tmp_path, request, caplog
):
    caplog.set_level(logging.INFO, logger="leadflow.services.ingest")
    engine = create_db_engine(db_url)
    try:
        if backend == "postgresql":
            assert ingest_service._turn_for(engine) is None
            ingest(engine, [_message(1)], T0)
            assert _stored(engine) == 1
            return
        template: Path = request.getfixturevalue("sqlite_template")
        other_path = tmp_path / "other" / "leadflow.db"
        other_path.parent.mkdir()
        shutil.copyfile(template, other_path)
        other = create_db_engine(f"sqlite:///{other_path}")
        mine, theirs = ingest_service._turn_for(engine), ingest_service._turn_for(other)
        assert mine is not None and theirs is not None
        assert mine.path == os.path.realpath(engine.url.database) + ".ingest.lock"
        assert theirs.path == os.path.realpath(other_path) + ".ingest.lock"
        # Another database's turn, held by another process, does not touch this one:
        # with a long timeout, a shared turn would show as a warning (or a long wait).
        engine.update_execution_options(leadflow_turn_timeout=120)
        with _held_by_another_process(theirs.path):
            ingest(engine, [_message(1)], T0)
            ingest(engine, [_message(2)], T0)
        assert _stored(engine) == 2 and _stored(other) == 0
        assert _warnings(caplog) == []
        assert Path(mine.path).exists()
        other.dispose()
        # In-memory SQLite has no file to take turns on.
        for url in ("sqlite://", "sqlite:///:memory:"):
            assert ingest_service._turn_for(create_engine(url)) is None
    finally:
        engine.dispose()


def test_a_turn_held_by_another_process_does_not_stall_ingestion(backend, db_url, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="leadflow.services.ingest")
    services = build_services(
        Settings(
            database_url=db_url,
            mail_dir=str(tmp_path / "outbox"),
            warm_reports=False,
            sqlite_turn_timeout=0.2,
        )
    )
    try:
        key = key_service.create_key(services.engine, kind="write", name="t", now=T0).token
        turn = ingest_service._turn_for(services.engine)
        if backend == "postgresql":
            assert turn is None
        with (
            _held_by_another_process(turn.path) if turn is not None else _nothing(),
            TestClient(build_app(services)) as client,
        ):
            for n in range(3):  # the first waits out the timeout, the next go straight on
                r = client.post(
                    "/v1/track",
                    json={
                        "anonymousId": f"anon-{n}",
                        "messageId": f"api-{n}",
                        "event": "page_viewed",
                        "timestamp": T0.isoformat(),
                    },
                    auth=(key, ""),
                )
                assert r.status_code == 200, r.text
            assert _stored(services.engine) == 3
        if turn is None:
            assert _warnings(caplog) == []
            return
        # One warning for the stuck turn, naming the file, not one per transaction.
        (warning,) = _warnings(caplog)
        assert turn.path in warning
        # Once the holder has gone, the helper thread lets go and turns work again.
        turn.idle.wait()
        assert turn.acquire(0.0)
        turn.release()
        ingest(services.engine, [_message(9)], T0)
        assert _stored(services.engine) == 4 and len(_warnings(caplog)) == 1
    finally:
        services.close()


@contextmanager
def _nothing() -> Iterator[None]:
    yield
