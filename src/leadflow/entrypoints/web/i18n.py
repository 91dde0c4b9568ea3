"""English and Korean for the dashboard: message catalogues and locale formatting.

Catalogues are plain dicts (no compile step); both locales have exactly the same keys (a
test checks it). A missing key shows the key itself, never an error page. Stage names use
the source articles' words (리드획득, 리드 육성, ...) so later pages can use ``stage.<id>``.
"""

from __future__ import annotations

from datetime import UTC, datetime

LOCALES = ("en", "ko")
DEFAULT_LOCALE = "en"

EN: dict[str, str] = {
    "app.name": "leadflow",
    "app.tagline": "B2B lead management",
    # navigation
    "nav.section.overview": "Overview",
    "nav.section.pipeline": "Pipeline",
    "nav.section.admin": "Administration",
    "nav.home": "Home",
    "nav.leads": "Leads",
    "nav.accounts": "Accounts",
    "nav.keys": "API keys",
    "nav.users": "Users",
    # header / session
    "header.language": "Language",
    "header.signout": "Sign out",
    "lang.en": "English",
    "lang.ko": "한국어",
    # roles
    "role.admin": "Admin",
    "role.marketer": "Marketer",
    "role.sales": "Sales rep",
    "role.executive": "Executive",
    # stages (used by the stage pages)
    "stage.anonymous": "Anonymous",
    "stage.lead_acquired": "Lead acquired",
    "stage.nurturing": "Nurturing",
    "stage.mql": "MQL",
    "stage.appointment": "Appointment",
    "stage.opportunity": "Opportunity",
    "stage.won": "Won",
    "stage.recycle_a": "Recycle A",
    "stage.recycle_b": "Recycle B",
    "stage.dead_end": "Dead end",
    # sign-in
    "login.title": "Sign in",
    "login.subtitle": "Sign in to your leadflow workspace.",
    "login.email": "Email",
    "login.password": "Password",
    "login.submit": "Sign in",
    "login.failed": "That email and password do not match an active user.",
    "login.expired": "The sign-in form expired. Please try again.",
    "login.side.title": "Every lead, every touchpoint, one place.",
    "login.side.body": "Track anonymous visits, join them to known people, and hand sales "
    "the full story before the first call.",
    # home
    "home.title": "Home",
    "home.subtitle": "What is happening across your market right now.",
    "home.subtitle.sales": "Your accounts and leads at a glance.",
    "kpi.leads": "Leads",
    "kpi.accounts": "Accounts",
    "kpi.new_leads_30d": "New leads, 30 days",
    "kpi.events_7d": "Events, 7 days",
    "kpi.events_30d": "Events, 30 days",
    "kpi.identified_30d": "Identified visitors, 30 days",
    "kpi.anonymous_30d": "Anonymous visitors, 30 days",
    "kpi.identified_share": "{pct} of visitors identified",
    "chart.leads_by_source": "Leads by source",
    "chart.events_by_channel": "Touchpoints by channel, 30 days",
    "chart.activity": "Activity, last 30 days",
    "chart.events": "Events",
    "chart.empty": "No data yet.",
    "home.recent": "Recently active leads",
    "home.as_of": "Activity windows end at the latest event, {date}.",
    # leads
    "leads.title": "Leads",
    "leads.subtitle": "Everyone who gave contact details, with their account and source.",
    "leads.search": "Search name, email or company",
    "leads.filter.source": "Source",
    "leads.filter.owner": "Owner",
    "leads.filter.account": "Account",
    "leads.filter.any": "Any",
    "leads.filter.apply": "Apply",
    "leads.filter.clear": "Clear",
    "leads.count": "{n} leads",
    "leads.count_more": "More than {n} leads",
    "leads.empty": "No leads match these filters.",
    "leads.next": "Next",
    "leads.first": "First page",
    "col.name": "Name",
    "col.email": "Email",
    "col.title": "Title",
    "col.company": "Company",
    "col.account": "Account",
    "col.source": "Source",
    "col.owner": "Owner",
    "col.created": "Created",
    "col.industry": "Industry",
    "col.employees": "Employees",
    "col.country": "Country",
    "col.domain": "Domain",
    "col.leads": "Leads",
    "col.kind": "Kind",
    "col.prefix": "Prefix",
    "col.status": "Status",
    "col.role": "Role",
    "col.locale": "Language",
    "col.rep_key": "Sales rep key",
    "col.last_login": "Last sign-in",
    "col.actions": "",
    # lead page
    "lead.profile": "Profile",
    "lead.phone": "Phone",
    "lead.consent": "Consent",
    "consent.granted": "Granted",
    "consent.denied": "Denied",
    "consent.unknown": "Unknown",
    "lead.account": "Account",
    "lead.no_account": "Not linked to an account yet.",
    "lead.committee": "Buying committee",
    "lead.committee_empty": "No other people from this account yet.",
    "lead.timeline": "Timeline",
    "lead.timeline_empty": "No touchpoints recorded yet.",
    "lead.timeline_more": "Showing the latest {n} touchpoints.",
    "lead.identities": "Identities",
    "lead.identities_empty": "No linked devices or user ids.",
    "lead.summary": "Touchpoints",
    "lead.first_seen": "First seen",
    "lead.last_seen": "Last seen",
    "lead.erased": "This person's personal data was erased on request.",
    "identity.anonymous": "Device",
    "identity.user": "User id",
    "unnamed": "(no name)",
    # event kinds on the timeline
    "event.page": "Viewed page",
    "event.identify": "Identified",
    "event.group": "Joined account",
    "event.alias": "Linked identity",
    "event.screen": "Viewed screen",
    "event.form_submit": "Submitted a form",
    "event.content_download": "Downloaded content",
    "event.webinar_registered": "Registered for a webinar",
    "event.webinar_attended": "Attended a webinar",
    "event.event_attended": "Attended an event",
    "event.email_sent": "Email sent",
    "event.email_open": "Opened an email",
    "event.email_click": "Clicked an email link",
    "event.email_unsubscribe": "Unsubscribed",
    "event.email_bounce": "Email bounced",
    "event.demo_request": "Requested a demo",
    "event.quote_request": "Requested a quote",
    "event.catalogue_request": "Requested a catalogue",
    "event.contact_request": "Contact request",
    "event.trial_signup": "Started a trial",
    "event.other": "Event",
    "channel": "Channel",
    "campaign": "Campaign",
    # accounts
    "accounts.title": "Accounts",
    "accounts.subtitle": "Companies in your market, their owners and buying committees.",
    "accounts.search": "Search company or domain",
    "accounts.target": "Target account",
    "accounts.empty": "No accounts match.",
    "account.people": "People",
    "account.activity": "Recent activity",
    "account.details": "Details",
    # keys
    "keys.title": "API keys",
    "keys.subtitle": "Write keys send tracking calls to /v1; admin tokens use /api.",
    "keys.create": "Create key",
    "keys.name": "Name",
    "keys.kind.write": "Write key",
    "keys.kind.admin": "Admin token",
    "keys.revoke": "Revoke",
    "keys.revoke_confirm": "Revoke this key? Calls using it will be refused.",
    "keys.active": "Active",
    "keys.revoked": "Revoked {date}",
    "keys.created_once": "Copy this key now: it is shown only once.",
    "keys.empty": "No keys yet.",
    # users
    "users.title": "Users",
    "users.subtitle": "Who can sign in, and what each role may see.",
    "users.create": "Add user",
    "users.password": "Initial password",
    "users.active": "Active",
    "users.inactive": "Deactivated",
    "users.deactivate": "Deactivate",
    "users.activate": "Activate",
    "users.created": "User {email} created.",
    "users.never": "Never",
    # errors
    "error.403.title": "You don't have access to this page",
    "error.403.body": "Your role does not include this page or record. Ask an admin if you "
    "need it.",
    "error.404.title": "Not found",
    "error.404.body": "This page or record does not exist.",
    "error.csrf.title": "This form expired",
    "error.csrf.body": "Reload the page and try again.",
    "error.back": "Back to home",
    "form.error": "Please fix: {msg}",
}

