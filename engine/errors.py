"""Typed errors: each message says what was wrong and what to do about it."""
from __future__ import annotations


class BatonError(Exception):
    """Base class. `str(err)` is a complete sentence fit to show an operator."""

    def __init__(self, what: str, fix: str = "") -> None:
        self.what = what
        self.fix = fix
        super().__init__(f"{what} {fix}".strip())


class InvalidArgument(BatonError):
    pass


class NotFound(BatonError):
    pass


class NotReady(BatonError):
    pass


class Conflict(BatonError):
    pass


class NoBackendAvailable(BatonError):
    pass


class StoreUnavailable(BatonError):
    pass


class GateRefused(Conflict):
    """The quality gate refused to make a version active: its message shows both scores."""
