"""For webhook receivers: ``from leadflow.webhooks import verify``.

``verify(secret, request.headers["Leadflow-Signature"], raw_body, now=time.time())`` is
True when the request came from leadflow (see docs/webhooks.md).
"""

from __future__ import annotations

from leadflow.core.webhooks import (
    DEFAULT_TOLERANCE,
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    sign,
    verify,
)

__all__ = [
    "DEFAULT_TOLERANCE",
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "sign",
    "verify",
]
