"""SQLite write turns: the ingest writers of several processes take turns on one
database file (an advisory ``flock``), so the write lock never sits idle between them."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: writers poll SQLite's lock
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

# Seconds a writer waits for its turn before writing without it (engines built by
# ``build_services`` carry LEADFLOW_SQLITE_TURN_TIMEOUT as this execution option).
TURN_TIMEOUT = 5.0
TURN_TIMEOUT_OPTION = "leadflow_turn_timeout"
_TURNS: dict[str, _Turn | None] = {}
_TURNS_LOCK = threading.Lock()
_TURN_HELD = threading.local()


class _Turn:
    """The turn file of one SQLite database (``<database>.ingest.lock``), shared by the
    threads of this process.

    ``flock`` has no timeout, so a writer that finds the file locked by another process
    asks this database's helper thread to wait in a blocking ``flock`` and waits for it at
    most the timeout: when the helper gets the lock while the writer still waits, the lock
    passes to the writer at once (no polling, no busy-handler sleeps); when the writer has
    given up, the helper lets go of it. While the helper has waited longer than the timeout
    (the turn is stuck: a process holds the file and does not write), writers go straight
    on without the turn until it frees. The helper thread is started on the first wait and
    lives as long as the process."""

    def __init__(self, path: str, fd: int) -> None:
        self.path, self.fd = path, fd
        self.threads = threading.Lock()  # flock does not exclude threads sharing one file
        self._state = threading.Lock()
        self._request = threading.Event()
        self._granted = threading.Event()
        self.idle = threading.Event()  # set while no helper wait is in progress
        self.idle.set()
        self._wanted = False
        self._waiting_since: float | None = None
        self._warned = False
        self._helper: threading.Thread | None = None

    def acquire(self, timeout: float) -> bool:
        """True with the turn held; False after ``timeout`` seconds without it."""
        start = time.monotonic()
        if not self.threads.acquire(timeout=max(timeout, 0.0)):
            return False
        try:
            held = self._take_file(start, timeout)
        except BaseException:
            self.threads.release()
            raise
        if not held:
            self.threads.release()
            if not self._warned:
                self._warned = True
                log.warning(
                    "ingest: no write turn on %s within %.1f s (another process holds the "
                    "file); writing without it, SQLite's own lock still keeps writes safe",
                    self.path,
                    timeout,
                )
        return held

    def release(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        self.threads.release()

    def _take_file(self, start: float, timeout: float) -> bool:
        with self._state:
            if self._waiting_since is None:
                try:
                    fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return True
                except BlockingIOError:
                    pass
                self._waiting_since = time.monotonic()
                self._granted.clear()
                self.idle.clear()
                if self._helper is None:
                    self._helper = threading.Thread(
                        target=self._help, name="leadflow-ingest-turn", daemon=True
                    )
                    self._helper.start()
                self._request.set()
            deadline = min(start, self._waiting_since) + timeout
            self._wanted = True
        self._granted.wait(max(0.0, deadline - time.monotonic()))
        with self._state:
            self._wanted = False
            if self._granted.is_set():
                self._granted.clear()
                return True
            return False

    def _help(self) -> None:
        while True:
            self._request.wait()
            self._request.clear()
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            with self._state:
                self._waiting_since = None
                self._warned = False
                if self._wanted:
                    self._granted.set()  # the waiting writer owns the lock from here on
                else:
                    fcntl.flock(self.fd, fcntl.LOCK_UN)  # nobody waits any more
                self.idle.set()


@contextmanager
def _write_turn(engine: Engine) -> Iterator[None]:
    """Take turns with the other processes' ingest writers on one SQLite file.

    SQLite allows one writer; a writer that finds the database locked polls it, sleeping
    1, 2, 5, 10, 15... ms between tries, so with several processes the write lock sits idle
    most of the time between their transactions. An advisory ``flock`` on the database's
    turn file (:func:`_turn_for`) wakes the next writer as soon as the previous one
    committed. The turn is an optimisation only: SQLite's own lock still guarantees
    correctness, so a writer that does not get the turn within the timeout
    (:data:`TURN_TIMEOUT`, or the engine's ``leadflow_turn_timeout`` execution option)
    logs it and writes without it, and when the file cannot be opened (in-memory
    database, read-only directory) writers simply go without.
    PostgreSQL has row locks and needs no turns."""
    turn = _turn_for(engine)
    held: set[str] = getattr(_TURN_HELD, "paths", None) or set()
    if turn is None or turn.path in held:
        yield  # no file, or this thread already has the turn (a nested call)
        return
    timeout = float(engine.get_execution_options().get(TURN_TIMEOUT_OPTION, TURN_TIMEOUT))
    if not turn.acquire(timeout):
        yield
        return
    _TURN_HELD.paths = held | {turn.path}
    try:
        yield
    finally:
        _TURN_HELD.paths = held
        turn.release()


def _turn_for(engine: Engine) -> _Turn | None:
    """The turn of ``engine``'s SQLite database, or None to go without: the file
    ``<database>.ingest.lock`` beside the database (symbolic links resolved, so every
    process that opens the database by any path meets the same file). Another database,
    or any other local program, has a file of its own and cannot hold this one's turn."""
    if fcntl is None or engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    try:
        path = os.path.realpath(database) + ".ingest.lock"
    except (OSError, ValueError):
        return None
    with _TURNS_LOCK:
        if path not in _TURNS:
            if not os.path.exists(path[: -len(".ingest.lock")]):
                return None  # no database yet: nothing to take turns on
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                log.info("ingest: no turn file %s (%s); writers go without", path, exc)
                _TURNS[path] = None
            else:
                _TURNS[path] = _Turn(path, fd)
        return _TURNS[path]
