"""Campaigns: program email funnels (sent -> opened -> clicked -> form) and the campaign
report."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import polars as pl

from leadflow.services.reports.common import NONE, Period
from leadflow.services.reports.store import Store

# --------------------------------------------------------------------------- campaigns


def _rate(num: str, den: str) -> pl.Expr:
    return pl.when(pl.col(den) > 0).then(pl.col(num) / pl.col(den))


# A form submission counts toward the email that led to it when it comes this soon after.
FORM_AFTER_EMAIL = timedelta(days=14)


def program_email_funnel(store: Store, period: Period) -> list[dict[str, Any]]:
    """Per program and step: emails sent in the period -> opened -> clicked -> a form
    submitted within 14 days of the send, with the rates of each step."""
    sends = store.sends
    if sends.height == 0:
        return []
    sent = sends.filter(
        pl.col("program_key").is_not_null()
        & pl.col("sent_at").is_not_null()
        & (pl.col("sent_at") >= period.start)
        & (pl.col("sent_at") < period.end)
    )
    if sent.height == 0:
        return []
    subs = store.form_submissions
    converted = (
        sent.select("id", "lead_id", "sent_at")
        .join(subs.select("lead_id", "submitted_at"), on="lead_id")
        .filter(
            (pl.col("submitted_at") >= pl.col("sent_at"))
            & (pl.col("submitted_at") < pl.col("sent_at") + FORM_AFTER_EMAIL)
        )
        .select("id")
        .unique()
        .with_columns(form=pl.lit(True))
    )
    return (
        sent.join(converted, on="id", how="left")
        .group_by("program_key", "step_id")
        .agg(
            sent=pl.len(),
            opened=pl.col("opened_at").is_not_null().sum(),
            clicked=pl.col("clicked_at").is_not_null().sum(),
            form_submitted=pl.col("form").fill_null(False).sum(),
            unsubscribed=pl.col("unsubscribed_at").is_not_null().sum(),
            bounced=pl.col("bounced_at").is_not_null().sum(),
        )
        .with_columns(
            open_rate=_rate("opened", "sent"),
            click_rate=_rate("clicked", "sent"),
            form_rate=_rate("form_submitted", "sent"),
        )
        .sort("program_key", "step_id")
        .rename({"program_key": "program", "step_id": "step"})
        .to_dicts()
    )


def campaigns_report(store: Store, period: Period) -> dict[str, Any]:
    """Campaign staff's view: e-mail rates, form conversion, webinars, content."""
    ev = store.events.filter((pl.col("at") >= period.start) & (pl.col("at") < period.end))
    who = pl.coalesce(pl.col("lead_id").cast(pl.String), pl.lit("a:") + pl.col("anonymous_id"))
    ev = ev.with_columns(person=who)
    named = lambda n: pl.col("person").filter(pl.col("name") == n).n_unique()  # noqa: E731
    email = (
        ev.filter(pl.col("name").str.starts_with("email_").fill_null(False))
        .with_columns(campaign=pl.col("campaign").fill_null(NONE))
        .group_by("campaign")
        .agg(
            sent=named("email_sent"),
            opened=named("email_open"),
            clicked=named("email_click"),
            unsubscribed=named("email_unsubscribe"),
            bounced=named("email_bounce"),
        )
        .with_columns(
            open_rate=_rate("opened", "sent"),
            click_rate=_rate("clicked", "sent"),
            click_to_open=_rate("clicked", "opened"),
        )
        .sort("sent", "campaign", descending=[True, False])
    )
    forms = (
        ev.filter(pl.col("campaign").is_not_null())
        .group_by("campaign")
        .agg(
            visitors=pl.col("person").filter(pl.col("type") == "page").n_unique(),
            form_submitters=named("form_submit"),
            leads=pl.col("lead_id").drop_nulls().n_unique(),
        )
        .with_columns(form_conversion=_rate("form_submitters", "visitors"))
        .sort("visitors", "campaign", descending=[True, False])
    )
    webinars = (
        ev.filter(pl.col("name").is_in(["webinar_registered", "webinar_attended"]))
        .with_columns(webinar=pl.col("webinar").fill_null(NONE))
        .group_by("webinar")
        .agg(registered=named("webinar_registered"), attended=named("webinar_attended"))
        .with_columns(attendance_rate=_rate("attended", "registered"))
        .sort("webinar")
    )
    content = (
        ev.filter(pl.col("name") == "content_download")
        .with_columns(asset=pl.col("asset").fill_null(NONE))
        .group_by("asset", "asset_type")
        .agg(downloads=pl.len(), people=pl.col("person").n_unique())
        .sort("downloads", "asset", descending=[True, False])
    )
    seminars = ev.filter(pl.col("name") == "event_attended")["person"].n_unique()
    return {
        "report": "campaigns",
        "period": period.as_dict(),
        "email": email.to_dicts(),
        "forms": forms.to_dicts(),
        "webinars": webinars.to_dicts(),
        "content": content.to_dicts(),
        "seminar_attendees": seminars,
        "programs": program_email_funnel(store, period),
        "seminars": [
            {k: v for k, v in row.items() if k != "emails"}
            for row in store.seminar_funnel
            if period.start <= row["starts_at"] < period.end
        ],
        "definitions": {
            "sent/opened/clicked": "distinct people with an email_sent / email_open / "
            "email_click event of the campaign (utm_campaign) in the period",
            "open_rate": "opened / sent; click_rate: clicked / sent; click_to_open: clicked / "
            "opened",
            "form_conversion": "people who submitted a form / people who viewed a page, per "
            "utm_campaign (a person is a lead, or an anonymous id not yet linked)",
            "attendance_rate": "attended / registered people per webinar",
            "downloads": "content_download events per asset; people: distinct people",
            "seminar_attendees": "distinct people with event_attended in the period",
            "programs": "per nurture program step: emails sent in the period, how many were "
            "opened and clicked, and after how many the lead submitted a form within 14 "
            "days; rates are over sent",
            "seminars": "per seminar starting in the period: invited -> registered -> "
            "reminded -> attended / no-show -> followed up, and participants who reached "
            "MQL or an opportunity after the start",
        },
    }
