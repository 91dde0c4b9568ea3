"""Multi-touch attribution: heuristic, Markov-chain removal effect and Shapley models.

Input
-----
``touchpoints``: one row per touch with ``path_id``, ``at`` and a touch-key column chosen by
the caller (``channel`` by default; campaign, content or person work the same way), optional
``person_id`` and optional booleans ``is_lead_creation`` / ``is_opportunity_creation``.
``conversions``: ``path_id``, ``converted: bool``, ``value: float`` and optionally ``at`` (the
conversion time, used by time decay; the path's last touch when absent). A path with touches
but no conversion row did not convert. Only converted paths carry credit; the credits of every
model add up to the converted paths' count and value.

Two levels are two choices of ``path_id``: a lead's own path, or an account path built by
:func:`account_paths` (every touch of every buying-committee member before the opportunity was
created, credited to the opportunity amount, with credits also summed per person).

Models
------
- ``first_touch`` / ``last_touch``: all credit to the first / last touch (order by ``at``, ties
  in input order).
- ``linear``: equal credit to every touch (a channel touched twice gets two shares).
- ``time_decay``: weight ``2 ** (-age / half_life_days)``, age = conversion time minus touch
  time in days (clipped at 0), normalised per path.
- positional models share one rule. Milestone slots with weights, the rest of the touches
  sharing the "rest" weight equally:
  ``u_shaped`` first 40 / last 40 / rest 20; ``w_shaped`` first 30 / lead creation 30 /
  opportunity creation 30 / rest 10; ``full_path`` (Z-shaped) first, lead creation,
  opportunity creation and closing (last) touch 22.5 each / rest 10. Slots landing on the
  same touch add up; a slot whose flag no touch carries, and the rest weight when no touch is
  left over, drop out and the remaining weights are renormalised to 1. So a one-touch path
  gives that touch everything and a two-touch U-shaped path splits 50/50.
- ``markov`` (order 1, 2 or 3): an absorbing Markov chain estimated from all paths, converted
  or not: ``(start) -> touch states -> (conversion) | (null)``. A state of order ``k`` is the
  tuple of the last ``k`` touches (shorter at the start of a path, no padding state). The
  conversion probability ``P`` and the expected conversion value ``V`` from ``(start)`` are
  solved from ``(I - Q) x = r`` (no simulation): at order 1 exactly by a dense inverse up to
  ``DENSE_STATE_LIMIT`` (4,000) states; otherwise (order 2-3: 42k and 146k states at 250
  channels) by sparse Jacobi sweeps on the observed transitions only, all
  removals of a block of touches at once, to 1e-13 of the largest entry -- no LU (its fill-in
  ran to gigabytes) and no dense matrix. Removing channel ``c`` sends every
  transition into a state containing ``c`` to ``(null)``; removal effect ``RE_c = 1 - P_c /
  P`` (and ``1 - V_c / V`` for value) -- the definition of ChannelAttribution and of
  marketing-attribution-models. With ``allocation="removal_share"`` (ChannelAttribution's)
  channel ``c`` gets ``RE_c / sum(RE)`` of all conversions (value: of all value, with value
  removal effects). With ``allocation="per_touch"`` (marketing-attribution-models') each
  converted path's conversion and value are split over its touches in proportion to the
  touches' conversion removal effects, which also yields per-person credit.
- ``shapley``: players are touch-key values, a path's coalition is its set of distinct keys.
  Characteristic ``"conversions"`` (default): ``v(S)`` = conversions (value) of the paths
  whose key set is a subset of ``S``. That game is a sum of unanimity games, so its Shapley
  value is exactly each converted path's conversion and value split equally over its distinct
  keys, for any number of keys (the coalition enumeration gives the same numbers and is used
  when ``method="coalitions"``, up to ``max_exact_players``). Characteristic
  ``"conversion_rate"``: ``v(S)`` = conversions / paths among paths whose key set is a subset
  of ``S`` (0 when none); not additive, so it is computed by enumerating all ``2**n``
  coalitions when ``n <= max_exact_players`` (15) and otherwise estimated from
  ``n_permutations`` seeded random orderings (each a full pass of marginal contributions);
  the values are then scaled to add up to the conversions (value). The sampled estimate
  states its error: per touch the standard error of the mean marginal contribution over the
  permutations (``details`` columns ``std_error_*``, the largest in ``parameters``); exact
  methods state 0.

Every result row names its model, touch key, the touch and the conversions and value credited.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from math import factorial
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa
import scipy.sparse as sp
import scipy.sparse.linalg as spla

HEURISTIC_MODELS = (
    "first_touch",
    "last_touch",
    "linear",
    "time_decay",
    "u_shaped",
    "w_shaped",
    "full_path",
)
MODELS = (*HEURISTIC_MODELS, "markov", "shapley")

# (slot weights, rest weight); slots: first, lead creation, opportunity creation, last
POSITIONAL: Mapping[str, tuple[tuple[float, float, float, float], float]] = {
    "u_shaped": ((0.4, 0.0, 0.0, 0.4), 0.2),
    "w_shaped": ((0.3, 0.3, 0.3, 0.0), 0.1),
    "full_path": ((0.225, 0.225, 0.225, 0.225), 0.1),
}
DENSE_STATE_LIMIT = 4000
ITERATIVE_BLOCK = 16
ITERATIVE_TOL = 1e-13
ITERATIVE_MAX_SWEEPS = 100_000


@dataclass(frozen=True)
class Attribution:
    """Credits of one model: per touch-key value, and per person when the model allows."""

    model: str
    touch_key: str
    credits: pl.DataFrame
    """model, touch_key, touch, conversions, value, share_of_value"""
    per_person: pl.DataFrame | None
    total_conversions: float
    total_value: float
    parameters: Mapping[str, Any] = field(default_factory=dict)
    details: pl.DataFrame | None = None
    """Model internals, e.g. the removal effects of a Markov model."""
    definition: str = ""

    def to_rows(self) -> list[dict[str, Any]]:
        return self.credits.to_dicts()

    def credit(self, touch: str) -> dict[str, float]:
        row = self.credits.filter(pl.col("touch") == touch)
        if row.height == 0:
            return {"conversions": 0.0, "value": 0.0}
        return {"conversions": row["conversions"][0], "value": row["value"][0]}

    def top_touch(self) -> str | None:
        """The touch-key value credited with the most value (then conversions)."""
        if self.credits.height == 0:
            return None
        top: str = self.credits.sort(["value", "conversions"], descending=True)["touch"][0]
        return top

    def top_person(self) -> Any:
        """The person credited with the most value, when per-person credit exists."""
        if self.per_person is None or self.per_person.height == 0:
            return None
        return self.per_person.sort(["value", "conversions"], descending=True)["person_id"][0]


@dataclass(frozen=True)
class PathSummary:
    """Identical paths grouped: the input of the Markov and Shapley models.

    ``touches`` holds the key values; path ``i`` is ``codes[offsets[i]:offsets[i+1]]``, codes
    being 1-based indexes into ``touches``. ``paths``, ``conversions``, ``value`` are per
    unique path (how many journeys took it, how many converted, their converted value).
    """

    touch_key: str
    touches: tuple[str, ...]
    codes: np.ndarray
    offsets: np.ndarray
    paths: np.ndarray
    conversions: np.ndarray
    value: np.ndarray

    @property
    def n_unique(self) -> int:
        return len(self.paths)

    def to_frame(self, sep: str = " > ") -> pl.DataFrame:
        """path (touches joined by ``sep``), total_conversions, total_conversion_value,
        total_null: the layout ChannelAttribution and most tools read."""
        names = np.asarray(("", *self.touches), dtype=object)
        parts = np.split(names[self.codes], self.offsets[1:-1])
        return pl.DataFrame(
            {
                "path": [sep.join(p) for p in parts],
                "total_conversions": self.conversions,
                "total_conversion_value": self.value,
                "total_null": self.paths - self.conversions,
            }
        )


# --------------------------------------------------------------------------- inputs


def _conversion_columns(conversions: pl.DataFrame) -> pl.DataFrame:
    """path_id, converted, value (0 unless converted) and converted_at when given; not deduped."""
    if missing := {"path_id", "converted", "value"} - set(conversions.columns):
        raise ValueError(f"conversions lack column(s): {sorted(missing)}")
    conv_cols = [
        pl.col("path_id"),
        pl.col("converted").fill_null(False).cast(pl.Boolean),
        pl.when(pl.col("converted"))
        .then(pl.col("value").cast(pl.Float64))
        .otherwise(0.0)
        .alias("value"),
    ]
    if "at" in conversions.columns:
        conv_cols.append(pl.col("at").alias("converted_at"))
    return conversions.select(conv_cols)


def _conversion_table(conversions: pl.DataFrame) -> pl.DataFrame:
    conv = _conversion_columns(conversions).unique("path_id", keep="last")
    if conv["value"].null_count():
        raise ValueError("conversions: a converted path has a null value")
    return conv


def _path_outcomes(path_ids: pl.Series, conversions: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per path id (in the given order): converted (0/1) and converted value, as floats.

    The last conversion row of a path wins; a path without one did not convert. Integer ids
    are looked up by a sorted search instead of a hash join (the 1,000,000-path case).
    """
    conv = _conversion_columns(conversions).select("path_id", "converted", "value")
    ids = conv["path_id"]
    if not (
        ids.dtype.is_integer()
        and path_ids.dtype.is_integer()
        and ids.null_count() == 0
        and path_ids.null_count() == 0
        and conv.height
        and len(path_ids)
    ):
        joined = (
            pl.DataFrame({"path_id": path_ids})
            .with_row_index("_i")
            .join(_conversion_table(conversions), on="path_id", how="left")
            .sort("_i")
        )
        return (
            joined["converted"].fill_null(False).cast(pl.Float64).to_numpy(),
            joined["value"].fill_null(0.0).to_numpy().astype(np.float64),
        )
    raw = ids.cast(pl.Int64).to_numpy()
    converted = conv["converted"].to_numpy()
    value = conv["value"]
    if np.all(raw[1:] > raw[:-1]):  # already sorted and unique
        keys = raw
    else:
        order = np.argsort(raw, kind="stable")
        keys = raw[order]
        last = np.ones(len(keys), dtype=bool)  # the last row of each run of equal ids
        last[:-1] = keys[1:] != keys[:-1]
        keys, rows = keys[last], order[last]
        converted, value = converted[rows], value.gather(rows)
    if value.null_count():
        raise ValueError("conversions: a converted path has a null value")
    values = value.to_numpy()
    wanted = path_ids.cast(pl.Int64).to_numpy()
    if len(keys) == len(wanted) and np.array_equal(keys, wanted):
        return converted.astype(np.float64), values.astype(np.float64)
    at = np.searchsorted(keys, wanted).clip(max=len(keys) - 1)
    found = keys[at] == wanted
    return (
        np.where(found, converted[at], False).astype(np.float64),
        np.where(found, values[at], 0.0).astype(np.float64),
    )


