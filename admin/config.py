"""The chat's own settings (the engine's are engine.Settings), read from BATON_* and `.env`."""
from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from admin.origin_guard import check_allowed


class ChatConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BATON_", env_file=".env", extra="ignore")

    # The first admin, created on first start (while no admin account exists).
    admin_user: str | None = None
    admin_password: SecretStr | None = None
    # Pages of other origins (scheme://host[:port]) that may call the chat and the API with a
    # user's cookie, besides the app's own origin (admin/origin_guard.py). Empty: its own only.
    allowed_origins: list[str] = []
    # How often a live /load progress view refreshes (it also refreshes on every state change).
    progress_interval_s: float = 1.0

    # Failed logins (chat passwords; API keys count for the address only), per account and per
    # client address: after `login_slow_after` failures each attempt waits, from `login_delay_s`
    # doubling up to `login_max_delay_s`; `login_lock_after` failures within `login_window_s`
    # refuse the key for `login_lock_s`. At most `login_max_keys` keys are remembered.
    login_slow_after: int = Field(default=3, ge=0)
    login_lock_after: int = Field(default=10, ge=1)
    login_window_s: float = Field(default=900.0, gt=0)
    login_lock_s: float = Field(default=300.0, gt=0)
    login_delay_s: float = Field(default=0.5, ge=0)
    login_max_delay_s: float = Field(default=4.0, ge=0)
    login_max_keys: int = Field(default=10_000, ge=2)

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        return check_allowed(value)
