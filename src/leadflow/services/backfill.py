"""CRM history backfill: ``leadflow import accounts|opportunities|activities FILE.csv``.

Reading the file is the lead import's (:mod:`leadflow.services.importer`: encoding and
delimiter detection, a first pass typing the free columns, a rejects CSV with ``reason`` and
``line``, batches of 1,000 rows, one transaction per batch); what a row means is decided in
:mod:`leadflow.core.backfill`. Every kind is idempotent, keyed by the source's own id: a
second import of the same file changes nothing, and a changed row changes only its record.

- **accounts**: matched by the source id (``accounts.external_id``), else by domain, else by
  name (an account the lead import created gets the source id). Industry, employees,
  country and owner are columns; revenue and every other column go to ``traits``, typed.
- **opportunities**: matched by the source id (``opportunities.external_id``). A deal's
  account is matched by its source id, else by name, and created when missing; each contact
  e-mail is matched to its lead, and a person not yet known is created (in one statement per
  batch, as of the earliest created date of its deals; no ``identify`` event is invented for
  it, since nothing about it was tracked). Amount, currency, owner,
  product, dates, outcome and every other column (``attributes``) are stored on the deal;
  contacts and their roles in ``opportunity_contacts`` (a contact is never removed by an
  import). The primary contact's stage log is written at the deal's own dates by sales
  actions that the stage machine accepted in their place
  (:func:`leadflow.core.backfill.deal_actions`), then the person is recomputed in the same
  transaction. A closed deal is never reopened or closed the other way by an import (the
  row is rejected, as the CRM update API refuses it). A backfill sends no
  ``opportunity.*`` signals: these deals closed long ago.
- **activities**: each row becomes a ``track`` event at the source's timestamp through the
  tracking ingestion path (the same validation, channel classification and identity
  stitching as ``/v1/track``): the event is the activity type, ``context.campaign`` carries
  the campaign, source and channel (medium), ``properties`` the content and the free columns.
  Its messageId comes from the activity's id (else its e-mail, date, type, campaign and
  content), so a re-import stores nothing twice. The person is linked by one ``identify``
  with its e-mail (created when unknown).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, func, select, update
from sqlalchemy.exc import IntegrityError

from leadflow.adapters.db.tables import (
    accounts,
    leads,
    opportunities,
    opportunity_contacts,
    sales_actions,
)
from leadflow.adapters.db.tables import (
    events as events_table,
)
from leadflow.core import backfill as core
from leadflow.core.config import LeadModel
from leadflow.core.importing import (
    ColumnPlan,
    ColumnType,
    ColumnTypes,
    MappingError,
)
from leadflow.core.lifecycle import replay
from leadflow.core.tracking import MessageError, TrackedMessage, parse_message
from leadflow.services import lifecycle, privacy
from leadflow.services.importer import (
    DEFAULT_BATCH_SIZE,
    MAX_FIELD_BYTES,
    SAMPLE_BYTES,
    ImportFileError,
    RejectsFile,
    _CountingReader,
    _drop_reject_columns,
    _has_undecodable,
    detect_encoding,
    sniff_delimiter,
)
from leadflow.services.ingest import AfterIngest, ingest_in

log = logging.getLogger(__name__)

ACTOR = "backfill"
ModelFor = Callable[[Connection], LeadModel]
Progress = Callable[[int, int], None]


@dataclass(slots=True)
class BackfillSummary:
    """Every data row is exactly one of created, updated, unchanged or rejected."""

    kind: str
    file: str
    encoding: str
    delimiter: str
    rows_read: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    accounts_created: int = 0
    leads_created: int = 0
    contacts_added: int = 0
    stage_actions: int = 0
    """Sales actions written to put deals in their people's stage logs."""
    stage_refused: int = 0
    """Deal opens or closes the stage machine had no place for (the deal still closed)."""
    closed_alone: int = 0
    """Losses while another deal of the person was open: only the deal closed."""
    seconds: float = 0.0
    rows_per_second: float = 0.0
    rejects_path: str | None = None
    columns: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class _Row:
    line: int
    values: list[str]
    record: Any


