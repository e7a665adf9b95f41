"""An evaluation: a set's rows translated by one version, scored against the references per
language pair and overall (engine/scoring.py), with the latency and the failed rows."""
from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from . import scoring
from .evalsets import EvalRow, EvalSet
from .livestats import percentile
from .scoring import Scores

OnProgress = Callable[[int, int], Awaitable[None]]  # (rows done, rows in all)


@dataclass(frozen=True)
class PairScores:
    src_lang: str
    tgt_lang: str
    scores: Scores


@dataclass(frozen=True)
class Evaluation:
    version: str
    set_name: str
    set_checksum: str  # SHA-256 of the set file the scores are for
    overall: Scores
    pairs: tuple[PairScores, ...]
    rows: int
    errors: int  # rows the version failed to answer; scored as empty answers
    latency_p50_ms: float | None  # of the answered rows
    latency_p95_ms: float | None
    at: datetime | None = None
    by: str = ""
    id: int | None = None
    # rows whose answer each check flagged (engine/checks.py); None: evaluated before answers were checked
    flagged: dict[str, int] | None = None

    @property
    def chrf(self) -> float:
        return self.overall.chrf


@dataclass(frozen=True)
class Outcome:
    hypothesis: str
    latency_ms: float | None  # None: the row failed
    flags: tuple[str, ...] = ()  # the checks its answer failed


async def run(rows: Sequence[EvalRow], translate: Callable[[EvalRow], Awaitable[Outcome]], concurrency: int,
              on_progress: OnProgress | None) -> list[Outcome]:
    """Every row through `translate`, `concurrency` at a time; `on_progress` is awaited once before
    the first row and after each. Cancelled, it cancels every row still running."""
    gate = asyncio.Semaphore(concurrency)

    async def one(row: EvalRow) -> Outcome:
        async with gate:
            return await translate(row)

    tasks = [asyncio.ensure_future(one(r)) for r in rows]
    try:
        if on_progress:
            await on_progress(0, len(rows))
        for done, finished in enumerate(asyncio.as_completed(tasks), start=1):
            await finished
            if on_progress:
                await on_progress(done, len(rows))
        return [t.result() for t in tasks]
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def summarize(version: str, evset: EvalSet, outcomes: Sequence[Outcome]) -> Evaluation:
    groups: dict[tuple[str, str], list[int]] = {}
    for i, row in enumerate(evset.rows):
        groups.setdefault((row.src_lang, row.tgt_lang), []).append(i)

    def scores(indices: Sequence[int], target: str) -> Scores:
        return scoring.corpus([outcomes[i].hypothesis for i in indices],
                              [evset.rows[i].reference for i in indices], target)

    pairs = tuple(PairScores(src, tgt, scores(ix, tgt)) for (src, tgt), ix in groups.items())
    targets = {row.tgt_lang for row in evset.rows}
    # One target picks BLEU's tokenizer for it; mixed targets are tokenized as 13a (chrF, the
    # headline number, needs no tokenizer).
    overall = scores(range(len(evset.rows)), targets.pop() if len(targets) == 1 else "")
    latencies = [o.latency_ms for o in outcomes if o.latency_ms is not None]
    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    return Evaluation(version, evset.name, evset.checksum, overall, pairs, len(outcomes),
                      sum(o.latency_ms is None for o in outcomes), p50 and round(p50, 1), p95 and round(p95, 1),
                      flagged=dict(Counter(f for o in outcomes for f in o.flags)))
