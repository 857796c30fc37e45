"""The domain errors governance's routes map to HTTP statuses."""

from __future__ import annotations

from collections.abc import Sequence


class NotFound(LookupError):
    """No such task, model version or prediction (HTTP 404)."""


class Conflict(Exception):
    """The request cannot be carried out as things stand (HTTP 409); every reason is kept."""

    def __init__(self, reasons: Sequence[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = list(reasons)


class Invalid(ValueError):
    """The request cannot be valid whatever the state (HTTP 422)."""


class Forbidden(PermissionError):
    """The caller's role may not do this particular thing (HTTP 403)."""