@dataclass(slots=True)
class _Batch:
    """What one batch did; added to the summary only once its transaction committed."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    accounts_created: int = 0
    leads_created: int = 0
    contacts_added: int = 0
    stage_actions: int = 0
    stage_refused: int = 0
    closed_alone: int = 0
    rejects: list[tuple[int, list[str], str]] = field(default_factory=list)
    accounts: dict[str, int] = field(default_factory=dict)
    deal_ids: set[int] = field(default_factory=set)
    changed_ids: set[int] = field(default_factory=set)
    created_leads: set[int] = field(default_factory=set)


# --------------------------------------------------------------------------- reading


def _open_text(path: Path, encoding: str) -> tuple[io.TextIOWrapper, _CountingReader]:
    raw = open(path, "rb")  # noqa: SIM115 - the wrapper closes it
    counter = _CountingReader(raw)
    text = io.TextIOWrapper(
        io.BufferedReader(counter, 1 << 16),
        encoding=encoding,
        errors="surrogateescape",
        newline="",
    )
    return text, counter


def _rows(reader: Any, on_error: Callable[[int, str], None]) -> Iterator[tuple[int, list[str]]]:
    """(line, values) of each non-blank data row; malformed CSV goes to ``on_error``."""
    line = reader.line_num + 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            on_error(line, f"malformed CSV: {exc}")
            line = reader.line_num + 1
            continue
        row_line, line = line, reader.line_num + 1
        if any(v.strip() for v in values):
            yield row_line, values


def import_backfill(
    engine: Engine,
    kind: core.Kind,
    path: str | Path,
    *,
    now: datetime,
    model_for: ModelFor,
    mapping: dict[str, str] | None = None,
    stages: dict[str, core.Outcome] | None = None,
    currency: str | None = None,
    rejects_path: str | Path | None = None,
    encoding: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
    after: Iterable[AfterIngest] = (),
) -> BackfillSummary:
    """Import one CRM export of ``kind`` (see the module docs); ``model_for`` gives the
    active model inside a transaction, ``after`` the ingestion hooks (activities)."""
    if kind not in core.KINDS:
        raise ImportFileError(f"kind: expected one of {', '.join(core.KINDS)}")
    started = time.perf_counter()
    path = Path(path)
    if not path.is_file():
        raise ImportFileError(f"{path}: no such file")
    if batch_size < 1:
        raise ImportFileError("batch size must be at least 1")
    total = os.path.getsize(path)
    rejects_target = Path(rejects_path) if rejects_path else Path(f"{path}.rejects.csv")
    if rejects_target.resolve() == path.resolve():
        raise ImportFileError("--rejects: must not be the file being imported")
    try:
        with open(path, "rb") as f:
            sample = f.read(SAMPLE_BYTES)
    except OSError as exc:
        raise ImportFileError(f"{path}: cannot open ({exc.strerror})") from None
    if encoding is None:
        encoding = detect_encoding(sample)
    else:
        try:
            encoding = codecs.lookup(encoding).name
        except LookupError:
            raise ImportFileError(f"--encoding: unknown encoding {encoding!r}") from None
    first_line = sample.decode(encoding, errors="surrogateescape").split("\n", 1)[0]
    delimiter = sniff_delimiter(first_line)
    csv.field_size_limit(MAX_FIELD_BYTES)

    text, counter = _open_text(path, encoding)
    with text:
        reader = csv.reader(text, delimiter=delimiter, strict=True)
        try:
            headers = next(reader)
        except StopIteration:
            raise ImportFileError(f"{path.name}: the file is empty") from None
        except csv.Error as exc:
            raise ImportFileError(f"{path.name}: header row is not valid CSV ({exc})") from None
        if _has_undecodable(headers):
            raise ImportFileError(f"{path.name}: the header row cannot be decoded as {encoding}")
        mapping = dict(mapping or {})
        headers = _drop_reject_columns(headers, mapping)
        try:
            plan = core.plan_columns(kind, headers, mapping)
        except MappingError as exc:
            raise ImportFileError(str(exc)) from None
        types = _column_types(path, encoding, delimiter, plan)
        summary = BackfillSummary(
            kind=kind,
            file=path.name,
            encoding=encoding,
            delimiter=delimiter,
            columns=_describe(kind, plan, types),
        )
        rejects = RejectsFile(
            rejects_target,
            plan.headers,
            "utf-8-sig" if encoding == "utf-8-sig" else encoding,
            delimiter,
        )
        store = _Store(
            engine,
            kind,
            now=now,
            model_for=model_for,
            summary=summary,
            rejects=rejects,
            after=list(after),
        )

        def reject(line: int, reason: str) -> None:
            summary.rows_read += 1
            store.reject(line, [], reason)

        model: LeadModel | None = None
        if kind == "opportunities":
            with engine.connect() as conn:
                model = model_for(conn)
        batch: list[_Row] = []
        try:
            for line, values in _rows(reader, reject):
                summary.rows_read += 1
                if _has_undecodable(values):
                    store.reject(line, values, f"cannot be decoded as {encoding}")
                    continue
                record = _read(kind, plan, values, types, model, stages, currency)
                if isinstance(record, core.RowRejected):
                    store.reject(line, values, record.reason)
                    continue
                batch.append(_Row(line, values, record))
                if len(batch) >= batch_size:
                    store.flush(batch)
                    batch = []
                    if progress is not None:
                        progress(counter.count, total)
            store.flush(batch)
            store.finish()
        finally:
            rejects.close()
    if progress is not None:
        progress(total, total)
    if rejects.used:
        summary.rejects_path = str(rejects.path)
    summary.seconds = round(time.perf_counter() - started, 3)
    if summary.seconds > 0:
        summary.rows_per_second = round(summary.rows_read / summary.seconds, 1)
    return summary


def _read(
    kind: core.Kind,
    plan: ColumnPlan,
    values: Sequence[str],
    types: dict[int, ColumnType],
    model: LeadModel | None,
    stages: dict[str, core.Outcome] | None,
    currency: str | None,
) -> Any:
    if kind == "accounts":
        return core.read_account(plan, values, types)
    if kind == "activities":
        return core.read_activity(plan, values, types)
    assert model is not None
    return core.read_deal(plan, values, model, types=types, stages=stages, currency=currency)


def _column_types(
    path: Path, encoding: str, delimiter: str, plan: ColumnPlan
) -> dict[int, ColumnType]:
    """First pass: the type of each free column, from all its cells."""
    if not plan.attributes:
        return {}
    inference = ColumnTypes(plan)
    with open(path, encoding=encoding, errors="surrogateescape", newline="") as f:
        rows = csv.reader(f, delimiter=delimiter)
        next(rows, None)
        try:
            for values in rows:
                inference.observe(values)
        except csv.Error:
            pass  # the second pass rejects the malformed rows; types from the rest
    return inference.types()


_WHERE = {
    "accounts": "accounts",
    "opportunities": "opportunities",
    "activities": "events (track)",
}


def _describe(kind: core.Kind, plan: ColumnPlan, types: dict[int, ColumnType]) -> dict[str, str]:
    free = "traits" if kind == "accounts" else "attributes"
    if kind == "activities":
        free = "properties"
    described = {
        plan.headers[i]: f"{_WHERE[kind]}.{target}" for i, target in sorted(plan.fields.items())
    }
    described.update(
        {
            plan.headers[i]: f"{free}.{key} ({types.get(i, 'text')})"
            for i, key in sorted(plan.attributes.items())
        }
    )
    return described


# --------------------------------------------------------------------------- storing


class _Store:
    def __init__(
        self,
        engine: Engine,
        kind: core.Kind,
        *,
        now: datetime,
        model_for: ModelFor,
        summary: BackfillSummary,
        rejects: RejectsFile,
        after: Sequence[AfterIngest],
    ) -> None:
        self.engine = engine
        self.kind = kind
        self.now = now
        self.model_for = model_for
        self.summary = summary
        self.rejects = rejects
        self.after = after
        self.accounts: dict[str, int] = {}
        # Deals of this file, those it created or changed, and the people it created: the
        # stage log is written once every deal is stored (finish), so that each person's
        # deals are decided together wherever they are in the file.
        self.deal_ids: set[int] = set()
        self.changed_ids: set[int] = set()
        self.created_leads: set[int] = set()

    def reject(self, line: int, values: Sequence[str], reason: str) -> None:
        self.summary.rejected += 1
        self.rejects.write(line, values, reason)

    def flush(self, batch: list[_Row], attempts: int = 3) -> None:
        if not batch:
            return
        for attempt in range(1, attempts + 1):
            out = _Batch()
            try:
                with self.engine.begin() as conn:
                    if self.kind == "accounts":
                        self._accounts(conn, batch, out)
                    elif self.kind == "opportunities":
                        self._deals(conn, batch, out)
                    else:
                        self._activities(conn, batch, out)
            except IntegrityError:
                if attempt == attempts:
                    raise
                log.info("backfill: unique-key race with another writer, retrying the batch")
                continue
            self.accounts.update(out.accounts)
            self.deal_ids |= out.deal_ids
            self.changed_ids |= out.changed_ids
            self.created_leads |= out.created_leads
            self._count(out)
            for line, values, reason in out.rejects:
                self.reject(line, values, reason)
            return

    def _count(self, out: _Batch) -> None:
        s = self.summary
        for name in (
            "created",
            "updated",
            "unchanged",
            "accounts_created",
            "leads_created",
            "contacts_added",
            "stage_actions",
            "stage_refused",
            "closed_alone",
        ):
            setattr(s, name, getattr(s, name) + getattr(out, name))

    def finish(self, chunk: int = 500) -> None:
        """The stage logs of the people whose deals this file holds, ``chunk`` people per
        transaction: each changed deal, and every deal of the file of a person with no
        backfill action yet (an import interrupted before this step), is decided in core
        with all the person's deals (:func:`leadflow.core.backfill.deal_actions`)."""
        if self.kind != "opportunities" or not (self.deal_ids or self.created_leads):
            return
        people: set[int] = set(self.created_leads)
        ids = sorted(self.deal_ids)
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 1000):
                people |= {
                    int(r.lead_id)
                    for r in conn.execute(
                        select(opportunities.c.lead_id).where(
                            opportunities.c.id.in_(ids[start : start + 1000]),
                            opportunities.c.lead_id.is_not(None),
                        )
                    )
                }
        ordered = sorted(people)
        for start in range(0, len(ordered), chunk):
            out = _Batch()
            with self.engine.begin() as conn:
                self._stage_log(conn, self.model_for(conn), ordered[start : start + chunk], out)
            self._count(out)

    # -- accounts

    def _accounts(self, conn: Connection, batch: list[_Row], out: _Batch) -> None:
        records: list[tuple[_Row, core.AccountRecord]] = [(r, r.record) for r in batch]
        ids = {rec.account_id for _, rec in records if rec.account_id}
        domains = {rec.domain for _, rec in records if rec.domain}
        names = {rec.name.casefold() for _, rec in records}
        by_id: dict[str, dict[str, Any]] = {}
        by_domain: dict[str, dict[str, Any]] = {}
        by_name: dict[str, dict[str, Any]] = {}
        found = conn.execute(
            select(accounts).where(
                accounts.c.external_id.in_(ids)
                | accounts.c.domain.in_(domains)
                | func.lower(accounts.c.name).in_(names)
            )
        ).mappings()
        for hit in found:
            acc = dict(hit)
            if acc["external_id"]:
                by_id[acc["external_id"]] = acc
            if acc["domain"]:
                by_domain[acc["domain"]] = acc
            by_name.setdefault(acc["name"].casefold(), acc)
        for _row, rec in records:
            match = by_id.get(rec.account_id) if rec.account_id else None
            if match is None:
                candidate = (by_domain.get(rec.domain) if rec.domain else None) or by_name.get(
                    rec.name.casefold()
                )
                # Another source id already holds that domain or name: a different account.
                if candidate is not None and (
                    not rec.account_id or candidate["external_id"] in (None, rec.account_id)
                ):
                    match = candidate
            if match is None:
                values = {
                    "name": rec.name[:255],
                    "external_id": rec.account_id,
                    "domain": rec.domain if rec.domain not in by_domain else None,
                    "industry": rec.industry,
                    "employee_count": rec.employees,
                    "country": rec.country,
                    "owner": rec.owner,
                    "traits": dict(rec.traits),
                    "created_at": self.now,
                    "updated_at": self.now,
                }
                new_id = int(
                    conn.execute(
                        accounts.insert().values(**values).returning(accounts.c.id)
                    ).scalar_one()
                )
                acc = {"id": new_id, **values}
                if rec.account_id:
                    by_id[rec.account_id] = acc
                if acc["domain"]:
                    by_domain[acc["domain"]] = acc
                by_name.setdefault(rec.name.casefold(), acc)
                out.created += 1
                out.accounts_created += 1
                continue
            changes: dict[str, Any] = {}
            for column, value in (
                ("name", rec.name[:255]),
                ("external_id", rec.account_id),
                ("industry", rec.industry),
                ("employee_count", rec.employees),
                ("country", rec.country),
                ("owner", rec.owner),
            ):
                if value is not None and match[column] != value:
                    changes[column] = value
            if rec.domain and match["domain"] != rec.domain:
                holder = by_domain.get(rec.domain)
                if holder is None or holder["id"] == match["id"]:
                    changes["domain"] = rec.domain
            traits = dict(match["traits"] or {})
            merged = {**traits, **rec.traits}
            if merged != traits:
                changes["traits"] = merged
            if not changes:
                out.unchanged += 1
                continue
            changes["updated_at"] = self.now
            conn.execute(update(accounts).where(accounts.c.id == match["id"]).values(**changes))
            match.update(changes)
            if changes.get("domain"):
                by_domain[changes["domain"]] = match
            if rec.account_id:
                by_id[rec.account_id] = match
            out.updated += 1

    # -- opportunities

    def _deal_accounts(
        self, conn: Connection, deals: list[core.DealRecord], out: _Batch
    ) -> dict[str, int]:
        """Account ids by ``id:<source id>`` / ``name:<lower name>``; missing ones created."""
        found: dict[str, int] = {}
        wanted_ids = {d.account_id for d in deals if d.account_id}
        wanted_names = {d.account.casefold() for d in deals if d.account and not d.account_id}
        wanted_names |= {d.account.casefold() for d in deals if d.account}
        ids = [i for i in wanted_ids if f"id:{i}" not in self.accounts]
        names = [n for n in wanted_names if f"name:{n}" not in self.accounts]
        found.update({k: v for k, v in self.accounts.items()})
        if ids:
            for row in conn.execute(
                select(accounts.c.id, accounts.c.external_id).where(accounts.c.external_id.in_(ids))
            ):
                found[f"id:{row.external_id}"] = int(row.id)
        if names:
            query = select(accounts.c.id, func.lower(accounts.c.name).label("lname")).where(
                func.lower(accounts.c.name).in_(names)
            )
            for row in conn.execute(query.order_by(accounts.c.id)):
                found.setdefault(f"name:{row.lname}", int(row.id))
        for deal in deals:
            key = _account_key(deal)
            if key is None or key in found:
                continue
            by_name = f"name:{deal.account.casefold()}" if deal.account else None
            if deal.account_id and by_name in found:
                assert by_name is not None
                found[key] = found[by_name]
                continue
            name = (deal.account or deal.account_id or "")[:255]
            new_id = int(
                conn.execute(
                    accounts.insert()
                    .values(
                        name=name,
                        external_id=deal.account_id,
                        traits={},
                        created_at=self.now,
                        updated_at=self.now,
                    )
                    .returning(accounts.c.id)
                ).scalar_one()
            )
            found[key] = new_id
            if by_name is not None:
                found.setdefault(by_name, new_id)
            out.accounts_created += 1
        out.accounts.update(found)
        return found

    def _contacts(
        self, conn: Connection, named: list[tuple[str, datetime]], out: _Batch
    ) -> tuple[dict[str, int], set[int], set[str]]:
        """Lead ids by e-mail, the leads created, and the erased addresses. A person known
        only from the deal export is created directly, in one statement per batch, as of
        the earliest created date of its deals: nothing about it was tracked, so it gets no
        ``identify`` event (its deals are its first inputs)."""
        first: dict[str, datetime] = {}
        for email, opened in named:
            first[email] = min(first.get(email, opened), opened)
        if not first:
            return {}, set(), set()
        suppressed = privacy.suppressed_among(conn, first)
        emails = [e for e in first if e not in suppressed]
        known = {
            row.email: int(row.id)
            for row in conn.execute(
                select(leads.c.id, leads.c.email).where(
                    leads.c.email.in_(emails), leads.c.erased_at.is_(None)
                )
            )
        }
        missing = [e for e in emails if e not in known]
        created: set[int] = set()
        if missing:
            conn.execute(
                leads.insert(),
                [
                    {
                        "email": email,
                        "user_id": None,
                        "consent_status": "unknown",
                        "attributes": {},
                        "created_at": first[email],
                        "updated_at": self.now,
                    }
                    for email in missing
                ],
            )
            for row in conn.execute(
                select(leads.c.id, leads.c.email).where(leads.c.email.in_(missing))
            ):
                known[row.email] = int(row.id)
                created.add(int(row.id))
            out.leads_created += len(created)
        return known, created, suppressed

    def _deals(self, conn: Connection, batch: list[_Row], out: _Batch) -> None:
        # Rows of one deal (a report with a row per contact role) are one deal.
        groups: dict[str, list[_Row]] = {}
        for row in batch:
            groups.setdefault(row.record.opportunity_id, []).append(row)
        deals: list[tuple[_Row, core.DealRecord, list[tuple[str, str]]]] = []
        for rows in groups.values():
            head: core.DealRecord = rows[0].record
            contacts = [(e, head.role) for e in head.contacts]
            for other in rows[1:]:
                rec: core.DealRecord = other.record
                if _deal_values(rec) != _deal_values(head):
                    out.rejects.append(
                        (
                            other.line,
                            other.values,
                            f"deal {rec.opportunity_id!r} differs from its row on line "
                            f"{rows[0].line} (only contacts may differ)",
                        )
                    )
                    continue
                contacts += [(e, rec.role) for e in rec.contacts]
                out.unchanged += 1  # counted with its deal's first row
            deals.append((rows[0], head, contacts))
        records = [d for _, d, _ in deals]
        account_ids = self._deal_accounts(conn, records, out)
        named = [(e, d.created_at) for _, d, contacts in deals for e, _ in contacts]
        lead_ids, created_leads, suppressed = self._contacts(conn, named, out)
        stored = {
            row["external_id"]: dict(row)
            for row in conn.execute(
                select(opportunities).where(
                    opportunities.c.external_id.in_([d.opportunity_id for d in records])
                )
            ).mappings()
        }
        contacts_of: dict[int, set[int]] = {}
        if stored:
            for hit in conn.execute(
                select(opportunity_contacts.c.opportunity_id, opportunity_contacts.c.lead_id).where(
                    opportunity_contacts.c.opportunity_id.in_([o["id"] for o in stored.values()])
                )
            ):
                contacts_of.setdefault(int(hit.opportunity_id), set()).add(int(hit.lead_id))
        inserts: list[dict[str, Any]] = []
        changed_ids: set[int] = set()
        pending_contacts: list[tuple[str, int, str]] = []  # (external id, lead id, role)
        lead_accounts: dict[int, int] = {}
        for row, deal, contacts in deals:
            people = [(lead_ids[e], role) for e, role in contacts if e in lead_ids]
            primary = people[0][0] if people else None
            account_id = account_ids.get(_account_key(deal) or "")
            values = _deal_row(deal, account_id, suppressed)
            for lead_id, _ in people:
                if lead_id in created_leads and account_id is not None:
                    lead_accounts.setdefault(lead_id, account_id)
            old = stored.get(deal.opportunity_id)
            if old is None:
                inserts.append(
                    {
                        **values,
                        "external_id": deal.opportunity_id,
                        "lead_id": primary,
                        "created_at": deal.created_at,
                        "updated_at": self.now,
                    }
                )
                pending_contacts += [(deal.opportunity_id, lid, role) for lid, role in people]
                out.created += 1
                continue
            if old["stage"] != "open" and old["stage"] != deal.outcome:
                out.rejects.append(
                    (
                        row.line,
                        row.values,
                        f"deal {deal.opportunity_id!r} is already {old['stage']} in leadflow; "
                        "a closed deal cannot be reopened or closed again",
                    )
                )
                continue
            changes = {k: v for k, v in values.items() if not _same(old.get(k), v)}
            if not _same(old["created_at"], deal.created_at):
                changes["created_at"] = deal.created_at
            if old["lead_id"] is None and primary is not None:
                changes["lead_id"] = primary
            new_people = [
                (lid, role) for lid, role in people if lid not in contacts_of.get(old["id"], set())
            ]
            pending_contacts += [(deal.opportunity_id, lid, role) for lid, role in new_people]
            if not changes and not new_people:
                out.unchanged += 1
                continue
            if changes:
                changes["updated_at"] = self.now
                conn.execute(
                    update(opportunities).where(opportunities.c.id == old["id"]).values(changes)
                )
                if {"stage", "created_at", "closed_at", "lead_id"} & set(changes):
                    changed_ids.add(int(old["id"]))
            out.updated += 1
        if inserts:
            conn.execute(opportunities.insert(), inserts)
            new_ids = {
                row.external_id: int(row.id)
                for row in conn.execute(
                    select(opportunities.c.id, opportunities.c.external_id).where(
                        opportunities.c.external_id.in_([i["external_id"] for i in inserts])
                    )
                )
            }
            changed_ids |= set(new_ids.values())
            stored.update({ext: {"id": i} for ext, i in new_ids.items()})
        contact_rows: list[dict[str, Any]] = []
        seen: set[tuple[int, int]] = set()
        for ext, lead_id, role in pending_contacts:
            pair = (int(stored[ext]["id"]), lead_id)
            if pair not in seen:
                seen.add(pair)
                contact_rows.append({"opportunity_id": pair[0], "lead_id": lead_id, "role": role})
        if contact_rows:
            conn.execute(opportunity_contacts.insert(), contact_rows)
            out.contacts_added += len(contact_rows)
        for lead_id, account_id in lead_accounts.items():
            conn.execute(
                update(leads)
                .where(leads.c.id == lead_id, leads.c.account_id.is_(None))
                .values(account_id=account_id)
            )
        out.deal_ids |= {int(o["id"]) for o in stored.values()}
        out.changed_ids |= changed_ids
        out.created_leads |= created_leads

    def _stage_log(
        self, conn: Connection, model: LeadModel, people: list[int], out: _Batch
    ) -> None:
        """Decide (core) and store the sales actions that put the deals in their people's
        stage logs, then recompute the people that changed (and the people created)."""
        touched = {p for p in people if p in self.created_leads}
        if people:
            spans: dict[int, list[core.DealSpan]] = {}
            for r in conn.execute(
                select(opportunities).where(opportunities.c.lead_id.in_(people))
            ).mappings():
                spans.setdefault(int(r["lead_id"]), []).append(_span(r))
            ids = sorted(people)
            profiles = lifecycle.load_profiles(conn, ids, model)
            events = lifecycle.load_events(conn, ids)
            actions = lifecycle.load_actions(conn, ids)
            rows: list[dict[str, Any]] = []
            for lead_id in ids:
                if lead_id not in profiles:
                    continue
                # A person with none of a backfill's actions never had its deals decided
                # (an import stopped before this step): all its deals of the file are.
                undecided = not any(a.actor == ACTOR for a in actions.get(lead_id, ()))
                pending = {
                    d.id
                    for d in spans.get(lead_id, [])
                    if d.id in self.changed_ids or (undecided and d.id in self.deal_ids)
                }
                if not pending:
                    continue
                state = replay(
                    profiles[lead_id],
                    events.get(lead_id, ()),
                    model,
                    actions=actions.get(lead_id, ()),
                )
                decided = core.deal_actions(
                    state, spans.get(lead_id, []), pending, model, actor=ACTOR
                )
                out.stage_refused += len(decided.refused)
                out.closed_alone += len(decided.closed_alone)
                for a in decided.actions:
                    rows.append(
                        {
                            "action_id": a.action_id,
                            "lead_id": lead_id,
                            "name": a.name,
                            "at": a.at,
                            "amount": a.amount,
                            "bant": None,
                            "reason": a.reason,
                            "actor": a.actor,
                            "created_at": self.now,
                        }
                    )
                if decided.actions:
                    touched.add(lead_id)
            if rows:
                conn.execute(sales_actions.insert(), rows)
                out.stage_actions += len(rows)
        if touched:
            lifecycle.recompute(conn, sorted(touched), model, self.now)

    # -- activities

    def _activities(self, conn: Connection, batch: list[_Row], out: _Batch) -> None:
        records: list[tuple[_Row, core.ActivityRecord]] = [(r, r.record) for r in batch]
        suppressed = privacy.suppressed_among(conn, {rec.email for _, rec in records})
        first: dict[str, datetime] = {}
        good: list[tuple[_Row, core.ActivityRecord]] = []
        for row, rec in records:
            if rec.email in suppressed:
                out.rejects.append(
                    (
                        row.line,
                        privacy.strip_addresses(list(row.values), suppressed),
                        "suppressed: this address was erased on request",
                    )
                )
                continue
            first[rec.email] = min(first.get(rec.email, rec.at), rec.at)
            good.append((row, rec))
        if not good:
            return
        known = {
            row.email
            for row in conn.execute(select(leads.c.email).where(leads.c.email.in_(list(first))))
        }
        messages: list[TrackedMessage] = [_identify(email, at) for email, at in first.items()]
        tracks: list[TrackedMessage] = []
        for row, rec in good:
            try:
                tracks.append(_track(rec, self.now))
            except MessageError as exc:
                out.rejects.append((row.line, row.values, f"{exc}"))
        ids = [m.message_id for m in tracks]
        seen = {
            r.message_id
            for r in conn.execute(
                select(events_table.c.message_id).where(events_table.c.message_id.in_(ids))
            )
        }
        result = ingest_in(conn, [*messages, *tracks], self.now)
        new = len({m.message_id for m in tracks} - seen)
        out.created += new
        out.unchanged += len(tracks) - new
        out.leads_created += len(set(first) - known)
        for hook in self.after:
            hook(conn, result.leads_touched, self.now)


