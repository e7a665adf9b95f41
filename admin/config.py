"""The chat's own settings (the engine's are engine.Settings), read from BATON_* and `.env`."""
from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ChatConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BATON_", env_file=".env", extra="ignore")

    # The first admin, created on first start (while no admin account exists).
    admin_user: str | None = None
    admin_password: SecretStr | None = None
    # How often a live /load progress view refreshes (it also refreshes on every state change).
    progress_interval_s: float = 1.0
