"""Static material of the demo world: names, titles, industries, content, channels.

Plain data only. The simulated vendor sells a B2B marketing-analytics product from the
site :data:`SITE`; every domain in the world ends in ``.example`` (RFC 2606), so no demo
address can ever reach a real mailbox.
"""

from __future__ import annotations

from dataclasses import dataclass

SITE = "https://www.acmecloud.example"

# --- channels ---------------------------------------------------------------------------
CHANNELS = (
    "organic_search",
    "paid_search",
    "social",
    "email",
    "events",
    "webinar",
    "referral",
    "direct",
)
CH = {name: i for i, name in enumerate(CHANNELS)}
# Share of self-started web sessions by channel (e-mail sessions come from e-mail clicks).
SESSION_CHANNEL_WEIGHTS = (0.30, 0.14, 0.10, 0.0, 0.03, 0.03, 0.08, 0.32)
# The channel a person first came through (the page of their identifying form).
ACQUISITION_CHANNEL_WEIGHTS = (0.26, 0.18, 0.14, 0.0, 0.0, 0.12, 0.10, 0.20)

SEARCH_REFERRERS = (
    "https://www.google.com/",
    "https://www.google.co.kr/",
    "https://search.naver.com/search.naver",
    "https://m.search.naver.com/search.naver",
    "https://www.bing.com/",
    "https://search.daum.net/search",
)
PAID_SEARCH = (("google", "https://www.google.com/"), ("naver", "https://search.naver.com/"))
SOCIAL_REFERRERS = (
    "https://www.linkedin.com/",
    "https://www.facebook.com/",
    "https://www.youtube.com/",
    "https://t.co/",
)
PARTNER_REFERRERS = (
    "https://partners.bizsolutions.example/acmecloud",
    "https://www.si-partner.example/solutions/marketing",
    "https://blog.martech-review.example/top-10-tools",
    "https://www.kmarketing-assoc.example/members",
)

# --- industries, sizes, countries -------------------------------------------------------
INDUSTRIES = (
    "Financial Services",
    "Manufacturing",
    "Transport & Logistics",
    "Retail",
    "Healthcare",
    "IT & Software",
    "Public Sector",
    "Education",
)
INDUSTRY_WEIGHTS = (0.14, 0.2, 0.12, 0.13, 0.09, 0.18, 0.07, 0.07)
INDUSTRY_SLUGS = (
    "finance",
    "manufacturing",
    "logistics",
    "retail",
    "healthcare",
    "software",
    "public-sector",
    "education",
)
# The ideal customer profile: these industries, 200 employees or more.
ICP_INDUSTRIES = frozenset({0, 1, 2, 5})
ICP_MIN_EMPLOYEES = 200

EMPLOYEE_BANDS = (
    ("1-10", 1, 10),
    ("11-50", 11, 50),
    ("51-200", 51, 200),
    ("201-1000", 201, 1000),
    ("1001-5000", 1001, 5000),
    ("5000+", 5001, 60000),
)
BAND_WEIGHTS = (0.12, 0.24, 0.26, 0.2, 0.11, 0.07)
COUNTRIES = ("KR", "JP", "US", "DE", "SG")
COUNTRY_WEIGHTS = (0.78, 0.08, 0.07, 0.03, 0.04)
LOCALES = ("ko-KR", "ja-JP", "en-US", "de-DE", "en-SG")

COMPANY_STEMS = {
    "KR": (
        "Hanbit",
        "Daehan",
        "Saehan",
        "Mirae",
        "Samil",
        "Nara",
        "Hanil",
        "Dongbang",
        "Taeyang",
        "Haneul",
        "Pureun",
        "Bitna",
        "Sejong",
        "Gaon",
        "Arum",
        "Doori",
        "Hanul",
        "Jinheung",
        "Seongwoo",
        "Daelim",
        "Kumkang",
        "Yeongjin",
        "Hyosung",
        "Boram",
        "Chorok",
        "Eunha",
        "Geumsan",
        "Hwaseong",
        "Incheon",
        "Jeil",
        "Kukje",
        "Myungjin",
        "Namsan",
        "Ojin",
        "Pyeonghwa",
        "Sambo",
        "Sinsegye",
        "Uri",
        "Woojin",
        "Yuhan",
    ),
    "JP": ("Yamato", "Sakura", "Fujimi", "Asahina", "Kiyomizu", "Hokuto", "Minato", "Tsubasa"),
    "US": ("Northwind", "Bluepeak", "Redwood", "Ironbridge", "Clearwater", "Summit", "Harbor"),
    "DE": ("Rheinwerk", "Nordlicht", "Bergmann", "Elbtal", "Schwarzwald", "Isarwerk"),
    "SG": ("Merlion", "Straits", "Lionsgate", "Marina", "Orchard", "Sentosa"),
}
INDUSTRY_SUFFIXES = (
    ("Capital", "Securities", "Insurance", "Savings Bank", "Card", "Asset Management"),
    ("Industries", "Precision", "Chemical", "Steel", "Motors", "Electronics", "Machinery"),
    ("Logistics", "Shipping", "Express", "Transport", "Air Cargo", "Distribution"),
    ("Retail", "Mart", "Fashion", "Foods", "Department Store", "Commerce"),
    ("Medical", "Pharma", "Hospital", "Bio", "Healthcare", "Diagnostics"),
    ("Soft", "Systems", "Data", "Cloud", "Networks", "Digital", "Labs"),
    ("City Office", "Public Corporation", "Agency", "Authority", "Foundation"),
    ("University", "Academy", "Institute", "Edu", "College"),
)

