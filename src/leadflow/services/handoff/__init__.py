"""Sales hand-off: the ready queue, paced routing, sales actions, SLA and opportunities.

- A lead that enters a hand-off stage (``sales.handoff_stages``, default: role ``handoff``),
  or that an automatic rule (a fast-pass) moved straight into a stage sales works in (appointment,
  opportunity), joins the ready queue once per stay (:func:`enqueue`, deciding with core
  :func:`~leadflow.core.routing.handoff_stages`); :func:`route_due` assigns queued leads,
  highest priority first, to reps with capacity left today (core
  :func:`~leadflow.core.routing.route`). It runs from ``leadflow sales route`` (a worker)
  and on the live path (:func:`on_leads_recomputed`, a handler of the pipeline's
  ``LeadsRecomputed`` event): leads the recompute just made due are routed straight from
  what it decided, with no read-back, and queued only when they must wait; routing is
  skipped while another router holds the lock. The same handler releases leads an
  automatic rule took out of the hand-off and sales stages (a hard bounce to the dead
  end): queue row dropped, open assignment closed (:func:`release_departed`).
- Routers are serialised (a transaction-scoped advisory lock on PostgreSQL, ``BEGIN
  IMMEDIATE`` on SQLite) so capacity counts are exact; queue rows are claimed with ``FOR
  UPDATE SKIP LOCKED`` and ``assignments.active_lead_id`` is unique, so a lead can never
  have two open hand-offs.
- Sales actions (:func:`accept`, :func:`reject`, :func:`not_now`, :func:`qualify`,
  :func:`win`, :func:`lose`) go through :func:`leadflow.services.lifecycle.record_action`,
  so they are stage changes in the history log; a refused action raises
  :class:`~leadflow.services.lifecycle.ActionRefused` and stores nothing.
- Every hand-off and outcome is a row in ``signals`` (``lead.routed``, ``lead.accepted``,
  ``lead.rejected``, ``lead.recycled``, ``lead.escalated``, ``lead.rerouted``,
  ``opportunity.created|won|lost``) for the outbox to deliver.

Every function works inside the caller's transaction.

One module per seam: ``common`` (sales spec, signals, router lock, open assignment),
``reps`` (config sync, CRUD, load with counts), ``queueing`` (the ready queue),
``routing`` (:func:`route_due`, the live-path handler, releases), ``summary`` (the
engagement summary), ``actions`` (accept, reject, not now), ``deals`` (qualify, win,
lose), ``sla``, ``opportunities``, ``claiming`` (a rep claims a waiting lead; an admin
assigns or reassigns), ``notes`` (notes, calls and tasks) and ``board`` (the dashboard's
ranked queue). Import the names from this package
(``from leadflow.services import handoff``).
"""

from __future__ import annotations

from leadflow.core.routing import ACTIVE_STATUSES
from leadflow.services.handoff.actions import ActionResult, accept, not_now, reject
from leadflow.services.handoff.claiming import ClaimRefused, ClaimResult, assign, claim
from leadflow.services.handoff.common import (
    ROUTER_LOCK,
    active_assignment,
    assignments_for,
    calendar_for,
    require_lead,
    sales_spec,
)
from leadflow.services.handoff.deals import close_opportunity, lose, qualify, win
from leadflow.services.handoff.opportunities import (
    BUYING_ROLES,
    _open_opportunity,
    check_close,
    check_moment,
    create_opportunity,
    deal_for,
    get_opportunity,
    list_opportunities,
    open_deals,
)
from leadflow.services.handoff.queueing import drop_stale, enqueue, queue
from leadflow.services.handoff.reps import (
    ROUND_ROBIN_WINDOW,
    _today_counts,
    create_rep,
    get_rep,
    list_reps,
    load_reps,
    sync_config_reps,
    update_rep,
)
from leadflow.services.handoff.routing import (
    NOT_ACCEPTED,
    RouteReport,
    on_leads_recomputed,
    release_departed,
    route_due,
    sales_stages,
)
from leadflow.services.handoff.sla import SlaReport, process_sla
from leadflow.services.handoff.summary import CONTENT_WORDS, SUMMARY_EVENTS, engagement_summary
from leadflow.services.lifecycle import ActionRefused

__all__ = [
    "ACTIVE_STATUSES",
    "BUYING_ROLES",
    "CONTENT_WORDS",
    "NOT_ACCEPTED",
    "ROUND_ROBIN_WINDOW",
    "ROUTER_LOCK",
    "SUMMARY_EVENTS",
    "ActionRefused",
    "ActionResult",
    "ClaimRefused",
    "ClaimResult",
    "RouteReport",
    "SlaReport",
    "_open_opportunity",
    "_today_counts",
    "accept",
    "active_assignment",
    "assign",
    "assignments_for",
    "calendar_for",
    "check_close",
    "check_moment",
    "claim",
    "close_opportunity",
    "create_opportunity",
    "create_rep",
    "deal_for",
    "drop_stale",
    "engagement_summary",
    "enqueue",
    "get_opportunity",
    "get_rep",
    "list_opportunities",
    "list_reps",
    "load_reps",
    "lose",
    "not_now",
    "on_leads_recomputed",
    "open_deals",
    "process_sla",
    "qualify",
    "queue",
    "reject",
    "release_departed",
    "require_lead",
    "route_due",
    "sales_spec",
    "sales_stages",
    "sync_config_reps",
    "update_rep",
    "win",
]
