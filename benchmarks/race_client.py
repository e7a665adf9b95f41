"""The race's client: vLLM's own serving benchmark (`vllm.benchmarks.serve`), run in .venv-vllm by
benchmarks/race_bench.py, against each side in turn within this one process.

    .venv-vllm/bin/python benchmarks/race_client.py SPEC.json RESULTS.json

SPEC: {"sides": [{"name", "base_url", "model", "key"}], "concurrencies": [1, 8, 32], "rounds": 2,
"prompts": {"1": 30, ...}, "tokenizer": PATH, "input_len": 16, "output_len": 16}. For each round,
each concurrency, the sides run one after another (their order rotated from one concurrency to the
next), so that a shared machine's drift falls on all of them alike. RESULTS: one record per run.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from vllm.benchmarks import serve
from vllm.utils.argparse_utils import FlexibleArgumentParser

KEPT = ("completed", "failed", "duration", "request_throughput", "output_throughput", "total_token_throughput",
        "mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms", "median_tpot_ms", "p99_tpot_ms", "median_itl_ms",
        "p99_itl_ms", "total_output_tokens")


def arguments(spec: dict, side: dict, concurrency: int) -> argparse.Namespace:
    parser = FlexibleArgumentParser()
    serve.add_cli_args(parser)
    return parser.parse_args([
        "--backend", "openai", "--base-url", side["base_url"], "--endpoint", "/v1/completions",
        "--model", side["model"], "--served-model-name", side["model"], "--tokenizer", spec["tokenizer"],
        "--dataset-name", "random", "--random-input-len", str(spec["input_len"]),
        "--random-output-len", str(spec["output_len"]), "--ignore-eos", "--temperature", "0",
        "--num-prompts", str(spec["prompts"][str(concurrency)]), "--max-concurrency", str(concurrency),
        "--request-rate", "inf", "--num-warmups", "2", "--disable-tqdm", "--percentile-metrics", "ttft,tpot,itl",
        "--metric-percentiles", "50,99", "--seed", "0",
    ])


async def main(spec: dict) -> list[dict]:
    records = []
    sides = spec["sides"]
    for rnd in range(spec["rounds"]):
        for k, concurrency in enumerate(spec["concurrencies"]):
            shift = (rnd * len(spec["concurrencies"]) + k) % len(sides)
            for side in sides[shift:] + sides[:shift]:
                os.environ["OPENAI_API_KEY"] = side["key"]  # the serving benchmark's Authorization header
                print(f"race: round {rnd + 1}, concurrency {concurrency}, {side['name']}", file=sys.stderr, flush=True)
                result = await serve.main_async(arguments(spec, side, concurrency))
                records.append({"round": rnd + 1, "concurrency": concurrency, "side": side["name"],
                                **{key: result.get(key) for key in KEPT}})
    return records


if __name__ == "__main__":
    spec_path, out_path = sys.argv[1:3]
    with open(spec_path) as f:
        spec = json.load(f)
    records = asyncio.run(main(spec))
    with open(out_path, "w") as f:
        json.dump(records, f, indent=1)
