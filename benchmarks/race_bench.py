"""The race: vLLM's own serving benchmark (`vllm.benchmarks.serve`, benchmarks/race_client.py) as
the client, against three sides in front of ONE vLLM backend: straight to it, nginx as a plain
streaming proxy, and Baton's /v1.

    .venv/bin/python -m benchmarks.race_bench [--concurrencies 1 8 32] [--rounds 2] [--output-len 16]

The backend is the version Baton runs (a random-weight tiny Llama, bench-a, CPU flags), so all
three sides drive the same server: direct with the backend's own key (read from its
/proc/PID/environ), nginx (the usual recipe's config, proxy_buffering off, keepalive upstream)
forwarding the same key, Baton with a user key and the alias. Load: random 16-token prompts,
greedy, `ignore_eos` with `--output-len` tokens (so every side generates the same tokens; Baton now
passes ignore_eos on), `--max-concurrency` 1, 8 and 32, each concurrency's sides in turn (order
rotated), the whole repeated `--rounds` times, in one client process. Ratios are side / direct
from the same run. Baton's own account of its overhead (the baton_overhead_seconds histogram of
/metrics, over the whole race) is kept beside.

Merges the numbers into benchmarks/results.json under "race".
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks import benchutil as bu
from benchmarks.nginx_baseline import Nginx, start_baton
from tests import chatkit as ck

NAME = "bench-a"
ALIAS = "baton"
CLIENT = Path(__file__).with_name("race_client.py")


def prompts(concurrency: int, per_client: int) -> int:
    return max(30, concurrency * per_client)


def summarize(records: list[dict], concurrencies: list[int]) -> dict:
    """Per concurrency and side: each round's numbers, and the ratios to direct (from the sum of the
    rounds' throughputs) and the TTFT difference to direct (median over rounds)."""
    out: dict = {}
    for c in concurrencies:
        runs = [r for r in records if r["concurrency"] == c]
        sides: dict = {}
        direct = [r for r in runs if r["side"] == "direct"]
        d_rps = sum(r["request_throughput"] for r in direct)
        d_tps = sum(r["output_throughput"] for r in direct)
        for name in dict.fromkeys(r["side"] for r in runs):  # the sides, in their first order
            mine = [r for r in runs if r["side"] == name]
            by_round = {r["round"]: r for r in mine}
            ttft_diff = [by_round[r["round"]]["median_ttft_ms"] - r["median_ttft_ms"] for r in direct
                         if r["round"] in by_round]
            p99_diff = [by_round[r["round"]]["p99_ttft_ms"] - r["p99_ttft_ms"] for r in direct if r["round"] in by_round]
            sides[name] = {
                "requests_per_s": round(statistics.mean(r["request_throughput"] for r in mine), 1),
                "output_tokens_per_s": round(statistics.mean(r["output_throughput"] for r in mine), 1),
                "ratio_requests": round(sum(r["request_throughput"] for r in mine) / d_rps, 3),
                "ratio_tokens": round(sum(r["output_throughput"] for r in mine) / d_tps, 3),
                "median_ttft_ms": round(statistics.mean(r["median_ttft_ms"] for r in mine), 2),
                "p99_ttft_ms": round(statistics.mean(r["p99_ttft_ms"] for r in mine), 2),
                "ttft_median_overhead_ms": round(statistics.median(ttft_diff), 2),
                "ttft_p99_overhead_ms": round(statistics.median(p99_diff), 2),
                "failed": sum(r["failed"] or 0 for r in mine),
                "completed": sum(r["completed"] or 0 for r in mine),
            }
        out[str(c)] = sides
    return out


def overhead_histogram(metrics: str, route: str = "/v1/completions") -> dict:
    """Baton's own account (X-Baton-Overhead-Ms, as a histogram): count, mean, and the share of
    requests at or under each bucket's bound."""
    def value(name: str, extra: str = "") -> float:
        m = re.search(rf'^{name}\{{{extra}route="{re.escape(route)}"\}} (\S+)$', metrics, re.M)
        return float(m.group(1)) if m else 0.0

    count = value("baton_overhead_seconds_count")
    if not count:
        return {"count": 0}
    shares = {bound: round(value("baton_overhead_seconds_bucket", f'le="{bound}",') / count, 3)
              for bound in ("0.001", "0.002", "0.005", "0.01")}
    return {"count": int(count), "mean_ms": round(value("baton_overhead_seconds_sum") / count * 1000, 2),
            "share_at_most_s": shares}


