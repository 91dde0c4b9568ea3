"""Tabular output for the CLI: ``--format table|json|csv``.

CSV cells that a spreadsheet would run as a formula (starting with = + - @, tab or CR)
are prefixed with a quote, as OWASP recommends for CSV injection.
"""

from __future__ import annotations

import csv
import enum
import io
import json
import sys
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

from leadflow.core.importing import neutralise_cell


class Format(enum.StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return value


def render(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    fmt: Format,
    *,
    title: str | None = None,
    out: TextIO | None = None,
) -> None:
    out = out or sys.stdout
    if fmt is Format.json:
        out.write(
            json.dumps(
                [{c: r.get(c) for c in columns} for r in rows],
                default=str,
                ensure_ascii=False,
                indent=2,
            )
        )
        out.write("\n")
        return
    if fmt is Format.csv:
        writer = csv.writer(out)
        writer.writerow(columns)
        for r in rows:
            writer.writerow([neutralise_cell(_plain(r.get(c))) for c in columns])
        return
    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*("" if r.get(c) is None else str(_plain(r.get(c))) for c in columns))
    Console(file=out, soft_wrap=False, width=max(100, min(220, len(columns) * 24))).print(table)


def to_csv_string(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    render(rows, columns, Format.csv, out=buffer)
    return buffer.getvalue()