KO: dict[str, str] = {
    "app.name": "leadflow",
    "app.tagline": "B2B 리드 관리",
    "nav.section.overview": "개요",
    "nav.section.pipeline": "파이프라인",
    "nav.section.admin": "관리",
    "nav.home": "홈",
    "nav.leads": "리드",
    "nav.accounts": "고객사",
    "nav.keys": "API 키",
    "nav.users": "사용자",
    "header.language": "언어",
    "header.signout": "로그아웃",
    "lang.en": "English",
    "lang.ko": "한국어",
    "role.admin": "관리자",
    "role.marketer": "마케터",
    "role.sales": "영업 담당자",
    "role.executive": "경영진",
    "stage.anonymous": "익명 방문자",
    "stage.lead_acquired": "리드획득",
    "stage.nurturing": "리드 육성",
    "stage.mql": "유망 리드",
    "stage.appointment": "약속/방문",
    "stage.opportunity": "상담",
    "stage.won": "수주",
    "stage.recycle_a": "리사이클 A",
    "stage.recycle_b": "리사이클 B",
    "stage.dead_end": "육성 대상 외",
    "login.title": "로그인",
    "login.subtitle": "leadflow 워크스페이스에 로그인하세요.",
    "login.email": "이메일",
    "login.password": "비밀번호",
    "login.submit": "로그인",
    "login.failed": "이메일 또는 비밀번호가 활성 사용자와 일치하지 않습니다.",
    "login.expired": "로그인 양식이 만료되었습니다. 다시 시도하세요.",
    "login.side.title": "모든 리드와 모든 접점을 한곳에서.",
    "login.side.body": "익명 방문을 추적하고 실명 고객과 연결하여, 첫 통화 전에 영업팀에 "
    "전체 이력을 전달합니다.",
    "home.title": "홈",
    "home.subtitle": "지금 시장에서 일어나고 있는 일.",
    "home.subtitle.sales": "담당 고객사와 리드를 한눈에.",
    "kpi.leads": "리드",
    "kpi.accounts": "고객사",
    "kpi.new_leads_30d": "신규 리드 (30일)",
    "kpi.events_7d": "이벤트 (7일)",
    "kpi.events_30d": "이벤트 (30일)",
    "kpi.identified_30d": "식별된 방문자 (30일)",
    "kpi.anonymous_30d": "익명 방문자 (30일)",
    "kpi.identified_share": "방문자의 {pct} 식별됨",
    "chart.leads_by_source": "소스별 리드",
    "chart.events_by_channel": "채널별 접점 (30일)",
    "chart.activity": "최근 30일 활동",
    "chart.events": "이벤트",
    "chart.empty": "아직 데이터가 없습니다.",
    "home.recent": "최근 활동한 리드",
    "home.as_of": "활동 기간은 최신 이벤트({date}) 기준입니다.",
    "leads.title": "리드",
    "leads.subtitle": "연락처를 남긴 모든 사람과 그 고객사, 유입 경로.",
    "leads.search": "이름, 이메일, 회사 검색",
    "leads.filter.source": "소스",
    "leads.filter.owner": "담당자",
    "leads.filter.account": "고객사",
    "leads.filter.any": "전체",
    "leads.filter.apply": "적용",
    "leads.filter.clear": "초기화",
    "leads.count": "리드 {n}명",
    "leads.count_more": "리드 {n}명 이상",
    "leads.empty": "조건에 맞는 리드가 없습니다.",
    "leads.next": "다음",
    "leads.first": "첫 페이지",
    "col.name": "이름",
    "col.email": "이메일",
    "col.title": "직함",
    "col.company": "회사",
    "col.account": "고객사",
    "col.source": "소스",
    "col.owner": "담당자",
    "col.created": "생성일",
    "col.industry": "업종",
    "col.employees": "직원 수",
    "col.country": "국가",
    "col.domain": "도메인",
    "col.leads": "리드",
    "col.kind": "종류",
    "col.prefix": "접두어",
    "col.status": "상태",
    "col.role": "역할",
    "col.locale": "언어",
    "col.rep_key": "영업 담당자 키",
    "col.last_login": "마지막 로그인",
    "col.actions": "",
    "lead.profile": "프로필",
    "lead.phone": "전화",
    "lead.consent": "수신 동의",
    "consent.granted": "동의",
    "consent.denied": "거부",
    "consent.unknown": "알 수 없음",
    "lead.account": "고객사",
    "lead.no_account": "아직 고객사에 연결되지 않았습니다.",
    "lead.committee": "구매 위원회",
    "lead.committee_empty": "이 고객사의 다른 사람이 아직 없습니다.",
    "lead.timeline": "타임라인",
    "lead.timeline_empty": "기록된 접점이 없습니다.",
    "lead.timeline_more": "최근 접점 {n}개를 표시합니다.",
    "lead.identities": "식별자",
    "lead.identities_empty": "연결된 기기나 사용자 ID가 없습니다.",
    "lead.summary": "접점",
    "lead.first_seen": "첫 방문",
    "lead.last_seen": "최근 방문",
    "lead.erased": "요청에 따라 이 사람의 개인정보가 삭제되었습니다.",
    "identity.anonymous": "기기",
    "identity.user": "사용자 ID",
    "unnamed": "(이름 없음)",
    "event.page": "페이지 조회",
    "event.identify": "식별됨",
    "event.group": "고객사 연결",
    "event.alias": "식별자 연결",
    "event.screen": "화면 조회",
    "event.form_submit": "양식 제출",
    "event.content_download": "콘텐츠 다운로드",
    "event.webinar_registered": "웨비나 등록",
    "event.webinar_attended": "웨비나 참석",
    "event.event_attended": "세미나·행사 참석",
    "event.email_sent": "이메일 발송",
    "event.email_open": "이메일 열람",
    "event.email_click": "이메일 링크 클릭",
    "event.email_unsubscribe": "수신 거부",
    "event.email_bounce": "이메일 반송",
    "event.demo_request": "데모 요청",
    "event.quote_request": "견적 요청",
    "event.catalogue_request": "카탈로그 요청",
    "event.contact_request": "문의",
    "event.trial_signup": "체험판 가입",
    "event.other": "이벤트",
    "channel": "채널",
    "campaign": "캠페인",
    "accounts.title": "고객사",
    "accounts.subtitle": "시장의 회사들과 담당자, 구매 위원회.",
    "accounts.search": "회사명 또는 도메인 검색",
    "accounts.target": "타깃 고객사",
    "accounts.empty": "조건에 맞는 고객사가 없습니다.",
    "account.people": "사람",
    "account.activity": "최근 활동",
    "account.details": "상세 정보",
    "keys.title": "API 키",
    "keys.subtitle": "쓰기 키는 /v1 추적 호출에, 관리자 토큰은 /api에 사용합니다.",
    "keys.create": "키 만들기",
    "keys.name": "이름",
    "keys.kind.write": "쓰기 키",
    "keys.kind.admin": "관리자 토큰",
    "keys.revoke": "폐기",
    "keys.revoke_confirm": "이 키를 폐기할까요? 이 키를 쓰는 호출은 거부됩니다.",
    "keys.active": "사용 중",
    "keys.revoked": "{date} 폐기됨",
    "keys.created_once": "지금 이 키를 복사하세요. 한 번만 표시됩니다.",
    "keys.empty": "아직 키가 없습니다.",
    "users.title": "사용자",
    "users.subtitle": "로그인할 수 있는 사람과 역할별 권한.",
    "users.create": "사용자 추가",
    "users.password": "초기 비밀번호",
    "users.active": "활성",
    "users.inactive": "비활성",
    "users.deactivate": "비활성화",
    "users.activate": "활성화",
    "users.created": "사용자 {email}을(를) 만들었습니다.",
    "users.never": "없음",
    "error.403.title": "이 페이지에 접근할 권한이 없습니다",
    "error.403.body": "현재 역할로는 이 페이지나 기록을 볼 수 없습니다. 필요하면 관리자에게 "
    "요청하세요.",
    "error.404.title": "찾을 수 없음",
    "error.404.body": "이 페이지나 기록이 존재하지 않습니다.",
    "error.csrf.title": "양식이 만료되었습니다",
    "error.csrf.body": "페이지를 새로 고친 뒤 다시 시도하세요.",
    "error.back": "홈으로",
    "form.error": "수정이 필요합니다: {msg}",
}

