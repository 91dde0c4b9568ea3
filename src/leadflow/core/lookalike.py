"""Target-account discovery: rank accounts by how much they look like the won customers.

**Method: a naive-Bayes likelihood ratio of firmographics.** For every feature ``f``
(``industry``, ``size`` band, ``country`` and any categorical ``traits`` asked for) two
distributions are estimated from the store:

- the **won profile** ``P(f = v | won)``: share of won accounts (accounts with at least one
  won opportunity, each counted once) with value ``v``, shrunk toward the base rate with an
  m-estimate, ``(won_v + m * base_v) / (won + m)`` (``m = smoothing``, default 2), so that a
  profile learned from a handful of customers stays close to "no evidence";
- the **base rate** ``P(f = v)``: share of *all* accounts with value ``v`` (Laplace
  smoothed, so unseen values never divide by zero).

An account's evidence is ``sum_f log(P(v_f | won) / P(v_f))``: each term says how much more
(or less) common its value is among customers than in the whole market. A missing value
adds 0 (no evidence either way). The **score** is ``sigmoid(evidence)``: the posterior
probability that the account was drawn from the won profile rather than from the market at
even prior odds, a 0-1 similarity where 0.5 means "as typical of the market as of the
customers". Each term is reported, so every rank is explained by the features that made
the account similar (positive terms) or dissimilar (negative terms). Features are treated
as independent (the naive-Bayes assumption): correlated features (big companies in one
country) count twice, which inflates scores but rarely changes the order.

Why not k-nearest neighbours: with tens of customers a nearest-neighbour score depends
on one or two accounts and cannot say *which feature* made an account similar; the ratio
says it per feature, and it is what the fit score's points table would be if learned.

Won accounts are customers and are never ranked. Ties are broken by account id, so the
ranking is deterministic.

**Value.** An account is valued as an opportunity of the average won deal amount of its
**segment** (industry x size band) when the segment has at least ``min_deals`` won deals
with an amount; otherwise of its industry (same threshold), otherwise of all won deals.
The ``value_basis`` (``segment``, ``industry``, ``overall``, or ``none`` when no won deal
has an amount) and the number of deals behind the average are reported.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from leadflow.core import errors

UNKNOWN = None
BASE_FEATURES = ("industry", "size", "country")


class NoWonAccounts(errors.Conflict):
    """There is no won opportunity on any account: there is no profile to look alike."""


@dataclass(frozen=True, slots=True)
class Band:
    """An employee-count band: ``min <= employees <= max`` (``max`` None: no upper end)."""

    label: str
    min: int
    max: int | None = None


DEFAULT_BANDS: tuple[Band, ...] = (
    Band("1-49", 1, 49),
    Band("50-249", 50, 249),
    Band("250-999", 250, 999),
    Band("1000+", 1000, None),
)


@dataclass(frozen=True, slots=True)
class Contribution:
    feature: str
    value: str | None
    weight: float
    """log(P(value | won) / P(value)); 0 for a missing value."""
    won_share: float
    base_share: float

    def label(self) -> str:
        return f"{self.feature}={self.value} ({self.weight:+.2f})"


@dataclass(frozen=True, slots=True)
class Target:
    account_id: int
    rank: int
    score: float
    evidence: float
    value: float | None
    value_basis: str
    value_deals: int
    industry: str | None
    size: str | None
    country: str | None
    contributions: tuple[Contribution, ...]

    @property
    def reasons(self) -> list[str]:
        """The features that made the account similar, strongest first."""
        ups = sorted((c for c in self.contributions if c.weight > 0), key=lambda c: -c.weight)
        return [c.label() for c in ups]

    @property
    def against(self) -> list[str]:
        downs = sorted((c for c in self.contributions if c.weight < 0), key=lambda c: c.weight)
        return [c.label() for c in downs]

    def as_dict(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "rank": self.rank,
            "score": round(self.score, 6),
            "evidence": round(self.evidence, 6),
            "value": None if self.value is None else round(self.value, 2),
            "value_basis": self.value_basis,
            "value_deals": self.value_deals,
            "industry": self.industry,
            "size": self.size,
            "country": self.country,
            "reasons": self.reasons,
            "against": self.against,
        }


@dataclass(slots=True)
class Ranking:
    targets: list[Target]
    accounts: int
    """Accounts considered (won accounts included)."""
    won_accounts: int
    won_deals: int
    profile: list[dict[str, Any]] = field(default_factory=list)
    """The won profile: per feature and value, won share, base share and weight."""


def normal_key(value: Any) -> str | None:
    """``"IT & Software"`` -> ``it_software`` (the fit table's key form); blank -> None."""
    if value is None:
        return None
    key = re.sub(r"[^0-9a-z가-힣]+", "_", str(value).strip().lower()).strip("_")
    return key or None


def size_band(employees: Any, bands: Sequence[Band] = DEFAULT_BANDS) -> str | None:
    if employees is None or isinstance(employees, bool):
        return None
    try:
        n = int(employees)
    except (TypeError, ValueError):
        return None
    for b in bands:
        if b.min <= n and (b.max is None or n <= b.max):
            return b.label
    return None


def _trait_value(traits: Any, key: str) -> str | None:
    if not isinstance(traits, Mapping):
        return None
    value = traits.get(key)
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return normal_key(value)


def features(
    accounts: pl.DataFrame, bands: Sequence[Band] = DEFAULT_BANDS, traits: Sequence[str] = ()
) -> pl.DataFrame:
    """``id`` plus one string column per feature from ``accounts`` (``id``, ``industry``,
    ``employee_count``, ``country`` and, when ``traits`` are asked for, ``traits``)."""
    ids = accounts["id"].to_list()
    cols: dict[str, list[Any]] = {
        "id": ids,
        "industry": [normal_key(v) for v in accounts["industry"].to_list()],
        "size": [size_band(v, bands) for v in accounts["employee_count"].to_list()],
        "country": [
            (str(v).strip().upper() or None) if v is not None else None
            for v in accounts["country"].to_list()
        ],
    }
    if traits:
        raw = accounts["traits"].to_list() if "traits" in accounts.columns else [None] * len(ids)
        for key in traits:
            cols[f"trait.{key}"] = [_trait_value(t, key) for t in raw]
    schema = {"id": pl.Int64, **{k: pl.String for k in cols if k != "id"}}
    return pl.DataFrame(cols, schema=schema)


def _weights(
    feats: pl.DataFrame, won_ids: set[int], feature: str, smoothing: float
) -> dict[str, tuple[float, float, float]]:
    """value -> (weight, won share, base share) for one feature."""
    col = feats[feature].to_list()
    ids = feats["id"].to_list()
    base: dict[str, int] = {}
    won: dict[str, int] = {}
    for i, v in zip(ids, col, strict=True):
        if v is None:
            continue
        base[v] = base.get(v, 0) + 1
        if i in won_ids:
            won[v] = won.get(v, 0) + 1
    n_base = sum(base.values())
    n_won = sum(won.values())
    k = len(base)
    out: dict[str, tuple[float, float, float]] = {}
    for v in sorted(base):
        p_base = (base[v] + 1) / (n_base + k)
        p_won = (won.get(v, 0) + smoothing * p_base) / (n_won + smoothing)
        out[v] = (math.log(p_won / p_base), p_won, p_base)
    return out


def _values(
    feats: pl.DataFrame, won_feats: pl.DataFrame, deals: pl.DataFrame, min_deals: int
) -> dict[int, tuple[float | None, str, int]]:
    """account id -> (value, basis, deals behind it)."""
    priced = deals.filter(pl.col("amount").is_not_null() & pl.col("account_id").is_not_null())
    priced = priced.join(
        won_feats.select("id", "industry", "size"), left_on="account_id", right_on="id"
    )
    amounts = priced["amount"].to_list()
    overall = (float(np.mean(amounts)), len(amounts)) if amounts else None
    seg: dict[tuple[str, str], list[float]] = {}
    ind: dict[str, list[float]] = {}
    for industry, size, amount in zip(
        priced["industry"].to_list(), priced["size"].to_list(), amounts, strict=True
    ):
        if industry is None:
            continue
        ind.setdefault(industry, []).append(float(amount))
        if size is not None:
            seg.setdefault((industry, size), []).append(float(amount))
    out: dict[int, tuple[float | None, str, int]] = {}
    for i, industry, size in zip(
        feats["id"].to_list(), feats["industry"].to_list(), feats["size"].to_list(), strict=True
    ):
        s = seg.get((industry, size)) if industry is not None and size is not None else None
        if s is not None and len(s) >= min_deals:
            out[i] = (float(np.mean(s)), "segment", len(s))
            continue
        d = ind.get(industry) if industry is not None else None
        if d is not None and len(d) >= min_deals:
            out[i] = (float(np.mean(d)), "industry", len(d))
            continue
        out[i] = (overall[0], "overall", overall[1]) if overall else (None, "none", 0)
    return out


def rank(
    accounts: pl.DataFrame,
    won_deals: pl.DataFrame,
    *,
    top: int | None = None,
    bands: Sequence[Band] = DEFAULT_BANDS,
    traits: Sequence[str] = (),
    min_deals: int = 3,
    smoothing: float = 2.0,
) -> Ranking:
    """Rank ``accounts`` (columns ``id``, ``industry``, ``employee_count``, ``country``,
    optionally ``traits``) by likeness to the accounts of ``won_deals`` (columns
    ``account_id``, ``amount``: one row per won opportunity). Returns the best ``top``
    (all when None) non-won accounts, best first. Raises :class:`NoWonAccounts` when no
    won deal belongs to a known account."""
    if top is not None and top < 1:
        raise ValueError("top: must be at least 1")
    if min_deals < 1:
        raise ValueError("min_deals: must be at least 1")
    feats = features(accounts, bands, traits)
    known = set(feats["id"].to_list())
    won_ids = {int(a) for a in won_deals["account_id"].drop_nulls().to_list() if a in known}
    if not won_ids:
        raise NoWonAccounts(
            "no won accounts: no account has a won opportunity, so there is no customer "
            "profile to look alike"
        )
    names = [c for c in feats.columns if c != "id"]
    tables = {f: _weights(feats, won_ids, f, smoothing) for f in names}
    profile = [
        {"feature": f, "value": v, "won_share": w[1], "base_share": w[2], "weight": w[0]}
        for f in names
        for v, w in tables[f].items()
    ]
    # Vectorised evidence: one weight column per feature, missing -> 0.
    weight_cols = []
    for f in names:
        mapping = {v: w[0] for v, w in tables[f].items()}
        weight_cols.append(
            pl.col(f).replace_strict(mapping, default=0.0, return_dtype=pl.Float64).alias(f"w:{f}")
        )
    scored = (
        feats.with_columns(weight_cols)
        .with_columns(pl.sum_horizontal([f"w:{f}" for f in names]).alias("evidence"))
        .filter(~pl.col("id").is_in(sorted(won_ids)))
        .sort(["evidence", "id"], descending=[True, False])
    )
    if top is not None:
        scored = scored.head(top)
    won_feats = feats.filter(pl.col("id").is_in(sorted(won_ids)))
    values = _values(scored, won_feats, won_deals, min_deals)
    targets = []
    for pos, row in enumerate(scored.iter_rows(named=True), start=1):
        contributions = tuple(
            Contribution(
                feature=f,
                value=row[f],
                weight=float(row[f"w:{f}"]),
                won_share=tables[f][row[f]][1] if row[f] is not None else 0.0,
                base_share=tables[f][row[f]][2] if row[f] is not None else 0.0,
            )
            for f in names
        )
        evidence = float(row["evidence"])
        value, basis, n = values[row["id"]]
        targets.append(
            Target(
                account_id=int(row["id"]),
                rank=pos,
                score=1.0 / (1.0 + math.exp(-evidence)),
                evidence=evidence,
                value=value,
                value_basis=basis,
                value_deals=n,
                industry=row["industry"],
                size=row["size"],
                country=row["country"],
                contributions=contributions,
            )
        )
    return Ranking(
        targets=targets,
        accounts=feats.height,
        won_accounts=len(won_ids),
        won_deals=int(won_deals.filter(pl.col("account_id").is_in(sorted(won_ids))).height),
        profile=profile,
    )
