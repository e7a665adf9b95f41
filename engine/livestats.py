"""What live traffic says about each version, over a time window: for rollout analysis and /status.

Each routed answer (not evaluations, not shadow copies) leaves one observation: whether it
succeeded, its time to first token and, for a translation, what the answer checks flagged
(engine/checks.py). Users' thumbs up/down and shadow comparisons leave their
own; a user who changes or takes back a vote on an answer leaves a new vote that replaces the old.
Kept in memory, bounded per version: an analysis looks at the last minutes, not at history
(history is in Prometheus and the audit).
"""
from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")
KEEP = 20_000  # observations per version and kind; older ones fall off


@dataclass(frozen=True)
class Answer:
    at: float
    ok: bool
    ttft_s: float | None
    checked: bool = False  # a translation, whose answer was checked (a client's own completion is not)
    flags: frozenset[str] = frozenset()  # the checks it failed


@dataclass(frozen=True)
class Vote:
    at: float
    up: bool | None  # None: the vote was taken back
    answer: str = ""  # the answer voted on: its latest vote is the one that counts; "" always counts


@dataclass(frozen=True)
class ShadowResult:
    at: float
    ok: bool
    agreement: float | None  # chrF of the shadow's answer against the primary's; None when it failed
    latency_ms: float  # the shadow's total time
    primary_ms: float  # the primary answer's total time, for comparison


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


@dataclass(frozen=True)
class Sample:
    """One version's traffic since a moment."""

    version: str
    since: float
    answers: int
    errors: int
    ttft_p95_ms: float | None
    votes_up: int
    votes_down: int
    shadowed: int
    shadow_errors: int
    shadow_agreement: float | None  # mean chrF against the primary's answers
    shadow_p95_ms: float | None
    primary_p95_ms: float | None
    checked: int = 0  # answers whose text was checked
    flagged: Mapping[str, int] = field(default_factory=dict)  # check -> answers it flagged

    def flag_rate(self, check: str) -> float | None:
        """The share of checked answers that `check` flagged."""
        return self.flagged.get(check, 0) / self.checked if self.checked else None

    def numbers(self) -> dict[str, Any]:
        """What an analysis judges, as plain values (the rollout's timeline, the admin API)."""
        return {"version": self.version, "answers": self.answers, "errors": self.errors,
                "error_rate": self.error_rate, "ttft_p95_ms": self.ttft_p95_ms, "votes_down": self.votes_down,
                "votes_up": self.votes_up, "shadow_agreement": self.shadow_agreement,
                "checked": self.checked, "wrong_language": self.flagged.get("wrong_language", 0)}

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.answers if self.answers else None

    @property
    def thumbs_down_rate(self) -> float | None:
        """Thumbs down per answer served (most answers get no vote at all)."""
        return self.votes_down / self.answers if self.answers else None


class LiveStats:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._answers: dict[str, deque[Answer]] = {}
        self._votes: dict[str, deque[Vote]] = {}
        self._shadow: dict[str, deque[ShadowResult]] = {}

    @staticmethod
    def _log(table: dict[str, deque[T]], version: str) -> deque[T]:
        if (log := table.get(version)) is None:
            log = table[version] = deque(maxlen=KEEP)
        return log

    def answered(self, version: str, ok: bool, ttft_s: float | None = None, *, checked: bool = False,
                 flags: Iterable[str] = ()) -> None:
        self._log(self._answers, version).append(Answer(self.clock(), ok, ttft_s, checked, frozenset(flags)))

    def voted(self, version: str, up: bool | None, answer: str = "") -> None:
        self._log(self._votes, version).append(Vote(self.clock(), up, answer))

    def shadowed(self, version: str, result: ShadowResult) -> None:
        self._log(self._shadow, version).append(result)

    def now(self) -> float:
        return self.clock()

    def sample(self, version: str, since: float = 0.0) -> Sample:
        answers = [a for a in self._answers.get(version, ()) if a.at >= since]
        latest: dict[str | int, Vote] = {}
        for i, v in enumerate(self._votes.get(version, ())):
            if v.at >= since:
                latest[v.answer or i] = v
        votes = list(latest.values())
        shadow = [s for s in self._shadow.get(version, ()) if s.at >= since]
        ttfts = [a.ttft_s * 1000 for a in answers if a.ok and a.ttft_s is not None]
        agreed = [s.agreement for s in shadow if s.agreement is not None]
        return Sample(
            version=version,
            since=since,
            answers=len(answers),
            errors=sum(not a.ok for a in answers),
            ttft_p95_ms=percentile(ttfts, 95),
            votes_up=sum(v.up is True for v in votes),
            votes_down=sum(v.up is False for v in votes),
            shadowed=len(shadow),
            shadow_errors=sum(not s.ok for s in shadow),
            shadow_agreement=sum(agreed) / len(agreed) if agreed else None,
            shadow_p95_ms=percentile((s.latency_ms for s in shadow if s.ok), 95),
            primary_p95_ms=percentile((s.primary_ms for s in shadow if s.ok), 95),
            checked=sum(a.checked for a in answers),
            flagged=Counter(f for a in answers for f in a.flags),
        )

    def forget_shadow(self, version: str) -> None:
        """A new shadow starts with fresh statistics."""
        self._shadow.pop(version, None)