# --- people -----------------------------------------------------------------------------
ROLES = ("decision_maker", "champion", "influencer", "user", "gatekeeper")
ROLE_ACTIVITY = (0.7, 1.5, 1.0, 0.8, 0.5)  # how much each role browses
TITLES_KO = (
    ("대표이사", "전무이사", "상무", "본부장", "CIO"),
    ("부장", "팀장", "마케팅팀장", "IT기획팀장"),
    ("차장", "과장", "책임연구원", "수석"),
    ("대리", "사원", "주임", "선임연구원"),
    ("구매팀 과장", "구매담당", "총무팀장", "구매팀장"),
)
TITLES_EN = (
    ("CEO", "CTO", "CIO", "VP of Sales", "Managing Director", "COO"),
    ("Head of Marketing", "Marketing Director", "IT Manager", "Head of Digital"),
    ("Senior Engineer", "Solutions Architect", "Product Manager", "Data Lead"),
    ("Marketing Specialist", "Analyst", "Sales Associate", "Engineer"),
    ("Procurement Manager", "Purchasing Officer", "Office Manager", "Buyer"),
)
KO_SURNAMES = (
    ("김", "kim"),
    ("이", "lee"),
    ("박", "park"),
    ("최", "choi"),
    ("정", "jung"),
    ("강", "kang"),
    ("조", "cho"),
    ("윤", "yoon"),
    ("장", "jang"),
    ("임", "lim"),
    ("한", "han"),
    ("오", "oh"),
    ("서", "seo"),
    ("신", "shin"),
    ("권", "kwon"),
    ("황", "hwang"),
    ("안", "ahn"),
    ("송", "song"),
    ("유", "yoo"),
    ("홍", "hong"),
)
KO_GIVEN = (
    ("민준", "minjun"),
    ("서연", "seoyeon"),
    ("지호", "jiho"),
    ("서윤", "seoyun"),
    ("도윤", "doyun"),
    ("지우", "jiwoo"),
    ("하준", "hajun"),
    ("하은", "haeun"),
    ("준서", "junseo"),
    ("수아", "sua"),
    ("현우", "hyunwoo"),
    ("지민", "jimin"),
    ("성민", "sungmin"),
    ("영희", "younghee"),
    ("철수", "cheolsu"),
    ("은지", "eunji"),
    ("동현", "donghyun"),
    ("혜진", "hyejin"),
    ("상훈", "sanghoon"),
    ("미경", "mikyung"),
    ("재원", "jaewon"),
    ("수진", "sujin"),
    ("태호", "taeho"),
    ("유나", "yuna"),
)
JP_SURNAMES = (("佐藤", "sato"), ("鈴木", "suzuki"), ("高橋", "takahashi"), ("田中", "tanaka"))
JP_GIVEN = (("翔", "sho"), ("美咲", "misaki"), ("大輔", "daisuke"), ("陽子", "yoko"))
EN_FIRST = (
    "James",
    "Mary",
    "Daniel",
    "Laura",
    "Michael",
    "Anna",
    "David",
    "Sarah",
    "Thomas",
    "Julia",
    "Wei",
    "Mei",
    "Lukas",
    "Sophie",
)
EN_LAST = (
    "Smith",
    "Johnson",
    "Brown",
    "Miller",
    "Davis",
    "Tan",
    "Lim",
    "Ng",
    "Schmidt",
    "Fischer",
    "Weber",
    "Wagner",
)
FREE_MAIL = ("gmail.com", "naver.com", "daum.net", "hanmail.net", "kakao.com")

# Dead-end material (DOMAIN.md: students, competitors, retirees, invalid data).
PERSONAS = ("member", "student", "retiree", "competitor", "junk")
DEAD_END_SHARE = 0.06
DEAD_END_MIX = (0.4, 0.2, 0.25, 0.15)  # student, retiree, competitor, junk
COMPETITORS = (
    ("RivalSoft", "rivalsoft.example"),
    ("MarketPulse Korea", "marketpulse.example"),
    ("LeadGenius Asia", "leadgenius-asia.example"),
)
UNIVERSITIES = ("한국대학교", "서울과학기술원", "미래대학교", "동방대학교")
JUNK_NAMES = (
    ("test", "test"),
    ("asdf", "asdf"),
    ("ㅁㄴㅇㄹ", "x"),
    ("홍길동", "-"),
    ("aaa", "bbb"),
)
JUNK_DOMAINS = ("test.example", "asdf.example", "none.example")


