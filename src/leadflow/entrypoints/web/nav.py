"""The sidebar: one list of entries, each shown only to roles with its permission.

Later pages (funnel, sales queue, programs, attribution, model) add one ``NavItem`` here,
one permission in :data:`leadflow.entrypoints.web.auth.PERMISSIONS`, catalogue labels in
:mod:`leadflow.entrypoints.web.i18n`, and a router in :mod:`leadflow.entrypoints.web`.
"""

from __future__ import annotations

from dataclasses import dataclass

from leadflow.entrypoints.web.auth import WebUser


@dataclass(frozen=True, slots=True)
class NavItem:
    key: str  # also the i18n label "nav.<key>" and the active-page marker
    href: str
    permission: str
    icon: str  # a symbol id in static/icons.svg
    section: str  # i18n "nav.section.<section>"


NAV: tuple[NavItem, ...] = (
    NavItem("home", "/home", "home.view", "home", "overview"),
    NavItem("leads", "/leads", "leads.view", "users", "pipeline"),
    NavItem("accounts", "/accounts", "accounts.view", "building", "pipeline"),
    NavItem("queue", "/queue", "queue.view", "inbox", "pipeline"),
    NavItem("programs", "/programs", "programs.view", "mail", "marketing"),
    NavItem("content", "/content", "content.view", "download", "marketing"),
    NavItem("forms", "/forms", "forms.view", "form", "marketing"),
    NavItem("funnel", "/funnel", "funnel.view", "funnel", "analytics"),
    NavItem("attribution", "/attribution", "attribution.view", "star", "analytics"),
    NavItem("kpis", "/kpis", "kpis.view", "rocket", "analytics"),
    NavItem("model", "/model", "model.view", "sliders", "analytics"),
    NavItem("users", "/settings/users", "users.manage", "shield", "admin"),
    NavItem("keys", "/settings/keys", "keys.manage", "key", "admin"),
)


def nav_for(user: WebUser) -> list[tuple[str, list[NavItem]]]:
    """Sections in order, each with the entries this user may open (empty ones dropped)."""
    sections: dict[str, list[NavItem]] = {}
    for item in NAV:
        if user.can(item.permission):
            sections.setdefault(item.section, []).append(item)
    return list(sections.items())
