"""Look-alike target accounts on hand-made frames: ranking, explanation, valuation."""

from __future__ import annotations

import math

import polars as pl
import pytest

from leadflow.core import lookalike as lk


def _accounts(rows: list[tuple[int, str | None, int | None, str | None]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "id": [r[0] for r in rows],
            "industry": [r[1] for r in rows],
            "employee_count": [r[2] for r in rows],
            "country": [r[3] for r in rows],
        },
        schema={
            "id": pl.Int64,
            "industry": pl.String,
            "employee_count": pl.Int64,
            "country": pl.String,
        },
    )


def _deals(rows: list[tuple[int, float | None]]) -> pl.DataFrame:
    return pl.DataFrame(
        {"account_id": [r[0] for r in rows], "amount": [r[1] for r in rows]},
        schema={"account_id": pl.Int64, "amount": pl.Float64},
    )


# Won: four large Korean financial-services companies. The market also holds retailers,
# manufacturers and small firms.
MARKET = [
    (1, "Financial Services", 5000, "KR"),
    (2, "Financial Services", 2500, "KR"),
    (3, "financial services", 8000, "KR"),
    (4, "Financial Services", 1200, "JP"),
    (10, "Financial Services", 3000, "KR"),  # unseen, like the won ones
    (11, "Retail", 12, "US"),  # tiny retailer
    (12, "Retail", 40, "US"),
    (13, "Manufacturing", 300, "DE"),
    (14, "Manufacturing", 80, "US"),
    (15, "Retail", 20, "DE"),
    (16, None, None, None),  # an imported name with nothing known
]
WON = [(1, 1000.0), (2, 2000.0), (3, 3000.0), (4, 600.0), (1, 400.0)]


def test_a_company_like_the_won_ones_ranks_above_a_tiny_retailer():
    ranking = lk.rank(_accounts(MARKET), _deals(WON))
    order = [t.account_id for t in ranking.targets]
    assert order[0] == 10
    assert order.index(10) < order.index(11)
    by_id = {t.account_id: t for t in ranking.targets}
    assert by_id[10].score > 0.5 > by_id[11].score
    assert 0.0 < by_id[11].score < by_id[10].score < 1.0
    # Nothing known: no evidence either way.
    assert by_id[16].score == pytest.approx(0.5)
    assert by_id[16].reasons == [] and by_id[16].against == []
    assert ranking.won_accounts == 4 and ranking.won_deals == 5 and ranking.accounts == 11


def test_won_accounts_are_not_ranked_and_top_cuts():
    ranking = lk.rank(_accounts(MARKET), _deals(WON), top=3)
    ids = [t.account_id for t in ranking.targets]
    assert len(ids) == 3 and not {1, 2, 3, 4} & set(ids)
    assert [t.rank for t in ranking.targets] == [1, 2, 3]


def test_explanation_names_the_features_that_made_it_similar():
    target = next(t for t in lk.rank(_accounts(MARKET), _deals(WON)).targets if t.account_id == 10)
    assert [r.split("=")[0] for r in target.reasons] == sorted(
        (r.split("=")[0] for r in target.reasons),
        key=lambda f: -next(c.weight for c in target.contributions if c.feature == f),
    )
    text = " ".join(target.reasons)
    assert "industry=financial_services" in text
    assert "size=1000+" in text
    assert "country=KR" in text
    retailer = next(
        t for t in lk.rank(_accounts(MARKET), _deals(WON)).targets if t.account_id == 11
    )
    assert retailer.reasons == []
    assert any(a.startswith("industry=retail") for a in retailer.against)
    # Score is the sigmoid of the summed weights.
    assert target.score == pytest.approx(1 / (1 + math.exp(-target.evidence)))
    assert target.evidence == pytest.approx(sum(c.weight for c in target.contributions))


