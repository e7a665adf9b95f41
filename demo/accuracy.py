"""Phrasebook exact-match accuracy of each demo version, through its real vLLM backend.

    .venv/bin/python -m demo.accuracy [--versions demo-v1 demo-v2]

Reads the demo models `make demo` built (BATON_DATA_DIR/models) but runs its own engine on a
scratch database, so a running app is not disturbed. Prints one line per version and writes
benchmarks/demo_accuracy.json.
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import json
import tempfile
import time
from pathlib import Path

from demo.versions import register_demo_version
from engine import Engine, Settings, TranslationRequest
from engine.languages import NAMES

ROOT = Path(__file__).resolve().parent.parent
PHRASEBOOK = ROOT / "demo" / "phrasebook.tsv"


def phrasebook() -> list[dict[str, str]]:
    with PHRASEBOOK.open(encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


async def accuracy(eng: Engine, name: str, pairs: list[dict[str, str]], concurrency: int = 8) -> dict:
    """Route every request to `name` by making it the only version the router can pick."""
    await eng.load(name)
    await eng.wait_loaded(name)
    if eng.router.deployment.active != name:
        await eng.switch(name, actor="demo.accuracy")
    sem = asyncio.Semaphore(concurrency)
    wrong: list[tuple[str, str, str]] = []

    async def one(row: dict[str, str]) -> bool:
        req = TranslationRequest(row["src"], NAMES[row["tgt_lang"]], NAMES[row["src_lang"]])
        async with sem:
            r = await eng.translate(req, lambda _t: asyncio.sleep(0))
        assert r.version == name
        ok = r.text.strip() == row["tgt"]
        if not ok:
            wrong.append((row["src"], row["tgt"], r.text.strip()))
        return ok

    t0 = time.perf_counter()
    hits = sum(await asyncio.gather(*(one(row) for row in pairs)))
    return {"version": name, "exact": hits, "total": len(pairs), "accuracy": round(hits / len(pairs), 4),
            "seconds": round(time.perf_counter() - t0, 1), "examples_wrong": wrong[:5]}


async def main(versions: list[str]) -> list[dict]:
    models = Settings().model_roots[0]
    eng = Engine(Settings(data_dir=Path(tempfile.mkdtemp(prefix="baton-accuracy-")), model_roots=[models]))
    await eng.start()
    pairs = phrasebook()
    results = []
    try:
        for name in versions:
            await register_demo_version(eng, name, models / name)
            res = await accuracy(eng, name, pairs)
            print(f"{name}: {res['exact']}/{res['total']} exact = {res['accuracy']:.1%} ({res['seconds']} s)",
                  flush=True)
            results.append(res)
    finally:
        await eng.close()
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--versions", nargs="+", default=["demo-v1", "demo-v2"])
    out = asyncio.run(main(parser.parse_args().versions))
    (ROOT / "benchmarks" / "demo_accuracy.json").write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
