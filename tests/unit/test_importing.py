"""Column recognition and row validation for CSV lead import (pure core)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leadflow.core.importing import (
    FIELD_LIMITS,
    LeadRecord,
    MappingError,
    RowRejected,
    check_source,
    domain_of,
    header_key,
    neutralise_cell,
    parse_map_options,
    plan_columns,
    read_row,
    split_full_name,
)

HUBSPOT = [
    "Record ID",
    "First Name",
    "Last Name",
    "Email",
    "Job Title",
    "Phone Number",
    "Company Name",
    "Company Domain Name",
    "Website URL",
    "Industry",
    "Number of Employees",
    "Country/Region",
    "Lead Status",
    "Original Source",
]
SALESFORCE = [
    "Id",
    "FirstName",
    "LastName",
    "Title",
    "Company",
    "Email",
    "Phone",
    "Website",
    "Industry",
    "NumberOfEmployees",
    "Country",
    "LeadSource",
]


def fields_of(headers: list[str], overrides: dict[str, str] | None = None) -> dict[str, str]:
    plan = plan_columns(headers, overrides)
    return {plan.headers[i]: target for i, target in plan.fields.items()}


def test_hubspot_export_headers_are_recognised_without_a_map():
    assert fields_of(HUBSPOT) == {
        "Record ID": "crm_id",
        "First Name": "first_name",
        "Last Name": "last_name",
        "Email": "email",
        "Job Title": "title",
        "Phone Number": "phone",
        "Company Name": "company",
        "Company Domain Name": "domain",
        "Website URL": "website",
        "Industry": "industry",
        "Number of Employees": "employee_count",
        "Country/Region": "country",
        "Lead Status": "lead_status",
        "Original Source": "source",
    }


def test_salesforce_export_headers_are_recognised_without_a_map():
    found = fields_of(SALESFORCE)
    assert found["FirstName"] == "first_name"
    assert found["LastName"] == "last_name"
    assert found["Company"] == "company"
    assert found["NumberOfEmployees"] == "employee_count"
    assert found["LeadSource"] == "source"
    assert found["Id"] == "crm_id"
    assert fields_of(["Email", "Account Name", "Lead Source", "Employees"]) == {
        "Email": "email",
        "Account Name": "company",
        "Lead Source": "source",
        "Employees": "employee_count",
    }


def test_korean_business_card_headers_are_recognised():
    found = fields_of(["이름", "회사", "직함", "부서", "이메일", "휴대폰", "전화"])
    assert found == {
        "이름": "full_name",
        "회사": "company",
        "직함": "title",
        "부서": "department",
        "이메일": "email",
        "휴대폰": "mobile",
        "전화": "phone",
    }


def test_korean_given_name_column_is_a_first_name_when_a_family_name_column_exists():
    assert fields_of(["성", "이름", "이메일", "회사명", "직책"]) == {
        "성": "last_name",
        "이름": "first_name",
        "이메일": "email",
        "회사명": "company",
        "직책": "title",
    }


def test_header_spelling_variants_are_one_key():
    assert header_key("First Name") == header_key("FirstName") == header_key("first_name")
    assert header_key("\ufeffEmail ") == "email"


def test_unrecognised_columns_are_kept_as_attributes():
    plan = plan_columns(["email", "Booth Notes", "Badge #"])
    assert sorted(plan.attributes.values()) == ["badge", "booth_notes"]


def test_map_overrides_recognition_and_can_ignore_a_column():
    found = fields_of(["Mail", "Firma", "Notes"], {"Mail": "email", "Firma": "company"})
    assert found == {"Mail": "email", "Firma": "company"}
    plan = plan_columns(["email", "Notes"], {"Notes": "ignore"})
    assert plan.attributes == {}
    assert plan.fields == {0: "email"}


def test_map_to_an_unknown_field_names_the_field():
    with pytest.raises(MappingError, match="unknown field 'favourite_colour'"):
        parse_map_options(["Colour=favourite_colour"])


def test_map_of_a_column_not_in_the_file_names_the_column():
    with pytest.raises(MappingError, match="no column 'Mail'"):
        plan_columns(["email", "name"], {"Mail": "email"})


@pytest.mark.parametrize("option", ["Mail", "=email", "Mail=", ""])
def test_malformed_map_option_is_refused(option):
    with pytest.raises(MappingError, match="COLUMN=FIELD"):
        parse_map_options([option])


def test_two_columns_mapped_to_one_field_is_refused():
    with pytest.raises(MappingError, match="target of two columns"):
        plan_columns(["a", "b"], {"a": "email", "b": "email"})


def test_a_file_without_an_email_column_is_refused_with_the_columns_listed():
    with pytest.raises(MappingError, match=r"no e-mail column.*'Name'"):
        plan_columns(["Name", "Company"])


def read(headers: list[str], values: list[str], **kw: object) -> LeadRecord | RowRejected:
    return read_row(plan_columns(headers), values, **kw)  # type: ignore[arg-type]


def test_a_good_row_is_normalised():
    rec = read(
        HUBSPOT,
        [
            "7",
            " Jane ",
            "Doe",
            "JANE@Acme.Example",
            "VP",
            "+1 555",
            "Acme",
            "acme.example",
            "",
            "Software",
            "1,200",
            "US",
            "NEW",
            "Organic",
        ],
    )
    assert isinstance(rec, LeadRecord)
    assert rec.email == "jane@acme.example"
    assert (rec.first_name, rec.last_name, rec.title) == ("Jane", "Doe", "VP")
    assert rec.employee_count == 1200
    assert rec.domain == "acme.example"
    assert rec.source == "Organic"
    assert rec.attributes == {"crm_id": "7", "lead_status": "NEW"}


def test_source_option_wins_over_the_files_column():
    rec = read(["email", "source"], ["a@b.example", "web"], source="tradeshow")
    assert isinstance(rec, LeadRecord) and rec.source == "tradeshow"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "missing email"),
        ("   ", "missing email"),
        ("not-an-email", "invalid email"),
        ("a@b", "invalid email"),
        ("<script>@x.example", "invalid email"),
        ("a@b.example'; DROP TABLE leads;--", "invalid email"),
    ],
)
def test_bad_emails_are_rejected_with_the_reason(value, reason):
    rec = read(["email", "name"], [value, "x"])
    assert isinstance(rec, RowRejected)
    assert rec.reason.startswith(reason)


def test_too_long_values_are_rejected_not_truncated():
    rec = read(["email", "Job Title"], ["a@b.example", "x" * 256])
    assert rec == RowRejected("Job Title: longer than 255 characters")
    rec = read(["email", "notes"], ["a@b.example", "y" * 5000])
    assert isinstance(rec, RowRejected) and rec.reason.startswith("notes: longer than")


def test_nul_characters_are_rejected():
    rec = read(["email", "first_name"], ["a@b.example", "An\x00na"])
    assert rec == RowRejected("first_name: contains a NUL character")


def test_formula_like_values_are_kept_as_text():
    formula = '=HYPERLINK("http://evil.example","x")'
    rec = read(["email", "title", "phone"], ["a@b.example", formula, "+82 10 1234 5678"])
    assert isinstance(rec, LeadRecord)
    assert rec.title == formula
    assert rec.phone == "+82 10 1234 5678"
    assert neutralise_cell(formula) == "'" + formula
    assert neutralise_cell("Plain") == "Plain"


def test_extra_fields_beyond_the_header_reject_the_row():
    rec = read(["email", "name"], ["a@b.example", "x", "surprise"])
    assert isinstance(rec, RowRejected) and "3 fields" in rec.reason
    assert isinstance(read(["email", "name"], ["a@b.example"]), LeadRecord)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("yes", "granted"),
        ("예", "granted"),
        ("TRUE", "granted"),
        ("no", "denied"),
        ("아니오", "denied"),
        ("0", "denied"),
        ("", None),
    ],
)
def test_consent_column_values(value, expected):
    rec = read(["email", "consent"], ["a@b.example", value])
    assert isinstance(rec, LeadRecord) and rec.consent == expected


def test_unclear_consent_is_rejected():
    rec = read(["email", "consent"], ["a@b.example", "maybe"])
    assert isinstance(rec, RowRejected) and rec.reason.startswith("consent:")


def test_full_names_are_split_western_and_korean_order():
    assert split_full_name("Ada King Lovelace") == ("Ada King", "Lovelace")
    assert split_full_name("김 영희") == ("영희", "김")
    assert split_full_name("홍길동") == ("홍길동", None)


def test_website_gives_the_domain_and_a_bad_domain_is_rejected():
    assert domain_of("https://www.Acme.example/about?x=1") == "acme.example"
    assert domain_of("javascript:alert(1)") is None
    rec = read(["email", "domain"], ["a@b.example", "not a domain"])
    assert isinstance(rec, RowRejected) and rec.reason.startswith("domain:")


def test_employee_ranges_are_kept_as_attributes():
    rec = read(["email", "employees"], ["a@b.example", "51-200"])
    assert isinstance(rec, LeadRecord)
    assert rec.employee_count is None and rec.attributes == {"employees": "51-200"}


def test_source_option_is_validated():
    assert check_source(" tradeshow ") == "tradeshow"
    with pytest.raises(ValueError, match="longer than 100"):
        check_source("x" * 101)
    with pytest.raises(ValueError, match="empty"):
        check_source("  ")
    with pytest.raises(ValueError, match="control"):
        check_source("a\nb")


@given(st.lists(st.text(max_size=300), min_size=2, max_size=2))
def test_any_row_is_either_a_record_or_a_reason(values):
    result = read(["email", "first_name"], values)
    if isinstance(result, LeadRecord):
        assert result.email == result.email.strip().lower()
        assert result.first_name is None or len(result.first_name) <= FIELD_LIMITS["first_name"]
    else:
        assert isinstance(result, RowRejected) and result.reason


# --------------------------------------------------------------------------- issue 14


@pytest.mark.parametrize(
    "cell", ["Select", "-", "--", "N/A", "n/a", "none", "NULL", "(none)", "--None--", " - "]
)
def test_placeholders_are_read_as_empty(cell):
    rec = read(["Email", "Industry", "Job Title", "Plan"], ["a@b.example", cell, cell, cell])
    assert isinstance(rec, LeadRecord)
    assert (rec.industry, rec.title) == (None, None)
    assert "plan" not in rec.attributes


def test_unknown_is_empty_only_in_a_choice_column():
    rec = read(["Email", "Industry", "Job Title"], ["a@b.example", "Unknown", "Unknown"])
    assert isinstance(rec, LeadRecord)
    assert (rec.industry, rec.title) == (None, "Unknown")


def test_free_columns_are_typed_per_column():
    from leadflow.core.importing import ColumnTypes

    headers = ["Email", "Revenue", "Created", "Webinar", "Zip", "Mixed", "SF Date"]
    rows = [
        ["a@b.example", "1,200", "2024-03-05 14:22", "true", "01234", "12", "3/5/2024"],
        ["c@b.example", "-", "2024-03-06 09:00", "Select", "02345", "abc", "12/31/2025"],
        ["d@b.example", "3.5", "", "No", "", "", ""],
    ]
    plan = plan_columns(headers)
    inference = ColumnTypes(plan)
    for row in rows:
        inference.observe(row)
    types = inference.types()
    assert [types[i] for i in sorted(plan.attributes)] == [
        "number",
        "date",
        "boolean",
        "text",
        "text",
        "date",
    ]
    recs = [read_row(plan, row, types=types) for row in rows]
    assert all(isinstance(r, LeadRecord) for r in recs)
    first, second, third = (r.attributes for r in recs)  # type: ignore[union-attr]
    assert first == {
        "revenue": 1200,
        "created": "2024-03-05T14:22:00",
        "webinar": True,
        "zip": "01234",
        "mixed": "12",
        "sf_date": "2024-03-05",
    }
    assert second == {
        "created": "2024-03-06T09:00:00",
        "zip": "02345",
        "mixed": "abc",
        "sf_date": "2025-12-31",
    }
    assert third == {"revenue": 3.5, "webinar": False}


def test_a_row_without_email_needs_the_option_and_a_record_id():
    headers = ["Record ID", "Email", "First Name"]
    plan = plan_columns(headers)
    assert read_row(plan, ["7", "", "Ann"]) == RowRejected("missing email")
    rec = read_row(plan, ["7", "", "Ann"], allow_without_email=True)
    assert isinstance(rec, LeadRecord) and (rec.email, rec.crm_id, rec.key) == (None, "7", "crm:7")
    assert read_row(plan, ["", "", "Ann"], allow_without_email=True) == RowRejected("missing email")
    # A file with a record id but no e-mail column at all.
    plan = plan_columns(["Person - ID", "Person - Name"], allow_without_email=True)
    rec = read_row(plan, ["42", "Ann Lee"], allow_without_email=True)
    assert isinstance(rec, LeadRecord) and (rec.crm_id, rec.first_name) == ("42", "Ann")


def test_company_facts_without_a_company_stay_on_the_lead():
    headers = ["Email", "Company Name", "Industry", "Country/Region", "Number of Employees"]
    alone = read(headers, ["a@b.example", "", "Software", "KR", "1,200"])
    assert isinstance(alone, LeadRecord)
    assert alone.attributes == {"industry": "Software", "country": "KR", "employees": 1200}
    employed = read(headers, ["a@b.example", "Acme", "Software", "KR", "1,200"])
    assert isinstance(employed, LeadRecord) and employed.attributes == {}
    assert (employed.industry, employed.employee_count) == ("Software", 1200)
