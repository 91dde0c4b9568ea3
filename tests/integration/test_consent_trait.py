"""One reading of the ``consent`` trait: what ingestion stores on the lead is what the replay
folds into the profile (issue 13: ``"consent": "granted"`` moved a lead to acquired while
the stored lead kept ``unknown``, so nurture refused to mail it for ``no_consent``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from leadflow.adapters.db.tables import lead_states, leads
from leadflow.core.lifecycle import consent_trait
from leadflow.services import lifecycle

VALUES: list[Any] = [
    True,
    False,
    "granted",
    "GRANTED ",
    "denied",
    "unknown",
    {"status": "granted", "method": "webform"},
    {"status": "denied"},
    {"status": True},
    "maybe",
    {"status": "later"},
    None,
    17,
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_the_stored_consent_is_what_the_replay_reads(client, write_key, services, value):
    traits = {"email": "ann@acme.example", "first_name": "Ann", "consent": value}
    r = client.post("/v1/identify", json={"userId": "ann", "traits": traits}, auth=(write_key, ""))
    assert r.status_code == 200, r.text
    with services.engine.connect() as conn:
        lead = conn.execute(select(leads)).mappings().one()
        state = conn.execute(select(lead_states)).mappings().one()
    said = consent_trait(value)
    assert lead["consent_status"] == (said or "unknown")
    if isinstance(value, dict) and said is not None and "method" in value:
        assert lead["consent_method"] == value["method"]
    # The live stage folds the trait the same way; a replay from the store agrees.
    now = datetime.now(UTC)
    with services.engine.connect() as conn:
        model = services.models.active(conn, now)
    acquired = model.stage_for("acquired")
    assert (state["stage"] == acquired) == (said == "granted"), state["stage"]
    with services.engine.begin() as conn:
        conn.execute(lead_states.delete())
        lifecycle.recompute(conn, [lead["id"]], model, now)
    with services.engine.connect() as conn:
        assert conn.execute(select(lead_states.c.stage)).scalar_one() == state["stage"]
