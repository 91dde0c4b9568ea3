"""The engagement summary sales reads with a hand-off: content, seminars, pages and the
score breakdown, from the lead's newest events (or the state the live path folded)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime
from itertools import islice
from typing import Any

from sqlalchemy import Connection, select

from leadflow.adapters.db.tables import events
from leadflow.core.config import LeadModel
from leadflow.core.lifecycle import LeadState
from leadflow.services import lifecycle

SUMMARY_EVENTS = 5000
"""The hand-off summary reads a lead's newest events up to this many."""


CONTENT_WORDS = {
    "white_paper": "read the white paper",
    "case_study": "read the case study",
    "demo_video": "watched the demo video",
    "pricing": "downloaded the price list",
    "webinar": "downloaded the webinar recording",
    "trial": "downloaded the trial",
    "blog_post": "read the blog post",
}


def engagement_summary(
    conn: Connection,
    lead_id: int,
    model: LeadModel,
    now: datetime,
    *,
    top: int = 5,
    state: LeadState | None = None,
) -> dict[str, Any]:
    """What sales reads with the hand-off: content, seminars, pages, score breakdown.

    ``state``: the lead folded to ``now``, when the caller has it (the live path): its
    events and scores are used instead of reading and replaying the lead again."""
    if state is not None:
        newest = islice(reversed(state.events), SUMMARY_EVENTS)
        return _summary(newest, lifecycle.explanation(state, model, now), top)
    rows = conn.execute(
        select(
            events.c.type,
            events.c.name,
            events.c.properties,
            events.c.page_url,
            events.c.occurred_at,
        )
        .where(events.c.lead_id == lead_id)
        .order_by(events.c.occurred_at.desc(), events.c.id.desc())
        .limit(SUMMARY_EVENTS)
    ).all()
    return _summary(rows, lifecycle.explain(conn, lead_id, model, now), top)


def _summary(rows: Iterable[Any], explained: Mapping[str, Any], top: int) -> dict[str, Any]:
    """The summary of a lead's events (newest first) and its score explanation."""
    content: list[dict[str, Any]] = []
    webinars: list[dict[str, Any]] = []
    seminars: list[dict[str, Any]] = []
    requests: list[dict[str, Any]] = []
    pages: Counter[str] = Counter()
    clicks = 0
    for r in rows:
        props = r.properties if isinstance(r.properties, Mapping) else {}
        at = r.occurred_at.isoformat()
        if r.type == "page":
            path = _path(r.page_url)
            if path:
                pages[path] += 1
        elif r.name == "content_download":
            content.append(
                {
                    "asset": _text(props.get("asset")),
                    "asset_type": _text(props.get("asset_type")),
                    "at": at,
                }
            )
        elif r.name == "webinar_attended":
            webinars.append({"webinar": _text(props.get("webinar") or props.get("name")), "at": at})
        elif r.name == "event_attended":
            seminars.append({"event": _text(props.get("event") or props.get("name")), "at": at})
        elif r.name in ("demo_request", "quote_request", "catalogue_request", "contact_request"):
            requests.append({"request": r.name, "at": at})
        elif r.name == "email_click":
            clicks += 1
    rules = sorted(explained["engagement"]["rules"], key=lambda c: -abs(c["points_after_decay"]))[
        : top * 2
    ]
    highlights = []
    for c in content[:top]:
        verb = CONTENT_WORDS.get(c["asset_type"] or "", "downloaded")
        highlights.append(f"{verb} '{c['asset']}'" if c["asset"] else verb)
    highlights += [f"attended the webinar '{w['webinar']}'" for w in webinars[:top] if w["webinar"]]
    highlights += [f"attended our event '{s['event']}'" for s in seminars[:top] if s["event"]]
    highlights += [f"sent a {q['request'].replace('_', ' ')}" for q in requests[:top]]
    highlights += [f"visited {p} {n} times" for p, n in pages.most_common(3) if n > 1]
    return {
        "highlights": highlights,
        "content": content[:20],
        "webinars": webinars[:20],
        "events": seminars[:20],
        "requests": requests[:20],
        "pages": [{"path": p, "views": n} for p, n in pages.most_common(top)],
        "email_clicks": clicks,
        "score": {
            "engagement": explained["engagement"]["total"],
            "fit": explained["fit"]["score"],
            "fit_grade": explained["fit"]["grade"],
            "qualification": explained["qualification"]["score"],
            "rules": [
                {
                    "rule": c["rule"],
                    "points": round(c["points_after_decay"], 2),
                    "occurrences": c["occurrences"],
                }
                for c in rules
            ],
        },
        "model_version": explained["model_version"],
    }


def _text(value: Any) -> str | None:
    return value[:255] if isinstance(value, str) and value else None


def _path(url: str | None) -> str | None:
    if not url:
        return None
    from urllib.parse import urlsplit

    path = urlsplit(url).path.lower().rstrip("/") or "/"
    return path[:255]
