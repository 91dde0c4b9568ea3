"""Suggest points: engagement points per rule proposed from attributed value, with the
edited model checked and diffed."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl

from leadflow.core import attribution as attr
from leadflow.core.config import CheckReport, LeadModel, ModelConfigError, check
from leadflow.core.model import Event
from leadflow.core.model_edit import set_rule_points
from leadflow.core.scoring import event_matches
from leadflow.services.reports.attribution import attribution_inputs
from leadflow.services.reports.common import NONE, Period, ReportError, _check_choice
from leadflow.services.reports.store import Store

# --------------------------------------------------------------------------- suggest points


def _rule_signatures(
    tp: pl.DataFrame, model: LeadModel
) -> tuple[pl.DataFrame, dict[str, list[str]]]:
    """Each touch's matching engagement rules, matched by core.scoring.event_matches once per
    distinct combination of the fields rules can look at (never once per row)."""
    fields = [
        "type",
        "name",
        "channel",
        "campaign",
        "utm_source",
        "utm_medium",
        "path",
        "asset_type",
        "bounce_type",
    ]
    distinct = tp.select(fields).unique()
    sigs: list[str] = []
    rules_of: dict[str, list[str]] = {}
    for row in distinct.iter_rows(named=True):
        props = {k: row[k] for k in ("asset_type", "bounce_type") if row[k] is not None}
        event = Event(
            message_id="-",
            type=row["type"],
            occurred_at=datetime(2000, 1, 1, tzinfo=UTC),
            lead_id=None,
            name=row["name"],
            properties=props,
            page_url=row["path"],
            utm_campaign=row["campaign"],
            utm_source=row["utm_source"],
            utm_medium=row["utm_medium"],
            channel=row["channel"],
        )
        matched = [r.id for r in model.spec.engagement.rules if event_matches(r.match, event)]
        sig = "+".join(matched) or NONE
        rules_of[sig] = matched
        sigs.append(sig)
    return distinct.with_columns(signature=pl.Series(sigs, dtype=pl.String)), rules_of


@dataclass(frozen=True)
class PointsSuggestion:
    rows: list[dict[str, Any]]
    scale: float
    source: str
    proposed_source: str
    diff: str
    model: str
    check_ok: bool
    check_errors: tuple[str, ...] = ()


SUGGEST_FORMULA = (
    "value_per_occurrence(r) = attributed value credited to touches matching rule r / "
    "occurrences of r among all touches; proposed(r) = round(k * value_per_occurrence(r)) "
    "with k = sum(points(r) * occurrences(r)) / sum(attributed value(r)) over rules with "
    "positive points, so the points all touches earn in total stay the same and the MQL "
    "threshold keeps its meaning; rules with zero or negative points and rules without "
    "occurrences keep their points"
)


def suggest_points(
    store: Store,
    period: Period,
    *,
    model: str = "linear",
    to_stage: str | None = None,
    order: int = 1,
) -> PointsSuggestion:
    """Propose engagement points per rule from attributed value (see SUGGEST_FORMULA)."""
    if model == "all":
        model = "linear"
    _check_choice(model, attr.MODELS, "--model")
    to_stage = to_stage or store.model.won_stage
    if store.model_source is None:
        raise ReportError("suggest-points: no active model stored; run `leadflow init`")
    tp, conv_table, _ = attribution_inputs(store, period, to_stage=to_stage, touch="channel")
    if tp.height == 0 or conv_table.filter(pl.col("converted")).height == 0:
        raise ReportError(
            f"suggest-points: no lead reached {to_stage!r} in the period with touches before it; "
            "widen --from/--to or choose --to-stage"
        )
    sig_table, rules_of = _rule_signatures(tp, store.model)
    keyed = tp.join(
        sig_table,
        on=[
            "type",
            "name",
            "channel",
            "campaign",
            "utm_source",
            "utm_medium",
            "path",
            "asset_type",
            "bounce_type",
        ],
        how="left",
        nulls_equal=True,
    )
    result = attr.attribute(
        keyed,
        conv_table,
        model=model,
        touch_key="signature",
        order=order,
        allocation="per_touch" if model == "markov" else "removal_share",
    )
    occurrences = keyed.group_by("signature").agg(n=pl.len())
    value_by_rule: dict[str, float] = {}
    occ_by_rule: dict[str, int] = {}
    for sig, n in occurrences.iter_rows():
        for rule in rules_of.get(sig, []):
            occ_by_rule[rule] = occ_by_rule.get(rule, 0) + int(n)
    for row in result.credits.iter_rows(named=True):
        matched = rules_of.get(row["touch"], [])
        for rule in matched:
            value_by_rule[rule] = value_by_rule.get(rule, 0.0) + row["value"] / len(matched)
    rules = store.model.spec.engagement.rules
    positive = [r for r in rules if r.points > 0 and occ_by_rule.get(r.id)]
    earned = sum(r.points * occ_by_rule[r.id] for r in positive)
    credited = sum(value_by_rule.get(r.id, 0.0) for r in positive)
    scale = earned / credited if credited else 0.0
    rows = []
    proposed: dict[str, float] = {}
    for r in rules:
        occ = occ_by_rule.get(r.id, 0)
        value = value_by_rule.get(r.id, 0.0)
        new = r.points
        if r in positive and scale:
            new = float(round(scale * value / occ))
            proposed[r.id] = new
        rows.append(
            {
                "rule": r.id,
                "occurrences": occ,
                "attributed_value": value,
                "value_per_occurrence": value / occ if occ else None,
                "points": r.points,
                "proposed": new,
            }
        )
    source = store.model_source
    suffix = "-suggested"
    version = store.model.version
    new_version = version if version.endswith(suffix) else f"{version}{suffix}"
    try:
        new_source = set_rule_points(source, proposed, version=new_version)
        report = check(new_source)
    except ModelConfigError as exc:  # the edit would make the model invalid: say why
        new_source = source
        report = CheckReport(ok=False, errors=exc.messages)
    diff = "".join(
        difflib.unified_diff(
            source.splitlines(keepends=True),
            new_source.splitlines(keepends=True),
            fromfile="leadflow.yaml",
            tofile="leadflow.yaml (suggested)",
        )
    )
    return PointsSuggestion(
        rows=rows,
        scale=scale,
        source=source,
        proposed_source=new_source,
        diff=diff,
        model=result.model,
        check_ok=report.ok,
        check_errors=report.errors,
    )
