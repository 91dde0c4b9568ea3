from __future__ import annotations

from sqlalchemy import select

from leadflow.adapters.db.tables import events, leads


def test_identify_then_track_stitches_anonymous_history(client, services, write_key):
    auth = (write_key, "")
    r = client.post("/v1/page", json={"anonymousId": "a1", "properties": {"url": "https://x.io/pricing"}}, auth=auth)
    assert r.status_code == 200, r.text
    r = client.post("/v1/identify", json={"anonymousId": "a1", "userId": "u1", "traits": {"email": "Ann@Example.COM"}}, auth=auth)
    assert r.status_code == 200, r.text
    r = client.post("/v1/track", json={"userId": "u1", "event": "demo_request", "messageId": "m1"}, auth=auth)
    r = client.post("/v1/track", json={"userId": "u1", "event": "demo_request", "messageId": "m1"}, auth=auth)
    assert r.status_code == 200
    with services.engine.connect() as conn:
        lead = conn.execute(select(leads)).mappings().one()
        assert lead["email"] == "ann@example.com"
        rows = conn.execute(select(events.c.type, events.c.lead_id)).all()
    assert len(rows) == 3
    assert {r.lead_id for r in rows} == {lead["id"]}
