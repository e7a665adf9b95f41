"""Who is calling: the API key in `Authorization: Bearer KEY`, checked on every request.

A wrong key counts as a failed login for the client's address (admin.throttle): after a few the
answers slow down, then the address is refused for a while (429), and all of it is audited.
"""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import Request

from admin.denials import Amend, Denials
from admin.keys import ApiKey, Keys
from admin.throttle import Locked, LoginThrottle
from engine import BatonError

from . import metrics
from .errors import ApiError

log = logging.getLogger("baton.gateway")

Record = Callable[[str, str, dict[str, object], str, str], Awaitable[int]]  # an audit row -> its id


class Auth:
    def __init__(self, keys: Callable[[], Keys], throttle: LoginThrottle, record: Record, amend: Amend) -> None:
        self._keys = keys
        self._throttle = throttle
        self._record = record
        self._denials = Denials(record, amend)  # a valid key's refusals: one counted row per key and minute

    async def key(self, request: Request) -> ApiKey:
        """A FastAPI dependency: the caller's active key, or 401 (429 while its address is locked)."""
        return await self.sent_as(request, "Bearer", ApiError(
            401, "No API key was sent. Send `Authorization: Bearer KEY`; an admin makes keys with `/keys add NAME` "
                 "in the chat or `baton keys add NAME`.", "missing_api_key"))

    async def sent_as(self, request: Request, scheme: str, missing: ApiError) -> ApiKey:
        """The active key sent as `Authorization: <scheme> KEY` (each API has its scheme), `missing`
        when none is sent, 401 when it is wrong (429 while the address is locked)."""
        sent, _, secret = request.headers.get("authorization", "").partition(" ")
        if sent.lower() != scheme.lower() or not secret.strip():
            metrics.AUTH_FAILURES.labels("missing").inc()
            raise missing
        return await self.verified(request, secret.strip())

    async def verified(self, request: Request, secret: str) -> ApiKey:
        """The active key with this secret, however the client sent it (a header, a body field),
        or 401 (429 while the address is locked)."""
        key = await self._keys().verify(secret)
        if key is None:
            await self._wrong_key(request.client.host if request.client else "unknown")
        assert key is not None
        request.state.key_name = key.name
        return key

    async def _wrong_key(self, address: str) -> None:
        """Always raises. Only wrong keys meet the throttle: a valid key is proof enough, and a
        client's many parallel requests must not count as attempts in flight."""
        try:
            await self._throttle.admit(None, address)  # waits longer after each failure
        except Locked as exc:
            metrics.AUTH_FAILURES.labels("locked").inc()
            if exc.first_refusal:
                await self._audit("api", "api-key-refused", address, str(exc))
            raise ApiError(429, str(exc), "too_many_failed_logins", {"Retry-After": str(exc.retry_after_s)}) from None
        metrics.AUTH_FAILURES.labels("wrong").inc()
        locked = self._throttle.failed(None, address)
        await self._audit("api", "api-key-failed", address, "a wrong or revoked API key")
        if locked is not None:
            await self._audit("api", "api-key-locked", address, str(locked))
        raise ApiError(401, "The API key is wrong or has been revoked. Ask an admin for a new one "
                            "(`/keys add NAME`).", "invalid_api_key")

    async def admin(self, request: Request) -> ApiKey:
        """A FastAPI dependency for the admin API: an admin key, else 403."""
        key = await self.key(request)
        await self.require_admin(request, key, "may run inference, not the admin API")
        return key

    async def require_admin(self, request: Request, key: ApiKey, what_users_may: str) -> None:
        """403 for a user key, its refusal counted in the audit (admin.denials)."""
        if not key.is_admin:
            await self._denials.refused(key.actor, "admin-api-denied", {"at": request.url.path})
            raise ApiError(403, f"The key '{key.name}' is a user key: it {what_users_may}. Use an admin key.",
                           "admin_key_required")

    async def _audit(self, actor: str, action: str, where: str, detail: str) -> None:
        try:
            await self._record(actor, action, {"at": where}, "refused", detail)
        except BatonError as exc:  # the refusal stands; only its record is missing
            log.warning("could not audit %s: %s", action, exc)
