"""Dashboard page latency (p50 / p95 per page) on a 1,000,000-lead SQLite world.

The world is bulk-inserted straight into the tables with sqlite3 (not through ingestion,
which would take far longer than a benchmark should): accounts with owners, leads with
names/emails/sources, and events over the last 60 days. Pages are requested in-process
through the ASGI app (FastAPI TestClient), signed in as an admin and as a sales rep, so the
figures are the server's time: routing, queries, template rendering.

    python benchmarks/dashboard.py [--leads 1000000] [--events 2000000] [--runs 30]
                                   [--db PATH] [--keep]

The home page's aggregate tiles are cached for 30 s per process (and per sales rep); the
first (cold) request is printed separately from the warm p50/p95.
"""

from __future__ import annotations

import argparse
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

FIRST = [
    "Ada",
    "Grace",
    "Alan",
    "Barbara",
    "Linus",
    "Margaret",
    "Ken",
    "Frances",
    "Minjun",
    "Seoyeon",
    "Jiho",
    "Hana",
    "Oliver",
    "Emma",
    "Noah",
    "Mia",
    "Lucas",
    "Sofia",
]
LAST = [
    "Kim",
    "Lee",
    "Park",
    "Choi",
    "Smith",
    "Jones",
    "Brown",
    "Garcia",
    "Miller",
    "Davis",
    "Lovelace",
    "Hopper",
    "Turing",
    "Liskov",
    "Torvalds",
    "Hamilton",
]
CAMPAIGNS = ["spring-launch", "webinar-q3", "retarget"]
SOURCES = ["website", "webinar", "tradeshow", "import", "referral", "paid_search"]
CHANNELS = [
    "organic_search",
    "paid_search",
    "email",
    "social",
    "events",
    "webinar",
    "referral",
    "direct",
]
TRACKS = [
    "content_download",
    "email_open",
    "email_click",
    "webinar_registered",
    "form_submit",
    "demo_request",
]
PATHS = ["/pricing", "/product/scoring", "/blog/flow-and-balance", "/case-studies/a", "/docs"]
OWNERS = [f"Rep {i:02d}" for i in range(1, 41)]


