"""Predictive scoring on leadflow's own store: train, version, activate, refresh, drift.

The pure parts are ``leadflow.core.predictive`` (training, evaluation, explanations) and
``leadflow.core.predictive_features`` (outcomes, point-in-time features, PSI); this module
reads the tables into polars frames (a handful of bulk queries, no per-lead ORM loop) and
writes the results back.

**Trust boundary.** A model version is stored as the pickled ``TrainedModel`` in
``predictive_models.model``. Unpickling runs code, so only rows written by this module
(``leadflow predict train``) may be loaded; the database is trusted like the code itself.
Never copy model bytes from an untrusted source into that table. The payload's hash is
the version and is re-checked on load (``TrainedModel.from_bytes``), which catches
corruption, not tampering.

**Refresh** (``refresh_predictions``, called by the worker on every pass, and by
``leadflow predict refresh``) is incremental: it scores only leads that have no prediction
from the active version, or whose events, lead row, lead state or account row changed after
their last scoring, or whose prediction is older than ``STALE_AFTER`` (the 7/30/90-day
windows, the recency and the decayed engagement slide with time even without new events).
With no active model it is a single query.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
from sklearn.metrics import roc_auc_score
from sqlalchemy import Connection, Engine, and_, delete, exists, insert, or_, select, update

from leadflow.adapters.db.tables import (
    accounts,
    events,
    lead_predictions,
    lead_states,
    leads,
    predictive_models,
    stage_changes,
)
from leadflow.core import errors
from leadflow.core.config import LeadModel
from leadflow.core.predictive import (
    Evaluation,
    PredictiveError,
    TrainedModel,
    encode,
    evaluate,
    report_json,
    train,
)
from leadflow.core.predictive_features import (
    ACQUIRED_AT,
    CONVERTED,
    ID,
    LABEL_AT,
    NEVER_FEATURES,
    PROBABILITY,
    RULE,
    DriftRow,
    FeatureSpec,
    StoredLead,
    account_column,
    attribute_schema,
    attributes_as_of,
    behaviour_columns,
    choose_attribute_keys,
    choose_event_names,
    drift,
    feature_frame,
    label_outcomes,
    lead_column,
    reference_of,
    time_holdout,
)
from leadflow.services.lifecycle import ModelCache, load_events

STALE_AFTER = timedelta(days=1)
CHUNK = 5000
IN_CHUNK = 900  # below SQLite's default limit of bound parameters
TOP = 3
Progress = Callable[[str, int, int], None]


class VersionNotFound(errors.NotFound):
    pass


# --------------------------------------------------------------------------- reading


def _chunks(ids: Sequence[int], size: int) -> Iterable[Sequence[int]]:
    for i in range(0, len(ids), size):
        yield ids[i : i + size]


def _rows(conn: Connection, stmt: Any, lead_ids: Sequence[int] | None, column: Any) -> list[Any]:
    if lead_ids is None:
        return list(conn.execute(stmt))
    out: list[Any] = []
    for part in _chunks(list(lead_ids), IN_CHUNK):
        out.extend(conn.execute(stmt.where(column.in_(part))))
    return out


def _frame(rows: list[Any], schema: dict[str, Any]) -> pl.DataFrame:
    return pl.DataFrame([tuple(r) for r in rows], schema=schema, orient="row")


TS = pl.Datetime("us", "UTC")


def read_events(conn: Connection, lead_ids: Sequence[int] | None = None) -> pl.DataFrame:
    """``lead_id, type, name, occurred_at, path, content`` of every lead event."""
    stmt = select(
        events.c.lead_id, events.c.type, events.c.name, events.c.occurred_at, events.c.page_url
    ).where(events.c.lead_id.is_not(None))
    frame = _frame(
        _rows(conn, stmt, lead_ids, events.c.lead_id),
        {ID: pl.Int64, "type": pl.Utf8, "name": pl.Utf8, "occurred_at": TS, "url": pl.Utf8},
    )
    content_stmt = select(events.c.lead_id, events.c.occurred_at, events.c.properties).where(
        events.c.lead_id.is_not(None),
        events.c.type == "track",
        events.c.name == "content_download",
    )
    keyed = [
        (r[0], r[1], _content_key(r[2]))
        for r in _rows(conn, content_stmt, lead_ids, events.c.lead_id)
    ]
    content = _frame(keyed, {ID: pl.Int64, "occurred_at": TS, "content": pl.Utf8}).unique(
        [ID, "occurred_at", "content"]
    )
    path = (
        pl.col("url")
        .str.replace(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/]*", "")
        .str.replace(r"[?#].*$", "")
    )
    frame = frame.with_columns(path.alias("path")).drop("url")
    frame = frame.join(
        content.with_columns(pl.lit("content_download").alias("name")),
        on=[ID, "occurred_at", "name"],
        how="left",
    )
    return frame.select(ID, "type", "name", "occurred_at", "path", "content")


def _content_key(props: Any) -> str | None:
    if not isinstance(props, dict):
        return None
    for key in ("asset_key", "asset", "content_key", "content", "title", "asset_type"):
        value = props.get(key)
        if isinstance(value, str | int) and str(value).strip():
            return str(value)[:200]
    return None


def read_stored(conn: Connection, lead_ids: Sequence[int] | None = None) -> list[StoredLead]:
    """What the lead and account rows of non-erased leads hold now (the undated values;
    the events say which of them were known when)."""
    stmt = (
        select(
            leads.c.id,
            leads.c.title,
            leads.c.source,
            leads.c.attributes,
            accounts.c.industry,
            accounts.c.employee_count,
            accounts.c.country,
            accounts.c.is_target,
            accounts.c.targeted_at,
            accounts.c.traits,
        )
        .select_from(leads.outerjoin(accounts, accounts.c.id == leads.c.account_id))
        .where(leads.c.erased_at.is_(None))
        .order_by(leads.c.id)
    )
    return [
        StoredLead(
            lead_id=int(r.id),
            title=r.title,
            source=r.source,
            attributes=r.attributes if isinstance(r.attributes, dict) else {},
            industry=r.industry,
            employee_count=r.employee_count,
            country=r.country,
            is_target=bool(r.is_target),
            targeted_at=r.targeted_at,
            account_traits=r.traits if isinstance(r.traits, dict) else {},
        )
        for r in _rows(conn, stmt, lead_ids, leads.c.id)
    ]


def attribute_frame(
    conn: Connection,
    model: LeadModel,
    spec: FeatureSpec,
    stored: Sequence[StoredLead],
    as_of: Mapping[int, datetime],
    progress: Progress | None = None,
) -> pl.DataFrame:
    """``lead_id`` and the attribute features of each lead in ``as_of`` at its time,
    replayed from its events (read per chunk of leads) by the core."""
    by_id = {s.lead_id: s for s in stored}
    ids = [i for i in as_of if i in by_id]
    rows: list[dict[str, Any]] = []
    for done, part in enumerate(_chunks(ids, IN_CHUNK), start=1):
        found = load_events(conn, part)
        for lead_id in part:
            (row,) = attributes_as_of(
                by_id[lead_id], found.get(lead_id, ()), [as_of[lead_id]], model, spec
            )
            rows.append({ID: lead_id, **row})
        if progress:
            progress("replaying attributes and scores", done, -(-len(ids) // IN_CHUNK))
    return pl.DataFrame(rows, schema={ID: pl.Int64, **attribute_schema(spec)}, orient="row")


def read_changes(conn: Connection) -> pl.DataFrame:
    stmt = select(
        stage_changes.c.lead_id,
        stage_changes.c.from_stage,
        stage_changes.c.to_stage,
        stage_changes.c.at,
        stage_changes.c.rule,
    )
    return _frame(
        list(conn.execute(stmt)),
        {ID: pl.Int64, "from_stage": pl.Utf8, "to_stage": pl.Utf8, "at": TS, "rule": pl.Utf8},
    )


def acquisitions(changes: pl.DataFrame, initial_stage: str) -> pl.DataFrame:
    """Acquisition time per lead: its first move out of the initial (anonymous) stage."""
    return (
        changes.filter(pl.col("from_stage") == initial_stage)
        .group_by(ID)
        .agg(pl.col("at").min().alias(ACQUIRED_AT))
    )


def population(
    conn: Connection,
    model: LeadModel,
    spec: FeatureSpec,
    now: datetime,
    lead_ids: Sequence[int] | None = None,
) -> pl.DataFrame:
    """Features of (the given, or every) non-erased lead as of ``now``."""
    stored = read_stored(conn, lead_ids)
    as_of = pl.DataFrame(
        {ID: [s.lead_id for s in stored], "as_of": [now] * len(stored)},
        schema={ID: pl.Int64, "as_of": TS},
    )
    attributes = (
        attribute_frame(conn, model, spec, stored, dict.fromkeys(as_of[ID].to_list(), now))
        if spec.attributes
        else None
    )
    return feature_frame(as_of, attributes, read_events(conn, lead_ids), spec)


# --------------------------------------------------------------------------- training


@dataclass
class StoreTraining:
    model: TrainedModel
    spec: FeatureSpec
    holdout: Evaluation | None
    store: dict[str, Any]
    reference: dict[str, dict[str, Any]] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        import json

        data: dict[str, Any] = json.loads(report_json(self.model.report))
        data["holdout"] = json.loads(_dumps(asdict(self.holdout))) if self.holdout else None
        data["store"] = self.store
        return data


def _dumps(value: Any) -> str:
    import json

    return json.dumps(value, default=lambda v: v.item() if isinstance(v, np.generic) else list(v))


def _stages_from(model: LeadModel, stage: str, option: str) -> list[str]:
    if stage not in model.stage_order:
        raise PredictiveError(
            f"{option} {stage!r}: not a stage of the main path ({', '.join(model.stage_order)})"
        )
    rank = model.rank(stage)
    return [s for s, r in model.stage_order.items() if r >= rank]


def train_from_store(
    engine: Engine,
    models: ModelCache,
    now: datetime,
    *,
    target_stage: str | None = None,
    handoff_stage: str | None = None,
    horizon_days: float = 90.0,
    holdout: float = 0.2,
    gap_days: float = 0.0,
    folds: int = 5,
    seed: int = 0,
    attributes: bool = True,
    keep: Sequence[str] = (),
    exclude: Sequence[str] = (),
    progress: Progress | None = None,
) -> StoreTraining:
    """Label outcomes, build point-in-time features, train on the earlier ~80 % (by
    labelling time), evaluate on the latest ~20 % next to the rule-based hand-off.

    ``attributes``: lead and account attributes, custom fields and the fit and engagement
    scores as of the cut-off are features (False: the event aggregates only). ``keep`` /
    ``exclude``: feature columns to keep although the leakage guard suspects them / to
    leave out (an unknown name is refused, naming it).

    ``gap_days``: features are taken as of the labelling time minus this gap (0: just
    before the outcome). A gap asks the model to see the outcome coming earlier, and
    removes the "just active before the outcome" pattern that a labelling time right after
    a hand-off puts into recency and short windows.

    ``target_stage`` defaults to the model's stage with role ``opportunity``,
    ``handoff_stage`` to its stage with role ``handoff``."""
    if horizon_days <= 0:
        raise PredictiveError("--horizon-days: must be greater than 0")
    if not 0 <= gap_days < horizon_days:
        raise PredictiveError("--gap-days: must be at least 0 and below --horizon-days")
    if not 0 < holdout < 0.9:
        raise PredictiveError("--holdout: must be between 0 and 0.9")
    started = time.perf_counter()
    with engine.connect() as conn:
        model = models.active(conn, now)
        target_stage = target_stage or model.stage_for("opportunity")
        if target_stage is None:
            raise PredictiveError(
                "--target-stage: the model has no stage with role 'opportunity'; name one"
            )
        handoff_stage = handoff_stage or model.handoff_stage
        targets = _stages_from(model, target_stage, "--target-stage")
        handoff = _stages_from(model, handoff_stage, "--handoff-stage")
        initial = model.spec.lifecycle.initial
        if target_stage == initial:
            raise PredictiveError(f"--target-stage {target_stage!r}: the initial stage")
        changes = read_changes(conn)
        labels = label_outcomes(
            acquisitions(changes, initial),
            changes,
            target_stages=targets,
            negative_stages=[model.dead_end_stage],
            handoff_stages=handoff,
            horizon_days=horizon_days,
            now=now,
        )
        if labels.height == 0:
            raise PredictiveError(
                "no lead has a known outcome yet (acquired leads that reached "
                f"{target_stage!r}, were lost/rejected/dead-ended, or are older than "
                f"{horizon_days:g} days)"
            )
        evs = read_events(conn)
        stored = read_stored(conn)
        lead_keys, account_keys = choose_attribute_keys(
            stored, [r.name for r in model.spec.fit.attributes]
        )
        spec = replace(
            choose_event_names(evs),
            attributes=attributes,
            lead_keys=lead_keys if attributes else (),
            account_keys=account_keys if attributes else (),
        )
        known = {s.lead_id for s in stored}
        labels = labels.filter(pl.col(ID).is_in(list(known)))  # no erased leads
        as_of = labels.with_columns((pl.col(LABEL_AT) - timedelta(days=gap_days)).alias("as_of"))
        now_of = pl.DataFrame(
            {ID: sorted(known), "as_of": [now] * len(known)}, schema={ID: pl.Int64, "as_of": TS}
        )
        labelled_attributes = current_attributes = None
        if attributes:
            cutoffs = dict(zip(as_of[ID].to_list(), as_of["as_of"].to_list(), strict=True))
            labelled_attributes = attribute_frame(conn, model, spec, stored, cutoffs, progress)
            current_attributes = attribute_frame(
                conn, model, spec, stored, dict.fromkeys(known, now), progress
            )
        frame = feature_frame(as_of, labelled_attributes, evs, spec).drop(ACQUIRED_AT, "as_of")
        current = feature_frame(now_of, current_attributes, evs, spec)
        never = sorted(
            k
            for k in NEVER_FEATURES
            if any(k in s.attributes or k in s.account_traits for s in stored)
        )
    earlier, latest = time_holdout(frame, LABEL_AT, holdout)
    if earlier.height == 0:
        raise PredictiveError("every labelled lead has the same labelling time: no time split")
    trained = train(
        earlier,
        CONVERTED,
        id_column=ID,
        time_column=LABEL_AT,
        rule_column=RULE,
        positive="1",
        keep=keep,
        exclude=exclude,
        folds=folds,
        seed=seed,
        progress=progress,
    )
    notes: list[str] = []
    y = latest[CONVERTED].to_numpy().astype(np.int8)
    evaluation = None
    within = None
    if 0 < y.sum() < len(y):
        p = trained.predict(encode(latest, trained.schema))
        handed = (latest[RULE] == "yes").to_numpy()
        evaluation = evaluate(y, p, handed, handoff_stage)
        if 0 < y[handed].sum() < handed.sum():
            # Where the model can add to the rule: ranking the leads the rule handed off.
            within = round(float(roc_auc_score(y[handed], p[handed])), 4)
    else:
        notes.append("the time hold-out has only one outcome: no hold-out ROC-AUC")
    current_p: np.ndarray | list[float] = (
        trained.predict(encode(current, trained.schema)) if current.height else []
    )
    reference = reference_of(
        current.with_columns(pl.Series(PROBABILITY, np.asarray(current_p, dtype=float))),
        [*trained.schema.names, PROBABILITY],
    )
    holdout_from = latest[LABEL_AT].min() if latest.height else None
    assert holdout_from is None or isinstance(holdout_from, date)  # a datetime column
    store = {
        "target_stage": target_stage,
        "target_stages": targets,
        "handoff_stage": handoff_stage,
        "horizon_days": horizon_days,
        "gap_days": gap_days,
        "labelled": labels.height,
        "positives": int(labels[CONVERTED].sum()),
        "train_rows": earlier.height,
        "holdout_rows": latest.height,
        "holdout_share": holdout,
        "holdout_from": holdout_from.isoformat() if holdout_from is not None else None,
        "holdout_roc_auc_within_handoffs": within,
        "features": {
            "as_of": "each lead's labelling time"
            + (f" minus {gap_days:g} days" if gap_days else "")
            + ": only what was known strictly before it",
            "attributes": spec.attribute_columns(),
            "custom_fields": [
                *map(lead_column, spec.lead_keys),
                *map(account_column, spec.account_keys),
            ],
            "behaviour": len(behaviour_columns(spec)),
            "never_used": {k: NEVER_FEATURES[k] for k in never},
            "leakage_dropped": [f.column for f in trained.report.leakage if f.excluded],
        },
        "rule_scores": (
            "fit score and grade of the profile as of the cut-off, engagement score of the "
            "events before it (the core scoring functions, replayed per lead)"
            if attributes
            else "none: events only (--features events)"
        ),
        "attributes": (
            "replayed from identify/group events before the cut-off; values no event "
            "carries (import custom columns, account facts) have no date and are used as "
            "stored; stage, owner, deal fields, BANT and stored scores are never read"
            if attributes
            else "none: events only (--features events)"
        ),
        "trained_at": now.isoformat(),
        "training_seconds": round(time.perf_counter() - started, 2),
        "notes": notes,
    }
    return StoreTraining(trained, spec, evaluation, store, reference)


# --------------------------------------------------------------------------- versions


def save_version(
    engine: Engine,
    model: TrainedModel,
    *,
    kind: str,
    target: str,
    report: dict[str, Any],
    features: dict[str, Any],
    now: datetime,
) -> str:
    """Store a trained model (inactive) and return its version; the same model twice is
    stored once."""
    data = model.to_bytes()
    version = model.report.version
    report = {**report, "version": version}
    with engine.begin() as conn:
        found = conn.execute(
            select(predictive_models.c.id).where(predictive_models.c.version == version)
        ).first()
        if found is None:
            conn.execute(
                insert(predictive_models).values(
                    version=version,
                    created_at=now,
                    kind=kind,
                    target=target[:64],
                    report=report,
                    features=features,
                    model=data,
                    active=False,
                )
            )
    return version


def save_store_training(engine: Engine, training: StoreTraining, now: datetime) -> str:
    return save_version(
        engine,
        training.model,
        kind="store",
        target=training.store["target_stage"],
        report=training.report(),
        features={"spec": training.spec.to_dict(), "reference": training.reference},
        now=now,
    )


def list_versions(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(
            predictive_models.c.version,
            predictive_models.c.created_at,
            predictive_models.c.kind,
            predictive_models.c.target,
            predictive_models.c.active,
            predictive_models.c.activated_at,
            predictive_models.c.report,
        ).order_by(predictive_models.c.created_at.desc(), predictive_models.c.id.desc())
    ).mappings()
    out = []
    for r in rows:
        report = r["report"] or {}
        holdout = report.get("holdout") or {}
        out.append(
            {
                "version": r["version"],
                "created_at": r["created_at"],
                "kind": r["kind"],
                "target": r["target"],
                "chosen": report.get("chosen"),
                "cv_roc_auc": (report.get("evaluation") or {}).get("roc_auc"),
                "holdout_roc_auc": holdout.get("roc_auc"),
                "active": bool(r["active"]),
                "activated_at": r["activated_at"],
            }
        )
    return out


def get_version(conn: Connection, version: str) -> dict[str, Any]:
    row = (
        conn.execute(
            select(
                predictive_models.c.version,
                predictive_models.c.created_at,
                predictive_models.c.kind,
                predictive_models.c.target,
                predictive_models.c.active,
                predictive_models.c.activated_at,
                predictive_models.c.report,
            ).where(predictive_models.c.version == version)
        )
        .mappings()
        .first()
    )
    if row is None:
        raise VersionNotFound(f"version {version!r}: no such predictive model")
    return dict(row)


def activate(engine: Engine, version: str, now: datetime) -> None:
    """Make ``version`` the only active model; predictions of other versions are dropped
    (the next refresh scores every lead with the new one)."""
    with engine.begin() as conn:
        row = conn.execute(
            select(predictive_models.c.kind, predictive_models.c.active).where(
                predictive_models.c.version == version
            )
        ).first()
        if row is None:
            raise VersionNotFound(f"version {version!r}: no such predictive model")
        if row.kind != "store":
            raise PredictiveError(
                f"version {version!r} was trained on a CSV export: only models trained from "
                "the store (`leadflow predict train` without --csv) can score leads"
            )
        if row.active:
            return
        conn.execute(
            update(predictive_models)
            .where(predictive_models.c.active.is_(True))
            .values(active=False)
        )
        conn.execute(
            update(predictive_models)
            .where(predictive_models.c.version == version)
            .values(active=True, activated_at=now)
        )
        conn.execute(delete(lead_predictions).where(lead_predictions.c.version != version))


_LOADED: dict[str, tuple[TrainedModel, FeatureSpec, dict[str, Any]]] = {}


def active_model(conn: Connection) -> tuple[str, TrainedModel, FeatureSpec, dict[str, Any]] | None:
    version = conn.execute(
        select(predictive_models.c.version).where(predictive_models.c.active.is_(True))
    ).scalar()
    if version is None:
        return None
    if version not in _LOADED:
        row = conn.execute(
            select(predictive_models.c.model, predictive_models.c.features).where(
                predictive_models.c.version == version
            )
        ).one()
        features = row.features or {}
        _LOADED.clear()
        _LOADED[version] = (
            TrainedModel.from_bytes(bytes(row.model)),
            FeatureSpec.from_dict(features.get("spec") or {}),
            features.get("reference") or {},
        )
    model, spec, reference = _LOADED[version]
    return version, model, spec, reference


# --------------------------------------------------------------------------- use


def _stale_leads(conn: Connection, version: str, now: datetime) -> list[int]:
    lp = lead_predictions
    newer_event = exists().where(
        and_(events.c.lead_id == leads.c.id, events.c.received_at > lp.c.scored_at)
    )
    stmt = (
        select(leads.c.id)
        .select_from(
            leads.outerjoin(lp, lp.c.lead_id == leads.c.id)
            .outerjoin(lead_states, lead_states.c.lead_id == leads.c.id)
            .outerjoin(accounts, accounts.c.id == leads.c.account_id)
        )
        .where(
            leads.c.erased_at.is_(None),
            or_(
                lp.c.lead_id.is_(None),
                lp.c.version != version,
                lp.c.scored_at < now - STALE_AFTER,
                leads.c.updated_at > lp.c.scored_at,
                lead_states.c.updated_at > lp.c.scored_at,
                accounts.c.updated_at > lp.c.scored_at,
                newer_event,
            ),
        )
        .order_by(leads.c.id)
    )
    return [r[0] for r in conn.execute(stmt)]


def _contributions(up: Sequence[Any], down: Sequence[Any]) -> dict[str, Any]:
    def one(c: Any) -> dict[str, Any]:
        return {"column": c.column, "value": c.value, "log_odds": c.log_odds}

    return {"raised": [one(c) for c in up], "lowered": [one(c) for c in down]}


_MODELS = ModelCache()


def refresh_predictions(engine: Engine, now: datetime, models: ModelCache | None = None) -> int:
    """Score the leads whose prediction is missing or stale with the active model; returns
    how many were scored (0 without an active model). Incremental: see the module doc.
    The worker calls it on every pass (``models``: its ModelCache, optional)."""
    models = models or _MODELS
    with engine.connect() as conn:
        active = active_model(conn)
        if active is None:
            return 0
        version, model, spec, _ = active
        ids = _stale_leads(conn, version, now)
        lead_model = models.active(conn, now)
    done = 0
    for part in _chunks(ids, CHUNK):
        with engine.begin() as conn:
            frame = population(conn, lead_model, spec, now, part)
            if frame.height == 0:
                continue
            probability, reasons = model.score(frame, TOP)
            rows: list[dict[str, Any]] = [
                {
                    "lead_id": int(lead_id),
                    "version": version,
                    "probability": round(float(p), 6),
                    "contributions": _contributions(up, down),
                    "scored_at": now,
                }
                for lead_id, p, (up, down) in zip(
                    frame[ID].to_list(), probability, reasons, strict=True
                )
            ]
            scored = [r["lead_id"] for r in rows]
            for ids_part in _chunks(scored, IN_CHUNK):
                conn.execute(
                    delete(lead_predictions).where(lead_predictions.c.lead_id.in_(ids_part))
                )
            conn.execute(insert(lead_predictions), rows)
            done += len(rows)
    with engine.begin() as conn:
        erased = select(leads.c.id).where(leads.c.erased_at.is_not(None))
        conn.execute(delete(lead_predictions).where(lead_predictions.c.lead_id.in_(erased)))
    return done


def prediction_for(conn: Connection, lead_id: int) -> dict[str, Any] | None:
    row = (
        conn.execute(select(lead_predictions).where(lead_predictions.c.lead_id == lead_id))
        .mappings()
        .first()
    )
    if row is None:
        return None
    contributions = row["contributions"] or {}
    return {
        "lead_id": row["lead_id"],
        "version": row["version"],
        "probability": row["probability"],
        "scored_at": row["scored_at"],
        "raised_by": contributions.get("raised", []),
        "lowered_by": contributions.get("lowered", []),
        "contributions": "signed log-odds per feature (see docs/predictive.md)",
    }


def drift_report(engine: Engine, models: ModelCache, now: datetime) -> tuple[str, list[DriftRow]]:
    """PSI of the score and of every model feature: now against training time."""
    with engine.connect() as conn:
        active = active_model(conn)
        if active is None:
            raise PredictiveError(
                "no active predictive model: `leadflow predict activate VERSION` first"
            )
        version, model, spec, reference = active
        if not reference:
            raise PredictiveError(f"version {version!r} has no training-time distributions")
        frame = population(conn, models.active(conn, now), spec, now)
    p = model.predict(encode(frame, model.schema)) if frame.height else np.zeros(0)
    frame = frame.with_columns(pl.Series(PROBABILITY, np.asarray(p, dtype=float)))
    return version, drift(reference, frame)


__all__ = [
    "STALE_AFTER",
    "StoreTraining",
    "VersionNotFound",
    "activate",
    "active_model",
    "drift_report",
    "get_version",
    "list_versions",
    "population",
    "prediction_for",
    "read_events",
    "refresh_predictions",
    "save_store_training",
    "save_version",
    "train_from_store",
]
