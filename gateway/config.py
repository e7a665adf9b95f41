"""The gateway's settings, read from BATON_* and `.env` (the engine's are engine.Settings)."""
from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewayConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BATON_", env_file=".env", extra="ignore")

    # What clients ask for to get whichever version is serving (an admin key may name a version).
    model_alias: str = "baton"
    # /v1/translate: texts per request, and texts translated at once for one request.
    translate_max_texts: int = 64
    translate_concurrency: int = 4
    # Translated files waiting for their download (LibreTranslate's /translate_file): at most this
    # many in all and per key, each for at most this long.
    downloads_kept: int = 32
    downloads_per_key: int = 4
    download_ttl_s: float = 3600.0