def ts(value: datetime) -> str:
    return value.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def build(path: Path, n_leads: int, n_events: int, now: datetime) -> None:
    from leadflow.adapters.db import migrate
    from leadflow.adapters.db.engine import create_db_engine

    engine = create_db_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()
    rng = random.Random(42)
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    n_accounts = max(1, n_leads // 8)
    t0 = time.perf_counter()
    created = ts(now - timedelta(days=400))
    con.executemany(
        "INSERT INTO accounts (id, name, domain, industry, employee_count, country, is_target, "
        "owner, traits, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,'{}',?,?)",
        (
            (
                i,
                f"Company {i}",
                f"company{i}.example",
                rng.choice(["Software", "Finance"]),
                rng.randint(10, 20000),
                rng.choice(["US", "KR", "DE"]),
                i % 17 == 0,
                OWNERS[i % len(OWNERS)] if i % 5 else None,
                created,
                created,
            )
            for i in range(1, n_accounts + 1)
        ),
    )
    con.commit()

    def lead_rows():  # type: ignore[no-untyped-def]
        for i in range(1, n_leads + 1):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            when = ts(now - timedelta(minutes=rng.randint(0, 400 * 24 * 60)))
            yield (
                i,
                f"{first.lower()}.{last.lower()}.{i}@company{(i % n_accounts) + 1}.example",
                first,
                last,
                "Manager",
                (i % n_accounts) + 1 if i % 10 else None,
                rng.choice(SOURCES),
                when,
                when,
            )

    con.executemany(
        "INSERT INTO leads (id, email, first_name, last_name, title, account_id, source, "
        "consent_status, attributes, created_at, updated_at) "
        "VALUES (?,?,?,?,?,?,?,'unknown','{}',?,?)",
        lead_rows(),
    )
    con.commit()
    build_states(con, rng, n_leads, now)
    t1 = time.perf_counter()

    def event_rows():  # type: ignore[no-untyped-def]
        for i in range(1, n_events + 1):
            lead = rng.randint(1, n_leads) if rng.random() < 0.8 else None
            when = ts(now - timedelta(seconds=rng.randint(0, 60 * 86400)))
            if rng.random() < 0.6:
                kind, name, url = "page", None, rng.choice(PATHS)
            else:
                kind, name, url = "track", rng.choice(TRACKS), None
            yield (
                i,
                f"b{i}",
                kind,
                name,
                lead,
                None if lead else f"anon{i % 50000}",
                url,
                rng.choice(CHANNELS),
                when,
                when,
                rng.choice(CAMPAIGNS) if rng.random() < 0.1 else None,
            )

    con.executemany(
        "INSERT INTO events (id, message_id, type, name, lead_id, anonymous_id, page_url, "
        "properties, context, channel, occurred_at, received_at, utm_campaign) "
        "VALUES (?,?,?,?,?,?,?,'{}','{}',?,?,?,?)",
        event_rows(),
    )
    con.commit()
    con.execute("ANALYZE")
    con.close()
    t2 = time.perf_counter()
    print(
        f"built {n_accounts:,} accounts + {n_leads:,} leads in {t1 - t0:.0f} s, "
        f"{n_events:,} events in {t2 - t1:.0f} s (bulk insert, not ingestion)"
    )


def build_states(con: sqlite3.Connection, rng: random.Random, n_leads: int, now: datetime) -> None:
    """Stage, scores and grade for 9 leads in 10 (the rest never scored), and an active
    nurture program for one lead in 5: what the smart-list filters and sorts read."""
    from leadflow.core.config import load_default_model

    model = load_default_model()
    stages = list(model.stages)
    grades = list(model.spec.fit.grades)
    programs = [p.key for p in model.spec.nurture.programs] if model.spec.nurture else []
    scored = ts(now)

    def state_rows():  # type: ignore[no-untyped-def]
        for i in range(1, n_leads + 1):
            if i % 10 == 0:
                continue
            yield (
                i,
                rng.choice(stages),
                round(rng.uniform(0, 150), 1),
                round(rng.uniform(0, 100), 1),
                rng.choice(grades),
                scored,
                scored,
            )

    con.executemany(
        "INSERT INTO lead_states (lead_id, stage, engagement, fit, fit_grade, qualification, "
        "scored_at, model_version, model_hash, revision, updated_at) "
        "VALUES (?,?,?,?,?,0,?,'bench','bench',0,?)",
        state_rows(),
    )
    if programs:
        con.executemany(
            "INSERT INTO program_enrollments (program_key, lead_id, active_key, status, "
            "step_index, enrolled_at) VALUES (?,?,?,'active',0,?)",
            (
                (programs[i % len(programs)], i, f"{programs[i % len(programs)]}:{i}", scored)
                for i in range(5, n_leads + 1, 5)
            ),
        )
    con.commit()


def measure(client, path: str, runs: int) -> tuple[float, float, float, int]:  # type: ignore[no-untyped-def]
    first = time.perf_counter()
    response = client.get(path)
    cold = (time.perf_counter() - first) * 1000
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    return cold, statistics.median(times), p95, response.status_code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--db", type=Path, default=None, help="reuse/keep this database file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary database")
    args = parser.parse_args()

    from fastapi.testclient import TestClient

    from leadflow.bootstrap import build_services
    from leadflow.entrypoints.api import build_app
    from leadflow.services import users as user_service
    from leadflow.settings import Settings

    now = datetime.now(UTC)
    tmp = Path(tempfile.mkdtemp(prefix="lf-dash-bench-"))
    path = args.db or tmp / "bench.db"
    if not path.exists():
        build(path, args.leads, args.events, now)
    services = build_services(Settings(database_url=f"sqlite:///{path}"))
    for role, email, rep in (
        ("admin", "bench-admin@example.com", None),
        ("sales", "bench-sales@example.com", OWNERS[3]),
    ):
        if not any(u.email == email for u in user_service.list_users(services.engine)):
            user_service.create_user(
                services.engine,
                email=email,
                password="bench password",
                role=role,
                sales_rep_key=rep,
                now=now,
            )
    results: list[tuple[str, str, float, float, float, int]] = []
    with TestClient(build_app(services)) as client:
        for who in ("admin", "sales"):
            client.cookies.clear()
            page = client.get("/login")
            token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
            client.post(
                "/login",
                data={
                    "email": f"bench-{who}@example.com",
                    "password": "bench password",
                    "csrf_token": token,
                },
            )
            listing = client.get("/leads").text
            lead_id = re.search(r'href="/leads/(\d+)"', listing).group(1)  # type: ignore[union-attr]
            account_id = re.search(r'href="/accounts/(\d+)"', client.get("/accounts").text).group(1)  # type: ignore[union-attr]
            nxt = re.search(r'rel="next" href="([^"]+)"', listing)
            paths = [
                "/home",
                "/leads",
                nxt.group(1).replace("&amp;", "&") if nxt else "/leads",
                f"/leads?after={args.leads // 2}",
                "/leads?q=grace",
                "/leads?q=hopper",
                "/leads?q=company12",
                "/leads?q=ada.lovelace",
                "/leads?source=webinar",
                f"/leads?source=tradeshow&owner={OWNERS[5].replace(' ', '+')}",
                # smart lists: filters, sorts, substring search, chosen columns, deep pages
                "/leads?role=nurture&sort=-engagement",
                "/leads?grade=A&sort=-fit",
                "/leads?engagement_min=100&fit_min=80&sort=-engagement",
                "/leads?stage=mql&grade=A&sort=-engagement",
                "/leads?program=education&sort=-created_at",
                "/leads?campaign=retarget",
                f"/leads?active_after={(now - timedelta(days=3)).date()}&grade=B",
                "/leads?q=lovelace&sort=-engagement",
                "/leads?q=company12.example",
                "/leads?q=nobody-matches-this",
                "/leads?sort=name&page=40",
                "/leads?sort=-last_activity",
                "/leads?cols=name,email,stage,fit,program&sort=fit&page=2",
                f"/leads/{lead_id}",
                "/accounts",
                "/accounts?q=company 77",
                f"/accounts/{account_id}",
            ]
            paths += ["/queue"]
            if who == "admin":
                paths += ["/settings/keys", "/settings/users", "/funnel", "/model"]
                paths += [
                    "/attribution",
                    "/kpis?role=executive",
                    "/kpis?role=department",
                    "/kpis?role=campaign",
                    "/programs",
                    "/programs/education",
                    "/content",
                    "/forms",
                ]
            for p in paths:
                cold, p50, p95, status = measure(client, p, args.runs)
                results.append((who, p, cold, p50, p95, status))
    services.close()
    print(f"\n{args.leads:,} leads, {args.events:,} events, SQLite, {args.runs} warm runs each\n")
    print(f"{'user':<6} {'page':<64} {'status':>6} {'cold ms':>8} {'p50 ms':>8} {'p95 ms':>8}")
    for who, p, cold, p50, p95, status in results:
        print(f"{who:<6} {p[:64]:<64} {status:>6} {cold:>8.1f} {p50:>8.1f} {p95:>8.1f}")
    worst = max(results, key=lambda r: r[4])
    print(f"\nslowest p95: {worst[1]} as {worst[0]}: {worst[4]:.1f} ms (target < 500 ms)")
    if not args.keep and args.db is None:
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    else:
        print(f"database kept at {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
