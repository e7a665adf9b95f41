"""Only the chat's own pages (and origins the operator names) may call it with a user's cookie.

The login cookie goes with every request a browser sends to this host, whichever page sent it:
cookies are not told apart by port, and SameSite treats a sibling subdomain as the same site. So a
page on another port or subdomain could read an admin's history with `fetch(..., {credentials:
"include"})`, or open the chat's socket.io (long-polling or a websocket, which CORS does not cover)
and type `/keys add x admin` as them. Browsers name the page that sent a request in `Origin` (on
every cross-origin request, every POST and every websocket handshake), and a page cannot forge it.
This ASGI middleware refuses any request whose `Origin` is neither this server's own origin (the
`Host` it was sent to) nor in BATON_ALLOWED_ORIGINS: 403 over HTTP, a refused handshake for a
websocket. Requests without `Origin` (same-origin GETs, scripts, curl, the OpenAI SDK) pass: they
carry no other page's intent.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
REFUSED = ("This request came from a page of another site ({origin}), which may not act for you here. "
           "Open Baton at its own address, or ask the operator to add that origin to BATON_ALLOWED_ORIGINS.")


def origin_key(origin: str) -> tuple[str, str, int] | None:
    """An origin as (scheme, host, port), or None for what is not one (`null`, garbage)."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") or parts.query:
        return None
    return scheme, parts.hostname.lower(), port if port is not None else DEFAULT_PORTS[scheme]


def check_allowed(origins: Iterable[str]) -> list[str]:
    """BATON_ALLOWED_ORIGINS as given, each an origin (scheme://host[:port]); ValueError names a bad one."""
    checked = []
    for origin in origins:
        if origin_key(origin) is None:
            raise ValueError(f"{origin!r} is not an origin: write scheme://host[:port], e.g. https://chat.example.com")
        checked.append(origin.strip().rstrip("/"))
    return checked


def _own(origin: tuple[str, str, int], headers: Headers) -> bool:
    """The request was sent to the origin's own host and port. The scheme is not compared: behind a
    proxy that ends TLS the app sees http for an https page, and a page cannot choose its Host."""
    host = headers.get("host", "")
    found = origin_key(f"{origin[0]}://{host}") if host else None
    return found is not None and found[1:] == origin[1:]


class OriginGuard:
    def __init__(self, app: ASGIApp, allowed: Iterable[str] = ()) -> None:
        self.app = app
        self.allowed = {key for o in allowed if (key := origin_key(o)) is not None}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = Headers(scope=scope)
            origin = headers.get("origin")
            if origin is not None and not self.admits(origin, headers):
                await _refuse(scope, send, origin)
                return
        await self.app(scope, receive, send)

    def admits(self, origin: str, headers: Headers) -> bool:
        key = origin_key(origin)
        return key is not None and (key in self.allowed or _own(key, headers))


async def _refuse(scope: Scope, send: Send, origin: str) -> None:
    if scope["type"] == "websocket":  # closing before accepting: the server answers the handshake 403
        await send({"type": "websocket.close", "code": 1008})
        return
    body = json.dumps({"detail": REFUSED.format(origin=origin[:200])}).encode()
    await send({"type": "http.response.start", "status": 403, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"), (b"vary", b"Origin")]})
    await send({"type": "http.response.body", "body": body})
