"""The HTTP side of login throttling: who is logging in from where, and the 429 for a refusal.

Chainlit's password callback gets only (username, password), and Chainlit catches whatever it
raises (it logs it and answers 401). So this ASGI middleware wraps POST /login: it gives the
callback the client address through a context variable, and when the callback records a refusal
there, it answers 429 with Retry-After in place of Chainlit's 401.
"""
from __future__ import annotations

import json
from contextvars import ContextVar
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from admin.throttle import Locked

# The login form shows `auth.login.errors.<detail>` from .chainlit/translations: a key, not prose.
# Scripts get the exact sentence in `message`, and the wait in Retry-After and `retry_after_s`.
REFUSED_DETAIL = "tooManyLogins"


@dataclass
class LoginAttempt:
    address: str
    refusal: Locked | None = None


_attempt: ContextVar[LoginAttempt | None] = ContextVar("baton_login_attempt", default=None)


def current() -> LoginAttempt | None:
    """The login request being handled (None outside POST /login)."""
    return _attempt.get()


class LoginGuard:
    """Pure ASGI, so the route runs in the same task (or one that copies this context) and
    sees the attempt set here; the attempt is mutable so a refusal travels back out."""

    def __init__(self, app: ASGIApp, path: str) -> None:
        self.app, self.path = app, path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        # The peer, or what uvicorn's proxy-headers middleware took from X-Forwarded-For when
        # the peer is a trusted proxy (FORWARDED_ALLOW_IPS, 127.0.0.1 by default).
        client = scope.get("client")
        attempt = LoginAttempt(address=client[0] if client else "unknown")
        replaced = False

        async def send_or_refuse(message: Message) -> None:
            nonlocal replaced
            if attempt.refusal is None:
                await send(message)
            elif not replaced:  # Chainlit's 401 is dropped, start and body
                replaced = True
                await _send_refusal(send, attempt.refusal)

        token = _attempt.set(attempt)
        try:
            await self.app(scope, receive, send_or_refuse)
        finally:
            _attempt.reset(token)


async def _send_refusal(send: Send, refusal: Locked) -> None:
    body = json.dumps({"detail": REFUSED_DETAIL, "message": refusal.message,
                       "retry_after_s": refusal.retry_after_s}).encode()
    await send({"type": "http.response.start", "status": 429, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(refusal.retry_after_s).encode()), (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})
