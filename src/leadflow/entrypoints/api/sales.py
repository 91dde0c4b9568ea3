"""Management API for the sales hand-off: reps, the ready queue, sales actions and
opportunities. Refused actions are 409 with the stage machine's reason; unknown leads 404;
bad input 422 naming the field."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Path, Query
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy import Connection

from leadflow.core.config import LeadModel
from leadflow.core.errors import Conflict, InvalidInput, NotFound
from leadflow.entrypoints.api.contract import error_responses
from leadflow.entrypoints.api.deps import Day, Moment, ServicesDep
from leadflow.entrypoints.api.errors import builtin_errors
from leadflow.entrypoints.api.responses import (
    ActionResult,
    Assignments,
    Opportunities,
    OpportunityDetail,
    Out,
    ReadyQueue,
    Rep,
    Reps,
    RouteResult,
)
from leadflow.services import handoff
from leadflow.services.handoff import claiming, notes

router = APIRouter(tags=["sales"])
LeadId = Path(..., ge=1, le=2**62, description="The lead's id.")
RepKey = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")]


def _no_nul(value: str) -> str:
    # PostgreSQL refuses NUL in text (a 500 on that backend, stored on SQLite).
    if "\x00" in value:
        raise ValueError("contains a NUL character")
    return value


Text = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_no_nul)]
Email = Annotated[
    str, Field(pattern=r"^[^@\s<>\"'\x00]+@[^@\s<>\"'\x00]+\.[^@\s<>\"'\x00]+$", max_length=320)
]
ActionId = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")]
Currency = Annotated[str, Field(pattern=r"^[A-Za-z]{3}$")]
Level = str | float
Role = Literal[
    "decision_maker",
    "economic_buyer",
    "influencer",
    "champion",
    "user",
    "technical_evaluator",
    "gatekeeper",
    "contact",
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TerritoryIn(_Body):
    industries: list[Text] | None = Field(default=None, max_length=200)
    countries: list[Annotated[str, Field(pattern=r"^[A-Za-z]{2}$")]] | None = Field(
        default=None, max_length=300
    )
    accounts: list[Text] | None = Field(default=None, max_length=10_000)


class RepCreate(_Body):
    key: RepKey
    name: Text
    email: Email
    active: bool = True
    daily_capacity: int = Field(default=20, ge=0, le=10_000)
    weight: float = Field(default=1.0, gt=0, le=1000)
    territories: list[TerritoryIn] = Field(default_factory=list, max_length=100)


class RepUpdate(_Body):
    name: Text | None = None
    email: Email | None = None
    active: bool | None = None
    daily_capacity: int | None = Field(default=None, ge=0, le=10_000)
    weight: float | None = Field(default=None, gt=0, le=1000)
    territories: list[TerritoryIn] | None = Field(default=None, max_length=100)


class ActionIn(_Body):
    actor: Text | None = None
    action_id: ActionId | None = None
    """Idempotency key: the same id again returns the first result, stores nothing."""


class RejectIn(ActionIn):
    reason: Annotated[str, Field(pattern=r"^[a-z0-9_]{1,64}$")]


class NotNowIn(ActionIn):
    reason: Text | None = None


class QualifyIn(ActionIn):
    budget: Level | None = None
    authority: Level | None = None
    need: Level | None = None
    timeframe: Level | None = None
    amount: float | None = Field(default=None, gt=0, le=1e15)
    currency: Currency = "KRW"
    expected_close: Day | None = None
    name: Text | None = None
    role: Role = "contact"


class DealActionIn(ActionIn):
    opportunity_id: int | None = Field(default=None, ge=1, le=2**62)
    """The deal that closed; required when the lead has several open deals."""
    closed_at: Moment | None = None
    """The close date (default: now); a past one is recorded as history at that date."""


class WonIn(DealActionIn):
    amount: float | None = Field(default=None, gt=0, le=1e15)


class LostIn(DealActionIn):
    reason: Annotated[str, Field(pattern=r"^[a-z0-9_]{1,64}$")]


class ContactIn(_Body):
    lead_id: int = Field(ge=1, le=2**62)
    role: Role = "contact"


class OpportunityCreate(_Body):
    name: Text
    external_id: Text | None = None
    account_id: int | None = Field(default=None, ge=1, le=2**62)
    lead_id: int | None = Field(default=None, ge=1, le=2**62)
    amount: float | None = Field(default=None, ge=0, le=1e15)
    currency: Currency = "KRW"
    expected_close: Day | None = None
    owner: RepKey | None = None
    contacts: list[ContactIn] = Field(default_factory=list, max_length=100)
    created_at: Moment | None = None
    """When the deal opened (the CRM's create/engaged date; default: now)."""
    stage: Literal["open", "won", "lost"] = "open"
    """A deal already closed in the source: won or lost at ``closed_at``."""
    closed_at: Moment | None = None
    lost_reason: Annotated[str, Field(pattern=r"^[a-z0-9_]{1,64}$")] | None = None


T = TypeVar("T")


def _run(services: Any, do: Callable[[Connection, LeadModel, Any], T], *, write: bool = True) -> T:
    # The hand-off service signals with LookupError / ValueError: 404 / 422.
    with builtin_errors(), services.engine.begin() as conn:
        now = services.clock()
        return do(conn, services.models.active(conn, now), now)


# --------------------------------------------------------------------------- reps


@router.get("/reps", operation_id="list_sales_reps", response_model=Reps)
def list_reps(services: ServicesDep) -> dict[str, Any]:
    """The sales team with today's hand-offs."""

    def do(conn: Connection, model: LeadModel, now: Any) -> dict[str, Any]:
        handoff.sync_config_reps(conn, model, now)
        today = handoff._today_counts(conn, handoff.calendar_for(model), now)
        return {"reps": [{**r, "today": today.get(r["key"], 0)} for r in handoff.list_reps(conn)]}

    return _run(services, do)


@router.post(
    "/reps",
    status_code=201,
    operation_id="create_sales_rep",
    responses=error_responses(409),
    response_model=Rep,
)
def create_rep(body: RepCreate, services: ServicesDep) -> dict[str, Any]:
    def do(conn: Connection, model: LeadModel, now: Any) -> dict[str, Any]:
        handoff.sync_config_reps(conn, model, now)
        data = body.model_dump()
        data["territories"] = [t.model_dump(exclude_none=True) for t in body.territories]
        try:
            return handoff.create_rep(conn, data, now)
        except ValueError as exc:
            raise Conflict(str(exc)) from None

    return _run(services, do)


@router.patch(
    "/reps/{key}",
    operation_id="update_sales_rep",
    responses=error_responses(404),
    response_model=Rep,
)
def update_rep(key: str, body: RepUpdate, services: ServicesDep) -> dict[str, Any]:
    def do(conn: Connection, model: LeadModel, now: Any) -> dict[str, Any]:
        handoff.sync_config_reps(conn, model, now)
        changes = body.model_dump(exclude_unset=True)
        if body.territories is not None:
            changes["territories"] = [t.model_dump(exclude_none=True) for t in body.territories]
        for k in ("name", "email", "active", "daily_capacity", "weight"):
            if k in changes and changes[k] is None:
                raise InvalidInput(f"{k}: must not be null", field=k)
        found = handoff.update_rep(conn, key, changes, now)
        if found is None:
            raise NotFound(f"key: no rep with key {key!r}", field="key")
        return found

    return _run(services, do)


# --------------------------------------------------------------------------- queue


@router.get("/sales/queue", operation_id="list_ready_queue", response_model=ReadyQueue)
def ready_queue(services: ServicesDep, limit: int = Query(100, ge=1, le=10_000)) -> dict[str, Any]:
    """The ready queue in drain order (highest priority first)."""
    with services.engine.connect() as conn:
        return {"queue": handoff.queue(conn, limit)}


@router.post("/sales/route", operation_id="route_sales_queue", response_model=RouteResult)
def route_queue(services: ServicesDep) -> dict[str, Any]:
    """Queue new MQLs and hand off what today's capacity allows."""
    report = _run(services, lambda c, m, now: handoff.route_due(c, m, now))
    return {"routed": report.routed, "waiting": report.waiting, "by_rep": report.by_rep}


@router.get(
    "/leads/{lead_id}/assignments",
    operation_id="list_lead_assignments",
    responses=error_responses(404),
    response_model=Assignments,
)
def lead_assignments(services: ServicesDep, lead_id: int = LeadId) -> dict[str, Any]:
    def do(conn: Connection, model: LeadModel, now: Any) -> dict[str, Any]:
        handoff.require_lead(conn, lead_id)
        return {"assignments": handoff.assignments_for(conn, lead_id=lead_id)}

    return _run(services, do)


# --------------------------------------------------------------------------- actions


@router.post(
    "/leads/{lead_id}/accept",
    operation_id="accept_lead",
    responses=error_responses(404, 409),
    response_model=ActionResult,
)
def accept(services: ServicesDep, body: ActionIn | None = None, lead_id: int = LeadId) -> dict:
    b = body or ActionIn()
    return _run(
        services,
        lambda c, m, now: handoff.accept(
            c, m, lead_id, now, actor=b.actor, action_id=b.action_id
        ).as_dict(),
    )


@router.post(
    "/leads/{lead_id}/reject",
    operation_id="reject_lead",
    responses=error_responses(404, 409),
    response_model=ActionResult,
)
def reject(body: RejectIn, services: ServicesDep, lead_id: int = LeadId) -> dict[str, Any]:
    return _run(
        services,
        lambda c, m, now: handoff.reject(
            c, m, lead_id, body.reason, now, actor=body.actor, action_id=body.action_id
        ).as_dict(),
    )


@router.post(
    "/leads/{lead_id}/not-now",
    operation_id="not_now_lead",
    responses=error_responses(404, 409),
    response_model=ActionResult,
)
def not_now(services: ServicesDep, body: NotNowIn | None = None, lead_id: int = LeadId) -> dict:
    b = body or NotNowIn()
    return _run(
        services,
        lambda c, m, now: handoff.not_now(
            c, m, lead_id, now, reason=b.reason, actor=b.actor, action_id=b.action_id
        ).as_dict(),
    )


@router.post(
    "/leads/{lead_id}/qualify",
    operation_id="qualify_lead",
    responses=error_responses(404, 409),
    response_model=ActionResult,
)
def qualify(body: QualifyIn, services: ServicesDep, lead_id: int = LeadId) -> dict[str, Any]:
    bant = {k: getattr(body, k) for k in ("budget", "authority", "need", "timeframe")}
    return _run(
        services,
        lambda c, m, now: handoff.qualify(
            c,
            m,
            lead_id,
            now,
            bant=bant,
            amount=body.amount,
            currency=body.currency.upper(),
            expected_close=body.expected_close,
            name=body.name,
            role=body.role,
            actor=body.actor,
            action_id=body.action_id,
        ).as_dict(),
    )


@router.post(
    "/leads/{lead_id}/won",
    operation_id="win_lead",
    responses=error_responses(404, 409),
    response_model=ActionResult,
)
def won(services: ServicesDep, body: WonIn | None = None, lead_id: int = LeadId) -> dict:
    b = body or WonIn()
    return _run(
        services,
        lambda c, m, now: handoff.win(
            c,
            m,
            lead_id,
            now,
            amount=b.amount,
            actor=b.actor,
            action_id=b.action_id,
            opportunity_id=b.opportunity_id,
            at=b.closed_at,
        ).as_dict(),
    )


@router.post(
    "/leads/{lead_id}/lost",
    operation_id="lose_lead",
    responses=error_responses(404, 409),
    response_model=ActionResult,
)
def lost(body: LostIn, services: ServicesDep, lead_id: int = LeadId) -> dict[str, Any]:
    return _run(
        services,
        lambda c, m, now: handoff.lose(
            c,
            m,
            lead_id,
            body.reason,
            now,
            actor=body.actor,
            action_id=body.action_id,
            opportunity_id=body.opportunity_id,
            at=body.closed_at,
        ).as_dict(),
    )


# --------------------------------------------------------------------------- opportunities


@router.get("/opportunities", operation_id="list_opportunities", response_model=Opportunities)
def list_opportunities(
    services: ServicesDep,
    account_id: int | None = Query(None, ge=1, le=2**62),
    stage: Literal["open", "won", "lost"] | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=10**9),
) -> dict[str, Any]:
    with services.engine.connect() as conn:
        return {
            "opportunities": handoff.list_opportunities(
                conn, account_id=account_id, stage=stage, limit=limit, offset=offset
            )
        }


