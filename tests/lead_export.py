"""A generated lead export shaped like an online-education company's CRM export.

Columns and placeholders follow the real thing ("Select" in form fields, blanks, Yes/No,
"Lead Number" as a row id, "Prospect ID" as a UUID). The honest columns are known before
sales contacts the lead; the planted columns are typed in after contact and give the
outcome away:

- ``Tags``: status tags set by sales after contact (blank for leads never contacted);
- ``Lead Quality`` and ``Lead Profile``: filled only for contacted leads;
- ``Last Notable Activity``: overwritten until the outcome;
- ``Lead Number``: a row id (descending, as in the export), carrying the time drift.

``Asymmetrique Activity Index`` has a suspicious name but only a weak, honest signal:
the guard must keep it.
"""

from __future__ import annotations

import uuid

import numpy as np
import polars as pl

PLANTED = ("Tags", "Lead Quality", "Lead Profile", "Last Notable Activity", "Lead Number")
TARGET = "Converted"


def _pick(rng: np.random.Generator, levels: list[str], weights: np.ndarray) -> np.ndarray:
    """One level per row; ``weights`` is (rows, levels), not necessarily normalised."""
    p = weights / weights.sum(axis=1, keepdims=True)
    u = rng.random(len(p))[:, None]
    return np.array(levels, dtype=object)[(u > p.cumsum(axis=1)).sum(axis=1)]


