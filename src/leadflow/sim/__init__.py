"""The demo world: a deterministic simulated B2B market, loaded through ingestion.

``build_world(WorldConfig(...))`` draws the cast; ``iter_messages(world)`` streams its
Segment messages in time order; :mod:`leadflow.sim.loader` stores them with
:func:`leadflow.services.ingest.ingest`, exactly as the tracking API would.
"""

from leadflow.sim.stream import iter_days, iter_messages, iter_tagged
from leadflow.sim.world import DEFAULT_UNTIL, World, WorldConfig, build_world

__all__ = [
    "DEFAULT_UNTIL",
    "World",
    "WorldConfig",
    "build_world",
    "iter_days",
    "iter_messages",
    "iter_tagged",
]
