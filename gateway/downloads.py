"""Translated files kept for their download link, as LibreTranslate's /translate_file answers with a
URL: few, for a while, each owned by the key that sent the original.

In memory: a link is a 256-bit random token (unguessable; nothing else names the file), and a
result outlives neither the process nor its time limit. The oldest go first when there are too
many in all or for one key, so one key cannot push the others' results out by itself. A replica
keeps its own: behind a load balancer the download must reach the replica that translated it.
"""
from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Kept:
    owner: str  # the name of the key that sent the original
    filename: str
    data: bytes
    expires: float


class Downloads:
    def __init__(self, max_files: int, per_key: int, ttl_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._kept: OrderedDict[str, Kept] = OrderedDict()  # oldest first
        self._max_files, self._per_key, self._ttl_s = max_files, per_key, ttl_s
        self._clock = clock

    def put(self, owner: str, filename: str, data: bytes) -> str:
        """Keep a file for `owner`; the token of its link."""
        self._expire()
        mine = [token for token, kept in self._kept.items() if kept.owner == owner]
        for token in mine[:len(mine) - self._per_key + 1]:
            del self._kept[token]
        while len(self._kept) >= self._max_files:
            self._kept.popitem(last=False)
        token = secrets.token_urlsafe(32)
        self._kept[token] = Kept(owner, filename, data, self._clock() + self._ttl_s)
        return token

    def get(self, token: str) -> Kept | None:
        self._expire()
        return self._kept.get(token)

    def _expire(self) -> None:
        now = self._clock()
        while self._kept and next(iter(self._kept.values())).expires <= now:
            self._kept.popitem(last=False)
