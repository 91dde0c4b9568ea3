"""How a stored event reads on a timeline: icon, label key, one line of detail."""

from __future__ import annotations

from typing import Any

# event name (track) or type (page, identify, ...) -> (icon, tone)
_KINDS: dict[str, tuple[str, str]] = {
    "page": ("eye", "neutral"),
    "screen": ("eye", "neutral"),
    "identify": ("user-check", "info"),
    "group": ("building", "info"),
    "alias": ("link", "info"),
    "form_submit": ("form", "good"),
    "content_download": ("download", "good"),
    "webinar_registered": ("video", "info"),
    "webinar_attended": ("video", "good"),
    "event_attended": ("calendar", "good"),
    "email_sent": ("mail", "neutral"),
    "email_open": ("mail-open", "info"),
    "email_click": ("cursor", "good"),
    "email_unsubscribe": ("mail-x", "bad"),
    "email_bounce": ("mail-x", "bad"),
    "demo_request": ("star", "hot"),
    "quote_request": ("star", "hot"),
    "catalogue_request": ("star", "hot"),
    "contact_request": ("phone", "hot"),
    "trial_signup": ("rocket", "hot"),
}


def _text(value: Any, limit: int = 140) -> str:
    if value is None:
        return ""
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe(event: dict[str, Any]) -> dict[str, Any]:
    kind = event["name"] if event["type"] in ("track",) else event["type"]
    icon, tone = _KINDS.get(kind or "", ("activity", "neutral"))
    label = f"event.{kind}" if kind in _KINDS else "event.other"
    props = event.get("properties") or {}
    if not isinstance(props, dict):
        props = {}
    if event["type"] in ("page", "screen"):
        detail = _text(event.get("page_url") or props.get("url") or props.get("path"))
    elif kind == "content_download":
        detail = _text(props.get("asset") or props.get("title"))
    elif kind and kind.startswith("email_"):
        detail = _text(props.get("subject") or props.get("email") or props.get("campaign"))
    elif (kind and kind.startswith("webinar_")) or kind == "event_attended":
        detail = _text(props.get("webinar") or props.get("event") or props.get("name"))
    elif kind == "form_submit":
        detail = _text(props.get("form") or props.get("form_name") or props.get("url"))
    else:
        detail = ""
    return {
        **event,
        "icon": icon,
        "tone": tone,
        "label": label,
        "raw_name": kind if label == "event.other" else "",
        "detail": detail,
        "campaign": event.get("utm_campaign"),
    }