# --------------------------------------------------------------------------- helpers


def _span(r: Any) -> core.DealSpan:
    return core.DealSpan(
        id=int(r["id"]),
        key=r["external_id"] or f"#{r['id']}",
        outcome=r["stage"],
        created_at=_utc(r["created_at"]),
        closed_at=_utc(r["closed_at"]) if r["closed_at"] is not None else None,
        amount=r["amount"],
        lost_reason=r["lost_reason"],
    )


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, datetime) and isinstance(b, datetime):
        return _utc(a) == _utc(b)
    if isinstance(a, datetime) and isinstance(b, date):
        return a.date() == b
    return bool(a == b)


def _account_key(deal: core.DealRecord) -> str | None:
    if deal.account_id:
        return f"id:{deal.account_id}"
    if deal.account:
        return f"name:{deal.account.casefold()}"
    return None


def _deal_values(deal: core.DealRecord) -> tuple[Any, ...]:
    """What must agree between rows of one deal (everything but the contact and role)."""
    d = asdict(deal)
    d.pop("contacts")
    d.pop("role")
    return tuple(sorted((k, repr(v)) for k, v in d.items()))


def _deal_row(
    deal: core.DealRecord, account_id: int | None, suppressed: set[str]
) -> dict[str, Any]:
    """The columns a deal's row sets (not its id, lead, created or updated time)."""
    attributes = dict(deal.attributes)
    if suppressed:
        attributes = privacy.strip_addresses(attributes, suppressed)
    return {
        "account_id": account_id,
        "name": deal.name[:255],
        "amount": deal.amount,
        "currency": deal.currency,
        "expected_close": deal.expected_close.date() if deal.expected_close else None,
        "stage": deal.outcome,
        "lost_reason": deal.lost_reason[:64] if deal.lost_reason else None,
        "owner": deal.owner[:64] if deal.owner else None,
        "closed_at": deal.closed_at,
        "product": deal.product[:255] if deal.product else None,
        "attributes": attributes,
    }


