"""Import leads from a CSV file: stream it, upsert by e-mail, write the rejects, summarise.

- Encoding: a UTF-8 byte-order mark means ``utf-8-sig``; otherwise the first megabyte decides
  between UTF-8 and CP949 (Korean Excel's "CSV" is CP949, a superset of EUC-KR). A row that
  cannot be decoded in that encoding is rejected with the reason; the rest are imported.
- Delimiter: ``,``, ``;`` or tab, whichever the header line uses most.
- Rows are stored in batches (default 1,000 per transaction), so memory stays bounded
  whatever the file size; every good row is stored even when others are rejected.
- Upsert by e-mail (lower-cased); with ``allow_without_email`` (``--without-email``) a row
  without an e-mail is matched by its record id instead, kept as the lead's identity
  (``identities``: ``anonymous`` ``crm:<record id>``), so a re-import updates that lead.
  A value in the file replaces the stored one; an empty or placeholder cell
  (:data:`leadflow.core.importing.PLACEHOLDERS`) never erases. ``source`` only fills a
  blank (where a lead first came from is kept).
- Free columns are typed per column (number, date, boolean, text) by a first pass over the
  file (:class:`leadflow.core.importing.ColumnTypes`) and stored as lead attributes, which
  fit rules (``fit.attributes``) and segment criteria (``attributes``) read.
  Consent is set from a consent column; a stored ``denied`` is never turned into ``granted``
  by an import (only the person can grant again).
- Accounts are matched or created by company domain (the domain column, the website, or the
  e-mail's domain when a company is named), then by name.
- An address on the suppression list (an erased person) is never imported again.
- Every created or changed lead gets one ``identify`` event through the ingestion service,
  so the event log shows where the lead came from; it carries the lead ``source`` when the
  import sets it, and, for a row without a company, its ``industry``, ``country`` and
  ``employees`` (the profile that fit rules read learns them from it). Its messageId is
  derived from the row and the lead's previous state, so a re-run of the same file stores
  nothing new: unchanged rows cause no write at all, and ``updated_at`` only moves when a
  value changed.
- Rejects go to a CSV (same encoding as the input) holding the original row plus ``reason``
  and ``line``; formula-like cells are neutralised. A fixed rejects file can be imported
  again: trailing ``reason`` and ``line`` columns are ignored.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import hashlib
import io
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import Connection, Engine, func, select, update
from sqlalchemy.exc import IntegrityError

from leadflow import __version__
from leadflow.adapters.db.tables import accounts, identities, leads
from leadflow.core.importing import (
    IGNORE,
    ColumnPlan,
    ColumnType,
    ColumnTypes,
    LeadRecord,
    MappingError,
    RowRejected,
    neutralise_cell,
    plan_columns,
    read_row,
)
from leadflow.core.tracking import TrackedMessage
from leadflow.services import privacy
from leadflow.services.ingest import (
    AfterIngest,
    email_domain,
    find_or_create_account,
    ingest_in,
)

log = logging.getLogger(__name__)

SAMPLE_BYTES = 1 << 20
DEFAULT_BATCH_SIZE = 1000
MAX_FIELD_BYTES = 1 << 20
ACCOUNT_CACHE_LIMIT = 100_000
DELIMITERS = (",", ";", "\t")
REJECT_COLUMNS = ("reason", "line")


class ImportFileError(ValueError):
    """The file as a whole cannot be imported (unreadable, empty, no e-mail column...)."""


@dataclass(slots=True)
class ImportSummary:
    """Every data row is exactly one of created, updated, unchanged or rejected."""

    file: str
    encoding: str
    delimiter: str
    rows_read: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    accounts_created: int = 0
    without_email: int = 0
    """Rows stored without an e-mail, matched by their record id."""
    company_on_lead: int = 0
    """Rows without a company whose industry, country or employees were kept on the lead."""
    rejects_path: str | None = None
    columns: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


Progress = Callable[[int, int], None]


def detect_encoding(sample: bytes) -> str:
    """``utf-8-sig`` with a BOM; else UTF-8 or CP949, whichever decodes the sample better."""
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"

    def errors(encoding: str) -> int:
        decoder = codecs.getincrementaldecoder(encoding)(errors="surrogateescape")
        text = decoder.decode(sample, final=False)
        return sum(1 for c in text if "\udc80" <= c <= "\udcff")

    utf8_errors = errors("utf-8")
    if utf8_errors == 0:
        return "utf-8"
    return "cp949" if errors("cp949") < utf8_errors else "utf-8"


def sniff_delimiter(header_line: str) -> str:
    counts = {d: header_line.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] > 0 else ","


def _has_undecodable(values: Sequence[str]) -> bool:
    return any("\udc80" <= c <= "\udcff" for v in values for c in v)


def _rejects_errors(exc: UnicodeError) -> tuple[str | bytes, int]:
    """Write undecodable input bytes back as they were; replace what cannot be encoded."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    chunk = exc.object[exc.start : exc.end]
    if all("\udc80" <= c <= "\udcff" for c in chunk):
        return bytes(ord(c) - 0xDC00 for c in chunk), exc.end
    return "?" * len(chunk), exc.end


