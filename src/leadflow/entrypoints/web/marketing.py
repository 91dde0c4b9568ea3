"""Marketing pages: nurture programs (per-step figures), the content library, forms.

Programs and forms come from the active model (``nurture:`` of leadflow.yaml, which may be
absent: then the pages say so). Figures are read straight from the tables with one grouped
query per figure (:mod:`leadflow.adapters.db.repositories.marketing`) and cached for
:attr:`TTLCache.ttl` seconds.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, TypedDict

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from leadflow.adapters.db.repositories import marketing as mq
from leadflow.bootstrap import Services
from leadflow.core.config import (
    EVALUATION_STAGES,
    ContentSpec,
    LeadModel,
    NurtureSpec,
    ProgramCondition,
    ProgramSpec,
    StepSpec,
)
from leadflow.entrypoints.web import auth
from leadflow.entrypoints.web.cache import TTLCache
from leadflow.entrypoints.web.errors import NotFoundPage
from leadflow.entrypoints.web.i18n import Translator
from leadflow.entrypoints.web.rendering import render, translator_for
from leadflow.entrypoints.web.state import cache_of, services_of

router = APIRouter(include_in_schema=False)
ProgramsUser = Annotated[auth.WebUser, auth.require("programs.view")]
ContentUser = Annotated[auth.WebUser, auth.require("content.view")]
FormsUser = Annotated[auth.WebUser, auth.require("forms.view")]


def _model(services: Services) -> LeadModel:
    return services.active_model()


def nurture_of(model: LeadModel) -> NurtureSpec:
    return model.spec.nurture or NurtureSpec()


def _display(value: Any, locale: str) -> str:
    if value is None:
        return ""
    return str(value.ko if locale == "ko" else value.en)


def safe_href(url: str | None) -> str | None:
    """A link target only for http(s) URLs and site paths; anything else stays text."""
    if not url:
        return None
    text = url.strip()
    if any(ord(c) < 32 or c in "\\<>\"'" for c in text):
        return None
    lower = text.lower()
    if lower.startswith(("http://", "https://")):
        return text
    if text.startswith("/") and not text.startswith("//"):
        return text
    return None


# ---------------------------------------------------------------- words for steps


def _stage_names(model: LeadModel, stages: list[str], locale: str) -> str:
    return ", ".join(model.display_name(s, locale) if s in model.spec.stages else s for s in stages)


def condition_words(cond: ProgramCondition | None, model: LeadModel, t: Translator) -> list[str]:
    if cond is None:
        return [t("programs.when.always")]
    parts: list[str] = []
    if cond.score_at_least is not None:
        parts.append(t("programs.when.score_at_least", n=t.number(cond.score_at_least)))
    if cond.score_below is not None:
        parts.append(t("programs.when.score_below", n=t.number(cond.score_below)))
    if cond.stage:
        parts.append(t("programs.when.stage", stages=_stage_names(model, cond.stage, t.locale)))
    if cond.fit_grade:
        parts.append(t("programs.when.fit_grade", grades=", ".join(cond.fit_grade)))
    for name, values in cond.attributes.items():
        shown = ", ".join(str(v) for v in values) if isinstance(values, list) else str(values)
        parts.append(t("programs.when.attribute", name=name, values=shown))
    if cond.event is not None:
        match = cond.event
        what = ", ".join(
            str(v) for v in (match.name or match.type or match.path or []) if v is not None
        ) or t("programs.when.any_event")
        key = "programs.when.event_seen" if cond.seen else "programs.when.event_not_seen"
        days = (
            t("programs.when.within", days=t.number(cond.within_days))
            if cond.within_days is not None
            else ""
        )
        parts.append(t(key, event=what, within=days).strip())
    return parts or [t("programs.when.always")]


def action_words(
    step: StepSpec, model: LeadModel, assets: dict[str, str], t: Translator
) -> list[str]:
    parts: list[str] = []
    if step.send is not None:
        send = step.send
        asset = (
            t("programs.asset.next_best")
            if send.asset == "next_best"
            else assets.get(send.asset, send.asset)
        )
        parts.append(
            t(
                "programs.do.send",
                subject=_display(send.subject, t.locale),
                asset=asset,
                category=t("programs.category." + send.category),
            )
        )
    if step.set:
        shown = ", ".join(f"{k} = {v}" for k, v in step.set.items())
        parts.append(t("programs.do.set", values=shown))
    if step.notify:
        parts.append(t("programs.do.notify", note=step.notify))
    return parts or [t("programs.do.nothing")]


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


class _StepRow(TypedDict):
    """One program step as the program page shows it."""

    n: int
    id: str
    wait: str
    when: list[str]
    otherwise: str
    do: list[str]
    f: mq.StepFigures
    open_rate: float | None
    click_rate: float | None
    conversion_rate: float | None


def _program_summary(
    spec: ProgramSpec, figs: mq.ProgramFigures | None, model: LeadModel, t: Translator
) -> dict[str, Any]:
    figs = figs or mq.ProgramFigures()
    return {
        "key": spec.key,
        "name": _display(spec.name, t.locale),
        "stages": _stage_names(model, list(spec.stages), t.locale),
        "steps": len(spec.steps),
        "reenroll": spec.reenroll,
        "f": figs,
        "open_rate": _rate(figs.totals.opened, figs.totals.sent),
        "click_rate": _rate(figs.totals.clicked, figs.totals.sent),
    }


def _figures(services: Services, cache: TTLCache, model: LeadModel) -> Any:
    main = tuple(model.spec.lifecycle.main_path)
    return cache.get(
        ("marketing", "programs", main), lambda: mq.program_figures(services.engine, main)
    )


@router.get("/programs")
async def programs_page(request: Request, user: ProgramsUser) -> HTMLResponse:
    services = services_of(request)
    t = translator_for(request, user)

    def load() -> dict[str, Any]:
        model = _model(services)
        figures = _figures(services, cache_of(request), model)
        programs = [
            _program_summary(p, figures.get(p.key), model, t) for p in nurture_of(model).programs
        ]
        known = {p.key for p in nurture_of(model).programs}
        return {
            "programs": programs,
            "has_nurture": model.spec.nurture is not None,
            "unknown": sorted(k for k in figures if k not in known),
            "model_version": model.version,
            "days": mq.CONVERSION_DAYS,
        }

    data = await run_in_threadpool(load)
    return render(request, "programs.html", data, active="programs")


@router.get("/programs/{key}")
async def program_page(request: Request, user: ProgramsUser, key: str) -> HTMLResponse:
    services = services_of(request)
    t = translator_for(request, user)

    def load() -> dict[str, Any] | None:
        model = _model(services)
        nurture = nurture_of(model)
        spec = next((p for p in nurture.programs if p.key == key), None)
        if spec is None:
            return None
        figures = _figures(services, cache_of(request), model).get(key) or mq.ProgramFigures()
        assets = {c.key: c.title for c in nurture.content}
        steps: list[_StepRow] = []
        for i, step in enumerate(spec.steps, start=1):
            f = figures.steps.get(step.id) or mq.StepFigures()
            steps.append(
                {
                    "n": i,
                    "id": step.id,
                    "wait": t("programs.wait", days=t.number(step.wait_days)),
                    "when": condition_words(step.when, model, t),
                    "otherwise": t("programs.otherwise." + step.otherwise)
                    if step.when is not None
                    else "",
                    "do": action_words(step, model, assets, t),
                    "f": f,
                    "open_rate": _rate(f.opened, f.sent),
                    "click_rate": _rate(f.clicked, f.sent),
                    "conversion_rate": _rate(f.conversions, f.sent),
                }
            )
        chart = {
            "categories": [s["id"] for s in steps],
            "series": [
                {"name": t("programs.col.sent"), "data": [s["f"].sent for s in steps]},
                {"name": t("programs.col.opened"), "data": [s["f"].opened for s in steps]},
                {"name": t("programs.col.clicked"), "data": [s["f"].clicked for s in steps]},
                {
                    "name": t("programs.col.conversions"),
                    "data": [s["f"].conversions for s in steps],
                },
            ],
        }
        return {
            "p": _program_summary(spec, figures, model, t),
            "step_rows": steps,
            "chart": chart,
            "exit_hint": ", ".join(f"{r}: {t.number(n)}" for r, n in figures.exit_reasons),
            "days": mq.CONVERSION_DAYS,
            "model_version": model.version,
        }

    data = await run_in_threadpool(load)
    if data is None:
        raise NotFoundPage
    return render(request, "program.html", data, active="programs")


# ---------------------------------------------------------------- content


def _content_items(services: Services, model: LeadModel) -> tuple[list[dict[str, Any]], str]:
    rows = mq.content_rows(services.engine)
    if rows:
        return rows, "table"
    config: list[ContentSpec] = nurture_of(model).content
    return [
        {
            "key": c.key,
            "title": c.title,
            "type": c.type,
            "stage": c.stage,
            "gated": c.gated,
            "industries": list(c.industries),
            "url": c.url,
            "source": "config",
        }
        for c in config
    ], "config"


@router.get("/content")
async def content_page(
    request: Request,
    user: ContentUser,
    industry: Annotated[str, Query(max_length=100)] = "",
) -> HTMLResponse:
    services = services_of(request)

    def load() -> dict[str, Any]:
        model = _model(services)
        items, origin = _content_items(services, model)
        paths = [p for p in (mq.url_path(i["url"]) for i in items) if p]
        used = cache_of(request).get(
            ("marketing", "content", tuple(sorted(set(paths)))),
            lambda: mq.consumption(services.engine, paths),
        )
        industries = sorted(
            {str(x) for i in items for x in (i["industries"] or []) if isinstance(x, str)}
        )
        groups: dict[str, list[dict[str, Any]]] = {s: [] for s in EVALUATION_STAGES}
        for item in items:
            inds = [str(x) for x in (item["industries"] or [])]
            if industry and inds and industry not in inds:
                continue
            path = mq.url_path(item["url"])
            groups.setdefault(item["stage"], []).append(
                {
                    **item,
                    "industries": inds,
                    "href": safe_href(item["url"]),
                    "downloads": used.downloads.get(item["key"], 0),
                    "views": used.page_views.get(path, 0) if path else 0,
                    "emails": used.emails.get(item["key"], 0),
                }
            )
        return {
            "groups": [(s, groups[s]) for s in groups],
            "origin": origin,
            "total": len(items),
            "industries": industries,
            "industry": industry,
        }

    data = await run_in_threadpool(load)
    return render(request, "content.html", data, active="content")


# ---------------------------------------------------------------- forms


@router.get("/forms")
async def forms_page(
    request: Request,
    user: FormsUser,
    form: Annotated[str, Query(max_length=64)] = "",
) -> HTMLResponse:
    services = services_of(request)
    t = translator_for(request, user)

    def load() -> dict[str, Any]:
        model = _model(services)
        nurture = nurture_of(model)
        now = services.clock()
        counts = mq.submission_counts(services.engine, now)
        assets = {c.key: c.title for c in nurture.content}
        forms = [
            {
                "key": f.key,
                "title": _display(f.title, t.locale),
                "fields": [
                    {
                        "name": fld.name,
                        "label": _display(fld.label, t.locale) or fld.name,
                        "type": fld.type,
                        "required": fld.required,
                    }
                    for fld in f.fields
                ],
                "asset": f.asset,
                "asset_title": assets.get(f.asset, f.asset) if f.asset else None,
                "consent": _display(f.consent, t.locale),
                "consent_required": f.consent_required,
                "ask_at_most": f.ask_at_most,
                "total": counts.get(f.key, (0, 0))[0],
                "recent": counts.get(f.key, (0, 0))[1],
            }
            for f in nurture.forms
        ]
        keys = {f["key"] for f in forms}
        chosen = form if form in keys or form in counts else ""
        return {
            "forms": forms,
            "has_nurture": model.spec.nurture is not None,
            "latest": mq.latest_submissions(services.engine, chosen),
            "form": chosen,
            "titles": {f["key"]: f["title"] for f in forms},
            "limit": mq.LATEST_SUBMISSIONS,
            # "recent" counts the last 30 days: its figure links to the leads since then.
            "recent_since": (now - timedelta(days=30)).isoformat(),
        }

    data = await run_in_threadpool(load)
    return render(request, "forms.html", data, active="forms")
