"""kill -9 the server mid-stream: every acknowledged message is in the database, once."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from leadflow.adapters.db.tables import events
from leadflow.bootstrap import Services

pytestmark = pytest.mark.e2e

KILL_AFTER_ACKS = 60  # requests acknowledged before the kill
MAX_REQUESTS = 2_000  # the sender's hard bound


class Sender(threading.Thread):
    """Sends single and batch requests until stopped; records what was acknowledged."""

    def __init__(self, server: Any, write_key: str, prefix: str) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.write_key = write_key
        self.prefix = prefix
        self.acked: list[str] = []
        self.unacked: list[list[dict[str, Any]]] = []
        self.acked_requests = 0
        self.failures = 0
        self.stop = threading.Event()
        self.enough = threading.Event()

    def _messages(self, n: int) -> list[dict[str, Any]]:
        out = []
        for i in range(n):
            seq = len(self.acked) + sum(len(b) for b in self.unacked) + i
            mid = f"{self.prefix}-{self.acked_requests}-{self.failures}-{seq}"
            out.append(
                {
                    "type": "track" if seq % 3 else "page",
                    "event": "email_open",
                    "userId": f"user-{seq % 5}",
                    "anonymousId": f"anon-{seq % 11}",
                    "messageId": mid,
                    "properties": {"seq": seq, "url": f"https://acme.io/blog/{seq}"},
                }
            )
        return out

    def run(self) -> None:
        with httpx.Client(auth=(self.write_key, ""), timeout=10) as http:
            for n in range(MAX_REQUESTS):
                if self.stop.is_set():
                    return
                single = n % 2 == 0
                messages = self._messages(1 if single else 10)
                try:
                    if single:
                        r = http.post(f"{self.server.url}/v1/track", json=messages[0])
                    else:
                        r = http.post(f"{self.server.url}/v1/batch", json={"batch": messages})
                except httpx.HTTPError:
                    self.failures += 1
                    self.unacked.append(messages)
                    self.stop.wait(0.05)  # back off like an SDK while the server is down
                    continue
                if 200 <= r.status_code < 300:
                    self.acked.extend(m["messageId"] for m in messages)
                    self.acked_requests += 1
                    if self.acked_requests >= KILL_AFTER_ACKS:
                        self.enough.set()
                else:
                    self.failures += 1
                    self.unacked.append(messages)


def stored_ids(services: Services) -> Counter[str]:
    with services.engine.connect() as conn:
        return Counter(conn.execute(select(events.c.message_id)).scalars())


def test_acknowledged_messages_survive_kill_9_and_are_stored_once(
    live_server: Any, services: Services, write_key: str
) -> None:
    sender = Sender(live_server, write_key, "k9")
    sender.start()
    assert sender.enough.wait(timeout=120), "the server never acknowledged enough requests"
    live_server.kill()  # mid-stream: the sender is still sending
    acked_at_kill = len(sender.acked)

    live_server.start()  # same port, same database
    more = len(sender.acked) + 50
    for _ in range(600):  # up to ~60 s for the restarted server to take some traffic
        if len(sender.acked) >= more:
            break
        sender.stop.wait(0.1)
    sender.stop.set()
    sender.join(timeout=60)

    assert acked_at_kill > 0
    assert sender.failures > 0, "the kill did not interrupt the stream"
    assert len(sender.acked) > acked_at_kill, "no request was acknowledged after the restart"
    stored = stored_ids(services)
    missing = [mid for mid in sender.acked if mid not in stored]
    assert missing == [], f"{len(missing)} acknowledged messages lost"
    assert max(stored.values()) == 1

    # An SDK resends what was not acknowledged: some of it may have been committed just
    # before the kill. Resending must store each message exactly once.
    resend = [m for batch in sender.unacked for m in batch]
    with httpx.Client(auth=(write_key, ""), timeout=30) as http:
        for i in range(0, len(resend), 50):
            r = http.post(f"{live_server.url}/v1/batch", json={"batch": resend[i : i + 50]})
            assert r.status_code == 200, r.text
    stored = stored_ids(services)
    everything = set(sender.acked) | {m["messageId"] for m in resend}
    assert set(stored) == everything
    assert max(stored.values()) == 1
