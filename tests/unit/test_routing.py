"""Capacity-aware routing, SLA working hours and reasons (core, no database)."""

from __future__ import annotations

import itertools
import random
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from leadflow.core.config import ModelConfigError, load_default_model, load_model
from leadflow.core.routing import (
    OpenAssignment,
    QueuedLead,
    Rep,
    Territory,
    WorkCalendar,
    check_lost_reason,
    handoff_stages,
    priority,
    reject_action,
    reps_from_spec,
    route,
    sla_breaches,
)

SEOUL = ZoneInfo("Asia/Seoul")
MON_10 = datetime(2025, 3, 3, 10, 0, tzinfo=SEOUL)  # Monday 10:00 in Seoul


def lead(i: int, prio: float = 1.0, **kw: object) -> QueuedLead:
    return QueuedLead(lead_id=i, priority=prio, queued_at=MON_10, **kw)  # type: ignore[arg-type]


def team(n: int = 5, capacity: int = 20) -> list[Rep]:
    return [Rep(key=f"rep{i}", daily_capacity=capacity) for i in range(n)]


# --------------------------------------------------------------------------- simulation


def test_campaign_of_5000_mqls_is_paced_to_team_capacity_over_the_days():
    """5,000 MQLs within one hour, 5 reps x 20/day: no rep over capacity on any day, the
    queue drains in priority order, every lead handed off exactly once."""
    rng = random.Random(5)
    reps = team(5, 20)
    start = datetime(2025, 3, 3, 9, 0, tzinfo=SEOUL)
    queue = [
        QueuedLead(
            lead_id=i,
            priority=priority(rng.uniform(100, 400), rng.uniform(0, 100)),
            queued_at=start + timedelta(seconds=rng.uniform(0, 3600)),
            account_id=rng.randrange(1500) if rng.random() < 0.5 else None,
            industry=rng.choice(["software", "retail", None]),
        )
        for i in range(5000)
    ]
    owners: dict[int, str] = {}
    handed: list[tuple[int, int, str]] = []  # (day, lead, rep)
    per_day_rep: Counter[tuple[int, str]] = Counter()
    waiting = queue
    day = 0
    while waiting:
        now = start + timedelta(days=day, hours=1, minutes=5)
        today = Counter()
        # routing runs many times a day (every ingest, a worker); capacity holds across runs
        for run in range(3):
            plan = route(waiting, reps, today, owners, now + timedelta(hours=run), sla_hours=24)
            for a in plan.assignments:
                today[a.rep_key] += 1
                per_day_rep[(day, a.rep_key)] += 1
                handed.append((day, a.lead_id, a.rep_key))
                if a.account_id is not None:
                    owners.setdefault(a.account_id, a.rep_key)
            waiting = plan.still_waiting
        day += 1
        assert day < 100, "the queue never drains"
    assert max(per_day_rep.values()) == 20
    assert all(n <= 20 for n in per_day_rep.values())
    assert sum(per_day_rep.values()) == 5000
    assert day >= 50  # 5,000 / (5 x 20)
    # capacity is never left unused while a lead any rep could take is still waiting
    last_free_day = max(d for d, i, _ in handed if queue[i].account_id is None)
    for d in range(last_free_day):
        assert sum(per_day_rep[(d, r.key)] for r in reps) == 100
    ids = [lead_id for _, lead_id, _ in handed]
    assert sorted(ids) == list(range(5000))  # nobody lost, nobody twice
    # Priority order, per rep (an account waits for its owner): a lead handed off on a
    # later day never outranks one its rep got earlier... for leads free to go to anyone,
    # the global order holds.
    by_id = {q.lead_id: q for q in queue}
    free_days: dict[int, list[float]] = defaultdict(list)
    for d, lead_id, _ in handed:
        if by_id[lead_id].account_id is None:
            free_days[d].append(by_id[lead_id].priority)
    days = sorted(free_days)
    for earlier, later in itertools.pairwise(days):
        assert min(free_days[earlier]) >= max(free_days[later])
    # every account's people went to one rep
    account_reps: dict[int, set[str]] = defaultdict(set)
    for _, lead_id, rep in handed:
        if by_id[lead_id].account_id is not None:
            account_reps[by_id[lead_id].account_id].add(rep)  # type: ignore[index]
    assert all(len(r) == 1 for r in account_reps.values())


def test_nothing_is_routed_when_the_team_is_full_today():
    plan = route([lead(1), lead(2)], team(2, 1), {"rep0": 1, "rep1": 1}, {}, MON_10)
    assert plan.assignments == []
    assert [q.lead_id for q in plan.still_waiting] == [1, 2]