@router.post(
    "/opportunities",
    status_code=201,
    operation_id="create_opportunity",
    responses=error_responses(404, 409),
    response_model=OpportunityDetail,
)
def create_opportunity(body: OpportunityCreate, services: ServicesDep) -> dict[str, Any]:
    def do(conn: Connection, model: LeadModel, now: Any) -> dict[str, Any]:
        data = body.model_dump(exclude={"stage", "closed_at", "lost_reason"})
        data["currency"] = body.currency.upper()
        if body.stage == "open" and (body.closed_at or body.lost_reason):
            raise InvalidInput("closed_at: only for a deal created won or lost", field="closed_at")
        opp_id = handoff.create_opportunity(conn, data, now, model=model)
        if body.stage != "open":
            handoff.close_opportunity(
                conn, model, opp_id, body.stage, now, at=body.closed_at, reason=body.lost_reason
            )
        found = handoff.get_opportunity(conn, opp_id)
        assert found is not None
        return found

    return _run(services, do)


@router.get(
    "/opportunities/{opp_id}",
    operation_id="get_opportunity",
    responses=error_responses(404),
    response_model=OpportunityDetail,
)
def get_opportunity(
    services: ServicesDep, opp_id: int = Path(..., ge=1, le=2**62)
) -> dict[str, Any]:
    with services.engine.connect() as conn:
        found = handoff.get_opportunity(conn, opp_id)
    if found is None:
        raise NotFound(f"opp_id: no opportunity with id {opp_id}", field="opp_id")
    return found


