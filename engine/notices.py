"""Things the engine decides on its own that admins must hear about at once (a rollout that
advanced, passed or aborted). The chat subscribes and tells every admin who is connected."""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("baton.notices")

Listener = Callable[[str], Awaitable[None]]


class Notices:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Hear every notice from now on; call the returned function to stop."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def publish(self, text: str) -> None:
        """Logged always; a listener that fails is logged and does not stop the others."""
        log.info("notice: %s", text)
        for listener in list(self._listeners):
            try:
                await listener(text)
            except Exception:  # noqa: BLE001 - one listener must not silence the rest
                log.exception("a notice listener failed")