codecs.register_error("leadflow-rejects", _rejects_errors)


class RejectsFile:
    """The rejects CSV, opened on the first reject."""

    def __init__(self, path: Path, headers: Sequence[str], encoding: str, delimiter: str) -> None:
        self.path = path
        self.headers = list(headers)
        self.encoding = encoding
        self.delimiter = delimiter
        self._handle: TextIO | None = None
        self._writer: Any = None

    def write(self, line: int, values: Sequence[str], reason: str) -> None:
        if self._writer is None:
            self._handle = open(  # noqa: SIM115 - closed in close()
                self.path, "w", encoding=self.encoding, errors="leadflow-rejects", newline=""
            )
            self._writer = csv.writer(self._handle, delimiter=self.delimiter)
            self._writer.writerow([neutralise_cell(h) for h in (*self.headers, *REJECT_COLUMNS)])
        width = len(self.headers)
        padded = list(values[:width]) + [""] * (width - len(values))
        # Surplus fields go after reason and line, so those two stay in their columns.
        cells = [*padded, reason, line, *values[width:]]
        self._writer.writerow([neutralise_cell(v) for v in cells])

    @property
    def used(self) -> bool:
        return self._writer is not None

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


@dataclass(slots=True)
class _Row:
    line: int
    values: list[str]
    record: LeadRecord


