"""Outbound webhooks against a real HTTP receiver on 127.0.0.1, on both backends."""

from __future__ import annotations

import itertools
import json
import random
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import insert, select

from leadflow.adapters.db.tables import (
    assignments,
    leads,
    signals,
    webhook_attempts,
    webhook_deliveries,
)
from leadflow.adapters.webhooks import HttpSender, TargetRefused, check_target
from leadflow.services import webhooks
from leadflow.webhooks import SIGNATURE_HEADER, verify

T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)


class Receiver:
    """A loopback HTTP server failing its first ``fail_first`` requests with 503."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.requests: list[tuple[dict[str, str], bytes, int]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = 503 if len(receiver.requests) < receiver.fail_first else 200
                receiver.requests.append((dict(self.headers.items()), body, status))
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"try later")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def ok_bodies(self) -> list[bytes]:
        return [body for _, body, status in self.requests if status == 200]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def sender() -> Iterator[HttpSender]:
    with HttpSender(allow_private=True, timeout=5) as s:
        yield s


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _lead(conn, email: str) -> int:
    return int(
        conn.execute(
            insert(leads).values(
                email=email,
                consent_status="granted",
                attributes={},
                created_at=T0,
                updated_at=T0,
            )
        ).inserted_primary_key[0]
    )


def _signal(conn, lead_id: int, name: str, at: datetime) -> int:
    return int(
        conn.execute(
            insert(signals).values(
                name=name,
                lead_id=lead_id,
                at=at,
                rule="test",
                model_version="v1",
                data={"rep": "kim"},
                created_at=at,
            )
        ).inserted_primary_key[0]
    )


def _endpoint(services, url: str, events=("*",)) -> dict:
    with services.engine.begin() as conn:
        return webhooks.create_endpoint(conn, url, list(events), T0, allow_private=True)


def _events(services, n: int) -> list[int]:
    with services.engine.begin() as conn:
        lead_id = _lead(conn, "ann@acme.example")
        ids = [
            _signal(conn, lead_id, "opportunity.won", T0 + timedelta(minutes=i)) for i in range(n)
        ]
        webhooks.enqueue_new(conn, T0 + timedelta(hours=1))
    return ids


def _drive(services, sender, start: datetime, rng: random.Random, limit: int = 500) -> datetime:
    """Runs the worker at each next due time until nothing is pending (no sleeping)."""
    now = start
    for _ in range(limit):
        webhooks.deliver_due(services.engine, now, sender, rng=rng)
        with services.engine.connect() as conn:
            due = webhooks.next_due(conn)
        if due is None:
            return now
        now = max(due, now)
    raise AssertionError("deliveries still pending after the step limit")


def test_signature_verifies_with_the_public_helper(services, receiver, sender):
    ep = _endpoint(services, receiver.url)
    _events(services, 1)
    now = T0 + timedelta(hours=1)
    report = webhooks.deliver_due(services.engine, now, sender)
    assert report.delivered == 1
    headers, body, _ = receiver.requests[0]
    assert verify(ep["secret"], headers[SIGNATURE_HEADER], body, now=now)
    assert not verify(ep["secret"], headers[SIGNATURE_HEADER], body + b"x", now=now)
    assert not verify("whsec_wrong", headers[SIGNATURE_HEADER], body, now=now)
    assert headers["Leadflow-Event"] == "opportunity.won"
    assert b'"email":"ann@acme.example"' in body


def test_failing_three_times_then_ok_is_delivered_once_with_retries_logged(services, sender):
    receiver = Receiver(fail_first=3)
    try:
        _endpoint(services, receiver.url)
        _events(services, 1)
        _drive(services, sender, T0 + timedelta(hours=1), random.Random(5))
    finally:
        receiver.close()
    assert len(receiver.ok_bodies()) == 1
    assert [s for _, _, s in receiver.requests] == [503, 503, 503, 200]
    with services.engine.connect() as conn:
        (delivery,) = webhooks.list_deliveries(conn)
        log = webhooks.get_delivery(conn, delivery["id"])["log"]
    assert delivery["status"] == "delivered" and delivery["attempts"] == 4
    assert [a["status_code"] for a in log] == [503, 503, 503, 200]
    assert [a["error"] for a in log][:3] == ["HTTP 503"] * 3
    times = [a["at"] for a in log]
    assert all(b > a for a, b in itertools.pairwise(times))


def test_several_events_each_arrive_exactly_once_through_failures(services, sender):
    receiver = Receiver(fail_first=3)
    try:
        _endpoint(services, receiver.url)
        ids = _events(services, 5)
        _drive(services, sender, T0 + timedelta(hours=1), random.Random(9))
    finally:
        receiver.close()
    delivered_ids = sorted(b.split(b'"id":"sig_')[1].split(b'"')[0] for b in receiver.ok_bodies())
    assert delivered_ids == sorted(str(i).encode() for i in ids)


def test_receiver_down_ends_in_the_dead_letter_list_with_nothing_lost(services, sender):
    _endpoint(services, f"http://127.0.0.1:{_dead_port()}/hook")
    ids = _events(services, 3)
    start = T0 + timedelta(hours=1)
    end = _drive(services, sender, start, random.Random(2))
    assert end == start + timedelta(hours=24)
    with services.engine.connect() as conn:
        dead = webhooks.list_deliveries(conn, status="dead")
        assert webhooks.list_deliveries(conn, status="pending") == []
        attempts = conn.execute(select(webhook_attempts)).mappings().all()
    assert sorted(d["source_id"] for d in dead) == sorted(ids)
    assert all(d["attempts"] > 10 and d["last_error"] for d in dead)
    assert len(attempts) == sum(d["attempts"] for d in dead)


def test_a_dead_delivery_replayed_to_a_live_receiver_arrives(services, receiver, sender):
    ep = _endpoint(services, f"http://127.0.0.1:{_dead_port()}/hook")
    _events(services, 1)
    end = _drive(services, sender, T0 + timedelta(hours=1), random.Random(4))
    with services.engine.begin() as conn:
        (dead,) = webhooks.list_deliveries(conn, status="dead")
        webhooks.update_endpoint(conn, ep["id"], {"url": receiver.url}, end, allow_private=True)
        webhooks.replay(conn, dead["id"], end)
    report = webhooks.deliver_due(services.engine, end, sender)
    assert report.delivered == 1 and len(receiver.ok_bodies()) == 1
    with services.engine.connect() as conn:
        assert webhooks.get_delivery(conn, dead["id"])["status"] == "delivered"
        with pytest.raises(webhooks.NotFound):
            webhooks.replay(conn, 10**9, end)


def test_enqueue_is_idempotent_and_respects_subscriptions(services):
    all_ep = _endpoint(services, "http://127.0.0.1:9/a")
    won_ep = _endpoint(services, "http://127.0.0.1:9/b", ["opportunity.won"])
    mql_ep = _endpoint(services, "http://127.0.0.1:9/c", ["lead.mql"])
    _events(services, 2)
    with services.engine.begin() as conn:
        assert webhooks.enqueue_new(conn, T0 + timedelta(hours=2)) == 0
        lead_id = conn.execute(select(leads.c.id)).scalar_one()
        _signal(conn, lead_id, "lead.routed", T0 + timedelta(hours=3))
        assert webhooks.enqueue_new(conn, T0 + timedelta(hours=3)) == 1
        assert webhooks.enqueue_new(conn, T0 + timedelta(hours=3)) == 0
        rows = conn.execute(select(webhook_deliveries)).mappings().all()
        assert conn.execute(select(signals.c.delivered_at)).scalars().all().count(None) == 0
    per = {
        ep["id"]: sorted(r["event_type"] for r in rows if r["endpoint_id"] == ep["id"])
        for ep in (all_ep, won_ep, mql_ep)
    }
    assert per[all_ep["id"]] == ["lead.routed", "opportunity.won", "opportunity.won"]
    assert per[won_ep["id"]] == ["opportunity.won", "opportunity.won"]
    assert per[mql_ep["id"]] == []


@pytest.mark.parametrize(
    "url",
    [
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://localhost/hook",
        "http://127.0.0.1:8000/hook",
        "http://[::1]/hook",
        "http://[::ffff:10.0.0.1]/hook",
        "http://192.168.0.10/hook",
    ],
)
def test_private_targets_are_refused_unless_allowed(url):
    with pytest.raises(TargetRefused, match="url: host"):
        check_target(url, allow_private=False)
    assert check_target(url, allow_private=True) == url


def test_sender_refuses_private_target_at_send_time():
    with HttpSender(allow_private=False) as s:
        result = s.send("http://127.0.0.1:9/hook", {}, b"{}")
    assert not result.ok and result.error.startswith("refused: url: host")


def test_rotated_secret_signs_with_both_for_a_day(services, receiver, sender):
    ep = _endpoint(services, receiver.url)
    with services.engine.begin() as conn:
        rotated = webhooks.rotate_secret(conn, ep["id"], T0 + timedelta(minutes=30))
    _events(services, 1)
    now = T0 + timedelta(hours=1)
    webhooks.deliver_due(services.engine, now, sender)
    headers, body, _ = receiver.requests[0]
    sig = headers[SIGNATURE_HEADER]
    assert sig.count("v1=") == 2
    assert verify(ep["secret"], sig, body, now=now)
    assert verify(rotated["secret"], sig, body, now=now)
    with services.engine.connect() as conn:
        row = conn.execute(select(webhook_deliveries)).mappings().first()
        from leadflow.adapters.db.tables import webhook_endpoints

        ep_row = conn.execute(select(webhook_endpoints)).mappings().one()
    assert webhooks.signing_secrets(ep_row, T0 + timedelta(hours=25)) == [rotated["secret"]]
    assert row["status"] == "delivered"


def test_a_real_sales_action_reaches_the_receiver_via_the_api(
    services, client, admin_token, write_key, receiver, sender, monkeypatch
):
    from tests.integration.test_handoff import T0 as SALES_T0
    from tests.integration.test_handoff import Clock, _lead_id, _mql

    clock = Clock(SALES_T0)
    services.clock = clock
    monkeypatch.setattr(services.settings, "webhooks_allow_private_targets", True)
    client.headers["Authorization"] = f"Bearer {admin_token}"
    r = client.post(
        "/api/webhooks", json={"url": receiver.url, "event_types": ["lead.accepted", "lead.mql"]}
    )
    assert r.status_code == 201, r.text
    secret = r.json()["secret"]
    assert "secret" not in client.get("/api/webhooks").json()["endpoints"][0]
    _mql(client, write_key, "ann", SALES_T0)
    lead_id = _lead_id(services, "ann")
    assert client.post(f"/api/leads/{lead_id}/accept", json={}).status_code == 200
    now = clock()
    with services.engine.begin() as conn:
        assert webhooks.enqueue_new(conn, now) == 2
    assert webhooks.deliver_due(services.engine, now, sender).delivered == 2
    kinds = sorted(h["Leadflow-Event"] for h, _, _ in receiver.requests)
    assert kinds == ["lead.accepted", "lead.mql"]
    assert all(verify(secret, h[SIGNATURE_HEADER], b, now=now) for h, b, _ in receiver.requests)
    log = client.get("/api/webhooks/deliveries?status=delivered").json()["deliveries"]
    assert len(log) == 2
    replayed = client.post(f"/api/webhooks/deliveries/{log[0]['id']}/replay")
    assert replayed.status_code == 200 and replayed.json()["status"] == "pending"


def test_api_refuses_bad_and_private_targets_naming_the_field(services, client, admin_token):
    client.headers["Authorization"] = f"Bearer {admin_token}"
    for url, reason in [
        ("http://10.0.0.5/hook", "url: host"),
        ("http://169.254.169.254/", "url: host"),
        ("http://localhost:8000/", "url: host"),
        ("ftp://example.com/", "url: scheme"),
        ("https://u:p@example.com/", "url: must not contain credentials"),
    ]:
        r = client.post("/api/webhooks", json={"url": url})
        assert r.status_code == 422 and r.json()["detail"].startswith(reason), (url, r.text)
    r = client.post("/api/webhooks", json={"url": "http://10.0.0.5/", "event_types": ["x.y"]})
    assert r.status_code == 422
    r = client.post("/api/webhooks", json={"url": 5})
    assert r.status_code == 422 and "url" in r.text
    assert client.get("/api/webhooks").json()["endpoints"] == []
    assert client.get("/api/webhooks/deliveries?status=bogus").status_code == 422
    assert client.post("/api/webhooks/deliveries/99/replay").status_code == 404
    r = client.post("/api/webhooks/99/rotate")
    assert r.status_code == 404, r.text
    assert client.delete("/api/webhooks/99").status_code == 404


def test_cli_adds_lists_and_runs_once(services, db_url, receiver, monkeypatch, capsys):
    from leadflow.entrypoints.cli import app
    from leadflow.entrypoints.cli.common import run_guarded

    def main(args: list[str]) -> int:
        return run_guarded(app, args)

    monkeypatch.setenv("LEADFLOW_DATABASE_URL", db_url)
    assert main(["webhooks", "add", "http://10.0.0.1/x"]) == 1
    assert "url: host" in capsys.readouterr().err
    monkeypatch.setenv("LEADFLOW_WEBHOOKS_ALLOW_PRIVATE_TARGETS", "true")
    assert main(["webhooks", "add", receiver.url, "--events", "opportunity.won"]) == 0
    assert "secret: whsec_" in capsys.readouterr().out
    assert main(["webhooks", "list", "--format", "json"]) == 0
    assert receiver.url in capsys.readouterr().out
    with services.engine.begin() as conn:
        _signal(conn, _lead(conn, "bo@acme.example"), "opportunity.won", T0)
    assert main(["webhooks", "run", "--once"]) == 0
    assert "delivered 1" in capsys.readouterr().out
    assert len(receiver.ok_bodies()) == 1
    assert main(["webhooks", "deliveries", "--status", "nope"]) == 1
    assert main(["webhooks", "replay", "999"]) == 1


def test_two_workers_racing_never_send_an_event_twice(services, receiver):
    _endpoint(services, receiver.url)
    ids = _events(services, 40)
    now = T0 + timedelta(hours=1)
    barrier = threading.Barrier(2)
    reports = []

    def work() -> None:
        with HttpSender(allow_private=True, timeout=5) as s:
            barrier.wait()
            reports.append(webhooks.deliver_due(services.engine, now, s, limit=40))

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.delivered for r in reports) == len(ids)
    assert len(receiver.ok_bodies()) == len(ids) == len(set(receiver.ok_bodies()))
    with services.engine.connect() as conn:
        attempts = conn.execute(select(webhook_attempts)).mappings().all()
    assert len(attempts) == len(ids)


def test_a_lost_leads_return_visits_alert_the_rep_who_owned_it(
    services, client, admin_token, write_key, receiver, sender, monkeypatch
):
    """Return alert end to end: the deal is lost, months later the lead visits the site 3
    times in 14 days, and the owning rep's webhook receives lead.returning."""
    from tests.integration.test_handoff import T0 as SALES_T0
    from tests.integration.test_handoff import Clock, _lead_id, _mql

    clock = Clock(SALES_T0)
    services.clock = clock
    monkeypatch.setattr(services.settings, "webhooks_allow_private_targets", True)
    client.headers["Authorization"] = f"Bearer {admin_token}"
    r = client.post("/api/webhooks", json={"url": receiver.url, "event_types": ["lead.returning"]})
    assert r.status_code == 201, r.text
    _mql(client, write_key, "dan", SALES_T0)
    lead_id = _lead_id(services, "dan")
    assert client.post(f"/api/leads/{lead_id}/accept", json={}).status_code == 200
    bant = {k: "confirmed" for k in ("budget", "authority", "need", "timeframe")}
    r = client.post(f"/api/leads/{lead_id}/qualify", json={**bant, "amount": 5000})
    assert r.status_code == 200, r.text
    r = client.post(f"/api/leads/{lead_id}/lost", json={"reason": "price"})
    assert r.status_code == 200 and r.json()["stage"] == "recycle_b"
    with services.engine.connect() as conn:
        owner = conn.execute(
            select(assignments.c.rep_key).where(assignments.c.lead_id == lead_id)
        ).scalar_one()
    assert owner
    # 120 days later (after the 90-day pause): two visits are not enough, the third is.
    base = SALES_T0 + timedelta(days=120)
    for day in (0, 5):
        clock.at = (base + timedelta(days=day, minutes=5)).astimezone(UTC)
        body = {
            "userId": "dan",
            "timestamp": (base + timedelta(days=day)).isoformat(),
            "properties": {"url": "https://acme.example/pricing"},
        }
        assert client.post("/v1/page", json=body, auth=(write_key, "")).status_code == 200
    now = clock()
    with services.engine.begin() as conn:
        assert webhooks.enqueue_new(conn, now) == 0
    clock.at = (base + timedelta(days=9, minutes=5)).astimezone(UTC)
    body = {
        "userId": "dan",
        "timestamp": (base + timedelta(days=9)).isoformat(),
        "properties": {"url": "https://acme.example/case-studies/x"},
    }
    assert client.post("/v1/page", json=body, auth=(write_key, "")).status_code == 200
    now = clock()
    with services.engine.begin() as conn:
        assert webhooks.enqueue_new(conn, now) == 1
    assert webhooks.deliver_due(services.engine, now, sender).delivered == 1
    ((headers, body, status),) = receiver.requests
    payload = json.loads(body)
    assert headers["Leadflow-Event"] == "lead.returning" and status == 200
    assert payload["lead"]["id"] == lead_id and payload["lead"]["owner"] == owner


