"""The model file: the shipped default loads, bad files are refused naming the key path."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from leadflow.core.config import (
    ModelConfigError,
    build_model,
    check,
    load_default_model,
    load_model,
)

DEFAULT_TEXT = (
    Path(__file__).resolve().parents[2] / "src" / "leadflow" / "default.yaml"
).read_text(encoding="utf-8")


def default_data() -> dict[str, Any]:
    return copy.deepcopy(yaml.safe_load(DEFAULT_TEXT))


def refusal(data: Any) -> str:
    with pytest.raises(ModelConfigError) as info:
        build_model(data)
    return str(info.value)


def test_shipped_model_has_the_articles_numbers():
    model = load_default_model()
    spec = model.spec
    mql_score = [c.score for c in spec.stages["mql"].enter_when if c.score is not None]
    assert mql_score == [100]
    assert spec.qualification.handoff_threshold == 75
    weights = spec.qualification.weights
    assert (weights.budget, weights.authority, weights.need, weights.timeframe) == (25, 25, 25, 25)
    assert spec.stages["recycle_a"].recycle is not None
    assert spec.stages["recycle_a"].recycle.pause_days == 90
    assert spec.stages["recycle_b"].recycle is not None
    assert spec.stages["recycle_b"].recycle.pause_days == 90
    assert spec.return_alert is not None
    assert (spec.return_alert.visits, spec.return_alert.window_days) == (3, 14)
    assert {fp.id for fp in spec.fastpass} == {
        "target_account_attends_our_event",
        "quote_request",
        "demo_request",
    }


def test_stages_have_english_and_korean_names():
    model = load_default_model()
    korean = {s: model.display_name(s, "ko") for s in model.stages}
    assert korean["acquired"] == "리드획득"
    assert korean["nurturing"] == "리드 육성"
    assert korean["mql"] == "유망 리드"
    assert korean["appointment"] == "약속/방문"
    assert korean["opportunity"] == "상담"
    assert korean["won"] == "수주"
    assert model.display_name("mql", "en") == "Marketing qualified lead"


def test_content_hash_ignores_formatting_and_key_order_but_not_content():
    original = load_model(DEFAULT_TEXT)
    data = default_data()
    reordered = dict(reversed(list(data.items())))
    same = load_model(yaml.safe_dump(reordered, allow_unicode=True, sort_keys=True))
    assert same.content_hash == original.content_hash
    data["engagement"]["half_life_days"] = 45
    changed = build_model(data)
    assert changed.content_hash != original.content_hash
    assert len(original.content_hash) == 64


def test_a_string_is_always_yaml_text_never_a_file_name(tmp_path: Path):
    path = tmp_path / "leadflow.yaml"
    path.write_text(DEFAULT_TEXT, encoding="utf-8")
    assert load_model(path.read_text(encoding="utf-8")).version == "2024.4"
    for name in (str(path), str(tmp_path / "nope.yaml"), f"{path}.yml"):
        with pytest.raises(ModelConfigError, match=r"^\(root\): expected a mapping$"):
            load_model(name)
        assert check(name).errors == ("(root): expected a mapping",)
    with pytest.raises(TypeError, match="read the file first"):
        load_model(path)  # type: ignore[arg-type]


def test_a_nul_character_is_refused_with_its_position():
    with pytest.raises(ModelConfigError) as info:
        load_model("version: '1'\nname: a\x00b\n")
    assert str(info.value) == "line 2, column 8: invalid YAML: U+0000 is not allowed in YAML text"


def test_wrong_type_names_the_key_path():
    data = default_data()
    data["stages"]["mql"]["enter_when"][2]["score"] = "a lot"
    assert refusal(data) == "stages.mql.enter_when[2].score: expected a number"


def test_wrong_type_in_a_list_item_names_the_index():
    data = default_data()
    data["engagement"]["rules"][3]["max_per_day"] = "twice"
    assert refusal(data) == "engagement.rules[3].max_per_day: expected an integer"


def test_unknown_stage_in_a_fastpass_rule_is_refused():
    data = default_data()
    data["fastpass"][0]["to"] = "sales_meeting"
    assert refusal(data) == "fastpass[0].to: unknown stage 'sales_meeting'"


def test_unknown_stage_in_an_action_or_a_from_list_is_refused():
    data = default_data()
    data["actions"]["accept"]["from"] = ["mql", "hot_lead"]
    assert refusal(data) == "actions.accept.from[1]: unknown stage 'hot_lead'"
    data = default_data()
    data["stages"]["recycle_b"]["recycle"]["return_to"] = "nurture"
    assert refusal(data) == "stages.recycle_b.recycle.return_to: unknown stage 'nurture'"


def test_negative_half_life_is_refused():
    data = default_data()
    data["engagement"]["half_life_days"] = -30
    assert refusal(data) == "engagement.half_life_days: must be greater than 0"


def test_missing_required_key_is_refused():
    data = default_data()
    del data["version"]
    assert refusal(data) == "version: required key is missing"
    data = default_data()
    del data["qualification"]["handoff_threshold"]
    assert refusal(data) == "qualification.handoff_threshold: required key is missing"


def test_unknown_key_is_refused_so_typos_do_not_pass_silently():
    data = default_data()
    data["stages"]["mql"]["enter_whenn"] = data["stages"]["mql"].pop("enter_when")
    assert refusal(data) == "stages.mql.enter_whenn: unknown key"


def test_bant_weights_must_add_up_to_100():
    data = default_data()
    data["qualification"]["weights"]["timeframe"] = 15
    assert refusal(data) == "qualification.weights: weights must add up to 100 (got 90)"


def test_yaml_syntax_error_names_the_line():
    with pytest.raises(ModelConfigError, match=r"^line \d+, column \d+: invalid YAML"):
        load_model("version: '1'\nstages: [unclosed\n")


def test_a_file_that_is_not_a_mapping_is_refused():
    with pytest.raises(ModelConfigError, match=r"^\(root\): expected a mapping$"):
        load_model("- just\n- a list\n")


def test_check_reports_every_problem_without_raising():
    data = default_data()
    data["fastpass"][1]["to"] = "hot"
    data["engagement"]["half_life_days"] = 0
    report = check(yaml.safe_dump(data, allow_unicode=True))
    assert not report.ok
    assert report.errors == ("engagement.half_life_days: must be greater than 0",)
    data["engagement"]["half_life_days"] = 30
    report = check(yaml.safe_dump(data, allow_unicode=True))
    assert report.errors == ("fastpass[1].to: unknown stage 'hot'",)
    good = check(DEFAULT_TEXT)
    assert good.ok
    assert good.version == "2024.4"
    assert good.lines()[0].startswith("ok: model 2024.4 (sha256 ")
    assert (
        "roles: entry anonymous, acquired acquired, nurture nurturing, handoff mql,"
        in (good.lines()[3])
    )


# --------------------------------------------------------------------------- stage roles


def test_shipped_stages_name_their_roles():
    model = load_default_model()
    assert model.stage_for("handoff") == model.handoff_stage == "mql"
    assert model.stage_for("won") == model.won_stage == "won"
    assert model.stage_for("entry") == model.initial_stage
    assert model.stage_for("dead_end") == model.dead_end_stage
    assert model.stage_for("lost") == "recycle_b"
    assert model.stages_for("recycle") == ("recycle_a",)
    assert model.role_of("appointment") == "sales_accepted"
    assert model.handoff_stages == ("mql",)
    with pytest.raises(ValueError, match="unknown stage role"):
        model.stages_for("mql")


def test_a_required_role_missing_is_refused_naming_it():
    data = default_data()
    del data["stages"]["mql"]["role"]
    assert refusal(data) == "stages: no stage has role 'handoff' (required)"


def test_a_unique_role_given_twice_is_refused_at_the_second_stage():
    data = default_data()
    data["stages"]["appointment"]["role"] = "handoff"
    assert refusal(data) == (
        "stages.appointment.role: role 'handoff' is already stage 'mql'"
        " (only one stage may have it)"
    )


def test_shared_roles_may_name_several_stages():
    data = default_data()
    data["stages"]["recycle_b"]["role"] = "recycle"
    model = build_model(data)
    assert model.stages_for("recycle") == ("recycle_a", "recycle_b")
    assert model.stage_for("lost") is None


def test_a_model_written_before_roles_reads_with_the_roles_of_its_stage_ids():
    """Databases keep their active model (2024.2 and older have no roles): it still loads."""
    legacy = load_model((Path(__file__).parents[1] / "data" / "model_2024_2.yaml").read_text())
    shipped = load_default_model()
    assert legacy.version == "2024.2"
    assert legacy.roles == shipped.roles


def test_a_model_without_roles_gets_entry_and_dead_end_from_its_lifecycle():
    data = default_data()
    for stage in data["stages"].values():
        del stage["role"]
    assert build_model(data).roles == load_default_model().roles
    # A stage id the legacy table does not know gets no role: a renamed hand-off stage
    # must name its role, while entry and dead end still come from the lifecycle.
    renamed = json.loads(json.dumps(data).replace('"mql"', '"hot"'))
    with pytest.raises(ModelConfigError) as info:
        build_model(renamed)
    assert info.value.messages == ("stages: no stage has role 'handoff' (required)",)


def test_an_unknown_role_is_refused():
    data = default_data()
    data["stages"]["mql"]["role"] = "mql"
    assert refusal(data).startswith("stages.mql.role: expected one of ")


def test_lifecycle_initial_and_dead_end_must_carry_their_roles():
    data = default_data()
    data["lifecycle"]["initial"] = "acquired"
    assert refusal(data) == "lifecycle.initial: must be the stage with role 'entry' ('anonymous')"


def test_the_handoff_stages_default_to_the_handoff_role():
    data = default_data()
    del data["sales"]["handoff_stages"]
    data["stages"]["mql"]["role"] = "nurture"
    data["stages"]["appointment"]["role"] = "handoff"
    assert build_model(data).handoff_stages == ("appointment",)


def test_content_stages_default_by_role():
    data = default_data()
    del data["nurture"]["content_stages"]
    model = build_model(data)
    shipped = load_default_model()
    assert model.content_stages == dict(shipped.content_stages)
