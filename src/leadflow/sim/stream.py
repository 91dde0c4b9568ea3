"""The demo world, day by day, as Segment messages in time order.

:func:`iter_messages` walks the world's days. Each day's behaviour is drawn with NumPy
from a generator seeded by ``(seed, day)`` into compact numeric records (time, person,
kind, content, channel, campaign, device); only then are the records of that day turned
into message dicts. Memory therefore stays bounded by one day of messages plus the
world's cast, and the stream is identical for identical configs.

What a day holds:
- web sessions of every person who is around (rate rises with the account's hidden
  intent, and threefold while the account is actively evaluating); the landing page of a
  session carries its channel as UTM tags and/or a referrer, later pages are internal;
- late-stage behaviour: pricing pages, gated downloads, demo / quote / catalogue /
  contact requests and trial sign-ups, far likelier for high-intent accounts;
- identification: a form page, ``identify`` (anonymousId + userId + traits with
  consent), ``form_submit`` and ``group`` — earlier anonymous pages of that browser are
  then stitched by ingestion; some people later identify from a second device;
- e-mail: newsletters, nurture mails and invitations to people who consented
  (``email_sent`` / ``email_open`` / ``email_click`` → a session from the e-mail),
  unsubscribes and hard bounces; webinar registrations and attendance; trade-show booth
  visits (``event_attended``), including people whose business card is how they became
  a lead.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from leadflow.sim import catalog as C
from leadflow.sim.world import DAY, World

K_PAGE, K_IDENTIFY, K_GROUP, K_FORM, K_DOWNLOAD, K_REQUEST = 0, 1, 2, 3, 4, 5
K_WEB_REG, K_WEB_ATT, K_SHOW, K_SENT, K_OPEN, K_CLICK, K_UNSUB, K_BOUNCE = range(6, 14)
# Messages sent by servers (the e-mail service, the webinar platform, the badge scanner):
# they know the userId only.
SERVER_SIDE = frozenset({K_WEB_ATT, K_SHOW, K_SENT, K_OPEN, K_CLICK, K_UNSUB, K_BOUNCE})
COLS = ("t", "p", "k", "a", "b", "ch", "camp", "r", "dev")
DTYPES = {
    "t": np.float64,
    "p": np.int32,
    "k": np.int8,
    "a": np.int32,
    "b": np.int32,
    "ch": np.int8,
    "camp": np.int32,
    "r": np.int16,
    "dev": np.int8,
}
GATED = np.array([c.gated for c in C.CONTENT], dtype=bool)
EARLY = np.array(C.STAGE_CONTENT["early"])
MIDDLE = np.array(C.STAGE_CONTENT["middle"])
LATE = np.array(C.STAGE_CONTENT["late"])
CAREERS = np.array(C.STAGE_CONTENT["careers"])
CASE_STUDIES = np.array(C.CASE_STUDY_BY_INDUSTRY)
REQUEST_PAGES = np.array([C.CONTENT_INDEX[path] for _, path in C.REQUESTS])
FORM_PAGES = np.array([C.CONTENT_INDEX.get(path, 0) for _, path in C.FORMS])
WEBINAR_PAGE = C.CONTENT_INDEX["/webinars"]
HOME = C.CONTENT_INDEX["/"]
LIBRARY = {"name": "leadflow-demo", "version": "1"}


class _Records:
    """Columns of numeric event records, appended in pieces."""

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {c: [] for c in COLS}

    def add(self, t: Any, p: Any, k: int, a: Any = -1, b: Any = -1, ch: Any = -1,
            camp: Any = -1, r: Any = 0, dev: Any = 0) -> None:  # fmt: skip
        t = np.asarray(t, dtype=np.float64)
        n = t.shape[0]
        if n == 0:
            return
        for name, value in zip(COLS, (t, p, k, a, b, ch, camp, r, dev), strict=True):
            self.parts[name].append(np.broadcast_to(np.asarray(value, DTYPES[name]), (n,)))

    def add_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        if len(arrays["t"]):
            for name in COLS:
                self.parts[name].append(arrays[name])

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            name: np.concatenate(parts).astype(DTYPES[name], copy=False)
            if parts
            else np.zeros(0, DTYPES[name])
            for name, parts in self.parts.items()
        }


def _take(arrays: dict[str, np.ndarray], index: Any) -> dict[str, np.ndarray]:
    return {name: col[index] for name, col in arrays.items()}


@dataclass(slots=True)
class DayRecords:
    day: int
    records: dict[str, np.ndarray]

    def __len__(self) -> int:
        return int(self.records["t"].shape[0])


def iter_day_records(world: World) -> Iterator[DayRecords]:
    """Each day's records, sorted by time. Deterministic for a given world."""
    cfg = world.config
    days = cfg.days
    once = _one_offs(world)
    edges = np.searchsorted(once["t"], np.arange(days + 1) * DAY, side="left")
    pending: dict[int, list[dict[str, np.ndarray]]] = {}
    unsubscribed = np.zeros(world.people_count, dtype=bool)
    bounced = np.zeros(world.people_count, dtype=bool)
    sends_by_day: dict[int, list[int]] = {}
    for i, s in enumerate(world.sends):
        sends_by_day.setdefault(s.day, []).append(i)
    weekday0 = cfg.start.weekday()
    for day in range(days):
        rng = np.random.default_rng([cfg.seed, 1, day])
        rec = _Records()
        rec.add_arrays(_take(once, slice(edges[day], edges[day + 1])))
        for part in pending.pop(day, []):
            rec.add_arrays(part)
        weekend = (weekday0 + day) % 7 >= 5
        _daily_sessions(world, rng, day, 0.35 if weekend else 1.0, rec)
        for i in sends_by_day.get(day, []):
            _send(world, rng, i, unsubscribed, bounced, rec)
        arrays = rec.arrays()
        t = arrays["t"]
        later = t >= (day + 1) * DAY
        if later.any():
            rest = _take(arrays, later)
            for d in np.unique((rest["t"] // DAY).astype(np.int64)):
                if d < days:
                    pending.setdefault(int(d), []).append(
                        _take(rest, (rest["t"] // DAY).astype(np.int64) == d)
                    )
            arrays = _take(arrays, ~later)
        order = np.argsort(arrays["t"], kind="stable")
        yield DayRecords(day, _take(arrays, order))


def _one_offs(world: World) -> dict[str, np.ndarray]:
    """Identification clusters, second devices, anonymous group calls: fixed times."""
    A = world.arr
    rng = np.random.default_rng([world.config.seed, 2])
    rec = _Records()
    ids = np.flatnonzero(A["identified"])
    t_id = A["t_id"][ids]
    form = A["form"][ids]
    ref = A["form_ref"][ids]
    show = form == C.FORM["tradeshow"]
    web = ~show
    acq = A["acq"][ids]
    day = np.minimum((t_id // DAY).astype(np.int64), world.config.days - 1)
    camp = world.campaign_for[acq, day]
    camp = np.where(
        np.isin(acq, (C.CH["social"], C.CH["referral"])) & (rng.random(len(ids)) < 0.5), -1, camp
    )
    page = np.where(form == C.FORM["whitepaper"], ref, FORM_PAGES[form])
    r = rng.integers(0, 64, len(ids))
    rec.add(t_id[web] - 45, ids[web], K_PAGE, a=page[web], ch=acq[web], camp=camp[web], r=r[web])
    rec.add(t_id, ids, K_IDENTIFY, a=form)
    rec.add(t_id + 2, ids, K_FORM, a=form, b=ref)
    sel = form == C.FORM["whitepaper"]
    rec.add(t_id[sel] + 3, ids[sel], K_DOWNLOAD, a=ref[sel])
    sel = form == C.FORM["webinar"]
    rec.add(t_id[sel] + 3, ids[sel], K_WEB_REG, a=ref[sel])
    if world.webinars:
        w_at = np.array([w.at for w in world.webinars], dtype=float)
        attend = sel & (rng.random(len(ids)) < 0.45 + 0.35 * A["intent"][ids])
        rec.add(
            w_at[ref[attend]] + rng.uniform(0, 900, int(attend.sum())),
            ids[attend],
            K_WEB_ATT,
            a=ref[attend],
        )
    for name, request in (("demo-request", 0), ("contact", 3), ("trial", 4)):
        sel = form == C.FORM[name]
        rec.add(t_id[sel] + 3, ids[sel], K_REQUEST, a=request)
    rec.add(t_id[show] + 3, ids[show], K_SHOW, a=ref[show])
    member = A["account"][ids] >= 0
    rec.add(t_id[member] + 5, ids[member], K_GROUP)
    two = np.flatnonzero(A["dev2"])
    rec.add(A["t_dev2"][two] - 30, two, K_PAGE, a=HOME, ch=C.CH["direct"], dev=1)
    rec.add(A["t_dev2"][two], two, K_IDENTIFY, a=-1, dev=1)
    # Accounts nobody at which ever identifies: the visit is matched to the company
    # (reverse-IP enrichment), so the account exists with no lead.
    firsts = [
        min(acc.members, key=lambda p: A["t_first"][p])
        for acc in world.accounts
        if acc.kind == "prospect" and not any(A["identified"][m] for m in acc.members)
    ]
    if firsts:
        f = np.array(firsts)
        rec.add(A["t_first"][f] + 5, f, K_GROUP)
        rec.add(A["t_first"][f], f, K_PAGE, a=HOME, ch=C.CH["direct"])
    arrays = rec.arrays()
    return _take(arrays, np.argsort(arrays["t"], kind="stable"))


def _daily_sessions(world: World, rng: np.random.Generator, day: int, factor: float,
                    rec: _Records) -> None:  # fmt: skip
    A = world.arr
    lo, hi = day * DAY, (day + 1) * DAY
    mid = lo + DAY / 2
    around = (A["t_first"] < hi) & (A["t_last"] >= lo)
    evaluating = (A["b_start"] <= mid) & (mid < A["b_end"])
    # People researching before they fill in a form browse more than usual.
    researching = A["history"] & (A["t_id"] > lo)
    boost = np.where(evaluating, 3.0, 1.0) * np.where(researching, 2.5, 1.0)
    lam = np.where(around, A["rate"] * boost * factor, 0.0)
    counts = rng.poisson(lam)
    who = np.repeat(np.arange(len(lam), dtype=np.int32), counts)
    n = len(who)
    if n == 0:
        return
    # Mostly office hours in Korea (09-19 KST = 00-10 UTC), some evenings.
    offset = np.where(
        rng.random(n) < 0.85, rng.uniform(0, 10 * 3600, n), rng.uniform(10 * 3600, 15 * 3600, n)
    )
    t0 = np.maximum(lo + offset, A["t_first"][who])
    keep = (t0 < hi) & (t0 <= A["t_last"][who])
    who, t0 = who[keep], t0[keep]
    ch = rng.choice(len(C.CHANNELS), size=len(who), p=C.SESSION_CHANNEL_WEIGHTS)
    camp = world.campaign_for[ch, day]
    camp = np.where(
        np.isin(ch, (C.CH["social"], C.CH["referral"])) & (rng.random(len(who)) < 0.5), -1, camp
    )
    _sessions(world, rng, who, t0, ch, camp, rec)


def _sessions(world: World, rng: np.random.Generator, who: np.ndarray, t0: np.ndarray,
              ch: np.ndarray, camp: np.ndarray, rec: _Records) -> None:  # fmt: skip
    """Web sessions: pages (stage mix by intent), gated downloads, late-stage requests."""
    A = world.arr
    n = len(who)
    if n == 0:
        return
    intent = A["intent"][who]
    persona = A["persona"][who]
    evaluating = (t0 >= A["b_start"][who]) & (t0 < A["b_end"][who])
    device = (A["dev2"][who] & (t0 > A["t_id"][who]) & (rng.random(n) < 0.35)).astype(np.int8)
    t_known = np.where(device == 1, A["t_dev2"][who], A["t_id"][who])
    known = t0 >= t_known

    pages = 1 + np.minimum(rng.poisson(0.6 + 2.2 * intent), 7)
    s = np.repeat(np.arange(n), pages)
    total = len(s)
    first = np.concatenate(([0], np.cumsum(pages)[:-1]))
    pos = np.arange(total) - first[s]
    gaps = rng.exponential(70.0, total) + 5.0
    gaps[pos == 0] = 0.0
    cum = np.cumsum(gaps)
    t = t0[s] + cum - cum[first][s]

    late = np.clip(0.02 + 0.3 * intent**1.5 * np.where(evaluating, 2.0, 0.6), 0, 0.6)
    middle = 0.2 + 0.25 * intent
    late = np.select([persona == 3, persona == 1], [0.35, 0.01], late)
    middle = np.select([persona == 3, persona == 1], [0.3, 0.1], middle)
    u = rng.random(total)
    stage = np.where(u < late[s], 2, np.where(u < late[s] + middle[s], 1, 0))
    pick = rng.integers(0, 1 << 30, total)
    content = np.select(
        [stage == 2, stage == 1],
        [LATE[pick % len(LATE)], MIDDLE[pick % len(MIDDLE)]],
        EARLY[pick % len(EARLY)],
    )
    own_case = (stage == 1) & (rng.random(total) < 0.35)
    content = np.where(own_case, CASE_STUDIES[A["industry"][who][s]], content)
    careers = rng.random(total) < A["careers"][who][s]
    content = np.where(careers, CAREERS[pick % len(CAREERS)], content)
    previous = np.roll(content, 1)
    previous[pos == 0] = -1
    landing = pos == 0
    rec.add(
        t,
        who[s],
        K_PAGE,
        a=content,
        b=previous,
        ch=np.where(landing, ch[s], -1),
        camp=np.where(landing, camp[s], -1),
        r=pick % 64,
        dev=device[s],
    )
    download = (t >= t_known[s]) & GATED[content] & (rng.random(total) < 0.5)
    rec.add(t[download] + 15, who[s][download], K_DOWNLOAD, a=content[download],
            dev=device[s][download])  # fmt: skip

    q = (0.002 + 0.08 * intent**2 * np.where(evaluating, 3.0, 1.0)) * (persona == 0)
    ask = known & (rng.random(n) < q)
    if ask.any():
        last = first + pages - 1
        end = t[last][ask] + 30
        kind = rng.choice(len(C.REQUESTS), size=int(ask.sum()), p=C.REQUEST_WEIGHTS)
        rec.add(end, who[ask], K_PAGE, a=REQUEST_PAGES[kind], b=content[last][ask],
                dev=device[ask])  # fmt: skip
        rec.add(end + 40, who[ask], K_REQUEST, a=kind, dev=device[ask])


def _send(world: World, rng: np.random.Generator, index: int, unsubscribed: np.ndarray,
          bounced: np.ndarray, rec: _Records) -> None:  # fmt: skip
    A = world.arr
    send = world.sends[index]
    at = float(send.at)
    to = np.flatnonzero(A["consent"] & (A["t_id"] < at) & ~unsubscribed & ~bounced)
    if len(to) == 0:
        return
    sent = at + np.arange(len(to)) % 900  # a mailing goes out over a quarter of an hour
    rec.add(sent, to, K_SENT, a=index)
    hard = A["bounce"][to]
    bounced[to[hard]] = True
    rec.add(sent[hard] + 60, to[hard], K_BOUNCE, a=index, b=1)
    to, sent = to[~hard], sent[~hard]
    soft = rng.random(len(to)) < 0.01
    rec.add(sent[soft] + 60, to[soft], K_BOUNCE, a=index, b=0)
    to = to[~soft]
    leaving = to[A["t_unsub"][to] <= at]
    unsubscribed[leaving] = True
    rec.add(at + rng.uniform(3600, 20 * 3600, len(leaving)), leaving, K_UNSUB, a=index)
    to = to[A["t_unsub"][to] > at]
    evaluating = (at >= A["b_start"][to]) & (at < A["b_end"][to])
    opened = to[rng.random(len(to)) < A["p_open"][to] * np.where(evaluating, 1.5, 1.0)]
    t_open = at + 60 + rng.exponential(4 * 3600, len(opened))
    rec.add(t_open, opened, K_OPEN, a=index)
    clicked = rng.random(len(opened)) < A["p_click"][opened]
    who = opened[clicked]
    t_click = t_open[clicked] + 20
    rec.add(t_click, who, K_CLICK, a=index)
    if send.kind == "webinar_invite":
        w = world.webinars[send.ref]
        p_reg = 0.02 + 0.25 * A["intent"][to] ** 1.2
        reg = to[(rng.random(len(to)) < p_reg) & (A["persona"][to] != 4)]
        t_reg = np.minimum(at + rng.uniform(3600, 13 * DAY, len(reg)), w.at - 600)
        rec.add(t_reg, reg, K_PAGE, a=WEBINAR_PAGE, ch=C.CH["email"], camp=send.campaign)
        rec.add(t_reg + 30, reg, K_WEB_REG, a=send.ref)
        came = reg[rng.random(len(reg)) < 0.45 + 0.35 * A["intent"][reg]]
        rec.add(w.at + rng.uniform(0, 900, len(came)), came, K_WEB_ATT, a=send.ref)
    elif send.kind == "tradeshow_invite":
        show = world.shows[send.ref]
        went = to[rng.random(len(to)) < 0.01 + 0.15 * A["intent"][to]]
        rec.add(show.day * DAY + rng.uniform(3600, 9 * 3600, len(went)), went, K_SHOW,
                a=send.ref)  # fmt: skip
    else:
        n = len(who)
        _sessions(world, rng, who, t_click + 3, np.full(n, C.CH["email"]),
                  np.full(n, send.campaign), rec)  # fmt: skip


# --- rendering ----------------------------------------------------------------------------
class Renderer:
    """Turns one day's records into Segment message dicts (ids numbered in stream order)."""

    def __init__(self, world: World) -> None:
        self.world = world
        cfg = world.config
        self.prefix = f"demo-{cfg.world_id}-"
        self.start = np.datetime64(cfg.start.replace(tzinfo=None), "s")
        self.count = 0
        p = world.people
        self.user_id = p.user_id
        self.anon = (p.anon1, p.anon2)
        self.locale = p.locale
        A = world.arr
        self.t_id = A["t_id"].tolist()
        self.t_dev2 = A["t_dev2"].tolist()
        self.history = A["history"].tolist()
        self.form: list[int] = A["form"].tolist()
        self.form_ref: list[int] = A["form_ref"].tolist()
        self.consent = A["consent"].tolist()
        self.account = A["account"].tolist()
        self.contexts = [{"locale": loc, "library": LIBRARY} for loc in C.LOCALES]
        self.context_of = {loc: self.contexts[i] for i, loc in enumerate(C.LOCALES)}
        self.campaign_ctx = [
            {"name": c.name, "source": c.source, "medium": c.medium} for c in world.campaigns
        ]
        self.utm = [
            f"?utm_source={c.source}&utm_medium={c.medium}&utm_campaign={c.name}"
            for c in world.campaigns
        ]
        self.urls = [C.SITE + c.path for c in C.CONTENT]
        self.group_traits = [a.group_traits() for a in world.accounts]
        self.account_key = [a.key for a in world.accounts]
        self._props_cache: dict[tuple[int, int, int], dict[str, Any]] = {}
        self._ctx_cache: dict[tuple[str, int], dict[str, Any]] = {}

    def form_name(self, person: int) -> str:
        form = self.form[person]
        name = C.FORMS[form][0]
        ref = self.form_ref[person]
        if name == "webinar":
            return f"webinar-{self.world.webinars[ref].slug}"
        if name == "tradeshow":
            return f"tradeshow-{self.world.shows[ref].slug}"
        if name == "whitepaper":
            return "whitepaper-" + C.CONTENT[ref].path.rsplit("/", 1)[1]
        return name

    def referrer(self, ch: int, camp: int, r: int) -> str | None:
        if ch == 0:
            return C.SEARCH_REFERRERS[r % len(C.SEARCH_REFERRERS)]
        if ch == 1:
            source = self.world.campaigns[camp].source if camp >= 0 else "google"
            return dict(C.PAID_SEARCH).get(source, C.PAID_SEARCH[0][1])
        if ch == 2:
            return C.SOCIAL_REFERRERS[0] if camp >= 0 else C.SOCIAL_REFERRERS[r % 4]
        if ch == 6:
            return C.PARTNER_REFERRERS[r % len(C.PARTNER_REFERRERS)]
        return None

    def render(self, day: DayRecords) -> list[tuple[int, dict[str, Any]]]:
        """``(intended channel or -1, message)`` per record; the channel is set on landing
        pages, for checking that ingestion classifies them as the simulator meant."""
        rec = day.records
        stamps = np.datetime_as_string(self.start + rec["t"].astype("timedelta64[s]"), unit="s")
        out: list[tuple[int, dict[str, Any]]] = []
        n0 = self.count
        for i, (ts, t, p, k, a, b, ch, camp, r, dev) in enumerate(
            zip(
                stamps.tolist(),
                rec["t"].tolist(),
                rec["p"].tolist(),
                rec["k"].tolist(),
                rec["a"].tolist(),
                rec["b"].tolist(),
                rec["ch"].tolist(),
                rec["camp"].tolist(),
                rec["r"].tolist(),
                rec["dev"].tolist(),
                strict=True,
            )
        ):
            msg: dict[str, Any] = {"messageId": f"{self.prefix}{n0 + i}", "timestamp": ts + "Z"}
            if k in SERVER_SIDE:
                msg["userId"] = self.user_id[p]
            else:
                if t >= (self.t_dev2[p] if dev else self.t_id[p]):
                    msg["userId"] = self.user_id[p]
                if not (k == K_IDENTIFY and not dev and not self.history[p] and self.form[p] == 6):
                    msg["anonymousId"] = self.anon[dev][p]
            locale = self.locale[p]
            if k == K_PAGE:
                content = C.CONTENT[a]
                url = self.urls[a]
                ctx = dict(self.context_of[locale])
                if ch >= 0:
                    if camp >= 0:
                        ctx["campaign"] = self.campaign_ctx[camp]
                        url += self.utm[camp]
                    ref = self.referrer(ch, camp, r)
                    if ref:
                        ctx["page"] = {"referrer": ref}
                elif b >= 0:
                    ctx["page"] = {"referrer": self.urls[b]}
                msg["type"] = "page"
                msg["name"] = content.title
                msg["properties"] = {"url": url, "path": content.path, "title": content.title}
                msg["context"] = ctx
                out.append((ch, msg))
                continue
            if k == K_IDENTIFY:
                msg["type"] = "identify"
                msg["traits"] = self._traits(p, dev)
                msg["context"] = self.context_of[locale]
            elif k == K_GROUP:
                acct = self.account[p]
                msg["type"] = "group"
                msg["groupId"] = self.account_key[acct]
                msg["traits"] = self.group_traits[acct]
                msg["context"] = self.context_of[locale]
            elif k >= K_SENT:
                msg["type"] = "track"
                msg["event"] = EMAIL_EVENTS[k]
                msg["properties"] = self._email_props(k, a, b)
                msg["context"] = self._email_context(locale, a)
            else:
                msg["type"] = "track"
                msg["context"] = self.context_of[locale]
                self._track(msg, k, a, p)
            out.append((-1, msg))
        self.count += len(out)
        return out

    def _traits(self, p: int, dev: int) -> dict[str, Any]:
        people = self.world.people
        if dev:
            return {"email": people.email[p]}
        form = self.form_name(p)
        traits: dict[str, Any] = {
            "email": people.email[p],
            "firstName": people.first[p],
            "lastName": people.last[p],
            "title": people.title[p],
            "phone": people.phone[p],
            "source": "tradeshow"
            if form.startswith("tradeshow")
            else "webinar"
            if form.startswith("webinar")
            else "website",
            "consent": {
                "status": "granted" if self.consent[p] else "denied",
                "method": f"form:{form}",
            },
        }
        company = people.company[p]
        if company:
            traits["company"] = {"name": company}
        persona = people.persona[p]
        if persona == 1:
            traits["school"] = C.UNIVERSITIES[p % len(C.UNIVERSITIES)]
        return traits

    def _track(self, msg: dict[str, Any], k: int, a: int, p: int) -> None:
        world = self.world
        if k == K_FORM:
            msg["event"] = "form_submit"
            props = {"form": self.form_name(p)}
            if self.form[p] != C.FORM["tradeshow"]:
                props["path"] = C.CONTENT[a_page(self.form[p], self.form_ref[p])].path
            msg["properties"] = props
        elif k == K_DOWNLOAD:
            content = C.CONTENT[a]
            msg["event"] = "content_download"
            msg["properties"] = {
                "asset": content.path.rsplit("/", 1)[-1],
                "asset_type": content.asset_type,
                "title": content.title,
            }
        elif k == K_REQUEST:
            name, path = C.REQUESTS[a]
            msg["event"] = name
            msg["properties"] = {"path": path}
        elif k in (K_WEB_REG, K_WEB_ATT):
            w = world.webinars[a]
            msg["event"] = "webinar_registered" if k == K_WEB_REG else "webinar_attended"
            msg["properties"] = {"webinar": w.slug, "title": w.title}
        elif k == K_SHOW:
            show = world.shows[a]
            msg["event"] = "event_attended"
            msg["properties"] = {"event": show.slug, "name": show.name, "kind": "trade_show"}

    def _email_props(self, k: int, a: int, b: int) -> dict[str, Any]:
        """Shared per (event, mailing): treat messages as read-only."""
        key = (k, a, b)
        props = self._props_cache.get(key)
        if props is None:
            send = self.world.sends[a]
            name = self.world.campaigns[send.campaign].name
            props = {"campaign": name, "email_id": name, "subject": send.subject}
            if k == K_BOUNCE:
                props["bounce_type"] = "hard" if b == 1 else "soft"
            elif k == K_CLICK:
                props["url"] = C.SITE + "/"
            self._props_cache[key] = props
        return props

    def _email_context(self, locale: str, a: int) -> dict[str, Any]:
        key = (locale, a)
        ctx = self._ctx_cache.get(key)
        if ctx is None:
            campaign = self.campaign_ctx[self.world.sends[a].campaign]
            ctx = {**self.context_of[locale], "campaign": campaign}
            self._ctx_cache[key] = ctx
        return ctx


EMAIL_EVENTS = {
    K_SENT: "email_sent",
    K_OPEN: "email_open",
    K_CLICK: "email_click",
    K_UNSUB: "email_unsubscribe",
    K_BOUNCE: "email_bounce",
}


def a_page(form: int, ref: int) -> int:
    """The page a form sits on."""
    if form == C.FORM["whitepaper"]:
        return ref
    return int(FORM_PAGES[form])


def iter_tagged(world: World) -> Iterator[tuple[int, dict[str, Any]]]:
    """Every message with the channel the simulator meant (-1 when not a landing page)."""
    renderer = Renderer(world)
    for day in iter_day_records(world):
        yield from renderer.render(day)


def iter_messages(world: World) -> Iterator[dict[str, Any]]:
    """The world's Segment messages in time order."""
    for _, msg in iter_tagged(world):
        yield msg


def iter_days(world: World) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """The messages grouped by simulated day: ``(day index, messages)``."""
    renderer = Renderer(world)
    for day in iter_day_records(world):
        yield day.day, [m for _, m in renderer.render(day)]