# --- SSRF guard: one resolution, pinned; refusals never echo DNS answers ------------------


class ScriptedResolver:
    """DNS as a test script: answer ``answers[i]`` on the i-th lookup (the last one
    repeats), and count the lookups. A rebinding attacker's DNS looks like this."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        return self.answers[min(len(self.calls), len(self.answers)) - 1]


def _rows(services, table) -> list[dict]:
    with services.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(table)).mappings()]


def test_the_sender_connects_to_the_address_it_checked_not_a_second_answer(services, receiver):
    port = receiver.server.server_address[1]
    url = f"http://hooks.rebind.test:{port}/hook"  # no such name in the system's DNS
    with services.engine.begin() as conn:
        ep = webhooks.create_endpoint(
            conn, url, ["*"], T0, allow_private=True, resolver=ScriptedResolver(["127.0.0.1"])
        )
    _events(services, 1)
    # The check sees 127.0.0.1; any later lookup would say 127.0.0.2 (nothing listens).
    dns = ScriptedResolver(["127.0.0.1"], ["127.0.0.2"])
    with HttpSender(allow_private=True, timeout=5, resolver=dns) as sender:
        report = webhooks.deliver_due(services.engine, T0 + timedelta(hours=1), sender)
        assert report.delivered == 1
        assert dns.calls == [("hooks.rebind.test", port)]  # resolved once, by the check
        assert sender.backend.dialled == [("127.0.0.1", port)]
        headers, body, status = receiver.requests[0]
        assert status == 200 and headers["Host"] == f"hooks.rebind.test:{port}"
        assert verify(ep["secret"], headers[SIGNATURE_HEADER], body, now=T0 + timedelta(hours=1))
        # The next send checks again and connects to what *that* check saw.
        again = sender.send(url, {}, b"{}")
        assert not again.ok and sender.backend.dialled[-1] == ("127.0.0.2", port)
        assert "127.0.0.2" not in (again.error or "")
    assert len(receiver.requests) == 1


def test_a_target_rebinding_to_a_private_address_is_refused_and_the_answer_not_stored(
    services,
):
    public = ScriptedResolver(["93.184.216.34"])
    refused = {
        "2002:a00:1::1": "6to4",
        "64:ff9b::a9fe:a9fe": "NAT64, carrying a link-local",
        "::ffff:127.0.0.1": "IPv4-mapped, carrying a loopback",
        "10.20.30.40": "private",
    }
    # At creation: one bad address among good ones refuses the target, by kind only.
    for address, kind in refused.items():
        with services.engine.begin() as conn, pytest.raises(TargetRefused) as info:
            webhooks.create_endpoint(
                conn,
                "https://hooks.example.com/x",
                ["*"],
                T0,
                allow_private=False,
                resolver=ScriptedResolver(["93.184.216.34", address]),
            )
        message = str(info.value)
        assert "hooks.example.com" in message and kind in message
        assert address not in message and "93.184.216.34" not in message
    # At send time: the name now answers with an address carrying 10.0.0.1.
    with services.engine.begin() as conn:
        webhooks.create_endpoint(
            conn, "https://hooks.example.com/x", ["*"], T0, allow_private=False, resolver=public
        )
    _events(services, 1)
    with HttpSender(resolver=ScriptedResolver(["2002:a00:1::1"])) as sender:
        report = webhooks.deliver_due(services.engine, T0 + timedelta(hours=1), sender)
        assert report.delivered == 0 and sender.backend.dialled == []
    (delivery,) = _rows(services, webhook_deliveries)
    (attempt,) = _rows(services, webhook_attempts)
    for stored in (delivery["last_error"], attempt["error"]):
        assert stored.startswith("refused: url: host 'hooks.example.com' resolves to a 6to4")
        assert "2002:" not in stored and "10.0.0.1" not in stored
    # A lookup failure says so without inventing details.
    with HttpSender(resolver=ScriptedResolver([])) as sender:
        empty = sender.send("https://hooks.example.com/x", {}, b"{}")
    assert empty.error == "refused: url: host 'hooks.example.com' does not resolve (no address)"
    assert sender.backend.dialled == []


def test_https_to_a_pinned_address_verifies_the_certificate_of_the_host_name(tmp_path):
    """TLS goes to the checked address but SNI and certificate checks use the name."""
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def certificate(name: str) -> tuple[str, str]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(datetime.now(UTC) - timedelta(days=1))
            .not_valid_after(datetime.now(UTC) + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        cert_path, key_path = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return str(cert_path), str(key_path)

    cert, key = certificate("hooks.pinned.test")
    receiver = Receiver()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    receiver.server.socket = server_tls.wrap_socket(receiver.server.socket, server_side=True)
    port = receiver.server.server_address[1]
    try:
        trusted = ssl.create_default_context(cafile=cert)
        dns = ScriptedResolver(["127.0.0.1"])
        with HttpSender(allow_private=True, timeout=5, resolver=dns, ssl_context=trusted) as s:
            ok = s.send(f"https://hooks.pinned.test:{port}/hook", {}, b"{}")
            assert ok.ok, ok.error
            assert s.backend.dialled == [("127.0.0.1", port)]
            # Same address, another name: the certificate does not match, nothing is sent.
            other = s.send(f"https://other.pinned.test:{port}/hook", {}, b"{}")
        assert not other.ok and "certificate" in (other.error or "").lower()
        assert len(receiver.requests) == 1
        assert receiver.requests[0][0]["Host"] == f"hooks.pinned.test:{port}"
    finally:
        receiver.close()
