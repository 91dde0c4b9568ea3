"""Outbound webhooks: subscriptions, the delivery outbox, sending, retries, dead letters.

- The transactional outbox is ``signals`` (written with the change that caused it) and
  ``stage_changes`` (the stage log), read through one path
  (:func:`leadflow.services.outbox.read_new`). :func:`enqueue_new` turns each new entry
  into one ``webhook_deliveries`` row per subscribed active endpoint; the outbox marks it
  handed over. A unique key (endpoint, event type, source id) makes enqueueing idempotent
  (the outbox reads the last stage changes again, see there).
- The first endpoint ever created starts the outbox at the present: older history is not
  sent. While no endpoint is active, new outbox rows are marked handed over and dropped.
- :func:`deliver_due` claims due deliveries with a lease through the claim mechanism every
  worker uses (:mod:`leadflow.adapters.db.claims`), sends them outside any transaction, and records
  every attempt (``webhook_attempts``). A failure is retried with exponential backoff and
  full jitter until 24 h after it was queued; then the delivery is ``dead`` (the
  dead-letter list) until :func:`replay`.
- :func:`rotate_secret` keeps the previous secret valid for 24 h: both signatures are sent.
"""

from __future__ import annotations

import json
import random
import secrets as secrets_mod
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, func, insert, select, update

from leadflow.adapters.db import claims
from leadflow.adapters.db.engine import insert_ignore
from leadflow.adapters.db.rows import as_record
from leadflow.adapters.db.tables import (
    accounts,
    assignments,
    leads,
    webhook_attempts,
    webhook_deliveries,
    webhook_endpoints,
)
from leadflow.adapters.webhooks import Resolver, Sender, check_target, system_resolver
from leadflow.core import errors
from leadflow.core.config import LeadModel
from leadflow.core.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    RETRY_WINDOW,
    SIGNATURE_HEADER,
    check_event_types,
    next_attempt_at,
    sign,
    signal_event,
    stage_events,
    subscribed,
)
from leadflow.services import outbox
from leadflow.services.lifecycle import ModelCache

BATCH = outbox.BATCH
LEASE = timedelta(minutes=5)
ROTATION_GRACE = timedelta(hours=24)
STATUSES = ("pending", "delivered", "dead")


class NotFound(errors.NotFound):
    pass


def new_secret() -> str:
    return "whsec_" + secrets_mod.token_urlsafe(32)


# --------------------------------------------------------------------------- endpoints


def _public(row: Mapping[str, Any]) -> dict[str, Any]:
    found = {k: v for k, v in row.items() if k not in ("secret", "previous_secret")}
    found["secret_hint"] = str(row["secret"])[:10] + "..."
    return found


def create_endpoint(
    conn: Connection,
    url: str,
    event_types: Sequence[str],
    now: datetime,
    *,
    allow_private: bool,
    description: str | None = None,
    resolver: Resolver = system_resolver,
) -> dict[str, Any]:
    """A new subscription; the result includes the secret (shown only here and on rotate)."""
    url = check_target(url, allow_private=allow_private, resolver=resolver)
    types = check_event_types(list(event_types))
    outbox.start(conn, now)
    secret = new_secret()
    key = conn.execute(
        insert(webhook_endpoints).values(
            url=url,
            description=description,
            event_types=types,
            secret=secret,
            active=True,
            created_at=now,
            updated_at=now,
        )
    ).inserted_primary_key
    assert key is not None  # a single-row INSERT always reports its key
    found = get_endpoint(conn, int(key[0]))
    assert found is not None
    return {**found, "secret": secret}


def _row(conn: Connection, endpoint_id: int) -> Mapping[str, Any] | None:
    row = (
        conn.execute(select(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id))
        .mappings()
        .first()
    )
    return as_record(row) if row is not None else None


def get_endpoint(conn: Connection, endpoint_id: int) -> dict[str, Any] | None:
    row = _row(conn, endpoint_id)
    return _public(row) if row is not None else None