def _touch_table(
    touchpoints: pl.DataFrame, conversions: pl.DataFrame, touch_key: str
) -> pl.DataFrame:
    """Touches ordered per path, with pos, n and the path's conversion outcome attached."""
    needed = {"path_id", "at", touch_key}
    if missing := needed - set(touchpoints.columns):
        raise ValueError(f"touchpoints lack column(s): {sorted(missing)}")
    cols: list[pl.Expr] = [
        pl.col("path_id"),
        pl.col("at"),
        pl.col(touch_key).cast(pl.String).alias("touch"),
    ]
    for flag in ("is_lead_creation", "is_opportunity_creation"):
        if flag in touchpoints.columns:
            cols.append(pl.col(flag).fill_null(False).cast(pl.Boolean))
    if "person_id" in touchpoints.columns:
        cols.append(pl.col("person_id"))
    if touchpoints[touch_key].null_count():
        raise ValueError(f"touchpoints: {touch_key!r} has null values")
    conv = _conversion_table(conversions)
    return (
        touchpoints.select(cols)
        .with_row_index("_row")
        .sort("path_id", "at", "_row")
        .with_columns(
            pos=pl.int_range(pl.len()).over("path_id"),
            n=pl.len().over("path_id"),
        )
        .join(conv, on="path_id", how="left")
        .with_columns(pl.col("converted").fill_null(False), pl.col("value").fill_null(0.0))
    )


