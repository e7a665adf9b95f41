"""Failed logins, slowed and then refused for a while, per account and per client address.

`LoginThrottle` counts failures under keys `account:NAME` and `address:IP`, in memory (a
restart forgets them, which only gives an attacker a fresh start after the operator restarted).
Each attempt is `admit()`ted first (refused while a key is locked, else delayed by how many
failures it already has), then settled with `failed()` or `succeeded()`. It only decides: the
caller audits and answers. Everything runs on the event loop without awaiting between reading and
writing an entry, so no lock is needed.
"""
from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from admin.config import ChatConfig

# An attempt admitted but never settled (its caller crashed) stops counting as in flight after this.
PENDING_TTL_S = 60.0
# Names are cut so a megabyte of "username" costs no more memory than a real one.
MAX_KEY_PART = 128


class Locked(Exception):
    """An attempt refused. `str()` is the message for the user; `keys` (for the audit) are the
    throttle keys concerned; `first_refusal` is True for the first refusal of a lock, so a caller
    can audit one refusal per lock instead of one per attempt."""

    def __init__(self, message: str, retry_after_s: int, keys: tuple[str, ...], first_refusal: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s
        self.keys = keys
        self.first_refusal = first_refusal


@dataclass
class _Entry:
    failures: deque[float] = field(default_factory=deque)  # times of failures within the window
    pending: deque[float] = field(default_factory=deque)  # admit times of attempts not settled yet
    locked_until: float = 0.0
    refusal_reported: bool = False


class LoginThrottle:
    def __init__(self, *, slow_after: int, lock_after: int, window_s: float, lock_s: float, delay_s: float,
                 max_delay_s: float, max_keys: int, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.slow_after, self.lock_after, self.window_s, self.lock_s = slow_after, lock_after, window_s, lock_s
        self.delay_s, self.max_delay_s, self.max_keys = delay_s, max_delay_s, max_keys
        self._clock, self._sleep = clock, sleep
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first

    @classmethod
    def from_config(cls, config: ChatConfig) -> LoginThrottle:
        return cls(slow_after=config.login_slow_after, lock_after=config.login_lock_after,
                   window_s=config.login_window_s, lock_s=config.login_lock_s, delay_s=config.login_delay_s,
                   max_delay_s=config.login_max_delay_s, max_keys=config.login_max_keys)

    def __len__(self) -> int:
        return len(self._entries)

    # the three calls of one attempt -----------------------------------------
    async def admit(self, account: str | None, address: str) -> None:
        """Raise Locked if the address is locked, or the account is and the address has been
        failing, or if so many attempts are already in flight that one more could pass the lock
        threshold; otherwise wait the delay that the failures so far earn.

        An address with no failure and no attempt in flight meets only its own limits: the
        account's lock or failures only slow it (by the longest delay). So guesses from many
        addresses cannot lock an account's owner out, and each such address gets one guess
        before the account's lock refuses it too."""
        now = self._clock()
        keys = _keys(account, address)
        current = {k: self._current(k, now) for k in keys}
        by_address = current[keys[-1]]
        clean = by_address is None or not (by_address.failures or by_address.pending or by_address.locked_until > now)
        guarded = keys[-1:] if clean else keys
        locked = [(k, e) for k in guarded if (e := current[k]) is not None and e.locked_until > now]
        if locked:
            until = max(e.locked_until for _, e in locked)
            first = not all(e.refusal_reported for _, e in locked)
            for _, e in locked:
                e.refusal_reported = True
            raise _locked(tuple(k for k, _ in locked), math.ceil(until - now), first)
        # Attempts in flight count as failures until settled: a burst of parallel guesses must not
        # all be admitted before the first one fails.
        loads = {k: len(e.failures) + len(e.pending) if e else 0 for k, e in current.items()}
        load = max(loads[k] for k in guarded)
        # Clean addresses still share one bound per account: at most `lock_after` of their attempts
        # in flight at once, so a spray from many addresses cannot fill the password hashing pool.
        in_flight = max(len(e.pending) for e in current.values() if e is not None) if any(current.values()) else 0
        if load >= self.lock_after or in_flight >= self.lock_after:
            raise Locked(f"Too many login attempts at once for this account or from your network address. "
                         f"Try again in {math.ceil(self.max_delay_s) + 1} s.",
                         math.ceil(self.max_delay_s) + 1, keys)
        entries = [self._entry(k, now) for k in keys]
        for e in entries:
            e.pending.append(now)
        pressed = clean and any(k not in guarded and (e.locked_until > now or loads[k] >= self.slow_after)
                                for k, e in current.items() if e is not None)
        delay = self.max_delay_s if pressed else self._delay(load)
        if delay <= 0:
            return
        try:
            await self._sleep(delay)
        except asyncio.CancelledError:  # the client went away: its place is free again
            for e in entries:
                _settle(e)
            raise

    def failed(self, account: str | None, address: str) -> Locked | None:
        """Count a failure; a Locked if it started a lock (to audit once), else None. Failures
        during a lock (attempts admitted just before it) are not counted: the lock covers them."""
        now = self._clock()
        started: list[str] = []
        for key in _keys(account, address):
            e = self._entry(key, now)
            _settle(e)
            if e.locked_until > now:
                continue
            e.failures.append(now)
            if len(e.failures) >= self.lock_after:
                e.failures.clear()
                e.locked_until, e.refusal_reported = now + self.lock_s, False
                started.append(key)
        return _locked(tuple(started), math.ceil(self.lock_s), False) if started else None

    def succeeded(self, account: str | None, address: str) -> None:
        """Settle the attempt. The account's failures are forgotten (its owner is back), the
        address's are not: an attacker who owns one account could otherwise reset their address
        by logging in to it between guesses at other accounts."""
        now = self._clock()
        for key in _keys(account, address):
            if (e := self._current(key, now)) is not None:
                _settle(e)
                if key.startswith("account:"):
                    e.failures.clear()

    # bookkeeping ------------------------------------------------------------
    def _delay(self, failures: int) -> float:
        if failures < self.slow_after:
            return 0.0
        return float(min(self.delay_s * 2 ** (failures - self.slow_after), self.max_delay_s))

    def _current(self, key: str, now: float) -> _Entry | None:
        """The key's entry with what is older than the window (or its TTL) dropped; None if none."""
        e = self._entries.get(key)
        if e is not None:
            _trim(e, now, self.window_s)
        return e

    def _entry(self, key: str, now: float) -> _Entry:
        e = self._current(key, now)
        if e is None:
            if len(self._entries) >= self.max_keys:
                self._make_room(now)
            e = self._entries[key] = _Entry()
        self._entries.move_to_end(key)
        return e

    def _make_room(self, now: float) -> None:
        """Drop what has nothing left to remember, then, down to nine tenths of `max_keys`, the
        least recently used keys that are not locked (so spraying names or addresses does not lift
        a lock), and only if every key left is locked, the least recently used locks. Freeing a
        tenth at once makes a spray pay this scan once per many new keys, not on each."""
        for key, e in list(self._entries.items()):
            _trim(e, now, self.window_s)
            if e.locked_until <= now and not e.failures and not e.pending:
                del self._entries[key]
        excess = len(self._entries) - (self.max_keys - max(1, self.max_keys // 10))
        if excess <= 0:
            return
        unlocked = [k for k, e in self._entries.items() if e.locked_until <= now]
        locked = [k for k, e in self._entries.items() if e.locked_until > now]
        for key in (unlocked + locked)[:excess]:
            del self._entries[key]

def _keys(account: str | None, address: str) -> tuple[str, ...]:
    by_address = f"address:{address[:MAX_KEY_PART]}"
    return (f"account:{account[:MAX_KEY_PART]}", by_address) if account is not None else (by_address,)


def _trim(e: _Entry, now: float, window_s: float) -> None:
    while e.failures and e.failures[0] <= now - window_s:
        e.failures.popleft()
    while e.pending and e.pending[0] <= now - PENDING_TTL_S:
        e.pending.popleft()


def _settle(e: _Entry) -> None:
    if e.pending:
        e.pending.popleft()


def _locked(keys: tuple[str, ...], retry_after_s: int, first: bool) -> Locked:
    what = "for this account" if any(k.startswith("account:") for k in keys) else "from your network address"
    return Locked(f"Too many failed logins {what}, so logins are refused for now. "
                  f"Try again in {_duration(retry_after_s)}.", retry_after_s, keys, first)


def _duration(s: int) -> str:
    return f"{s} s" if s < 60 else f"{math.ceil(s / 60)} min ({s} s)"
