"""Composition root: every entrypoint (server, CLI, worker, tests) builds from here.

Nothing is built at import time; callers pass a :class:`~leadflow.settings.Settings`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Engine

from leadflow.adapters.db.engine import create_db_engine, read_only
from leadflow.core.config import LeadModel
from leadflow.services.ingest import TURN_TIMEOUT_OPTION, AfterIngest
from leadflow.services.keys import KeyChecker
from leadflow.services.lifecycle import ModelCache, StateCache
from leadflow.services.pipeline import Pipeline
from leadflow.services.signing import SigningKeyStore
from leadflow.settings import Settings


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Services:
    """What the adapters need, built once per process."""

    settings: Settings
    engine: Engine
    keys: KeyChecker
    # Signs email links, form tokens and cookies (LEADFLOW_SECRET_KEY or the stored key).
    signing: SigningKeyStore
    models: ModelCache = field(default_factory=ModelCache)
    states: StateCache = field(default_factory=StateCache)
    clock: Callable[[], datetime] = utc_now
    after_ingest: list[AfterIngest] = field(default_factory=list)

    @property
    def reader(self) -> Engine:
        """The engine for work that only reads (dashboard pages, reports, key checks): on
        SQLite it never takes or waits for the write lock."""
        return read_only(self.engine)

    def active_model(self) -> LeadModel:
        """The active model, read without a write transaction (installed on first use)."""
        with self.reader.connect() as conn:
            model = self.models.installed(conn)
        if model is None:
            with self.engine.begin() as conn:
                model = self.models.active(conn, self.clock())
        return model

    def close(self) -> None:
        self.engine.dispose()


def build_services(settings: Settings, *, clock: Callable[[], datetime] = utc_now) -> Services:
    engine = create_db_engine(settings.database_url, echo=settings.db_echo)
    # How long SQLite ingest writers wait for their turn (services.ingest._write_turn).
    engine.update_execution_options(**{TURN_TIMEOUT_OPTION: settings.sqlite_turn_timeout})
    models = ModelCache()
    states = StateCache()
    return Services(
        settings=settings,
        engine=engine,
        keys=KeyChecker(engine),
        signing=SigningKeyStore(engine, settings.secret_key),
        models=models,
        states=states,
        clock=clock,
        # Scores and stages are updated in the same transaction as the events.
        after_ingest=[Pipeline(models, states)],
    )
