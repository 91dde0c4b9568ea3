"""CSV written by leadflow (CLI ``--format csv``, API downloads): safe to open in a
spreadsheet. Cells that a spreadsheet would run as a formula (starting with = + - @, tab or
CR) are prefixed with a quote, as OWASP recommends for CSV injection; dates are ISO 8601 and
nested values JSON."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any, TextIO

from leadflow.core.importing import neutralise_cell


def plain(value: Any) -> Any:
    """A cell value as text-ready data: ISO dates, JSON for dicts and lists."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return value


def write_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], out: TextIO) -> None:
    writer = csv.writer(out)
    writer.writerow(columns)
    for r in rows:
        writer.writerow([neutralise_cell(plain(r.get(c))) for c in columns])


def to_csv_string(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    write_csv(rows, columns, buffer)
    return buffer.getvalue()
