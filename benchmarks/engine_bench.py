"""Engine benchmark against real vLLM backends: switches under streaming load, and overheads.

    make bench            (or: .venv/bin/python -m benchmarks.engine_bench [--switches N] [--nice-only])

Prints the numbers and merges them into benchmarks/results.json under "engine", and the same
load with the backends at niceness 0 and at BATON_BACKEND_NICE, side by side, under "engine_nice".
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from openai import AsyncOpenAI

from benchmarks import benchutil as bu
from engine import Engine, Settings, TranslationRequest
from engine.translate import BackendFailed, build_prompt


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 2 else values[0]


async def timed_switches(eng: Engine, n: int, interval_s: float) -> list[float]:
    """n switches back and forth: each from the call until the next request routes to the new version."""
    out: list[float] = []
    target = "b" if eng.router.deployment.active == "a" else "a"
    for _ in range(n):
        t0 = time.perf_counter()
        await eng.switch(target)
        route = eng.router.pick("probe")
        out.append((time.perf_counter() - t0) * 1000)
        assert route is not None and route.backend.spec.name == target
        target = "a" if target == "b" else "b"
        await asyncio.sleep(interval_s)
    return out


@dataclass
class LoadRun:
    """What one or more load phases measured, raw, so that runs can be pooled before percentiles."""
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("requests", "failed", "truncated", "misattributed", "retranslated"), 0))
    switch_ms: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    duration_s: float = 0.0

    def add(self, other: LoadRun) -> None:
        for k, v in other.counts.items():
            self.counts[k] += v
        self.switch_ms += other.switch_ms
        self.lags += other.lags
        self.duration_s += other.duration_s

    def summary(self) -> dict:
        served = self.counts["requests"] - self.counts["failed"] - self.counts["truncated"]
        return {**self.counts, "switches": len(self.switch_ms), "duration_s": self.duration_s,
                "served_per_s": served / self.duration_s,
                "switch_p50_ms": statistics.median(self.switch_ms), "switch_p99_ms": p99(self.switch_ms),
                "loop_lag_p50_ms": statistics.median(self.lags), "loop_lag_p99_ms": p99(self.lags),
                "loop_lag_max_ms": max(self.lags)}


async def run_load(eng: Engine, switches: int, clients: int, interval_s: float) -> LoadRun:
    """Concurrent streams while switching back and forth. Also samples the event loop's lag (a
    5 ms sleep's overshoot) in the same process: the floor under any await, a switch included."""
    stop = asyncio.Event()
    run = LoadRun()
    counts = run.counts

    async def client(i: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            counts["requests"] += 1
            try:
                r = await eng.translate(TranslationRequest(f"Good night {n}", "German", conversation_id=f"c{i}-{n}"),
                                        lambda _t: asyncio.sleep(0))
                if r.completion_tokens != bu.SAMPLING.max_tokens:
                    counts["truncated"] += 1
                if r.served_by != r.version:
                    counts["misattributed"] += 1
                if r.retranslated:  # a backend failed mid-answer: none should, nothing is injected here
                    counts["retranslated"] += 1
            except BackendFailed as exc:
                counts["truncated" if exc.partial else "failed"] += 1
            except Exception:  # noqa: BLE001 - counted, the benchmark goes on
                counts["failed"] += 1

    async def loop_lag() -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            await asyncio.sleep(0.005)
            run.lags.append((time.perf_counter() - t0) * 1000 - 5)

    t0 = time.perf_counter()
    tasks = [asyncio.create_task(client(i)) for i in range(clients)] + [asyncio.create_task(loop_lag())]
    await asyncio.sleep(1)
    run.switch_ms = await timed_switches(eng, switches, interval_s)
    stop.set()
    await asyncio.gather(*tasks)
    run.duration_s = time.perf_counter() - t0
    return run


async def load_phase(eng: Engine, switches: int, clients: int, interval_s: float) -> dict:
    run = await run_load(eng, switches, clients, interval_s)
    return {**run.summary(), "clients": clients, "switch_interval_s": interval_s}


async def idle_phase(eng: Engine, switches: int) -> dict:
    """The same switches with no request running: the cost of the switch itself."""
    switch_ms = await timed_switches(eng, switches, 0.01)
    return {"switch_idle_p50_ms": statistics.median(switch_ms), "switch_idle_p99_ms": p99(switch_ms)}


def flip_phase(eng: Engine, n: int = 10_000) -> dict:
    """The router pointer flip alone: from assignment until a pick sees the new version."""
    flips: list[float] = []
    base = eng.router.deployment
    for i in range(n):
        target = "a" if i % 2 else "b"
        t0 = time.perf_counter()
        eng.router.deployment = replace(base, active=target)
        route = eng.router.pick(f"c{i}")
        flips.append((time.perf_counter() - t0) * 1000)
        assert route.backend.spec.name == target
    eng.router.deployment = base
    return {"flip_p50_ms": statistics.median(flips), "flip_p99_ms": p99(flips)}


async def ttft_phase(eng: Engine, rounds: int) -> dict:
    """Median TTFT through the engine minus direct to the same backend, interleaved in one run."""
    backend = eng.pool.get(eng.router.deployment.active)
    # The backend's key is per process and lives only in its client (and the server's environment).
    assert backend is not None and backend.client is not None
    direct_client = AsyncOpenAI(base_url=f"{backend.url}/v1", api_key=backend.client.api_key, max_retries=0)
    req = TranslationRequest("Where is the station?", "French", conversation_id="ttft")
    prompt = build_prompt(backend.spec, req)
    via_engine, direct = [], []

    async def direct_ttft() -> float:
        t0 = time.perf_counter()
        stream = await direct_client.completions.create(
            model=backend.spec.served_name, prompt=prompt, max_tokens=bu.SAMPLING.max_tokens, temperature=0,
            top_p=1.0, stream=True, stream_options={"include_usage": True})
        first = 0.0
        async with stream:
            async for chunk in stream:
                if not first and chunk.choices and chunk.choices[0].text:
                    first = time.perf_counter() - t0
        return first * 1000

    async def engine_ttft() -> float:
        t0 = time.perf_counter()
        first = 0.0

        async def on_token(_t: str) -> None:
            nonlocal first
            first = first or time.perf_counter() - t0

        await eng.translate(req, on_token)
        return first * 1000

    for i in range(rounds):
        if i % 2:
            via_engine.append(await engine_ttft())
            direct.append(await direct_ttft())
        else:
            direct.append(await direct_ttft())
            via_engine.append(await engine_ttft())
    await direct_client.close()
    return {
        "ttft_engine_median_ms": statistics.median(via_engine),
        "ttft_direct_median_ms": statistics.median(direct),
        # Each round's two requests run back to back, so their difference cancels most of the
        # machine's drift; the median of those differences is the engine's own cost.
        "ttft_overhead_ms": statistics.median(e - d for e, d in zip(via_engine, direct)),
        "ttft_rounds": rounds,
    }


async def start_pair(settings: Settings) -> tuple[Engine, float]:
    """An engine with versions a (active) and b (standby) on bench-a and bench-b, both ready;
    and how long their two backends took to start side by side."""
    eng = Engine(settings)
    await eng.start()
    try:
        for name, model in (("a", "bench-a"), ("b", "bench-b")):
            await eng.register(name, model, flags=bu.FLAGS, sampling=bu.SAMPLING)
            await eng.load(name)
        t0 = time.perf_counter()
        await asyncio.gather(eng.wait_loaded("a"), eng.wait_loaded("b"))
        if eng.router.deployment.active != "a":
            await eng.switch("a")
    except BaseException:
        await eng.close()
        raise
    return eng, time.perf_counter() - t0


async def nice_phase(work: Path, nice: int, args: argparse.Namespace) -> dict:
    """The load phase with the backends at niceness 0 and at `nice`, in alternating order over
    `args.nice_rounds` rounds (a fresh pair of backends for each, niceness being set at start-up),
    pooled per setting. Other work on the machine lands on both sides alike."""
    runs = {0: LoadRun(), nice: LoadRun()}
    load_avgs: dict[int, list[float]] = {0: [], nice: []}
    startups: dict[int, list[float]] = {0: [], nice: []}
    for i in range(args.nice_rounds):
        for n in (0, nice) if i % 2 == 0 else (nice, 0):
            data = work / f"nice-{n}"
            shutil.rmtree(data, ignore_errors=True)  # a fresh database: nothing comes back from an earlier run
            settings = Settings(data_dir=data, model_roots=[work / "models"], backend_nice=n,
                                startup_timeout_s=900, request_wait_s=300)  # niced, they start late on a busy box
            eng, startup_s = await start_pair(settings)
            startups[n].append(startup_s)
            try:
                runs[n].add(await run_load(eng, args.nice_switches, args.clients, args.interval))
            finally:
                await eng.close()
            load_avgs[n].append(os.getloadavg()[0])
    sides = {f"nice_{n}": {**run.summary(), "load_average_1m_after_each_run": load_avgs[n],
                           "backend_startup_s_two_in_parallel": startups[n]}
             for n, run in runs.items()}
    return {"command": " ".join([".venv/bin/python -m benchmarks.engine_bench", *sys.argv[1:]]),
            "backend_nice": nice, "rounds": args.nice_rounds, "switches_per_run": args.nice_switches,
            "clients": args.clients, "switch_interval_s": args.interval, **sides}


async def main(args: argparse.Namespace) -> dict[str, dict]:
    work = Path(args.work or tempfile.mkdtemp(prefix="baton-bench-"))
    bu.build_models(work / "models", ["bench-a", "bench-b"])
    out: dict[str, dict] = {}
    if not args.nice_only:
        eng, startup_s = await start_pair(Settings(data_dir=work, startup_timeout_s=300, request_wait_s=300))
        try:
            results = {"backend_startup_s_two_in_parallel": round(startup_s, 1),
                       "backend_nice": eng.settings.backend_nice}
            results.update(await load_phase(eng, args.switches, args.clients, args.interval))
            results.update(await idle_phase(eng, args.switches))
            results.update(flip_phase(eng))
            results.update(await ttft_phase(eng, args.rounds))
        finally:
            await eng.close()
        out["engine"] = rounded(results)
    out["engine_nice"] = rounded(await nice_phase(work, args.nice, args))
    return out


def rounded(d: dict) -> dict:
    return {k: rounded(v) if isinstance(v, dict) else [round(x, 2) for x in v] if isinstance(v, list)
            else round(v, 3) if isinstance(v, float) else v for k, v in d.items()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--switches", type=int, default=120)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between switches under load")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--nice-rounds", type=int, default=2,
                        help="rounds of the niceness comparison (each starts the backends at 0 and at the default)")
    parser.add_argument("--nice-switches", type=int, default=100, help="switches under load per run of that comparison")
    parser.add_argument("--nice", type=int, default=Settings().backend_nice,
                        help="the niceness compared with 0 (default: BATON_BACKEND_NICE)")
    parser.add_argument("--nice-only", action="store_true", help="only the niceness comparison")
    parser.add_argument("--work", help="working directory (models are cached there)")
    parser.add_argument("--no-save", action="store_true", help="a smoke run: print, leave results.json alone")
    cli = parser.parse_args()
    if not 0 < cli.nice <= 19:
        parser.error("--nice must be 1..19: it is compared with 0")
    res = asyncio.run(main(cli))
    print(json.dumps(res, indent=2))
    for key, value in res.items():
        if not cli.no_save:
            bu.merge_results(key, value)
    if "engine" in res:
        out = res["engine"]
        targets = {"failed": out["failed"] == 0, "truncated": out["truncated"] == 0,
                   "switches>=100": out["switches"] >= 100, "flip_p99_ms<=1": out["flip_p99_ms"] <= 1,
                   "switch_p99_ms<=50": out["switch_p99_ms"] <= 50, "ttft_overhead_ms<=2": out["ttft_overhead_ms"] <= 2}
        print("targets:", ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in targets.items()))