# --------------------------------------------------------------------------- a rep's day


class ClaimIn(_Body):
    rep: RepKey
    """The rep who takes the lead (claim) or gets it (assign)."""
    actor: Text | None = None


class ClaimOut(Out):
    """The hand-off a claim or an assignment opened."""

    lead_id: int
    rep: str
    assignment_id: int
    status: str
    due_at: datetime
    previous_rep: str | None
    used_today: int
    capacity: int


class NoteIn(_Body):
    kind: Literal["note", "call", "task"] = "note"
    body: Annotated[str, Field(min_length=1, max_length=2000), AfterValidator(_no_nul)]
    due_at: Moment | None = None
    """Required for a task."""
    author: Text | None = None


class NoteOut(Out):
    id: int
    lead_id: int
    kind: str
    body: str
    due_at: datetime | None
    done_at: datetime | None
    author: str | None
    at: datetime


class NotesOut(Out):
    items: list[NoteOut]


@router.post(
    "/leads/{lead_id}/claim",
    operation_id="claim_lead",
    responses=error_responses(404, 409),
    response_model=ClaimOut,
)
def claim_lead(body: ClaimIn, services: ServicesDep, lead_id: int = LeadId) -> dict[str, Any]:
    """A rep takes a lead waiting in the ready queue, within today's capacity (409 with
    the reason: at capacity, the account's owner, already taken...)."""
    return _run(
        services,
        lambda c, m, now: claiming.claim(c, m, lead_id, body.rep, now, actor=body.actor).as_dict(),
    )


