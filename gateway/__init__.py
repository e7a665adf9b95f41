"""Baton for every client: OpenAI-compatible /v1, DeepL's /v2, LibreTranslate's API under
/libretranslate/ and the admin API /admin/v1, beside the chat.

HTTP in, `engine.Engine` calls out; API keys, languages and the login throttle come from admin.
The routes are served by Chainlit's own server (one port for the chat and the API); their
OpenAPI schema, without Chainlit's routes, is at /admin/v1/openapi.json and in docs/openapi.json.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi import FastAPI

from admin.denials import Amend
from admin.keys import Keys
from admin.throttle import LoginThrottle
from engine import Engine

from . import admin_api, deepl_api, libre_api, memory_api, openai_api
from .auth import Auth, Record
from .config import GatewayConfig
from .errors import unavailable

T = TypeVar("T")
OPENAPI_URL = "/admin/v1/openapi.json"


def _started(get: Callable[[], T | None]) -> Callable[[], T]:
    def started() -> T:
        if (value := get()) is None:
            raise unavailable("Baton is starting. Retry in a few seconds.")
        return value

    return started


def build(get_engine: Callable[[], Engine | None], get_keys: Callable[[], Keys | None], throttle: LoginThrottle,
          record: Record, amend: Amend, config: GatewayConfig | None = None) -> FastAPI:
    engine, keys = _started(get_engine), _started(get_keys)
    auth = Auth(keys, throttle, record, amend)
    api = FastAPI(title="Baton API", version="1", openapi_url=OPENAPI_URL, docs_url=None, redoc_url=None,
                  description="OpenAI-compatible inference through Baton's hot-swap router, and its admin API.")
    config = config or GatewayConfig()
    api.include_router(openai_api.router(engine, auth, config))
    api.include_router(deepl_api.router(engine, auth, config))
    api.include_router(admin_api.router(engine, keys, auth))
    api.include_router(memory_api.router(engine, auth))
    api.include_router(libre_api.router(engine, keys, auth, config))
    return api


def install(app: FastAPI, api: FastAPI) -> None:
    """Serve the API's routes from `app` (Chainlit's), in front of its catch-all page route."""
    app.router.routes[0:0] = list(api.router.routes)


__all__ = ["OPENAPI_URL", "build", "install"]
