"""Typed settings, read from the environment (prefix ``LEADFLOW_``) or passed explicitly.

Nothing here is instantiated at import time: entrypoints call ``Settings()`` and hand the
object to :func:`leadflow.bootstrap.build_services` / ``build_app``.
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./leadflow.db"


class Settings(BaseSettings):
    """Every setting is documented in docs/settings.md (a test checks it)."""

    model_config = SettingsConfigDict(env_prefix="LEADFLOW_", extra="ignore")

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        description="SQLAlchemy URL: sqlite:///path.db (default ./leadflow.db) or "
        "postgresql+psycopg://user@host/db.",
    )
    host: str = Field(default="127.0.0.1", description="Address `leadflow serve` binds to.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port `leadflow serve` binds.")
    max_message_bytes: int = Field(
        default=32 * 1024, gt=0, description="Largest accepted tracking message (Segment: 32 KB)."
    )
    max_batch_bytes: int = Field(
        default=500 * 1024, gt=0, description="Largest accepted /v1/batch body (Segment: 500 KB)."
    )
    db_echo: bool = Field(default=False, description="Log every SQL statement (debugging).")

    @field_validator("database_url")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError("only sqlite:/// and postgresql+psycopg:// URLs are supported")
        if value.startswith("postgresql://") or value.startswith("postgres://"):
            # psycopg 3 is the driver we ship; accept the plain form and say so explicitly.
            value = "postgresql+psycopg://" + value.split("://", 1)[1]
        return value
