"""Public hosted forms: ``GET/POST /f/{form}``, ``GET /f/{form}/embed.js`` and ``embed.json``.

Forms are declared in leadflow.yaml (``nurture.forms``). No sign-in; everything rendered is
escaped (Jinja2 autoescape; the embed script builds the DOM with ``textContent``).

Who the visitor is
    Only the analytics.js anonymous id: the ``ajs_anonymous_id`` cookie (when leadflow is
    served under the website's domain) or ``?anonymousId=`` (the embed script passes the
    cookie's value). It decides which fields are already known (progressive profiling) and
    whether a known contact goes straight to late-stage content. Values known about the
    visitor are never shown on the page, only left out. ``ajs_user_id`` and ``?email=`` are
    NOT trusted for this (a user id or an address can be guessed; a random anonymous id
    cannot): ``?email=`` only pre-fills the e-mail box with the text given.

Cross-site request forgery
    A form-encoded POST (what a browser form sends, also cross-site) must carry ``lf_token``
    = ``<unix time>.<HMAC(signing key, form|time|anonymous id)>`` from the page it was
    rendered on, valid 24 hours: a forged cross-site post cannot attach a visitor's
    anonymous history to an address of the attacker's choosing, because the anonymous id is
    the one signed into the token. A JSON POST needs no token: browsers cannot send
    ``application/json`` cross-site without a CORS pre-flight, which is not granted. A
    hidden honeypot field (``lf_website``) filled in means a bot: it gets a thank-you and
    nothing is stored.

Limits: bodies over 64 KB → 413; unknown form → 404; other content types → 415.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, unquote

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.concurrency import run_in_threadpool

from leadflow.bootstrap import Services
from leadflow.core import forms as core
from leadflow.core.config import ContentSpec, FormFieldSpec, FormSpec
from leadflow.core.errors import NotFound
from leadflow.core.inputs import declared_length_over
from leadflow.entrypoints.api.contract import error_responses, json_content
from leadflow.entrypoints.api.responses import FormEmbed, FormSubmitted
from leadflow.entrypoints.web.i18n import pick_locale
from leadflow.services import content
from leadflow.services import forms as service

router = APIRouter(prefix="/f", tags=["forms"])
FormKey = Annotated[
    str, PathParam(description="A form of the model (`nurture.forms`).", examples=["white-paper"])
]

MAX_BODY_BYTES = 64 * 1024
TOKEN_MAX_AGE = 24 * 3600
TOKEN_FUTURE_SKEW = 300
CORS = {"Access-Control-Allow-Origin": "*", "Vary": "Origin"}
TEMPLATES = Path(__file__).parent / "templates"

TEXT: dict[str, dict[str, str]] = {
    "en": {
        "submit": "Submit",
        "unlocks": "Fill in the form to get",
        "thanks": "Thank you!",
        "thanks_name": "Thank you, {name}!",
        "ready": "Your content is ready.",
        "open": "Open",
        "received": "We received your details.",
        "required": "required",
        "choose": "Choose…",
        "honeypot": "Leave this field empty",
        "privacy": "We use your details as described in the consent above.",
        "expired": "This form has expired. Please check your details and submit again.",
        "fix": "Please correct the highlighted fields.",
    },
    "ko": {
        "submit": "제출",
        "unlocks": "양식을 작성하면 다음 자료를 받을 수 있습니다:",
        "thanks": "감사합니다!",
        "thanks_name": "{name}님, 감사합니다!",
        "ready": "자료가 준비되었습니다.",
        "open": "열기:",
        "received": "정보를 받았습니다.",
        "required": "필수",
        "choose": "선택하세요…",
        "honeypot": "이 칸은 비워 두세요",
        "privacy": "입력하신 정보는 위 동의 내용에 따라 사용됩니다.",
        "expired": "양식이 만료되었습니다. 입력 내용을 확인하고 다시 제출해 주세요.",
        "fix": "표시된 항목을 확인해 주세요.",
    },
}
_INPUT_TYPES = {"email": "email", "tel": "tel", "number": "number"}
_AUTOCOMPLETE = {
    "email": "email",
    "first_name": "given-name",
    "last_name": "family-name",
    "phone": "tel",
    "title": "organization-title",
    "company": "organization",
    "country": "country-name",
}


@lru_cache(maxsize=1)
def _env() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


@lru_cache(maxsize=1)
def _embed_source() -> str:
    return (TEMPLATES / "embed.js").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- helpers


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _lang(request: Request, given: str | None = None) -> str:
    return pick_locale(
        given or request.query_params.get("lang"), request.headers.get("accept-language")
    )


def _anonymous_id(request: Request, given: str | None = None) -> str | None:
    for candidate in (given, request.query_params.get("anonymousId")):
        found = core.clean_anonymous_id(candidate)
        if found:
            return found
    cookie = request.cookies.get("ajs_anonymous_id")
    return core.clean_anonymous_id(unquote(cookie)) if cookie else None


def make_token(key: bytes, form_key: str, anonymous_id: str, now: float) -> str:
    ts = str(int(now))
    mac = hmac.new(key, f"form|{form_key}|{ts}|{anonymous_id}".encode(), hashlib.sha256)
    return f"{ts}.{mac.hexdigest()}"


def check_token(key: bytes, form_key: str, anonymous_id: str, token: str, now: float) -> bool:
    ts, _, mac = token.partition(".")
    if not (ts.isdigit() and ts.isascii()) or len(ts) > 12 or not mac:
        return False
    age = now - int(ts)
    if age > TOKEN_MAX_AGE or age < -TOKEN_FUTURE_SKEW:
        return False
    expected = make_token(key, form_key, anonymous_id, int(ts)).partition(".")[2]
    return hmac.compare_digest(expected, mac)


def _label(spec: FormFieldSpec, lang: str) -> str:
    if spec.label is None:
        return spec.name.replace("_", " ").capitalize()
    return spec.label.ko if lang == "ko" else spec.label.en


def _title(form: FormSpec, lang: str) -> str:
    return form.title.ko if lang == "ko" else form.title.en


def _consent_text(form: FormSpec, lang: str) -> str | None:
    if form.consent is None:
        return None
    return form.consent.ko if lang == "ko" else form.consent.en


def _http_url(value: str | None) -> str | None:
    if value and value.startswith(("http://", "https://")) and len(value) <= 2000:
        return core.clean_text(value) or None
    return None


def _client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


class _TooLarge(Exception):
    pass


async def _read_body(request: Request) -> bytes:
    if declared_length_over(request.headers.get("content-length"), MAX_BODY_BYTES):
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _lookup(services: Services, key: str) -> tuple[FormSpec, ContentSpec | None]:
    now = services.clock()
    with services.engine.begin() as conn:  # begin: a fresh database installs the model
        model = services.models.active(conn, now)
        form = service.find_form(model, key)
        if form is None:
            raise NotFound(f"no form {key[:64]!r}")
        asset = content.find_asset(conn, model, form.asset) if form.asset else None
    return form, asset


def _visitor(services: Services, anonymous_id: str | None) -> service.Visitor:
    with services.engine.connect() as conn:
        return service.visitor(conn, anonymous_id)


def _field_rows(
    fields: list[FormFieldSpec],
    lang: str,
    values: dict[str, Any],
    errors: dict[str, str],
) -> list[dict[str, Any]]:
    rows = []
    for spec in fields:
        value = values.get(spec.name, "")
        rows.append(
            {
                "name": spec.name,
                "label": _label(spec, lang),
                "type": spec.type,
                "input_type": _INPUT_TYPES.get(spec.type, "text"),
                "autocomplete": _AUTOCOMPLETE.get(spec.name),
                "required": spec.required,
                "options": list(spec.options),
                "max_length": spec.max_length,
                "value": value if isinstance(value, bool) else str(value)[: spec.max_length],
                "error": core.describe(errors[spec.name], lang) if spec.name in errors else None,
            }
        )
    return rows


def _render_form(
    services: Services,
    form: FormSpec,
    asset: ContentSpec | None,
    *,
    lang: str,
    anonymous_id: str,
    fields: list[FormFieldSpec],
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    consent_checked: bool = False,
    page_url: str | None = None,
    general_error: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    errors = errors or {}
    token = make_token(services.signing.current(), form.key, anonymous_id, time.time())
    html = (
        _env()
        .get_template("form.html")
        .render(
            lang=lang,
            t=TEXT[lang],
            title=_title(form, lang),
            asset=asset,
            done=False,
            thanks_title="",
            general_error=general_error,
            action=f"/f/{form.key}",
            token=token,
            anonymous_id=anonymous_id,
            page_url=page_url,
            fields=_field_rows(fields, lang, values or {}, errors),
            consent_text=_consent_text(form, lang),
            consent_required=form.consent_required,
            consent_checked=consent_checked,
            consent_error=core.describe(errors["consent"], lang) if "consent" in errors else None,
        )
    )
    return HTMLResponse(html, status_code=status)


def _render_done(
    form: FormSpec, asset: ContentSpec | None, lang: str, name: str | None
) -> HTMLResponse:
    t = TEXT[lang]
    html = (
        _env()
        .get_template("form.html")
        .render(
            lang=lang,
            t=t,
            title=_title(form, lang),
            asset=asset,
            done=True,
            thanks_title=t["thanks_name"].replace("{name}", name) if name else t["thanks"],
        )
    )
    return HTMLResponse(html)


def _shown(form: FormSpec, visitor: service.Visitor) -> list[FormFieldSpec]:
    return core.fields_to_ask(form, visitor.known)


def _asset_json(asset: ContentSpec | None) -> dict[str, Any] | None:
    if asset is None:
        return None
    return {"key": asset.key, "title": asset.title, "type": asset.type, "url": asset.url}


# --------------------------------------------------------------------------- routes


async def _skipped(
    services: Services,
    request: Request,
    form: FormSpec,
    asset: ContentSpec | None,
    anonymous_id: str | None,
    visitor: service.Visitor,
    page_url: str | None,
) -> bool:
    """A known contact asking for late-stage content skips the form (DOMAIN.md section 5):
    the download is recorded and the caller sends the visitor straight to the asset."""
    if not (
        anonymous_id and asset is not None and core.skip_form(form, asset, visitor.known_contact)
    ):
        return False
    await run_in_threadpool(
        service.record_direct_download,
        services,
        form,
        asset,
        anonymous_id,
        services.clock(),
        page_url=_http_url(page_url),
        ip=_client_ip(request),
        user_agent=request.headers.get("user-agent"),
    )
    return True


_HTML = {"text/html": {"schema": {"type": "string"}}}
_JSON_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
_SEE_OTHER: dict[int | str, Any] = {
    303: {"description": "To the content (a known contact) or the form's redirect."}
}
_FIELDS = {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}}
_SUBMIT = {
    "requestBody": {
        "required": True,
        "description": "The form's fields (at most 64 KB). A form-encoded post needs the "
        "page's `lf_token`; a JSON post needs none.",
        "content": {
            "application/x-www-form-urlencoded": {"schema": _FIELDS},
            "application/json": {"schema": _FIELDS},
        },
    },
    "responses": {
        "200": {
            "description": "Thank-you page, or JSON `{success, asset, redirect}`.",
            "content": {**_HTML, **json_content("FormSubmitted")},
        },
        "400": {
            "description": "Refused fields: the form again (HTML) or `{detail, errors}`.",
            "content": {**_HTML, **_JSON_ERROR},
        },
    },
}


@router.get(
    "/{form_key}",
    operation_id="form_page",
    response_class=HTMLResponse,
    responses={**_SEE_OTHER, **error_responses(404)},
)
async def form_page(form_key: FormKey, request: Request) -> Response:
    """The hosted form, or (a known contact asking for late-stage content) the asset."""
    services = _services(request)
    form, asset = await run_in_threadpool(_lookup, services, form_key)
    lang = _lang(request)
    anonymous_id = _anonymous_id(request)
    visitor = await run_in_threadpool(_visitor, services, anonymous_id)
    referer = request.headers.get("referer")
    if await _skipped(services, request, form, asset, anonymous_id, visitor, referer):
        assert asset is not None
        return RedirectResponse(asset.url, status_code=303)
    hint = request.query_params.get("email")
    values = {"email": core.clean_text(hint)[:320]} if hint else {}
    return _render_form(
        services,
        form,
        asset,
        lang=lang,
        anonymous_id=anonymous_id or str(uuid.uuid4()),
        fields=_shown(form, visitor),
        values=values,
        page_url=_http_url(request.headers.get("referer")),
    )


@router.get(
    "/{form_key}/embed.json",
    operation_id="form_embed_config",
    responses=error_responses(404),
    response_model=FormEmbed,
)
async def embed_config(form_key: FormKey, request: Request) -> JSONResponse:
    """What the embed script renders for this visitor (CORS: any site may read it)."""
    services = _services(request)
    form, asset = await run_in_threadpool(_lookup, services, form_key)
    lang = _lang(request)
    anonymous_id = _anonymous_id(request)
    visitor = await run_in_threadpool(_visitor, services, anonymous_id)
    page = request.query_params.get("pageUrl")
    if await _skipped(services, request, form, asset, anonymous_id, visitor, page):
        assert asset is not None
        return JSONResponse({"skip": True, "asset": _asset_json(asset)}, headers=CORS)
    anonymous_id = anonymous_id or str(uuid.uuid4())
    t = TEXT[lang]
    body = {
        "skip": False,
        "form": form.key,
        "lang": lang,
        "title": _title(form, lang),
        "action": f"/f/{form.key}",
        "anonymousId": anonymous_id,
        "token": make_token(services.signing.current(), form.key, anonymous_id, time.time()),
        "fields": [
            {
                "name": f["name"],
                "label": f["label"],
                "type": f["type"],
                "required": f["required"],
                "options": f["options"],
                "max_length": f["max_length"],
            }
            for f in _field_rows(_shown(form, visitor), lang, {}, {})
        ],
        "consent": {"text": _consent_text(form, lang), "required": form.consent_required}
        if form.consent is not None
        else None,
        "asset": {"title": asset.title} if asset is not None else None,
        "text": {k: t[k] for k in ("submit", "thanks", "ready", "open", "received", "fix")},
    }
    return JSONResponse(body, headers=CORS)


@router.post(
    "/{form_key}",
    operation_id="form_submit",
    response_class=Response,
    responses={**_SEE_OTHER, **error_responses(404, 413, 415)},
    response_model=FormSubmitted,
    openapi_extra=_SUBMIT,
)
async def form_submit(form_key: FormKey, request: Request) -> Response:
    services = _services(request)
    form, asset = await run_in_threadpool(_lookup, services, form_key)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    is_json = media == "application/json"
    wants_json = is_json or "application/json" in request.headers.get("accept", "")
    try:
        raw_body = await _read_body(request)
    except _TooLarge:
        return JSONResponse(
            {"detail": f"body: larger than {MAX_BODY_BYTES // 1024} KB"},
            status_code=413,
            headers=CORS,
        )
    if is_json:
        try:
            data = json.loads(raw_body or b"null")
        except ValueError as exc:
            return _json_error(400, f"body: malformed JSON ({exc})")
        if not isinstance(data, dict):
            return _json_error(400, "body: expected a JSON object")
        raw: dict[str, Any] = {
            k: v for k, v in data.items() if isinstance(v, str | int | float | bool)
        }
    elif media in ("application/x-www-form-urlencoded", ""):
        try:
            pairs = parse_qsl(raw_body.decode("utf-8"), keep_blank_values=True, max_num_fields=200)
        except (UnicodeDecodeError, ValueError):
            return _json_error(400, "body: not valid form data (UTF-8, at most 200 fields)")
        raw = {}
        for name, value in pairs:
            raw.setdefault(name, value)  # the first value of a repeated name
    else:
        return _json_error(
            415, "Content-Type: send application/x-www-form-urlencoded or application/json"
        )
    lang = _lang(request, raw.get("lang") if isinstance(raw.get("lang"), str) else None)
    given_anon = raw.get("anonymousId", raw.get("anonymous_id"))
    anonymous_id = core.clean_anonymous_id(given_anon if isinstance(given_anon, str) else None)
    if anonymous_id is None and is_json:
        anonymous_id = _anonymous_id(request)
    page_url = _http_url(raw.get("page_url") if isinstance(raw.get("page_url"), str) else None)
    page_url = page_url or _http_url(
        raw.get("pageUrl") if isinstance(raw.get("pageUrl"), str) else None
    )
    page_url = page_url or _http_url(request.headers.get("referer"))
    if raw.get("lf_website"):
        # The honeypot: a bot. Looks like success; nothing is stored.
        if wants_json:
            return JSONResponse({"success": True, "asset": None}, headers=CORS)
        return _render_done(form, None, lang, None)
    token_ok = True
    if not is_json:
        token = raw.get("lf_token")
        signed_id = anonymous_id  # not reassigned: stays narrowed inside the lambda
        token_ok = bool(
            signed_id
            and isinstance(token, str)
            and services.signing.verify(
                lambda key: check_token(key, form.key, signed_id, token, time.time()) or None,
                services.clock(),
            )
        )
    if anonymous_id is None:
        anonymous_id = str(uuid.uuid4())
    visitor = await run_in_threadpool(_visitor, services, anonymous_id if token_ok else None)
    shown = _shown(form, visitor)
    clean, errors = core.validate(form, shown, raw)
    consent = core.consent_given(raw)
    if not token_ok:
        if wants_json:
            return _json_error(
                400,
                "lf_token: missing, invalid or expired; reload the form and submit again",
                {"lf_token": "missing, invalid or expired"},
            )
        return _render_form(
            services,
            form,
            asset,
            lang=lang,
            anonymous_id=str(uuid.uuid4()),
            fields=_shown(form, service.Visitor()),
            values={k: v for k, v in raw.items() if isinstance(v, str)},
            consent_checked=consent,
            page_url=page_url,
            general_error=TEXT[lang]["expired"],
            status=400,
        )
    if errors:
        if wants_json:
            return _json_error(
                400,
                core.error_detail(errors),
                {name: core.describe(code, lang) for name, code in errors.items()},
            )
        return _render_form(
            services,
            form,
            asset,
            lang=lang,
            anonymous_id=anonymous_id,
            fields=shown,
            values={k: v for k, v in raw.items() if isinstance(v, str)},
            errors=errors,
            consent_checked=consent,
            page_url=page_url,
            general_error=TEXT[lang]["fix"],
            status=400,
        )
    submission = await run_in_threadpool(
        lambda: service.submit(
            services,
            form,
            clean=clean,
            consent_given=consent,
            anonymous_id=anonymous_id,
            now=services.clock(),
            lang=lang,
            page_url=page_url,
            ip=_client_ip(request),
            user_agent=request.headers.get("user-agent"),
        )
    )
    unlocked = submission.asset
    redirect = core.safe_site_path(form.redirect)
    if wants_json:
        return JSONResponse(
            {"success": True, "asset": _asset_json(unlocked), "redirect": redirect},
            headers=CORS,
        )
    if redirect is not None:
        return RedirectResponse(redirect, status_code=303)
    first_name = clean.get("first_name")
    return _render_done(form, unlocked, lang, first_name if isinstance(first_name, str) else None)


def _json_error(status: int, detail: str, errors: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"detail": detail}
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, headers=CORS)


@router.get(
    "/{form_key}/embed.js",
    operation_id="form_embed_script",
    response_class=Response,
    responses={
        200: {"content": {"application/javascript": {"schema": {"type": "string"}}}},
        **error_responses(404),
    },
)
async def embed_script(form_key: FormKey, request: Request) -> Response:
    """A script that renders the form inline on a website::

        <div id="leadflow-form-white-paper"></div>
        <script src="https://LEADFLOW/f/white-paper/embed.js" async></script>

    It reads the analytics.js anonymous id (``ajs_anonymous_id`` cookie or
    ``analytics.user().anonymousId()``), fetches ``embed.json`` (the fields to ask this
    visitor), builds the form with DOM calls (never ``innerHTML``) and posts it to
    ``/f/{form}`` form-encoded with the signed token. ``data-lang="ko"`` on the container
    picks the language; without a container the form is inserted after the script tag."""
    services = _services(request)
    await run_in_threadpool(_lookup, services, form_key)
    script = _embed_source().replace("__FORM_KEY__", json.dumps(form_key))
    return Response(
        script,
        media_type="application/javascript; charset=utf-8",
        headers={"Cache-Control": "public, max-age=300", **CORS},
    )
