"""core.forms: progressive profiling, skipping the form, validation, safe redirects,
recommendations."""

from __future__ import annotations

import pytest

from leadflow.core.config import ContentSpec, FormSpec, load_default_model
from leadflow.core.forms import (
    clean_anonymous_id,
    clean_text,
    describe,
    error_detail,
    fields_to_ask,
    lead_traits,
    safe_site_path,
    skip_form,
    validate,
)


def _default_form(key: str) -> FormSpec:
    nurture = load_default_model().spec.nurture
    assert nurture is not None
    return next(f for f in nurture.forms if f.key == key)


def _asset(key: str) -> ContentSpec:
    nurture = load_default_model().spec.nurture
    assert nurture is not None
    return next(a for a in nurture.content if a.key == key)


FORM = FormSpec.model_validate(
    {
        "key": "contact",
        "title": {"en": "Contact", "ko": "문의"},
        "consent": {"en": "I agree", "ko": "동의"},
        "consent_required": True,
        "ask_at_most": 2,
        "fields": [
            {"name": "email", "type": "email", "required": True},
            {"name": "first_name", "required": True, "max_length": 20},
            {"name": "phone", "type": "tel"},
            {"name": "employee_count", "type": "number"},
            {"name": "industry", "type": "select", "options": ["Retail", "Transport & Logistics"]},
            {"name": "newsletter", "type": "checkbox"},
            {"name": "message", "type": "textarea", "max_length": 500},
        ],
    }
)


def names(fields: list) -> list[str]:
    return [f.name for f in fields]


def test_unknown_visitor_gets_required_fields_and_at_most_n_optional_ones() -> None:
    assert names(fields_to_ask(FORM, {})) == ["email", "first_name", "phone", "employee_count"]


def test_known_fields_are_not_asked_again_and_the_next_optional_ones_come_up() -> None:
    known = {"email": "a@b.co", "phone": "+82 10 1234 5678", "employee_count": 40}
    assert names(fields_to_ask(FORM, known)) == ["first_name", "industry", "newsletter"]
    everything = {f.name: "x" for f in FORM.fields}
    assert fields_to_ask(FORM, everything) == []


def test_empty_known_values_count_as_unknown() -> None:
    assert "email" in names(fields_to_ask(FORM, {"email": "", "first_name": None}))


def test_ask_at_most_none_asks_every_unknown_field() -> None:
    form = FORM.model_copy(update={"ask_at_most": None})
    assert names(fields_to_ask(form, {})) == names(form.fields)


def test_shipped_white_paper_form_asks_two_optional_fields_at_a_time() -> None:
    form = _default_form("white-paper")
    first = names(fields_to_ask(form, {}))
    assert first == ["email", "first_name", "last_name", "company", "title"]
    later = names(
        fields_to_ask(
            form,
            {"email": "a@b.co", "first_name": "A", "last_name": "B", "company": "C", "title": "T"},
        )
    )
    assert later == ["phone", "industry"]


def test_late_content_skips_the_form_only_for_a_known_contact() -> None:
    demo = _default_form("demo-video")
    late = _asset("demo-video")
    middle = _asset("b2b-lead-management")
    assert late.stage == "late" and middle.stage == "middle"
    assert skip_form(demo, late, known_contact=True)
    assert not skip_form(demo, late, known_contact=False)
    assert not skip_form(demo, middle, known_contact=True)
    assert not skip_form(demo, None, known_contact=True)


def test_valid_submission_is_cleaned() -> None:
    clean, errors = validate(
        FORM,
        fields_to_ask(FORM, {}),
        {
            "email": "  Kim@Example.COM ",
            "first_name": " 민수\x00\x07 ",
            "phone": "+82 10-1234-5678",
            "employee_count": "1,200",
            "industry": "Transport & Logistics",
            "newsletter": "on",
            "message": "line one\r\nline two\x1b",
            "consent": "on",
            "not_a_field": "ignored",
        },
    )
    assert errors == {}
    assert clean == {
        "email": "kim@example.com",
        "first_name": "민수",
        "phone": "+82 10-1234-5678",
        "employee_count": 1200,
        "industry": "Transport & Logistics",
        "newsletter": True,
        "message": "line one\nline two",
    }


