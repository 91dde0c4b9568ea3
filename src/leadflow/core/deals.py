"""Deal-level figures: totals, deals per stage, the deal funnel and the sales cycle by
segment, from one frame of deals (one row per opportunity).

A deal is stored ``open``, ``won`` or ``lost`` with its open date (``created_at``) and, when
closed, its close date (``closed_at``). Every figure is read *as of* a time ``t``: a deal
exists at ``t`` when it opened before ``t``; it is won (lost) at ``t`` when it is stored won
(lost) with a close date before ``t``; otherwise it is open at ``t`` (a deal won later was
still open then). A closed deal without a close date is never counted as closed.

Money is never summed across currencies. :func:`currency_scope` picks the deals a report's
money figures may add up: the deals of the currency asked for, or every deal when they all
share one currency. When the deals are in several currencies and none is asked for, counts,
rates and cycles cover every deal and every amount is ``None`` (a report then lists the
amounts per currency next to it: :func:`money_by_currency`).

Pure: plain Polars frames in, plain dicts out; times are arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl

OPEN, WON, LOST = "open", "won", "lost"
# The stored deal stages, in funnel order (open first, then its two outcomes).
DEAL_STAGES: tuple[str, ...] = (OPEN, WON, LOST)
NONE = "(none)"

DEAL_SCHEMA: dict[str, Any] = {
    "id": pl.Int64,
    "amount": pl.Float64,
    "currency": pl.String,
    "stage": pl.String,
    "created_at": pl.Datetime("us", "UTC"),
    "closed_at": pl.Datetime("us", "UTC"),
    "lost_reason": pl.String,
}

DEFINITIONS: dict[str, str] = {
    "deal_at": "a deal opened before t is won (lost) at t when stored won (lost) with a close "
    "date before t, otherwise open at t",
    "win_rate": "won / (won + lost) among the deals closed in the period (or before the "
    "report time); null when none closed",
    "sales_cycle": "days from a deal's open date (created_at) to its close date; median and "
    "90th percentile with linear interpolation",
    "currency": "amounts are summed within one currency only: with deals in several "
    "currencies and no currency chosen, amounts are null and listed per currency",
}


def _days(expr: pl.Expr) -> pl.Expr:
    return expr.dt.total_seconds() / 86_400.0


def _closed_before(t: datetime) -> pl.Expr:
    return (
        pl.col("stage").is_in([WON, LOST])
        & pl.col("closed_at").is_not_null()
        & (pl.col("closed_at") < t)
    )


def stage_at(t: datetime) -> pl.Expr:
    """The deal's stage at ``t`` (meaningful for deals opened before ``t``)."""
    return pl.when(_closed_before(t)).then(pl.col("stage")).otherwise(pl.lit(OPEN))


# --------------------------------------------------------------------------- currency


@dataclass(frozen=True)
class CurrencyScope:
    """The deals a report reads and whether their amounts may be summed."""

    deals: pl.DataFrame
    currency: str | None
    currencies: tuple[str, ...]
    money: bool

    def amount(self, value: float) -> float | None:
        return float(value) if self.money else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "currency": self.currency,
            "currencies": list(self.currencies),
            "amounts_summed": self.money,
        }


def currencies(deals: pl.DataFrame) -> tuple[str, ...]:
    if deals.height == 0 or "currency" not in deals.columns:
        return ()
    return tuple(sorted(str(c) for c in deals["currency"].drop_nulls().unique().to_list()))


def currency_scope(deals: pl.DataFrame, currency: str | None = None) -> CurrencyScope:
    """The deals of ``currency`` (all of them when ``None``); amounts may be summed when a
    currency was chosen or the deals share one. Raises ``ValueError`` naming the currencies
    present when ``currency`` has no deal."""
    present = currencies(deals)
    if currency is not None:
        code = currency.strip().upper()
        if code not in present:
            known = ", ".join(present) or "none"
            raise ValueError(f"no deal is in {currency!r} (deals are in: {known})")
        return CurrencyScope(deals.filter(pl.col("currency") == code), code, present, True)
    single = present[0] if len(present) == 1 else None
    return CurrencyScope(deals, single, present, len(present) <= 1)


