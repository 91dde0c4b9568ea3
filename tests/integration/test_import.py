"""CSV lead import on SQLite and PostgreSQL: upsert, rejects, encodings, idempotence."""

from __future__ import annotations

import csv
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from leadflow.adapters.db.tables import accounts, events, leads
from leadflow.core.tracking import parse_message
from leadflow.services.importer import ImportFileError, detect_encoding, import_leads
from leadflow.services.ingest import ingest
from leadflow.services.privacy import erase_person

DATA = Path(__file__).resolve().parents[1] / "data"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def data_file(tmp_path: Path):
    def copy(name: str) -> Path:
        target = tmp_path / name
        shutil.copyfile(DATA / name, target)
        return target

    return copy


def write_csv(path: Path, rows: list[list[str]], *, delimiter: str = ",", encoding="utf-8"):
    with open(path, "w", newline="", encoding=encoding) as f:
        csv.writer(f, delimiter=delimiter).writerows(rows)
    return path


def lead_rows(engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        return {
            r["email"]: dict(r) for r in conn.execute(select(leads).order_by(leads.c.id)).mappings()
        }


def snapshot(engine) -> tuple[list, list, list]:
    with engine.connect() as conn:
        return tuple(  # type: ignore[return-value]
            [tuple(r) for r in conn.execute(select(t).order_by(t.c.id))]
            for t in (leads, accounts, events)
        )


def read_rejects(path: Path, encoding: str = "utf-8", delimiter: str = ",") -> list[dict[str, str]]:
    with open(path, newline="", encoding=encoding) as f:
        return list(csv.DictReader(f, delimiter=delimiter))


def test_hubspot_export_is_imported_and_bad_rows_are_rejected_with_reasons(services, data_file):
    path = data_file("hubspot_contacts.csv")
    summary = import_leads(services.engine, path, now=T0)
    assert (summary.rows_read, summary.created, summary.rejected) == (5, 3, 2)
    assert summary.accounts_created == 2
    stored = lead_rows(services.engine)
    assert set(stored) == {"jane.doe@acme.example", "john.roe@acme.example", "mary@globex.example"}
    jane = stored["jane.doe@acme.example"]
    assert (jane["first_name"], jane["last_name"], jane["title"]) == ("Jane", "Doe", "VP Marketing")
    assert jane["source"] == "Organic Search"
    assert jane["attributes"] == {"crm_id": "101", "lead_status": "NEW"}
    # Same company domain: one account for both Acme people.
    assert jane["account_id"] == stored["john.roe@acme.example"]["account_id"]
    # A formula-looking title is stored as the text it is.
    assert stored["john.roe@acme.example"]["title"].startswith("=HYPERLINK(")
    with services.engine.connect() as conn:
        acme = conn.execute(select(accounts).where(accounts.c.id == jane["account_id"])).one()
        globex = conn.execute(select(accounts).where(accounts.c.name == "Globex")).one()
    assert (acme.domain, acme.industry, acme.employee_count) == ("acme.example", "Software", 250)
    assert (globex.domain, globex.employee_count) == ("globex.example", 1200)

    rejects = read_rejects(Path(summary.rejects_path))
    assert Path(summary.rejects_path) == Path(f"{path}.rejects.csv")
    assert [(r["Record ID"], r["reason"], r["line"]) for r in rejects] == [
        ("104", "missing email", "5"),
        ("105", "invalid email: 'not-an-email'", "6"),
    ]


def test_re_running_the_same_file_changes_nothing(services, data_file):
    path = data_file("hubspot_contacts.csv")
    import_leads(services.engine, path, now=T0)
    before = snapshot(services.engine)
    again = import_leads(services.engine, path, now=T0 + timedelta(days=1))
    assert snapshot(services.engine) == before
    assert (again.created, again.updated, again.unchanged, again.rejected) == (0, 0, 3, 2)
    assert again.accounts_created == 0


def test_every_created_lead_gets_one_identify_event_naming_the_file(services, data_file):
    path = data_file("salesforce_leads.csv")
    import_leads(services.engine, path, now=T0)
    with services.engine.connect() as conn:
        rows = conn.execute(select(events).order_by(events.c.id)).mappings().all()
    assert [r["type"] for r in rows] == ["identify"] * 3
    assert all(r["message_id"].startswith("import-") for r in rows)
    assert {r["context"]["import"]["file"] for r in rows} == {"salesforce_leads.csv"}
    assert [r["context"]["import"]["line"] for r in rows] == [2, 3, 4]
    assert all(r["lead_id"] is not None for r in rows)


def test_salesforce_file_with_a_byte_order_mark(services, data_file):
    summary = import_leads(services.engine, data_file("salesforce_leads.csv"), now=T0)
    assert summary.encoding == "utf-8-sig"
    assert summary.columns["Id"] == "crm_id"
    stored = lead_rows(services.engine)
    ada = stored["ada@engines.example"]
    assert ada["attributes"]["crm_id"] == "00Q5g00000A1"
    assert ada["source"] == "Trade Show"
    # Free-mail addresses never give the account a domain.
    grace = stored["grace@gmail.com"]
    with services.engine.connect() as conn:
        navy = conn.execute(select(accounts).where(accounts.c.id == grace["account_id"])).one()
    assert navy.name == "Navy Labs" and navy.domain is None
    assert grace["attributes"]["employees"] == "51-200"


def test_korean_cp949_business_cards(services, data_file):
    path = data_file("korean_cards_cp949.csv")
    summary = import_leads(services.engine, path, now=T0, source="tradeshow")
    assert summary.encoding == "cp949"
    assert (summary.created, summary.rejected) == (3, 1)
    stored = lead_rows(services.engine)
    hong = stored["gildong.hong@hanbit.example"]
    assert hong["first_name"] == "홍길동" and hong["title"] == "팀장"
    assert hong["consent_status"] == "granted"
    assert hong["source"] == "tradeshow"
    assert hong["attributes"] == {
        "department": "마케팅팀",
        "mobile": "010-1234-5678",
        "메모": "부스 방문",
    }
    kim = stored["younghee@hanbit.example"]
    assert (kim["first_name"], kim["last_name"], kim["consent_status"]) == ("영희", "김", "denied")
    assert kim["phone"] == "010-2222-3333"
    assert stored["sunsin.lee@geobuk.example"]["consent_status"] == "unknown"
    rejects = read_rejects(Path(summary.rejects_path), encoding="cp949")
    assert rejects[0]["성명"] == "박민수"
    assert rejects[0]["reason"].startswith("invalid email")


def test_broken_file_keeps_good_rows_and_rejects_the_rest(services, data_file):
    path = data_file("broken.csv")
    summary = import_leads(services.engine, path, now=T0)
    assert summary.delimiter == ";"
    assert set(lead_rows(services.engine)) == {"good.one@broken.example", "good.two@broken.example"}
    assert lead_rows(services.engine)["good.two@broken.example"]["first_name"] == "Zoë"
    raw = Path(summary.rejects_path).read_bytes()
    # The undecodable bytes are written back exactly as they were.
    assert b"B\xff\xfeb" in raw
    reasons = [r["reason"] for r in read_rejects(Path(summary.rejects_path), "latin-1", ";")]
    assert reasons[0] == "cannot be decoded as utf-8"
    assert reasons[1] == "row has 5 fields but the header has 3 columns"
    assert reasons[2].startswith("malformed CSV")
    assert summary.rows_read == summary.created + summary.rejected == 5


def test_upsert_updates_changed_values_and_never_erases(services, tmp_path):
    ingest(
        services.engine,
        [
            parse_message(
                {
                    "type": "identify",
                    "userId": "u-1",
                    "traits": {"email": "Pat@Example.org", "firstName": "Pat", "phone": "111"},
                },
                received_at=T0,
            )
        ],
        T0,
    )
    first = lead_rows(services.engine)["pat@example.org"]
    path = write_csv(
        tmp_path / "a.csv",
        [
            ["Email", "First Name", "Job Title", "Phone", "Lead Source"],
            ["PAT@example.org", "Patricia", "CFO", "", "webinar"],
        ],
    )
    later = T0 + timedelta(hours=1)
    summary = import_leads(services.engine, path, now=later)
    assert (summary.created, summary.updated) == (0, 1)
    pat = lead_rows(services.engine)["pat@example.org"]
    assert pat["id"] == first["id"]
    assert (pat["first_name"], pat["title"], pat["phone"]) == ("Patricia", "CFO", "111")
    assert pat["source"] == "webinar"  # filled a blank
    assert pat["updated_at"] == later
    # A later list with another source does not rewrite where the lead came from.
    write_csv(path, [["Email", "Lead Source"], ["pat@example.org", "tradeshow"]])
    again = import_leads(services.engine, path, now=later + timedelta(hours=1))
    assert again.unchanged == 1
    assert lead_rows(services.engine)["pat@example.org"]["updated_at"] == later


def test_duplicate_emails_in_one_file_are_one_lead(services, tmp_path):
    path = write_csv(
        tmp_path / "d.csv",
        [
            ["email", "first_name", "title"],
            ["Dup@X.example", "Dee", ""],
            ["dup@x.example", "Dee", "CEO"],
            ["DUP@x.example", "Dee", "CEO"],
        ],
    )
    summary = import_leads(services.engine, path, now=T0)
    assert (summary.created, summary.updated, summary.unchanged) == (1, 1, 1)
    stored = lead_rows(services.engine)
    assert list(stored) == ["dup@x.example"] and stored["dup@x.example"]["title"] == "CEO"


def test_small_batches_give_the_same_result_as_one(services, tmp_path):
    rows = [["email", "company", "first_name"]]
    rows += [[f"p{i}@co{i % 3}.example", f"Co {i % 3}", f"P{i}"] for i in range(11)]
    rows.append(["p0@co0.example", "Co 0", "Changed"])
    path = write_csv(tmp_path / "b.csv", rows)
    summary = import_leads(services.engine, path, now=T0, batch_size=2)
    assert (summary.created, summary.updated, summary.accounts_created) == (11, 1, 3)
    stored = lead_rows(services.engine)
    assert stored["p0@co0.example"]["first_name"] == "Changed"
    assert len({r["account_id"] for r in stored.values()}) == 3


def test_denied_consent_is_never_overturned_by_a_list(services, tmp_path):
    path = write_csv(tmp_path / "c.csv", [["email", "consent"], ["c@x.example", "no"]])
    import_leads(services.engine, path, now=T0)
    write_csv(path, [["email", "consent"], ["c@x.example", "yes"]])
    summary = import_leads(services.engine, path, now=T0 + timedelta(days=1))
    assert summary.unchanged == 1
    assert lead_rows(services.engine)["c@x.example"]["consent_status"] == "denied"


def test_an_erased_address_is_not_imported_again(services, tmp_path):
    path = write_csv(tmp_path / "e.csv", [["email", "first_name"], ["gone@x.example", "Gone"]])
    import_leads(services.engine, path, now=T0)
    erase_person(services.engine, "gone@x.example", now=T0 + timedelta(days=1))
    summary = import_leads(services.engine, path, now=T0 + timedelta(days=2))
    assert (summary.created, summary.rejected) == (0, 1)
    assert "gone@x.example" not in lead_rows(services.engine)
    assert read_rejects(Path(summary.rejects_path))[0]["reason"].startswith("suppressed")


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_semicolon_and_tab_delimited_files(services, tmp_path, delimiter):
    path = write_csv(
        tmp_path / "s.csv",
        [["E-mail", "Company", "Notes"], ["s@x.example", "X, Inc.", "a;b"]],
        delimiter=delimiter,
    )
    summary = import_leads(services.engine, path, now=T0)
    assert summary.delimiter == delimiter and summary.created == 1
    assert lead_rows(services.engine)["s@x.example"]["attributes"] == {"notes": "a;b"}


def test_hostile_values_are_stored_verbatim_and_rejects_are_neutralised(services, tmp_path):
    path = write_csv(
        tmp_path / "h.csv",
        [
            ["email", "first_name", "title"],
            ["h@x.example", "Robert'); DROP TABLE leads;--", "<script>alert(1)</script>"],
            ["=cmd|' /C calc'!A0", "@SUM(1+1)", "-2+3"],
        ],
    )
    summary = import_leads(services.engine, path, now=T0)
    stored = lead_rows(services.engine)
    assert stored["h@x.example"]["first_name"] == "Robert'); DROP TABLE leads;--"
    assert stored["h@x.example"]["title"] == "<script>alert(1)</script>"
    reject = read_rejects(Path(summary.rejects_path))[0]
    assert reject["email"] == "'=cmd|' /C calc'!A0"
    assert reject["first_name"] == "'@SUM(1+1)"
    assert reject["title"] == "'-2+3"
    assert reject["reason"].startswith("invalid email")


def test_a_map_naming_a_missing_column_stores_nothing(services, tmp_path):
    path = write_csv(tmp_path / "m.csv", [["Mail"], ["m@x.example"]])
    with pytest.raises(ImportFileError, match="no column 'Email Address'"):
        import_leads(services.engine, path, now=T0, mapping={"Email Address": "email"})
    summary = import_leads(services.engine, path, now=T0, mapping={"Mail": "email"})
    assert summary.created == 1


def test_a_fixed_rejects_file_can_be_imported_again(services, data_file):
    summary = import_leads(services.engine, data_file("hubspot_contacts.csv"), now=T0)
    rejects = Path(summary.rejects_path)
    fixed = rejects.read_text().replace(",,Buyer", ",nomail@initech.example,Buyer")
    rejects.write_text(fixed)
    again = import_leads(services.engine, rejects, now=T0)
    assert (again.created, again.rejected) == (1, 1)
    initech = lead_rows(services.engine)["nomail@initech.example"]
    assert "reason" not in initech["attributes"] and "line" not in initech["attributes"]


def test_empty_file_and_missing_file_are_refused(services, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(ImportFileError, match="empty"):
        import_leads(services.engine, empty, now=T0)
    with pytest.raises(ImportFileError, match="no such file"):
        import_leads(services.engine, tmp_path / "nope.csv", now=T0)


def test_encoding_detection():
    assert detect_encoding("이메일,이름\n".encode("cp949")) == "cp949"
    assert detect_encoding("이메일,이름\n".encode()) == "utf-8"
    assert detect_encoding(b"\xef\xbb\xbfemail\n") == "utf-8-sig"
    assert detect_encoding(b"email\n") == "utf-8"


def test_one_company_named_with_and_without_a_domain_is_one_account(services, tmp_path):
    path = write_csv(
        tmp_path / "n.csv",
        [
            ["email", "company"],
            ["a@initech.example", "Initech"],
            ["b@gmail.com", "initech"],
        ],
    )
    summary = import_leads(services.engine, path, now=T0)
    assert summary.accounts_created == 1
    stored = lead_rows(services.engine)
    assert stored["a@initech.example"]["account_id"] == stored["b@gmail.com"]["account_id"]