def _in_path_order(path_id: pl.Series, at: pl.Series) -> bool:
    """True when rows are already sorted by (path_id, at), so a stable sort would not move
    them (checked for numeric ids and times without nulls; otherwise assume not)."""
    numeric = (path_id.dtype.is_integer(), at.dtype.is_numeric() or at.dtype.is_temporal())
    if not all(numeric) or path_id.null_count() or at.null_count() or path_id.len() < 2:
        return False
    pid = path_id.to_physical().to_numpy()
    when = at.to_physical().to_numpy()
    same = pid[1:] == pid[:-1]
    return bool(np.all((pid[1:] > pid[:-1]) | (same & (when[1:] >= when[:-1]))))


def group_paths(
    touchpoints: pl.DataFrame, conversions: pl.DataFrame, *, touch_key: str = "channel"
) -> PathSummary:
    """Group identical paths (same touch sequence) and count journeys, conversions, value.

    Touches are sorted per path (by ``at``, ties in input order) and coded by their rank among
    the distinct key values; each path's codes become one fixed-width byte string, the key of a
    single hash group-by. Unique paths come out in order of first appearance.
    """
    if missing := {"path_id", "at", touch_key} - set(touchpoints.columns):
        raise ValueError(f"touchpoints lack column(s): {sorted(missing)}")
    if touchpoints[touch_key].null_count():
        raise ValueError(f"touchpoints: {touch_key!r} has null values")
    touch = touchpoints[touch_key].cast(pl.String)
    names = touch.unique().sort()
    if touchpoints.height == 0:
        return PathSummary(
            touch_key=touch_key,
            touches=(),
            codes=np.zeros(0, dtype=np.int64),
            offsets=np.zeros(1, dtype=np.int64),
            paths=np.zeros(0),
            conversions=np.zeros(0),
            value=np.zeros(0),
        )
    width = 1 if len(names) < 256 else 2 if len(names) < 65_536 else 4
    small = {1: pl.UInt8, 2: pl.UInt16, 4: pl.UInt32}[width]
    # code before sorting: the sort then moves small integers, not strings
    t = pl.DataFrame(
        {
            "path_id": touchpoints["path_id"],
            "at": touchpoints["at"],
            "code": touch.cast(pl.Enum(names)).to_physical().cast(small),
        }
    )
    if not _in_path_order(t["path_id"], t["at"]):
        t = t.sort("path_id", "at", maintain_order=True)
    codes0 = t["code"].to_numpy()
    path_col = t["path_id"]
    new_path = path_col.ne_missing(path_col.shift(1)).fill_null(True).to_numpy()
    new_path[0] = True
    starts = np.flatnonzero(new_path)
    offsets = np.empty(len(starts) + 1, dtype=np.int64)
    offsets[:-1] = starts
    offsets[-1] = len(codes0)
    key = pl.Series(
        "key",
        pa.Array.from_buffers(
            pa.large_binary(),
            len(starts),
            [None, pa.py_buffer(offsets * width), pa.py_buffer(np.ascontiguousarray(codes0))],
        ),
    )
    converted, value = _path_outcomes(path_col.gather(starts), conversions)
    grouped = (
        pl.DataFrame({"key": key, "converted": converted, "value": value})
        .with_row_index("_first")
        .group_by("key")
        .agg(
            pl.col("_first").min(),
            paths=pl.len(),
            conversions=pl.col("converted").sum(),
            value=pl.col("value").sum(),
        )
    )
    by_first = np.argsort(grouped["_first"].to_numpy())
    grouped = grouped[by_first]
    first = grouped["_first"].to_numpy().astype(np.int64)
    lengths = offsets[1:][first] - offsets[:-1][first]
    new_offsets = np.zeros(len(first) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    # flat positions of the representatives' touches
    take = np.arange(new_offsets[-1]) - np.repeat(new_offsets[:-1] - offsets[:-1][first], lengths)
    return PathSummary(
        touch_key=touch_key,
        touches=tuple(names.to_list()),
        codes=codes0[take].astype(np.int64) + 1,
        offsets=new_offsets,
        paths=grouped["paths"].to_numpy().astype(np.float64),
        conversions=grouped["conversions"].to_numpy().astype(np.float64),
        value=grouped["value"].to_numpy().astype(np.float64),
    )


# --------------------------------------------------------------------------- heuristics


def _heuristic_weights(t: pl.DataFrame, model: str, half_life_days: float) -> pl.Expr:
    pos, n = pl.col("pos"), pl.col("n")
    if model == "first_touch":
        return (pos == 0).cast(pl.Float64)
    if model == "last_touch":
        return (pos == n - 1).cast(pl.Float64)
    if model == "linear":
        return 1.0 / n
    if model == "time_decay":
        if half_life_days <= 0:
            raise ValueError("time decay: half_life_days must be positive")
        end = pl.col("at").max().over("path_id")
        if "converted_at" in t.columns:
            end = pl.coalesce(pl.col("converted_at"), end)
        age = ((end - pl.col("at")).dt.total_microseconds() / 86_400_000_000).clip(lower_bound=0)
        raw = (2.0 ** (-age / half_life_days)).alias("_raw")
        return raw / raw.sum().over("path_id")
    slots, rest = POSITIONAL[model]
    w_first, w_lc, w_oc, w_last = slots
    needs = [
        name
        for name, w in (("is_lead_creation", w_lc), ("is_opportunity_creation", w_oc))
        if w and name not in t.columns
    ]
    if needs:
        raise ValueError(f"{model} needs touchpoint column(s) {needs}")
    zero = pl.lit(None, dtype=pl.Int64)
    lc = pl.col("pos").filter(pl.col("is_lead_creation")).min().over("path_id") if w_lc else zero
    oc = (
        pl.col("pos").filter(pl.col("is_opportunity_creation")).min().over("path_id")
        if w_oc
        else zero
    )
    milestone = (
        pl.when(pos == 0).then(w_first).otherwise(0.0)
        + pl.when(pos == lc).then(w_lc).otherwise(0.0)
        + pl.when(pos == oc).then(w_oc).otherwise(0.0)
        + pl.when(pos == n - 1).then(w_last).otherwise(0.0)
    )
    last_slot = (pos == n - 1) if w_last else pl.lit(False)
    is_slot = (pos == 0) | last_slot | pos.eq(lc).fill_null(False) | pos.eq(oc).fill_null(False)
    rest_count = (~is_slot).cast(pl.Int64).sum().over("path_id")
    present = (
        w_first
        + w_last
        + pl.when(lc.is_not_null()).then(w_lc).otherwise(0.0)
        + pl.when(oc.is_not_null()).then(w_oc).otherwise(0.0)
        + pl.when(rest_count > 0).then(rest).otherwise(0.0)
    )
    share = milestone.fill_null(0.0) + pl.when(~is_slot).then(rest / rest_count).otherwise(0.0)
    return share / present


def _credits_from_touches(
    t: pl.DataFrame, weight: pl.Expr, model: str, touch_key: str
) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    scored = (
        t.filter(pl.col("converted"))
        .with_columns(w=weight)
        .with_columns(c_conv=pl.col("w"), c_value=pl.col("w") * pl.col("value"))
    )
    credits = _shape_credits(
        scored.group_by("touch").agg(
            conversions=pl.col("c_conv").sum(), value=pl.col("c_value").sum()
        ),
        model,
        touch_key,
    )
    per_person = None
    if "person_id" in t.columns:
        per_person = (
            scored.group_by("person_id")
            .agg(conversions=pl.col("c_conv").sum(), value=pl.col("c_value").sum())
            .with_columns(model=pl.lit(model))
            .sort("value", "conversions", descending=True)
            .select("model", "person_id", "conversions", "value")
        )
    return credits, per_person


def _shape_credits(frame: pl.DataFrame, model: str, touch_key: str) -> pl.DataFrame:
    total = frame["value"].sum()
    return (
        frame.with_columns(
            model=pl.lit(model),
            touch_key=pl.lit(touch_key),
            share_of_value=pl.col("value") / total if total else pl.lit(None, pl.Float64),
        )
        .sort(["value", "conversions", "touch"], descending=[True, True, False])
        .select("model", "touch_key", "touch", "conversions", "value", "share_of_value")
    )


# --------------------------------------------------------------------------- Markov


@dataclass(frozen=True)
class RemovalEffects:
    """Exact removal effects of an order-k absorbing Markov chain."""

    order: int
    touches: tuple[str, ...]
    conversion_probability: float
    expected_value: float
    removal_conversions: np.ndarray
    removal_value: np.ndarray
    n_states: int
    solver: str = "dense"

    def to_frame(self) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "touch": list(self.touches),
                "removal_effect_conversions": self.removal_conversions,
                "removal_effect_value": self.removal_value,
            }
        )


