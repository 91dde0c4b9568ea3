"""Ingest tracking messages: store events and stitch identities, one transaction per call.

Used by the tracking API, the demo world and the importers alike, so every event enters
the store the same way. A call returns only after its transaction committed: the API's
2xx therefore means "stored".

Identity rules (Segment's model):
- ``identify`` with a ``userId`` or an e-mail trait finds or creates the lead and links the
  message's ``anonymousId`` to it; every earlier anonymous event of that id joins the lead.
- ``track`` / ``page`` of a known ``userId`` or linked ``anonymousId`` joins the lead directly;
  a ``userId`` never seen before creates a lead for it. Unknown anonymous events stay
  anonymous until an identify links them.
- ``alias`` joins ``previousId`` (an old user id or anonymous id) to ``userId``; if both
  belong to different leads, the two leads are merged into the older one.
- ``group`` links the lead to an account (matched by group id, then domain).
"""

from __future__ import annotations

from leadflow.core.traits import ACCOUNT_COLUMN_TRAITS as ACCOUNT_COLUMN_TRAITS
from leadflow.core.traits import FREE_MAIL_DOMAINS as FREE_MAIL_DOMAINS
from leadflow.core.traits import email_domain as email_domain
from leadflow.services.ingest.accounts import _account_from_company as _account_from_company
from leadflow.services.ingest.accounts import apply_lead_traits as apply_lead_traits
from leadflow.services.ingest.accounts import find_or_create_account as find_or_create_account
from leadflow.services.ingest.group_commit import IngestQueue as IngestQueue
from leadflow.services.ingest.identities import _Identities as _Identities
from leadflow.services.ingest.merge import merge_leads as merge_leads
from leadflow.services.ingest.store import EVENT_COLUMNS as EVENT_COLUMNS
from leadflow.services.ingest.store import STORED_EVENTS as STORED_EVENTS
from leadflow.services.ingest.store import AfterIngest as AfterIngest
from leadflow.services.ingest.store import IngestResult as IngestResult
from leadflow.services.ingest.store import Part as Part
from leadflow.services.ingest.store import ingest as ingest
from leadflow.services.ingest.store import ingest_in as ingest_in
from leadflow.services.ingest.store import ingest_parts as ingest_parts
from leadflow.services.ingest.store import ingest_parts_in as ingest_parts_in
from leadflow.services.ingest.turn import TURN_TIMEOUT as TURN_TIMEOUT
from leadflow.services.ingest.turn import TURN_TIMEOUT_OPTION as TURN_TIMEOUT_OPTION
from leadflow.services.ingest.turn import _turn_for as _turn_for
from leadflow.services.ingest.turn import _write_turn as _write_turn
