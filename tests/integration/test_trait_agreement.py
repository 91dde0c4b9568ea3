"""One reading of identify and group traits (issue 13, item 2).

Property test, both backends: random identify traits (valid, messy, placeholder-like,
numbers as strings, mixed case, unknown keys) and a group call go through ``ingest`` with
the live hooks. Then the stored lead and accounts hold what
:func:`leadflow.core.traits.read_traits` / ``read_group`` say, the live profile folded those
same readings, and the live state equals a cold replay from the store.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from leadflow.adapters.db.tables import accounts, lead_states, leads
from leadflow.bootstrap import Services
from leadflow.core import traits as core_traits
from leadflow.core.lifecycle import replay
from leadflow.core.tracking import MessageError, parse_batch
from leadflow.services import lifecycle as service_lifecycle
from leadflow.services.ingest import ingest

T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)

MESSY_TEXT = st.sampled_from(
    ["CTO", "  Head of Sales ", "Select", "-", "", " ", "n/a", "HEAD OF IT", "한국어", "x" * 300]
)
NUMBERISH = st.sampled_from([0, 7, 250, "42", " 42 ", "1,200", "51-200", "²", 12.0, 3.5, -1])
VALUE = st.one_of(
    st.none(), st.booleans(), MESSY_TEXT, NUMBERISH, st.just({"a": 1}), st.just(["x"])
)
CONSENT = st.sampled_from(
    [
        *(True, False, "granted", "GRANTED ", "Denied", "unknown", "maybe", "", None, 1),
        *({"status": "granted", "method": "webform"}, {"status": "denied"}, {"status": "x"}),
    ]
)
INDUSTRY = st.sampled_from(["Software", " retail ", "Select", "-", "", 12, None])
COUNTRY = st.sampled_from(["KR", "kr", " Korea ", "-", "", None])
COUNT = st.sampled_from([10, 0, "500", " 75 ", "51-200", "Select", "", None, 20.0, True])
TARGET = st.sampled_from([True, False, "yes", None])
KEYS = st.sampled_from(
    [
        "title",
        "phone",
        "first_name",
        "firstName",
        "last_name",
        "lastName",
        "name",
        "source",
        "industry",
        "country",
        "employees",
        "employee_count",
        "is_target",
        "Plan",
        "favourite colour",
        "utm_hint",
        "id",
    ]
)


@st.composite
def person_traits(draw: Any, tag: str) -> dict[str, Any]:
    traits: dict[str, Any] = dict(draw(st.dictionaries(KEYS, VALUE, max_size=6)))
    for key, values in (
        ("industry", INDUSTRY),
        ("country", COUNTRY),
        ("employees", COUNT),
        ("is_target_account", TARGET),
    ):
        if draw(st.booleans()):
            traits[key] = draw(values)
    if draw(st.booleans()):
        traits["consent"] = draw(CONSENT)
    if draw(st.booleans()):
        domain = draw(st.sampled_from([f"{tag}.example", "gmail.com"]))
        local = draw(st.sampled_from(["ann", "Ann.Lee", " BOB "]))
        traits["email"] = (
            f"{local.strip()}.{tag}@{domain.upper() if draw(st.booleans()) else domain}"
        )
    return traits


@st.composite
def company(draw: Any, tag: str) -> Any:
    kind = draw(st.sampled_from(["none", "name", "object"]))
    if kind == "none":
        return None
    if kind == "name":
        return f"Acme {tag}"
    found: dict[str, Any] = {"name": f"Acme {tag}", "id": f"co-{tag}"}
    for key, values in (
        ("industry", INDUSTRY),
        ("country", COUNTRY),
        ("employees", COUNT),
        ("employee_count", COUNT),
        ("is_target", TARGET),
        ("website", st.sampled_from([f"https://www.{tag}.co/about", "Select", "", "-"])),
    ):
        if draw(st.booleans()):
            found[key] = draw(values)
    return found


@st.composite
def scenario(draw: Any) -> tuple[str, list[dict[str, Any]], dict[str, Any] | None]:
    tag = uuid.uuid4().hex[:12]
    identifies = draw(st.lists(person_traits(tag), min_size=1, max_size=3))
    first = draw(company(tag))
    if first is not None:
        identifies[0]["company"] = first
    group = None
    if draw(st.booleans()):
        group = {
            "name": draw(st.sampled_from([f"Group {tag}", "", " "])),
            "industry": draw(INDUSTRY),
            "country": draw(COUNTRY),
            "employees": draw(COUNT),
            "is_target": draw(TARGET),
            "tier": draw(st.sampled_from(["gold", "", None])),
        }
    return tag, identifies, group


def _send(services: Services, at: datetime, message: dict[str, Any]) -> bool:
    try:
        parsed = parse_batch({"batch": [{"timestamp": at.isoformat(), **message}]}, received_at=at)
    except MessageError:
        return False  # refused at the door (as the API would): nothing stored
    ingest(services.engine, parsed, at, after=services.after_ingest)
    return True


def _expected_lead(readings: list[core_traits.TraitReading]) -> dict[str, Any]:
    """The stored lead's columns from the readings, with the store's policies (e-mail set
    once, names from ``name`` fill blanks, empty values never erase)."""
    lead: dict[str, Any] = dict.fromkeys(core_traits.PERSON_LENGTHS)
    lead.update(email=None, consent_status="unknown", attributes={})
    for reading in readings:
        lead.update(reading.person_changes(lead))
        if lead["email"] is None and reading.email is not None:
            lead["email"] = reading.email
        if reading.consent is not None:
            lead["consent_status"] = reading.consent
        lead["attributes"] = {**lead["attributes"], **reading.attributes}
    return lead


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=scenario())
def test_stored_lead_live_profile_and_replay_agree_on_traits(
    services: Services, case: tuple[str, list[dict[str, Any]], dict[str, Any] | None]
) -> None:
    tag, identifies, group = case
    user = f"u-{tag}"
    at = T0
    sent: list[dict[str, Any]] = []
    for i, traits in enumerate(identifies):
        at += timedelta(minutes=1)
        message = {"type": "identify", "userId": user, "messageId": f"{tag}-i{i}", "traits": traits}
        if _send(services, at, message):
            sent.append(traits)
    group_sent = False
    if group is not None:
        at += timedelta(minutes=1)
        message = {
            "type": "group",
            "userId": user,
            "groupId": f"g-{tag}",
            "messageId": f"{tag}-g",
            "traits": group,
        }
        group_sent = _send(services, at, message)
    if not sent and not group_sent:
        return
    readings = [core_traits.read_traits(t) for t in sent]
    with services.engine.connect() as conn:
        lead = conn.execute(select(leads).where(leads.c.user_id == user)).mappings().one()
        by_external = {
            row["external_id"]: row
            for row in conn.execute(
                select(accounts).where(accounts.c.external_id.in_([f"co-{tag}", f"g-{tag}"]))
            ).mappings()
        }
        by_name = (
            conn.execute(select(accounts).where(accounts.c.name == f"Acme {tag}"))
            .mappings()
            .first()
        )
        live_state = (
            conn.execute(select(lead_states).where(lead_states.c.lead_id == lead["id"]))
            .mappings()
            .one()
        )

    # 1. The stored lead is the readings, under the store's policies.
    expected = _expected_lead(readings)
    for column, value in expected.items():
        assert lead[column] == value, (column, sent)

    # 2. The accounts hold what the readings of their traits say (each is new here).
    company_reading = readings[0].company if readings else None
    if company_reading is not None:
        assert by_name is not None, sent
        for column, value in company_reading.fields().items():
            assert by_name[column] == value, (column, sent)
        for column in {"industry", "employee_count", "country"} - company_reading.fields().keys():
            assert by_name[column] is None, (column, sent)
    if group_sent:
        assert group is not None
        reading = core_traits.read_group(group, f"g-{tag}")
        row = by_external[f"g-{tag}"]
        assert row["name"] == (reading.name or f"g-{tag}")
        for column in ("industry", "employee_count", "country"):
            assert row[column] == getattr(reading, column), (column, group)
        assert row["is_target"] == bool(reading.is_target), group
        assert (row["traits"] or {}) == dict(reading.extra)
        assert lead["account_id"] == row["id"]

    # 3. The live profile folded the same readings; a cold replay from the store agrees.
    now = at
    live = services.states.get(lead["id"])
    services.states.clear()
    with services.engine.begin() as conn:
        model = services.models.active(conn, now)
        base = service_lifecycle.load_profiles(conn, [lead["id"]], model)[lead["id"]]
        stored_events = service_lifecycle.load_events(conn, [lead["id"]])[lead["id"]]
        cold = replay(base, stored_events, model)
        result = service_lifecycle.recompute(conn, [lead["id"]], model, now)
    profile = cold.profile
    if live is not None:
        assert live.fold.profile == profile
    last = {"first_name": None, "last_name": None, "title": None, "phone": None}
    email = None
    for reading in readings:
        changes = reading.person_changes(last)
        last.update({k: v for k, v in changes.items() if k in last})  # no profile source
        email = reading.email or email
    for column, value in last.items():
        assert getattr(profile, column) == value, (column, sent)
    assert profile.email == email
    # Account-level traits: the latest one the lead's own events give, else its account's.
    accounts_said = [r.account for r in readings]
    if group_sent:
        assert group is not None
        accounts_said.append(core_traits.read_group(group, f"g-{tag}"))
    for attr in ("industry", "country", "employee_count"):
        said = [getattr(a, attr) for a in accounts_said if getattr(a, attr) is not None]
        assert getattr(profile, attr) == (said[-1] if said else getattr(base, attr)), attr
    consents = [r.consent for r in readings if r.consent is not None]
    assert profile.consent == (consents[-1] if consents else "unknown")
    assert profile.attributes == lead["attributes"]

    outcome = result.outcomes[lead["id"]]
    assert outcome.stage == live_state["stage"]
    assert result.changes_added == 0 and result.changes_removed == 0
    with services.engine.connect() as conn:
        cold_state = (
            conn.execute(select(lead_states).where(lead_states.c.lead_id == lead["id"]))
            .mappings()
            .one()
        )
    for column in ("stage", "fit", "fit_grade", "qualification"):
        assert cold_state[column] == live_state[column], column


def test_the_core_lengths_are_the_columns() -> None:
    for column, length in core_traits.PERSON_LENGTHS.items():
        assert leads.c[column].type.length == length  # type: ignore[attr-defined]
    assert accounts.c.industry.type.length == core_traits.ACCOUNT_LENGTH  # type: ignore[attr-defined]
    assert accounts.c.country.type.length == core_traits.ACCOUNT_LENGTH  # type: ignore[attr-defined]