def test_queue_is_served_by_priority_then_queue_time_then_id():
    early = MON_10 - timedelta(hours=1)
    queue = [
        QueuedLead(lead_id=5, priority=10, queued_at=MON_10),
        QueuedLead(lead_id=4, priority=10, queued_at=early),
        QueuedLead(lead_id=3, priority=50, queued_at=MON_10),
        QueuedLead(lead_id=2, priority=10, queued_at=MON_10),
    ]
    plan = route(queue, team(1, 3), {}, {}, MON_10)
    assert [a.lead_id for a in plan.assignments] == [3, 4, 2]
    assert [q.lead_id for q in plan.still_waiting] == [5]


def test_the_same_inputs_give_the_same_plan():
    queue = [lead(i, prio=i % 7) for i in range(40)]
    a = route(queue, team(3, 5), {}, {}, MON_10)
    b = route(list(reversed(queue)), list(reversed(team(3, 5))), {}, {}, MON_10)
    assert a == b


def test_a_lead_listed_twice_is_handed_off_once():
    plan = route([lead(1), lead(1)], team(2, 5), {}, {}, MON_10)
    assert [a.lead_id for a in plan.assignments] == [1]


# --------------------------------------------------------------------------- rules


def test_account_owner_gets_every_person_of_the_account():
    reps = [Rep(key="a", daily_capacity=5), Rep(key="b", daily_capacity=5)]
    queue = [lead(i, account_id=7) for i in range(3)]
    plan = route(queue, reps, {}, {7: "b"}, MON_10)
    assert {(a.rep_key, a.rule) for a in plan.assignments} == {("b", "owner")}


def test_first_hand_off_of_an_account_makes_the_rep_its_owner_for_the_rest():
    reps = [Rep(key="a", daily_capacity=5), Rep(key="b", daily_capacity=5)]
    queue = [lead(1, prio=9, account_id=7), lead(2, prio=8, account_id=7), lead(3, prio=7)]
    plan = route(queue, reps, {}, {}, MON_10)
    got = {a.lead_id: (a.rep_key, a.rule) for a in plan.assignments}
    assert got[1] == ("a", "round_robin")
    assert got[2] == ("a", "owner")
    assert got[3][0] == "b"  # round-robin continues with the less loaded rep


def test_a_full_owner_keeps_the_account_waiting_while_others_have_room():
    reps = [Rep(key="a", daily_capacity=1), Rep(key="b", daily_capacity=5)]
    plan = route([lead(1, account_id=7)], reps, {"a": 1}, {7: "a"}, MON_10)
    assert plan.assignments == []
    assert [q.lead_id for q in plan.still_waiting] == [1]


def test_an_inactive_owner_does_not_block_the_account():
    reps = [Rep(key="a", active=False), Rep(key="b")]
    plan = route([lead(1, account_id=7)], reps, {}, {7: "a"}, MON_10)
    assert [(a.rep_key, a.rule) for a in plan.assignments] == [("b", "round_robin")]


def test_territory_by_industry_and_country_comes_before_round_robin():
    reps = [
        Rep(key="a"),
        Rep(key="fin", territories=(Territory.of(industries=["Financial Services"]),)),
        Rep(key="jp", territories=(Territory.of(countries=["jp"], industries=["retail"]),)),
    ]
    queue = [
        lead(1, industry="financial services"),
        lead(2, industry="Retail", country="JP"),
        lead(3, industry="Retail", country="KR"),
    ]
    got = {a.lead_id: (a.rep_key, a.rule) for a in route(queue, reps, {}, {}, MON_10)[0]}
    assert got[1] == ("fin", "territory")
    assert got[2] == ("jp", "territory")
    assert got[3][1] == "round_robin"


def test_account_list_territory_wins_over_industry_territory():
    reps = [
        Rep(key="ind", territories=(Territory.of(industries=["software"]),)),
        Rep(key="named", territories=(Territory.of(accounts=["acme.example"]),)),
    ]
    q = lead(1, industry="software", account_id=3, account_keys=frozenset({"acme.example", "3"}))
    plan = route([q], reps, {}, {}, MON_10)
    assert [(a.rep_key, a.rule) for a in plan.assignments] == [("named", "territory.account")]


def test_a_full_territory_rep_lets_the_lead_go_to_round_robin():
    reps = [Rep(key="a"), Rep(key="fin", territories=(Territory.of(industries=["finance"]),))]
    plan = route([lead(1, industry="finance")], reps, {"fin": 20}, {}, MON_10)
    assert [(a.rep_key, a.rule) for a in plan.assignments] == [("a", "round_robin")]


def test_round_robin_follows_the_weights():
    reps = [
        Rep(key="a", weight=3, daily_capacity=1000),
        Rep(key="b", weight=1, daily_capacity=1000),
    ]
    plan = route([lead(i) for i in range(400)], reps, {}, {}, MON_10)
    counts = Counter(a.rep_key for a in plan.assignments)
    assert counts == {"a": 300, "b": 100}


