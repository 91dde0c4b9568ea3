"""The demo world's sales team at work: hand-offs, meetings, deals won and lost.

After the demo's events are scored, the MQLs are routed to the configured reps within
their daily capacity (the rest wait in the ready queue) and the reps work what they got,
deterministically from the seed: most accept; of those, some are qualified with BANT and an
amount, and those deals are won or lost, or parked as "not now". All of it goes through
the same services as the API (stage machine included), stamped on the world's last day,
so reports, KPIs and the dashboard's sales queue have something to show.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine

from leadflow.services import handoff
from leadflow.services.lifecycle import ActionRefused, ModelCache

BANT_STRONG = {
    "budget": "confirmed",
    "authority": "confirmed",
    "need": "confirmed",
    "timeframe": "likely",
}


@dataclass(slots=True)
class SalesPlay:
    routed: int = 0
    waiting: int = 0
    accepted: int = 0
    rejected: int = 0
    qualified: int = 0
    won: int = 0
    lost: int = 0
    not_now: int = 0


def play_sales(engine: Engine, models: ModelCache, at: datetime, seed: int) -> SalesPlay:
    rng = random.Random(seed)
    play = SalesPlay()
    with engine.begin() as conn:
        model = models.active(conn, at)
        handoff.sync_config_reps(conn, model, at)
        report = handoff.route_due(conn, model, at)
    play.routed, play.waiting = report.routed, report.waiting
    spec = handoff.sales_spec(model)
    lost_reasons = [r.key for r in spec.lost_reasons] or ["price"]
    reject_reasons = [r.key for r in spec.reject_reasons if not r.dead_end] or ["too_early"]
    t = at
    for lead_id in report.lead_ids:
        t += timedelta(seconds=1)
        roll = rng.random()
        try:
            with engine.begin() as conn:
                if roll < 0.1:
                    handoff.reject(conn, model, lead_id, rng.choice(reject_reasons), t)
                    play.rejected += 1
                    continue
                handoff.accept(conn, model, lead_id, t)
                play.accepted += 1
                if roll < 0.3:
                    handoff.not_now(conn, model, lead_id, t + timedelta(milliseconds=1))
                    play.not_now += 1
                    continue
                if roll < 0.75:
                    continue  # meeting set, still being worked
                amount = float(rng.choice([12, 18, 25, 40, 60, 90]) * 1_000_000)
                handoff.qualify(
                    conn,
                    model,
                    lead_id,
                    t + timedelta(milliseconds=1),
                    bant=BANT_STRONG,
                    amount=amount,
                )
                play.qualified += 1
                if roll < 0.9:
                    handoff.win(conn, model, lead_id, t + timedelta(milliseconds=2))
                    play.won += 1
                else:
                    handoff.lose(
                        conn,
                        model,
                        lead_id,
                        rng.choice(lost_reasons),
                        t + timedelta(milliseconds=2),
                    )
                    play.lost += 1
        except (ActionRefused, ValueError, LookupError):
            continue  # the stage machine refused; the demo just moves on
    return play