class _Store:
    """Writes batches; account look-ups are cached across batches once committed."""

    def __init__(
        self,
        engine: Engine,
        *,
        now: datetime,
        file_name: str,
        summary: ImportSummary,
        rejects: RejectsFile,
        after: Sequence[AfterIngest],
    ) -> None:
        self.engine = engine
        self.now = now
        self.file_name = file_name
        self.summary = summary
        self.rejects = rejects
        self.after = after
        self.accounts: dict[tuple[str, str], int] = {}

    def flush(self, batch: list[_Row], attempts: int = 3) -> None:
        if not batch:
            return
        for attempt in range(1, attempts + 1):
            outcome = _BatchOutcome()
            try:
                with self.engine.begin() as conn:
                    self._store(conn, batch, outcome)
            except IntegrityError:
                if attempt == attempts:
                    raise
                log.info("import: unique-key race with another writer, retrying the batch")
                continue
            self.accounts.update(outcome.accounts)
            if len(self.accounts) > ACCOUNT_CACHE_LIMIT:
                self.accounts.clear()
            s = self.summary
            s.created += outcome.created
            s.updated += outcome.updated
            s.unchanged += outcome.unchanged
            s.accounts_created += outcome.accounts_created
            s.without_email += outcome.without_email
            s.company_on_lead += outcome.company_on_lead
            for line, values, reason in outcome.rejects:
                self.reject(line, values, reason)
            return

    def reject(self, line: int, values: Sequence[str], reason: str) -> None:
        self.summary.rejected += 1
        self.rejects.write(line, values, reason)

    def _store(self, conn: Connection, batch: list[_Row], out: _BatchOutcome) -> None:
        emails = list({row.record.email for row in batch if row.record.email is not None})
        # Erased addresses: as a row's e-mail (rejected) or anywhere else in it (taken out).
        suppressed = privacy.suppressed_among(
            conn, {*emails, *privacy.addresses_in([r.values for r in batch])}
        )
        current: dict[str, dict[str, Any]] = {
            row["email"]: dict(row)
            for row in conn.execute(select(leads).where(leads.c.email.in_(emails))).mappings()
        }
        by_record_id = list({r.record.key for r in batch if r.record.email is None})
        if by_record_id:
            query = (
                select(identities.c.value, leads)
                .join(leads, leads.c.id == identities.c.lead_id)
                .where(identities.c.kind == "anonymous", identities.c.value.in_(by_record_id))
            )
            for found in conn.execute(query).mappings():
                lead = dict(found)
                current[lead.pop("value")] = lead
        new_rows: dict[str, dict[str, Any]] = {}
        messages: list[TrackedMessage] = []
        known_accounts = self._preload_accounts(conn, batch)
        for row in batch:
            rec = row.record
            if rec.email in suppressed:
                out.rejects.append(
                    (
                        row.line,
                        privacy.strip_addresses(list(row.values), suppressed),
                        "suppressed: this address was erased on request",
                    )
                )
                continue
            if suppressed:
                rec = dataclasses.replace(
                    rec, attributes=privacy.strip_addresses(dict(rec.attributes), suppressed)
                )
            account_id = self._account(conn, rec, out, known_accounts)
            stored = current.get(rec.key)
            if stored is None:
                values = self._new_lead(rec, account_id)
                if rec.email is None:
                    values["id"] = self._insert_by_record_id(conn, rec, values)
                else:
                    new_rows[rec.key] = values
                current[rec.key] = values
                out.created += 1
                self._count(rec, out)
                messages.append(self._identify(row, None, set_source=rec.source is not None))
                continue
            set_source = bool(rec.source and not stored["source"])
            changes = self._changes(stored, rec, account_id)
            if not changes:
                out.unchanged += 1
                continue
            previous = stored.get("updated_at")
            changes["updated_at"] = self.now
            stored.update(changes)
            if rec.email is None:
                conn.execute(update(leads).where(leads.c.id == stored["id"]).values(**changes))
            elif rec.key not in new_rows:
                conn.execute(update(leads).where(leads.c.email == rec.email).values(**changes))
            out.updated += 1
            self._count(rec, out)
            messages.append(self._identify(row, previous, set_source=set_source))
        if new_rows:
            conn.execute(leads.insert(), list(new_rows.values()))
        if messages:
            result = ingest_in(conn, messages, self.now)
            for hook in self.after:
                hook(conn, result.leads_touched, self.now)

    @staticmethod
    def _count(rec: LeadRecord, out: _BatchOutcome) -> None:
        out.without_email += rec.email is None
        out.company_on_lead += not rec.has_account and any(
            k in rec.attributes for k in ("industry", "country", "employees")
        )

    def _insert_by_record_id(
        self, conn: Connection, rec: LeadRecord, values: dict[str, Any]
    ) -> int:
        """A lead without an e-mail, and its record id as its identity."""
        lead_id = int(
            conn.execute(leads.insert().values(**values).returning(leads.c.id)).scalar_one()
        )
        conn.execute(
            identities.insert().values(
                kind="anonymous", value=rec.key, lead_id=lead_id, created_at=self.now
            )
        )
        return lead_id

    def _new_lead(self, rec: LeadRecord, account_id: int | None) -> dict[str, Any]:
        return {
            "email": rec.email,
            "user_id": None,
            "first_name": rec.first_name,
            "last_name": rec.last_name,
            "title": rec.title,
            "phone": rec.phone,
            "account_id": account_id,
            "source": rec.source,
            "consent_status": rec.consent or "unknown",
            "consent_at": self.now if rec.consent else None,
            "consent_method": self._consent_method() if rec.consent else None,
            "attributes": dict(rec.attributes),
            "created_at": self.now,
            "updated_at": self.now,
        }

    def _consent_method(self) -> str:
        return f"csv import {self.file_name}"[:255]

    def _changes(
        self, stored: dict[str, Any], rec: LeadRecord, account_id: int | None
    ) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        for column in ("first_name", "last_name", "title", "phone"):
            value = getattr(rec, column)
            if value is not None and stored[column] != value:
                changes[column] = value
        if account_id is not None and stored["account_id"] != account_id:
            changes["account_id"] = account_id
        if rec.source and not stored["source"]:
            changes["source"] = rec.source
        # Withdrawal is always honoured; a denial is never overturned by a list.
        overturns_denial = stored["consent_status"] == "denied" and rec.consent == "granted"
        if rec.consent and rec.consent != stored["consent_status"] and not overturns_denial:
            changes["consent_status"] = rec.consent
            changes["consent_at"] = self.now
            changes["consent_method"] = self._consent_method()
        attributes = dict(stored["attributes"] or {})
        merged = {**attributes, **rec.attributes}
        if merged != attributes:
            changes["attributes"] = merged
        return changes

    def _account_key(self, rec: LeadRecord) -> tuple[str, str] | None:
        if not rec.company and not rec.domain:
            return None
        domain = rec.domain or (email_domain(rec.email) if rec.company else None)
        if domain:
            return ("domain", domain)
        return ("name", (rec.company or "").strip().lower())

    def _preload_accounts(self, conn: Connection, batch: list[_Row]) -> dict[str, Any]:
        """The batch's accounts not cached yet, in two queries (by domain, by name)."""
        domains: set[str] = set()
        names: set[str] = set()
        for row in batch:
            key = self._account_key(row.record)
            if key is None or key in self.accounts:
                continue
            if key[0] == "domain":
                domains.add(key[1])
            if row.record.company:
                names.add(row.record.company.strip().lower())
        found: dict[str, Any] = {}
        columns = [
            accounts.c.id,
            accounts.c.domain,
            func.lower(accounts.c.name).label("lname"),
            accounts.c.industry,
            accounts.c.employee_count,
            accounts.c.country,
        ]
        if domains:
            for acc in conn.execute(select(*columns).where(accounts.c.domain.in_(domains))):
                found[f"d:{acc.domain}"] = acc
        if names:
            query = select(*columns).where(func.lower(accounts.c.name).in_(names))
            for acc in conn.execute(query.order_by(accounts.c.id)):
                found.setdefault(f"n:{acc.lname}", acc)
        return found

    def _account(
        self, conn: Connection, rec: LeadRecord, out: _BatchOutcome, known: dict[str, Any]
    ) -> int | None:
        key = self._account_key(rec)
        if key is None:
            return None
        cached = out.accounts.get(key) or self.accounts.get(key)
        if cached is not None:
            return cached
        domain = key[1] if key[0] == "domain" else None
        name_key = ("name", rec.company.strip().lower()) if rec.company else None
        if name_key is not None and not domain:
            # An account of this name created or matched earlier in this import.
            by_name = out.accounts.get(name_key) or self.accounts.get(name_key)
            if by_name is not None:
                return by_name
        match = known.get(f"d:{domain}") if domain else None
        if match is None and rec.company:
            match = known.get(f"n:{rec.company.strip().lower()}")
        fields = {
            "industry": rec.industry,
            "employee_count": rec.employee_count,
            "country": rec.country,
        }
        fills_blank = match is not None and any(
            value is not None and getattr(match, name) is None for name, value in fields.items()
        )
        account_id: int | None
        if match is not None and not fills_blank and (not domain or match.domain is not None):
            account_id = int(match.id)
        elif match is None:
            # Known missing (the preload looked by domain and by name): one INSERT, not the
            # three statements of find_or_create_account. A concurrent writer creating the
            # same domain raises IntegrityError and the batch is retried.
            account_id = int(
                conn.execute(
                    accounts.insert()
                    .values(
                        name=(rec.company or domain or "").strip()[:255],
                        domain=domain,
                        traits={},
                        created_at=self.now,
                        updated_at=self.now,
                        **{k: v for k, v in fields.items() if v is not None},
                    )
                    .returning(accounts.c.id)
                ).scalar_one()
            )
            out.accounts_created += 1
        else:
            account_id = find_or_create_account(
                conn, now=self.now, name=rec.company, domain=domain, fields=fields
            )
        if account_id is not None:
            out.accounts[key] = account_id
            if name_key is not None and name_key not in self.accounts:
                out.accounts.setdefault(name_key, account_id)
        return account_id

    def _identify(
        self, row: _Row, previous: datetime | None, *, set_source: bool
    ) -> TrackedMessage:
        rec = row.record
        fingerprint = json.dumps(
            [asdict(rec), previous.isoformat() if previous else "new"],
            sort_keys=True,
            default=str,
            ensure_ascii=False,
        )
        message_id = "import-" + hashlib.sha256(fingerprint.encode()).hexdigest()[:40]
        traits: dict[str, Any] = {"email": rec.email} if rec.email is not None else {}
        for key, value in (
            ("firstName", rec.first_name),
            ("lastName", rec.last_name),
            ("title", rec.title),
            ("phone", rec.phone),
            ("source", rec.source if set_source else None),
        ):
            if value is not None:
                traits[key] = value
        if not rec.has_account:
            # No account holds them: the profile (which fit rules read) learns them here.
            for key in ("industry", "country", "employees"):
                if key in rec.attributes:
                    traits[key] = rec.attributes[key]
        return TrackedMessage(
            message_id=message_id,
            type="identify",
            occurred_at=self.now,
            anonymous_id=rec.key if rec.email is None else None,
            traits=traits,
            context={
                "library": {"name": "leadflow-import", "version": __version__},
                "import": {"file": self.file_name, "line": row.line, "source": rec.source},
            },
        )


