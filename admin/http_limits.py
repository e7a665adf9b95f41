"""Limits on the HTTP server the app runs in, against slow and piled-up clients (slowloris).

`chainlit run` builds uvicorn's Config itself, with no timeout on a request's headers (h11 has none;
uvicorn's keep-alive timeout starts only after a first response) and no cap on connections. A few
thousand half-sent requests then hold the process's file descriptors (1,024 by default), and /healthz,
logins and the API stop being accepted. `install()` closes that gap before Chainlit starts uvicorn:

- the process's soft limit on open files is raised to its hard limit (the kernel's, set by the
  operator or the container runtime);
- every connection must send its request headers within `header_timeout_s` (counted from when it
  opens, or from the end of its previous response), and a request body may pause at most
  `body_timeout_s` between two reads; a connection that overstays is closed;
- past `max_connections` open connections, a new one gets 503 and is closed (after draining what
  the client sent for up to LINGER_S, so that the 503 is not lost to a reset).

The protocol is uvicorn's pure-Python h11 one (httptools is not installed); a per-address cap belongs
to the reverse proxy, which sees the clients' addresses (docs/deploy/nginx.conf: limit_conn).
"""
from __future__ import annotations

import asyncio
import logging
import resource
from dataclasses import dataclass
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)
FD_HEADROOM = 256  # descriptors kept for the database, log files, backends' pipes and sockets
LINGER_S = 2.0  # how long a refused connection's unread bytes are drained before it is closed
BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@dataclass(frozen=True)
class Limits:
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on headers, an idle limit on bodies, and a cap."""

    limits = Limits(10.0, 30.0, 2048)  # replaced by install()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._busy = False  # over the cap: answered 503, closing

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._busy = len(self.connections) > self.limits.max_connections
        if self._busy:
            # A lingering close, as nginx does: closing a socket whose request bytes are unread sends
            # a reset, and the client's kernel drops the 503 with it (seen on a busy machine, where
            # the bytes arrive before the accept). Say 503, end our side, drain theirs a moment.
            transport.write(BUSY)
            if transport.can_write_eof():
                transport.write_eof()
            self._arm(LINGER_S)
            return
        self._arm(self.limits.header_timeout_s)

    def data_received(self, data: bytes) -> None:
        if self._busy:
            return  # the rest of a request already answered 503: read and dropped
        super().data_received(data)
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            self._arm(self.limits.body_timeout_s)  # an idle limit: each piece of the body resets it
        elif state is not h11.IDLE:
            self._disarm()  # the request is in: the app's own deadlines govern its answer
        elif self._deadline is None:
            self._arm(self.limits.header_timeout_s)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm(self.limits.header_timeout_s)  # the next request's headers are due from now

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, delay: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(delay, self._overstayed)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _overstayed(self) -> None:
        self._deadline = None
        if self._busy:
            self.transport.close()
            return
        # After an upgrade the transport belongs to the websocket protocol, whose pings govern it.
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
            self.transport.close()


def raise_open_files_limit() -> int:
    """Raise the soft limit on open files to the hard one; the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == resource.RLIM_INFINITY or soft >= hard:
        return soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class _GuardedConfig(uvicorn.Config):
    def __init__(self, app: Any, **kwargs: Any) -> None:
        kwargs.setdefault("http", GuardedH11Protocol)
        super().__init__(app, **kwargs)


def install(limits: Limits) -> Limits:
    """Apply the limits to the server Chainlit is about to start (it builds `uvicorn.Config` after
    importing the app); the cap is lowered to fit the open-files limit. The limits in force."""
    files = raise_open_files_limit()
    if files != resource.RLIM_INFINITY and limits.max_connections > files - FD_HEADROOM:
        log.warning("BATON_HTTP_MAX_CONNECTIONS=%d does not fit the open-files limit (%d): using %d",
                    limits.max_connections, files, max(files - FD_HEADROOM, 1))
        limits = Limits(limits.header_timeout_s, limits.body_timeout_s, max(files - FD_HEADROOM, 1))
    GuardedH11Protocol.limits = limits
    uvicorn.Config = _GuardedConfig  # type: ignore[misc,assignment]  # Chainlit reads it at start
    return limits
