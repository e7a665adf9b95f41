"""Quality-gated rollout on the real demo versions: their evaluation on demo/golden.tsv, then one
`/rollout demo-v2` from demo-v1 while users translate, step by step to the promote.

    .venv/bin/python -m benchmarks.quality_bench [--step-s 20] [--users 4]

Builds the demo models if `make demo` has not (data/models), runs its own engine on a scratch
database (a running app is not disturbed), and drives it in-process: the app's path is tested in
tests/test_rollout_app.py and tests/test_quality_vllm.py; this measures what the engine decides.
Writes benchmarks/results.json ("quality") and docs/rollout.png.
"""
from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks import benchutil as bu
from demo.accuracy import phrasebook
from demo.versions import DEMO_VERSIONS, build_if_missing, register_demo_version
from engine import Engine, Settings, TranslationRequest
from engine.languages import NAMES

PLOT = bu.ROOT / "docs" / "rollout.png"
GATE_SET = "golden"


class Users:
    """Chat users translating phrasebook lines, each request its own conversation (so the canary
    gets its share), with a short think time. Every answer is logged with its time and version."""

    def __init__(self, eng: Engine, n: int, t0: float) -> None:
        self.eng, self.n, self.t0 = eng, n, t0
        self.rows = phrasebook()
        self.log: list[tuple[float, str, float]] = []  # (seconds since t0, version, ttft ms)
        self.failed: list[str] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def _user(self, seed: int) -> None:
        rnd = random.Random(seed)
        while True:
            row = rnd.choice(self.rows)
            req = TranslationRequest(row["src"], NAMES[row["tgt_lang"]], NAMES[row["src_lang"]],
                                     conversation_id=uuid.uuid4().hex)
            try:
                r = await self.eng.translate(req, lambda _t: asyncio.sleep(0))
                self.log.append((time.monotonic() - self.t0, r.version, r.ttft_ms))
            except Exception as exc:  # noqa: BLE001 - counted and reported: the target is none
                self.failed.append(repr(exc)[:200])
            await asyncio.sleep(rnd.uniform(0.05, 0.3))

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._user(i)) for i in range(self.n)]

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def _evaluation(e) -> dict:
    return {"version": e.version, "chrf": e.overall.chrf, "bleu": e.overall.bleu, "exact": e.overall.exact,
            "rows": e.rows, "errors": e.errors, "latency_p50_ms": e.latency_p50_ms,
            "latency_p95_ms": e.latency_p95_ms,
            "pairs": {f"{p.src_lang}-{p.tgt_lang}": {"chrf": p.scores.chrf, "bleu": p.scores.bleu,
                                                     "exact": p.scores.exact, "rows": p.scores.segments}
                      for p in e.pairs}}


async def run(args: argparse.Namespace) -> dict:
    models = Settings().model_roots[0]
    vllm_python = Settings().vllm_python
    for v in DEMO_VERSIONS:
        if await build_if_missing(v, models, vllm_python):
            print(f"built {v.name} in {models / v.name}", flush=True)
    settings = Settings(data_dir=Path(tempfile.mkdtemp(prefix="baton-quality-")), model_roots=[models],
                        eval_roots=[bu.ROOT / "demo"], gate_set=GATE_SET, startup_timeout_s=600,
                        request_wait_s=120, rollout_step_s=args.step_s, rollout_min_requests=args.min_requests)
    eng = Engine(settings)
    await eng.start()
    try:
        old, new = (v.name for v in DEMO_VERSIONS)
        for name in (old, new):
            await register_demo_version(eng, name, models / name)
            await eng.load(name)
        for name in (old, new):
            await eng.wait_loaded(name)
        await eng.switch(old, actor="bench")  # nothing active yet: no gate
        evals = {}
        for name in (old, new):
            t = time.perf_counter()
            e = await eng.evaluate(name, GATE_SET, actor="bench")
            evals[name] = {**_evaluation(e), "seconds": round(time.perf_counter() - t, 1)}
            print(f"{name}: chrF {e.overall.chrf:.1f} BLEU {e.overall.bleu:.1f} exact {e.overall.exact:.0%} "
                  f"on {e.rows} rows of {GATE_SET} ({e.errors} errors)", flush=True)
        t0 = time.monotonic()
        users = Users(eng, args.users, t0)
        users.start()
        await asyncio.sleep(args.step_s / 2)  # traffic before the rollout, for the plot
        started = time.monotonic() - t0
        await eng.start_rollout(new, actor="bench")
        while (view := eng.rollout_status()) is not None and view.record.state == "running":
            await asyncio.sleep(0.5)
        ended = time.monotonic() - t0
        await asyncio.sleep(args.step_s / 2)  # and after it
        await users.stop()
        assert view is not None
        r = view.record
        print(f"rollout {r.state} in {ended - started:.0f} s: {r.detail}", flush=True)
        return {
            "gate_set": GATE_SET, "evaluations": evals,
            "rollout": {"candidate": r.candidate, "baseline": r.baseline, "state": r.state, "detail": r.detail,
                        "steps": list(r.plan.steps), "step_s": r.plan.step_s, "min_requests": args.min_requests,
                        "started_s": round(started, 1), "ended_s": round(ended, 1), "timeline": list(r.timeline)},
            "traffic": {"users": args.users, "answers": len(users.log), "failed": len(users.failed),
                        "failures": users.failed[:5],
                        "answers_log": [(round(t, 2), v, round(ms, 1)) for t, v, ms in users.log]},
            "active_after": eng.router.deployment.active,
        }
    finally:
        await eng.close()


