"""``leadflow predict train --csv`` on a generated lead export with planted post-outcome
columns: each is flagged with its reason, the reported AUC is the honest one, ``--keep``
brings a column back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.lead_export import PLANTED, TARGET, lead_export

from leadflow.entrypoints.cli import app
from leadflow.entrypoints.cli.common import run_guarded


def _train(capsys: pytest.CaptureFixture[str], path: Path, *extra: str) -> dict:
    code = run_guarded(
        app,
        ["predict", "train", "--csv", str(path), "--target", TARGET, "--no-progress",
         "--format", "json", *extra],
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    frame = lead_export(rows=5000, seed=7)
    folder = tmp_path_factory.mktemp("leads")
    raw, honest = folder / "Leads.csv", folder / "Leads-honest.csv"
    frame.write_csv(raw)
    frame.drop(list(PLANTED)).write_csv(honest)  # the post-outcome columns dropped by hand
    return raw, honest


def test_guard_drops_the_planted_columns_and_reports_the_honest_auc(exports, capsys):
    raw, honest = exports
    guarded = _train(capsys, raw)
    by_hand = _train(capsys, honest)

    found = {f["column"]: f for f in guarded["leakage"]}
    assert set(found) == set(PLANTED)
    expected = {
        "Lead Number": "row id",
        "Tags": "determinism",
        "Lead Quality": "missingness",
        "Lead Profile": "missingness",
        "Last Notable Activity": "name + strength",
    }
    for column, signature in expected.items():
        assert found[column]["excluded"] is True
        assert any(r.startswith(signature) for r in found[column]["reasons"]), found[column]
    assert set(PLANTED).isdisjoint(guarded["columns_used"])
    dropped = {d["column"]: d["reason"] for d in guarded["dropped"]}
    for column in PLANTED:
        assert dropped[column].startswith("suspected leakage: ")
        assert expected[column] in dropped[column]
    # honest pre-outcome columns (also those with suspicious names) are kept
    for column in ("Total Time Spent on Website", "TotalVisits", "Last Activity",
                   "Asymmetrique Activity Index", "What is your current occupation"):  # fmt: skip
        assert column in guarded["columns_used"]

    assert by_hand["leakage"] == []
    assert guarded["columns_used"] == by_hand["columns_used"]
    honest_auc = by_hand["evaluation"]["roc_auc"]
    assert 0.72 < honest_auc < 0.86
    assert guarded["evaluation"]["roc_auc"] == pytest.approx(honest_auc, abs=0.005)
    for a, b in zip(guarded["candidates"], by_hand["candidates"], strict=True):
        assert a["roc_auc_mean"] == pytest.approx(b["roc_auc_mean"], abs=0.005)


def test_keep_brings_tags_back_and_the_auc_rises(exports, capsys):
    raw, honest = exports
    kept = _train(capsys, raw, "--keep", "Tags")
    honest_auc = _train(capsys, honest)["evaluation"]["roc_auc"]
    tags = next(f for f in kept["leakage"] if f["column"] == "Tags")
    assert tags["excluded"] is False
    assert "Tags" in kept["columns_used"]
    assert {"Lead Quality", "Lead Number"}.isdisjoint(kept["columns_used"])
    assert kept["evaluation"]["roc_auc"] > honest_auc + 0.1

    everything = _train(capsys, raw, "--keep", ",".join(PLANTED))
    assert everything["evaluation"]["roc_auc"] > 0.97  # what the unguarded run would report


def test_table_output_lists_each_dropped_column_with_its_reason(exports, capsys):
    raw, _ = exports
    code = run_guarded(
        app, ["predict", "train", "--csv", str(raw), "--target", TARGET, "--no-progress"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "Leakage guard: suspected columns" in out
    for word in ("determinism:", "missingness:", "strength:", "row id:"):
        assert word in out
    summary = next(line for line in out.splitlines() if line.startswith("trained without"))
    for column in PLANTED:
        assert column in summary
