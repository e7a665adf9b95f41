"""Write docs/BENCHMARKS.md from benchmarks/results.json (the last step of `make bench`).

    .venv/bin/python -m benchmarks.report

Only numbers the benchmarks measured go in; a section whose benchmark has not run says so.
"""
from __future__ import annotations

import json

from benchmarks.benchutil import RESULTS, ROOT

REPORT = ROOT / "docs" / "BENCHMARKS.md"
WINDOWS = ("before", "during", "between", "after")


def num(v: object, unit: str = "") -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        v = f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}"
    return f"{v}{unit}"


def table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(num(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return "\n".join(lines)


def target(ok: bool) -> str:
    return "met" if ok else "**missed**"


def faster(theirs: float | None, ours: float | None) -> str:
    """How Baton (ours) compares on a time where less is better."""
    if not theirs or not ours:
        return "–"
    return f"{theirs / ours:.1f}× faster" if theirs >= ours else f"{ours / theirs:.1f}× **slower**"


def engine_section(e: dict) -> str:
    rows = [
        ["switches under load", e["switches"], "≥ 100", target(e["switches"] >= 100)],
        ["requests", e["requests"], "", ""],
        ["failed", e["failed"], "0", target(e["failed"] == 0)],
        ["truncated", e["truncated"], "0", target(e["truncated"] == 0)],
        ["misattributed", e.get("misattributed"), "0", target(e.get("misattributed", 0) == 0)],
        ["router flip p99 (ms)", e["flip_p99_ms"], "≤ 1", target(e["flip_p99_ms"] <= 1)],
        ["switch call p50 (ms)", e["switch_p50_ms"], "", ""],
        ["switch call p99 (ms)", e["switch_p99_ms"], "≤ 50", target(e["switch_p99_ms"] <= 50)],
        ["event-loop lag under the same load, p50 / p99 / max (ms)",
         " / ".join(num(e.get(f"loop_lag_{q}_ms")) for q in ("p50", "p99", "max")), "", ""],
        ["switch call with no request running, p50 / p99 (ms)",
         f"{num(e.get('switch_idle_p50_ms'))} / {num(e.get('switch_idle_p99_ms'))}", "≤ 50",
         target(e.get("switch_idle_p99_ms", 1e9) <= 50)],
        ["TTFT through the engine, median (ms)", e["ttft_engine_median_ms"], "", ""],
        ["TTFT direct to the same vLLM, median (ms)", e["ttft_direct_median_ms"], "", ""],
        ["TTFT overhead (ms)", e["ttft_overhead_ms"], "≤ 2", target(e["ttft_overhead_ms"] <= 2)],
    ]
    return f"""## Engine: switches under streaming load (`benchmarks/engine_bench.py`)

Two real vLLM backends (tiny random-weight Llamas), {e.get('clients', 6)} concurrent streaming clients
through `Engine.translate`, and a switch every {e.get('switch_interval_s', 0.05)} s. The switch call includes the
durable SQLite commit (deployment and audit row) and ends when the next request is routed to the new
version. The event-loop lag is how late a 5 ms sleep wakes up in the same process during the same
load: on two cores shared with two vLLM servers, that scheduling delay, not Baton's work, is what the
switch's tail is made of (on SQLite the commit is a single hand-off to a worker thread and back).
The TTFT overhead is the median, over {e['ttft_rounds']} rounds, of the difference between the same
request through the engine and straight to the same backend, sent back to back in alternating order. Measured {e['measured_at']} ({e['machine']}).

{table(["", "value", "target", ""], rows)}
"""


def load_section(l: dict) -> str:
    r = l["requests"]
    acts = [[a, v["count"], v["ok"], v["round_trip_p50_ms"], v["round_trip_max_ms"]] for a, v in l["actions"].items()]
    lat = [[w, l["latency"][w]["n"], l["latency"][w]["p50_ms"], l["latency"][w]["p99_ms"],
             l["ttft"][w]["p50_ms"], l["ttft"][w]["p99_ms"]] for w in WINDOWS if w in l["latency"]]
    return f"""## The real app under load (`benchmarks/load_bench.py`)

{l['users']} users translate without pause over Chainlit's websocket for {l['duration_s']:.0f} s, on three
real vLLM backends, while an admin in the same app switches, runs a canary, promotes, rolls back and
unloads an idle version. "During" is a request that overlaps an admin action (plus {l['window_s']} s).
Measured {l['measured_at']} ({l['machine']}).

{table(["requests started", "completed", "failed", "truncated", "misrouted", "stream ≠ final text"],
       [[r['started'], r['completed'], r['failed'], r['truncated'], l['misrouted'], l['stream_mismatch']]])}

Answers by version: {", ".join(f"`{k}` {v}" for k, v in l['answers_by_version'].items()) or "none"}.
vLLM processes left after the app stopped: {l.get('processes_left_behind', '–')}.

{table(["admin action", "count", "ok", "reply p50 (ms)", "reply max (ms)"], acts)}

Latency seen by a user, from sending the text to the final message:

{table(["window", "requests", "p50 (ms)", "p99 (ms)", "first token p50 (ms)", "first token p99 (ms)"], lat)}

![latency over time](latency.png)
"""


def nginx_section(n: dict) -> str:
    sides = [s for s in ("nginx", "nginx_fresh", "baton") if s in n]
    names = {"nginx": "nginx reload", "nginx_fresh": "nginx reload, no client keep-alive", "baton": "Baton"}
    rows = []
    for s in sides:
        v = n[s]
        q, sw, inflight = v["requests"], v["switch_to_new_version_ms"], v["in_flight_at_switch"]
        rows.append([names[s], q["started"], q["failed"], q["truncated"], inflight["streams"], inflight["failed"],
                     sw["p50"], sw["p99"], sw["max"]])
    b = n.get("baton", {})
    lines = []
    for s in ("nginx", "nginx_fresh"):
        if s in n and b:
            theirs, ours = n[s]["switch_to_new_version_ms"], b["switch_to_new_version_ms"]
            lines.append(f"- Baton against {names[s]}: switch to the new version p50 {faster(theirs['p50'], ours['p50'])}, "
                         f"p99 {faster(theirs['p99'], ours['p99'])}; failed requests {b['requests']['failed']} "
                         f"against {n[s]['requests']['failed']}.")
    return f"""## Side by side with nginx + `nginx -s reload` (`benchmarks/nginx_baseline.py`)

The usual recipe: two vLLM servers behind an nginx upstream, switched by rewriting the upstream and
`nginx -s reload`. The same backends, the same {n['clients']} streaming clients (OpenAI SDK) and
{n['switches_per_side']} switches per side, the sides taking turns ({n['rounds']} rounds). "Switch to
new version" runs from the start of the switch until a new request is answered by the new version.
Measured {n['measured_at']} ({n['machine']}).

{table(["side", "requests", "failed", "truncated", "streams in flight at a switch", "of those failed",
        "switch p50 (ms)", "switch p99 (ms)", "switch max (ms)"], rows)}

{chr(10).join(lines)}

vLLM or nginx processes left after the run: {n.get('processes_left_behind', '–')}.

![latency across switches, nginx and Baton](latency_nginx.png)
"""


FAULTS = """## Faults and bad input (tests in `make test`)

| case | what a user sees | test |
|---|---|---|
| SIGKILL of the active vLLM backend mid-stream | the stream ends with "stopped answering, the partial answer is kept"; the next request is answered by the standby and says so; the backend is restarted and audited | `test_engine_vllm.py::test_killed_active_backend_fails_over_and_restarts`, `test_engine_fast.py::test_backend_killed_mid_stream_reports_clear_error`, `test_chat_fast.py::test_a_crash_fails_over_to_the_standby_and_the_answer_says_so` |
| SIGKILL of the process owning the engine | no vLLM process survives; a restart serves the same version | `test_engine_vllm.py::test_sigkill_of_engine_owner_leaves_no_vllm_process`, `test_chat_vllm.py` (restart) |
| a version whose model path is broken | refused with the reason, nothing registered, the active version untouched | `test_engine_fast.py::test_bad_registrations_are_refused_and_save_nothing`, `test_chat_fast.py::test_a_version_that_cannot_start_reports_why_with_its_log` |
| a backend that hangs at start-up | failed after BATON_STARTUP_TIMEOUT_S, its process group stopped | `test_engine_fast.py::test_hanging_startup_times_out_and_cleans_up` |
| an answer cap the context cannot hold | the load fails with the reason; the version never becomes switchable | `test_engine_fast.py::test_answer_length_cap_against_the_context` |
| the database read-only or locked | the switch is refused with the database's words; memory and file unchanged; serving goes on | `test_engine_fast.py::test_read_only_database_refuses_switch_and_keeps_serving`, `::test_database_locked_switch_fails_cleanly` |
| two admins switching at the same moment | serialized; memory and database agree | `test_engine_fast.py::test_two_admins_switching_at_once_are_serialized` |
| names, paths, flags, templates, huge and unicode input, shell metacharacters | a clear refusal, no state change, no process started | `test_engine_bad_input.py` (hypothesis), `test_chat_fast.py::test_bad_admin_input_gets_a_clear_message_and_changes_nothing` |
"""


def main() -> None:
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    parts = ["# Benchmarks\n\nWritten by `make bench` (`benchmarks/report.py`) from `benchmarks/results.json`. "
             "All numbers are from 2-core machines without a GPU, serving tiny models on the CPU build of "
             "vLLM; the ratios, measured side by side in one run, carry over better than the absolute times.\n"]
    for key, section in (("engine", engine_section), ("load", load_section), ("nginx", nginx_section)):
        parts.append(section(results[key]) if key in results else f"## {key}\n\nNot measured yet: run `make bench`.\n")
    parts.append(FAULTS)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("\n".join(parts))
    print(f"wrote {REPORT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
