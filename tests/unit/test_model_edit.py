"""The one model editor: values set by key path, every other byte of the YAML text kept,
the hand-off stage found by its role, a bad edit refused with its key path."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from leadflow.core import model_edit
from leadflow.core.config import ModelConfigError, check, load_model

SOURCE = resources.files("leadflow").joinpath("default.yaml").read_text("utf-8")


def _renamed(source: str = SOURCE, new: str = "hot_lead") -> str:
    """The shipped model with the stage id ``mql`` renamed wherever it names the stage (not
    inside content keys such as ``what-is-mql``)."""
    text = re.sub(r"(?<![-\w/])mql(?![-\w])", new, source)
    assert load_model(text).handoff_stage == new
    return text


def _changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    lines = zip(before.splitlines(), after.splitlines(), strict=True)
    return [(a, b) for a, b in lines if a != b]


def _score_in_nurturing(source: str = SOURCE) -> str:
    """A model where an earlier stage (nurturing) also enters on a score condition."""
    anchor = '      - event: {type: page, path: ["/product",'
    text = source.replace(anchor, "      - score: 40  # an earlier score bar\n" + anchor, 1)
    assert [c.score for c in load_model(text).spec.stages["nurturing"].enter_when] == [
        None,
        40,
        None,
    ]
    return text


# ---------------------------------------------------------------- moved from test_calibration


def test_with_threshold_changes_only_the_mql_score_and_version_and_passes_check():
    text = model_edit.set_mql_threshold(SOURCE, 135, version="candidate-135")
    changed = _changed_lines(SOURCE, text)
    assert len(changed) == 2
    assert check(text).ok
    model = load_model(text)
    assert model.version == "candidate-135"
    assert [c.score for c in model.spec.stages["mql"].enter_when if c.score is not None] == [135]


def test_with_threshold_refuses_a_stage_without_a_score_criterion():
    text = SOURCE.replace("      - score: 100\n", "", 1)
    assert load_model(text).mql_threshold is None
    with pytest.raises(ModelConfigError, match="no score condition") as err:
        model_edit.set_mql_threshold(text, 10, version="x")
    assert err.value.path == "stages.mql.enter_when"


def test_with_handoff_threshold_changes_only_that_key_and_passes_check():
    text = model_edit.set_handoff_threshold(SOURCE, 87.5, version="candidate-bant")
    changed = _changed_lines(SOURCE, text)
    assert len(changed) == 2
    assert check(text).ok
    model = load_model(text)
    assert model.version == "candidate-bant"
    assert model.spec.qualification.handoff_threshold == 87.5
    same_version = model_edit.set_handoff_threshold(SOURCE, 80)
    assert load_model(same_version).version == load_model(SOURCE).version
    with pytest.raises(ValueError, match="handoff_threshold"):
        model_edit.set_handoff_threshold(SOURCE, 120)
    with pytest.raises(ValueError, match="qualification"):
        model_edit.set_handoff_threshold("version: x\n", 80)


# ---------------------------------------------------------------- bytes kept


def test_every_byte_outside_the_edited_values_survives():
    text = model_edit.edit(
        SOURCE,
        {
            "version": "2024.5",
            "qualification.handoff_threshold": 80,
            "stages.mql.enter_when[2].score": 120,
        },
    )
    # The only differences are the three values, each in its old style (the version stays
    # double-quoted): undoing them by hand gives the source back byte for byte.
    assert 'version: "2024.5"\n' in text
    restored = (
        text.replace('version: "2024.5"', 'version: "2024.4"', 1)
        .replace("handoff_threshold: 80", "handoff_threshold: 75", 1)
        .replace("      - score: 120\n", "      - score: 100\n", 1)
    )
    assert restored == SOURCE


def test_comments_flow_mappings_and_quoting_on_the_edited_lines_survive():
    source = SOURCE.replace('version: "2024.4"', "version: '7'   # bump me", 1).replace(
        "  weights: {budget: 25, authority: 25, need: 25, timeframe: 25}\n"
        "  levels: {confirmed: 1.0, likely: 0.5, unknown: 0.0, none: 0.0}\n"
        "  handoff_threshold: 75\n",
        "  weights: {budget: 25, authority: 25,\n"
        "            need: 25, timeframe: 25}  # spread over two lines\n"
        "  levels: {confirmed: 1.0, likely: 0.5, unknown: 0.0, none: 0.0}\n"
        "  handoff_threshold: 75 # the BANT bar\n",
        1,
    )
    assert load_model(source).version == "7"
    text = model_edit.edit(source, {"qualification.handoff_threshold": 82.5, "version": "it's 8"})
    assert text == source.replace("'7'", "'it''s 8'").replace("75 # the", "82.5 # the")
    assert load_model(text).version == "it's 8"


def test_numbers_render_as_numbers_and_text_that_looks_like_one_stays_text():
    source = "a: x\nb: 1\nc: [1, 2]\n"
    with pytest.raises(ModelConfigError):  # not a lead model: the loader refuses the result
        model_edit.edit(source, {"a": "1.5"})
    assert model_edit._render("1.5", None) == '"1.5"'
    assert model_edit._render(1e-05, None) == "1.0e-05"
    assert model_edit._render(105.0, None) == "105"
    assert model_edit._render("2024.4-mql105", None) == "2024.4-mql105"
    assert model_edit._render("has space", None) == '"has space"'
    assert model_edit._render(True, None) == "true"


# ---------------------------------------------------------------- stages are data


def test_the_mql_threshold_is_edited_on_the_handoff_stage_whatever_its_id():
    renamed = _renamed()
    text = model_edit.set_mql_threshold(renamed, 115, version="renamed-115")
    assert len(_changed_lines(renamed, text)) == 2
    model = load_model(text)
    assert model.handoff_stage == "hot_lead" and model.mql_threshold == 115
    assert model_edit.mql_threshold_path(model) == ("stages", "hot_lead", "enter_when", 2, "score")


def test_an_earlier_stage_with_a_score_condition_is_left_alone():
    source = _score_in_nurturing()
    text = model_edit.set_mql_threshold(source, 130)
    model = load_model(text)
    assert model.mql_threshold == 130
    assert [c.score for c in model.spec.stages["nurturing"].enter_when if c.score] == [40]
    assert "      - score: 40  # an earlier score bar\n" in text


def test_rule_points_are_set_by_rule_id():
    model = load_model(SOURCE)
    rule = model.spec.engagement.rules[1]
    text = model_edit.set_rule_points(SOURCE, {rule.id: rule.points + 3}, version="pts")
    after = load_model(text)
    assert after.spec.engagement.rules[1].points == rule.points + 3
    assert [r.points for r in after.spec.engagement.rules[2:]] == [
        r.points for r in model.spec.engagement.rules[2:]
    ]
    with pytest.raises(ModelConfigError, match="no rule with id 'nope'"):
        model_edit.set_rule_points(SOURCE, {"nope": 1})


# ---------------------------------------------------------------- the one MQL threshold reader


def test_the_mql_threshold_is_the_handoff_stages_score_condition():
    assert load_model(SOURCE).mql_threshold == 100
    assert load_model(SOURCE).mql_condition == 2
    renamed = load_model(_renamed(SOURCE.replace("      - score: 100\n", "      - score: 90\n")))
    assert (renamed.handoff_stage, renamed.mql_threshold) == ("hot_lead", 90)


def test_another_stage_with_a_score_condition_is_not_the_mql_threshold():
    model = load_model(_renamed(_score_in_nurturing()))
    assert model.mql_threshold == 100 and model.mql_condition == 2


# ---------------------------------------------------------------- refusals name the key path


def test_invalid_edits_are_refused_with_their_key_path():
    with pytest.raises(ModelConfigError) as err:
        model_edit.edit(SOURCE, {"stages.mql.enter_when[2].score": "lots"})
    assert err.value.path == "stages.mql.enter_when[2].score"
    with pytest.raises(ModelConfigError) as err:
        model_edit.edit(SOURCE, {"qualification.handoff_threshold": -1})
    assert err.value.path == "qualification.handoff_threshold"
    with pytest.raises(ModelConfigError) as err:
        model_edit.edit(SOURCE, {"stages.mql.enter_when[9].score": 1})
    assert (err.value.path, err.value.reason) == ("stages.mql.enter_when[9]", "not found")
    with pytest.raises(ModelConfigError) as err:
        model_edit.edit(SOURCE, {"stages.mql.enter_when": 1})
    assert err.value.path == "stages.mql.enter_when" and "single value" in err.value.reason
    with pytest.raises(ModelConfigError) as err:
        model_edit.edit(SOURCE, {"stages.mql.enter_when[2].score": float("nan")})
    assert err.value.path == "stages.mql.enter_when[2].score"
    with pytest.raises(ModelConfigError, match="invalid YAML"):
        model_edit.edit("version: [\n", {"version": "x"})


def test_a_value_shared_through_an_alias_is_refused():
    source = SOURCE.replace("      - score: 100\n", "      - score: &bar 75\n", 1).replace(
        "handoff_threshold: 75", "handoff_threshold: *bar", 1
    )
    assert load_model(source).mql_threshold == 75
    for change in (model_edit.set_handoff_threshold, model_edit.set_mql_threshold):
        with pytest.raises(ModelConfigError, match="more than these keys"):
            change(source, 80)


def test_key_paths_round_trip():
    path = ("stages", "mql", "enter_when", 2, "score")
    assert model_edit.format_path(path) == "stages.mql.enter_when[2].score"
    assert model_edit.parse_path("stages.mql.enter_when[2].score") == path
    assert model_edit.parse_path("a[0][1]") == ("a", 0, 1)
    for bad in ("", "a..b", "a[x]", "[0]"):
        with pytest.raises(ValueError):
            model_edit.parse_path(bad)