def lead_export(rows: int = 5000, seed: int = 7) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n = rows
    origin = rng.choice(
        ["Landing Page Submission", "API", "Lead Add Form", "Lead Import"],
        n,
        p=[0.53, 0.39, 0.07, 0.01],
    )
    source = np.where(
        origin == "Lead Add Form",
        rng.choice(["Reference", "Welingak Website"], n, p=[0.7, 0.3]),
        rng.choice(
            ["Google", "Direct Traffic", "Olark Chat", "Organic Search", "Referral Sites", ""],
            n,
            p=[0.33, 0.29, 0.20, 0.13, 0.02, 0.03],
        ),
    )
    do_not_email = np.where(rng.random(n) < 0.08, "Yes", "No")
    occupation = rng.choice(
        ["Unemployed", "Working Professional", "Student", "Other", "Housewife", ""],
        n,
        p=[0.60, 0.08, 0.02, 0.005, 0.005, 0.29],
    )
    specialization = rng.choice(
        [
            "Select", "", "Finance Management", "Human Resource Management",
            "Marketing Management", "Operations Management", "Business Administration",
            "IT Projects Management", "Supply Chain Management",
            "Banking, Investment And Insurance",
            "Media and Advertising", "Travel and Tourism",
        ],
        n,
        p=[0.21, 0.16, 0.11, 0.09, 0.09, 0.06, 0.05, 0.05, 0.04, 0.05, 0.05, 0.04],
    )  # fmt: skip
    country = rng.choice(["India", "", "United States", "United Arab Emirates", "Singapore"], n,
                         p=[0.70, 0.26, 0.02, 0.01, 0.01])  # fmt: skip
    engaged = rng.normal(0, 1, n)
    visits = np.where(origin == "Lead Add Form", 0, rng.poisson(np.exp(0.9 + 0.35 * engaged)))
    time_spent = np.where(
        visits == 0, 0, np.round(np.exp(5.6 + 0.7 * engaged + rng.normal(0, 0.7, n)))
    ).astype(int)
    pages = np.where(visits == 0, 0, np.round(rng.gamma(2.0, 1.2, n) + 0.3 * engaged, 2))
    pages = np.clip(pages, 0, None)
    last_activity = _pick(
        rng,
        ["Email Opened", "SMS Sent", "Olark Chat Conversation", "Page Visited on Website",
         "Converted to Lead", "Email Bounced", "Form Submitted on Website"],
        np.column_stack([
            np.full(n, 0.37), np.full(n, 0.25) * np.exp(0.3 * engaged), np.full(n, 0.11),
            np.full(n, 0.07), np.full(n, 0.05), np.full(n, 0.04), np.full(n, 0.02),
        ]),
    )  # fmt: skip
    time_index = np.arange(n) / n  # later leads convert more (the drift a row id picks up)
    logit = (
        -1.35
        + 0.9 * (time_spent > 600)
        + 0.5 * np.log1p(time_spent) / 7
        + 0.6 * engaged
        + 2.6 * (origin == "Lead Add Form")
        + 0.5 * (source == "Reference")
        - 0.3 * (source == "Olark Chat")
        - 0.9 * (do_not_email == "Yes")
        + 2.0 * (occupation == "Working Professional")
        - 0.6 * (occupation == "")
        + 0.5 * (last_activity == "SMS Sent")
        - 0.9 * (last_activity == "Email Bounced")
        - 0.4 * (last_activity == "Olark Chat Conversation")
        + 0.15 * np.isin(specialization, ["Finance Management", "Marketing Management"])
        + 0.5 * time_index
    )
    converted = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    asym = np.where(
        rng.random(n) < 0.55,
        np.where(rng.random(n) < 0.5 + 0.08 * (converted * 2 - 1), "02.Medium", "01.High"),
        "",
    )
    asym = np.where((asym == "01.High") & (rng.random(n) < 0.1), "03.Low", asym)

    # --- typed in by sales after contact: nearly every converter was contacted, 35 % of the rest
    contacted = rng.random(n) < np.where(converted == 1, 0.97, 0.35)
    won_tags = ["Will revert after reading the email", "Closed by Horizzon", "Lost to EINS"]
    lost_tags = [
        "Ringing", "Interested in other courses", "Already a student", "switched off",
        "Not doing further education", "invalid number", "wrong number given",
        "Interested  in full time MBA",
    ]  # fmt: skip
    tag_won = rng.choice(won_tags, n, p=[0.7, 0.2, 0.1])
    tag_lost = rng.choice(lost_tags, n, p=[0.3, 0.22, 0.15, 0.1, 0.07, 0.06, 0.05, 0.05])
    swapped = rng.random(n) < np.where(converted == 1, 0.01, 0.02)  # a tag that was wrong
    tags = np.where((converted == 1) ^ swapped, tag_won, tag_lost)
    tags = np.where(rng.random(n) < 0.06, "Busy", tags)  # an ambiguous tag, both outcomes
    tags = np.where(contacted, tags, "")
    quality = np.where(
        converted == 1,
        rng.choice(["High in Relevance", "Might be", "Not Sure"], n, p=[0.25, 0.45, 0.30]),
        rng.choice(["Might be", "Not Sure", "Low in Relevance", "Worst"], n,
                   p=[0.35, 0.35, 0.15, 0.15]),
    )  # fmt: skip
    quality = np.where(contacted, quality, "")
    profile = np.where(
        converted == 1,
        rng.choice(["Potential Lead", "Other Leads", "Lateral Student"], n, p=[0.5, 0.4, 0.1]),
        rng.choice(["Other Leads", "Student of SomeSchool", "Potential Lead"], n,
                   p=[0.45, 0.3, 0.25]),
    )  # fmt: skip
    profile = np.where(contacted & (rng.random(n) < 0.92), profile, "Select")
    notable = np.where(
        converted == 1,
        rng.choice(["SMS Sent", "Modified", "Email Opened", "Had a Phone Conversation"], n,
                   p=[0.55, 0.17, 0.20, 0.08]),
        rng.choice(["Modified", "Email Opened", "SMS Sent", "Olark Chat Conversation",
                    "Unreachable", "Email Link Clicked"], n,
                   p=[0.50, 0.25, 0.06, 0.10, 0.05, 0.04]),
    )  # fmt: skip

    lead_number = 579533 + np.sort(rng.choice(81205, n, replace=False))  # in time order
    order = np.arange(n)[::-1]  # rows from newest to oldest, like the export
    frame = pl.DataFrame(
        {
            "Prospect ID": [str(uuid.UUID(int=int(rng.integers(0, 2**63)))) for _ in range(n)],
            "Lead Number": lead_number[order].astype(np.int64),
            "Lead Origin": origin[order],
            "Lead Source": source[order],
            "Do Not Email": do_not_email[order],
            "Converted": converted[order],
            "TotalVisits": np.where(rng.random(n) < 0.015, "", visits.astype(str))[order],
            "Total Time Spent on Website": time_spent[order],
            "Page Views Per Visit": np.where(pages == 0, "0", np.char.mod("%.2f", pages))[order],
            "Last Activity": last_activity[order],
            "Country": country[order],
            "Specialization": specialization[order],
            "What is your current occupation": occupation[order],
            "Tags": tags[order],
            "Lead Quality": quality[order],
            "Lead Profile": profile[order],
            "Asymmetrique Activity Index": asym[order],
            "Last Notable Activity": notable[order],
        }
    )
    return frame
