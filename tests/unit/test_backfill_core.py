"""The CRM backfill's pure rules (core/backfill.py): column recognition per vendor, dates,
amounts, outcomes, and the sales actions that put a person's deals in its stage log."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from leadflow.core import backfill as bf
from leadflow.core import lifecycle as lc
from leadflow.core.config import load_default_model
from leadflow.core.importing import MappingError
from leadflow.core.model import LeadProfile

MODEL = load_default_model()


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-01-09T09:30:00.000+0000", utc(2023, 1, 9, 9, 30)),
        ("2023-01-09T11:30:00+02:00", utc(2023, 1, 9, 9, 30)),
        ("2023-01-09T09:30:00Z", utc(2023, 1, 9, 9, 30)),
        ("2023-01-09 09:30", utc(2023, 1, 9, 9, 30)),
        ("2023-01-09 09:30:00", utc(2023, 1, 9, 9, 30)),
        ("2023-01-09", utc(2023, 1, 9)),
        ("1/9/2023", utc(2023, 1, 9)),
        ("1/9/2023, 9:30 AM", utc(2023, 1, 9, 9, 30)),
        ("2023-02-30", None),
        ("1850-01-01", None),
        ("yesterday", None),
    ],
)
def test_dates_in_each_vendors_format(text, expected):
    assert bf.parse_when(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12,500.50", (12_500.5, None)),
        ("$12,500", (12_500.0, None)),
        ("€ 3.500,00", (3_500.0, "EUR")),
        ("USD 3,000", (3_000.0, "USD")),
        ("1 200 000 KRW", (1_200_000.0, "KRW")),
        ("₩1,200,000", (1_200_000.0, "KRW")),
        ("700", (700.0, None)),
    ],
)
def test_amounts_with_separators_and_symbols(text, expected):
    assert bf.parse_amount(text) == expected


@pytest.mark.parametrize("text", ["-100", "<b>9</b>", "12,50,0", "1e9", ""])
def test_bad_amounts_are_refused(text):
    with pytest.raises(ValueError):
        bf.parse_amount(text)


SALESFORCE = ["Id", "AccountId", "AccountName", "Amount", "CurrencyIsoCode", "StageName"]
SALESFORCE += ["CreatedDate", "CloseDate", "IsWon", "IsClosed", "LossReason", "OwnerId"]
SALESFORCE += ["ContactEmail", "Product", "Region__c"]
HUBSPOT = ["Record ID", "Deal Name", "Deal Stage", "Amount", "Create Date", "Close Date"]
HUBSPOT += ["Associated Company", "Deal owner", "Closed Lost Reason"]
PIPEDRIVE = ["Deal - ID", "Deal - Title", "Deal - Value", "Deal - Currency", "Deal - Status"]
PIPEDRIVE += ["Deal - Deal created", "Deal - Won time", "Deal - Lost time", "Deal - Lost reason"]
PIPEDRIVE += ["Deal - Organization", "Person - Email"]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (
            SALESFORCE,
            {
                "Id": "opportunity_id",
                "AccountId": "account_id",
                "AccountName": "account",
                "CurrencyIsoCode": "currency",
                "StageName": "stage",
                "CreatedDate": "created_at",
                "CloseDate": "closed_at",
                "IsWon": "is_won",
                "IsClosed": "is_closed",
                "LossReason": "lost_reason",
                "OwnerId": "owner",
                "ContactEmail": "contact_email",
                "Product": "product",
            },
        ),
        (
            HUBSPOT,
            {
                "Record ID": "opportunity_id",
                "Deal Name": "name",
                "Deal Stage": "stage",
                "Create Date": "created_at",
                "Close Date": "closed_at",
                "Associated Company": "account",
                "Deal owner": "owner",
                "Closed Lost Reason": "lost_reason",
            },
        ),
        (
            PIPEDRIVE,
            {
                "Deal - ID": "opportunity_id",
                "Deal - Title": "name",
                "Deal - Value": "amount",
                "Deal - Currency": "currency",
                "Deal - Status": "status",
                "Deal - Deal created": "created_at",
                "Deal - Won time": "won_at",
                "Deal - Lost time": "lost_at",
                "Deal - Lost reason": "lost_reason",
                "Deal - Organization": "account",
                "Person - Email": "contact_email",
            },
        ),
    ],
)
def test_each_vendors_deal_columns_are_recognised(headers, expected):
    plan = bf.plan_columns("opportunities", headers)
    found = {plan.headers[i]: target for i, target in plan.fields.items()}
    assert {k: found[k] for k in expected} == expected
    assert set(plan.attributes.values()) <= {"region__c"}


def test_a_file_without_an_id_or_created_date_is_refused_naming_the_column():
    with pytest.raises(MappingError, match="no opportunity_id column"):
        bf.plan_columns("opportunities", ["Amount", "StageName", "CreatedDate"])
    with pytest.raises(MappingError, match="no created_at column"):
        bf.plan_columns("opportunities", ["Id", "StageName"])
    plan = bf.plan_columns(
        "opportunities",
        ["Deal No", "Opened", "Stage"],
        {"Deal No": "opportunity_id", "Opened": "created_at"},
    )
    assert sorted(plan.fields.values()) == ["created_at", "opportunity_id", "stage"]
    with pytest.raises(MappingError, match="unknown field 'price'"):
        bf.parse_map_options("opportunities", ["Amt=price"])
    with pytest.raises(MappingError, match="not one of open, won, lost"):
        bf.parse_stage_options(["Signed=closed"])


def _deal(headers, values, **kw):
    plan = bf.plan_columns("opportunities", headers)
    return bf.read_deal(plan, values, MODEL, **kw)


def test_outcomes_flags_win_over_status_and_stage_names():
    headers = ["Id", "StageName", "IsWon", "IsClosed", "CreatedDate", "CloseDate", "Currency"]
    row = ["1", "Signed", "true", "true", "2024-01-01", "2024-02-01", "USD"]
    assert _deal(headers, row).outcome == "won"
    row = ["1", "Signed", "false", "true", "2024-01-01", "2024-02-01", "USD"]
    assert _deal(headers, row).outcome == "lost"
    plain = ["Id", "StageName", "CreatedDate", "CloseDate", "Currency"]
    rejected = _deal(plain, ["1", "Signed", "2024-01-01", "2024-02-01", "USD"])
    assert isinstance(rejected, bf.RowRejected)
    assert "unknown stage 'Signed'" in rejected.reason
    stages = bf.parse_stage_options(["Signed=won"])
    deal = _deal(plain, ["1", "Signed", "2024-01-01", "2024-02-01", "USD"], stages=stages)
    assert deal.outcome == "won" and deal.closed_at == utc(2024, 2, 1)
    open_ = _deal(plain, ["1", "Negotiation/Review", "2024-01-01", "2024-02-01", "USD"])
    assert open_.outcome == "open" and open_.closed_at is None
    assert open_.expected_close == utc(2024, 2, 1)


def test_no_silent_currency_and_lost_reasons_through_the_model():
    headers = ["Id", "StageName", "CreatedDate", "CloseDate", "Amount", "LossReason"]
    row = ["1", "Closed Lost", "2024-01-01", "2024-02-01", "1,000", "No Decision"]
    rejected = _deal(headers, row)
    assert isinstance(rejected, bf.RowRejected) and "missing currency" in rejected.reason
    deal = _deal(headers, row, currency="EUR")
    assert (deal.currency, deal.lost_reason) == ("EUR", "no_decision")
    other = _deal(headers, [*row[:5], "Budget cut"], currency="EUR")
    assert other.lost_reason == "other"
    assert other.attributes["lost_reason_source"] == "Budget cut"
    euro = _deal(headers, [*row[:4], "€ 1.000,00", "-"])
    assert (euro.currency, euro.amount, euro.lost_reason) == ("EUR", 1_000.0, "other")


def _span(i: int, outcome: str, opened: datetime, closed: datetime | None) -> bf.DealSpan:
    return bf.DealSpan(
        id=i,
        key=f"d{i}",
        outcome=outcome,  # type: ignore[arg-type]
        created_at=opened,
        closed_at=closed,
        amount=100.0,
        lost_reason="price" if outcome == "lost" else None,
    )


def _log(deals: list[bf.DealSpan]) -> list[tuple[str, datetime, str]]:
    state = lc.new_lead(LeadProfile(id=1), MODEL)
    decided = bf.deal_actions(state, deals, {d.id for d in deals}, MODEL)
    final = lc.replay(LeadProfile(id=1), [], MODEL, actions=decided.actions)
    return [(c.to_stage, c.at, c.rule) for c in final.history if c.rule.startswith("actions.")]


def test_a_loss_while_another_deal_is_open_closes_only_that_deal():
    opp, won = MODEL.stage_for("opportunity"), MODEL.stage_for("won")
    a = _span(1, "lost", utc(2024, 1, 1), utc(2024, 3, 1))
    b = _span(2, "won", utc(2024, 2, 1), utc(2024, 4, 1))
    assert _log([a, b]) == [
        (opp, utc(2024, 1, 1), "actions.open_deal"),
        (won, utc(2024, 4, 1), "actions.win"),
    ]


def test_a_lost_person_reopens_with_its_next_deal_and_a_customer_stays_won():
    opp, won = MODEL.stage_for("opportunity"), MODEL.stage_for("won")
    lost = _span(1, "lost", utc(2024, 1, 1), utc(2024, 2, 1))
    later = _span(2, "won", utc(2024, 3, 1), utc(2024, 5, 1))
    after = _span(3, "lost", utc(2024, 6, 1), utc(2024, 7, 1))
    log = _log([after, later, lost])  # any order in, date order out
    assert [(to, at) for to, at, _ in log] == [
        (opp, utc(2024, 1, 1)),
        (MODEL.spec.actions["lose"].to, utc(2024, 2, 1)),
        (opp, utc(2024, 3, 1)),
        (won, utc(2024, 5, 1)),
    ]
    # Nothing twice: the actions already in the state are not decided again.
    state = lc.new_lead(LeadProfile(id=1), MODEL)
    first = bf.deal_actions(state, [lost], {1}, MODEL)
    done = lc.replay(LeadProfile(id=1), [], MODEL, actions=first.actions)
    assert bf.deal_actions(done, [lost], {1}, MODEL).actions == ()
