"""Email end to end: a real SMTP server (aiosmtpd) on loopback, the FastAPI TestClient for
the tracking links, both database backends.

The SMTP server is aiosmtpd's threaded ``Controller``; its handler stores what it accepted
and can be told to answer the next RCPT or DATA with an error (451, 550)."""

from __future__ import annotations

import email
import email.policy
import ipaddress
import json
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import select, update

from leadflow.adapters.db.tables import content_assets, email_sends, events, lead_states, leads
from leadflow.adapters.email import FileMailer, SmtpMailer, build_mailer
from leadflow.core import email_tokens
from leadflow.entrypoints.cli import app as cli_app
from leadflow.entrypoints.cli.common import run_guarded
from leadflow.services import mailing
from leadflow.settings import Settings

PUBLIC = "https://lf.example"
SUBJECT_KO = "리드 관리 시작하기 — 가이드"


# --- the SMTP server ------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.rcpt_replies: dict[str, list[str]] = {}
        self.data_replies: list[str] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        queued = self.rcpt_replies.get(address)
        if queued:
            return queued.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_replies:
            return self.data_replies.pop(0)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted for delivery"

    def parsed(self, index: int = -1) -> EmailMessage:
        message = email.message_from_bytes(self.messages[index][2], policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        return message


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp() -> Iterator[tuple[Recorder, int]]:
    handler = Recorder()
    port = _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


def _mailer(port: int) -> SmtpMailer:
    return SmtpMailer("127.0.0.1", port, security="none", timeout=10)


# --- leads, sends -----------------------------------------------------------------------


@pytest.fixture
def svc(services: Any, tmp_path: Path) -> Any:
    services.settings = Settings(
        database_url=services.settings.database_url,
        public_url=PUBLIC,
        mail_dir=str(tmp_path / "outbox"),
        mail_from="AcmeCloud 마케팅 <marketing@acme.example>",
    )
    now = datetime.now(UTC)
    with services.engine.begin() as conn:
        for key, title, url in [
            ("pricing", "Pricing <plans>", "/pricing"),
            ("case-x", "Case study", "https://site.example/case-studies/x"),
        ]:
            conn.execute(
                content_assets.insert().values(
                    key=key,
                    title=title,
                    type="pricing" if key == "pricing" else "case_study",
                    stage="late",
                    gated=False,
                    industries=[],
                    url=url,
                    source="api",
                    active=True,
                    created_at=now,
                    updated_at=now,
                )
            )
    return services


def _lead(client: Any, write_key: str, user: str, **traits: Any) -> None:
    body = {
        "userId": user,
        "messageId": f"identify-{user}",
        "traits": {
            "email": f"{user}@acme.example",
            "consent": {"status": "granted"},
            **traits,
        },
    }
    r = client.post("/v1/identify", json=body, auth=(write_key, ""))
    assert r.status_code == 200, r.text


def _lead_id(services: Any, user: str) -> int:
    with services.engine.connect() as conn:
        return int(
            conn.execute(
                select(leads.c.id).where(leads.c.email == f"{user}@acme.example")
            ).scalar_one()
        )


def _plan(services: Any, lead_id: int, key: str, **kw: Any) -> int:
    kw.setdefault("subject", SUBJECT_KO)
    kw.setdefault("asset_key", "pricing")
    with services.engine.begin() as conn:
        send_id = mailing.plan_email(
            conn, idempotency_key=key, lead_id=lead_id, now=datetime.now(UTC), **kw
        )
    assert send_id is not None
    return send_id


def _send(services: Any, send_id: int) -> Any:
    with services.engine.connect() as conn:
        return conn.execute(select(email_sends).where(email_sends.c.id == send_id)).one()


def _state(services: Any, lead_id: int) -> Any:
    with services.engine.connect() as conn:
        return conn.execute(select(lead_states).where(lead_states.c.lead_id == lead_id)).one()


def _events(services: Any, lead_id: int, name: str) -> list[Any]:
    with services.engine.connect() as conn:
        return list(
            conn.execute(select(events).where(events.c.lead_id == lead_id, events.c.name == name))
        )


def _links(message: EmailMessage) -> tuple[str, str, list[str]]:
    html_part = message.get_body(("html",))
    assert html_part is not None
    html = html_part.get_content()
    hrefs = [h.replace("&amp;", "&") for h in re.findall(r'href="([^"]+)"', html)]
    pixel = re.search(r'<img src="([^"]+)"', html)
    assert pixel is not None
    return html, pixel.group(1), hrefs


def _path(url: str) -> str:
    assert url.startswith(PUBLIC + "/"), url
    return url[len(PUBLIC) :]


# --- the whole loop ----------------------------------------------------------------------


def test_deliver_parse_and_follow_the_links(svc, client, write_key, smtp):
    handler, port = smtp
    _lead(client, write_key, "kim", first_name="<script>alert(1)</script>", company="ACME 주식회사")
    lead_id = _lead_id(svc, "kim")
    assert _state(svc, lead_id).stage == "acquired"
    send_id = _plan(
        svc, lead_id, "program:education:welcome:1", program_key="education", step_id="welcome"
    )

    report = mailing.deliver_planned(svc, _mailer(port), datetime.now(UTC), worker_id="w1")
    assert (report.claimed, report.sent) == (1, 1), report
    row = _send(svc, send_id)
    assert row.status == "sent" and row.sent_at is not None and row.attempts == 1
    assert len(handler.messages) == 1
    mail_from, rcpt, _ = handler.messages[0]
    assert (mail_from, rcpt) == ("marketing@acme.example", ["kim@acme.example"])

    message = handler.parsed()
    assert message["Subject"] == SUBJECT_KO
    assert b"=?utf-8?" in handler.messages[0][2].lower()  # RFC 2047 encoded on the wire
    assert message["Message-ID"] == row.message_id
    assert message["To"] == "kim@acme.example"
    assert "AcmeCloud 마케팅" in str(message["From"])
    unsubscribe_header = str(message["List-Unsubscribe"])
    assert re.fullmatch(rf"<{re.escape(PUBLIC)}/u/[A-Za-z0-9_.-]+>", unsubscribe_header)
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    text = message.get_body(("plain",)).get_content()
    html, pixel, hrefs = _links(message)
    # Personalisation, escaped in HTML, plain in text.
    assert "ACME 주식회사" in text and "ACME 주식회사" in html
    assert "<script>alert(1)</script>" in text
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Pricing &lt;plans&gt;" in html and "Pricing <plans>" in text
    # Every link goes through the click redirect or is the unsubscribe link.
    assert hrefs and all(h.startswith((f"{PUBLIC}/e/c/", f"{PUBLIC}/u/")) for h in hrefs)
    click = next(h for h in hrefs if "/e/c/" in h)
    assert click in text
    assert unsubscribe_header.strip("<>") in hrefs and unsubscribe_header.strip("<>") in text

    # The open pixel.
    engagement_before = _state(svc, lead_id).engagement
    for _ in range(2):
        r = client.get(_path(pixel))
        assert r.status_code == 200 and r.headers["content-type"] == "image/gif"
        assert r.content.startswith(b"GIF89a")
    assert _send(svc, send_id).opened_at is not None
    assert len(_events(svc, lead_id, "email_open")) == 1  # reloads do not count twice
    assert _state(svc, lead_id).engagement > engagement_before

    # The click: 302 to the asset, recorded, and the stage moves acquired -> nurturing.
    engagement_before = _state(svc, lead_id).engagement
    r = client.get(_path(click), follow_redirects=False)
    assert r.status_code == 302
    assert r.headers["location"] == f"{PUBLIC}/pricing"
    assert _send(svc, send_id).clicked_at is not None
    (clicked,) = _events(svc, lead_id, "email_click")
    assert clicked.properties == {
        "send_id": send_id,
        "program": "education",
        "step": "welcome",
        "asset_key": "pricing",
        "url": f"{PUBLIC}/pricing",
    }
    assert clicked.channel == "email"
    state = _state(svc, lead_id)
    assert state.engagement > engagement_before
    assert state.stage == "nurturing"

    # RFC 8058 one-click unsubscribe, as a mail client sends it.
    r = client.post(
        _path(unsubscribe_header.strip("<>")),
        content="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200
    with svc.engine.connect() as conn:
        assert (
            conn.execute(select(leads.c.unsubscribed_at).where(leads.c.id == lead_id)).scalar_one()
            is not None
        )
    assert _send(svc, send_id).unsubscribed_at is not None
    assert len(_events(svc, lead_id, "email_unsubscribe")) == 1

    # A later marketing send is not delivered; a transactional one still is.
    later = _plan(svc, lead_id, "program:education:deeper:1", subject="Next")
    receipt = _plan(svc, lead_id, "receipt:1", subject="Receipt", category="transactional")
    report = mailing.deliver_planned(svc, _mailer(port), datetime.now(UTC), worker_id="w1")
    assert (report.sent, report.skipped) == (1, 1)
    assert (_send(svc, later).status, _send(svc, later).skip_reason) == ("skipped", "unsubscribed")
    assert _send(svc, receipt).status == "sent"
    transactional = handler.parsed()
    assert transactional["Subject"] == "Receipt"
    assert transactional["List-Unsubscribe"] is None
    assert len(handler.messages) == 2


def test_unsubscribe_page_and_browser_form(svc, client, write_key):
    _lead(client, write_key, "lee")
    send_id = _plan(svc, _lead_id(svc, "lee"), "k1")
    token = email_tokens.unsubscribe_token(svc.signing.current(), send_id)
    page = client.get(f"/u/{token}")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "Unsubscribe" in page.text and "수신 거부" in page.text
    assert f'action="/u/{token}"' in page.text and "lee@acme.example" in page.text
    with svc.engine.connect() as conn:  # a GET never unsubscribes (link scanners)
        assert conn.execute(select(leads.c.unsubscribed_at)).scalar_one() is None
    done = client.post(f"/u/{token}", data={"confirm": "yes"})
    assert done.status_code == 200 and "text/html" in done.headers["content-type"]
    assert "You are unsubscribed" in done.text and "수신 거부가 완료" in done.text
    again = client.post(f"/u/{token}", data={"confirm": "yes"})
    assert again.status_code == 200
    assert len(_events(svc, _lead_id(svc, "lee"), "email_unsubscribe")) == 1


def _forge(payload: str) -> str:
    import base64

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return f"{b64(payload.encode())}.{b64(b'0' * 16)}"


def test_tampered_and_foreign_tokens_are_400_never_a_redirect(svc, client, write_key):
    _lead(client, write_key, "park")
    send_id = _plan(svc, _lead_id(svc, "park"), "k1")
    key = svc.signing.current()
    good = email_tokens.click_token(key, send_id, f"{PUBLIC}/pricing")
    _payload, mac = good.split(".")
    bad = [
        _forge(f"c.{send_id}.https://evil.com"),
        _forge(f"c.{send_id}.//evil.com"),
        _forge(f"c.{send_id}.javascript:alert(1)"),
        # the real MAC on a changed destination
        _forge(f"c.{send_id}.https://evil.com").split(".")[0] + "." + mac,
        email_tokens.click_token(b"another server's key", send_id, "https://evil.com"),
        email_tokens.open_token(key, send_id),  # the wrong kind
        good[:-3],
        "https:evil.com",
        "not-a-token",
    ]
    for token in bad:
        r = client.get(f"/e/c/{token}", follow_redirects=False)
        assert r.status_code == 400, token
        assert "location" not in r.headers
        assert "evil" not in r.text and "invalid" in r.text
    assert client.get(f"/e/o/{_forge(f'o.{send_id}')}").status_code == 400
    r = client.get(f"/u/{_forge(f'u.{send_id}')}")
    assert r.status_code == 400 and "not valid" in r.text
    r = client.post(
        f"/u/{good}",
        content="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 400
    with svc.engine.connect() as conn:
        assert conn.execute(select(leads.c.unsubscribed_at)).scalar_one() is None
        assert conn.execute(select(email_sends.c.clicked_at)).scalar_one() is None
    # The genuine token still works.
    r = client.get(f"/e/c/{good}", follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == f"{PUBLIC}/pricing"


def test_links_are_rewritten_absolute_and_unsafe_ones_dropped(svc, client, write_key):
    _lead(client, write_key, "choi")
    send_id = _plan(svc, _lead_id(svc, "choi"), "k1", asset_key="case-x")
    key = svc.signing.current()
    with svc.engine.connect() as conn:
        message = mailing.compose(conn, svc.settings, _send(svc, send_id), None, key=key)
    _, _, hrefs = _links(message)
    click = next(h for h in hrefs if "/e/c/" in h)
    parsed = email_tokens.verify(svc.signing.current(), click.rsplit("/", 1)[1], "c")
    assert parsed.url == "https://site.example/case-studies/x"
    # Links inside a template body: site paths resolve against the asset's site, hostile
    # ones lose their href.
    rewritten = mailing._rewrite_links(
        '<a href="/pricing">a</a><a href="javascript:alert(1)">b</a><a href=\'//evil.com\'>c</a>'
        "<a HREF=javascript:alert(1)>d</a><a href=/trial>e</a>",
        lambda h: email_tokens.resolve_destination(h, "https://site.example/x"),
    )
    assert rewritten == (
        '<a href="https://site.example/pricing">a</a><a >b</a><a >c</a>'
        '<a >d</a><a href="https://site.example/trial">e</a>'
    )


# --- failures and retries --------------------------------------------------------------


def test_temporary_failure_is_retried_then_delivered_once(svc, client, write_key, smtp):
    handler, port = smtp
    _lead(client, write_key, "jung")
    send_id = _plan(svc, _lead_id(svc, "jung"), "k1")
    handler.data_replies = ["451 4.3.0 Try again later"]
    t0 = datetime.now(UTC)
    report = mailing.deliver_planned(svc, _mailer(port), t0, worker_id="w1")
    assert (report.sent, report.retrying) == (0, 1)
    row = _send(svc, send_id)
    assert (row.status, row.attempts) == ("planned", 1)
    # The retry time is a column; error is only the last error, for people.
    assert row.next_attempt_at == t0 + mailing.RETRY_DELAYS[0]
    assert row.error.startswith("451") and row.lease_until is None
    # Not due yet.
    assert mailing.deliver_planned(svc, _mailer(port), t0, worker_id="w1").claimed == 0
    report = mailing.deliver_planned(svc, _mailer(port), t0 + timedelta(minutes=6), worker_id="w1")
    assert report.sent == 1
    row = _send(svc, send_id)
    assert (row.status, row.attempts, row.error) == ("sent", 2, None)
    assert len(handler.messages) == 1
    assert (
        mailing.deliver_planned(svc, _mailer(port), t0 + timedelta(days=1), worker_id="w1").claimed
        == 0
    )
    assert len(handler.messages) == 1


def test_a_retried_row_waits_for_its_next_attempt_at(svc, client, write_key, smtp):
    handler, port = smtp
    _lead(client, write_key, "wait")
    lead_id = _lead_id(svc, "wait")
    retried = _plan(svc, lead_id, "k1", category="transactional")
    handler.rcpt_replies["wait@acme.example"] = ["452 4.2.2 mailbox full"]
    t0 = datetime.now(UTC)
    assert mailing.deliver_planned(svc, _mailer(port), t0, worker_id="w1").retrying == 1
    due = _send(svc, retried).next_attempt_at
    assert due == t0 + mailing.RETRY_DELAYS[0]
    # Before its time: not claimed, and it does not hold back a fresh row behind it.
    fresh = _plan(svc, lead_id, "k2", category="transactional")
    early = mailing.deliver_planned(svc, _mailer(port), due - timedelta(seconds=1), worker_id="w2")
    assert (early.claimed, early.sent) == (1, 1)
    assert (_send(svc, fresh).status, _send(svc, retried).status) == ("sent", "planned")
    assert _send(svc, retried).attempts == 1
    # At its time: claimed and delivered, once.
    report = mailing.deliver_planned(svc, _mailer(port), due, worker_id="w3")
    assert (report.claimed, report.sent) == (1, 1)
    row = _send(svc, retried)
    assert (row.status, row.attempts, row.error, row.claimed_by) == ("sent", 2, None, "w3")
    assert (row.next_attempt_at, row.lease_until) == (None, None)
    assert (
        mailing.deliver_planned(svc, _mailer(port), due + timedelta(days=1), worker_id="w").claimed
        == 0
    )
    assert sorted(m[1][0] for m in handler.messages) == ["wait@acme.example"] * 2


def test_a_live_claim_is_not_taken_by_another_worker(svc, client, write_key, smtp):
    handler, port = smtp
    _lead(client, write_key, "lease")
    send_id = _plan(svc, _lead_id(svc, "lease"), "k1", category="transactional")
    now = datetime.now(UTC)
    lease = now + mailing.LEASE
    with svc.engine.begin() as conn:  # claimed by a worker that is still composing
        conn.execute(
            update(email_sends)
            .where(email_sends.c.id == send_id)
            .values(claimed_by="busy", lease_until=lease, next_attempt_at=lease)
        )
    assert mailing.deliver_planned(svc, _mailer(port), now, worker_id="w").claimed == 0
    # Past the lease (that worker died before SMTP): due again, sent once.
    report = mailing.deliver_planned(svc, _mailer(port), lease, worker_id="w")
    assert (report.claimed, report.sent) == (1, 1)
    assert len(handler.messages) == 1


def test_temporary_failures_give_up_after_max_attempts(svc, client, write_key, smtp):
    handler, port = smtp
    _lead(client, write_key, "yoon")
    send_id = _plan(svc, _lead_id(svc, "yoon"), "k1")
    handler.rcpt_replies["yoon@acme.example"] = ["450 4.2.1 mailbox busy"] * mailing.MAX_ATTEMPTS
    at = datetime.now(UTC)
    for _ in range(mailing.MAX_ATTEMPTS):
        mailing.deliver_planned(svc, _mailer(port), at, worker_id="w1")
        at += timedelta(days=1)
    row = _send(svc, send_id)
    assert (row.status, row.attempts) == ("failed", mailing.MAX_ATTEMPTS)
    assert (
        row.error.startswith(f"gave up after {mailing.MAX_ATTEMPTS} attempts")
        and "450" in row.error
    )
    assert handler.messages == []
    with svc.engine.connect() as conn:  # a temporary failure is not a bounce
        assert conn.execute(select(leads.c.bounced_at)).scalar_one() is None


def test_550_on_rcpt_is_a_hard_bounce(svc, client, write_key, smtp):
    handler, port = smtp
    _lead(client, write_key, "han")
    lead_id = _lead_id(svc, "han")
    send_id = _plan(svc, lead_id, "k1")
    handler.rcpt_replies["han@acme.example"] = ["550 5.1.1 No such user"]
    report = mailing.deliver_planned(svc, _mailer(port), datetime.now(UTC), worker_id="w1")
    assert (report.failed, report.bounced) == (1, 1)
    row = _send(svc, send_id)
    assert row.status == "failed" and row.error.startswith("550") and row.bounced_at is not None
    with svc.engine.connect() as conn:
        assert (
            conn.execute(select(leads.c.bounced_at).where(leads.c.id == lead_id)).scalar_one()
            is not None
        )
    (bounce,) = _events(svc, lead_id, "email_bounce")
    assert bounce.properties["bounce_type"] == "hard" and bounce.properties["send_id"] == send_id
    with svc.engine.connect() as conn:
        dead_end = svc.models.active(conn, datetime.now(UTC)).dead_end_stage
    assert _state(svc, lead_id).stage == dead_end
    # No more email, not even transactional.
    again = _plan(svc, lead_id, "k2", category="transactional")
    mailing.deliver_planned(svc, _mailer(port), datetime.now(UTC), worker_id="w1")
    assert (_send(svc, again).status, _send(svc, again).skip_reason) == ("skipped", "bounced")


def test_unreachable_server_releases_the_batch(svc, client, write_key):
    _lead(client, write_key, "oh")
    ids = [_plan(svc, _lead_id(svc, "oh"), f"k{i}") for i in range(3)]
    report = mailing.deliver_planned(svc, _mailer(_free_port()), datetime.now(UTC), worker_id="w")
    assert (report.retrying, report.released) == (1, 2)
    rows = [_send(svc, i) for i in ids]
    assert [r.status for r in rows] == ["planned"] * 3
    assert [r.attempts for r in rows] == [1, 0, 0]


def test_one_connection_for_a_batch(svc, client, write_key, smtp):
    handler, port = smtp
    for user in ("a1", "a2", "a3"):
        _lead(client, write_key, user)
        _plan(svc, _lead_id(svc, user), f"k-{user}")
    mailer = _mailer(port)
    assert mailing.deliver_planned(svc, mailer, datetime.now(UTC), worker_id="w").sent == 3
    assert mailer.connections == 1 and len(handler.messages) == 3


# --- TLS, AUTH ------------------------------------------------------------------------


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_starttls_and_auth(svc, client, write_key, tmp_path):
    cert, key = _self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)

    def authenticator(server, session, envelope, mechanism, auth_data):
        def text(value: str | bytes) -> str:
            return value.decode() if isinstance(value, bytes) else value

        ok = isinstance(auth_data, LoginPassword) and (
            text(auth_data.login),
            text(auth_data.password),
        ) == ("leadflow", "s3cret")
        # handled=False: aiosmtpd answers 535 itself on failure.
        return AuthResult(success=ok, handled=False)

    handler = Recorder()
    port = _free_port()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        tls_context=server_tls,
        require_starttls=True,
        authenticator=authenticator,
        auth_require_tls=True,
    )
    controller.start()
    try:
        _lead(client, write_key, "tls")
        first = _plan(svc, _lead_id(svc, "tls"), "k1")
        trusted = ssl.create_default_context(cafile=str(cert))

        wrong = SmtpMailer(
            "127.0.0.1",
            port,
            security="starttls",
            username="leadflow",
            password="nope",
            ssl_context=trusted,
            timeout=10,
        )
        report = mailing.deliver_planned(svc, wrong, datetime.now(UTC), worker_id="w")
        assert report.retrying == 1 and "authentication failed" in report.errors[0]
        assert _send(svc, first).status == "planned"

        untrusted = SmtpMailer("127.0.0.1", port, security="starttls", timeout=10)
        report = mailing.deliver_planned(
            svc, untrusted, datetime.now(UTC) + timedelta(hours=1), worker_id="w"
        )
        assert report.retrying == 1 and "CERTIFICATE_VERIFY_FAILED" in report.errors[0]

        plain = SmtpMailer(
            "127.0.0.1", port, security="none", username="leadflow", password="s3cret", timeout=10
        )
        report = mailing.deliver_planned(
            svc, plain, datetime.now(UTC) + timedelta(hours=3), worker_id="w"
        )
        assert report.sent == 0 and handler.messages == []  # the server insists on TLS

        good = SmtpMailer(
            "127.0.0.1",
            port,
            security="starttls",
            username="leadflow",
            password="s3cret",
            ssl_context=trusted,
            timeout=10,
        )
        report = mailing.deliver_planned(
            svc, good, datetime.now(UTC) + timedelta(hours=12), worker_id="w"
        )
        assert report.sent == 1, report
        assert len(handler.messages) == 1
        assert handler.parsed()["Subject"] == SUBJECT_KO
    finally:
        controller.stop()


# --- files, crash recovery ---------------------------------------------------------------


def test_file_mailer_writes_a_parseable_eml(svc, client, write_key, tmp_path):
    _lead(client, write_key, "file", first_name="Mina")
    send_id = _plan(svc, _lead_id(svc, "file"), "k1")
    mailer = build_mailer(svc.settings)
    assert isinstance(mailer, FileMailer)
    assert mailing.deliver_planned(svc, mailer, datetime.now(UTC), worker_id="w").sent == 1
    files = list(Path(svc.settings.mail_dir).glob("*.eml"))
    assert len(files) == 1
    message = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert message["Message-ID"] == _send(svc, send_id).message_id
    assert message["Subject"] == SUBJECT_KO
    assert "Mina" in message.get_body(("plain",)).get_content()
    assert list(Path(svc.settings.mail_dir).glob(".*")) == []  # no temporary file left


def test_reconcile_never_resends_a_possibly_accepted_message(svc, client, write_key, smtp):
    handler, port = smtp
    _lead(client, write_key, "crash")
    lead_id = _lead_id(svc, "crash")
    claimed, handing, fresh = (_plan(svc, lead_id, f"k{i}") for i in range(3))
    now = datetime.now(UTC)
    old = now - timedelta(hours=1)
    with svc.engine.begin() as conn:
        for send_id, status, worker, at in [
            (claimed, "planned", "dead-worker", old),  # claimed, never given to SMTP
            (handing, "sending", "dead-worker", old),  # in the middle of the hand-off
            (fresh, "sending", "live-worker", now),
        ]:
            lease = at + mailing.LEASE
            conn.execute(
                update(email_sends)
                .where(email_sends.c.id == send_id)
                .values(status=status, claimed_by=worker, lease_until=lease, next_attempt_at=lease)
            )
    result = mailing.reconcile(svc.engine, now, timedelta(minutes=10))
    assert (result.requeued, result.unconfirmed) == (1, 1)
    row = _send(svc, claimed)
    assert (row.status, row.claimed_by, row.lease_until, row.next_attempt_at) == (
        "planned",
        None,
        None,
        None,
    )
    row = _send(svc, handing)
    assert (row.status, row.error, row.sent_at, row.lease_until) == (
        "sent",
        mailing.UNCONFIRMED,
        old,
        None,
    )
    assert _send(svc, fresh).status == "sending"  # a live worker is on it
    # Delivery afterwards sends the requeued one only.
    assert mailing.deliver_planned(svc, _mailer(port), now, worker_id="w").sent == 1
    assert len(handler.messages) == 1
    assert handler.parsed()["Message-ID"] == _send(svc, claimed).message_id


def test_two_workers_send_each_row_once(svc, client, write_key, tmp_path):
    _lead(client, write_key, "many")
    lead_id = _lead_id(svc, "many")
    with svc.engine.begin() as conn:
        for i in range(60):
            mailing.plan_email(
                conn,
                idempotency_key=f"k{i}",
                lead_id=lead_id,
                subject=f"s{i}",
                now=datetime.now(UTC),
                category="transactional",
            )
    now = datetime.now(UTC)
    results: list[Any] = []

    def work(name: str) -> None:
        results.append(
            mailing.deliver_planned(svc, FileMailer(tmp_path / "out"), now, worker_id=name, limit=7)
        )

    for _ in range(10):
        threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sum(r.sent for r in results) == 60
    assert len(list((tmp_path / "out").glob("*.eml"))) == 60
    with svc.engine.connect() as conn:
        assert set(conn.execute(select(email_sends.c.status)).scalars()) == {"sent"}


# --- admin API and CLI -------------------------------------------------------------------


@pytest.fixture
def api(client, admin_token):
    client.headers["Authorization"] = f"Bearer {admin_token}"
    return client


def test_admin_sends_and_bounces(svc, api, write_key):
    _lead(api, write_key, "adm")
    lead_id = _lead_id(svc, "adm")
    a = _plan(svc, lead_id, "k1", program_key="education", step_id="welcome")
    b = _plan(svc, lead_id, "k2")
    assert [s["id"] for s in api.get("/api/email/sends").json()["sends"]] == [b, a]
    r = api.get("/api/email/sends", params={"program": "education", "lead_id": lead_id})
    assert [s["id"] for s in r.json()["sends"]] == [a]
    assert api.get("/api/email/sends", params={"status": "sent"}).json()["sends"] == []
    assert api.get("/api/email/sends", params={"status": "bogus"}).status_code == 422
    assert api.get(f"/api/email/sends/{a}").json()["idempotency_key"] == "k1"
    assert api.get("/api/email/sends/999999").status_code == 404

    r = api.post(
        "/api/email/bounces",
        json={"email": "adm@acme.example", "type": "soft", "reason": "mailbox full"},
    )
    assert r.status_code == 200 and r.json()["type"] == "soft"
    with svc.engine.connect() as conn:
        assert conn.execute(select(leads.c.bounced_at)).scalar_one() is None
    message_id = _send(svc, a).message_id
    r = api.post(
        "/api/email/bounces",
        json={"message_id": message_id.strip("<>"), "type": "hard", "reason": "<b>gone</b>"},
    )
    assert r.status_code == 200 and r.json() == {
        "lead_id": lead_id,
        "send_id": a,
        "type": "hard",
        "recorded": True,
    }
    with svc.engine.connect() as conn:
        assert conn.execute(select(leads.c.bounced_at)).scalar_one() is not None
    kinds = sorted(e.properties["bounce_type"] for e in _events(svc, lead_id, "email_bounce"))
    assert kinds == ["hard", "soft"]

    for body, status in [
        ({"type": "hard"}, 422),
        ({"email": "adm@acme.example", "message_id": "x", "type": "hard"}, 422),
        ({"email": "adm@acme.example", "type": "medium"}, 422),
        ({"email": "not-an-email", "type": "hard"}, 422),
        ({"email": "nobody@acme.example", "type": "hard"}, 404),
        ({"message_id": "<nope@x>", "type": "hard"}, 404),
    ]:
        r = api.post("/api/email/bounces", json=body)
        assert r.status_code == status, (body, r.text)
        assert "detail" in r.json()
    api.headers.pop("Authorization")
    assert api.get("/api/email/sends").status_code == 401


def test_admin_test_message(svc, api):
    r = api.post("/api/email/test", json={"to": "ops@acme.example", "template": "nurture"})
    assert r.status_code == 200, r.text
    (path,) = Path(svc.settings.mail_dir).glob("*.eml")
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert message["To"] == "ops@acme.example" and message["Message-ID"] == r.json()["message_id"]
    assert (
        api.post("/api/email/test", json={"to": "ops@acme.example", "template": "../x"}).status_code
        == 422
    )
    assert (
        api.post("/api/email/test", json={"to": "nope", "template": "nurture"}).status_code == 422
    )


def _cli(capsys: Any, *args: str) -> tuple[int, str, str]:
    code = run_guarded(cli_app, list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli(svc, client, write_key, capsys, monkeypatch):
    monkeypatch.setenv("LEADFLOW_MAIL_DIR", svc.settings.mail_dir)
    _lead(client, write_key, "cli")
    send_id = _plan(svc, _lead_id(svc, "cli"), "k1", subject='=HYPERLINK("x")')
    db = ["--database-url", svc.settings.database_url]
    code, out, _ = _cli(capsys, "email", "sends", "--format", "json", *db)
    assert code == 0 and [r["id"] for r in json.loads(out)] == [send_id]
    code, out, _ = _cli(capsys, "email", "sends", "--format", "csv", *db)
    assert code == 0 and "'=HYPERLINK" in out
    code, out, _ = _cli(capsys, "email", "show", str(send_id), *db)
    assert code == 0 and "k1" in out
    code, out, _ = _cli(
        capsys, "email", "bounce", "--email", "cli@acme.example", "--type", "soft", *db
    )
    assert code == 0 and "soft bounce recorded" in out
    code, out, _ = _cli(capsys, "email", "test", "--to", "ops@acme.example", *db)
    assert code == 0 and "sent nurture test" in out
    for args, needle in [
        (["email", "sends", "--status", "lost"], "--status"),
        (["email", "show", "999"], "no email send 999"),
        (["email", "bounce", "--type", "hard"], "exactly one"),
        (["email", "bounce", "--email", "cli@acme.example", "--type", "x"], "--type"),
        (["email", "bounce", "--email", "x@nowhere.example", "--type", "hard"], "no lead"),
        (["email", "test", "--to", "nope"], "--to"),
        (["email", "test", "--to", "a@b.example", "--template", "zz"], "--template"),
    ]:
        code, _, err = _cli(capsys, *args, *db)
        lines = [line for line in err.strip().splitlines() if line.strip()]
        assert code == 1 and len(lines) == 1 and needle in lines[0], (args, err)
        assert lines[0].startswith("error: ")
    with svc.engine.connect() as conn:
        assert conn.execute(select(leads.c.bounced_at)).scalar_one() is None


def test_routes_work_under_the_server_wrapper(svc):
    """`leadflow serve` wraps the app in the tracking fast path: /e/ and /u/ pass through."""
    from fastapi.testclient import TestClient

    from leadflow.entrypoints.asgi import build_server_app

    with TestClient(build_server_app(svc)) as server:
        assert server.get("/e/o/garbage").status_code == 400
        r = server.post(
            "/u/garbage",
            content="List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert r.status_code == 400


def test_rules_are_rechecked_at_delivery_but_not_the_cap(svc, client, write_key, smtp):
    handler, port = smtp
    _lead(client, write_key, "cap")
    _lead(client, write_key, "revoked")
    capped = _lead_id(svc, "cap")
    revoked = _lead_id(svc, "revoked")
    # Two marketing emails fill the default cap (2 per 7 days); planning counted them, so
    # delivering them must not count them again.
    first, second = (_plan(svc, capped, f"cap-{i}") for i in range(2))
    withdrawn = _plan(svc, revoked, "revoked-1")
    with svc.engine.begin() as conn:  # consent withdrawn after planning
        conn.execute(update(leads).where(leads.c.id == revoked).values(consent_status="denied"))
    report = mailing.deliver_planned(svc, _mailer(port), datetime.now(UTC), worker_id="w")
    assert (report.sent, report.skipped) == (2, 1)
    assert [_send(svc, i).status for i in (first, second)] == ["sent", "sent"]
    row = _send(svc, withdrawn)
    assert (row.status, row.skip_reason) == ("skipped", "no_consent")
    assert sorted(m[1][0] for m in handler.messages) == ["cap@acme.example"] * 2


class _Crashes(FileMailer):
    """A mailer that dies (not a delivery error) on its second message: a worker bug or a
    kill in the middle of the SMTP hand-off."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.calls = 0

    def send(self, message: EmailMessage) -> None:
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("worker died")
        super().send(message)


def test_a_crash_mid_batch_loses_nothing_and_sends_nothing_twice(svc, client, write_key, tmp_path):
    _lead(client, write_key, "bug")
    lead_id = _lead_id(svc, "bug")
    ids = [_plan(svc, lead_id, f"k{i}", category="transactional") for i in range(3)]
    now = datetime.now(UTC)
    with pytest.raises(RuntimeError):
        mailing.deliver_planned(svc, _Crashes(tmp_path / "a"), now, worker_id="w")
    rows = [_send(svc, i) for i in ids]
    assert [r.status for r in rows] == ["sent", "sending", "planned"]
    assert (rows[1].claimed_by, rows[1].lease_until) == ("w", now + mailing.LEASE)
    assert (rows[2].claimed_by, rows[2].lease_until, rows[2].next_attempt_at) == (None, None, None)
    # On restart: the one in the hand-off is marked sent (unconfirmed), never resent.
    later = now + timedelta(hours=1)
    assert mailing.reconcile(svc.engine, later, timedelta(minutes=10)).unconfirmed == 1
    report = mailing.deliver_planned(svc, FileMailer(tmp_path / "b"), later, worker_id="w2")
    assert report.sent == 1
    assert [_send(svc, i).status for i in ids] == ["sent", "sent", "sent"]
    assert (
        len(list((tmp_path / "a").glob("*.eml"))) + len(list((tmp_path / "b").glob("*.eml"))) == 2
    )


# --- an unsubscribe withdraws consent, visibly ------------------------------------------


def test_unsubscribe_shows_the_consent_withdrawn_everywhere_until_a_form_opt_in(
    svc, client, write_key, admin_token, capsys, tmp_path
):
    """Regression (issue 12): after a one-click unsubscribe the lead's consent read
    ``granted`` in the API, ``leads show``, the dashboard and the export."""
    from argon2 import PasswordHasher

    from leadflow.services import importer, lifecycle
    from leadflow.services import users as user_service

    # An imported lead: its consent comes from the CSV, not from an event in its stream.
    csv_file = tmp_path / "cards.csv"
    csv_file.write_text("email,first_name,consent\npark@acme.example,Jiwoo,yes\n")
    importer.import_leads(svc.engine, csv_file, now=datetime.now(UTC), after=svc.after_ingest)
    lead_id = _lead_id(svc, "park")
    assert _state(svc, lead_id).stage == "acquired"
    send_id = _plan(svc, lead_id, "program:education:welcome:1")
    token = email_tokens.unsubscribe_token(svc.signing.current(), send_id)
    r = client.post(
        f"/u/{token}",
        content="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200

    with svc.engine.connect() as conn:
        row = conn.execute(select(leads).where(leads.c.id == lead_id)).mappings().one()
    withdrawn_at = row["unsubscribed_at"]
    assert withdrawn_at is not None
    expected = {
        "consent_status": "denied",
        "consent_at": withdrawn_at,
        "consent_method": "withdrawn: unsubscribe (one_click)",
    }
    assert {k: row[k] for k in expected} == expected

    # The admin API.
    body = client.get(
        f"/api/leads/{lead_id}", headers={"Authorization": f"Bearer {admin_token}"}
    ).json()
    assert body["consent_status"] == "denied"
    assert body["consent_method"] == "withdrawn: unsubscribe (one_click)"
    assert datetime.fromisoformat(body["consent_at"]) == withdrawn_at
    listed = client.get("/api/leads", headers={"Authorization": f"Bearer {admin_token}"}).json()[
        "items"
    ]
    assert [i["consent_status"] for i in listed if i["id"] == lead_id] == ["denied"]

    # `leads show` and `leads export`.
    url = svc.settings.database_url
    assert (
        run_guarded(
            cli_app,
            ["leads", "show", "park@acme.example", "--format", "json", "--database-url", url],
        )
        == 0
    )
    shown = json.loads(capsys.readouterr().out)["lead"]
    assert (shown["consent_status"], shown["consent_method"]) == (
        "denied",
        "withdrawn: unsubscribe (one_click)",
    )
    assert (
        run_guarded(cli_app, ["leads", "export", "park@acme.example", "--database-url", url]) == 0
    )
    exported = json.loads(capsys.readouterr().out)["lead"]
    assert (exported["consent_status"], exported["consent_method"]) == (
        "denied",
        "withdrawn: unsubscribe (one_click)",
    )
    assert exported["consent_at"] == withdrawn_at.isoformat()

    # The dashboard's lead page.
    user_service._hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    user_service.create_user(
        svc.engine,
        email="admin@example.com",
        password="pw-pw-pw-pw-12",
        role="admin",
        name="Admin",
        now=datetime.now(UTC),
    )
    login = client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
    assert csrf
    client.post(
        "/login",
        data={
            "email": "admin@example.com",
            "password": "pw-pw-pw-pw-12",
            "csrf_token": csrf.group(1),
        },
    )
    page = client.get(f"/leads/{lead_id}")
    assert page.status_code == 200
    tag = re.search(r'id="lead-consent">([^<]*)<', page.text)
    assert tag and "Denied" in tag.group(1) and "withdrawn: unsubscribe (one_click)" in tag.group(1)

    # The withdrawal is an event of the lead's stream, not a rewrite of its past: replayed
    # from scratch, the lead was still acquired on the consent it gave at the import.
    lifecycle.recompute_all(svc.engine, svc.models, datetime.now(UTC))
    with svc.engine.connect() as conn:
        history = lifecycle.lead_history(conn, lead_id)
    assert [(c["from_stage"], c["to_stage"]) for c in history] == [("anonymous", "acquired")]

    # A later explicit opt-in on a hosted form grants it again and re-subscribes.
    r = client.post(
        "/f/white-paper",
        json={
            "email": "park@acme.example",
            "first_name": "Jiwoo",
            "company": "Acme",
            "consent": True,
            "anonymousId": "park-browser",
        },
    )
    assert r.status_code == 200, r.text
    with svc.engine.connect() as conn:
        row = conn.execute(select(leads).where(leads.c.id == lead_id)).mappings().one()
    assert (row["consent_status"], row["consent_method"], row["unsubscribed_at"]) == (
        "granted",
        "form:white-paper",
        None,
    )