@dataclass(slots=True)
class _BatchOutcome:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    accounts_created: int = 0
    without_email: int = 0
    company_on_lead: int = 0
    accounts: dict[tuple[str, str], int] = field(default_factory=dict)
    rejects: list[tuple[int, list[str], str]] = field(default_factory=list)


class _CountingReader(io.RawIOBase):
    """Counts bytes read, for the progress bar."""

    def __init__(self, raw: io.BufferedReader) -> None:
        self.raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.raw.readinto(buffer)
        self.count += n or 0
        return n or 0


def import_leads(
    engine: Engine,
    path: str | Path,
    *,
    now: datetime,
    source: str | None = None,
    mapping: dict[str, str] | None = None,
    rejects_path: str | Path | None = None,
    encoding: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
    after: Iterable[AfterIngest] = (),
    allow_without_email: bool = False,
) -> ImportSummary:
    """Import one CSV file; see the module docstring for the rules."""
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
        raw = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise ImportFileError(f"{path}: cannot open ({exc.strerror})") from None
    with raw:
        sample = raw.read(SAMPLE_BYTES)
        if encoding is None:
            encoding = detect_encoding(sample)
        else:
            try:
                encoding = codecs.lookup(encoding).name
            except LookupError:
                raise ImportFileError(f"--encoding: unknown encoding {encoding!r}") from None
        first_line = sample.decode(encoding, errors="surrogateescape").split("\n", 1)[0]
        delimiter = sniff_delimiter(first_line)

        def column_types(plan: ColumnPlan) -> dict[int, ColumnType]:
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

        raw.seek(0)
        counter = _CountingReader(raw)
        text = io.TextIOWrapper(
            io.BufferedReader(counter, 1 << 16),
            encoding=encoding,
            errors="surrogateescape",
            newline="",
        )
        return _run(
            text,
            counter,
            total=total,
            name=path.name,
            encoding=encoding,
            delimiter=delimiter,
            engine=engine,
            now=now,
            source=source,
            mapping=mapping,
            rejects_target=rejects_target,
            batch_size=batch_size,
            progress=progress,
            after=list(after),
            column_types=column_types,
            allow_without_email=allow_without_email,
        )