def list_endpoints(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(select(webhook_endpoints).order_by(webhook_endpoints.c.id)).mappings()
    return [_public(as_record(r)) for r in rows]


def update_endpoint(
    conn: Connection,
    endpoint_id: int,
    changes: Mapping[str, Any],
    now: datetime,
    *,
    allow_private: bool,
    resolver: Resolver = system_resolver,
) -> dict[str, Any]:
    if _row(conn, endpoint_id) is None:
        raise NotFound(f"no webhook endpoint {endpoint_id}")
    values: dict[str, Any] = {"updated_at": now}
    if changes.get("url") is not None:
        values["url"] = check_target(changes["url"], allow_private=allow_private, resolver=resolver)
    if changes.get("event_types") is not None:
        values["event_types"] = check_event_types(list(changes["event_types"]))
    if changes.get("active") is not None:
        values["active"] = bool(changes["active"])
    if "description" in changes:
        values["description"] = changes["description"]
    conn.execute(
        update(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id).values(**values)
    )
    found = get_endpoint(conn, endpoint_id)
    assert found is not None
    return found


def delete_endpoint(conn: Connection, endpoint_id: int) -> bool:
    """Removes the endpoint with its deliveries and their log."""
    res = conn.execute(webhook_endpoints.delete().where(webhook_endpoints.c.id == endpoint_id))
    return (res.rowcount or 0) > 0


def rotate_secret(conn: Connection, endpoint_id: int, now: datetime) -> dict[str, Any]:
    """A new secret; the old one stays valid (and signed with) for 24 hours."""
    row = _row(conn, endpoint_id)
    if row is None:
        raise NotFound(f"no webhook endpoint {endpoint_id}")
    secret = new_secret()
    conn.execute(
        update(webhook_endpoints)
        .where(webhook_endpoints.c.id == endpoint_id)
        .values(previous_secret=row["secret"], secret=secret, rotated_at=now, updated_at=now)
    )
    found = get_endpoint(conn, endpoint_id)
    assert found is not None
    return {**found, "secret": secret, "previous_valid_until": now + ROTATION_GRACE}


def signing_secrets(row: Mapping[str, Any], now: datetime) -> list[str]:
    found = [str(row["secret"])]
    rotated = row.get("rotated_at")
    if row.get("previous_secret") and rotated is not None and now < rotated + ROTATION_GRACE:
        found.append(str(row["previous_secret"]))
    return found


# --------------------------------------------------------------------------- enqueue


def _leads(conn: Connection, lead_ids: set[int]) -> dict[int, dict[str, Any]]:
    if not lead_ids:
        return {}
    # ``owner`` is the rep the lead was last handed to, else the account's owner: who a
    # lead.returning alert is for.
    last_rep = (
        select(assignments.c.rep_key)
        .where(assignments.c.lead_id == leads.c.id)
        .order_by(assignments.c.assigned_at.desc(), assignments.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    rows = conn.execute(
        select(
            leads.c.id,
            leads.c.email,
            leads.c.first_name,
            leads.c.last_name,
            leads.c.account_id,
            func.coalesce(last_rep, accounts.c.owner).label("owner"),
            leads.c.erased_at,
        )
        .select_from(leads.outerjoin(accounts, accounts.c.id == leads.c.account_id))
        .where(leads.c.id.in_(lead_ids))
    ).mappings()
    return {int(r["id"]): dict(r) for r in rows}


def _fan_out(
    endpoints: list[Mapping[str, Any]],
    kind: str,
    source_id: int,
    payloads: list[dict[str, Any]],
    now: datetime,
) -> list[dict[str, Any]]:
    rows = []
    for payload in payloads:
        for ep in endpoints:
            if subscribed(ep["event_types"], payload["type"]):
                rows.append(
                    {
                        "endpoint_id": ep["id"],
                        "source_kind": kind,
                        "source_id": source_id,
                        "event_type": payload["type"],
                        "payload": payload,
                        "status": "pending",
                        "attempts": 0,
                        "next_attempt_at": now,
                        "expires_at": now + RETRY_WINDOW,
                        "created_at": now,
                    }
                )
    return rows


def _insert_deliveries(conn: Connection, rows: list[dict[str, Any]]) -> int:
    if not rows:
        return 0
    stmt = insert_ignore(
        conn.engine, webhook_deliveries, "endpoint_id", "event_type", "source_id"
    ).returning(webhook_deliveries.c.id)
    return len(conn.execute(stmt, rows).all())


def enqueue_new(conn: Connection, now: datetime, model: LeadModel | None = None) -> int:
    """Hands new outbox rows (:func:`leadflow.services.outbox.read_new`: signals and stage
    changes) to the webhook deliveries; returns the deliveries created.

    ``lead.mql`` fires on entering the hand-off stage of ``model`` (default: the active
    model)."""
    endpoints = [
        as_record(r)
        for r in conn.execute(
            select(webhook_endpoints).where(webhook_endpoints.c.active.is_(True))
        ).mappings()
    ]
    if not endpoints:
        outbox.skip(conn, now)
        return 0
    handoff_stage = (model or ModelCache().active(conn, now)).handoff_stage
    created = 0
    for batch in outbox.read_new(conn, now, BATCH):
        people = _leads(conn, {e.lead_id for e in batch})
        rows: list[dict[str, Any]] = []
        for entry in batch:
            person = people.get(entry.lead_id)
            if entry.kind == outbox.SIGNAL:
                payloads = [signal_event(entry.row, person)]
            else:
                payloads = stage_events(entry.row, person, handoff_stage)
            rows += _fan_out(endpoints, entry.kind, entry.id, payloads, now)
        created += _insert_deliveries(conn, rows)
    return created


# --------------------------------------------------------------------------- delivery


@dataclass
class DeliveryReport:
    attempted: int = 0
    delivered: int = 0
    failed: int = 0
    dead: int = 0


_d = webhook_deliveries.c
# Pending and due, oldest due first; a claim also moves ``next_attempt_at`` to the lease
# end, so :func:`next_due` does not report a delivery while a worker holds it.
WORK = claims.WorkTable(
    webhook_deliveries,
    ready=and_(_d.status == "pending", _d.next_attempt_at <= bindparam(claims.NOW)),
    order_by=(_d.next_attempt_at, _d.id),
    on_claim={"next_attempt_at": bindparam(claims.UNTIL)},
)
_CLAIMED = (
    select(
        webhook_deliveries,
        webhook_endpoints.c.url,
        webhook_endpoints.c.secret,
        webhook_endpoints.c.previous_secret,
        webhook_endpoints.c.rotated_at,
        webhook_endpoints.c.active,
    )
    .join(webhook_endpoints, webhook_endpoints.c.id == _d.endpoint_id)
    .where(_d.id.in_(bindparam("ids", expanding=True)))
    .order_by(_d.id)
)
_OUTCOME = update(webhook_deliveries).where(
    _d.id == bindparam("delivery_id"), _d.status == "pending", claims.held(webhook_deliveries)
)


def _claim(
    engine: Engine, now: datetime, worker_id: str, until: datetime, limit: int
) -> list[dict[str, Any]]:
    """Due deliveries, leased to this worker until ``until`` (:mod:`.claims`)."""
    with engine.begin() as conn:
        ids = claims.claim_in(conn, WORK, worker_id, now, until, limit)
        if not ids:
            return []
        return [dict(r) for r in conn.execute(_CLAIMED, {"ids": ids}).mappings()]


def body_of(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def deliver_due(
    engine: Engine,
    now: datetime,
    sender: Sender,
    *,
    limit: int = 100,
    rng: random.Random | None = None,
    worker_id: str | None = None,
) -> DeliveryReport:
    """Sends every due delivery once (up to ``limit``); records outcomes and retries.

    The deliveries are claimed for ``worker_id`` (default: this process and thread) until
    ``now`` + :data:`LEASE`; an outcome is written only while the claim still holds (a
    worker that outlived its lease leaves the delivery to the one that took it over; its
    attempt is still logged)."""
    rng = rng or random.Random()
    report = DeliveryReport()
    worker = worker_id or claims.worker_name()
    until = now + LEASE
    mine = claims.mine(worker, until)
    for job in _claim(engine, now, worker, until, limit):
        attempt = int(job["attempts"]) + 1
        started = time.perf_counter()
        status_code: int | None
        error: str | None
        if not job["active"]:
            status_code, error, ok = None, "endpoint is inactive", False
        else:
            body = body_of(job["payload"])
            headers = {
                SIGNATURE_HEADER: sign(signing_secrets(job, now), int(now.timestamp()), body),
                EVENT_HEADER: str(job["event_type"]),
                DELIVERY_HEADER: str(job["id"]),
            }
            result = sender.send(str(job["url"]), headers, body)
            status_code, error, ok = result.status_code, result.error, result.ok
        duration = int((time.perf_counter() - started) * 1000)
        values: dict[str, Any] = {
            "attempts": attempt,
            "last_status_code": status_code,
            "last_error": error,
            "lease_until": None,
        }
        report.attempted += 1
        if ok:
            values.update(status="delivered", delivered_at=now, next_attempt_at=None)
            report.delivered += 1
        else:
            retry = next_attempt_at(attempt, now, job["expires_at"], rng)
            if retry is None:
                values.update(status="dead", next_attempt_at=None)
                report.dead += 1
            else:
                values.update(next_attempt_at=retry)
                report.failed += 1
        with engine.begin() as conn:
            conn.execute(
                insert(webhook_attempts).values(
                    delivery_id=job["id"],
                    attempt=attempt,
                    at=now,
                    status_code=status_code,
                    error=error,
                    duration_ms=duration,
                )
            )
            conn.execute(_OUTCOME.values(**values), {"delivery_id": job["id"], **mine})
    return report


def next_due(conn: Connection) -> datetime | None:
    """When the earliest pending delivery is due (for workers and tests driving time)."""
    due: datetime | None = conn.execute(
        select(func.min(webhook_deliveries.c.next_attempt_at)).where(
            webhook_deliveries.c.status == "pending"
        )
    ).scalar_one()
    return due


# --------------------------------------------------------------------------- the log


def list_deliveries(
    conn: Connection,
    *,
    status: str | None = None,
    endpoint_id: int | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    if status is not None and status not in STATUSES:
        raise ValueError(f"status: must be one of {', '.join(STATUSES)}")
    query = select(webhook_deliveries).order_by(webhook_deliveries.c.id.desc()).limit(limit)
    if status is not None:
        query = query.where(webhook_deliveries.c.status == status)
    if endpoint_id is not None:
        query = query.where(webhook_deliveries.c.endpoint_id == endpoint_id)
    return [dict(r) for r in conn.execute(query).mappings()]


def get_delivery(conn: Connection, delivery_id: int) -> dict[str, Any] | None:
    row = (
        conn.execute(select(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id))
        .mappings()
        .first()
    )
    if row is None:
        return None
    attempts = conn.execute(
        select(webhook_attempts)
        .where(webhook_attempts.c.delivery_id == delivery_id)
        .order_by(webhook_attempts.c.attempt, webhook_attempts.c.id)
    ).mappings()
    return {**dict(row), "log": [dict(a) for a in attempts]}


def replay(conn: Connection, delivery_id: int, now: datetime) -> dict[str, Any]:
    """Queue a delivery again (dead or delivered): due now, with a fresh 24 h window."""
    res = conn.execute(
        update(webhook_deliveries)
        .where(webhook_deliveries.c.id == delivery_id)
        .values(
            status="pending",
            next_attempt_at=now,
            expires_at=now + RETRY_WINDOW,
            delivered_at=None,
        )
    )
    if (res.rowcount or 0) == 0:
        raise NotFound(f"no webhook delivery {delivery_id}")
    found = get_delivery(conn, delivery_id)
    assert found is not None
    return found
