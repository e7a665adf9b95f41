"""What an operator wants for a version (desired) and what its process is doing (observed).

The observed state changes only through `StateCell.cas`: expected state(s) -> new state, as
llama-swap's `swapState` does, so two actors racing on one backend cannot both win.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from enum import Enum


class Desired(str, Enum):  # noqa: UP042 - StrEnum changes str() of a member
    """Persisted with the version: after a restart every version not `unloaded` comes back."""

    SERVING = "serving"  # active or canary
    STANDBY = "standby"  # loaded, ready to take traffic (rollback, failover)
    UNLOADED = "unloaded"

    @staticmethod
    def loaded(persisted: str | None) -> bool:
        """Whether a persisted desired state wants a process (serving or standby)."""
        return persisted in (Desired.SERVING.value, Desired.STANDBY.value)


class State(str, Enum):  # noqa: UP042 - StrEnum changes str() of a member
    STARTING = "starting"
    WARMING = "warming"
    READY = "ready"
    UNHEALTHY = "unhealthy"  # alive but failing its liveness checks: no traffic, restarted
    DRAINING = "draining"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


# The only place where the allowed changes of a backend's state are listed.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.STOPPED: frozenset({State.STARTING}),
    State.STARTING: frozenset({State.WARMING, State.FAILED, State.STOPPING}),
    State.WARMING: frozenset({State.READY, State.FAILED, State.STOPPING}),
    State.READY: frozenset({State.UNHEALTHY, State.DRAINING, State.FAILED, State.STOPPING}),
    State.UNHEALTHY: frozenset({State.FAILED, State.DRAINING, State.STOPPING}),
    State.DRAINING: frozenset({State.STOPPING, State.FAILED}),
    State.STOPPING: frozenset({State.STOPPED}),
    State.FAILED: frozenset({State.STARTING, State.STOPPING, State.STOPPED}),
}
ALIVE = frozenset({State.STARTING, State.WARMING, State.READY, State.UNHEALTHY, State.DRAINING})
LOADING = frozenset({State.STARTING, State.WARMING})


class StateCell:
    """One backend's observed state, its reason, and a wake-up for anyone waiting on a change."""

    def __init__(self, on_change: Callable[[State, str], None]) -> None:
        self.state = State.STOPPED
        self.reason = ""
        self._on_change = on_change
        self._changed = asyncio.Event()

    def cas(self, expected: State | Collection[State], new: State, reason: str = "") -> bool:
        """Move to `new` if the state is `expected` (one or a set) and the move is allowed.
        False, and nothing changes, otherwise."""
        allowed = {expected} if isinstance(expected, State) else set(expected)
        if self.state not in allowed or new not in TRANSITIONS[self.state]:
            return False
        self.state, self.reason = new, reason
        self._changed.set()
        self._changed = asyncio.Event()
        self._on_change(new, reason)
        return True

    def explain(self, reason: str) -> None:
        """A better reason for the current state, once it is known (e.g. a crash's exit code)."""
        self.reason = reason

    async def wait_change(self, timeout: float | None = None) -> None:
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            pass
