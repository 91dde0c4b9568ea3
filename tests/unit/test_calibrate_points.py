"""The pure calibration core: support, scaling and the MQL threshold."""

from __future__ import annotations

import pytest

from leadflow.core.calibrate_points import CalibrationError, LeadRecord, at_capacity, propose
from leadflow.core.config import load_default_model


def _model():
    return load_default_model()


def test_separating_rule_gains_and_rare_rule_keeps_its_points():
    model = _model()
    records = []
    for i in range(200):
        won = i % 4 == 0
        counts = {"pricing_page": (2 if won else i % 7 == 0), "email_open": i % 5}
        if i < 3:
            counts["quote_request"] = 1  # three leads: too little support
        records.append(LeadRecord(converted=won, counts=counts, fit={}))
    p = propose(model, records)
    rows = {r.key: r for r in p.rows}
    assert rows["pricing_page"].proposed > rows["email_open"].proposed
    assert rows["quote_request"].proposed == rows["quote_request"].current
    assert rows["quote_request"].coefficient is None
    assert p.auc_proposed >= p.auc_current
    assert p.mql_proposed >= p.mql_current
    assert p.leads == 200 and p.converters == 50


def test_needs_both_outcomes():
    records = [LeadRecord(converted=False, counts={"email_open": 1}, fit={})] * 20
    with pytest.raises(CalibrationError):
        propose(_model(), records)


def test_at_capacity_shares_places_among_ties_and_ignores_lead_order():
    y, scores = [True, False, True, False], [3.0, 2.0, 2.0, 1.0]
    # one place above the cut (a converter), one place among two tied leads (one converts)
    assert at_capacity(y, scores, 2) == (0.75, 0.75)
    assert at_capacity(y[::-1], scores[::-1], 2) == (0.75, 0.75)
    assert at_capacity(y, scores, 1) == (1.0, 0.5)
    # room for everyone: precision is the base rate, recall 1
    assert at_capacity(y, scores, 10) == (0.5, 1.0)
    # nothing to measure
    assert at_capacity(y, scores, 0) == (None, None)
    assert at_capacity([False, False], [1.0, 2.0], 1) == (None, None)
