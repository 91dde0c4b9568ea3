"""The demo world's cast: accounts, buying committees, people, campaigns, schedules.

Everything is a pure function of :class:`WorldConfig` (the seed, the size, the period):
:func:`build_world` draws it with NumPy generators seeded from the config and never reads
the clock, so the same config always gives the same world and the same message stream.

Simulator truth that scoring must never read: each account's hidden *true intent*
(0..1) drives how much its people browse, what they read and whether they ask for a demo
or a quote. It is sent in the ``group`` call's traits as ``demo_true_intent`` only so that
later work can check scores against it.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from leadflow.sim import catalog as C

# A fixed end of history, so that worlds (and tests) do not change with the calendar.
DEFAULT_UNTIL = datetime(2025, 1, 1, tzinfo=UTC)
DEFAULT_LEADS = 2000
DEFAULT_MONTHS = 12
MAX_LEADS = 10_000_000
MAX_MONTHS = 120
DAY = 86_400
INF = math.inf


@dataclass(frozen=True, slots=True)
class WorldConfig:
    """What a world is drawn from. ``leads`` is the number of people who identify."""

    leads: int = DEFAULT_LEADS
    months: int = DEFAULT_MONTHS
    seed: int = 1
    until: datetime = DEFAULT_UNTIL

    def __post_init__(self) -> None:
        if isinstance(self.leads, bool) or not isinstance(self.leads, int):
            raise ValueError("leads: expected a whole number")
        if not 1 <= self.leads <= MAX_LEADS:
            raise ValueError(f"leads: must be between 1 and {MAX_LEADS:,}, got {self.leads:,}")
        if isinstance(self.months, bool) or not isinstance(self.months, int):
            raise ValueError("months: expected a whole number")
        if not 1 <= self.months <= MAX_MONTHS:
            raise ValueError(f"months: must be between 1 and {MAX_MONTHS}, got {self.months}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError("seed: expected a whole number >= 0")
        if self.seed >= 2**63:
            raise ValueError("seed: must be below 2**63")
        if self.until.tzinfo is None:
            raise ValueError("until: expected a time zone-aware date-time")
        if not datetime(2000, 1, 1, tzinfo=UTC) <= self.until <= datetime(2100, 1, 1, tzinfo=UTC):
            raise ValueError("until: must be between 2000-01-01 and 2100-01-01")

    @property
    def days(self) -> int:
        return max(1, round(self.months * 30.4375))

    @property
    def start(self) -> datetime:
        return self.until.astimezone(UTC) - timedelta(days=self.days)

    @property
    def world_id(self) -> str:
        """Prefix of every id in the world: the seed plus a digest of the other settings,
        so a world loaded twice is the same rows and two different worlds never collide."""
        text = f"{self.seed}|{self.leads}|{self.months}|{self.until.astimezone(UTC).isoformat()}"
        return f"{self.seed}-{hashlib.sha256(text.encode()).hexdigest()[:6]}"


@dataclass(frozen=True, slots=True)
class Account:
    index: int
    key: str  # the Segment groupId
    name: str
    domain: str
    industry: int  # index into catalog.INDUSTRIES
    employees: int
    band: str
    country: str
    is_target: bool
    intent: float
    kind: str  # "prospect" | "competitor"
    members: tuple[int, ...]  # person indexes, the buying committee
    buying_start: float  # seconds from the world's start; inf when not evaluating
    buying_end: float

    def group_traits(self) -> dict[str, object]:
        return {
            "name": self.name,
            "domain": self.domain,
            "industry": C.INDUSTRIES[self.industry],
            "employees": self.employees,
            "employee_band": self.band,
            "country": self.country,
            "target_account": self.is_target,
            "demo_true_intent": round(self.intent, 4),
        }


@dataclass(frozen=True, slots=True)
class Campaign:
    name: str
    channel: int
    source: str
    medium: str


@dataclass(frozen=True, slots=True)
class EmailSend:
    day: int
    at: int  # seconds from the world's start
    campaign: int  # index into World.campaigns
    kind: str  # newsletter | nurture | webinar_invite | tradeshow_invite
    subject: str
    ref: int = -1  # webinar or trade-show index for invitations


@dataclass(frozen=True, slots=True)
class Webinar:
    slug: str
    title: str
    at: int  # seconds from the world's start


@dataclass(frozen=True, slots=True)
class TradeShow:
    slug: str
    name: str
    day: int


@dataclass(slots=True)
class People:
    """One row per person (identified or not), as parallel arrays and lists."""

    user_id: list[str] = field(default_factory=list)
    anon1: list[str] = field(default_factory=list)
    anon2: list[str] = field(default_factory=list)
    first: list[str] = field(default_factory=list)
    last: list[str] = field(default_factory=list)
    email: list[str] = field(default_factory=list)
    title: list[str] = field(default_factory=list)
    phone: list[str] = field(default_factory=list)
    locale: list[str] = field(default_factory=list)
    company: list[str | None] = field(default_factory=list)
    persona: list[int] = field(default_factory=list)
    role: list[int] = field(default_factory=list)
    account: list[int] = field(default_factory=list)
    identified: list[bool] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.user_id)


@dataclass(slots=True)
class World:
    config: WorldConfig
    accounts: list[Account]
    people: People
    campaigns: list[Campaign]
    sends: list[EmailSend]
    webinars: list[Webinar]
    shows: list[TradeShow]
    # Per-person numbers (length = number of people); times in seconds from the start.
    arr: dict[str, np.ndarray]
    # campaign_for[channel, day]: the campaign a landing on that day carries (-1: none).
    campaign_for: np.ndarray

    @property
    def lead_count(self) -> int:
        return int(np.count_nonzero(self.arr["identified"]))

    @property
    def people_count(self) -> int:
        return len(self.people)


# --- building -------------------------------------------------------------------------
def build_world(config: WorldConfig) -> World:
    rng = np.random.default_rng([config.seed, 0xC0FFEE])
    wid = config.world_id
    webinars, shows = _events(config)
    campaigns, campaign_for = _campaigns(config, webinars, shows)
    sends = _sends(config, campaigns, webinars, shows)
    accounts, people = _cast(config, rng, wid)
    arr = _timelines(config, rng, accounts, people, webinars, shows)
    return World(config, accounts, people, campaigns, sends, webinars, shows, arr, campaign_for)


def _events(config: WorldConfig) -> tuple[list[Webinar], list[TradeShow]]:
    start = config.start
    webinars = []
    for i, day in enumerate(range(18, config.days - 2, 30)):
        topic = C.WEBINAR_TOPICS[i % len(C.WEBINAR_TOPICS)]
        when = start + timedelta(days=day)
        slug = f"{when:%Y-%m}-{i % len(C.WEBINAR_TOPICS) + 1}"
        # 14:00 KST = 05:00 UTC
        at = day * DAY + 5 * 3600
        webinars.append(Webinar(slug=slug, title=topic, at=at))
    shows = []
    for i, day in enumerate(range(40, config.days - 1, 91)):
        slug, name = C.TRADE_SHOWS[i % len(C.TRADE_SHOWS)]
        year = (start + timedelta(days=day)).year
        shows.append(TradeShow(slug=f"{slug}-{year}", name=f"{name} {year}", day=day))
    return webinars, shows


def _campaigns(
    config: WorldConfig, webinars: list[Webinar], shows: list[TradeShow]
) -> tuple[list[Campaign], np.ndarray]:
    days = config.days
    start = config.start
    campaigns: list[Campaign] = []
    table = np.full((len(C.CHANNELS), days), -1, dtype=np.int32)

    def add(c: Campaign, first: int, last: int) -> None:
        campaigns.append(c)
        table[c.channel, max(0, first) : max(0, min(days, last))] = len(campaigns) - 1

    ch = C.CH
    add(Campaign("brand-always-on", ch["paid_search"], "google", "cpc"), 0, days)
    for q0 in range(0, days, 91):
        when = start + timedelta(days=q0)
        quarter = (when.month - 1) // 3 + 1
        source = "naver" if (q0 // 91) % 2 else "google"
        add(
            Campaign(
                f"sa-{when.year}q{quarter}-marketing-automation", ch["paid_search"], source, "cpc"
            ),
            q0 + 10,
            q0 + 80,
        )
    add(Campaign("linkedin-always-on", ch["social"], "linkedin", "social"), 0, days)
    for m0 in range(0, days, 61):
        when = start + timedelta(days=m0)
        add(
            Campaign(
                f"li-{when:%Y-%m}-abm-decision-makers", ch["social"], "linkedin", "paid_social"
            ),
            m0 + 5,
            m0 + 40,
        )
    add(Campaign("partner-program", ch["referral"], "partner", "referral"), 0, days)
    add(Campaign("booth-qr", ch["events"], "booth", "event"), 0, days)
    for s in shows:
        add(Campaign(f"tradeshow-{s.slug}", ch["events"], s.slug, "event"), s.day - 7, s.day + 30)
    add(Campaign("webinar-on-demand", ch["webinar"], "on24", "webinar"), 0, days)
    for w in webinars:
        d = w.at // DAY
        add(Campaign(f"webinar-{w.slug}", ch["webinar"], "zoom", "webinar"), d - 21, d + 14)
    return campaigns, table


def _sends(
    config: WorldConfig,
    campaigns: list[Campaign],
    webinars: list[Webinar],
    shows: list[TradeShow],
) -> list[EmailSend]:
    start = config.start
    sends: list[EmailSend] = []

    def add(day: int, kind: str, name: str, subject: str, ref: int = -1) -> None:
        if not 0 <= day < config.days:
            return
        campaigns.append(Campaign(name, C.CH["email"], kind, "email"))
        # 10:00 KST = 01:00 UTC
        sends.append(EmailSend(day, day * DAY + 3600, len(campaigns) - 1, kind, subject, ref))

    for day in range(5, config.days, 21):
        add(
            day,
            "newsletter",
            f"newsletter-{start + timedelta(days=day):%Y-%m-%d}",
            "AcmeCloud 소식",
        )
    for day in range(12, config.days, 28):
        add(day, "nurture", f"nurture-{start + timedelta(days=day):%Y-%m-%d}", "리드 관리 가이드")
    for i, w in enumerate(webinars):
        d = w.at // DAY - 14
        add(d, "webinar_invite", f"invite-webinar-{w.slug}", f"[웨비나] {w.title}", i)
    for i, s in enumerate(shows):
        add(s.day - 10, "tradeshow_invite", f"invite-{s.slug}", f"{s.name} 초대", i)
    sends.sort(key=lambda s: (s.at, s.campaign))
    return sends


def _slug(text: str) -> str:
    return "-".join("".join(ch if ch.isalnum() else " " for ch in text.lower()).split())


def _cast(config: WorldConfig, rng: np.random.Generator, wid: str) -> tuple[list[Account], People]:
    """Accounts with buying committees, plus dead-end individuals; exactly ``leads`` of all
    these people identify."""
    n_leads = config.leads
    n_dead = round(n_leads * C.DEAD_END_SHARE) if n_leads >= 20 else 0
    n_members = n_leads - n_dead
    people = People()
    accounts: list[Account] = []
    used_names: set[str] = set()
    used_emails: set[str] = set()
    span = config.days * DAY

    def new_person(
        account: int, persona: int, role: int, identified: bool, country: str, domain: str | None
    ) -> None:
        p = len(people)
        people.user_id.append(f"{wid}-u{p}")
        people.anon1.append(f"{wid}-a{p}")
        people.anon2.append(f"{wid}-b{p}")
        first, last, local = _name(rng, country, persona)
        if domain is None:
            domain = C.FREE_MAIL[int(rng.integers(len(C.FREE_MAIL)))]
        email = f"{local}@{domain}"
        n = 2
        while email in used_emails:
            email = f"{local}{n}@{domain}"
            n += 1
        used_emails.add(email)
        people.first.append(first)
        people.last.append(last)
        people.email.append(email)
        people.title.append(_title(rng, country, role, persona))
        people.phone.append(_phone(rng, country, persona))
        people.locale.append(C.LOCALES[C.COUNTRIES.index(country)])
        people.company.append(None)
        people.persona.append(persona)
        people.role.append(role)
        people.account.append(account)
        people.identified.append(identified)

    def new_account(kind: str, name: str, domain: str, industry: int, employees: int, band: str,
                    country: str, intent: float, members: list[int]) -> None:  # fmt: skip
        is_target = (
            kind == "prospect"
            and industry in C.ICP_INDUSTRIES
            and employees >= C.ICP_MIN_EMPLOYEES
            and country in ("KR", "JP")
        )
        b_start, b_end = INF, INF
        if kind == "prospect" and rng.random() < intent**0.8:
            length = float(rng.uniform(30, 120)) * DAY
            b_start = float(rng.uniform(0, max(DAY, span - 10 * DAY)))
            b_end = b_start + length
        accounts.append(
            Account(
                index=len(accounts),
                key=f"{wid}-acc{len(accounts)}",
                name=name,
                domain=domain,
                industry=industry,
                employees=employees,
                band=band,
                country=country,
                is_target=is_target,
                intent=intent,
                kind=kind,
                members=tuple(members),
                buying_start=b_start,
                buying_end=b_end,
            )
        )

    # Competitors first (their people are dead-end material).
    dead_kinds = rng.choice(4, size=n_dead, p=C.DEAD_END_MIX) if n_dead else np.zeros(0, int)
    n_competitor = int(np.count_nonzero(dead_kinds == 2))
    for ci, (cname, cdomain) in enumerate(C.COMPETITORS):
        share = [i for i in range(n_competitor) if i % len(C.COMPETITORS) == ci]
        if not share:
            continue
        members = []
        for _ in share:
            members.append(len(people))
            new_person(len(accounts), 3, int(rng.integers(1, 4)), True, "KR", cdomain)
            people.company[-1] = cname
        used_names.add(cname)
        new_account("competitor", cname, cdomain, 5, 120, "51-200", "KR", 0.3, members)

    # Prospect accounts and their committees, until exactly n_members identify.
    identified_so_far = 0
    while identified_so_far < n_members:
        country = C.COUNTRIES[int(rng.choice(len(C.COUNTRIES), p=C.COUNTRY_WEIGHTS))]
        industry = int(rng.choice(len(C.INDUSTRIES), p=C.INDUSTRY_WEIGHTS))
        band_i = int(rng.choice(len(C.EMPLOYEE_BANDS), p=C.BAND_WEIGHTS))
        band, lo, hi = C.EMPLOYEE_BANDS[band_i]
        employees = int(rng.integers(lo, hi + 1))
        name = _company_name(rng, country, industry, used_names)
        domain = _slug(name) + ".example"
        fit = industry in C.ICP_INDUSTRIES and employees >= C.ICP_MIN_EMPLOYEES
        intent = float(rng.beta(1.6, 2.0) if fit else rng.beta(0.9, 2.8))
        size = int(np.clip(2 + rng.binomial(8, 0.15 + 0.07 * band_i), 2, 10))
        empty = rng.random() < 0.1
        if empty:
            n_ident = 0
        else:
            n_ident = int(np.clip(rng.binomial(size, 0.45 + 0.4 * intent), 1, size))
            n_ident = min(n_ident, n_members - identified_so_far)
        identified_so_far += n_ident
        roles = [0, 1] + [int(r) for r in rng.choice([2, 3, 4], size=size - 2, p=[0.4, 0.4, 0.2])]
        # Champions and decision makers identify first: they fill in the forms.
        order = [1, 0, *range(2, size)]
        ident_set = set(order[:n_ident])
        members = []
        free_mail = rng.random(size) < 0.08
        for j in range(size):
            members.append(len(people))
            new_person(len(accounts), 0, roles[j], j in ident_set, country,
                       None if free_mail[j] else domain)  # fmt: skip
            people.company[-1] = name
        new_account("prospect", name, domain, industry, employees, band, country, intent, members)

    # Students, retirees, junk: no account.
    for kind in dead_kinds:
        if kind == 2:
            continue
        persona = int(kind) + 1
        junk_domain = C.JUNK_DOMAINS[int(rng.integers(3))] if persona == 4 else None
        new_person(-1, persona, 3, True, "KR", junk_domain)
    return accounts, people


def _name(rng: np.random.Generator, country: str, persona: int) -> tuple[str, str, str]:
    if persona == 4:
        first, last = C.JUNK_NAMES[int(rng.integers(len(C.JUNK_NAMES)))]
        return first, last, f"{'test' if first.isascii() else 'x'}{int(rng.integers(1000))}"
    if country == "KR":
        sur, sur_r = C.KO_SURNAMES[int(rng.integers(len(C.KO_SURNAMES)))]
        giv, giv_r = C.KO_GIVEN[int(rng.integers(len(C.KO_GIVEN)))]
        return giv, sur, f"{giv_r}.{sur_r}"
    if country == "JP":
        sur, sur_r = C.JP_SURNAMES[int(rng.integers(len(C.JP_SURNAMES)))]
        giv, giv_r = C.JP_GIVEN[int(rng.integers(len(C.JP_GIVEN)))]
        return giv, sur, f"{giv_r}.{sur_r}"
    first = C.EN_FIRST[int(rng.integers(len(C.EN_FIRST)))]
    last = C.EN_LAST[int(rng.integers(len(C.EN_LAST)))]
    return first, last, f"{first.lower()}.{last.lower()}"


def _title(rng: np.random.Generator, country: str, role: int, persona: int) -> str:
    if persona == 1:
        return "학생" if rng.random() < 0.7 else "Student"
    if persona == 2:
        return "은퇴" if rng.random() < 0.6 else "Retired"
    if persona == 4:
        return ("-", "x", "asdf", "없음")[int(rng.integers(4))]
    titles = C.TITLES_KO[role] if country == "KR" and rng.random() < 0.85 else C.TITLES_EN[role]
    return titles[int(rng.integers(len(titles)))]


def _phone(rng: np.random.Generator, country: str, persona: int) -> str:
    if persona == 4:
        return "000-0000-0000"
    if country == "KR":
        return f"010-{int(rng.integers(2000, 9999))}-{int(rng.integers(1000, 9999))}"
    cc, area, line = rng.integers(10, 99), rng.integers(100, 999), rng.integers(1000, 9999)
    return f"+{cc} {area} {line}"


def _company_name(rng: np.random.Generator, country: str, industry: int, used: set[str]) -> str:
    stems = C.COMPANY_STEMS[country]
    suffixes = C.INDUSTRY_SUFFIXES[industry]
    base = f"{stems[int(rng.integers(len(stems)))]} {suffixes[int(rng.integers(len(suffixes)))]}"
    name, n = base, 2
    while name in used:
        name = f"{base} {n}"
        n += 1
    used.add(name)
    return name


def _timelines(
    config: WorldConfig,
    rng: np.random.Generator,
    accounts: list[Account],
    people: People,
    webinars: list[Webinar],
    shows: list[TradeShow],
) -> dict[str, np.ndarray]:
    """When each person first visits, identifies, uses a second device, unsubscribes."""
    n = len(people)
    span = float(config.days * DAY)
    persona = np.asarray(people.persona, dtype=np.int8)
    role = np.asarray(people.role, dtype=np.int8)
    acct = np.asarray(people.account, dtype=np.int32)
    identified = np.asarray(people.identified, dtype=bool)
    acct_intent = np.array([a.intent for a in accounts] + [0.0])
    intent = np.where(acct >= 0, acct_intent[acct], 0.0)
    intent = np.select([persona == 1, persona == 2, persona == 4], [0.05, 0.05, 0.02], intent)
    activity = rng.lognormal(0.0, 0.5, n) * np.asarray(C.ROLE_ACTIVITY)[role]
    careers = np.where(persona == 1, 0.25, np.where(rng.random(n) < 0.03, 0.08, 0.003))

    # How each identified person first gives their details.
    base = np.array([0.22, 0.25, 0.17, 0.08, 0.05, 0.05, 0.18])
    hot = np.array([0, 0, 0, 1, 1, 1, 0], dtype=bool)
    weights = np.where(hot[None, :], base[None, :] * (0.3 + 3 * intent[:, None]), base[None, :])
    weights[persona != 0] = np.array([0.4, 0.35, 0.25, 0, 0, 0, 0])
    if not webinars:
        weights[:, C.FORM["webinar"]] = 0
    if not shows:
        weights[:, C.FORM["tradeshow"]] = 0
    weights /= weights.sum(axis=1, keepdims=True)
    u = rng.random(n)
    form = (u[:, None] > np.cumsum(weights, axis=1)).sum(axis=1).clip(0, 6).astype(np.int8)
    form_ref = np.full(n, -1, dtype=np.int32)

    t_id = rng.uniform(0.02, 0.97, n) * span
    w_pick = rng.integers(0, max(1, len(webinars)), n)
    s_pick = rng.integers(0, max(1, len(shows)), n)
    is_web = form == C.FORM["webinar"]
    if webinars:
        w_at = np.array([w.at for w in webinars], dtype=float)
        t_id = np.where(is_web, w_at[w_pick] - rng.uniform(1, 14, n) * DAY, t_id)
        form_ref = np.where(is_web, w_pick, form_ref)
    is_show = form == C.FORM["tradeshow"]
    if shows:
        s_at = np.array([s.day * DAY for s in shows], dtype=float)
        t_id = np.where(is_show, s_at[s_pick] + rng.uniform(3600, 9 * 3600, n), t_id)
        form_ref = np.where(is_show, s_pick, form_ref)
    t_id = np.clip(t_id, 600.0, span - 600.0)
    is_paper = form == C.FORM["whitepaper"]
    papers = np.array([i for i, c in enumerate(C.CONTENT) if c.asset_type == "white_paper"])
    form_ref = np.where(is_paper, papers[rng.integers(0, len(papers), n)], form_ref)

    history = (rng.random(n) < 0.7) & ~is_show
    t_first = np.where(history, t_id - rng.uniform(2, 75, n) * DAY, t_id - 60.0)
    t_first = np.maximum(t_first, 0.0)
    t_last = np.full(n, INF)
    # People who never identify: browse for a while, anonymously.
    anon_first = rng.uniform(0.0, 0.97, n) * span
    t_first = np.where(identified, t_first, anon_first)
    t_last = np.where(identified, t_last, anon_first + rng.uniform(1, 90, n) * DAY)
    t_id = np.where(identified, t_id, INF)

    dev2 = identified & (rng.random(n) < 0.15)
    t_dev2 = np.where(dev2, t_id + rng.uniform(5, 60, n) * DAY, INF)
    dev2 &= t_dev2 < span - 600
    t_dev2 = np.where(dev2, t_dev2, INF)

    consent = identified & ((rng.random(n) < 0.94) | is_show)
    t_unsub = np.where(consent & (rng.random(n) < 0.05), t_id + rng.uniform(10, 200, n) * DAY, INF)
    bounce = identified & ((persona == 4) | (rng.random(n) < 0.015))
    p_open = np.clip(0.08 + 0.5 * intent * np.minimum(activity, 2.0) / 2.0, 0, 0.8)
    p_open = np.where(persona == 0, p_open, 0.05)
    p_click = np.clip(0.12 + 0.4 * intent, 0, 0.6)
    rate = 0.028 * activity * (0.15 + 1.9 * intent)
    rate = np.where(persona == 3, 0.05, rate)
    acq = rng.choice(len(C.CHANNELS), size=n, p=C.ACQUISITION_CHANNEL_WEIGHTS).astype(np.int8)
    acq = np.where(is_web, C.CH["webinar"], acq)
    acq = np.where(is_show, C.CH["events"], acq).astype(np.int8)
    b_start = np.array([a.buying_start for a in accounts] + [INF])[acct]
    b_end = np.array([a.buying_end for a in accounts] + [INF])[acct]
    industry = np.array([a.industry for a in accounts] + [0])[acct]
    return {
        "persona": persona,
        "role": role,
        "account": acct,
        "industry": industry,
        "identified": identified,
        "intent": intent,
        "activity": activity,
        "careers": careers,
        "form": form,
        "form_ref": form_ref,
        "acq": acq,
        "t_first": t_first,
        "t_last": t_last,
        "t_id": t_id,
        "history": history & identified,
        "dev2": dev2,
        "t_dev2": t_dev2,
        "consent": consent,
        "t_unsub": t_unsub,
        "bounce": bounce,
        "p_open": p_open,
        "p_click": p_click,
        "rate": rate,
        "b_start": b_start,
        "b_end": b_end,
    }