# --------------------------------------------------------------------------- totals


def totals(deals: pl.DataFrame, start: datetime, end: datetime) -> dict[str, Any]:
    """Deals won and lost in ``[start, end)`` (by their own close dates, each deal once),
    the win rate of those closes, and the deals open at ``end`` (with raw amount sums: the
    caller decides whether they may be shown, see :func:`currency_scope`)."""
    closed_in = _closed_before(end) & (pl.col("closed_at") >= start)
    opened = pl.col("created_at") < end
    amount = pl.col("amount").fill_null(0.0)
    row = deals.select(
        won_deals=(closed_in & (pl.col("stage") == WON)).sum(),
        won_amount=amount.filter(closed_in & (pl.col("stage") == WON)).sum(),
        lost_deals=(closed_in & (pl.col("stage") == LOST)).sum(),
        lost_amount=amount.filter(closed_in & (pl.col("stage") == LOST)).sum(),
        open_deals=(opened & ~_closed_before(end)).sum(),
        open_amount=amount.filter(opened & ~_closed_before(end)).sum(),
    ).to_dicts()[0]
    won, lost = int(row["won_deals"] or 0), int(row["lost_deals"] or 0)
    return {
        "won_deals": won,
        "won_amount": float(row["won_amount"] or 0.0),
        "lost_deals": lost,
        "lost_amount": float(row["lost_amount"] or 0.0),
        "win_rate": won / (won + lost) if won + lost else None,
        "open_deals": int(row["open_deals"] or 0),
        "open_amount": float(row["open_amount"] or 0.0),
    }


