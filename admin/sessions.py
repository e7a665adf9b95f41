"""Chat logins that outlive their account are refused, on every route and on the socket handshake.

A login token (Chainlit's JWT, in a cookie or an `Authorization: Bearer` header) names an account
and carries its stamp: when that account was created. This ASGI middleware checks both against
the accounts table on each request that carries one, before Chainlit sees it: a removed account's
token gets 401, and so does the token of an earlier account with the same name (a new account of
that name is a new person). Requests without a login token (API keys, the login page) pass.
"""
from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping

from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

from .accounts import Account

STAMP = "account_since"  # the token's metadata key holding the account's stamp
GONE = "This login belongs to an account that no longer exists. Log in again."

# (cookies, Authorization header) -> (account name, stamp) of a valid login token, else None
Reader = Callable[[Mapping[str, str], str], tuple[str, str] | None]
Lookup = Callable[[str], Awaitable[Account | None]]


def stamp(account: Account) -> str:
    """What tells this account from an earlier one with the same name."""
    return account.created_at.isoformat()


class SessionGuard:
    def __init__(self, app: ASGIApp, read: Reader, lookup: Callable[[], Lookup | None]) -> None:
        self.app, self.read, self.lookup = app, read, lookup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not await self._alive(scope):
            await _refuse(scope, send)
            return
        await self.app(scope, receive, send)

    async def _alive(self, scope: Scope) -> bool:
        headers = Headers(scope=scope)
        login = self.read(cookie_parser(headers.get("cookie", "")), headers.get("authorization", ""))
        lookup = self.lookup()
        if login is None or lookup is None:  # no login token, or still starting (nobody is logged in yet)
            return True
        name, since = login
        account = await lookup(name)
        return account is not None and stamp(account) == since


async def _refuse(scope: Scope, send: Send) -> None:
    if scope["type"] == "websocket":  # before accept: the server answers the handshake with 403
        await send({"type": "websocket.close", "code": 1008})
        return
    body = json.dumps({"detail": GONE}).encode()
    await send({"type": "http.response.start", "status": 401, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})