def test_round_robin_uses_recent_load_so_a_quiet_day_does_not_favour_one_rep():
    reps = team(2, 20)
    plan = route([lead(1)], reps, {}, {}, MON_10, recent_counts={"rep0": 10, "rep1": 3})
    assert plan.assignments[0].rep_key == "rep1"


def test_excluded_rep_is_skipped_on_reroute():
    reps = [Rep(key="a"), Rep(key="b")]
    q = lead(1, account_id=4, exclude=frozenset({"a"}))
    plan = route([q], reps, {}, {4: "a"}, MON_10)
    assert [a.rep_key for a in plan.assignments] == ["b"]


def test_priority_multiplies_engagement_by_fit_and_bant_when_known():
    assert priority(100, 50) == 50
    assert priority(100, 0) == priority(100, 10) == 10  # unknown fit does not zero it
    assert priority(100, 50, 80) == pytest.approx(90)
    assert priority(-5, 90) == 0


# --------------------------------------------------------------------------- SLA


def test_24_working_hours_from_monday_morning_end_on_thursday_morning():
    cal = WorkCalendar()
    due = cal.add_working_hours(MON_10, 24)  # 8h Mon, 9h Tue, 7h Wed -> Wed 16:00
    assert due.astimezone(SEOUL) == datetime(2025, 3, 5, 16, 0, tzinfo=SEOUL)


def test_friday_afternoon_hand_off_runs_over_the_weekend():
    cal = WorkCalendar()
    fri = datetime(2025, 3, 7, 17, 0, tzinfo=SEOUL)
    assert cal.add_working_hours(fri, 2).astimezone(SEOUL) == datetime(
        2025, 3, 10, 10, 0, tzinfo=SEOUL
    )
    sat = datetime(2025, 3, 8, 12, 0, tzinfo=SEOUL)
    assert cal.add_working_hours(sat, 9).astimezone(SEOUL) == datetime(
        2025, 3, 10, 18, 0, tzinfo=SEOUL
    )
    assert cal.working_hours_between(fri, datetime(2025, 3, 10, 10, 0, tzinfo=SEOUL)) == 2


