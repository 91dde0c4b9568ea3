"""Merging two leads found to be one person (generic over the schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, Connection, Table, UniqueConstraint, delete, exists, select, update

from leadflow.adapters.db.tables import leads, metadata
from leadflow.core.lifecycle import is_withdrawal


def merge_leads(conn: Connection, keep: int, drop: int, now: datetime) -> None:
    """Merge lead ``drop`` into ``keep``: rows that point at it move, blanks are filled.

    Generic over the schema: every table with a foreign key to ``leads.id`` is handled, so
    tables added later follow without changes here. Rows of a table where the lead id is
    unique on its own (one row per lead, e.g. a derived state) are deleted for the dropped
    lead (they are recomputed for the kept one); where it is part of a composite unique
    key, a row of ``drop`` that would collide with one of ``keep`` is deleted; every other
    row is re-pointed at ``keep``."""
    if keep == drop:
        return
    kept = conn.execute(select(leads).where(leads.c.id == keep)).mappings().one()
    dropped = conn.execute(select(leads).where(leads.c.id == drop)).mappings().one()
    for table, column in _lead_references():
        _repoint(conn, table, column, keep, drop)
    fill = {
        col: dropped[col]
        for col in (
            "email",
            "user_id",
            "first_name",
            "last_name",
            "title",
            "phone",
            "account_id",
            "source",
        )
        if kept[col] is None and dropped[col] is not None
    }
    if kept["consent_status"] == "unknown" and dropped["consent_status"] != "unknown":
        fill.update(
            consent_status=dropped["consent_status"],
            consent_at=dropped["consent_at"],
            consent_method=dropped["consent_method"],
        )
    elif (
        kept["consent_status"] == "granted"
        and is_withdrawal(dropped["consent_status"], dropped["consent_method"])
        and (kept["consent_at"] is None or kept["consent_at"] < dropped["consent_at"])
    ):
        # The person withdrew consent (unsubscribed) after the kept record's grant.
        fill.update(
            consent_status=dropped["consent_status"],
            consent_at=dropped["consent_at"],
            consent_method=dropped["consent_method"],
        )
    if dropped["created_at"] < kept["created_at"]:
        fill["created_at"] = dropped["created_at"]
    # An unsubscribe or hard bounce of either record holds for the merged person.
    for col in ("unsubscribed_at", "bounced_at"):
        if dropped[col] is not None and (kept[col] is None or dropped[col] < kept[col]):
            fill[col] = dropped[col]
    attributes = {**(dropped["attributes"] or {}), **(kept["attributes"] or {})}
    conn.execute(delete(leads).where(leads.c.id == drop))
    conn.execute(
        update(leads)
        .where(leads.c.id == keep)
        .values(**fill, attributes=attributes, updated_at=now)
    )


def _lead_references() -> list[tuple[Table, Column[Any]]]:
    """(table, column) for every foreign key to ``leads.id`` in the schema."""
    found = []
    for table in metadata.sorted_tables:
        for fk in table.foreign_keys:
            if fk.column.table is leads and fk.column.name == "id" and table is not leads:
                found.append((table, fk.parent))
    return found


def _unique_sets(table: Table) -> list[set[str]]:
    sets = [{c.name for c in table.primary_key.columns}]
    for constraint in table.constraints:
        if isinstance(constraint, UniqueConstraint):
            sets.append({c.name for c in constraint.columns})
    for index in table.indexes:
        if index.unique and all(isinstance(e, Column) for e in index.expressions):
            sets.append({c.name for c in index.columns})
    sets.extend({c.name} for c in table.columns if c.unique)
    return [s for s in sets if s]


def _repoint(conn: Connection, table: Table, column: Column[Any], keep: int, drop: int) -> None:
    uniques = [s for s in _unique_sets(table) if column.name in s]
    if any(s == {column.name} for s in uniques):
        conn.execute(delete(table).where(column == drop))
        return
    for names in uniques:
        other = table.alias()
        same = [other.c[n] == table.c[n] for n in sorted(names - {column.name})]
        conn.execute(
            delete(table).where(column == drop, exists().where(other.c[column.name] == keep, *same))
        )
    conn.execute(update(table).where(column == drop).values({column.name: keep}))
