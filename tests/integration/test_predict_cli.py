"""``leadflow predict train|score`` end to end on a messy export and on UCI Bank Marketing."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import polars as pl
import pytest

from leadflow.entrypoints.cli import app
from leadflow.entrypoints.cli.common import run_guarded

DATA = Path(__file__).resolve().parents[1] / "data"
MESSY = DATA / "predict_messy.csv"
BANK = Path(
    os.environ.get(
        "LEADFLOW_BANK_MARKETING_CSV",
        Path(__file__).resolve().parents[3] / "shared/data/bank-marketing/bank-additional-full.csv",
    )
)


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run_guarded(app, list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_train_on_a_messy_export_then_score_it(tmp_path, capsys):
    model = tmp_path / "messy.model"
    code, out, err = _run(
        capsys,
        "predict", "train", "--csv", str(MESSY), "--target", "Converted",
        "--id", "Lead Number", "--rule-column", "MQL", "--model-out", str(model),
        "--format", "json",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    leaks = {f["column"]: f for f in report["leakage"]}
    assert leaks["Closed Date"]["excluded"] is True
    assert "Closed Date" not in report["columns_used"]
    assert {"Lead Number", "MQL", "Converted"}.isdisjoint(report["columns_used"])
    assert report["evaluation"]["rule"]["handoffs"] > 0
    assert 0.5 < report["evaluation"]["roc_auc"] <= 1.0
    assert json.loads((tmp_path / "messy.model.json").read_text())["version"] == report["version"]

    scored = tmp_path / "scored.csv"
    code, out, err = _run(
        capsys, "predict", "score", "--csv", str(MESSY), "--model", str(model), "--out", str(scored)
    )
    assert code == 0, err
    assert report["version"] in out
    with scored.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    with MESSY.open(newline="") as handle:
        original = list(csv.DictReader(handle))
    assert len(rows) == len(original)
    assert all(0.0 < float(r["probability"]) < 1.0 for r in rows)
    assert any(r["raised_by"] for r in rows) and any(r["lowered_by"] for r in rows)
    # formula cells are neutralised; plain numbers (also negative ones) are untouched
    formulas = [r["Notes"] for r in rows if "HYPERLINK" in r["Notes"]]
    assert formulas and all(v.startswith("'=") for v in formulas)
    assert all(not r["Notes"].startswith(("=", "+", "-", "@")) for r in rows)
    assert [r["TotalVisits"] for r in rows] == [r["TotalVisits"] for r in original]


def test_table_report_names_the_leak_and_the_metrics(capsys):
    code, out, err = _run(
        capsys, "predict", "train", "--csv", str(MESSY), "--target", "Converted", "--no-progress"
    )
    assert code == 0, err
    for expected in ("Leakage guard", "Closed Date", "ROC-AUC", "Brier", "calibration error",
                     "Deciles", "lift"):  # fmt: skip
        assert expected in out
    assert "--model-out" in err


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (None, ["--target", "y"], "no such file"),
        ("", ["--target", "y"], "the file is empty"),
        ("a,b,y\n", ["--target", "y"], "no data rows"),
        ("a,b\n1,2\n3,4\n", ["--target", "y"], "target column 'y' not found"),
        ("a,y\n" + "1,no\n" * 20, ["--target", "y"], "constant"),
        ("a,y\n" + "1,red\n2,green\n3,blue\n" * 5, ["--target", "y"], "not binary"),
        ("a,y\n" + "1,yes\n2,no\n" * 10, ["--target", "y", "--exclude", "zz"], "--exclude 'zz'"),
        ("a,y\n" + "1,yes\n2,no\n" * 10, ["--target", "y", "--keep", "zz"], "--keep 'zz'"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, capsys, content, args, message):
    path = tmp_path / "in.csv"
    if content is not None:
        path.write_text(content)
    code, _, err = _run(capsys, "predict", "train", "--csv", str(path), *args)
    assert code == 1
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_score_refuses_a_file_without_the_model_columns(tmp_path, capsys):
    model = tmp_path / "m.model"
    code, _, err = _run(
        capsys, "predict", "train", "--csv", str(MESSY), "--target", "Converted",
        "--model-out", str(model),
    )  # fmt: skip
    assert code == 0, err
    other = tmp_path / "other.csv"
    other.write_text("x,y\n1,2\n")
    code, _, err = _run(
        capsys, "predict", "score", "--csv", str(other), "--model", str(model),
        "--out", str(tmp_path / "o.csv"),
    )  # fmt: skip
    assert code == 1 and "the model needs column(s)" in err
    bogus = tmp_path / "bogus.model"
    bogus.write_bytes(b"not a model")
    code, _, err = _run(
        capsys, "predict", "score", "--csv", str(MESSY), "--model", str(bogus),
        "--out", str(tmp_path / "o.csv"),
    )  # fmt: skip
    assert code == 1 and "not a leadflow model file" in err


@pytest.mark.skipif(not BANK.exists(), reason=f"{BANK} not present")
def test_bank_marketing_sample_flags_duration_and_predicts_without_it(tmp_path, capsys):
    full = pl.read_csv(BANK, separator=";", infer_schema=False)
    sample = pl.concat(
        [
            group.sample(fraction=3000 / full.height, seed=11)
            for _, group in full.group_by("y", maintain_order=True)
        ]
    )
    path = tmp_path / "bank-sample.csv"
    sample.write_csv(path, separator=";")
    code, out, err = _run(
        capsys, "predict", "train", "--csv", str(path), "--target", "y", "--format", "json"
    )
    assert code == 0, err
    report = json.loads(out)
    duration = [f for f in report["leakage"] if f["column"] == "duration"]
    assert duration and duration[0]["excluded"]
    assert "duration" not in report["columns_used"]
    assert "poutcome" in report["columns_used"]
    assert max(c["roc_auc_mean"] for c in report["candidates"]) > 0.7
    assert report["evaluation"]["roc_auc"] > 0.7
