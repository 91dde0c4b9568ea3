"""Thresholds, vocabularies and the error every predictive step shares."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

FORMAT = "leadflow-predictive/1"
PLACEHOLDERS = frozenset(
    {
        "",
        "select",
        "-- select --",
        "please select",
        "n/a",
        "na",
        "#n/a",
        "none",
        "null",
        "nil",
        "nan",
        "-",
        "--",
        "?",
        "not specified",
        "not provided",
        "(blank)",
        "missing",
    }
)
YES = frozenset({"yes", "y", "true", "t"})
NO = frozenset({"no", "n", "false", "f"})
POSITIVE_OUTCOMES = frozenset(
    {"1", "1.0", "yes", "y", "true", "t", "won", "win", "converted", "success", "positive"}
)
NEGATIVE_OUTCOMES = frozenset(
    {"0", "0.0", "no", "n", "false", "f", "lost", "loss", "not converted", "failure", "negative"}
)
MISSING_LEVEL = "(missing)"
OTHER_LEVEL = "(other)"
MAX_LEVELS = 30
NUMERIC_SHARE = 0.9
LEAKAGE_AUC = 0.95
LEAKAGE_DROP = "suspected leakage"  # the start of a dropped column's reason
PURE_RATE = 0.98
PURE_SHARE = 0.5
# Post-outcome signatures beyond "too predictive" (see leakage.py): a name from
# SOFT_POST_OUTCOME_NAMES together with a single-column AUC of STRONG_AUC, or OUTLIER_MARGIN
# above the median of the other columns; a fill rate that differs by MISSING_GAP between
# converted and other rows; a category of DETERMINISTIC_LEVELS+ levels whose rows sit mostly
# (DETERMINISTIC_SHARE) in levels converting <= NEAR_PURE or >= 1 - NEAR_PURE.
STRONG_AUC = 0.9
OUTLIER_MARGIN = 0.2
MISSING_GAP = 0.5
DETERMINISTIC_LEVELS = 6
DETERMINISTIC_SHARE = 0.6
NEAR_PURE = 0.05
MIN_PER_CLASS = 5
ISOTONIC_FROM_ROWS = 1000

# Names of columns that are filled in after the outcome is known, matched on the column name
# lowercased with every non-alphanumeric run turned into "_". A name that also says
# previous/prior/past (bank-marketing's "poutcome", "previous_outcome") is about an earlier
# episode and is not matched.
POST_OUTCOME_NAMES: tuple[tuple[str, str], ...] = (
    (r"(^|_)duration($|_)", "call/contact duration is known only after the contact"),
    (r"call_?(length|time|secs|seconds|minutes)", "call length is known only after the call"),
    (r"talk_?time", "talk time is known only after the call"),
    (
        r"(^|_)(closed?|close_?date|closed_?(at|on|date))($|_)",
        "close date/status is set at the outcome",
    ),
    (r"(^|_)(won|lost|loss_?reason|lost_?reason)($|_)", "won/lost is the outcome itself"),
    (r"(^|_)outcome($|_)", "outcome fields are filled in at the outcome"),
    (r"(^|_)result($|_)", "result fields are filled in at the outcome"),
    (r"(^|_)(converted|conversion)_?(at|on|date|time)($|_)", "conversion date follows the outcome"),
    (
        r"(^|_)(deal|opportunity|opp)_?(stage|status|amount|value)($|_)",
        "deal fields follow qualification",
    ),
)
# Names that are often typed by sales after contact (status tags, quality ratings, profiles,
# "last activity", activity/profile indices and scores) but also name honest pre-outcome
# fields: a column is flagged by one of these only when it is also far stronger than the rest.
SOFT_POST_OUTCOME_NAMES: tuple[tuple[str, str], ...] = (
    (r"(^|_)tags?($|_)", "status tags are set by sales after contact"),
    (r"(^|_)(status|state|disposition)($|_)", "status fields are updated as the lead is worked"),
    (r"(^|_)(quality|rating)($|_)", "quality ratings are given by sales after contact"),
    (r"(^|_)stage($|_)", "stages move as the lead is worked"),
    (r"(^|_)reasons?($|_)", "reasons are recorded at the outcome"),
    (r"(^|_)(notes?|comments?|remarks?)($|_)", "notes are typed by sales after contact"),
    (
        r"(^|_)last(_[a-z]+)?_(activity|action|touch|interaction)($|_)",
        "the last activity is overwritten until the outcome",
    ),
    (r"(^|_)(score|index)($|_)", "scores/indices are often computed after contact"),
    (r"(^|_)profile($|_)", "lead profiles are filled in by sales after contact"),
)
# Names of row identifiers (export row numbers, record ids).
ROW_ID_NAMES = re.compile(r"(^|_)(id|ids|uuid|guid|key|number|no|num|nr|row|index|ref)($|_)")
EARLIER_EPISODE = re.compile(r"(^|_)(p|prev|previous|prior|past|last_campaign)($|_)")

ModelName = Literal["logistic", "gradient_boosting"]
CANDIDATES: tuple[ModelName, ...] = ("logistic", "gradient_boosting")
Progress = Callable[[str, int, int], None]


class PredictiveError(ValueError):
    """A problem with the input that the person running the command can fix."""
