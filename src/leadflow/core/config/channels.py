"""The model's optional ``channels:`` section: a company's own channel taxonomy.

::

    channels:
      - name: partner_webinar
        match:
          - {utm_source: [partnerco], utm_medium: [webinar]}
          - {referrer: [partnerco.com]}
      - name: paid_social
        match:
          - {utm_medium: [cpc, paid_social], utm_source: [linkedin, facebook]}

Channels are tried in order, the first matching wins; within one ``match`` entry every key
must hold (a list means "any of"); a touch no channel matches keeps the built-in grouping
(:mod:`leadflow.core.channels`). :func:`taxonomy` turns the section into the pure
:class:`~leadflow.core.channels.ChannelTaxonomy` the reports use.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints, model_validator

from leadflow.core.channels import ChannelRule, ChannelTaxonomy, CustomChannel
from leadflow.core.config.base import StrList, _Spec

ChannelName = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]*$", min_length=1, max_length=32)
]
"""Lower-case letters, digits, ``_ . -``; at most 32 characters (the stored channel)."""


class ChannelMatchSpec(_Spec):
    utm_source: StrList | None = None
    utm_medium: StrList | None = None
    referrer: StrList | None = None
    """Referrer host patterns: ``partner.com`` (and subdomains), ``google.`` or a glob."""
    event: StrList | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> ChannelMatchSpec:
        given = [self.utm_source, self.utm_medium, self.referrer, self.event]
        if all(v is None for v in given):
            raise ValueError("give at least one of utm_source, utm_medium, referrer, event")
        if any(v is not None and (not v or any(not p.strip() for p in v)) for v in given):
            raise ValueError("a pattern list must not be empty nor hold an empty pattern")
        return self


class ChannelSpec(_Spec):
    name: ChannelName
    match: Annotated[list[ChannelMatchSpec], Field(min_length=1)]


def _unique(channels: list[ChannelSpec]) -> list[ChannelSpec]:
    seen: set[str] = set()
    for channel in channels:
        if channel.name in seen:
            raise ValueError(f"channel {channel.name!r} is listed twice")
        seen.add(channel.name)
    return channels


ChannelsSection = Annotated[list[ChannelSpec], AfterValidator(_unique)]


def taxonomy(channels: list[ChannelSpec] | None) -> ChannelTaxonomy:
    """The pure taxonomy of a model's ``channels:`` (none: the built-in grouping alone)."""

    def tup(values: list[str] | None) -> tuple[str, ...] | None:
        return None if values is None else tuple(v.strip() for v in values)

    return ChannelTaxonomy(
        tuple(
            CustomChannel(
                c.name,
                tuple(
                    ChannelRule(
                        utm_source=tup(m.utm_source),
                        utm_medium=tup(m.utm_medium),
                        referrer=tup(m.referrer),
                        event=tup(m.event),
                    )
                    for m in c.match
                ),
            )
            for c in channels or ()
        )
    )
