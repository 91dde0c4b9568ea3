"""Target-account discovery over the store: rank accounts like the won customers, mark them.

The method (a naive-Bayes likelihood ratio of firmographics) and the valuation are in
:mod:`leadflow.core.lookalike`; this module loads accounts and won opportunities, and
writes the marks.

**Who set ``is_target``.** ``accounts.targeted_at`` is written only here and means "the
look-alike run made this account a target at that time". When a ranked account is already a
target by other means (imported, set by hand or by a CRM: ``is_target`` true and
``targeted_at`` null), it gets its ``target_score`` and ``target_value`` but
``targeted_at`` stays null, so a later run never clears it. With ``replace=True`` a run
clears the marks of earlier runs that fell out of the top N: ``is_target`` and
``targeted_at`` only where ``targeted_at`` is set, the score and value everywhere. A column
is used rather than a key in ``accounts.traits`` because Segment ``group`` calls merge
client-supplied traits into that JSON, so a marker there could be forged or erased.

Changing ``is_target`` changes the fit score (``fit.target_account``), so the leads of
every account whose flag changed are recomputed in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import polars as pl
from sqlalchemy import Connection, Engine, bindparam, func, select, update

from leadflow.adapters.db.tables import accounts, lead_states, leads, opportunities
from leadflow.core import errors, lookalike
from leadflow.core.config import LeadModel
from leadflow.core.lookalike import NoWonAccounts
from leadflow.services.lifecycle import ModelCache, recompute

MAX_TOP = 100_000
__all__ = [
    "MAX_TOP",
    "NoWonAccounts",
    "TargetsError",
    "list_accounts",
    "mark_targets",
    "rank_targets",
]


class TargetsError(errors.InvalidInput):
    """Bad input, the message starts with the field it is about."""


def check_top(top: Any) -> int:
    if isinstance(top, bool) or not isinstance(top, int):
        raise TargetsError(f"top: must be a whole number, got {str(top)[:40]!r}")
    if not 1 <= top <= MAX_TOP:
        raise TargetsError(f"top: {top} must be between 1 and {MAX_TOP}")
    return top


def check_traits(traits: Sequence[str]) -> tuple[str, ...]:
    out = []
    for t in traits:
        key = str(t).strip()
        if not key or len(key) > 64:
            raise TargetsError("traits: each trait key must be 1-64 characters")
        if key not in out:
            out.append(key)
    if len(out) > 20:
        raise TargetsError("traits: at most 20 trait keys")
    return tuple(out)


def bands_of(model: LeadModel) -> tuple[lookalike.Band, ...]:
    """The size bands of the model's ``fit.company_size`` (the fit score's and the reports'
    bands), else the default ones."""
    spec = model.spec.fit.company_size
    if not spec:
        return lookalike.DEFAULT_BANDS
    return tuple(lookalike.Band(b.label, b.min, b.max) for b in spec)


def _load(conn: Connection) -> tuple[pl.DataFrame, pl.DataFrame]:
    rows = conn.execute(
        select(
            accounts.c.id,
            accounts.c.industry,
            accounts.c.employee_count,
            accounts.c.country,
            accounts.c.traits,
        ).order_by(accounts.c.id)
    ).all()
    frame = pl.DataFrame(
        {
            "id": [r.id for r in rows],
            "industry": [r.industry for r in rows],
            "employee_count": [r.employee_count for r in rows],
            "country": [r.country for r in rows],
            "traits": [r.traits if isinstance(r.traits, dict) else None for r in rows],
        },
        schema={
            "id": pl.Int64,
            "industry": pl.String,
            "employee_count": pl.Int64,
            "country": pl.String,
            "traits": pl.Object,
        },
    )
    won = conn.execute(
        select(opportunities.c.account_id, opportunities.c.amount).where(
            opportunities.c.stage == "won", opportunities.c.account_id.is_not(None)
        )
    ).all()
    deals = pl.DataFrame(
        {"account_id": [r.account_id for r in won], "amount": [r.amount for r in won]},
        schema={"account_id": pl.Int64, "amount": pl.Float64},
    )
    return frame, deals


def _ranking(
    conn: Connection,
    now: datetime,
    top: int,
    traits: Sequence[str],
    min_deals: int,
    models: ModelCache | None,
) -> tuple[lookalike.Ranking, LeadModel]:
    model = (models or ModelCache()).active(conn, now)
    frame, deals = _load(conn)
    ranking = lookalike.rank(
        frame, deals, top=top, bands=bands_of(model), traits=traits, min_deals=min_deals
    )
    return ranking, model


def _rows(conn: Connection, ranking: lookalike.Ranking) -> list[dict[str, Any]]:
    ids = [t.account_id for t in ranking.targets]
    info: dict[int, Any] = {}
    counts: dict[int, int] = {}
    for i in range(0, len(ids), 1000):
        chunk = ids[i : i + 1000]
        for r in conn.execute(
            select(
                accounts.c.id,
                accounts.c.name,
                accounts.c.domain,
                accounts.c.industry,
                accounts.c.employee_count,
                accounts.c.is_target,
                accounts.c.targeted_at,
            ).where(accounts.c.id.in_(chunk))
        ):
            info[r.id] = r
        for account_id, n in conn.execute(
            select(leads.c.account_id, func.count())
            .where(leads.c.account_id.in_(chunk))
            .group_by(leads.c.account_id)
        ):
            counts[account_id] = n
    out = []
    for t in ranking.targets:
        r = info[t.account_id]
        d = t.as_dict()
        out.append(
            {
                "rank": d["rank"],
                "account_id": t.account_id,
                "name": r.name,
                "domain": r.domain,
                "industry": r.industry,
                "employee_count": r.employee_count,
                "size": d["size"],
                "country": d["country"],
                "leads": counts.get(t.account_id, 0),
                "score": d["score"],
                "evidence": d["evidence"],
                "value": d["value"],
                "value_basis": d["value_basis"],
                "value_deals": d["value_deals"],
                "is_target": bool(r.is_target),
                "reasons": d["reasons"],
                "against": d["against"],
            }
        )
    return out


def rank_targets(
    engine: Engine,
    now: datetime,
    top: int,
    *,
    traits: Sequence[str] = (),
    min_deals: int = 3,
    models: ModelCache | None = None,
) -> list[dict[str, Any]]:
    """The ``top`` accounts most like the won ones, best first, with why and their value.
    Read-only. Raises :class:`TargetsError` on bad input, :class:`NoWonAccounts` when
    there is no won opportunity on any account."""
    top = check_top(top)
    traits = check_traits(traits)
    with engine.connect() as conn:
        ranking, _ = _ranking(conn, now, top, traits, min_deals, models)
        return _rows(conn, ranking)


def _states(conn: Connection, lead_ids: list[int]) -> dict[int, tuple[str, str | None]]:
    out: dict[int, tuple[str, str | None]] = {}
    for i in range(0, len(lead_ids), 1000):
        for r in conn.execute(
            select(lead_states.c.lead_id, lead_states.c.stage, lead_states.c.fit_grade).where(
                lead_states.c.lead_id.in_(lead_ids[i : i + 1000])
            )
        ):
            out[r.lead_id] = (r.stage, r.fit_grade)
    return out


def mark_targets(
    engine: Engine,
    now: datetime,
    top: int,
    *,
    replace: bool = True,
    traits: Sequence[str] = (),
    min_deals: int = 3,
    models: ModelCache | None = None,
) -> dict[str, Any]:
    """Mark the ``top`` look-alike accounts as targets (``is_target``, ``target_score``,
    ``target_value``, ``targeted_at``), clear this feature's earlier marks that fell out
    when ``replace``, and recompute the leads of every account whose flag changed - all in
    one transaction. Nothing changes when there are no won accounts (NoWonAccounts)."""
    top = check_top(top)
    traits = check_traits(traits)
    with engine.begin() as conn:
        ranking, model = _ranking(conn, now, top, traits, min_deals, models)
        rows = _rows(conn, ranking)
        chosen = {r["account_id"] for r in rows}
        current = {
            r.id: r
            for r in conn.execute(
                select(
                    accounts.c.id,
                    accounts.c.is_target,
                    accounts.c.targeted_at,
                    accounts.c.target_score,
                ).where(
                    accounts.c.targeted_at.is_not(None)
                    | accounts.c.target_score.is_not(None)
                    | accounts.c.is_target.is_(True)
                )
            )
        }
        flipped: set[int] = set()
        ours_new: list[dict[str, Any]] = []
        ours_kept: list[dict[str, Any]] = []
        others: list[dict[str, Any]] = []
        for r in rows:
            cur = current.get(r["account_id"])
            params = {"b_id": r["account_id"], "b_score": r["score"], "b_value": r["value"]}
            if cur is not None and cur.is_target and cur.targeted_at is None:
                others.append(params)  # a target by other means: score it, never own it
            elif cur is not None and cur.is_target:
                ours_kept.append(params)  # marked by an earlier run, still in
            else:
                ours_new.append(params)
                flipped.add(r["account_id"])
        stmt = (
            update(accounts)
            .where(accounts.c.id == bindparam("b_id"))
            .values(
                target_score=bindparam("b_score"),
                target_value=bindparam("b_value"),
                updated_at=now,
            )
        )
        if others or ours_kept:
            conn.execute(stmt, others + ours_kept)
        if ours_new:
            conn.execute(stmt.values(is_target=True, targeted_at=now), ours_new)
        cleared: list[int] = []
        unscored = 0
        if replace:
            gone_ours = [
                {"b_id": i}
                for i, cur in current.items()
                if i not in chosen and cur.targeted_at is not None
            ]
            gone_other = [
                {"b_id": i}
                for i, cur in current.items()
                if i not in chosen and cur.targeted_at is None and cur.target_score is not None
            ]
            base = update(accounts).where(accounts.c.id == bindparam("b_id"))
            if gone_ours:
                conn.execute(
                    base.values(
                        is_target=False,
                        targeted_at=None,
                        target_score=None,
                        target_value=None,
                        updated_at=now,
                    ),
                    gone_ours,
                )
                for p in gone_ours:
                    if current[p["b_id"]].is_target:
                        cleared.append(p["b_id"])
                        flipped.add(p["b_id"])
            if gone_other:
                conn.execute(
                    base.values(target_score=None, target_value=None, updated_at=now),
                    gone_other,
                )
            unscored = len(gone_other)
        lead_ids: list[int] = []
        flips = sorted(flipped)
        for i in range(0, len(flips), 1000):
            lead_ids.extend(
                conn.execute(
                    select(leads.c.id).where(leads.c.account_id.in_(flips[i : i + 1000]))
                ).scalars()
            )
        before = _states(conn, lead_ids)
        if lead_ids:
            recompute(conn, lead_ids, model, now)
        after = _states(conn, lead_ids)
    fit_changed = sum(1 for i in lead_ids if before.get(i, (None, None))[1] != after[i][1])
    stage_changed = sum(1 for i in lead_ids if before.get(i, (None, None))[0] != after[i][0])
    return {
        "top": top,
        "replace": replace,
        "won_accounts": ranking.won_accounts,
        "won_deals": ranking.won_deals,
        "accounts": ranking.accounts,
        "marked": len(ours_new),
        "kept": len(ours_kept),
        "already_target": len(others),
        "cleared": len(cleared),
        "unscored": unscored,
        "leads_recomputed": len(lead_ids),
        "fit_grade_changed": fit_changed,
        "stage_changed": stage_changed,
        "targeted_at": now,
        "targets": rows,
    }


def list_accounts(
    conn: Connection, *, targets_only: bool = False, limit: int = 1000
) -> list[dict[str, Any]]:
    """Accounts by look-alike score (unscored last) then id; ``targets_only``: only target
    accounts. ``set_by`` says who made a target one: ``lookalike`` or ``other``."""
    query = (
        select(
            accounts.c.id,
            accounts.c.name,
            accounts.c.domain,
            accounts.c.industry,
            accounts.c.employee_count,
            accounts.c.country,
            accounts.c.target_score,
            accounts.c.target_value,
            accounts.c.targeted_at,
            accounts.c.is_target,
        )
        .order_by(
            accounts.c.target_score.is_(None),
            accounts.c.target_score.desc(),
            accounts.c.id,
        )
        .limit(limit)
    )
    if targets_only:
        query = query.where(accounts.c.is_target.is_(True))
    rows = conn.execute(query).all()
    return [
        {
            "account_id": r.id,
            "name": r.name,
            "domain": r.domain,
            "industry": r.industry,
            "employee_count": r.employee_count,
            "country": r.country,
            "target_score": r.target_score,
            "target_value": r.target_value,
            "targeted_at": r.targeted_at,
            "is_target": bool(r.is_target),
            "set_by": (
                None if not r.is_target else "lookalike" if r.targeted_at is not None else "other"
            ),
        }
        for r in rows
    ]


def addressable_market(conn: Connection) -> dict[str, Any]:
    """Target accounts that are not customers yet (no won opportunity): how many, their
    summed ``target_value`` (accounts without a value count as 0; ``valued`` says how many
    have one), and the same by industry (largest value first)."""
    won = select(opportunities.c.account_id).where(
        opportunities.c.stage == "won", opportunities.c.account_id.is_not(None)
    )
    rows = conn.execute(
        select(
            accounts.c.industry,
            func.count().label("n"),
            func.count(accounts.c.target_value).label("valued"),
            func.coalesce(func.sum(accounts.c.target_value), 0.0).label("value"),
        )
        .where(accounts.c.is_target.is_(True), accounts.c.id.not_in(won))
        .group_by(accounts.c.industry)
    ).all()
    # Spellings of one industry ("Financial services", "financial services") are one group,
    # keyed like the fit table and labelled with the spelling most accounts use.
    groups: dict[str, dict[str, Any]] = {}
    for r in sorted(rows, key=lambda r: (-int(r.n), r.industry or "")):
        key = lookalike.normal_key(r.industry) or "(none)"
        g = groups.setdefault(
            key, {"industry": r.industry or "(none)", "accounts": 0, "valued": 0, "value": 0.0}
        )
        g["accounts"] += int(r.n)
        g["valued"] += int(r.valued)
        g["value"] += float(r.value)
    by_industry = sorted(
        ({**g, "value": round(g["value"], 2)} for g in groups.values()),
        key=lambda d: (-d["value"], d["industry"]),
    )
    return {
        "accounts": sum(d["accounts"] for d in by_industry),
        "valued": sum(d["valued"] for d in by_industry),
        "value": round(sum(d["value"] for d in by_industry), 2),
        "by_industry": by_industry,
    }