@router.post(
    "/leads/{lead_id}/assign",
    operation_id="assign_lead",
    responses=error_responses(404, 409),
    response_model=ClaimOut,
)
def assign_lead(body: ClaimIn, services: ServicesDep, lead_id: int = LeadId) -> dict[str, Any]:
    """Give a waiting lead to a rep, or move its open hand-off to another rep, within that
    rep's capacity."""
    return _run(
        services,
        lambda c, m, now: claiming.assign(c, m, lead_id, body.rep, now, actor=body.actor).as_dict(),
    )


@router.get(
    "/leads/{lead_id}/notes",
    operation_id="list_lead_notes",
    responses=error_responses(404),
    response_model=NotesOut,
)
def list_notes(services: ServicesDep, lead_id: int = LeadId) -> dict[str, Any]:
    """The lead's notes, calls and tasks, open tasks first, then newest first."""

    def do(conn: Connection, model: LeadModel, now: Any) -> dict[str, Any]:
        handoff.require_lead(conn, lead_id)
        return {"items": notes.notes_for(conn, [lead_id])[lead_id]}

    return _run(services, do)


@router.post(
    "/leads/{lead_id}/notes",
    operation_id="add_lead_note",
    responses=error_responses(404),
    response_model=NoteOut,
)
def add_note(body: NoteIn, services: ServicesDep, lead_id: int = LeadId) -> dict[str, Any]:
    """Log a note, a call or a task (with ``due_at``) on the lead."""

    def do(conn: Connection, model: LeadModel, now: Any) -> dict[str, Any]:
        note_id = notes.add_note(
            conn, lead_id, body.kind, body.body, now, author=body.author, due_at=body.due_at
        )
        found = notes.notes_for(conn, [lead_id])[lead_id]
        return next(n for n in found if n["id"] == note_id)

    return _run(services, do)