# --- content ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Content:
    path: str
    title: str
    asset_type: str | None  # blog_post|white_paper|case_study|demo_video|pricing|webinar|trial
    stage: str  # early|middle|late|careers|form
    gated: bool = False


def _content() -> tuple[Content, ...]:
    items = [
        Content("/", "AcmeCloud — B2B 마케팅 자동화", None, "early"),
        Content("/product/analytics", "Product: Revenue Analytics", None, "early"),
        Content("/product/automation", "Product: Marketing Automation", None, "early"),
        Content("/product/integrations", "Product: CRM Integrations", None, "middle"),
        Content("/docs/getting-started", "Docs: Getting started", None, "middle"),
        Content("/docs/api", "Docs: Tracking API", None, "middle"),
    ]
    blogs = (
        ("what-is-mql", "MQL이란 무엇인가"),
        ("lead-scoring-101", "리드 스코어링 입문"),
        ("bant-checklist", "BANT 체크리스트"),
        ("b2b-buying-committee", "B2B 구매위원회 이해하기"),
        ("email-nurture-tips", "이메일 육성 10가지 팁"),
        ("trade-show-follow-up", "전시회 이후 리드 관리"),
        ("abm-guide", "Account-Based Marketing Guide"),
        ("funnel-metrics", "Funnel metrics that matter"),
    )
    items += [Content(f"/blog/{s}", t, "blog_post", "early") for s, t in blogs]
    papers = (
        ("b2b-lead-management", "B2B 리드 관리 백서"),
        ("marketing-roi-2024", "Marketing ROI Report 2024"),
        ("data-privacy-marketing", "개인정보와 마케팅 자동화"),
    )
    items += [
        Content(f"/whitepapers/{s}", t, "white_paper", "middle", gated=True) for s, t in papers
    ]
    items += [
        Content(f"/case-studies/{slug}", f"Case study: {name}", "case_study", "middle", gated=True)
        for slug, name in zip(INDUSTRY_SLUGS, INDUSTRIES, strict=True)
    ]
    items += [
        Content("/webinars", "Webinars", "webinar", "middle"),
        Content("/product/demo-video", "Demo video", "demo_video", "late", gated=True),
        Content("/pricing", "Pricing", "pricing", "late"),
        Content("/pricing/enterprise", "Enterprise pricing", "pricing", "late", gated=True),
        Content("/trial", "Start a free trial", "trial", "late"),
        Content("/careers", "Careers", None, "careers"),
        Content("/careers/openings", "Open positions", None, "careers"),
        # Form pages: where people identify and ask for things.
        Content("/contact", "Contact us", None, "form"),
        Content("/demo", "Request a demo", None, "form"),
        Content("/pricing/quote", "Request a quote", None, "form"),
        Content("/catalogue", "Request the catalogue", None, "form"),
        Content("/newsletter", "Newsletter sign-up", None, "form"),
    ]
    return tuple(items)


CONTENT = _content()
CONTENT_INDEX = {c.path: i for i, c in enumerate(CONTENT)}
STAGE_CONTENT = {
    stage: tuple(i for i, c in enumerate(CONTENT) if c.stage == stage)
    for stage in ("early", "middle", "late", "careers")
}
CASE_STUDY_BY_INDUSTRY = tuple(CONTENT_INDEX[f"/case-studies/{s}"] for s in INDUSTRY_SLUGS)
PRICING_PAGES = frozenset(i for i, c in enumerate(CONTENT) if c.asset_type == "pricing")

# Late-stage requests: (event, form page).
REQUESTS = (
    ("demo_request", "/demo"),
    ("quote_request", "/pricing/quote"),
    ("catalogue_request", "/catalogue"),
    ("contact_request", "/contact"),
    ("trial_signup", "/trial"),
)
REQUEST_WEIGHTS = (0.34, 0.2, 0.18, 0.16, 0.12)
LATE_STAGE_EVENTS = frozenset(name for name, _ in REQUESTS)

# How people first identify: (form name, page path, weight).
FORMS = (
    ("newsletter", "/newsletter"),
    ("whitepaper", "/whitepapers/b2b-lead-management"),
    ("webinar", "/webinars"),
    ("contact", "/contact"),
    ("demo-request", "/demo"),
    ("trial", "/trial"),
    ("tradeshow", ""),
)
FORM = {name: i for i, (name, _) in enumerate(FORMS)}

WEBINAR_TOPICS = (
    "리드 스코어링 실전",
    "MQL에서 SQL까지",
    "ABM 성공 사례",
    "B2B 이메일 육성 전략",
    "마케팅 성과 측정",
    "영업 인계 자동화",
)
TRADE_SHOWS = (
    ("smart-factory-expo", "Smart Factory Expo Seoul"),
    ("fintech-korea", "Fintech Korea"),
    ("logistics-week", "Korea Logistics Week"),
    ("marketing-summit", "Digital Marketing Summit"),
)
