"""Files for predictive scoring: read any CRM export, write scored CSVs and model files.

The computation is in ``leadflow.core.predictive``; this module only turns files into
frames and back, with one-line errors for the problems a person can fix.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
from pathlib import Path

import polars as pl

from leadflow.core.predictive import PredictiveError, TrainedModel, report_json

SEPARATORS = (",", ";", "\t", "|")
FORMULA_START = re.compile(r"^[=+\-@\t\r]")
PLAIN_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
PROBABILITY = "probability"
RAISED_BY = "raised_by"
LOWERED_BY = "lowered_by"


def _decode(data: bytes) -> str:
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def sniff_separator(header: str) -> str:
    """The candidate separator that splits the header line (outside quotes) most often."""
    counts = {sep: 0 for sep in SEPARATORS}
    quoted = False
    for ch in header:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in counts:
            counts[ch] += 1
    best = max(SEPARATORS, key=lambda s: counts[s])
    return best if counts[best] else ","


def read_table(path: Path, sep: str = "auto") -> pl.DataFrame:
    """Every column as text (the core decides what is a number), or a PredictiveError."""
    if not path.exists():
        raise PredictiveError(f"{path}: no such file")
    if not path.is_file():
        raise PredictiveError(f"{path}: not a file")
    text = _decode(path.read_bytes())
    if not text.strip():
        raise PredictiveError(f"{path}: the file is empty")
    header = text.lstrip("\r\n").splitlines()[0]
    separator = sniff_separator(header) if sep == "auto" else _separator(sep)
    try:
        frame = pl.read_csv(
            io.BytesIO(text.encode("utf-8")),
            separator=separator,
            infer_schema=False,
        )
    except (pl.exceptions.PolarsError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PredictiveError(f"{path}: cannot read as CSV ({reason})") from exc
    if frame.height == 0:
        raise PredictiveError(f"{path}: a header but no data rows")
    return frame


def _separator(sep: str) -> str:
    named = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
    value = named.get(sep, sep)
    if len(value) != 1:
        raise PredictiveError(f"--sep {sep!r}: use auto, one character, or tab")
    return value


def neutralise(frame: pl.DataFrame) -> pl.DataFrame:
    """Quote text cells a spreadsheet would run as a formula; plain numbers stay as they are."""
    exprs = []
    for name, dtype in frame.schema.items():
        if dtype == pl.Utf8:
            col = pl.col(name)
            risky = col.str.contains(FORMULA_START.pattern) & ~col.str.contains(
                PLAIN_NUMBER.pattern
            )
            exprs.append(pl.when(risky).then(pl.lit("'") + col).otherwise(col).alias(name))
    return frame.with_columns(exprs) if exprs else frame


def scored_frame(frame: pl.DataFrame, model: TrainedModel, top: int = 3) -> pl.DataFrame:
    """The input with probability, raised_by and lowered_by columns (replaced if present)."""
    probability, reasons = model.score(frame, top)
    added = pl.DataFrame(
        {
            PROBABILITY: [round(float(p), 6) for p in probability],
            RAISED_BY: ["; ".join(map(str, up)) for up, _ in reasons],
            LOWERED_BY: ["; ".join(map(str, down)) for _, down in reasons],
        }
    )
    base = frame.drop([c for c in (PROBABILITY, RAISED_BY, LOWERED_BY) if c in frame.columns])
    return pl.concat([base, added], how="horizontal")


def write_csv(frame: pl.DataFrame, path: Path, sep: str = ",") -> None:
    """Formula cells neutralised; written to a temporary file, then moved into place."""
    safe = neutralise(frame)
    _atomic_write(path, safe.write_csv(separator=sep, quote_style="necessary").encode("utf-8"))


def save_model(model: TrainedModel, path: Path) -> Path:
    """The model file at ``path`` and its report as JSON at ``path``.json; returns the latter."""
    data = model.to_bytes()
    _atomic_write(path, data)
    report_path = path.with_name(path.name + ".json")
    _atomic_write(report_path, report_json(model.report).encode("utf-8"))
    return report_path


def load_model(path: Path) -> TrainedModel:
    if not path.exists():
        raise PredictiveError(f"{path}: no such model file")
    if not path.is_file():
        raise PredictiveError(f"{path}: not a file")
    return TrainedModel.from_bytes(path.read_bytes())


def _atomic_write(path: Path, data: bytes) -> None:
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise PredictiveError(f"{path}: directory {directory} does not exist")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


__all__ = [
    "LOWERED_BY",
    "PROBABILITY",
    "RAISED_BY",
    "load_model",
    "neutralise",
    "read_table",
    "save_model",
    "scored_frame",
    "sniff_separator",
    "write_csv",
]
