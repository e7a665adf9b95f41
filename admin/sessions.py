"""Chat logins that outlive their account are refused, on every route and on the socket handshake.

A login token (Chainlit's JWT, in a cookie or an `Authorization: Bearer` header) names an account
and carries its stamp: when that account was created. This ASGI middleware checks both against
the accounts table on each request that carries one, before Chainlit sees it. A removed account's
token, or that of an earlier account with the same name (a new account of that name is a new
person), is taken off the request: Chainlit then sees nobody logged in, so its API answers 401 and
its socket refuses the handshake, while the page and the login form still load, and a new login
from that browser works. Requests without a login token (API keys) pass as they are.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

from .accounts import Account

STAMP = "account_since"  # the token's metadata key holding the account's stamp
LOGIN_HEADERS = (b"cookie", b"authorization")  # where a login token travels

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
        if scope["type"] in ("http", "websocket"):
            dead = [header for header in LOGIN_HEADERS if not await self._alive(scope, header)]
            if dead:
                scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k.lower() not in dead]}
        await self.app(scope, receive, send)

    async def _alive(self, scope: Scope, header: bytes) -> bool:
        """False when any `header` line carries the login token of an account that is gone. Every
        line counts: engine.io joins repeated Cookie lines, so one stale token after a harmless
        first line would still log in."""
        lookup = self.lookup()
        if lookup is None:  # still starting: nobody is logged in yet
            return True
        for value in Headers(scope=scope).getlist(header.decode()):
            login = self.read(cookie_parser(value), "") if header == b"cookie" else self.read({}, value)
            if login is not None and not await current(login, lookup):
                return False
        return True


async def current(login: tuple[str, str], lookup: Lookup) -> Account | None:
    """The account a login (name, stamp) belongs to, if it still exists and is that same account."""
    name, since = login
    account = await lookup(name)
    return account if account is not None and stamp(account) == since else None
