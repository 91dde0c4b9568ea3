"""Notes, calls and tasks sales logs on a lead (``lead_notes``): :func:`add_note`,
:func:`complete_task`, :func:`notes_for`. Bad input raises ``ValueError`` naming the field;
nothing is stored then."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from leadflow.adapters.db.tables import lead_notes
from leadflow.services import privacy
from leadflow.services.handoff.common import require_lead

KINDS = ("note", "call", "task")
MAX_BODY = 2000


def _clean(body: str) -> str:
    text = body.replace("\r\n", "\n").strip()
    if not text:
        raise ValueError("body: must not be empty")
    if len(text) > MAX_BODY:
        raise ValueError(f"body: at most {MAX_BODY} characters")
    if "\x00" in text:
        raise ValueError("body: contains a NUL character")
    return text


def add_note(
    conn: Connection,
    lead_id: int,
    kind: str,
    body: str,
    now: datetime,
    *,
    author: str | None = None,
    due_at: datetime | None = None,
) -> int:
    """Log a note, a call or a task (a task needs ``due_at``) on the lead; returns its id."""
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {', '.join(KINDS)}")
    text = _clean(body)
    if kind == "task" and due_at is None:
        raise ValueError("due: a task needs a due date")
    if kind != "task":
        due_at = None
    if due_at is not None and (due_at.tzinfo is None or due_at.utcoffset() is None):
        raise ValueError("due: expected a timezone-aware time")
    require_lead(conn, lead_id)
    # Notes never keep an erased person's address.
    author, text = privacy.without_suppressed(conn, author, text)
    res = conn.execute(
        insert(lead_notes).values(
            lead_id=lead_id,
            kind=kind,
            body=text,
            due_at=due_at,
            author=(author or None) and str(author)[:255],
            at=now,
        )
    )
    return int(res.inserted_primary_key[0])  # type: ignore[index]  # an insert has a key


def complete_task(conn: Connection, lead_id: int, note_id: int, now: datetime) -> bool:
    """Mark an open task of the lead done; False when there is no such open task."""
    res = conn.execute(
        update(lead_notes)
        .where(
            lead_notes.c.id == note_id,
            lead_notes.c.lead_id == lead_id,
            lead_notes.c.kind == "task",
            lead_notes.c.done_at.is_(None),
        )
        .values(done_at=now)
    )
    return bool(res.rowcount)


def notes_for(
    conn: Connection, lead_ids: Iterable[int], *, per_lead: int = 50
) -> dict[int, list[dict[str, Any]]]:
    """Each lead's notes, newest first (open tasks first of all), at most ``per_lead``."""
    ids = sorted(set(lead_ids))
    found: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    for i in range(0, len(ids), 500):
        rows = conn.execute(
            select(lead_notes)
            .where(lead_notes.c.lead_id.in_(ids[i : i + 500]))
            .order_by(lead_notes.c.lead_id, lead_notes.c.at.desc(), lead_notes.c.id.desc())
        ).mappings()
        for row in rows:
            found[row["lead_id"]].append(dict(row))
    for items in found.values():
        items.sort(key=lambda n: (not (n["kind"] == "task" and n["done_at"] is None),))
        del items[per_lead:]
    return found