def plot(result: dict, path: Path = PLOT) -> None:
    """Top: the canary's planned share (steps) and the share of answers demo-v2 gave (2 s bins).
    Bottom: time to first token of each answer, by version. Decisions marked where they fell."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ro, log = result["rollout"], result["traffic"]["answers_log"]
    cand = ro["candidate"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True)
    # Planned share: 0 before, each step's percent while it ran, then 100 (promoted) or 0 (aborted).
    bounds = [ro["started_s"]]
    for e in ro["timeline"]:
        bounds.append(bounds[-1] + e["elapsed_s"])
    xs, ys = [0.0, bounds[0]], [0, 0]
    for i, e in enumerate(ro["timeline"]):
        xs += [bounds[i], bounds[i + 1]]
        ys += [e["percent"], e["percent"]]
    final = 100 if ro["state"] == "passed" else 0
    xs += [bounds[-1], max((ts for ts, _, _ in log), default=bounds[-1])]
    ys += [final, final]
    top.plot(xs, ys, drawstyle="default", color="tab:blue", label=f"planned canary share of {cand}")
    bins: dict[int, list[bool]] = {}
    for ts, v, _ in log:
        bins.setdefault(int(ts // 2), []).append(v == cand)
    top.plot([b * 2 + 1 for b in sorted(bins)], [100 * sum(bins[b]) / len(bins[b]) for b in sorted(bins)],
             "o", ms=3, color="tab:orange", label=f"answers by {cand} (2 s bins)")
    for e, at in zip(ro["timeline"], bounds[1:], strict=True):
        top.axvline(at, color="green" if e["verdict"] == "pass" else "red", lw=0.8, ls="--")
        top.annotate(f"{e['verdict']} ({e['canary']['answers']} answers,\nerrors {e['canary']['errors']}, "
                     f"p95 {e['canary']['ttft_p95_ms'] or 0:.0f} ms)", (at, 55), fontsize=7, rotation=90,
                     ha="right", va="center")
    top.set_ylabel("% of conversations")
    top.set_ylim(-5, 105)
    top.legend(loc="upper left", fontsize=8)
    top.set_title(f"/rollout {cand} from {ro['baseline']}: {ro['state']} "
                  f"(steps {', '.join(map(str, ro['steps']))} %, {ro['step_s']:g} s each)")
    for version, color in ((ro["baseline"], "tab:gray"), (cand, "tab:orange")):
        pts = [(ts, ms) for ts, v, ms in log if v == version]
        bottom.plot([p[0] for p in pts], [p[1] for p in pts], ".", ms=3, color=color, label=version)
    bottom.set_ylabel("time to first token (ms)")
    bottom.set_xlabel("seconds")
    bottom.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--step-s", type=float, default=20.0, help="seconds per rollout step")
    parser.add_argument("--min-requests", type=int, default=20, help="canary answers needed to judge a step")
    parser.add_argument("--users", type=int, default=4, help="concurrent users translating")
    args = parser.parse_args()
    result, _ = bu.run_reaped(run(args))
    plot(result)
    result["traffic"].pop("answers_log")  # plotted; too long for results.json
    bu.merge_results("quality", result)
    print(f"wrote {PLOT.relative_to(bu.ROOT)} and the 'quality' section of {bu.RESULTS.relative_to(bu.ROOT)}")
    return 0 if result["traffic"]["failed"] == 0 and result["rollout"]["state"] == "passed" else 1


if __name__ == "__main__":
    raise SystemExit(main())