def test_field_level_errors() -> None:
    _, errors = validate(
        FORM,
        fields_to_ask(FORM, {}),
        {
            "email": "not-an-email",
            "first_name": "x" * 21,
            "phone": "call me",
            "employee_count": "many",
            "industry": "Mining",
            "newsletter": "perhaps",
        },
    )
    assert errors == {
        "email": "invalid_email",
        "first_name": "too_long",
        "phone": "invalid_phone",
        "employee_count": "invalid_number",
        "industry": "not_an_option",
        "newsletter": "not_an_option",
        "consent": "consent_required",
    }
    assert describe("invalid_email") == "is not a valid email address"
    assert describe("required", "ko") == "필수 항목입니다"
    assert error_detail({"email": "required"}) == "email: is required"


def test_required_applies_to_shown_fields_only() -> None:
    # The visitor is known by e-mail: the e-mail field is hidden and not required.
    shown = fields_to_ask(FORM, {"email": "a@b.co"})
    _, errors = validate(FORM, shown, {"first_name": "A", "consent": "on"})
    assert errors == {}
    _, errors = validate(FORM, fields_to_ask(FORM, {}), {"first_name": "A", "consent": "on"})
    assert errors == {"email": "required"}


def test_whitespace_only_and_control_only_values_are_missing() -> None:
    _, errors = validate(
        FORM, FORM.fields, {"email": " \t ", "first_name": "\x00\x01", "consent": "1"}
    )
    assert errors == {"email": "required", "first_name": "required"}


@pytest.mark.parametrize("value", [["a"], {"a": 1}, True])
def test_non_text_json_values_are_refused(value: object) -> None:
    _, errors = validate(FORM, FORM.fields, {"first_name": value, "email": "a@b.co"})
    assert "first_name" in errors


@pytest.mark.parametrize("value", ["nan", "inf", "1e999"])
def test_numbers_must_be_finite(value: str) -> None:
    _, errors = validate(FORM, [], {"employee_count": value})
    assert errors["employee_count"] == "invalid_number"


def test_script_and_formula_text_is_stored_as_typed() -> None:
    # Stored as text (escaped when rendered, neutralised when exported to CSV).
    clean, errors = validate(
        FORM,
        fields_to_ask(FORM, {}),
        {
            "email": "a@b.co",
            "first_name": "<script>alert(1)",
            "message": '=HYPERLINK("http://x")',
            "consent": "true",
        },
    )
    assert errors == {}
    assert clean["first_name"] == "<script>alert(1)"
    assert clean["message"].startswith("=HYPERLINK")


def test_clean_text_removes_bidi_overrides_and_newlines_in_single_line_fields() -> None:
    assert clean_text("ab\u202ecd\nef") == "abcd ef"
    assert clean_text("a\tb\nc", multiline=True) == "a\tb\nc"


@pytest.mark.parametrize(
    "target",
    [
        "//evil.com",
        "https://evil.com",
        "http://evil.com/x",
        "/\\evil.com",
        "\\\\evil.com",
        "javascript:alert(1)",
        "/path with space",
        "/x\r\nLocation: https://evil.com",
        "evil.com",
        "",
        None,
        "/\u202eevil",
    ],
)
def test_unsafe_redirects_are_refused(target: str | None) -> None:
    assert safe_site_path(target) is None


@pytest.mark.parametrize("target", ["/", "/thanks", "/a/b?x=1&y=2#top", "/한글"])
def test_site_paths_are_allowed(target: str) -> None:
    assert safe_site_path(target) == target


def test_form_spec_refuses_an_open_redirect() -> None:
    for bad in ("//evil.com", "https://evil.com", "/\\evil.com"):
        with pytest.raises(ValueError):
            FormSpec.model_validate({**FORM.model_dump(), "redirect": bad})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('"abc-123"', "abc-123"),
        ("abc-123", "abc-123"),
        ("a b", None),
        ("<script>", None),
        ("x" * 201, None),
        ("", None),
        (None, None),
    ],
)
def test_anonymous_ids(raw: str | None, expected: str | None) -> None:
    assert clean_anonymous_id(raw) == expected


def test_lead_traits_put_account_fields_under_company() -> None:
    traits = lead_traits(
        {"email": "a@b.co", "company": "Acme", "industry": "Retail", "title": "CTO"}
    )
    assert traits == {
        "email": "a@b.co",
        "title": "CTO",
        "company": {"name": "Acme", "industry": "Retail"},
    }
    assert lead_traits({"industry": "Retail"}) == {"industry": "Retail"}
