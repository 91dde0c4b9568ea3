"""Privacy: export everything stored about a person, erase them, keep them suppressed.

- :mod:`~leadflow.services.privacy.person`: :func:`export_person`, :func:`erase_person`;
- :mod:`~leadflow.services.privacy.links`: which rows of which table are about a person
  (derived from the schema, so a new table cannot be forgotten);
- :mod:`~leadflow.services.privacy.guard`: an erased address is never stored or mailed
  again (:func:`is_suppressed`, :func:`guard_messages`, :func:`without_suppressed`);
- :mod:`~leadflow.services.privacy.scrub`: pure scrubbing of text and JSON.
"""

from leadflow.core.tracking import email_hash
from leadflow.services.privacy.guard import (
    AddressSuppressed,
    guard_messages,
    is_suppressed,
    refuse_suppressed,
    suppress,
    suppressed_among,
    without_suppressed,
)
from leadflow.services.privacy.links import check_coverage, person_tables
from leadflow.services.privacy.person import (
    EraseHook,
    Erasure,
    PersonNotFound,
    erase_person,
    export_person,
)
from leadflow.services.privacy.scrub import ERASED, addresses_in, strip_addresses

__all__ = [
    "ERASED",
    "AddressSuppressed",
    "EraseHook",
    "Erasure",
    "PersonNotFound",
    "addresses_in",
    "check_coverage",
    "email_hash",
    "erase_person",
    "export_person",
    "guard_messages",
    "is_suppressed",
    "person_tables",
    "refuse_suppressed",
    "strip_addresses",
    "suppress",
    "suppressed_among",
    "without_suppressed",
]