def link_id(email: str) -> str:
    """The anonymous id that links a backfilled person's activities to it."""
    return "backfill-" + hashlib.sha256(email.encode()).hexdigest()[:32]


def _identify(email: str, at: datetime) -> TrackedMessage:
    return TrackedMessage(
        message_id=f"backfill-link-{link_id(email)}",
        type="identify",
        occurred_at=at,
        anonymous_id=link_id(email),
        traits={"email": email},
        context={"library": {"name": "leadflow-backfill"}},
    )


def _track(rec: core.ActivityRecord, now: datetime) -> TrackedMessage:
    """An activity as a Segment ``track`` message, validated like ``/v1/track``."""
    properties: dict[str, Any] = {k: v for k, v in rec.attributes.items()}
    if rec.content is not None:
        properties["content"] = rec.content
    if rec.channel is not None:
        properties["channel"] = rec.channel
    campaign = {
        k: v
        for k, v in (("name", rec.campaign), ("source", rec.source), ("medium", rec.channel))
        if v is not None
    }
    context: dict[str, Any] = {"library": {"name": "leadflow-backfill"}}
    if campaign:
        context["campaign"] = campaign
    if rec.url is not None:
        context["page"] = {"url": rec.url}
    raw = {
        "type": "track",
        "event": rec.type,
        "messageId": rec.message_id,
        "anonymousId": link_id(rec.email),
        "timestamp": rec.at.isoformat(),
        "properties": properties,
        "context": context,
    }
    return parse_message(raw, received_at=now)
