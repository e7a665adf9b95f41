"""Two replicas on one Postgres database: how fast a switch made through A is applied by B, whether
clients streaming through B notice, and what a switch's commit costs on Postgres against SQLite.

    .venv/bin/python -m benchmarks.replicas_bench [--switches 60] [--clients 4]

Replica A and B are the real app (`chainlit run app.py`) on a throwaway Postgres cluster (Debian's
postgresql), serving two remote versions: fake OpenAI-compatible servers (tests/fake_vllm.py) that
the benchmark starts outside Baton, so that the numbers are Baton's and not a CPU model's. Each
switch is made through A's admin API; B's /healthz is polled every 5 ms until it reports the new
generation: the convergence time, from the moment A was asked. Meanwhile clients stream chat
completions through B with the official openai SDK; every failure is counted.

The commit: `Store.save_change` (what a switch waits for: deployment, desired states and audit
row in one transaction, plus the NOTIFY on Postgres), alternately on a SQLite file and on the
Postgres database, in this process.

Merges the numbers into benchmarks/results.json under "replicas".
"""
from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from openai import AsyncOpenAI

from engine.store import Change, Store
from tests import chatkit as ck
from tests import replicakit as rk
from tests import pgkit

from .benchutil import lat_summary, merge_results, run_reaped

PORTS = (32800, 32801)


async def converge(switches: int, clients: int, root: Path, db_url: str) -> dict:
    remotes = [rk.start_remote(name, ck.make_fake_model(root, name, token_delay_s=0.02), port, "bench-remote-key",
                               root, vllm=False) for name, port in (("v1", PORTS[0]), ("v2", PORTS[1]))]
    try:
        rk.wait_remotes(remotes, 30)
        with rk.replicas(root, db_url, remotes) as (a, b):
            key = await rk.serving([a, b], remotes, 60)
            async with rk.admin_api(a, key) as api:
                done = asyncio.Event()
                served, failed = [0], [0]

                async def client() -> None:
                    async with AsyncOpenAI(base_url=f"{b.url}/v1", api_key=key, max_retries=0, timeout=60) as sdk:
                        while not done.is_set():
                            try:
                                stream = await sdk.chat.completions.create(
                                    model="baton", messages=[{"role": "user", "content": "one two three four"}],
                                    stream=True)
                                finish = None
                                async for chunk in stream:
                                    if chunk.choices and chunk.choices[0].finish_reason:
                                        finish = chunk.choices[0].finish_reason
                                if finish is None:
                                    raise RuntimeError("no finish reason")
                                served[0] += 1
                            except Exception:  # noqa: BLE001 - counted, the point of the benchmark
                                failed[0] += 1

                tasks = [asyncio.create_task(client()) for _ in range(clients)]
                delays: list[float] = []
                answered: list[float] = []  # A's own answer to the switch, part of each delay
                try:
                    for i in range(switches):
                        sent = time.perf_counter()
                        r = await api.post("/deployment/switch", json={"name": ("v2", "v1")[i % 2]})
                        r.raise_for_status()
                        answered.append(time.perf_counter() - sent)
                        await rk.applied(b, r.json()["generation"])
                        delays.append(time.perf_counter() - sent)
                        await asyncio.sleep(0.2)
                finally:
                    done.set()
                    await asyncio.gather(*tasks)
    finally:
        for r in remotes:
            r.kill()
    return {"switches": switches, "clients": clients, "convergence": lat_summary(delays),
            "switch_answered": lat_summary(answered),
            "served_through_b": served[0], "failed_through_b": failed[0]}


async def commits(n: int, root: Path, pg_url: str) -> dict:
    stores = {"sqlite": Store(f"sqlite+aiosqlite:///{root / 'commit.db'}"), "postgres": Store(pg_url)}
    times: dict[str, list[float]] = {k: [] for k in stores}
    try:
        for store in stores.values():
            await store.migrate()
        for i in range(n):
            for kind, store in stores.items():  # alternating: the same noise for both
                dep = await store.get_deployment()
                change = Change(replace(dep, active=("v1", "v2")[i % 2], previous=dep.active), {}, "bench",
                                "switch", {"name": "v"}, "bench")
                start = time.perf_counter()
                await store.save_change(change)
                times[kind].append(time.perf_counter() - start)
    finally:
        for store in stores.values():
            await store.close()
    return {kind: lat_summary(t) for kind, t in times.items()}


async def main(switches: int, clients: int, commit_n: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="baton-replicas-") as tmp, pgkit.temp_postgres() as pg:
        root = Path(tmp)
        result = await converge(switches, clients, root / "apps", pg.new_database())
        result["commit"] = await commits(commit_n, root, pg.new_database())
    c = result["convergence"]
    a = result["switch_answered"]
    print(f"convergence over {switches} switches: p50 {c['p50_ms']} ms, p99 {c['p99_ms']} ms, max {c['max_ms']} ms "
          f"(of which A's answer to the switch: p50 {a['p50_ms']} ms, p99 {a['p99_ms']} ms)")
    print(f"through B meanwhile: {result['served_through_b']} answers, {result['failed_through_b']} failed")
    for kind, s in result["commit"].items():
        print(f"switch commit on {kind}: p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--switches", type=int, default=60)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--commits", type=int, default=200)
    args = parser.parse_args()
    result, left = run_reaped(main(args.switches, args.clients, args.commits))
    merge_results("replicas", {**result, "reaped": len(left)})
