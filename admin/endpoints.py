"""Service endpoints next to the chat: /healthz (can anything serve?) and /metrics (Prometheus).

/metrics names API keys and versions, so it is not public: with BATON_METRICS_TOKEN set it needs
`Authorization: Bearer <token>` from every client; without one it answers loopback clients only
(a Prometheus or an agent on the same host). A reverse proxy on the same host connects from
loopback too, so the proxy must not pass /metrics on (docs/deploy/nginx.conf denies it).
"""
from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import SecretStr

from engine import Engine, Health


def health(h: Health) -> tuple[int, dict[str, object]]:
    """200 when some version can answer: the active one, or a ready canary or standby the
    router would fail over to. 503 when a request would only wait."""
    d = h.deployment
    body: dict[str, object] = {
        "status": h.status,
        "active": d.active,
        "active_state": h.states.get(d.active) if d.active else None,
        "canary": d.canary,
        "canary_percent": d.canary_percent if d.canary else 0,
        "standby": d.previous,
        "versions": h.states,
        "detail": h.detail,
        "generation": d.generation,  # of the deployment this replica applies (engine/replicas.py)
        "replica": h.replica,
    }
    return (200 if h.serving else 503), body


def in_front(app: FastAPI, path: str, endpoint: Callable[..., Any], method: str) -> None:
    """Add a route ahead of Chainlit's: its catch-all `/{full_path:path}` page route is registered
    first and would otherwise answer with the chat's HTML (and its own route for the same path
    would answer instead of this one)."""
    app.add_api_route(path, endpoint, methods=[method], include_in_schema=False)
    app.router.routes.insert(0, app.router.routes.pop())


def _loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:  # not an address (a test client's "testclient", a Unix socket)
        return False


def metrics_refusal(client_host: str | None, authorization: str | None,
                    token: SecretStr | None) -> PlainTextResponse | None:
    """Why this request may not read /metrics (a response to send), or None when it may."""
    if token is not None:
        expected = f"Bearer {token.get_secret_value()}".encode()
        if hmac.compare_digest((authorization or "").encode(), expected):
            return None
        return PlainTextResponse("/metrics needs the bearer token set in BATON_METRICS_TOKEN "
                                 "(Authorization: Bearer <token>)\n", status_code=401,
                                 headers={"WWW-Authenticate": "Bearer"})
    if _loopback(client_host):
        return None
    return PlainTextResponse("/metrics answers this host only; to scrape it from elsewhere, set "
                             "BATON_METRICS_TOKEN and send it as a bearer token\n", status_code=403)


def install(app: FastAPI, get_engine: Callable[[], Engine | None], metrics_token: SecretStr | None) -> None:

    async def healthz() -> JSONResponse:
        engine = get_engine()
        if engine is None:
            return JSONResponse({"status": "starting", "active": None}, status_code=503)
        code, body = health(engine.health())  # from memory: a locked database does not fail it
        return JSONResponse(body, status_code=code, headers={"Cache-Control": "no-store"})

    async def metrics(request: Request) -> Response:
        refused = metrics_refusal(request.client.host if request.client else None,
                                  request.headers.get("authorization"), metrics_token)
        if refused is not None:
            return refused
        # The engine's metrics live in the default registry (engine/metrics.py).
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    in_front(app, "/healthz", healthz, "GET")
    in_front(app, "/metrics", metrics, "GET")
