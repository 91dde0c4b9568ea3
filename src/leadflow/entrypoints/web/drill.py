"""Drill-downs: the lead (or deal) list behind each figure of a dashboard page.

Every figure links to ``/leads?<filters>`` (or ``/deals?<filters>``) with filters whose
count is the figure (see ``docs/lead-lists.md``, "Drill-downs"): the funnel's cells and
Sankey links are stage-log moves and balances (``move_to``, ``move_from``, ``moved_after``,
``moved_before``, ``stage`` + ``as_of``), the KPI tiles and attribution bars conversions
and touches (``converted_to``, ``touched_channel``...), the program and form figures
enrolments, sends and submissions. The builders here only write query strings; what the
filters mean is :mod:`leadflow.services.lead_lists`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from leadflow.core.config import LeadModel
from leadflow.core.deals import DEAL_STAGES, LOST, OPEN, WON
from leadflow.core.lead_lists import NEW

Params = Iterable[tuple[str, str]]


def day(moment: datetime) -> str:
    """A period bound as the list's filters show it (a date at UTC midnight)."""
    if moment.hour == moment.minute == moment.second == moment.microsecond == 0:
        return moment.date().isoformat()
    return moment.isoformat()


def leads_href(params: Params) -> str:
    return "/leads?" + urlencode(list(params))


def deals_href(params: Params) -> str:
    return "/deals?" + urlencode(list(params))


def _moves(start: datetime, end: datetime) -> list[tuple[str, str]]:
    return [("moved_after", day(start)), ("moved_before", day(end))]


def moved(
    start: datetime, end: datetime, *, to: Iterable[str] = (), frm: Iterable[str] = ()
) -> str:
    """The leads that made such a move in ``[start, end)``."""
    params = [("move_from", s) for s in frm] + [("move_to", s) for s in to]
    return leads_href(params + _moves(start, end))


def in_stage(stage: str, at: datetime) -> str:
    """The leads in ``stage`` at the instant ``at`` (a balance)."""
    return leads_href([("stage", stage), ("as_of", day(at))])


def out_targets(model: LeadModel, stage: str, next_stage: str | None) -> dict[str, list[str]]:
    """The stages each flow-out column of ``stage`` counts moves into (the split of
    :func:`leadflow.core.funnel.flow_and_balance`: next, else recycle, else dead end, else
    other)."""
    spec = model.spec
    stages = list(spec.stages)
    recycle = [s for s in stages if spec.stages[s].recycle is not None and s != next_stage]
    dead = [s for s in (spec.lifecycle.dead_end,) if s != next_stage and s not in recycle]
    taken = {next_stage, *recycle, *dead}
    return {
        "out_next": [next_stage] if next_stage else [],
        "out_recycle": recycle,
        "out_dead_end": dead,
        "out_other": [s for s in stages if s not in taken],
    }


def funnel_cells(
    rows: Iterable[Mapping[str, Any]], model: LeadModel, start: datetime, end: datetime
) -> dict[str, dict[str, str]]:
    """Stage -> column -> the list of the leads behind that cell."""
    out: dict[str, dict[str, str]] = {}
    for row in rows:
        stage = row["stage"]
        if stage not in model.spec.stages:
            continue
        cells = {
            "balance_start": in_stage(stage, start),
            "flow_in": moved(start, end, to=[stage]),
            "flow_out": moved(start, end, frm=[stage]),
            "balance_end": in_stage(stage, end),
        }
        for column, targets in out_targets(model, stage, row.get("next_stage")).items():
            if targets:
                cells[column] = moved(start, end, to=targets, frm=[stage])
        out[stage] = cells
    return out


def sankey_hrefs(
    links: Iterable[Mapping[str, Any]], start: datetime, end: datetime, suffix: str = "↩"
) -> dict[str, str]:
    """``source>target`` (a link of :func:`~leadflow.entrypoints.web.funnel.sankey_graph`)
    and a node's name -> the list behind it. A node's figure is the larger of what flows in
    and what flows out (ECharts' rule), so it lists those moves."""
    out: dict[str, str] = {}
    into: dict[str, dict[str, int]] = {}
    away: dict[str, dict[str, int]] = {}
    for link in links:
        source, target = str(link["source"]), str(link["target"])
        stage = target.removesuffix(suffix)
        out[f"{source}>{target}"] = moved(start, end, to=[stage], frm=[_source(source)])
        into.setdefault(target, {})[_source(source)] = int(link["value"])
        away.setdefault(source, {})[stage] = int(link["value"])
    for node in {*into, *away}:
        incoming, outgoing = into.get(node, {}), away.get(node, {})
        if sum(incoming.values()) >= sum(outgoing.values()):
            out[node] = moved(start, end, to=[node.removesuffix(suffix)], frm=sorted(incoming))
        else:
            out[node] = moved(start, end, to=sorted(outgoing), frm=[node])
    return out


def _source(name: str) -> str:
    return NEW if name == NEW else name


def converted(stage: str, start: datetime, end: datetime, **extra: str) -> str:
    """The leads whose first entry into ``stage`` is in ``[start, end)``."""
    params = [
        ("converted_to", stage),
        ("converted_after", day(start)),
        ("converted_before", day(end)),
    ]
    params += [(k, v) for k, v in extra.items() if v]
    return leads_href(params)


def deal_cells(start: datetime, end: datetime) -> dict[str, dict[str, str]]:
    """Deal stage -> column -> the list of the deals behind that cell of the deal funnel
    (:func:`leadflow.core.deals.deal_funnel`)."""
    period = [("created_after", day(start)), ("created_before", day(end))]
    closed = [("closed_after", day(start)), ("closed_before", day(end))]
    out: dict[str, dict[str, str]] = {}
    for stage in DEAL_STAGES:
        cells = {
            "balance_start": deals_href([("status", stage), ("as_of", day(start))]),
            "balance_end": deals_href([("status", stage), ("as_of", day(end))]),
            "flow_in": deals_href(period if stage == OPEN else [("status", stage), *closed]),
        }
        if stage == OPEN:
            cells["flow_out"] = deals_href(closed)
            cells["out_won"] = deals_href([("status", WON), *closed])
            cells["out_lost"] = deals_href([("status", LOST), *closed])
        out[stage] = cells
    return out