def money_by_currency(deals: pl.DataFrame, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """:func:`totals` per currency (the amounts of one currency only in each row)."""
    return [
        {"currency": code, **totals(deals.filter(pl.col("currency") == code), start, end)}
        for code in currencies(deals)
    ]


def deals_per_stage(
    deals: pl.DataFrame, as_of: datetime, *, money: bool = True
) -> list[dict[str, Any]]:
    """The deals opened before ``as_of`` per stage at ``as_of``, with their amounts."""
    frame = (
        deals.filter(pl.col("created_at") < as_of)
        .with_columns(at_stage=stage_at(as_of))
        .group_by("at_stage")
        .agg(deals=pl.len(), amount=pl.col("amount").fill_null(0.0).sum())
    )
    found = {r["at_stage"]: r for r in frame.to_dicts()}
    return [
        {
            "stage": stage,
            "deals": int(found[stage]["deals"]),
            "amount": float(found[stage]["amount"]) if money else None,
        }
        for stage in (*DEAL_STAGES, *sorted(set(found) - set(DEAL_STAGES)))
        if stage in found
    ]


def lost_reasons(
    deals: pl.DataFrame, start: datetime, end: datetime, *, money: bool = True
) -> list[dict[str, Any]]:
    """Deals lost in ``[start, end)`` per stored loss reason (``(none)`` when not given)."""
    lost = deals.filter(
        _closed_before(end) & (pl.col("closed_at") >= start) & (pl.col("stage") == LOST)
    )
    reason = (
        pl.col("lost_reason").fill_null(NONE) if "lost_reason" in lost.columns else pl.lit(NONE)
    )
    frame = (
        lost.group_by(reason.alias("reason"))
        .agg(deals=pl.len(), amount=pl.col("amount").fill_null(0.0).sum())
        .sort(["deals", "reason"], descending=[True, False])
    )
    return [
        {
            "reason": r["reason"],
            "deals": int(r["deals"]),
            "amount": float(r["amount"]) if money else None,
        }
        for r in frame.to_dicts()
    ]


# --------------------------------------------------------------------------- sales cycle by segment


def _cycle_stats(prefix: str, cond: pl.Expr) -> list[pl.Expr]:
    days = pl.col("days").filter(cond)
    return [
        days.median().alias(f"{prefix}_median_days"),
        days.quantile(0.9, "linear").alias(f"{prefix}_p90_days"),
    ]


def cycle_by_segment(
    deals: pl.DataFrame, as_of: datetime, segment: str = "segment", *, money: bool = True
) -> list[dict[str, Any]]:
    """Per value of the ``segment`` column (missing values as ``(none)``), for the deals
    opened before ``as_of``: deals, open, won, lost, win rate, won amount, and the sales
    cycle (median and p90 days) of the won deals and of all closed deals. Rows by deals,
    most first."""
    closed = _closed_before(as_of)
    won = closed & (pl.col("stage") == WON)
    lost = closed & (pl.col("stage") == LOST)
    frame = (
        deals.filter(pl.col("created_at") < as_of)
        .with_columns(
            pl.col(segment).cast(pl.String).fill_null(NONE).alias("segment"),
            days=_days(pl.col("closed_at") - pl.col("created_at")),
        )
        .group_by("segment")
        .agg(
            pl.len().alias("deals"),
            (~closed).sum().alias("open"),
            won.sum().alias("won"),
            lost.sum().alias("lost"),
            pl.col("amount").fill_null(0.0).filter(won).sum().alias("won_amount"),
            *_cycle_stats("won", won),
            *_cycle_stats("closed", closed),
        )
        .sort(["deals", "segment"], descending=[True, False])
    )
    rows = []
    for r in frame.to_dicts():
        n_won, n_lost = int(r["won"]), int(r["lost"])
        rows.append(
            {
                "segment": r["segment"],
                "deals": int(r["deals"]),
                "open": int(r["open"]),
                "won": n_won,
                "lost": n_lost,
                "win_rate": n_won / (n_won + n_lost) if n_won + n_lost else None,
                "won_amount": float(r["won_amount"]) if money else None,
                "won_median_days": r["won_median_days"],
                "won_p90_days": r["won_p90_days"],
                "closed_median_days": r["closed_median_days"],
                "closed_p90_days": r["closed_p90_days"],
            }
        )
    return rows


# --------------------------------------------------------------------------- deal funnel


def deal_funnel(
    deals: pl.DataFrame, start: datetime, end: datetime, *, money: bool = True
) -> dict[str, Any]:
    """Flow & balance of deals over ``[start, end)`` per stored deal stage, and the cohort
    of deals opened in the period step by step (opened -> won / lost / still open at the
    end), with conversions and amounts.

    Per stage: ``balance_start`` / ``balance_end`` (deals in the stage at ``start`` / ``end``),
    ``flow_in`` (deals that entered it in the period: opened for ``open``, closed for
    ``won`` / ``lost``), ``flow_out`` (only ``open`` has exits: closes, split into ``out_won``
    and ``out_lost``), the amounts of each, and for ``open`` the cohort CVR (of the deals
    opened in the period, the share won by ``end``), the win rate of the period's closes and
    the median / p90 days open of the deals closed in the period. Always
    ``balance_end = balance_start + flow_in - flow_out``."""
    amount = pl.col("amount").fill_null(0.0)
    exists_start = pl.col("created_at") < start
    exists_end = pl.col("created_at") < end
    at_start = stage_at(start)
    at_end = stage_at(end)
    closed_in = _closed_before(end) & (pl.col("closed_at") >= start)
    opened_in = (pl.col("created_at") >= start) & exists_end
    frame = deals.with_columns(days=_days(pl.col("closed_at") - pl.col("created_at")))

    def count(cond: pl.Expr) -> pl.Expr:
        return cond.fill_null(False).sum()

    def value(cond: pl.Expr) -> pl.Expr:
        return amount.filter(cond.fill_null(False)).sum()

    exprs: list[pl.Expr] = []
    for stage in DEAL_STAGES:
        in_start = exists_start & (at_start == stage)
        in_end = exists_end & (at_end == stage)
        into = opened_in if stage == OPEN else closed_in & (pl.col("stage") == stage)
        out = closed_in if stage == OPEN else pl.lit(False)
        exprs += [
            count(in_start).alias(f"{stage}|balance_start"),
            count(into).alias(f"{stage}|flow_in"),
            count(out).alias(f"{stage}|flow_out"),
            count(in_end).alias(f"{stage}|balance_end"),
            value(in_start).alias(f"{stage}|amount_start"),
            value(into).alias(f"{stage}|amount_in"),
            value(out).alias(f"{stage}|amount_out"),
            value(in_end).alias(f"{stage}|amount_end"),
        ]
    won_in = closed_in & (pl.col("stage") == WON)
    lost_in = closed_in & (pl.col("stage") == LOST)
    cohort_won = opened_in & won_in
    cohort_lost = opened_in & lost_in
    days = pl.col("days").filter(closed_in.fill_null(False))
    exprs += [
        count(won_in).alias("out_won"),
        count(lost_in).alias("out_lost"),
        count(cohort_won).alias("cohort_won"),
        count(cohort_lost).alias("cohort_lost"),
        value(cohort_won).alias("cohort_won_amount"),
        value(cohort_lost).alias("cohort_lost_amount"),
        days.median().alias("median_days"),
        days.quantile(0.9, "linear").alias("p90_days"),
    ]
    got = frame.select(exprs).to_dicts()[0]

    def money_of(v: Any) -> float | None:
        return float(v or 0.0) if money else None

    stages: list[dict[str, Any]] = []
    for stage in DEAL_STAGES:
        row: dict[str, Any] = {"stage": stage}
        for key in ("balance_start", "flow_in", "flow_out", "balance_end"):
            row[key] = int(got[f"{stage}|{key}"] or 0)
        for key in ("amount_start", "amount_in", "amount_out", "amount_end"):
            row[key] = money_of(got[f"{stage}|{key}"])
        if stage == OPEN:
            won_n, lost_n = int(got["out_won"] or 0), int(got["out_lost"] or 0)
            row.update(
                out_won=won_n,
                out_lost=lost_n,
                cohort_entered=row["flow_in"],
                cohort_won=int(got["cohort_won"] or 0),
                cvr=int(got["cohort_won"] or 0) / row["flow_in"] if row["flow_in"] else None,
                win_rate=won_n / (won_n + lost_n) if won_n + lost_n else None,
                median_days_open=got["median_days"],
                p90_days_open=got["p90_days"],
            )
        stages.append(row)
    opened_n = stages[0]["flow_in"]
    cohort_open = opened_n - int(got["cohort_won"] or 0) - int(got["cohort_lost"] or 0)
    opened_amount = got[f"{OPEN}|amount_in"] or 0.0
    steps = [
        {
            "step": "opened",
            "deals": opened_n,
            "amount": money_of(opened_amount),
            "conversion": None,
        },
        {
            "step": WON,
            "deals": int(got["cohort_won"] or 0),
            "amount": money_of(got["cohort_won_amount"]),
            "conversion": int(got["cohort_won"] or 0) / opened_n if opened_n else None,
        },
        {
            "step": LOST,
            "deals": int(got["cohort_lost"] or 0),
            "amount": money_of(got["cohort_lost_amount"]),
            "conversion": int(got["cohort_lost"] or 0) / opened_n if opened_n else None,
        },
        {
            "step": OPEN,
            "deals": cohort_open,
            "amount": money_of(
                (opened_amount or 0.0)
                - (got["cohort_won_amount"] or 0.0)
                - (got["cohort_lost_amount"] or 0.0)
            ),
            "conversion": cohort_open / opened_n if opened_n else None,
        },
    ]
    return {
        "stages": stages,
        "steps": steps,
        "win_rate": stages[0]["win_rate"],
        "definitions": {
            **DEFINITIONS,
            "balance_start": "deals in the stage at the period start (see deal_at)",
            "flow_in": "open: deals opened in the period; won / lost: deals closed so in the "
            "period",
            "flow_out": "open: deals closed in the period (out_won + out_lost); none for won "
            "and lost",
            "balance_end": "deals in the stage at the period end = balance_start + flow_in - "
            "flow_out",
            "cvr": "of the deals opened in the period, the share won by the period end",
            "steps": "the deals opened in the period and where they stand at the period end; "
            "conversion = deals of the step / deals opened",
        },
    }


def segment_values(deals: pl.DataFrame, column: str) -> Sequence[str]:
    """The distinct non-null values of a segment column, as text."""
    if column not in deals.columns:
        return ()
    return sorted({str(v) for v in deals[column].drop_nulls().to_list()})
