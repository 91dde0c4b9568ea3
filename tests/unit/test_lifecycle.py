"""The stage machine with the shipped model: each default rule of seed 002, fastpass,
recycling with its mail pause, the dead end, the return alert, late and repeated events."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import yaml

from leadflow.core import lifecycle as lc
from leadflow.core.config import LeadModel, build_model, load_default_model
from leadflow.core.model import AccountWatch, Bant, Event, LeadProfile, Signal, StageChange

T0 = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)
MODEL = load_default_model()
READY = Bant(budget="confirmed", authority="confirmed", need="confirmed")
_ids = count()


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def identify(at: datetime, **traits: Any) -> Event:
    return Event(message_id=f"m{next(_ids)}", type="identify", occurred_at=at, properties=traits)


def track(name: str, at: datetime, **properties: Any) -> Event:
    return Event(
        message_id=f"m{next(_ids)}", type="track", name=name, occurred_at=at, properties=properties
    )


def page(path: str, at: datetime) -> Event:
    return Event(
        message_id=f"m{next(_ids)}", type="page", occurred_at=at, page_url=f"https://acme.io{path}"
    )


def signed_up(at: datetime = T0, **traits: Any) -> Event:
    return identify(at, email="kim@acme.co.kr", consent="granted", **traits)


def fold(
    events: Iterable[Event],
    state: lc.LeadState | None = None,
    model: LeadModel = MODEL,
    **lead: Any,
) -> tuple[lc.LeadState, list[StageChange], list[Signal]]:
    state = state or lc.new_lead(LeadProfile(id=7, **lead), model)
    changes: list[StageChange] = []
    signals: list[Signal] = []
    for event in events:
        state, new_changes, new_signals = lc.apply_event(state, event, model)
        changes += new_changes
        signals += new_signals
    return state, changes, signals


def path(changes: Iterable[StageChange]) -> list[str]:
    return [c.to_stage for c in changes]


def to_appointment(**lead: Any) -> lc.LeadState:
    state, _, _ = fold([signed_up(), track("catalogue_request", day(1))], **lead)
    outcome = lc.accept(state, MODEL, at=day(2), action_id="a-accept")
    assert outcome.accepted
    return outcome.state


def to_opportunity() -> lc.LeadState:
    outcome = lc.qualify(
        to_appointment(), MODEL, at=day(3), action_id="a-q", amount=50_000, bant=READY
    )
    assert outcome.accepted, outcome.refusal
    return outcome.state


def test_contact_details_with_consent_make_a_visitor_an_acquired_lead():
    state, changes, _ = fold([page("/blog/x", T0), signed_up(day(1))])
    assert state.stage == "acquired"
    assert [(c.from_stage, c.to_stage, c.rule, c.at) for c in changes] == [
        ("anonymous", "acquired", "stages.acquired.enter_when[0]", day(1))
    ]
    assert changes[0].model_version == "2024.4"


def test_contact_details_without_consent_stay_anonymous():
    state, changes, _ = fold([identify(T0, email="kim@acme.co.kr", consent="denied")])
    assert (state.stage, changes) == ("anonymous", [])


def test_email_click_moves_an_acquired_lead_to_nurturing():
    _state, changes, _ = fold([signed_up(), track("email_click", day(1))])
    assert path(changes) == ["acquired", "nurturing"]
    assert changes[-1].rule == "stages.nurturing.enter_when[0]"


def test_product_page_visit_moves_an_acquired_lead_to_nurturing_but_a_blog_post_does_not():
    state, _, _ = fold([signed_up(), page("/blog/why", day(1))])
    assert state.stage == "acquired"
    state, changes, _ = fold([page("/product/scanner", day(2))], state)
    assert (state.stage, changes[0].rule) == ("nurturing", "stages.nurturing.enter_when[1]")


def test_catalogue_request_makes_an_mql():
    _state, changes, _ = fold(
        [signed_up(), page("/product/a", day(1)), track("catalogue_request", day(2))]
    )
    assert path(changes) == ["acquired", "nurturing", "mql"]
    assert changes[-1].rule == "stages.mql.enter_when[0]"


def test_direct_inquiry_makes_an_mql():
    state, changes, _ = fold([signed_up(), track("contact_request", day(1))])
    assert state.stage == "mql"
    assert changes[-1].rule == "stages.mql.enter_when[1]"


def test_engagement_score_of_100_makes_an_mql_at_the_event_that_crosses_it():
    events = [
        signed_up(),
        track("email_click", day(1)),  # 5 -> nurturing
        track("content_download", day(1), asset_type="white_paper"),  # 20
        track("webinar_attended", day(1)),  # 25
        track("content_download", day(1), asset_type="pricing"),  # 25 -> 75
        track("event_attended", day(1)),  # 25 -> 100 (a demo request is a fast-pass)
    ]
    state, changes, _ = fold(events)
    assert path(changes) == ["acquired", "nurturing", "mql"]
    assert changes[-1].rule == "stages.mql.enter_when[2]"
    assert changes[-1].cause == events[-1].message_id
    assert state.engagement(day(1), MODEL).total >= 100


def test_points_that_decayed_below_100_do_not_make_an_mql():
    events = [
        signed_up(),
        track("email_click", day(1)),
        track("content_download", day(1), asset_type="white_paper"),
        track("webinar_attended", day(1)),
        track("content_download", day(1), asset_type="pricing"),
        track("event_attended", day(61)),  # 75 points are worth about 19 by then
    ]
    state, _, _ = fold(events)
    assert state.stage == "nurturing"


def test_quote_request_fastpasses_an_acquired_lead_to_mql():
    _state, changes, _ = fold([signed_up(), track("quote_request", day(1))])
    assert path(changes) == ["acquired", "mql"]
    assert changes[-1].rule == "fastpass.quote_request"


def test_demo_request_is_a_hot_inquiry_that_fastpasses_to_mql():
    """Regression (issue 12): a demo request only earned points (40), so a fitting person
    asking for a demo waited in nurturing."""
    _state, changes, _ = fold(
        [signed_up(), page("/product/a", day(1)), track("demo_request", day(2))]
    )
    assert path(changes) == ["acquired", "nurturing", "mql"]
    assert changes[-1].rule == "fastpass.demo_request"
    # From the recycle box too, ending the pause; a student never passes.
    state = lc.not_now(to_appointment(), MODEL, at=day(5), action_id="nn").state
    state, changes, _ = fold([track("demo_request", day(30))], state)
    assert (path(changes), state.pause_until) == (["mql"], None)
    state, changes, _ = fold([signed_up(title="Student"), track("demo_request", day(1))])
    assert path(changes) == ["dead_end"]


def test_one_event_can_walk_an_unknown_visitor_through_several_stages():
    _state, changes, _ = fold(
        [identify(T0, email="kim@acme.co.kr", consent="granted"), track("quote_request", T0)]
    )
    assert path(changes) == ["acquired", "mql"]
    assert all(c.at == T0 for c in changes)


def test_target_account_lead_attending_our_event_goes_straight_to_appointment():
    events = [
        signed_up(is_target_account=True),
        track("event_attended", day(3), event_type="seminar"),
    ]
    _state, changes, _ = fold(events)
    assert path(changes) == ["acquired", "appointment"]
    assert changes[-1].rule == "fastpass.target_account_attends_our_event"


def test_other_leads_attending_our_event_only_earn_points():
    state, _changes, _ = fold([signed_up(), track("event_attended", day(3))])
    assert state.stage == "acquired"


def test_student_goes_to_dead_end_and_stays_there_whatever_happens_next():
    state, changes, _ = fold([signed_up(title="Graduate Student")])
    assert path(changes) == ["dead_end"]
    assert changes[0].rule == "dead_end.student"
    later = [
        identify(day(1), title="Engineer"),
        track("quote_request", day(2)),
        track("contact_request", day(3)),
        track("event_attended", day(4)),
        *[track("demo_request", day(5 + i)) for i in range(5)],
    ]
    state, changes, _ = fold(later, state)
    assert (state.stage, changes) == ("dead_end", [])
    outcome = lc.accept(state, MODEL, at=day(20), action_id="x")
    assert not outcome.accepted
    assert outcome.state.stage == "dead_end"
    assert not lc.email_eligibility(state, day(20), MODEL).allowed


def test_competitor_by_email_domain_goes_to_dead_end():
    state, changes, _ = fold(
        [identify(T0, email="spy@sales.rival-software.example", consent="granted")]
    )
    assert (state.stage, changes[0].rule) == ("dead_end", "dead_end.competitor")


def test_retiree_and_invalid_data_go_to_dead_end():
    _state, changes, _ = fold([signed_up(title="Retired engineer")])
    assert changes[0].rule == "dead_end.retiree"
    _state, changes, _ = fold([identify(T0, email="not-an-address", consent="granted")])
    assert changes[0].rule == "dead_end.invalid_data"
    _state, changes, _ = fold([signed_up(), track("email_bounce", day(1), bounce_type="hard")])
    assert path(changes) == ["acquired", "dead_end"]
    assert changes[-1].rule == "dead_end.invalid_email_hard_bounce"


def test_sales_accept_makes_an_appointment_and_is_refused_before_mql():
    state, _, _ = fold([signed_up()])
    refused = lc.accept(state, MODEL, at=day(1), action_id="a1")
    assert refused.refusal == ("cannot accept a lead in stage 'acquired' (allowed from: mql)")
    assert refused.state is state
    state = to_appointment()
    assert state.stage == "appointment"
    assert state.history[-1].rule == "actions.accept"


def test_qualify_needs_an_amount_and_bant_of_75():
    state = to_appointment()
    no_amount = lc.qualify(state, MODEL, at=day(3), action_id="q1", amount=None, bant=READY)
    assert no_amount.refusal == "qualify needs an amount greater than 0"
    weak = Bant(budget="confirmed", authority="likely", need="confirmed")
    low = lc.qualify(state, MODEL, at=day(3), action_id="q2", amount=10_000, bant=weak)
    assert low.refusal == "BANT score 62.5 is below the hand-off threshold 75"
    ok = lc.qualify(state, MODEL, at=day(3), action_id="q3", amount=10_000, bant=READY)
    assert ok.change is not None
    assert (ok.change.from_stage, ok.change.to_stage, ok.change.cause) == (
        "appointment",
        "opportunity",
        "q3",
    )
    assert ok.state.profile.bant == READY


def test_won_deal_closes_and_a_repeated_action_id_changes_nothing():
    state = to_opportunity()
    won = lc.win(state, MODEL, at=day(10), action_id="w", amount=50_000)
    assert won.state.stage == "won"
    again = lc.win(won.state, MODEL, at=day(11), action_id="w")
    assert again.state is won.state
    assert again.change == won.change


def test_recycled_lead_gets_no_mail_during_pause():
    outcome = lc.not_now(to_appointment(), MODEL, at=day(5), action_id="nn", reason="not now")
    state = outcome.state
    assert state.stage == "recycle_a"
    assert state.pause_until == day(95)
    assert lc.is_paused(state, day(94))
    assert lc.email_eligibility(state, day(94), MODEL) == lc.EmailEligibility(
        False, "recycle pause", until=day(95)
    )
    assert not lc.is_paused(state, day(95))


def test_recycle_pause_lifts_after_90_days_and_the_lead_returns_to_nurturing():
    state = lc.not_now(to_appointment(), MODEL, at=day(5), action_id="nn").state
    same, changes, _ = lc.advance(state, day(94), MODEL)
    assert (same.stage, changes) == ("recycle_a", [])
    later, changes, _ = lc.advance(state, day(120), MODEL)
    assert [(c.from_stage, c.to_stage, c.at, c.rule) for c in changes] == [
        ("recycle_a", "nurturing", day(95), "stages.recycle_a.recycle")
    ]
    assert lc.email_eligibility(later, day(120), MODEL).allowed
    # the same happens, stamped at the pause end, when the next event arrives instead
    by_event, _, _ = fold([page("/blog/x", day(120))], state)
    assert by_event.history == later.history


def test_quote_request_during_the_pause_fastpasses_out_of_the_recycle_box():
    state = lc.not_now(to_appointment(), MODEL, at=day(5), action_id="nn").state
    state, changes, _ = fold([track("quote_request", day(30))], state)
    assert path(changes) == ["mql"]
    assert state.pause_until is None
    assert lc.email_eligibility(state, day(31), MODEL).allowed


def test_lost_opportunity_goes_to_recycle_b_with_a_pause():
    lost = lc.lose(to_opportunity(), MODEL, at=day(20), action_id="l", reason="price")
    assert lost.change is not None
    assert (lost.change.to_stage, lost.state.pause_until) == ("recycle_b", day(110))


def test_lost_lead_returning_three_times_in_14_days_alerts_sales_once_per_window():
    state = lc.lose(to_opportunity(), MODEL, at=day(20), action_id="l").state
    visits = [page("/pricing", day(200)), page("/product/a", day(205)), page("/blog/b", day(210))]
    state, _, signals = fold(visits, state)
    assert [(s.name, s.at, s.data["visits"]) for s in signals] == [("lead.returning", day(210), 3)]
    state, _, signals = fold([page("/pricing", day(212)), page("/pricing", day(213))], state)
    assert signals == []
    state, _, signals = fold(
        [page("/a", day(225)), page("/b", day(226)), page("/c", day(227))], state
    )
    # the window after the first alert has passed: visits on days 212, 213 and 225 count
    assert [s.at for s in signals] == [day(225)]


def test_visits_spread_over_more_than_14_days_raise_no_alert():
    state = lc.lose(to_opportunity(), MODEL, at=day(20), action_id="l").state
    visits = [page("/a", day(200)), page("/b", day(210)), page("/c", day(215))]
    _, _, signals = fold(visits, state)
    assert signals == []


def test_return_alert_rule_as_a_pure_function():
    visits = [day(1), day(5), day(14.5)]
    assert lc.returning_alert(visits, day(14.5), last_alert_at=None)
    assert not lc.returning_alert(visits, day(15.5), last_alert_at=None)  # day 1 left the window
    assert not lc.returning_alert(visits, day(14.5), last_alert_at=day(2))
    assert lc.returning_alert(visits, day(14.5), last_alert_at=day(0.5))


def test_account_with_a_lost_deal_alerts_on_visits_from_its_other_leads():
    state, _, _ = fold([signed_up()], account_lost_opportunity=True)
    signal = lc.check_return(state, [day(1), day(2), day(3)], day(3), MODEL)
    assert signal is not None
    assert (signal.name, signal.data["visits"]) == ("lead.returning", 3)
    plain, _, _ = fold([signed_up()])
    assert lc.check_return(plain, [day(1), day(2), day(3)], day(3), MODEL) is None


def test_repeated_message_id_is_ignored():
    click = track("email_click", day(1))
    state, _, _ = fold([signed_up(), click])
    again, changes, signals = lc.apply_event(state, click, MODEL)
    assert (again, changes, signals) == (state, [], [])


def test_late_event_rewrites_history_in_event_time_order():
    product = page("/product/a", day(3))
    state, _, _ = fold([signed_up(), product])
    assert state.history[-1].at == day(3)
    late_click = track("email_click", day(2))
    state, changes, signals = lc.apply_event(state, late_click, MODEL)
    assert [(c.to_stage, c.at, c.cause) for c in changes] == [
        ("nurturing", day(2), late_click.message_id)
    ]
    assert [s.name for s in signals] == ["lead.history_revised"]
    assert [c.at for c in signals[0].data["removed"]] == [day(3)]
    assert state == lc.replay(state.lead, [product, late_click, *state.events], MODEL)


def test_stages_can_be_renamed_in_the_yaml_without_code_changes():
    text = yaml.safe_dump(MODEL.spec.model_dump(mode="json", by_alias=True, exclude_none=True))
    data = yaml.safe_load(text.replace("mql", "hot_lead"))
    data["stages"]["hot_lead"]["display"] = {"en": "Hot lead", "ko": "핫 리드"}
    model = build_model(copy.deepcopy(data))
    _state, changes, _ = fold([signed_up(), track("catalogue_request", day(1))], model=model)
    assert path(changes) == ["acquired", "hot_lead"]
    assert model.display_name("hot_lead", "ko") == "핫 리드"


def test_an_old_false_target_trait_does_not_unmark_a_target_account():
    # The account is a target now (its column: marked by target discovery); a group call
    # from before said it was not. The profile keeps the current mark; a true trait marks.
    base = LeadProfile(id=1, is_target_account=True)
    old = Event(message_id="g0", type="group", occurred_at=T0, properties={"target_account": False})
    assert lc.merge_traits(base, old).is_target_account is True
    plain = LeadProfile(id=2)
    marked = Event(message_id="g1", type="group", occurred_at=T0, properties={"is_target": True})
    assert lc.merge_traits(plain, marked).is_target_account is True
    assert lc.merge_traits(plain, old).is_target_account is False


def test_a_consent_withdrawn_by_an_unsubscribe_replays_from_the_grant():
    """The stored consent reads ``denied`` after an unsubscribe; a replay starts from the
    consent given before (the withdrawal is the ``email_unsubscribe`` event at its time)."""
    method = lc.withdrawal_method("one_click")
    assert method == "withdrawn: unsubscribe (one_click)"
    assert lc.is_withdrawal("denied", method)
    assert lc.base_consent("denied", method) == "granted"
    for status, how in (
        ("denied", "identify"),
        ("denied", None),
        ("granted", "form:x"),
        ("unknown", None),
        ("granted", method),
    ):
        assert lc.base_consent(status, how) == status
    contact = identify(T0, email="kim@acme.co.kr")  # an import: no consent in the stream
    unsubscribed = track("email_unsubscribe", day(3))
    state, _, _ = fold([contact, unsubscribed], consent=lc.base_consent("denied", method))
    assert [c.to_stage for c in state.history] == ["acquired"]
    assert state.profile.consent == "denied"


def test_account_watches_run_from_a_lost_deal_until_the_account_is_worked_again():
    changes = [
        (day(1), 1, "mql"),  # not a watched or clearing stage: ignored
        (day(20), 1, "recycle_b"),  # Kim's deal lost: the account is watched
        (day(25), 2, "recycle_b"),  # a second loss while watched changes nothing
        (day(30), 4, "dead_end"),  # a student at the account: not sales working it
        (day(40), 3, "appointment"),  # a colleague is worked again: the watch ends
        (day(70), 3, "won"),
    ]
    lost_deals = [(day(80), None)]  # an opportunity of the account lost (e.g. in the CRM)
    watches = lc.account_watches(changes, lost_deals, MODEL)
    assert watches == (
        AccountWatch(since=day(20), until=day(40), lost_lead_id=1),
        AccountWatch(since=day(80), until=None, lost_lead_id=None),
    )
    assert lc.account_watch_at(watches, day(39)) == watches[0]
    assert lc.account_watch_at(watches, day(40)) is None
    assert lc.account_watch_at(watches, day(200)) == watches[1]
    off = MODEL.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    off["return_alert"]["when_account_lost"] = False
    assert lc.account_watches(changes, lost_deals, build_model(off)) == ()


def test_a_colleague_of_a_lost_deal_coming_back_alerts_sales_naming_the_pages():
    """Regression (issue 12): only the lead whose deal was lost was watched; a colleague at
    the same account visiting 3 times in 14 days after the pause raised nothing."""
    watch = (AccountWatch(since=day(20), lost_lead_id=1),)
    before = [page("/pricing", day(10)), page("/product/a", day(11))]  # before the loss
    visits = [page("/pricing", day(110)), page("/case-studies/x", day(112))]
    state, _, signals = fold([signed_up(), *before, *visits], account_id=9, account_watch=watch)
    assert signals == []  # twice is not often
    state, _, signals = fold([page("/product/a", day(115))], state)
    assert [(s.name, s.rule, s.at) for s in signals] == [
        ("lead.returning", "return_alert.account", day(115))
    ]
    data = signals[0].data
    assert data["pages"] == [
        "https://acme.io/pricing",
        "https://acme.io/case-studies/x",
        "https://acme.io/product/a",
    ]
    assert (data["watch"], data["account_id"], data["lost_lead_id"], data["lost_at"]) == (
        "account",
        9,
        1,
        day(20),
    )
    # Not again within the window; never for a colleague in the dead end or without a watch.
    _, _, signals = fold([page("/a", day(116)), page("/b", day(117))], state)
    assert signals == []
    three = [page("/a", day(110)), page("/b", day(111)), page("/c", day(112))]
    _, _, signals = fold([signed_up(title="Student"), *three], account_watch=watch)
    assert signals == []
    _, _, signals = fold([signed_up(), *three])
    assert signals == []
    # The watch ended (the account is worked again) before the visits: nothing.
    ended = (AccountWatch(since=day(20), until=day(60), lost_lead_id=1),)
    _, _, signals = fold([signed_up(), *three], account_watch=ended)
    assert signals == []
