"""Group commit: concurrent requests share one transaction (the tracking API)."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from leadflow.core.tracking import TrackedMessage
from leadflow.services.ingest.store import AfterIngest, IngestResult, Part, ingest_parts

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Pending:
    part: Part
    future: Future[IngestResult]


class IngestQueue:
    """Group commit for concurrent callers (the tracking API).

    Callers hand their messages to one writer thread and wait on a future. While a
    transaction commits, new requests queue up; the writer then stores all of them in the
    next transaction (up to ``max_messages``) and resolves every future after the commit,
    so an acknowledgement still means "committed". One writer per process also means no
    two threads of this process fight over SQLite's write lock. If a shared transaction
    fails, each request is retried alone, so one bad request never fails another.

    The thread starts on the first call and ends after ``idle_seconds`` without work.
    ``after`` is read at every commit (hooks may be added after the queue is built).
    """

    def __init__(
        self,
        engine: Engine,
        after: Sequence[AfterIngest] = (),
        *,
        max_messages: int = 2000,
        idle_seconds: float = 2.0,
    ) -> None:
        self.engine = engine
        self.after = after
        self.max_messages = max_messages
        self.idle_seconds = idle_seconds
        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running = False

    def submit(
        self, messages: Sequence[TrackedMessage], received_at: datetime
    ) -> Future[IngestResult]:
        future: Future[IngestResult] = Future()
        with self._lock:
            self._queue.put(_Pending((messages, received_at), future))
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="leadflow-ingest", daemon=True).start()
        return future

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self.idle_seconds)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._running = False
                        return
                continue
            group = [first]
            size = len(first.part[0])
            while size < self.max_messages:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                group.append(item)
                size += len(item.part[0])
            self._commit(group)

    def _commit(self, group: list[_Pending]) -> None:
        try:
            results = ingest_parts(self.engine, [p.part for p in group], after=self.after)
        except Exception as exc:
            if len(group) == 1:
                group[0].future.set_exception(exc)
                return
            log.info("ingest: shared transaction failed (%s); retrying requests one by one", exc)
            for pending in group:
                self._commit([pending])
            return
        for pending, result in zip(group, results, strict=True):
            pending.future.set_result(result)
