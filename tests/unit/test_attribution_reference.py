"""Our attribution against independent implementations on the same seeded paths.

Test-only dependencies (never imported by ``src``): ``ChannelAttribution`` (C++ Monte Carlo
Markov + heuristics) and ``marketing-attribution-models`` (``mam``, exact Markov via the
fundamental matrix). Both must be installed; a missing one fails the module, it never skips.

Definitional notes, read from their installed source:
- ChannelAttribution reads grouped paths (``"a > b > c"`` with ``sep=">"``, whitespace
  trimmed) with ``total_conversions``, ``total_conversion_value``, ``total_null``. Its
  ``markov_model`` simulates the order-1 chain and estimates removal effects as the share of
  simulated conversions whose path visited the channel -- the same quantity as our exact
  ``1 - P(conversion without c) / P(conversion)`` -- and credits ``RE_c / sum(RE)`` of the
  total (our ``allocation="removal_share"``). Simulation noise and its step cap make it agree
  within a tolerance, not exactly; we run it with 1e6 simulations.
- mam (``run_markov``) drops self-transitions (``transition_to_same_state=False``) -- this does
  not change absorption probabilities, so removal effects are identical -- and counts paths
  without conversion as transitions to ``(null)``, like us. Its aggregated attribution does
  NOT use removal shares of the total: each converted journey's value is split over its
  touches in proportion to their channels' removal effects, i.e. our
  ``allocation="per_touch"``. We compare both its removal effects and that attribution.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

try:
    import ChannelAttribution as channel_attribution
    from mam import MAM
except ImportError as exc:  # pragma: no cover - exercised only when CI set-up is broken
    raise ImportError(
        "reference attribution tests need the test-only packages 'ChannelAttribution' and "
        "'marketing-attribution-models' (and 'matplotlib', which ChannelAttribution imports): "
        f"pip install ChannelAttribution marketing-attribution-models matplotlib ({exc})"
    ) from exc

from leadflow.core.attribution import attribute, group_paths

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def synthetic_paths(n_paths: int = 12_000, n_channels: int = 6, seed: int = 7):
    """Seeded journeys: channel popularity from a Dirichlet, conversion more likely the more
    high-lift channels a path holds, values only on conversions."""
    rng = np.random.default_rng(seed)
    lift = np.linspace(0.02, 0.12, n_channels)
    popularity = rng.dirichlet(np.full(n_channels, 2.0))
    lengths = rng.geometric(0.4, n_paths).clip(1, 8)
    path_ids, channels, ats, converted, values = [], [], [], [], []
    for p in range(n_paths):
        seq = rng.choice(n_channels, size=lengths[p], p=popularity)
        did = bool(rng.random() < 1 - np.prod(1 - lift[seq]))
        for i, s in enumerate(seq):
            path_ids.append(p)
            channels.append(f"ch{s}")
            ats.append(T0 + timedelta(hours=p % 500 + i))
        converted.append(did)
        values.append(float(rng.integers(100, 1000)) if did else 0.0)
    touches = pl.DataFrame({"path_id": path_ids, "at": ats, "channel": channels})
    conversions = pl.DataFrame(
        {"path_id": list(range(n_paths)), "converted": converted, "value": values}
    )
    return touches, conversions


@pytest.fixture(scope="module")
def data():
    touches, conversions = synthetic_paths()
    # Sorted, so ChannelAttribution's seeded simulation sees the same input order in every
    # process (group order is not fixed across processes); its estimate is then repeatable.
    grouped = (
        group_paths(touches, conversions)
        .to_frame(sep=" > ")
        .to_pandas()
        .sort_values("path")
        .reset_index(drop=True)
    )
    assert conversions.height >= 10_000
    return touches, conversions, grouped


def _ours(result) -> dict[str, tuple[float, float]]:
    return {r["touch"]: (r["conversions"], r["value"]) for r in result.to_rows()}


def test_first_last_linear_equal_channel_attribution_heuristic_models(data):
    touches, conversions, grouped = data
    theirs = channel_attribution.heuristic_models(
        grouped,
        "path",
        "total_conversions",
        var_value="total_conversion_value",
        sep=">",
        flg_pro=False,
    ).set_index("channel_name")
    for model, prefix in (
        ("first_touch", "first_touch"),
        ("last_touch", "last_touch"),
        ("linear", "linear_touch"),
    ):
        ours = _ours(attribute(touches, conversions, model=model))
        assert set(ours) == set(theirs.index)
        for channel, (conv, value) in ours.items():
            assert conv == pytest.approx(theirs.loc[channel, f"{prefix}_conversions"], rel=1e-9)
            assert value == pytest.approx(theirs.loc[channel, f"{prefix}_value"], rel=1e-9)


def _mam(touches: pl.DataFrame, conversions: pl.DataFrame):
    journeys = (
        touches.sort("path_id", "at")
        .group_by("path_id", maintain_order=True)
        .agg(pl.col("channel"))
        .join(conversions, on="path_id")
        .select(
            journey_id=pl.col("path_id").cast(pl.String),
            path=pl.col("channel").list.join(" > "),
            time_till_conv=pl.col("channel").list.eval(pl.lit("0")).list.join(" > "),
            converted=pl.col("converted"),
            value=pl.col("value"),
        )
    )
    return MAM(
        journeys,
        format_type="journey",
        channels_colname="path",
        journey_with_conv_colname="converted",
        user_id_colname="journey_id",
        time_till_conv_colname="time_till_conv",
        conversion_value_colname="value",
    ).run_markov()


def test_markov_order_1_equals_mam_exact_removal_effects_and_credits(data):
    touches, conversions, _ = data
    theirs = _mam(touches, conversions)
    their_re = theirs.metadata["removal_effect"]["removal_effect"].to_dict()
    their_credit = dict(theirs.to_polars().iter_rows())

    ours = attribute(touches, conversions, model="markov", order=1, allocation="per_touch")
    our_re = dict(ours.details.select("touch", "removal_effect_conversions").iter_rows())
    assert set(our_re) == set(their_re)
    for channel, re in our_re.items():
        assert re == pytest.approx(their_re[channel], rel=1e-6)
    for channel, (_, value) in _ours(ours).items():
        assert value == pytest.approx(their_credit[channel], rel=1e-6)
    # and the default allocation is the removal shares of the same removal effects
    shares = _ours(attribute(touches, conversions, model="markov"))
    total_re = sum(their_re.values())
    total_conv = float(conversions["converted"].sum())
    for channel, (conv, _) in shares.items():
        assert conv == pytest.approx(their_re[channel] / total_re * total_conv, rel=1e-6)


def test_markov_order_1_agrees_with_channel_attribution_monte_carlo_within_2_percent(data):
    touches, conversions, grouped = data
    theirs = channel_attribution.markov_model(
        grouped,
        "path",
        "total_conversions",
        var_value="total_conversion_value",
        var_null="total_null",
        order=1,
        sep=">",
        nsim_start=1_000_000,
        seed=1,
        verbose=False,
        flg_pro=False,
    ).set_index("channel_name")
    ours = _ours(attribute(touches, conversions, model="markov", order=1))
    assert set(ours) == set(theirs.index)
    for channel, (conv, value) in ours.items():
        assert conv == pytest.approx(theirs.loc[channel, "total_conversions"], rel=0.02)
        assert value == pytest.approx(theirs.loc[channel, "total_conversion_value"], rel=0.02)