def _weighted_bincount(
    x: npt.ArrayLike, weights: npt.ArrayLike, minlength: int = 0
) -> npt.NDArray[np.float64]:
    """``np.bincount`` with weights: float64 sums per bin (numpy's stub says intp for every
    bincount, weighted or not, so the cast states what numpy returns here)."""
    return cast("npt.NDArray[np.float64]", np.bincount(x, weights=weights, minlength=minlength))


def _states(paths: PathSummary, order: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Per flat touch position: state index (1..S; 0 is start) and per-state digit matrix."""
    base = len(paths.touches) + 1
    if base**order >= 2**62:
        raise ValueError(f"markov: order {order} with {base - 1} touch values is too large")
    codes = paths.codes
    if order == 1:  # codes are already dense 1..C: the state is the touch itself
        n_touch = len(paths.touches)
        return codes.astype(np.int64), np.arange(1, n_touch + 1).reshape(-1, 1), n_touch + 1
    lengths = np.diff(paths.offsets)
    pos = np.arange(len(codes)) - np.repeat(paths.offsets[:-1], lengths)
    key = np.zeros(len(codes), dtype=np.int64)
    for d in range(order):
        prev = np.zeros(len(codes), dtype=np.int64)
        if d == 0:
            prev = codes.copy()
        else:
            ok = pos >= d
            prev[d:][ok[d:]] = codes[:-d][ok[d:]]
        key = key * base + prev
    uniq, inverse = np.unique(key, return_inverse=True)
    digits = np.empty((len(uniq), order), dtype=np.int64)
    rest = uniq.copy()
    for d in range(order):
        digits[:, order - 1 - d] = rest % base
        rest //= base
    return inverse.astype(np.int64) + 1, digits, len(uniq) + 1


def _iterative_removal(
    q: Any, r_conv: np.ndarray, r_val: np.ndarray, member: Any
) -> tuple[tuple[float, float], np.ndarray, np.ndarray]:
    """Absorption from (start) for the full chain and with each touch removed, by Jacobi
    sweeps ``x <- (Q_off x + r) / (1 - Q_ii)`` on a sparse ``Q`` (no factorisation: the LU of
    an order-2/3 chain over hundreds of touches fills in to gigabytes).

    The removals run in blocks of :data:`ITERATIVE_BLOCK` touches, two columns each
    (conversions, value), warm-started from the full chain's solution with the removed states
    set to 0, and stop when no entry moves by more than :data:`ITERATIVE_TOL` of the largest
    entry (checked every 4th sweep). A block that has not converged after
    :data:`ITERATIVE_MAX_SWEEPS` sweeps raises. Memory: ``Q`` plus a few
    ``states x 2 * ITERATIVE_BLOCK`` float arrays."""
    n_states = q.shape[0]
    diag = q.diagonal()
    q_off = (q - sp.diags(diag)).tocsr()
    q_off.eliminate_zeros()
    scale = 1.0 / (1.0 - diag)
    rhs = np.column_stack([r_conv, r_val]) * scale[:, None]

    def solve(x: np.ndarray, factor: np.ndarray, const: np.ndarray) -> np.ndarray:
        top = max(float(np.abs(const).max()), 1e-300)
        for sweep in range(ITERATIVE_MAX_SWEEPS):
            nxt = q_off @ x
            nxt *= factor
            nxt += const
            if sweep % 4 != 3:  # the convergence check costs as much as a sweep
                x = nxt
                continue
            x -= nxt
            moved = float(np.abs(x).max())
            x = nxt
            top = max(top, float(np.abs(x).max()))
            if moved <= ITERATIVE_TOL * top:
                return x
        raise ArithmeticError(
            f"markov: removal effects did not converge in {ITERATIVE_MAX_SWEEPS} sweeps"
        )

    full = solve(rhs.copy(), scale[:, None], rhs)
    n_touch = member.shape[0]
    p_removed, v_removed = np.empty(n_touch), np.empty(n_touch)
    by_touch = member.tocsr()
    for b0 in range(0, n_touch, ITERATIVE_BLOCK):
        width = min(ITERATIVE_BLOCK, n_touch - b0)
        keep = np.ones((n_states, 2 * width))
        for i in range(width):
            c = b0 + i
            gone = by_touch.indices[by_touch.indptr[c] : by_touch.indptr[c + 1]]
            keep[gone, 2 * i : 2 * i + 2] = 0.0
        x = np.tile(full, (1, width)) * keep
        const = np.tile(rhs, (1, width)) * keep
        keep *= scale[:, None]
        x = solve(x, keep, const)
        p_removed[b0 : b0 + width] = x[0, 0::2]
        v_removed[b0 : b0 + width] = x[0, 1::2]
    return (float(full[0, 0]), float(full[0, 1])), p_removed, v_removed


def removal_effects(paths: PathSummary, order: int = 1, *, solver: str = "auto") -> RemovalEffects:
    """Removal effects for conversions and for value (absorbing-chain linear algebra).

    ``solver``: ``"auto"`` (order 1 up to :data:`DENSE_STATE_LIMIT` states: dense inverse
    and Sherman-Morrison; otherwise sparse iteration), ``"dense"``, ``"iterative"`` or
    ``"lu"`` (one sparse LU per touch: exact but only for small chains; a cross-check)."""
    if order < 1:
        raise ValueError("markov: order must be >= 1")
    if solver not in ("auto", "dense", "iterative", "lu"):
        raise ValueError(f"markov: unknown solver {solver!r}")
    state, digits, n_states = _states(paths, order)
    lengths = np.diff(paths.offsets)
    first = paths.offsets[:-1]
    last = paths.offsets[1:] - 1
    weight = np.repeat(paths.paths, lengths)
    src = np.empty_like(state)
    src[1:] = state[:-1]
    src[first] = 0
    out = _weighted_bincount(src, weights=weight, minlength=n_states)
    out += _weighted_bincount(state[last], weights=paths.paths, minlength=n_states)
    conv = _weighted_bincount(state[last], weights=paths.conversions, minlength=n_states)
    val = _weighted_bincount(state[last], weights=paths.value, minlength=n_states)
    with np.errstate(invalid="ignore", divide="ignore"):
        inv_out = np.where(out > 0, 1.0 / out, 0.0)
    r_conv, r_val = conv * inv_out, val * inv_out
    n_touch = len(paths.touches)
    p_removed = np.empty(n_touch)
    v_removed = np.empty(n_touch)
    # auto: the dense inverse only where Sherman-Morrison makes it one step (order 1); the
    # sparse sweeps beat a dense inverse already at order 2-3 over a dozen touches
    dense = solver == "dense" or (solver == "auto" and order == 1 and n_states <= DENSE_STATE_LIMIT)
    # I - Q: a dense ndarray, or a scipy.sparse CSC matrix (scipy ships no types)
    a: Any
    if dense:
        # transition counts straight into a dense matrix (no sparse build and index sort)
        a = -_weighted_bincount(
            src * n_states + state, weights=weight, minlength=n_states * n_states
        )
        a = a.reshape(n_states, n_states)
        a *= inv_out[:, None]
        a[np.diag_indices(n_states)] += 1.0
    else:
        q = sp.csr_matrix((weight * inv_out[src], (src, state)), shape=(n_states, n_states))
        a = (sp.identity(n_states, format="csr") - q).tocsc()
    if order == 1 and dense:
        # state j is touch j: removing it makes j absorb into (null). Sherman-Morrison on the
        # fundamental matrix N = (I - Q)^-1: x_-j(start) = x(start) - N[start, j] x_j / N[j, j]
        # (N[j, j] >= 1), for every touch at once.
        fundamental = np.linalg.inv(a)
        x = fundamental @ np.column_stack([r_conv, r_val])
        corr = (fundamental[0, 1:] / np.diagonal(fundamental)[1:])[:, None] * x[1:]
        p_removed, v_removed = (x[0] - corr).T
        p, v = x[0]
    else:
        # membership: states (rows) containing touch c (1-based digits)
        rows = np.repeat(np.arange(1, n_states), order)
        cols = digits.ravel()
        keep = cols > 0
        member = sp.csr_matrix(
            (np.ones(keep.sum()), (cols[keep] - 1, rows[keep])), shape=(n_touch, n_states)
        )
        member.sum_duplicates()
        if dense:
            fundamental = np.linalg.inv(a)
            x = fundamental @ np.column_stack([r_conv, r_val])
            for c in range(n_touch):
                rem = member.indices[member.indptr[c] : member.indptr[c + 1]]
                if len(rem) == 1:
                    j = rem[0]
                    corr = fundamental[0, j] * x[j] / fundamental[j, j]
                else:
                    corr = fundamental[0, rem] @ np.linalg.solve(
                        fundamental[np.ix_(rem, rem)], x[rem]
                    )
                p_removed[c], v_removed[c] = x[0] - corr
            p, v = x[0]
        elif solver == "lu":
            lu = spla.splu(a)
            x = np.column_stack([lu.solve(r_conv), lu.solve(r_val)])
            p, v = x[0]
            for c in range(n_touch):
                mask = np.ones(n_states, dtype=bool)
                mask[member.indices[member.indptr[c] : member.indptr[c + 1]]] = False
                sub = a[mask][:, mask].tocsc()
                xs = spla.splu(sub).solve(np.column_stack([r_conv[mask], r_val[mask]]))
                p_removed[c], v_removed[c] = xs[0]
        else:
            (p, v), p_removed, v_removed = _iterative_removal(
                sp.identity(n_states, format="csr") - a.tocsr(), r_conv, r_val, member
            )
    re_conv = 1.0 - p_removed / p if p > 0 else np.zeros(n_touch)
    re_val = 1.0 - v_removed / v if v > 0 else np.zeros(n_touch)
    return RemovalEffects(
        order=order,
        touches=paths.touches,
        conversion_probability=float(p),
        expected_value=float(v),
        removal_conversions=np.clip(re_conv, 0.0, 1.0),
        removal_value=np.clip(re_val, 0.0, 1.0),
        n_states=n_states,
        solver="dense" if dense else solver if solver == "lu" else "iterative",
    )


def markov(
    paths: PathSummary,
    *,
    order: int = 1,
    allocation: str = "removal_share",
    touch_table: pl.DataFrame | None = None,
) -> Attribution:
    """Markov removal-effect credits from grouped paths (see the module docstring).

    ``allocation="per_touch"`` splits each converted path by its touches' removal effects;
    pass ``touch_table`` (from :func:`attribute`) to also get per-person credit.
    """
    re = removal_effects(paths, order)
    total_conv = float(paths.conversions.sum())
    total_value = float(paths.value.sum())
    name = f"markov_order_{order}"
    per_person = None
    if allocation == "removal_share":
        s_conv, s_val = re.removal_conversions.sum(), re.removal_value.sum()
        frame = pl.DataFrame(
            {
                "touch": list(paths.touches),
                "conversions": re.removal_conversions / s_conv * total_conv if s_conv else 0.0,
                "value": re.removal_value / s_val * total_value if s_val else 0.0,
            }
        )
    elif allocation == "per_touch":
        weights = np.concatenate([[0.0], re.removal_conversions])[paths.codes]
        lengths = np.diff(paths.offsets)
        sums = np.add.reduceat(weights, paths.offsets[:-1]) if len(weights) else weights
        share = weights / np.repeat(np.where(sums > 0, sums, 1.0), lengths)
        n_touch = len(paths.touches)
        conv = _weighted_bincount(
            paths.codes - 1,
            weights=share * np.repeat(paths.conversions, lengths),
            minlength=n_touch,
        )
        val = _weighted_bincount(
            paths.codes - 1, weights=share * np.repeat(paths.value, lengths), minlength=n_touch
        )
        frame = pl.DataFrame({"touch": list(paths.touches), "conversions": conv, "value": val})
        if touch_table is not None:
            re_map = pl.DataFrame({"touch": list(paths.touches), "_re": re.removal_conversions})
            t = touch_table.join(re_map, on="touch", how="left")
            weight = pl.col("_re") / pl.col("_re").sum().over("path_id")
            _, per_person = _credits_from_touches(t, weight.fill_nan(0.0), name, paths.touch_key)
    else:
        raise ValueError(f"markov: unknown allocation {allocation!r}")
    return Attribution(
        model=name,
        touch_key=paths.touch_key,
        credits=_shape_credits(frame, name, paths.touch_key),
        per_person=per_person,
        total_conversions=total_conv,
        total_value=total_value,
        parameters={
            "order": order,
            "allocation": allocation,
            "states": re.n_states,
            "solver": re.solver,
        },
        details=re.to_frame(),
        definition=f"order-{order} absorbing Markov chain, removal effects "
        + ("by sparse sweeps to 1e-13" if re.solver == "iterative" else "exact")
        + f", {allocation} allocation",
    )


# --------------------------------------------------------------------------- Shapley


def _path_sets(paths: PathSummary) -> tuple[np.ndarray, np.ndarray]:
    """Distinct touch codes per unique path (flat, 0-based) and their offsets."""
    lengths = np.diff(paths.offsets)
    owner = np.repeat(np.arange(paths.n_unique), lengths)
    pairs = np.unique(owner * (len(paths.touches) + 1) + paths.codes)
    owner_u = pairs // (len(paths.touches) + 1)
    codes_u = pairs % (len(paths.touches) + 1) - 1
    offsets = np.searchsorted(owner_u, np.arange(paths.n_unique + 1))
    return codes_u, offsets


def _subset_sums(f: np.ndarray, n: int) -> np.ndarray:
    g = f.copy()
    for i in range(n):
        view = g.reshape(-1, 2, 1 << i)
        view[:, 1, :] += view[:, 0, :]
    return g


def _shapley_from_game(v: np.ndarray, n: int) -> np.ndarray:
    masks = np.arange(1 << n)
    size = np.zeros(1 << n, dtype=np.int64)
    for i in range(n):
        size += (masks >> i) & 1
    weights = np.array([factorial(s) * factorial(n - s - 1) / factorial(n) for s in range(n)])
    phi = np.empty(n)
    for i in range(n):
        without = masks[(masks >> i) & 1 == 0]
        phi[i] = np.sum(weights[size[without]] * (v[without | (1 << i)] - v[without]))
    return phi


def shapley(
    paths: PathSummary,
    *,
    characteristic: str = "conversions",
    method: str = "auto",
    max_exact_players: int = 15,
    n_permutations: int = 2000,
    seed: int = 0,
) -> Attribution:
    """Shapley-value credits (see the module docstring for both characteristic functions)."""
    n = len(paths.touches)
    codes, offs = _path_sets(paths)
    set_size = np.diff(offs)
    total_conv, total_value = float(paths.conversions.sum()), float(paths.value.sum())
    if characteristic not in ("conversions", "conversion_rate"):
        raise ValueError(f"shapley: unknown characteristic {characteristic!r}")
    exact = n <= max_exact_players
    se_conv, se_val = np.zeros(n), np.zeros(n)  # exact methods: no sampling error
    if method not in ("auto", "coalitions", "sampled"):
        raise ValueError(f"shapley: unknown method {method!r}")
    if method == "coalitions" and not exact:
        raise ValueError(f"shapley: {n} players is too many to enumerate (max {max_exact_players})")
    if characteristic == "conversions" and method != "coalitions":
        used = "closed_form"
        owner = np.repeat(np.arange(paths.n_unique), set_size)
        conv = _weighted_bincount(codes, (paths.conversions / set_size)[owner], minlength=n)
        val = _weighted_bincount(codes, (paths.value / set_size)[owner], minlength=n)
    elif exact and method != "sampled":
        used = "coalitions"
        mask = np.bitwise_or.reduceat(np.left_shift(1, codes), offs[:-1]) if n else codes
        size = 1 << n
        c_sum = _subset_sums(_weighted_bincount(mask, paths.conversions, minlength=size), n)
        v_sum = _subset_sums(_weighted_bincount(mask, paths.value, minlength=size), n)
        if characteristic == "conversions":
            conv, val = _shapley_from_game(c_sum, n), _shapley_from_game(v_sum, n)
        else:
            count = _subset_sums(_weighted_bincount(mask, paths.paths, minlength=size), n)
            safe = np.where(count > 0, count, 1.0)
            conv = _shapley_from_game(np.where(count > 0, c_sum / safe, 0.0), n)
            val = _shapley_from_game(np.where(count > 0, v_sum / safe, 0.0), n)
    else:
        used = "sampled_permutations"
        rng = np.random.default_rng(seed)
        conv, val = np.zeros(n), np.zeros(n)
        conv_sq, val_sq = np.zeros(n), np.zeros(n)
        for _ in range(n_permutations):
            order = rng.permutation(n)
            rank = np.empty(n, dtype=np.int64)
            rank[order] = np.arange(n)
            complete = np.maximum.reduceat(rank[codes], offs[:-1])
            cnt = np.cumsum(_weighted_bincount(complete, paths.paths, minlength=n))
            safe = np.where(cnt > 0, cnt, 1.0)
            for target, square, amount in (
                (conv, conv_sq, paths.conversions),
                (val, val_sq, paths.value),
            ):
                cum = np.cumsum(_weighted_bincount(complete, amount, minlength=n))
                game = np.where(cnt > 0, cum / safe, 0.0)
                marginal = np.diff(game, prepend=0.0)
                target[order] += marginal
                square[order] += marginal**2
        conv /= n_permutations
        val /= n_permutations
        # each permutation is an independent draw of every player's marginal contribution
        dof = max(n_permutations - 1, 1)
        se_conv = np.sqrt(np.maximum(conv_sq / n_permutations - conv**2, 0.0) / dof)
        se_val = np.sqrt(np.maximum(val_sq / n_permutations - val**2, 0.0) / dof)
    raw_conv, raw_val = conv.copy(), val.copy()
    if characteristic == "conversion_rate":
        k_conv = total_conv / conv.sum() if conv.sum() else 1.0
        k_val = total_value / val.sum() if val.sum() else 1.0
        conv, val = conv * k_conv, val * k_val
        se_conv, se_val = se_conv * abs(k_conv), se_val * abs(k_val)
    name = f"shapley_{characteristic}"
    frame = pl.DataFrame({"touch": list(paths.touches), "conversions": conv, "value": val})
    details = pl.DataFrame(
        {
            "touch": list(paths.touches),
            "raw_conversions": raw_conv,
            "raw_value": raw_val,
            "std_error_conversions": se_conv,
            "std_error_value": se_val,
        }
    )
    return Attribution(
        model=name,
        touch_key=paths.touch_key,
        credits=_shape_credits(frame, name, paths.touch_key),
        per_person=None,
        total_conversions=total_conv,
        total_value=total_value,
        parameters={
            "characteristic": characteristic,
            "method": used,
            "players": n,
            **({"n_permutations": n_permutations, "seed": seed} if used.startswith("s") else {}),
            "max_std_error_conversions": float(se_conv.max()) if n else 0.0,
            "max_std_error_value": float(se_val.max()) if n else 0.0,
        },
        details=details,
        definition=f"Shapley value, characteristic {characteristic}, computed by {used}",
    )


# --------------------------------------------------------------------------- entry points


def attribute(
    touchpoints: pl.DataFrame,
    conversions: pl.DataFrame,
    *,
    model: str,
    touch_key: str = "channel",
    half_life_days: float = 7.0,
    order: int = 1,
    allocation: str = "removal_share",
    characteristic: str = "conversions",
    shapley_method: str = "auto",
    n_permutations: int = 2000,
    seed: int = 0,
    _prepared: dict[str, Any] | None = None,
) -> Attribution:
    """Credit converted paths' conversions and value to touch-key values with one model.

    ``_prepared`` (see :func:`attribute_models`) keeps the ordered touch table and the
    grouped paths between calls on the same input."""
    if model not in MODELS:
        raise ValueError(f"unknown attribution model {model!r}; choose one of {MODELS}")
    prepared = {} if _prepared is None else _prepared
    if "t" not in prepared:
        prepared["t"] = _touch_table(touchpoints, conversions, touch_key)
    t = prepared["t"]
    total_conv = float(t.filter(pl.col("pos") == 0)["converted"].sum())
    total_value = float(t.filter(pl.col("pos") == 0)["value"].sum())
    if model in HEURISTIC_MODELS:
        credits, per_person = _credits_from_touches(
            t, _heuristic_weights(t, model, half_life_days), model, touch_key
        )
        params: dict[str, Any] = {"half_life_days": half_life_days} if model == "time_decay" else {}
        if model in POSITIONAL:
            slots, rest = POSITIONAL[model]
            params = {"first": slots[0], "lead_creation": slots[1]}
            params |= {"opportunity_creation": slots[2], "last": slots[3], "rest": rest}
        return Attribution(
            model=model,
            touch_key=touch_key,
            credits=credits,
            per_person=per_person,
            total_conversions=total_conv,
            total_value=total_value,
            parameters=params,
            definition=f"{model} heuristic (see leadflow.core.attribution)",
        )
    if "paths" not in prepared:
        prepared["paths"] = group_paths(touchpoints, conversions, touch_key=touch_key)
    paths = prepared["paths"]
    if model == "markov":
        return markov(paths, order=order, allocation=allocation, touch_table=t)
    return shapley(
        paths,
        characteristic=characteristic,
        method=shapley_method,
        n_permutations=n_permutations,
        seed=seed,
    )


def attribute_models(
    touchpoints: pl.DataFrame,
    conversions: pl.DataFrame,
    runs: Sequence[tuple[str, int]],
    **options: Any,
) -> list[Attribution]:
    """:func:`attribute` for each ``(model, order)`` in ``runs``, the touch table and the
    grouped paths built once for all of them."""
    prepared: dict[str, Any] = {}
    return [
        attribute(touchpoints, conversions, model=m, order=k, _prepared=prepared, **options)
        for m, k in runs
    ]


def attribute_all(
    touchpoints: pl.DataFrame,
    conversions: pl.DataFrame,
    *,
    touch_key: str = "channel",
    models: Sequence[str] | None = None,
    half_life_days: float = 7.0,
    orders: Sequence[int] = (1, 2, 3),
) -> list[Attribution]:
    """Several models side by side (W-shaped and full path only when the flags exist)."""
    flags = {"is_lead_creation", "is_opportunity_creation"} <= set(touchpoints.columns)
    chosen = list(models or [m for m in MODELS if flags or m not in ("w_shaped", "full_path")])
    results = []
    for name in chosen:
        for k in orders if name == "markov" else (1,):
            results.append(
                attribute(
                    touchpoints,
                    conversions,
                    model=name,
                    touch_key=touch_key,
                    half_life_days=half_life_days,
                    order=k,
                )
            )
    return results


def account_paths(
    touches: pl.DataFrame,
    opportunities: pl.DataFrame,
    *,
    account_col: str = "account_id",
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Account-level paths: every touch of every person at the account before the
    opportunity's creation, one path per opportunity, converted = won, value = amount.

    ``touches`` needs ``account_col``, ``person_id``, ``at`` and the touch keys;
    ``opportunities`` needs ``opportunity_id``, ``account_col``, ``created_at``, ``amount``,
    ``won``. Returns ``(touchpoints, conversions)`` ready for :func:`attribute`; because
    ``person_id`` is kept, heuristic credits come back per person as well.
    """
    opp = opportunities.select(
        pl.col("opportunity_id").alias("path_id"),
        pl.col(account_col),
        pl.col("created_at"),
        pl.col("amount").cast(pl.Float64),
        pl.col("won").cast(pl.Boolean),
    )
    tp = (
        touches.join(opp.select("path_id", account_col, "created_at"), on=account_col)
        .filter(pl.col("at") < pl.col("created_at"))
        .drop("created_at")
    )
    conv = opp.select("path_id", converted=pl.col("won"), value=pl.col("amount"))
    return tp, conv