async def main(args: argparse.Namespace) -> dict:
    work = Path(args.work or tempfile.mkdtemp(prefix="baton-race-")).resolve()
    bu.build_models(work / "models", [NAME])
    async with contextlib.AsyncExitStack() as stack:
        t0 = time.monotonic()
        baton = await start_baton(work, args.startup_timeout)
        stack.callback(baton.app.stop, 60)
        stack.push_async_callback(baton.admin.aclose)
        await baton.load([NAME])
        await baton.wait_ready([NAME], args.startup_timeout)
        await baton.make_active(NAME)
        startup = time.monotonic() - t0
        direct_url, key = await baton.direct(NAME)
        ngx = Nginx(Path(tempfile.mkdtemp(prefix="nginx-", dir=work)), ck.free_port(), int(direct_url.rsplit(":", 1)[1]))
        ngx.start()
        stack.callback(ngx.stop)
        sides = [{"name": "direct", "base_url": direct_url, "model": NAME, "key": key},
                 {"name": "nginx", "base_url": ngx.url, "model": NAME, "key": key},
                 {"name": "baton", "base_url": baton.app.url, "model": ALIAS, "key": baton.user_key}]
        spec = {"sides": sides, "concurrencies": args.concurrencies, "rounds": args.rounds,
                "prompts": {str(c): prompts(c, args.per_client) for c in args.concurrencies},
                "tokenizer": str(work / "models" / NAME), "input_len": 16, "output_len": args.output_len}
        spec_path, out_path = work / "race-spec.json", work / "race-records.json"
        spec_path.write_text(json.dumps(spec))
        load_start = [round(x, 2) for x in os.getloadavg()]
        t1 = time.monotonic()
        with open(work / "race-client.log", "wb") as log:
            proc = await asyncio.create_subprocess_exec(str(bu.VLLM_PYTHON), str(CLIENT), str(spec_path),
                                                        str(out_path), stdout=log, stderr=subprocess.STDOUT)
            if await proc.wait() != 0:
                raise RuntimeError(f"the race client failed: {(work / 'race-client.log').read_text()[-3000:]}")
        race_s = time.monotonic() - t1
        async with httpx.AsyncClient(base_url=baton.app.url, timeout=30) as http:
            metrics = (await http.get("/metrics")).text
    records = json.loads(out_path.read_text())
    return {"command": " ".join(["python -m benchmarks.race_bench", *sys.argv[1:]]),
            "client": "vllm.benchmarks.serve (.venv-vllm), random 16-token prompts, greedy, ignore_eos, "
                      f"{args.output_len} output tokens",
            "backend": f"{NAME}: a random-weight tiny Llama on CPU vLLM ({' '.join(bu.FLAGS)}), one server for "
                       "all three sides",
            "concurrencies": args.concurrencies, "rounds": args.rounds, "prompts": spec["prompts"],
            "startup_s": round(startup, 1), "race_s": round(race_s, 1),
            "load_average_1_5_15": {"start": load_start, "end": [round(x, 2) for x in os.getloadavg()]},
            "by_concurrency": summarize(records, args.concurrencies),
            "baton_overhead_header": overhead_histogram(metrics), "runs": records}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrencies", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--per-client", type=int, default=10, help="requests per concurrent client in one run")
    parser.add_argument("--output-len", type=int, default=16)
    parser.add_argument("--startup-timeout", type=float, default=900)
    parser.add_argument("--work", help="directory for the model (kept, reused), app data, nginx prefix, logs")
    a = parser.parse_args()
    result, left = bu.run_reaped(main(a))
    result["processes_left_behind"] = len(left)
    bu.merge_results("race", result)
    for c, sides in result["by_concurrency"].items():
        print(f"concurrency {c}: " + "; ".join(
            f"{n} {s['requests_per_s']} req/s ({s['ratio_requests']}x), TTFT median {s['median_ttft_ms']} ms "
            f"(+{s['ttft_median_overhead_ms']})" for n, s in sides.items()))
    print("Baton's own overhead (header histogram):", result["baton_overhead_header"])
