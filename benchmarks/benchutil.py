"""Pieces shared by the load and nginx benchmarks: models, percentiles, results, process cleanup.

Every process a benchmark starts (the app, vLLM servers, nginx, and whatever they fork)
inherits BENCH_TAG=<random> in its environment. `reap(tag)` ends, by pid, every process
still carrying that tag, and their descendants and process-group members: the backstop that
keeps a failed or interrupted run from leaving a vLLM or nginx process behind. vLLM's
EngineCore and Worker processes need the second rule: they rename themselves with
setproctitle, which overwrites the memory /proc/PID/environ reads, so the tag no longer shows
there. Nothing else is touched.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from engine import Sampling

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results.json"
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
FLAGS = ["--dtype", "float32", "--enforce-eager", "--max-model-len", "512"]
MAX_TOKENS = 32  # random-weight models rarely end an answer: every answer is this long
SAMPLING = Sampling(max_tokens=MAX_TOKENS, stop=())
TAG_ENV = "BENCH_TAG"
T = TypeVar("T")
# The same English phrases on every side of every comparison.
PHRASES = [
    "Good morning", "Where is the station?", "Thank you very much", "How much does this cost?",
    "I would like a coffee, please", "The weather is nice today", "Good night", "Can you help me?",
]


def pct(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100), linear between closest ranks; None for no values."""
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def lat_summary(values_s: list[float]) -> dict:
    """n, p50, p99 and max, in milliseconds."""
    r = lambda v: None if v is None else round(v * 1000, 1)  # noqa: E731
    return {"n": len(values_s), "p50_ms": r(pct(values_s, 50)), "p99_ms": r(pct(values_s, 99)),
            "max_ms": r(max(values_s) if values_s else None)}


def build_models(root: Path, names: list[str]) -> None:
    """bench-a, bench-b, ... : random-weight tiny Llamas (demo/build_model.py --steps 0), seeds 1, 2, ..."""
    root.mkdir(parents=True, exist_ok=True)
    for seed, name in enumerate(names, start=1):
        if not (root / name / "config.json").exists():
            subprocess.run([str(VLLM_PYTHON), str(ROOT / "demo" / "build_model.py"), "--out", str(root / name),
                            "--steps", "0", "--seed", str(seed)], check=True, stdout=subprocess.DEVNULL)


def merge_results(key: str, value: dict) -> None:
    """Write `value` under `key` in benchmarks/results.json, keeping the other keys."""
    existing = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    existing[key] = {**value, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine()}
    RESULTS.write_text(json.dumps(existing, indent=2) + "\n")


def machine() -> str:
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    return f"{sys.platform}, {os.cpu_count()} cores, CPU vLLM, load average {load:.1f} at the end"


def new_tag() -> str:
    """A tag for this run, put in os.environ so every child inherits it."""
    tag = f"bench-{secrets.token_hex(8)}"
    os.environ[TAG_ENV] = tag
    return tag


def tagged_pids(tag: str) -> list[int]:
    """Processes of this run: those whose environment carries the tag, plus their descendants
    and the members of process groups a tagged process leads (renamed processes lose the tag)."""
    needle = f"{TAG_ENV}={tag}".encode()
    me = os.getpid()
    procs: dict[int, tuple[int, int, bool]] = {}  # pid -> (ppid, pgid, tagged)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            environ = b""
            with contextlib.suppress(OSError):
                environ = (entry / "environ").read_bytes()
            procs[int(entry.name)] = (int(fields[1]), int(fields[2]), needle in environ.split(b"\0"))
    ours = {pid for pid, (_, _, tagged) in procs.items() if tagged}
    while True:
        more = {pid for pid, (ppid, pgid, _) in procs.items()
                if pid not in ours and (ppid in ours or (pgid in ours and pgid != me))}
        if not more:
            return sorted(ours)
        ours |= more


def reap(tag: str, grace_s: float = 10.0) -> list[int]:
    """SIGTERM every process carrying the tag, SIGKILL what is left after `grace_s`. Returns
    the pids that were still there (an empty list is the expected, clean outcome)."""
    left = tagged_pids(tag)
    for pid in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and tagged_pids(tag):
        time.sleep(0.2)
    for pid in tagged_pids(tag):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return left


def run_reaped(main: Coroutine[Any, Any, T]) -> tuple[T, list[int]]:
    """asyncio.run(main) in a tagged run that SIGTERM/SIGHUP end cleanly; then every process it
    left behind is reaped. Returns main's result and the pids that had to be reaped."""
    exit_on_signals()
    tag = new_tag()
    try:
        result = asyncio.run(main)
    finally:
        left = reap(tag)
        print(f"processes left behind and reaped: {left or 'none'}", flush=True)
    return result, left


def exit_on_signals() -> None:
    """SIGTERM/SIGHUP raise SystemExit, so `finally` blocks (and their cleanup) run."""
    def handler(signum, _frame):
        raise SystemExit(128 + signum)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)
