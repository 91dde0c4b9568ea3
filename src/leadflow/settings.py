"""Typed settings, read from the environment (prefix ``LEADFLOW_``) or passed explicitly.

Nothing here is instantiated at import time: entrypoints call ``Settings()`` and hand the
object to :func:`leadflow.bootstrap.build_services` / ``build_app``.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./leadflow.db"
PLACEHOLDER_SECRETS = frozenset({"changethis", "change-me", "changeme", "secret", "dev"})


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
    worker_interval: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        description="Seconds between passes of the worker inside `leadflow serve`; 0 = off.",
    )
    workers: int = Field(
        default=1, ge=1, le=64, description="Processes `leadflow serve` runs (uvicorn workers)."
    )
    max_message_bytes: int = Field(
        default=32 * 1024, gt=0, description="Largest accepted tracking message (Segment: 32 KB)."
    )
    max_batch_bytes: int = Field(
        default=500 * 1024, gt=0, description="Largest accepted /v1/batch body (Segment: 500 KB)."
    )
    db_echo: bool = Field(default=False, description="Log every SQL statement (debugging).")
    sqlite_turn_timeout: float = Field(
        default=5.0,
        ge=0,
        le=600,
        description="Seconds an ingest writer waits for its turn on the SQLite database's "
        "lock file (<database>.ingest.lock) before writing without it.",
    )
    env: str = Field(
        default="development",
        description="development or production; production refuses a missing or weak secret.",
    )
    secret_key: str | None = Field(
        default=None,
        description="Signs email tracking and unsubscribe links, form tokens and dashboard "
        "cookies (at least 32 characters). Required when LEADFLOW_ENV=production; when unset, "
        "a random key stored in the database is used (`leadflow secret rotate`).",
    )

    webhooks_allow_private_targets: bool = Field(
        default=False,
        description="Allow webhook targets on loopback/private/link-local addresses "
        "(SSRF guard off; for tests and trusted internal receivers only).",
    )

    warm_reports: bool = Field(
        default=True,
        description="At start-up, load the report store the funnel and attribution pages "
        "read, in the background, so the first visitor does not wait for it.",
    )

    # --- email (issue 4) -------------------------------------------------------------------
    smtp_host: str | None = Field(
        default=None,
        description="SMTP server for nurture email. Unset: messages are written as .eml files "
        "to LEADFLOW_MAIL_DIR instead (development).",
    )
    smtp_port: int = Field(default=587, ge=1, le=65535, description="SMTP server port.")
    smtp_security: str = Field(
        default="starttls",
        description="none, starttls (upgrade a plain connection) or ssl (implicit TLS, 465).",
    )
    smtp_username: str | None = Field(default=None, description="SMTP AUTH user name.")
    smtp_password: str | None = Field(default=None, description="SMTP AUTH password.")
    smtp_timeout: float = Field(
        default=30.0, gt=0, le=600, description="Seconds before an SMTP command gives up."
    )
    mail_from: str = Field(
        default="AcmeCloud <marketing@example.com>",
        description="From: of marketing email (a name and an address).",
    )
    mail_dir: str = Field(
        default="./outbox",
        description="Where .eml files go when no SMTP server is configured.",
    )
    public_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Base URL of this server as recipients reach it: tracking pixel, click "
        "redirects, unsubscribe links and hosted forms are built on it.",
    )

    @field_validator("smtp_security")
    @classmethod
    def _known_security(cls, value: str) -> str:
        if value not in ("none", "starttls", "ssl"):
            raise ValueError("must be none, starttls or ssl")
        return value

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or any(c in value for c in " <>\"'"):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError("only sqlite:/// and postgresql+psycopg:// URLs are supported")
        if value.startswith("postgresql://") or value.startswith("postgres://"):
            # psycopg 3 is the driver we ship; accept the plain form and say so explicitly.
            value = "postgresql+psycopg://" + value.split("://", 1)[1]
        return value

    @field_validator("env")
    @classmethod
    def _known_env(cls, value: str) -> str:
        if value not in ("development", "production"):
            raise ValueError("must be development or production")
        return value

    @model_validator(mode="after")
    def _real_secret_outside_development(self) -> Settings:
        key = self.secret_key
        weak = key is None or len(key) < 32 or key.strip().lower() in PLACEHOLDER_SECRETS
        if self.env != "development" and weak:
            raise ValueError(
                "secret_key: LEADFLOW_ENV=production needs LEADFLOW_SECRET_KEY set to a random "
                "value of at least 32 characters (e.g. `python -c 'import secrets; "
                "print(secrets.token_urlsafe(48))'`)"
            )
        return self
