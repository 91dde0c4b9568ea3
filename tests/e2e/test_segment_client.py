"""The real Segment Python SDK (segment-analytics-python) against a live leadflow server."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import segment.analytics as analytics
from segment.analytics.request import APIError
from sqlalchemy import select

from leadflow.adapters.db.tables import accounts, events, leads
from leadflow.bootstrap import Services

pytestmark = pytest.mark.e2e


def rows(services: Services, table: Any) -> list[dict[str, Any]]:
    with services.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(table).order_by(table.c.id)).mappings()]


def test_segment_sdk_calls_are_stored_and_stitched(
    live_server: Any, services: Services, write_key: str
) -> None:
    client = analytics.Client(write_key, host=live_server.url, sync_mode=True)
    yesterday = datetime.now(UTC) - timedelta(days=1)
    client.page(
        anonymous_id="sdk-anon",
        name="Pricing",
        properties={"url": "https://acme.io/pricing"},
        context={"page": {"referrer": "https://www.google.com/"}},
        timestamp=yesterday,
        message_id="sdk-page",
    )
    client.identify(
        user_id="sdk-user",
        anonymous_id="sdk-anon",
        traits={"email": "Sdk.User@Acme.io", "firstName": "Sdk", "title": "CTO"},
        message_id="sdk-identify",
    )
    client.track(
        user_id="sdk-user",  # only a userId: the SDK sends "anonymousId": null
        event="content_download",
        properties={"asset": "ROI guide", "asset_type": "white_paper", "pages": 12},
        context={"campaign": {"name": "q2", "source": "newsletter", "medium": "email"}},
        message_id="sdk-track",
    )
    client.group(
        user_id="sdk-user",
        group_id="acme-1",
        traits={"name": "Acme", "website": "acme.io", "industry": "Software", "employees": 250},
        message_id="sdk-group",
    )

    (lead,) = rows(services, leads)
    assert (lead["email"], lead["user_id"], lead["first_name"], lead["title"]) == (
        "sdk.user@acme.io",
        "sdk-user",
        "Sdk",
        "CTO",
    )
    (account,) = rows(services, accounts)
    assert (account["external_id"], account["name"], account["domain"]) == (
        "acme-1",
        "Acme",
        "acme.io",
    )
    assert (account["industry"], account["employee_count"]) == ("Software", 250)
    assert lead["account_id"] == account["id"]

    stored = {e["message_id"]: e for e in rows(services, events)}
    assert set(stored) == {"sdk-page", "sdk-identify", "sdk-track", "sdk-group"}
    assert {e["lead_id"] for e in stored.values()} == {lead["id"]}
    page = stored["sdk-page"]
    assert (page["type"], page["name"], page["page_url"]) == (
        "page",
        "Pricing",
        "https://acme.io/pricing",
    )
    assert page["channel"] == "organic_search"
    # The SDK's timestamp (a day ago) survives, corrected with its sentAt.
    assert abs(page["occurred_at"] - yesterday) < timedelta(minutes=1)
    track = stored["sdk-track"]
    assert track["anonymous_id"] is None
    assert track["properties"] == {"asset": "ROI guide", "asset_type": "white_paper", "pages": 12}
    assert track["context"]["library"]["name"] == "analytics-python"
    assert track["context"]["campaign"]["medium"] == "email"
    assert (track["utm_medium"], track["channel"]) == ("email", "email")


def test_segment_sdk_batches_in_the_background_and_flushes(
    live_server: Any, services: Services, write_key: str
) -> None:
    errors: list[Any] = []
    client = analytics.Client(
        write_key,
        host=live_server.url,
        upload_size=25,
        gzip=True,
        on_error=lambda exc, batch: errors.append(exc),
    )
    for i in range(120):
        client.track(anonymous_id=f"bg-{i % 7}", event="email_open", message_id=f"bg-{i}")
    client.flush()
    client.join()
    assert errors == []
    stored = rows(services, events)
    assert sorted(e["message_id"] for e in stored) == sorted(f"bg-{i}" for i in range(120))


def test_sdk_gets_400_in_sync_mode_and_nothing_is_stored(
    live_server: Any, services: Services, write_key: str
) -> None:
    client = analytics.Client(write_key, host=live_server.url, sync_mode=True)
    with pytest.raises(APIError) as info:
        client.identify(user_id="u", traits={"email": "not an email"})
    assert info.value.status == 400
    assert "traits.email" in info.value.message
    assert rows(services, events) == []


def test_sdk_gives_up_on_400_instead_of_retrying_forever(
    live_server: Any, services: Services, write_key: str
) -> None:
    errors: list[Any] = []
    client = analytics.Client(
        write_key, host=live_server.url, on_error=lambda exc, batch: errors.append(exc)
    )
    client.identify(user_id="u", traits={"email": "broken@"}, message_id="bad-1")
    # flush() blocks until the consumer has given up on the batch. Guard the test
    # against a hang: a retry loop would keep flush() blocked (the SDK retries 10 times
    # with backoff on retryable errors).
    done = threading.Event()
    flusher = threading.Thread(target=lambda: (client.flush(), done.set()), daemon=True)
    flusher.start()
    flusher.join(timeout=120)
    assert done.is_set(), "the SDK kept retrying a 400"
    client.join()
    assert len(errors) == 1
    assert errors[0].status == 400
    assert rows(services, events) == []


def test_sdk_with_a_wrong_write_key_gets_401(live_server: Any, services: Services) -> None:
    client = analytics.Client("lfw_wrong", host=live_server.url, sync_mode=True)
    with pytest.raises(APIError) as info:
        client.track(user_id="u", event="e")
    assert info.value.status == 401
    assert rows(services, events) == []
