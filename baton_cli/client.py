"""The admin API over HTTP, and what a pipeline can branch on when a call does not succeed.

Every failure becomes a `CliError` carrying one of the `Exit` codes and a sentence for stderr.
The API answers errors in OpenAI's shape (`{"error": {"message", "type", "code"}}`): its message
is what the operator reads.
"""
from __future__ import annotations

from enum import IntEnum
from typing import Any

import httpx

# Unload waits for in-flight requests (BATON_DRAIN_TIMEOUT_S, 60 s) and a stop grace (15 s) before it answers.
READ_TIMEOUT_S = 120.0
CONNECT_TIMEOUT_S = 5.0


class Exit(IntEnum):
    """Exit codes, stable: scripts branch on them (README, "Operate from a pipeline")."""

    OK = 0
    REFUSED = 1  # Baton refused: conflict, invalid, not found (HTTP 4xx)
    USAGE = 2  # the command line is wrong (typer's own code)
    UNREACHABLE = 3  # no answer, not Baton's answer, or a server error (5xx, 503 while nothing is ready)
    AUTH = 4  # no key, a wrong or revoked key, a user key on the admin API, or too many wrong keys
    TIMEOUT = 5  # wait-ready ran out of time
    FAILED = 6  # the version failed to start: it will not become ready until it is loaded again
    ABORTED = 7  # the rollout ended without promoting: a check failed or someone aborted it


class CliError(Exception):
    def __init__(self, code: Exit, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _code_for(status: int) -> Exit:
    if status in (401, 403, 429):
        return Exit.AUTH
    if 400 <= status < 500:
        return Exit.REFUSED
    return Exit.UNREACHABLE


class Client:
    """A caller of /admin/v1 with an admin key. `url` is Baton's base URL (BATON_URL)."""

    def __init__(self, url: str, api_key: str | None) -> None:
        if not api_key:
            raise CliError(Exit.AUTH, "No API key: set BATON_API_KEY to an admin key. An admin makes one in the "
                                      "chat with `/keys add NAME admin` (it is shown once).")
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=f"{self.url}/admin/v1", headers={"Authorization": f"Bearer {api_key}"},
            timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S))

    def get(self, path: str, **params: int | str) -> Any:
        return self.call("GET", path, params=params or None)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.call("POST", path, json=body)

    def delete(self, path: str) -> Any:
        return self.call("DELETE", path)

    def call(self, method: str, path: str, *, read_timeout_s: float | None = None, raw: bool = False,
             **kwargs: Any) -> Any:
        """The answer's JSON (its bytes when `raw`, for a file), or CliError with the exit code and the
        reason. `read_timeout_s`: for a call that takes long (an evaluation), instead of READ_TIMEOUT_S."""
        if read_timeout_s is not None:
            kwargs["timeout"] = httpx.Timeout(read_timeout_s, connect=CONNECT_TIMEOUT_S)
        try:
            r = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise CliError(Exit.UNREACHABLE, f"Baton at {self.url} did not answer in time ({type(exc).__name__}). "
                                             "Is it overloaded? Try again.") from None
        except httpx.HTTPError as exc:
            raise CliError(Exit.UNREACHABLE, f"Cannot reach Baton at {self.url} ({exc}). Is it running? "
                                             "Set BATON_URL.") from None
        if raw and r.is_success:
            return r.content
        try:
            body = r.json()
        except ValueError:
            # A 200 page here means a server that is not Baton (Chainlit answers any unknown GET with its page).
            raise CliError(Exit.UNREACHABLE, f"{self.url} answered {method} {r.url.path} with HTTP {r.status_code} "
                                             "and no JSON: is BATON_URL Baton's base URL?") from None
        if r.is_success:
            return body
        error = body.get("error") if isinstance(body, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        raise CliError(_code_for(r.status_code), f"HTTP {r.status_code}: {message or r.text[:300]}")