def _run(
    text: io.TextIOWrapper,
    counter: _CountingReader,
    *,
    total: int,
    name: str,
    encoding: str,
    delimiter: str,
    engine: Engine,
    now: datetime,
    source: str | None,
    mapping: dict[str, str] | None,
    rejects_target: Path,
    batch_size: int,
    progress: Progress | None,
    after: list[AfterIngest],
    column_types: Callable[[ColumnPlan], dict[int, ColumnType]],
    allow_without_email: bool,
) -> ImportSummary:
    csv.field_size_limit(MAX_FIELD_BYTES)
    reader = csv.reader(text, delimiter=delimiter, strict=True)
    try:
        headers = next(reader)
    except StopIteration:
        raise ImportFileError(f"{name}: the file is empty") from None
    except csv.Error as exc:
        raise ImportFileError(f"{name}: header row is not valid CSV ({exc})") from None
    if _has_undecodable(headers):
        raise ImportFileError(f"{name}: the header row cannot be decoded as {encoding}")
    mapping = dict(mapping or {})
    headers = _drop_reject_columns(headers, mapping)
    try:
        plan = plan_columns(headers, mapping, allow_without_email=allow_without_email)
    except MappingError as exc:
        raise ImportFileError(str(exc)) from None
    types = column_types(plan)
    summary = ImportSummary(
        file=name, encoding=encoding, delimiter=delimiter, columns=_describe(plan, types)
    )
    rejects = RejectsFile(
        rejects_target,
        plan.headers,
        "utf-8-sig" if encoding == "utf-8-sig" else encoding,
        delimiter,
    )
    store = _Store(engine, now=now, file_name=name, summary=summary, rejects=rejects, after=after)
    batch: list[_Row] = []
    try:
        line = reader.line_num + 1
        while True:
            try:
                values = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                summary.rows_read += 1
                store.reject(line, [], f"malformed CSV: {exc}")
                line = reader.line_num + 1
                continue
            row_line, line = line, reader.line_num + 1
            if not any(v.strip() for v in values):
                continue
            summary.rows_read += 1
            if _has_undecodable(values):
                store.reject(row_line, values, f"cannot be decoded as {encoding}")
                continue
            record = read_row(
                plan, values, source=source, types=types, allow_without_email=allow_without_email
            )
            if isinstance(record, RowRejected):
                store.reject(row_line, values, record.reason)
                continue
            batch.append(_Row(row_line, values, record))
            if len(batch) >= batch_size:
                store.flush(batch)
                batch = []
                if progress is not None:
                    progress(counter.count, total)
        store.flush(batch)
    finally:
        rejects.close()
    if progress is not None:
        progress(total, total)
    if rejects.used:
        summary.rejects_path = str(rejects.path)
    return summary


def _drop_reject_columns(headers: list[str], mapping: dict[str, str]) -> list[str]:
    """A fixed rejects file ends with ``reason`` and ``line``: they are not lead data."""
    tail = [h.strip().lower() for h in headers[-2:]]
    if tail == list(REJECT_COLUMNS) and not any(k in mapping for k in headers[-2:]):
        for column in headers[-2:]:
            mapping[column] = IGNORE
    return headers


_COMPANY_FIELDS = {
    "industry": "account.industry, else attributes.industry",
    "country": "account.country, else attributes.country",
    "employee_count": "account.employee_count, else attributes.employees",
}
"""Where company fields go: the row's account, or the lead when the row has no company."""


def _describe(plan: ColumnPlan, types: dict[int, ColumnType]) -> dict[str, str]:
    """Each column and where it is stored (free columns with their inferred type)."""
    described = {
        plan.headers[i]: _COMPANY_FIELDS.get(target, target)
        for i, target in sorted(plan.fields.items())
    }
    described.update(
        {
            plan.headers[i]: f"attributes.{key} ({types.get(i, 'text')})"
            for i, key in sorted(plan.attributes.items())
        }
    )
    return described
