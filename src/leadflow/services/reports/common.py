"""Names every report shares: option choices, the report period, the error, the stage
model."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl

from leadflow.core import attribution as attr
from leadflow.core import deals as deal_figures
from leadflow.core import errors, funnel
from leadflow.core.config import LeadModel

SLICES = (
    "channel",
    "campaign",
    "industry",
    "account_tier",
    "employee_band",
    "acquisition_month",
    "model_version",
)
MODEL_CHOICES = (*attr.HEURISTIC_MODELS, "markov", "shapley", "all")
LEVELS = ("lead", "account")
UNITS = ("lead", "deal")
TOUCH_KEYS = ("channel", "campaign", "content")
ROLES = ("executive", "department", "campaign")
NOT_TOUCHES = ("email_sent", "email_bounce")
NONE = "(none)"


class ReportError(errors.InvalidInput):
    """A request the reports cannot answer; the message names the option and the reason."""


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ReportError("period: start and end must be aware UTC times")
        if self.end <= self.start:
            raise ReportError(
                f"period: --to ({self.end:%Y-%m-%d}) must be after --from ({self.start:%Y-%m-%d})"
            )

    def as_dict(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


def parse_day(value: str, option: str) -> datetime:
    """``YYYY-MM-DD`` (or a full ISO time) as an aware UTC datetime, refused clearly."""
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ReportError(f"{option}: {value!r} is not a date (use YYYY-MM-DD)") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _check_choice(value: str | None, choices: Sequence[str], option: str) -> None:
    if value is not None and value not in choices:
        raise ReportError(f"{option}: unknown value {value!r}; choose one of {', '.join(choices)}")


# --------------------------------------------------------------------------- stage model


def stage_model_for(model: LeadModel, extra: Sequence[str] = ()) -> funnel.StageModel:
    """The analytics core's stage model from the active leadflow.yaml (see
    :meth:`funnel.StageModel.from_lead_model`)."""
    return funnel.StageModel.from_lead_model(model, extra)


# --------------------------------------------------------------------------- currency


def check_currency(currency: str | None) -> str | None:
    if currency is None:
        return None
    code = currency.strip().upper()
    if not re.fullmatch(r"[A-Z]{3}", code):
        raise ReportError(
            f"--currency: {currency[:20]!r} is not a three-letter ISO 4217 code",
            field="currency",
        )
    return code


def scope(frame: pl.DataFrame, currency: str | None) -> deal_figures.CurrencyScope:
    """The deals of ``currency`` (see :func:`leadflow.core.deals.currency_scope`); an empty
    or column-less frame reads as no deals."""
    if "currency" not in frame.columns:
        frame = pl.DataFrame(schema=deal_figures.DEAL_SCHEMA)
    try:
        return deal_figures.currency_scope(frame, check_currency(currency))
    except ValueError as exc:
        raise ReportError(f"--currency: {exc}", field="currency") from None