def test_deterministic_with_ties_broken_by_id():
    shuffled = _accounts(list(reversed(MARKET)))
    a = [t.as_dict() for t in lk.rank(_accounts(MARKET), _deals(WON)).targets]
    b = [t.as_dict() for t in lk.rank(shuffled, _deals(list(reversed(WON)))).targets]
    assert a == b
    # Two identical retailers (11 and 12 fall in the same band): lower id first.
    twins = _accounts([*MARKET, (20, "Retail", 12, "US")])
    ids = [t.account_id for t in lk.rank(twins, _deals(WON)).targets]
    assert ids.index(11) < ids.index(20)


def test_value_falls_back_from_segment_to_industry_to_overall():
    market = [
        (1, "Financial Services", 5000, "KR"),
        (2, "Financial Services", 5000, "KR"),
        (3, "Financial Services", 100, "KR"),
        (4, "Retail", 30, "US"),
        (10, "Financial Services", 4000, "KR"),  # segment fs x 1000+: 3 deals
        (11, "Financial Services", 150, "KR"),  # segment fs x 50-249: 1 deal -> industry
        (12, "Retail", 20, "US"),  # retail: 1 deal -> overall
        (13, None, 3000, None),  # no industry -> overall
    ]
    won = [(1, 100.0), (1, 200.0), (2, 300.0), (3, 1000.0), (4, 50.0), (4, None)]
    targets = {t.account_id: t for t in lk.rank(_accounts(market), _deals(won)).targets}
    assert (targets[10].value_basis, targets[10].value_deals) == ("segment", 3)
    assert targets[10].value == pytest.approx(200.0)
    assert (targets[11].value_basis, targets[11].value_deals) == ("industry", 4)
    assert targets[11].value == pytest.approx(400.0)
    assert (targets[12].value_basis, targets[12].value_deals) == ("overall", 5)
    assert targets[12].value == pytest.approx(330.0)
    assert targets[13].value_basis == "overall"
    # With a lower threshold one deal makes a segment its own basis.
    low = {t.account_id: t for t in lk.rank(_accounts(market), _deals(won), min_deals=1).targets}
    assert (low[12].value_basis, low[12].value) == ("segment", 50.0)
    assert low[11].value_basis == "segment" and low[11].value == pytest.approx(1000.0)


def test_no_amounts_means_no_value_but_a_ranking():
    targets = lk.rank(_accounts(MARKET), _deals([(1, None)])).targets
    assert targets and all(t.value is None and t.value_basis == "none" for t in targets)


def test_no_won_accounts_is_a_clear_error():
    with pytest.raises(lk.NoWonAccounts, match="no won accounts"):
        lk.rank(_accounts(MARKET), _deals([]))
    with pytest.raises(lk.NoWonAccounts):  # a deal on an unknown account does not count
        lk.rank(_accounts(MARKET), _deals([(999, 10.0)]))
    with pytest.raises(ValueError, match="top"):
        lk.rank(_accounts(MARKET), _deals(WON), top=0)


def test_size_bands_and_keys():
    assert lk.size_band(None) is None
    assert lk.size_band(0) is None
    assert lk.size_band(49) == "1-49" and lk.size_band(50) == "50-249"
    assert lk.size_band(10**7) == "1000+"
    assert lk.size_band("x") is None and lk.size_band(True) is None
    bands = (lk.Band("small", 0, 9), lk.Band("big", 10))
    assert lk.size_band(9, bands) == "small" and lk.size_band(10, bands) == "big"
    assert lk.normal_key(" IT & Software ") == "it_software"
    assert lk.normal_key("  ") is None


def test_categorical_traits_join_the_profile():
    frame = _accounts(MARKET).with_columns(
        pl.Series(
            "traits",
            [{"cloud": "aws"} if i in (1, 2, 3, 10) else {"cloud": "none"} for i, *_ in MARKET],
            dtype=pl.Object,
        )
    )
    target = next(
        t for t in lk.rank(frame, _deals(WON), traits=["cloud"]).targets if t.account_id == 10
    )
    assert any(r.startswith("trait.cloud=aws") for r in target.reasons)
