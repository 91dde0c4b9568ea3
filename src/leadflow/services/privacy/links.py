"""Which rows of which table are about a person: the map erasure and export walk.

Derived from the schema (``adapters/db/tables.py``): every table with a column that is a
foreign key to ``leads.id`` is linked automatically (rows where any such column is the
lead). Tables that hold a lead only indirectly are linked in :data:`INDIRECT`; tables that
hold nothing about a person are listed in :data:`NOT_PERSONAL` with the reason. A table in
none of these makes :func:`check_coverage` fail (and the privacy tests with it), so a new
table cannot be forgotten.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Table, Text, and_, cast, false, or_, select

from leadflow.adapters.db.tables import (
    crm_updates,
    due_work,
    leads,
    metadata,
    opportunities,
    opportunity_contacts,
    program_enrollments,
    signals,
    stage_changes,
    webhook_attempts,
    webhook_deliveries,
)


@dataclass(frozen=True, slots=True)
class Person:
    lead_id: int
    email: str


Where = Callable[[Person], ColumnElement[bool]]

# Nurture's due-work kind for program steps (``services.nurture.STEP_KIND``; not imported
# to keep privacy free of the mailing stack).
PROGRAM_STEP_KIND = "program_step"

NOT_PERSONAL: dict[str, str] = {
    "leads": "the person's own row: made a tombstone by erasure, exported as `lead`",
    "accounts": "a company, not a person: kept by erasure (funnels; only a name or trait "
    "holding the person's address, phone or full name is scrubbed), exported as `account`",
    "suppressions": "only the SHA-256 of erased addresses (that is how they stay suppressed)",
    "api_keys": "staff credentials",
    "users": "dashboard users (staff)",
    "web_sessions": "dashboard sessions (staff)",
    "sales_reps": "the sales team (staff)",
    "lead_models": "model configuration",
    "predictive_models": "trained models: coefficients and aggregate evaluation, no rows "
    "per person",
    "webhook_endpoints": "receiver configuration",
    "webhook_cursors": "outbox positions",
    "content_assets": "the content library",
    "seminars": "seminar definitions (attendance is in seminar_attendees)",
    "segments": "segment definitions (membership is in segment_members)",
    "signing_secrets": "the database's keys for signing links and tokens",
    "saved_views": "dashboard users' saved list filters (staff); a view's search text is "
    "theirs, not a lead's record",
}


def lead_columns(table: Table) -> list[str]:
    """Columns of ``table`` that are foreign keys to ``leads.id``."""
    return [
        c.name
        for c in table.columns
        if any(fk.column.table is leads and fk.column.name == "id" for fk in c.foreign_keys)
    ]


def _direct(table: Table) -> Where:
    names = lead_columns(table)

    def where(person: Person) -> ColumnElement[bool]:
        return or_(*(table.c[n] == person.lead_id for n in names))

    return where


def _opportunities(person: Person) -> ColumnElement[bool]:
    as_contact = select(opportunity_contacts.c.opportunity_id).where(
        opportunity_contacts.c.lead_id == person.lead_id
    )
    return or_(opportunities.c.lead_id == person.lead_id, opportunities.c.id.in_(as_contact))


def _deliveries(person: Person) -> ColumnElement[bool]:
    sigs = select(signals.c.id).where(signals.c.lead_id == person.lead_id)
    stages = select(stage_changes.c.id).where(stage_changes.c.lead_id == person.lead_id)
    return or_(
        and_(
            webhook_deliveries.c.source_kind == "signal", webhook_deliveries.c.source_id.in_(sigs)
        ),
        and_(
            webhook_deliveries.c.source_kind == "stage", webhook_deliveries.c.source_id.in_(stages)
        ),
    )


def _attempts(person: Person) -> ColumnElement[bool]:
    return webhook_attempts.c.delivery_id.in_(
        select(webhook_deliveries.c.id).where(_deliveries(person))
    )


def _crm_updates(person: Person) -> ColumnElement[bool]:
    opps = select(opportunities.c.id).where(_opportunities(person))
    named = (
        cast(crm_updates.c.payload, Text).contains(person.email, autoescape=True)
        if person.email
        else false()
    )
    return or_(crm_updates.c.opportunity_id.in_(opps), named)


def _due_work(person: Person) -> ColumnElement[bool]:
    enrolments = select(program_enrollments.c.id).where(
        program_enrollments.c.lead_id == person.lead_id
    )
    return and_(due_work.c.kind == PROGRAM_STEP_KIND, due_work.c.ref_id.in_(enrolments))


# Tables about a person without a foreign key to leads.id, and how their rows are found.
INDIRECT: dict[str, Where] = {
    # The person as primary contact (FK) or in the buying committee.
    "opportunities": _opportunities,
    # Deliveries of the person's signals and stage changes (the payload names the lead).
    "webhook_deliveries": _deliveries,
    "webhook_attempts": _attempts,
    # Updates of the person's opportunities, or naming their address (``lead_email``).
    "crm_updates": _crm_updates,
    # Scheduled program steps of the person's enrolments.
    "due_work": _due_work,
}


def person_tables() -> list[tuple[Table, Where]]:
    """Every table about a person (except ``leads`` itself), parents before children."""
    found = []
    for table in metadata.sorted_tables:
        if table.name in INDIRECT:
            found.append((table, INDIRECT[table.name]))
        elif table.name not in NOT_PERSONAL and lead_columns(table):
            found.append((table, _direct(table)))
    return found


def check_coverage() -> list[str]:
    """Tables the privacy map does not know (empty when every table is accounted for)."""
    linked = {t.name for t, _ in person_tables()}
    return sorted(
        t.name
        for t in metadata.sorted_tables
        if t.name not in linked and t.name not in NOT_PERSONAL
    )
