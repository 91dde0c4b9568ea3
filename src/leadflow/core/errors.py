"""The application's error hierarchy: what went wrong, said once, for every entrypoint.

A use case raises one of these (or a domain exception that subclasses one); the entrypoint
maps the *kind* to its own vocabulary in one place: the HTTP API in
:mod:`leadflow.entrypoints.api.errors` (status code and ``{"detail", "field"}`` body), the
CLI its exit message. Nothing here knows about HTTP.

``str(error)`` is the message meant for a person, by convention ``<field>: <reason>``;
``field`` names the input at fault when there is one.

Each kind also subclasses the built-in exception that callers already catch (``NotFound``
is a ``LookupError``, ``InvalidInput`` a ``ValueError``...), so making an existing domain
exception a subclass keeps every ``except LookupError`` / ``except ValueError`` working.
"""

from __future__ import annotations


class LeadflowError(Exception):
    """Base of every error the application raises on purpose."""

    field: str | None = None

    def __init__(self, *args: object, field: str | None = None) -> None:
        super().__init__(*args)
        if field is not None:
            self.field = field

    @property
    def detail(self) -> str:
        """The message for a person (``str()``, without the quotes LookupError adds)."""
        return str(self.args[0]) if len(self.args) == 1 else str(self)


class BadRequest(LeadflowError, ValueError):
    """A value is refused before anything is looked at (a filter out of range...)."""


class InvalidInput(LeadflowError, ValueError):
    """The input is well-formed but refused by the rules (a bad criterion, a bad option).

    ``issues``, when given, lists the problems found as ``{"loc", "msg", "type"}`` (the
    shape of a request validation error), and is what the caller is shown.
    """

    def __init__(
        self,
        *args: object,
        field: str | None = None,
        issues: list[dict[str, object]] | None = None,
    ) -> None:
        super().__init__(*args, field=field)
        self.issues = issues


class Unauthorized(LeadflowError):
    """Missing or invalid credentials."""


class Forbidden(LeadflowError):
    """Valid credentials that may not do this."""


class NotFound(LeadflowError, LookupError):
    """What the request names does not exist."""


class Conflict(LeadflowError, ValueError):
    """The current state refuses the change (taken key, refused transition, full seminar)."""


class UpstreamFailed(LeadflowError):
    """A service leadflow depends on (the mail server) refused or failed."""


class Unavailable(LeadflowError):
    """leadflow cannot answer now (the database is unreachable); try again later."""


__all__ = [
    "BadRequest",
    "Conflict",
    "Forbidden",
    "InvalidInput",
    "LeadflowError",
    "NotFound",
    "Unauthorized",
    "Unavailable",
    "UpstreamFailed",
]
