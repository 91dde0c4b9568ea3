"""Threshold calibration: bands, rates and the recommended MQL threshold, on plain data."""

from __future__ import annotations

import pytest

from leadflow.core import calibration as cal

SCORE_RULE = "stages.mql.enter_when[2]"


def _h(score: float, decision=None, outcome=None, rule: str = SCORE_RULE) -> cal.HandOff:
    return cal.HandOff(
        lead_id=int(score * 10),
        score=score,
        rule=rule,
        decision=decision,
        outcome=outcome,
        score_made=rule == SCORE_RULE,
    )


def test_default_band_labels_and_edges():
    assert cal.band_labels() == ["<100", "100-119", "120-149", "150-199", "200+"]
    assert cal.band_of(99.9) == "<100"
    assert cal.band_of(100) == "100-119"
    assert cal.band_of(119.5) == "100-119"
    assert cal.band_of(120) == "120-149"
    assert cal.band_of(199) == "150-199"
    assert cal.band_of(200) == "200+"


def test_rates_by_band_count_decided_and_closed_only():
    handoffs = [
        _h(105, "accepted", "won"),
        _h(110, "rejected"),
        _h(112, "rejected"),
        _h(115),  # not decided yet
        _h(130, "accepted", "lost"),
        _h(140, "accepted", "won"),
        _h(250, "accepted"),
    ]
    rows = {r.group: r for r in cal.rates_by_band(handoffs)}
    assert list(rows) == ["<100", "100-119", "120-149", "150-199", "200+"]
    low = rows["100-119"]
    assert (low.handoffs, low.accepted, low.rejected) == (4, 1, 2)
    assert low.acceptance_rate == pytest.approx(1 / 3)
    assert low.win_rate == 1.0
    mid = rows["120-149"]
    assert mid.acceptance_rate == 1.0 and mid.win_rate == 0.5
    assert rows["150-199"].acceptance_rate is None and rows["150-199"].handoffs == 0
    assert rows["200+"].win_rate is None


def test_rates_by_rule_group_by_the_rule_that_made_the_mql():
    handoffs = [
        _h(105, "rejected"),
        _h(50, "accepted", rule="stages.mql.enter_when[0]"),
        _h(60, "accepted", rule="stages.mql.enter_when[0]"),
    ]
    rows = {r.group: r for r in cal.rates_by_rule(handoffs)}
    assert rows["stages.mql.enter_when[0]"].acceptance_rate == 1.0
    assert rows[SCORE_RULE].acceptance_rate == 0.0


def test_recommendation_is_the_lowest_threshold_reaching_the_target():
    # Scores 100..119 are mostly rejected, 120+ mostly accepted.
    handoffs = [
        _h(100, "rejected"),
        _h(105, "rejected"),
        _h(110, "accepted"),
        _h(118, "rejected"),
        _h(121, "accepted"),
        _h(125, "accepted"),
        _h(130, "rejected"),
        _h(140, "accepted"),
        _h(160, "accepted"),
    ]
    scores = [(h.score, True) for h in handoffs]
    rec = cal.recommend_threshold(
        handoffs, scores, current=100, target=0.7, capacity_per_day=100, working_days=1
    )
    # At 110: 5 accepted of 7 decided = 0.714 >= 0.7; at 105: 5 of 8 = 0.625.
    assert rec.threshold == 110
    assert rec.acceptance_rate == pytest.approx(5 / 7)
    assert rec.mqls_per_day == 7 and rec.within_capacity
    higher = cal.recommend_threshold(
        handoffs, scores, current=100, target=0.8, capacity_per_day=100, working_days=1
    )
    # 0.8: at 121, 4 of 5 = 0.8.
    assert higher.threshold == 121 and higher.acceptance_rate == pytest.approx(0.8)


def test_recommendation_is_raised_to_fit_capacity():
    handoffs = [_h(100 + i, "accepted") for i in range(10)]
    scores = [(h.score, True) for h in handoffs]
    rec = cal.recommend_threshold(
        handoffs, scores, current=100, target=0.7, capacity_per_day=2, working_days=2
    )
    # Every threshold reaches the target; 10 MQLs over 2 days is 5 a day > 2: raise until
    # at most 4 MQLs remain (scores 106..109).
    assert rec.threshold == 106
    assert rec.mqls_per_day == 2 and rec.within_capacity
    assert "raised" in rec.reason


def test_rule_made_mqls_are_kept_whatever_the_threshold():
    handoffs = [
        _h(10, "rejected", rule="fastpass.quote_request"),
        _h(10, "rejected", rule="fastpass.quote_request"),
        _h(150, "accepted"),
    ]
    rec = cal.recommend_threshold(
        handoffs,
        [(h.score, h.score_made) for h in handoffs],
        current=100,
        target=0.7,
        capacity_per_day=10,
        working_days=1,
    )
    assert rec.threshold is None and "no score threshold" in rec.reason


def test_bad_target_is_refused():
    with pytest.raises(ValueError, match="target"):
        cal.recommend_threshold([], [], current=100, target=0, capacity_per_day=1, working_days=1)


def _q(score: float, outcome=None) -> cal.Qualified:
    return cal.Qualified(lead_id=int(score * 10), score=score, outcome=outcome)


def test_win_rates_by_qualification_band_count_closed_only():
    assert cal.band_labels(cal.QUALIFICATION_BANDS) == ["<50", "50-74", "75-89", "90+"]
    rows = {
        r.group: r
        for r in cal.win_rates_by_band(
            [_q(100, "won"), _q(87.5, "won"), _q(75, "lost"), _q(80, "lost"), _q(76)]
        )
    }
    assert rows["<50"].opportunities == 0 and rows["<50"].win_rate is None
    mid = rows["75-89"]
    assert (mid.opportunities, mid.won, mid.lost, mid.open) == (4, 1, 2, 1)
    assert mid.win_rate == pytest.approx(1 / 3)
    assert rows["90+"].as_dict()["win_rate"] == 1.0


def test_handoff_recommendation_is_the_lowest_bant_threshold_reaching_the_win_target():
    qualified = [_q(100, "won"), _q(87.5, "won"), _q(75, "lost"), _q(75, "lost"), _q(75)]
    # 75 keeps all: 2 of 4 closed won (0.5); 87 keeps two won.
    low = cal.recommend_handoff_threshold(qualified, current=75, target=0.5)
    assert (low.threshold, low.win_rate, low.opportunities, low.closed) == (75, 0.5, 5, 4)
    high = cal.recommend_handoff_threshold(qualified, current=75, target=0.6)
    assert (high.threshold, high.win_rate, high.closed) == (87, 1.0, 2)
    none = cal.recommend_handoff_threshold([_q(80, "lost")], current=75, target=0.3)
    assert none.threshold is None and "no BANT threshold" in none.reason
    few = cal.recommend_handoff_threshold(qualified, current=75, target=0.6, min_closed=3)
    assert few.threshold is None
    with pytest.raises(ValueError, match="win target"):
        cal.recommend_handoff_threshold(qualified, current=75, target=1.5)
