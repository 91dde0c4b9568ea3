"""Tabular output for the CLI: ``--format table|json|csv`` (CSV through
:mod:`leadflow.adapters.csv_export`, formula-safe)."""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

from leadflow.adapters.csv_export import plain, to_csv_string, write_csv


class Format(enum.StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


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
        write_csv(rows, columns, out)
        return
    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*("" if r.get(c) is None else str(plain(r.get(c))) for c in columns))
    Console(file=out, soft_wrap=False, width=max(100, min(220, len(columns) * 24))).print(table)


__all__ = ["Format", "plain", "render", "to_csv_string"]
