"""A small demo world loaded through ingestion, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from leadflow.adapters.db.tables import accounts, events, identities, leads
from leadflow.bootstrap import Services
from leadflow.entrypoints.cli import app
from leadflow.entrypoints.cli.common import run_guarded
from leadflow.sim import WorldConfig, build_world, iter_messages
from leadflow.sim.catalog import INDUSTRIES
from leadflow.sim.loader import load_world
from leadflow.sim.world import World

CONFIG = WorldConfig(leads=60, months=4, seed=3)


@pytest.fixture(scope="module")
def world() -> World:
    return build_world(CONFIG)


@pytest.fixture(scope="module")
def messages(world: World) -> list[dict[str, Any]]:
    return list(iter_messages(world))


def _count(services: Services, table: Any) -> int:
    with services.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_loaded_world_matches_what_the_generator_says(services, world, messages):
    report = load_world(services.engine, world, chunk_size=200)
    assert report.messages == len(messages) == report.stored
    assert report.duplicates == 0
    assert _count(services, events) == len(messages)
    assert _count(services, leads) == world.lead_count == CONFIG.leads
    assert _count(services, accounts) == len(world.accounts)
    assert (report.accounts, report.leads, report.events) == (
        len(world.accounts),
        CONFIG.leads,
        len(messages),
    )
    with services.engine.connect() as conn:
        emails = set(conn.execute(select(leads.c.email)).scalars())
        rows = conn.execute(select(accounts)).mappings().all()
        consent = Counter(conn.execute(select(leads.c.consent_status)).scalars())
    people = world.people
    assert emails == {people.email[p] for p in range(len(people)) if people.identified[p]}
    by_key = {a.key: a for a in world.accounts}
    for row in rows:
        truth = by_key[row["external_id"]]
        assert (row["domain"], row["industry"], row["employee_count"], row["country"]) == (
            truth.domain,
            INDUSTRIES[truth.industry],
            truth.employees,
            truth.country,
        )
        # Simulator truth, kept apart for checking scores later: never a column.
        assert row["traits"]["demo_true_intent"] == round(truth.intent, 4)
    assert consent["granted"] > 0 and set(consent) <= {"granted", "denied"}


def test_anonymous_history_is_stitched_to_the_lead(services, world):
    load_world(services.engine, world)
    people, arr = world.people, world.arr
    with services.engine.connect() as conn:
        lead_of_user = dict(conn.execute(select(leads.c.user_id, leads.c.id)).all())
        rows = conn.execute(select(events.c.anonymous_id, events.c.user_id, events.c.lead_id)).all()
        anon_links = Counter(conn.execute(select(identities.c.kind)).scalars())
    anon_owner = {}
    for p in range(len(people)):
        anon_owner[people.anon1[p]] = p
        anon_owner[people.anon2[p]] = p
    stitched_before_identify = 0
    for anonymous_id, user_id, lead_id in rows:
        if anonymous_id is None:
            assert lead_id == lead_of_user[user_id]
            continue
        p = anon_owner[anonymous_id]
        if people.identified[p]:
            # Every event of an identified person's browsers belongs to that lead, also the
            # ones from before the identify (and from the second device).
            assert lead_id == lead_of_user[people.user_id[p]], anonymous_id
            if user_id is None:
                stitched_before_identify += 1
        else:
            assert lead_id is None and user_id is None
    assert stitched_before_identify > 0
    assert anon_links["anonymous"] >= CONFIG.leads // 2
    assert arr["dev2"].any()


def test_loading_the_same_seed_again_adds_nothing(services, world, messages):
    first = load_world(services.engine, world)
    with services.engine.connect() as conn:
        before = [
            conn.execute(select(table).order_by(table.c.id)).all()
            for table in (accounts, leads, identities)
        ]
    again = load_world(services.engine, world)
    assert again.stored == 0 and again.duplicates == len(messages) == first.stored
    with services.engine.connect() as conn:
        after = [
            conn.execute(select(table).order_by(table.c.id)).all()
            for table in (accounts, leads, identities)
        ]
    assert after == before
    assert _count(services, events) == len(messages)


def test_demo_command_loads_and_prints_a_summary(db_url, capsys):
    code = run_guarded(
        app, ["demo", "--leads", "15", "--months", "2", "--seed", "9", "--database-url", db_url]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "leads in the database" in out and "events stored" in out
    world = build_world(WorldConfig(leads=15, months=2, seed=9))
    assert f"{len(list(iter_messages(world))):,}" in out


def test_demo_scores_every_lead_works_the_sales_queue_and_creates_one_user_per_role(db_url, capsys):
    from sqlalchemy import create_engine, func, select

    from leadflow.adapters.db.tables import assignments, lead_states, leads, users

    args = ["demo", "--leads", "120", "--months", "4", "--seed", "3", "--database-url", db_url]
    assert run_guarded(app, args) == 0
    out = capsys.readouterr().out
    engine = create_engine(db_url)
    with engine.connect() as conn:
        n_leads = conn.execute(select(func.count()).select_from(leads)).scalar_one()
        n_states = conn.execute(select(func.count()).select_from(lead_states)).scalar_one()
        routed = conn.execute(select(func.count()).select_from(assignments)).scalar_one()
        roles = set(conn.execute(select(users.c.role)).scalars())
        sales_key = conn.execute(
            select(users.c.sales_rep_key).where(users.c.role == "sales")
        ).scalar_one()
    engine.dispose()
    assert n_states == n_leads > 0
    assert routed > 0
    assert roles == {"admin", "marketer", "sales", "executive"}
    assert sales_key  # the sales user is one of the configured reps
    for email in ("admin@leadflow.example", "sales@leadflow.example"):
        assert email in out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--leads", "0"], "--leads: must be between 1 and"),
        (["--leads", "-5"], "--leads: must be between 1 and"),
        (["--leads", "20000000"], "--leads: must be between 1 and"),
        (["--months", "0"], "--months: must be between 1 and"),
        (["--until", "yesterday"], "--until: expected a date"),
    ],
)
def test_demo_command_refuses_bad_arguments_in_one_line(db_url, capsys, args, expected):
    code = run_guarded(app, ["demo", *args, "--database-url", db_url])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(f"error: {expected}") and err.count("\n") == 1
    assert "Traceback" not in err


def test_demo_command_on_a_missing_database_says_to_run_init(tmp_path: Path, capsys):
    missing = tmp_path / "nothing.db"
    code = run_guarded(app, ["demo", "--leads", "5", "--database-url", f"sqlite:///{missing}"])
    assert code == 1
    assert "leadflow init" in capsys.readouterr().err
    assert not missing.exists()
