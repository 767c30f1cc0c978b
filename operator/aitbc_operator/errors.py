"""The operator's errors, with retry meaning: temporary ones are retried after a delay, permanent ones are not.

Layers that talk to the outside world (k8s/, postgres/) convert their library's exceptions into these once;
handlers map them to conditions (reason + message) and to kopf's TemporaryError/PermanentError.
"""

from __future__ import annotations

import asyncio


class OperatorError(Exception):
    """Base class. `reason` is the CamelCase condition reason shown to users."""

    reason = "Error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason

    @property
    def message(self) -> str:
        """The human-readable message (never contains a secret)."""
        return str(self)


class TemporaryError(OperatorError):
    """Retry later: the world may fix itself (server down, object not there yet, conflict)."""

    reason = "Temporary"
    delay: float = 30.0

    def __init__(self, message: str, *, reason: str | None = None, delay: float | None = None) -> None:
        super().__init__(message, reason=reason)
        if delay is not None:
            self.delay = delay


class PermanentError(OperatorError):
    """Retrying will not help until the spec (or the world, by a human) changes."""

    reason = "Permanent"


# --- Kubernetes API ---


class ApiUnavailable(TemporaryError):
    """The Kubernetes API could not be reached or answered 5xx/429."""

    reason = "ApiUnavailable"
    delay = 10.0


class ApiConflict(TemporaryError):
    """An optimistic-concurrency conflict (409); re-read and retry soon."""

    reason = "Conflict"
    delay = 1.0


class Expired(TemporaryError):
    """A watch's resourceVersion is too old (410 Gone): list again, then watch from the list's version."""

    reason = "Expired"
    delay = 1.0


class NotFound(TemporaryError):
    """A referenced object does not exist (yet)."""

    reason = "NotFound"
    delay = 15.0


class Forbidden(PermanentError):
    """RBAC refused a call (403): the operator's role lacks a rule."""

    reason = "Forbidden"


class Invalid(PermanentError):
    """The apiserver rejected an object we built (422)."""

    reason = "Invalid"


# --- specs ---


class InvalidSpec(PermanentError):
    """The resource's spec is not acceptable (the operator's own check, behind the CRD's)."""

    reason = "InvalidSpec"


# --- PostgreSQL ---


class ServerUnreachable(TemporaryError):
    """The PostgreSQL server could not be reached."""

    reason = "ServerUnreachable"
    delay = 15.0


class AuthenticationFailed(TemporaryError):
    """The admin credentials were refused (a human must fix the admin Secret; retried slowly)."""

    reason = "AuthenticationFailed"
    delay = 60.0


class InsufficientPrivilege(TemporaryError):
    """The admin role lacks a privilege (CREATEROLE, CREATEDB, membership); retried slowly."""

    reason = "InsufficientPrivilege"
    delay = 60.0


class NameConflict(PermanentError):
    """The database, role or Secret is already used by something else (another AitbcDatabase, or not ours)."""

    reason = "NameConflict"


class AdoptionRefused(NameConflict):
    """An existing role or database may not be adopted even when asked (a privileged role, or owned by one)."""

    reason = "AdoptionRefused"


class ServerBusy(TemporaryError):
    """Too much work already waits for this PostgreSQL server; retried soon."""

    reason = "ServerBusy"
    delay = 5.0


class ServerConnecting(TemporaryError):
    """Another job is opening the connection to this PostgreSQL server: retried once that attempt is over, not a
    failure of the resource (its status is left as it is). Nobody waits in line for a connection that may never come.

    ``settled`` (set by the pool) completes when the attempt is over; ``delay`` is the fallback.
    """

    reason = "ServerConnecting"
    delay = 1.0
    settled: asyncio.Future[None] | None = None


class ReconcileTimeout(TemporaryError):
    """A reconcile did not finish in time (a slow or silent server); retried."""

    reason = "Timeout"
    delay = 30.0
class Stopped(TemporaryError):
    """This replica stopped acting (it lost the leader lease): the request or SQL job was not started."""

    reason = "Stopped"
