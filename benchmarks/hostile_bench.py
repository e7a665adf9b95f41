"""Hostile documents benchmark: does the server keep answering while users upload files built to
make its parsers work as hard as they can?

    .venv/bin/python -m benchmarks.hostile_bench [--users 6] [--size 2000000]

Starts the real app (`chainlit run app.py`, tests/chatkit.py's launcher) with one version on the
tests' fake OpenAI-compatible server (tests/fake_vllm.py), so the run is quick and the times are
Baton's. Then `--users` users, each in a chat session of their own and all at once, drop one
hostile document of each kind (.txt, .md, .html, .srt, .docx; tests/hostile.py: tags, links, code
spans, comments and placeholders that open and never close, on long lines; the .docx has 1,000
paragraphs over 4,000 styles), one after another, and wait for each answer: a translated file, or
a refusal saying why (with BATON_DOCUMENT_MAX_SEGMENTS=100, every one of them is read in full and
refused: the text kinds for prose runs over 4,000 characters, the .docx for its 1,000 paragraphs).
Meanwhile a process of its own asks GET /healthz every 20 ms.

Targets: /healthz p99 <= 100 ms during the uploads, and no backend falsely declared hung (the
`baton_backend_unhealthy` counter stays 0 and every /healthz answer says the version serves).
Writes benchmarks/results.json ("hostile").
"""
from __future__ import annotations

import argparse
import asyncio
import json
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks import benchutil as bu
from tests import chatkit as ck
from tests import hostile

ADMIN = ("root", "root-password-1")
PASSWORD = "hostile-password-1"
DOCX_MIME = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
PROBE_EVERY_S = 0.02
# The .docx (1,000 paragraphs) is read in full and then refused for its size, like the text kinds
# (whose prose runs are over the 4,000-character limit): what is measured is reading hostile
# files, not the fake server translating a thousand paragraphs.
MAX_SEGMENTS = 100


def probe(url: str) -> None:
    """GET /healthz every 20 ms until stdin closes, then print each answer's time and the answers
    that did not say the version serves, as JSON. Run as a process of its own (`--probe URL`): in
    the benchmark's, it would wait for the GIL while the users' uploads are built, and count that
    as the server's time."""
    times: list[float] = []
    not_ok: list[str] = []
    with httpx.Client(base_url=url, timeout=60) as http:
        while not select.select([sys.stdin], [], [], PROBE_EVERY_S)[0]:
            started = time.perf_counter()
            r = http.get("/healthz")
            times.append(time.perf_counter() - started)
            if r.status_code != 200 or r.json().get("status") != "ok":
                not_ok.append(f"{r.status_code} {r.text[:200]}")
    print(json.dumps({"times": times, "not_ok": not_ok}))


async def one_user(app: ck.App, name: str, docs: dict[str, bytes]) -> list[dict]:
    """Each hostile document in turn: how long until the answer, and what the answer was."""
    outcomes = []
    async with ck.chatting(app.url, name, PASSWORD) as chat:
        for kind, data in docs.items():
            ref = await chat.upload(f"hostile{kind}", data, DOCX_MIME if kind == ".docx" else "text/plain",
                                    timeout=300)
            started = time.perf_counter()
            msgs = await chat.ask("", files=[ref], timeout=900)
            reply = msgs[-1].output if msgs else ""
            outcome = "translated" if f"hostile.fr{kind}" in reply else "refused" if "⚠️" in reply else "other"
            outcomes.append({"kind": kind, "seconds": time.perf_counter() - started, "outcome": outcome,
                             "reply": reply[:300]})
    return outcomes


async def run(users: int, size: int) -> dict:
    docs = {kind: hostile.document(kind, size) for kind in hostile.KINDS}
    with tempfile.TemporaryDirectory(prefix="baton-hostile-") as tmp:
        data_dir = Path(tmp)
        ck.make_fake_model(data_dir, "v1", prefix="")
        env = {**ck.fake_env(data_dir), "BATON_PORT_MIN": "32700", "BATON_PORT_MAX": "32799",
               "BATON_DOCUMENT_MAX_SEGMENTS": str(MAX_SEGMENTS)}
        app = ck.launch_app(env, admin=ADMIN)
        try:
            names = [f"user{n}" for n in range(users)]
            async with ck.chatting(app.url, *ADMIN) as admin:
                await ck.serve_one(admin, "v1", [(name, PASSWORD) for name in names])
            prober = subprocess.Popen([sys.executable, "-m", "benchmarks.hostile_bench", "--probe", app.url],
                                      cwd=bu.ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            started = time.perf_counter()
            per_user = await asyncio.gather(*(one_user(app, name, docs) for name in names))
            duration = time.perf_counter() - started
            probed = json.loads(prober.communicate(timeout=120)[0])  # closing its stdin ends it
            times, not_ok = probed["times"], probed["not_ok"]
            unhealthy = await ck.metric(app.url, "baton_backend_unhealthy_total", version="v1")
        finally:
            app.stop()
    outcomes = [o for user in per_user for o in user]
    by_kind = {}
    for kind in hostile.KINDS:
        mine = [o for o in outcomes if o["kind"] == kind]
        by_kind[kind] = {"bytes": len(docs[kind]), "outcomes": sorted({o["outcome"] for o in mine}),
                         "p50_s": round(bu.pct([o["seconds"] for o in mine], 50) or 0, 2),
                         "max_s": round(max(o["seconds"] for o in mine), 2),
                         "example_reply": mine[0]["reply"]}
    return {"users": users, "documents": len(outcomes), "duration_s": round(duration, 1), "kinds": by_kind,
            "healthz": bu.lat_summary(times), "healthz_not_ok": len(not_ok), "healthz_not_ok_examples": not_ok[:3],
            "unhealthy": unhealthy,
            "other_outcomes": [o for o in outcomes if o["outcome"] == "other"][:3]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=6)
    parser.add_argument("--size", type=int, default=2_000_000, help="bytes per hostile document (at most)")
    parser.add_argument("--probe", metavar="URL", help=argparse.SUPPRESS)  # the /healthz prober's process
    args = parser.parse_args()
    if args.probe:
        probe(args.probe)
        return
    result, left = bu.run_reaped(run(args.users, args.size))
    result["reaped"] = len(left)
    bu.merge_results("hostile", result)
    h = result["healthz"]
    print(f"{result['documents']} hostile documents in {result['duration_s']} s; /healthz p50 {h['p50_ms']} ms, "
          f"p99 {h['p99_ms']} ms, max {h['max_ms']} ms over {h['n']} probes; not ok {result['healthz_not_ok']}; "
          f"backends declared unhealthy {result['unhealthy']:.0f}")


if __name__ == "__main__":
    main()