def test_holidays_and_time_zones_are_respected():
    cal = WorkCalendar(holidays=frozenset({date(2025, 3, 4)}))
    due = cal.add_working_hours(MON_10, 9)  # 8h Monday, Tuesday off, 1h Wednesday
    assert due.astimezone(SEOUL) == datetime(2025, 3, 5, 10, 0, tzinfo=SEOUL)
    berlin = WorkCalendar(zone=ZoneInfo("Europe/Berlin"))
    # 2025-03-30 is the DST switch; Friday 17:00 + 2h = Monday 10:00 local (CEST)
    fri = datetime(2025, 3, 28, 17, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    assert berlin.add_working_hours(fri, 2) == datetime(
        2025, 3, 31, 10, 0, tzinfo=ZoneInfo("Europe/Berlin")
    )


def test_capacity_day_is_the_local_day_in_the_sales_time_zone():
    cal = WorkCalendar()
    late_utc = datetime(2025, 3, 3, 16, 30, tzinfo=UTC)  # 01:30 Tuesday in Seoul
    assert cal.local_day(late_utc) == date(2025, 3, 4)
    begin, end = cal.day_bounds(date(2025, 3, 4))
    assert begin == datetime(2025, 3, 3, 15, 0, tzinfo=UTC)
    assert end - begin == timedelta(days=1)


def test_route_sets_the_due_time_in_working_hours():
    fri = datetime(2025, 3, 7, 17, 0, tzinfo=SEOUL)
    plan = route([lead(1)], team(1), {}, {}, fri, sla_hours=24)
    assert plan.assignments[0].due_at.astimezone(SEOUL) == datetime(
        2025, 3, 12, 14, 0, tzinfo=SEOUL
    )


def _open(status: str, due: datetime, i: int = 1) -> OpenAssignment:
    return OpenAssignment(
        id=i, lead_id=i, rep_key="a", status=status, assigned_at=due - timedelta(days=3), due_at=due
    )


def test_sla_breach_escalates_first_then_reroutes():
    due = datetime(2025, 3, 5, 16, 0, tzinfo=SEOUL)
    now = datetime(2025, 3, 6, 10, 0, tzinfo=SEOUL)
    [first] = sla_breaches([_open("routed", due)], now)
    assert first.action == "escalate"
    assert first.overdue_hours == 3  # 16-18 Wed, 9-10 Thu
    assert first.new_due_at is not None
    assert first.new_due_at.astimezone(SEOUL) == datetime(2025, 3, 6, 18, 0, tzinfo=SEOUL)
    [second] = sla_breaches([_open("escalated", first.new_due_at)], first.new_due_at)
    assert second.action == "reroute"


def test_sla_policies():
    due = datetime(2025, 3, 5, 16, 0, tzinfo=SEOUL)
    now = due + timedelta(hours=1)
    assert [d.action for d in sla_breaches([_open("routed", due)], now, on_breach="reroute")] == [
        "reroute"
    ]
    assert sla_breaches([_open("escalated", due)], now, on_breach="escalate") == []
    assert sla_breaches([_open("routed", due)], due - timedelta(seconds=1)) == []
    assert sla_breaches([_open("accepted", due)], now) == []


def test_naive_times_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        route([], team(), {}, {}, datetime(2025, 3, 3, 10))


# --------------------------------------------------------------------------- config


def test_default_model_ships_an_example_team_and_reasons():
    spec = load_default_model().spec.sales
    assert spec is not None
    assert spec.timezone == "Asia/Seoul"
    assert spec.sla_hours == 24
    reps = reps_from_spec(spec)
    assert reps and all(r.daily_capacity == 20 for r in reps)
    assert reject_action(spec, "student") == "disqualify"
    assert reject_action(spec, "not_interested") == "reject"
    with pytest.raises(ValueError, match="reason: unknown reject reason 'nope'"):
        reject_action(spec, "nope")
    with pytest.raises(ValueError, match="reason: unknown lost reason"):
        check_lost_reason(spec, "<script>")
    assert check_lost_reason(spec, "price") == "price"


def _with_sales(sales: str) -> str:
    text = load_default_model_text()
    head = text.split("\nsales:\n")[0]
    return head + "\nsales:\n" + sales


def load_default_model_text() -> str:
    from importlib import resources

    return resources.files("leadflow").joinpath("default.yaml").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("sales", "path"),
    [
        ("  timezone: Mars/Olympus\n", "sales.timezone"),
        (
            "  reps: [{key: a, name: A, email: a@x.example, daily_capacity: -1}]\n",
            "sales.reps[0].daily_capacity",
        ),
        ("  reps: [{key: a, name: A, email: nope}]\n", "sales.reps[0].email"),
        (
            "  reps: [{key: a, name: A, email: a@x.example},"
            " {key: a, name: B, email: b@x.example}]\n",
            "sales.reps[1].key",
        ),
        ("  working_hours: {start: '18:00', end: '09:00'}\n", "sales.working_hours.end"),
        ("  working_hours: {start: '25:00'}\n", "sales.working_hours.start"),
        ("  working_hours: {days: [funday]}\n", "sales.working_hours.days[0]"),
        ("  handoff_stages: [nowhere]\n", "sales.handoff_stages[0]"),
        ("  sla_hours: 0\n", "sales.sla_hours"),
        ("  on_breach: shout\n", "sales.on_breach"),
        ("  reject_reasons: [{key: a}, {key: a}]\n", "sales.reject_reasons[1].key"),
        ("  lost_reasons: [{key: a, dead_end: true}]\n", "sales.lost_reasons[0].dead_end"),
        (
            "  reps: [{key: a, name: A, email: a@x.example, territory: []}]\n",
            "sales.reps[0].territory",
        ),
    ],
)
def test_bad_sales_config_names_the_key(sales: str, path: str):
    with pytest.raises(ModelConfigError) as err:
        load_model(_with_sales(sales))
    assert path in err.value.messages[0] or any(path in m for m in err.value.messages)


def test_reject_reason_needs_the_reject_action():
    text = load_default_model_text().replace(
        "  reject: {from: [mql, appointment], to: nurturing}\n", ""
    )
    with pytest.raises(ModelConfigError, match=r"sales.reject_reasons\[0\]: needs an action"):
        load_model(text)


def test_a_model_without_sales_still_loads():
    model = load_model(load_default_model_text().split("\nsales:\n")[0])
    assert model.spec.sales is None


def test_handoff_stages_come_from_the_model_and_fastpasses_into_sales_stages_are_due():
    stages = handoff_stages(load_default_model())
    assert stages.handoff == {"mql"}
    assert stages.sales == {"mql", "appointment", "opportunity"}
    due = stages.needs_handoff
    assert due("mql", "stages.mql.enter_when[0]") and due("mql", "model.apply") and due("mql", None)
    assert due("appointment", "fastpass.target_account_attends_our_event")
    assert due("opportunity", "stages.opportunity.enter_when[0]")
    assert not due("appointment", "actions.accept")  # the rep who accepted has it
    assert not due("appointment", "model.apply") and not due("appointment", None)
    assert not due("nurturing", "stages.nurturing.enter_when[0]")
    assert not due("dead_end", "dead_end.student")