CATALOGUES = {"en": EN, "ko": KO}

_MONTHS_EN = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def pick_locale(candidate: str | None, accept_language: str | None = None) -> str:
    if candidate in LOCALES:
        return candidate  # type: ignore[return-value]
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()[:2]
        if tag in LOCALES:
            return tag
    return DEFAULT_LOCALE


class Translator:
    """``t(key, **values)`` plus number/date formatting for one locale."""

    def __init__(self, locale: str) -> None:
        self.locale = locale if locale in LOCALES else DEFAULT_LOCALE
        self._messages = CATALOGUES[self.locale]

    def __call__(self, key: str, **values: object) -> str:
        text = self._messages.get(key) or EN.get(key) or key
        if values:
            for name, value in values.items():
                text = text.replace("{" + name + "}", str(value))
        return text

    def has(self, key: str) -> bool:
        return key in self._messages

    def number(self, value: int | float | None) -> str:
        if value is None:
            return "–"
        if isinstance(value, float) and not value.is_integer():
            return f"{value:,.1f}"
        return f"{int(value):,}"

    def percent(self, value: float | None) -> str:
        if value is None:
            return "–"
        return f"{value * 100:.0f}%"

    def date(self, value: datetime | None) -> str:
        if value is None:
            return "–"
        value = value.astimezone(UTC)
        if self.locale == "ko":
            return f"{value.year}. {value.month}. {value.day}."
        return f"{_MONTHS_EN[value.month - 1]} {value.day}, {value.year}"

    def datetime(self, value: datetime | None) -> str:
        if value is None:
            return "–"
        value = value.astimezone(UTC)
        clock = f"{value.hour:02d}:{value.minute:02d}"
        return f"{self.date(value)} {clock}"

    def relative(self, value: datetime | None, now: datetime) -> str:
        """'3 days ago' / '3일 전' (falls back to the date after 30 days)."""
        if value is None:
            return "–"
        seconds = (now - value).total_seconds()
        if seconds < 0 or seconds > 30 * 86400:
            return self.date(value)
        for size, en, ko in (
            (86400, "day", "일"),
            (3600, "hour", "시간"),
            (60, "minute", "분"),
        ):
            if seconds >= size:
                n = int(seconds // size)
                if self.locale == "ko":
                    return f"{n}{ko} 전"
                return f"{n} {en}{'s' if n != 1 else ''} ago"
        return "방금" if self.locale == "ko" else "just now"
