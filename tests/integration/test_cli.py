"""The leads and import CLI: results, exit codes, one-line errors (never a traceback)."""

from __future__ import annotations

import csv
import json
import shutil
import stat
from pathlib import Path

import pytest

from leadflow.entrypoints.cli import app
from leadflow.entrypoints.cli.common import run_guarded

DATA = Path(__file__).resolve().parents[1] / "data"


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = run_guarded(app, list(args))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code != 0
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def hubspot(tmp_path: Path) -> Path:
    target = tmp_path / "hubspot.csv"
    shutil.copyfile(DATA / "hubspot_contacts.csv", target)
    return target


def test_import_then_list_show_export_erase(capsys, db_url, hubspot, tmp_path):
    code, out, err = run(
        capsys,
        "import",
        "leads",
        str(hubspot),
        "--source",
        "tradeshow",
        "--format",
        "json",
        "--database-url",
        db_url,
    )
    assert code == 0, err
    summary = json.loads(out)[0]
    assert (summary["created"], summary["rejected"]) == (3, 2)
    assert "2 row(s) rejected" in err
    code, out, _ = run(
        capsys,
        "import",
        "leads",
        str(hubspot),
        "--source",
        "tradeshow",
        "--format",
        "json",
        "--database-url",
        db_url,
    )
    assert code == 0 and json.loads(out)[0]["unchanged"] == 3

    code, out, _ = run(
        capsys,
        "leads",
        "list",
        "--source",
        "tradeshow",
        "--format",
        "json",
        "--database-url",
        db_url,
    )
    assert code == 0
    assert {r["email"] for r in json.loads(out)} == {
        "jane.doe@acme.example",
        "john.roe@acme.example",
        "mary@globex.example",
    }

    code, out, _ = run(capsys, "leads", "list", "--format", "csv", "--database-url", db_url)
    rows = list(csv.DictReader(out.splitlines()))
    john = next(r for r in rows if r["email"] == "john.roe@acme.example")
    assert john["title"].startswith("'=HYPERLINK")  # neutralised in CSV output

    code, out, _ = run(
        capsys,
        "leads",
        "show",
        "Jane.Doe@acme.example",
        "--format",
        "json",
        "--database-url",
        db_url,
    )
    shown = json.loads(out)
    assert code == 0
    assert shown["lead"]["first_name"] == "Jane" and shown["account"]["name"] == "Acme Corp"
    assert [e["type"] for e in shown["events"]] == ["identify"]

    code, out, _ = run(capsys, "leads", "show", "jane.doe@acme.example", "--database-url", db_url)
    assert code == 0 and "timeline" in out and "Acme Corp" in out

    target = tmp_path / "jane.json"
    code, _, err = run(
        capsys,
        "leads",
        "export",
        "jane.doe@acme.example",
        "--out",
        str(target),
        "--database-url",
        db_url,
    )
    assert code == 0, err
    assert json.loads(target.read_text())["lead"]["email"] == "jane.doe@acme.example"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600

    code, out, _ = run(
        capsys, "leads", "erase", "jane.doe@acme.example", "--yes", "--database-url", db_url
    )
    assert code == 0 and "erased lead" in out
    code, _, err = run(capsys, "leads", "show", "jane.doe@acme.example", "--database-url", db_url)
    assert_one_line_error(code, err, "no lead with e-mail jane.doe@acme.example")
    code, _, err = run(capsys, "leads", "export", "jane.doe@acme.example", "--database-url", db_url)
    assert_one_line_error(code, err, "was erased")


def test_erase_without_yes_and_without_a_terminal_refuses(capsys, db_url, hubspot):
    run(capsys, "import", "leads", str(hubspot), "--database-url", db_url)
    code, _, err = run(capsys, "leads", "erase", "mary@globex.example", "--database-url", db_url)
    assert_one_line_error(code, err, "--yes")
    code, out, _ = run(
        capsys, "leads", "show", "mary@globex.example", "--format", "json", "--database-url", db_url
    )
    assert code == 0 and json.loads(out)["lead"]["email"] == "mary@globex.example"


@pytest.mark.parametrize("verb", ["show", "export", "erase"])
def test_unknown_email_is_a_one_line_error(capsys, db_url, verb):
    extra = ["--yes"] if verb == "erase" else []
    code, _, err = run(capsys, "leads", verb, "nobody@x.example", *extra, "--database-url", db_url)
    assert_one_line_error(code, err, "no lead with e-mail nobody@x.example")


def test_missing_database_file_is_a_one_line_error(capsys, tmp_path, hubspot):
    url = f"sqlite:///{tmp_path / 'missing.db'}"
    for args in (["leads", "list"], ["import", "leads", str(hubspot)]):
        code, _, err = run(capsys, *args, "--database-url", url)
        assert_one_line_error(code, err, "does not exist", "leadflow init")
    assert not (tmp_path / "missing.db").exists()


def test_unreachable_postgresql_is_a_one_line_error(capsys):
    url = "postgresql+psycopg://postgres@127.0.0.1:1/test"
    code, _, err = run(capsys, "leads", "list", "--database-url", url)
    assert_one_line_error(code, err, "cannot open database")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["leads", "list", "--limit", "0"], "--limit"),
        (["leads", "list", "--search", "x" * 300], "--search"),
        (["leads", "show", "not-an-email"], "EMAIL"),
        (["leads", "show", "a@b.example", "--events", "0"], "--events"),
        (["import", "leads", "{hubspot}", "--map", "Email"], "COLUMN=FIELD"),
        (["import", "leads", "{hubspot}", "--map", "Email=colour"], "unknown field 'colour'"),
        (["import", "leads", "{hubspot}", "--map", "Mail=email"], "no column 'Mail'"),
        (["import", "leads", "{hubspot}", "--source", "s" * 101], "--source"),
        (["import", "leads", "{hubspot}", "--encoding", "klingon"], "--encoding"),
        (["import", "leads", "{missing}"], "does not exist"),
    ],
)
def test_bad_arguments_are_one_line_errors(capsys, db_url, hubspot, tmp_path, args, needle):
    args = [a.format(hubspot=hubspot, missing=tmp_path / "nope.csv") for a in args]
    code, _, err = run(capsys, *args, "--database-url", db_url)
    assert_one_line_error(code, err, needle)
    code, out, _ = run(capsys, "leads", "list", "--format", "json", "--database-url", db_url)
    assert json.loads(out) == []  # nothing was stored


def test_wrongly_typed_option_is_a_usage_error(capsys, db_url):
    code, _, err = run(capsys, "leads", "list", "--limit", "many", "--database-url", db_url)
    assert code == 2 and "Traceback" not in err and "--limit" in err


def test_import_to_a_rejects_path_of_choice(capsys, db_url, hubspot, tmp_path):
    rejects = tmp_path / "bad rows.csv"
    code, _, err = run(
        capsys, "import", "leads", str(hubspot), "--rejects", str(rejects), "--database-url", db_url
    )
    assert code == 0, err
    assert len(list(csv.DictReader(rejects.open()))) == 2
    assert not Path(f"{hubspot}.rejects.csv").exists()
