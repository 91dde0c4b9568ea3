"""Drill-down filters of the lead and deal lists: parsed, checked and written back."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from urllib.parse import parse_qsl

import pytest

from leadflow.core import deal_lists
from leadflow.core.lead_lists import NEW, ListQueryError, parse
from leadflow.entrypoints.web import drill

STAGES = ("anonymous", "acquired", "nurturing", "mql", "won", "recycle_a", "dead_end")


def _parse(text: str):
    return parse(parse_qsl(text, keep_blank_values=True), stages=STAGES)


def test_a_move_filter_round_trips_through_its_query_string():
    text = (
        "move_from=%28new%29&move_from=acquired&move_to=nurturing"
        "&moved_after=2024-10-01&moved_before=2025-01-01"
    )
    query = _parse(text)
    assert query.move_from == (NEW, "acquired") and query.move_to == ("nurturing",)
    assert query.moved_after == datetime(2024, 10, 1, tzinfo=UTC)
    assert query.filtered
    assert _parse(query.query_string()) == query
    assert query.query_string() == text


def test_removing_one_chip_keeps_the_other_filters():
    query = _parse("stage=mql&as_of=2025-01-01&move_to=mql&move_to=won&moved_after=2024-01-01")
    rest = dict(parse_qsl(query.without("move_to", "won")))
    assert rest["move_to"] == "mql" and rest["as_of"] == "2025-01-01"
    assert "as_of" not in query.without("as_of")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("move_to=mars", "move_to"),
        ("move_from=%28old%29", "move_from"),
        ("move_to=mql&moved_after=2025-01-02&moved_before=2025-01-01", "moved_before"),
        ("moved_before=2025-01-01", "moved_before"),
        ("as_of=2025-01-01", "as_of"),
        ("converted_to=won&converted_after=someday", "converted_after"),
        ("converted_before=2025-01-01", "converted_before"),
        ("program=p&enrolment=maybe", "enrolment"),
        ("enrolment=any", "enrolment"),
        ("program=p&step=s&step_result=bounced", "step_result"),
        ("step_result=sent", "step_result"),
        ("action=<b>", "action"),
        ("action_after=2025-01-01", "action_after"),
        ("touched_channel=" + "x" * 256, "touched_channel"),
        ("move_to=mql&move_to=mql&as_of=2025-01-01&as_of=2025-01-02&stage=mql", "as_of"),
    ],
)
def test_bad_drill_parameters_are_refused_naming_the_field(text, field):
    with pytest.raises(ListQueryError) as refused:
        _parse(text)
    assert refused.value.field == field


def test_flow_out_columns_split_the_stages_as_the_funnel_does():
    stages = {s: SimpleNamespace(recycle="a" if s == "recycle_a" else None) for s in STAGES}
    model = SimpleNamespace(
        spec=SimpleNamespace(stages=stages, lifecycle=SimpleNamespace(dead_end="dead_end"))
    )
    split = drill.out_targets(model, "mql", "won")  # type: ignore[arg-type]
    assert split["out_next"] == ["won"]
    assert split["out_recycle"] == ["recycle_a"]
    assert split["out_dead_end"] == ["dead_end"]
    assert sorted(s for targets in split.values() for s in targets) == sorted(STAGES)


def test_deal_list_query_round_trips_and_refuses_bad_values():
    query = deal_lists.parse(
        [
            ("status", "won"),
            ("closed_after", "2025-01-01"),
            ("sort", "-amount"),
            ("currency", "krw"),
        ]
    )
    assert query.statuses == ("won",) and query.currency == "KRW" and query.sort == "amount"
    assert deal_lists.parse(parse_qsl(query.query_string())) == query
    for bad, field in (("status=maybe", "status"), ("lead=0", "lead"), ("x=1", "x")):
        with pytest.raises(ListQueryError) as refused:
            deal_lists.parse(parse_qsl(bad))
        assert refused.value.field == field
