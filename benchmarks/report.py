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

Two real vLLM backends (tiny random-weight Llamas, at niceness {e.get('backend_nice', 0)}), {e.get('clients', 6)} concurrent streaming clients
through `Engine.translate`, and a switch every {e.get('switch_interval_s', 0.05)} s. The switch call includes the
durable SQLite commit (deployment and audit row) and ends when the next request is routed to the new
version. The event-loop lag is how late a 5 ms sleep wakes up in the same process during the same
load: on two cores shared with two vLLM servers, that scheduling delay, not Baton's work, is what the
switch's tail is made of (on SQLite the commit is a single hand-off to a worker thread and back).
The TTFT overhead is the median, over {e['ttft_rounds']} rounds, of the difference between the same
request through the engine and straight to the same backend, sent back to back in alternating order. Measured {e['measured_at']} ({e['machine']}).

{table(["", "value", "target", ""], rows)}
"""


def nice_section(n: dict) -> str:
    lo, hi = n["nice_0"], n[f"nice_{n['backend_nice']}"]
    times = (("switch call p50 (ms)", "switch_p50_ms"), ("switch call p99 (ms)", "switch_p99_ms"),
             ("event-loop lag p50 (ms)", "loop_lag_p50_ms"), ("event-loop lag p99 (ms)", "loop_lag_p99_ms"),
             ("event-loop lag max (ms)", "loop_lag_max_ms"))
    rows = [[label, lo[k], hi[k], faster(lo[k], hi[k])] for label, k in times]
    rows.append(["requests served per second", lo["served_per_s"], hi["served_per_s"],
                 f"{hi['served_per_s'] / lo['served_per_s']:.2f}× as many"])
    rows += [[label, lo[k], hi[k], ""] for label, k in (("switches", "switches"), ("requests", "requests"),
                                                          ("failed", "failed"), ("truncated", "truncated"))]
    rows.append(["two backends ready, each run (s)",
                 *(" / ".join(num(x) for x in side.get("backend_startup_s_two_in_parallel", [])) for side in (lo, hi)), ""])
    loads = [" / ".join(num(x) for x in side["load_average_1m_after_each_run"]) for side in (lo, hi)]
    return f"""## Backend niceness: the app's priority against the backends' throughput (`BATON_BACKEND_NICE`)

The load above (two real vLLM backends, {n['clients']} streaming clients, a switch every {n['switch_interval_s']} s,
{n['switches_per_run']} switches per run) with the backends started at niceness 0 and at {n['backend_nice']}, the
default, in alternating order over {n['rounds']} round(s); each run starts a fresh pair of backends from the same
model directories, and each side's runs are pooled: `{n['command']}`. Load average (1 min) after each run:
niceness 0 {loads[0]}; niceness {n['backend_nice']} {loads[1]} (the machine was shared with other sessions).
Requests served per second depend on what else runs on the machine: compare them only where those load averages
are alike. Measured {n['measured_at']} ({n['machine']}).

{table(["", "niceness 0", f"niceness {n['backend_nice']}", ""], rows)}
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
    names = {"nginx": "nginx reload", "nginx_fresh": "nginx reload, no client keep-alive", "baton": "Baton (gateway)"}
    rows = []
    for s in sides:
        v = n[s]
        q, sw, inflight = v["requests"], v["switch_to_new_version_ms"], v["in_flight_at_switch"]
        routed = v.get("switch_to_new_version_routed_ms", {})
        rows.append([names[s], q["started"], q["failed"], q["truncated"], inflight["streams"], inflight["failed"],
                     sw["p50"], sw["p99"], sw["max"], f"{num(routed.get('p50'))} / {num(routed.get('p99'))}",
                     v["latency_all"]["p50_ms"], v["ttft"]["p50_ms"]])
    b, o = n.get("baton"), n.get("overhead")
    targets = []
    if b and o:
        failed = b["requests"]["failed"] + o["failed"]["gateway"]
        truncated = b["requests"]["truncated"]
        targets.append(["Baton: failed (under switches, and in the overhead runs)", failed, "0", target(failed == 0)])
        targets.append(["Baton: truncated", truncated, "0", target(truncated == 0)])
        ours = b["switch_to_new_version_ms"]
        for s in ("nginx", "nginx_fresh"):
            theirs = n[s]["switch_to_new_version_ms"]
            for q in ("p50", "p99"):
                targets.append([f"switch until the new version answers, {q}: Baton against {names[s]} (ms)",
                                f"{num(ours[q])} against {num(theirs[q])} ({faster(theirs[q], ours[q])})",
                                "faster", target(ours[q] < theirs[q])])
        med = o["ttft_overhead_ms"]["median"]
        targets.append([f"TTFT overhead, median of {o['ttft_pairs']} paired differences (ms)", med, "≤ 2",
                        target(med is not None and med <= 2)])
        targets.append(["TTFT overhead, p99 of the paired differences (ms)", o["ttft_overhead_ms"]["p99"], "", ""])
        t = o["throughput"]
        targets.append([f"throughput at saturation, gateway / direct (tokens/s; {o['saturation_clients']} clients)",
                        f"{num(t['ratio_tokens'])} ({num(t['gateway']['tokens_per_s'])} / "
                        f"{num(t['direct']['tokens_per_s'])})",
                        "≥ 0.95", target(t["ratio_tokens"] is not None and t["ratio_tokens"] >= 0.95)])
        targets.append(["… completed requests/s, gateway / direct",
                        f"{num(t['ratio_requests'])} ({num(t['gateway']['requests_per_s'])} / "
                        f"{num(t['direct']['requests_per_s'])})", "", ""])
    over = ""
    if o:
        t = o["throughput"]
        hz = {w: t[w]["app_healthz_answer"] for w in ("direct", "gateway")}
        over = f"""
Gateway overhead against the same vLLM backend (Baton's active version, reached directly with its own
API key read from `/proc/<pid>/environ`, which only the app's OS user or root can read), with no
switches: {o['ttft_pairs']} paired streamed requests (max_tokens {o['pair_max_tokens']}, the same prompt, the
order alternating; {o.get('ttft_pairs_dropped', 0)} pairs dropped where an answer had no text, which a random-weight
model's first tokens often decode to); TTFT direct p50 {num(o['ttft_direct']['p50_ms'])} ms, through the gateway p50
{num(o['ttft_gateway']['p50_ms'])} ms. Saturation: {o['saturation_clients']} clients streaming without pause,
{num(o['saturation_seconds_per_round'])} s per run, direct and gateway runs alternating (ABBA, BAAB): direct
{num(t['direct']['tokens_per_s'])} tokens/s, through the gateway {num(t['gateway']['tokens_per_s'])} tokens/s; the
app used {num(t.get('app_cpu_ms_per_gateway_request'))} ms of CPU per relayed request (net of its idle use).
The app's `/healthz` answered in p50 / p99 {num(hz['gateway']['p50_ms'])} / {num(hz['gateway']['p99_ms'])} ms
while relaying, {num(hz['direct']['p50_ms'])} / {num(hz['direct']['p99_ms'])} ms while the same load went
straight to vLLM: how late its event loop answers anything while it relays.
"""
    load = n.get("load_average_1_5_15", {})
    return f"""## Side by side with nginx + `nginx -s reload` (`benchmarks/nginx_baseline.py`)

The usual recipe: two vLLM servers behind an nginx upstream, switched by rewriting the upstream and
`nginx -s reload`, against the real app (`chainlit run app.py`) and its OpenAI-compatible gateway,
switched with `POST /admin/v1/deployment/switch`. One client process drives both over HTTP: the same
{n['clients']} streaming clients (OpenAI SDK, max_tokens {n['max_tokens']}), the same model directories, vLLM
flags and answer cap, {n['switches_per_side']} switches per side, the sides taking turns ({n['rounds']} rounds).
"Switch" runs from the start of the switch until a new request is answered by the new version; the
probe is the same on both sides: {n.get('switch_probe', '–')}. "Routed" is when that first
new-version probe was sent. Command: `{n.get('command', '–')}`. Measured {n['measured_at']} ({n['machine']});
load average (1, 5, 15 min) {load.get('start', '–')} at the start, {load.get('end', '–')} at the end.

{table(["side", "requests", "failed", "truncated", "streams in flight at a switch", "of those failed",
        "switch p50 (ms)", "switch p99 (ms)", "switch max (ms)", "routed p50 / p99 (ms)",
        "request p50 (ms)", "TTFT p50 (ms)"], rows)}
{over}
{table(["", "value", "target", ""], targets)}

vLLM or nginx processes left after the run: {n.get('processes_left_behind', '–')}.

![latency across switches, nginx and Baton](latency_nginx.png)
"""


def _ms(d: dict | None, *keys: str) -> str:
    """'p50 / p99' (or with max) of a summary in ms, '–' when nothing was measured."""
    if not d or not d.get("n"):
        return "–"
    return " / ".join(num(d.get(k)) for k in keys) + f" (n={d['n']})"


def chaos_section(c: dict) -> str:
    backends = [b for b in ("vllm", "fake") if b in c]
    names = {"vllm": "real vLLM", "fake": "fake server"}

    def row(label: str, value, target_text: str = "", check=None) -> list[str]:
        cells = [label]
        verdicts = []
        for b in backends:
            r = c[b]
            try:
                cells.append(value(r))
            except (KeyError, TypeError):
                cells.append("–")
            if check is not None:
                try:
                    ok = check(r)
                except (KeyError, TypeError):
                    ok = None
                verdicts.append(f"{names[b]}: " + ("–" if ok is None else target(ok)))
        cells += [target_text, " · ".join(verdicts)]
        return cells

    def p99_within(r: dict, key: str, sub: str, limit: float) -> bool | None:
        d = r[key][sub]
        return None if not d.get("n") else d["p99"] <= limit

    f = lambda r: r["faults"]  # noqa: E731
    q = lambda r: r["requests"]  # noqa: E731
    rows = [
        row("faults injected (kill / hang / stall)",
            lambda r: f"{f(r)['injected']} ({f(r)['by_kind']['kill']} / {f(r)['by_kind']['hang']} / {f(r)['by_kind']['stall']})",
            "≥ 50", lambda r: f(r)["injected"] >= 50),
        row("… into the active / standby / canary",
            lambda r: " / ".join(str(f(r)["by_role"][k]) for k in ("active", "standby", "canary"))),
        row("… detected / restored", lambda r: f"{f(r)['detected']} / {f(r)['restored']}", "all",
            lambda r: f(r)["detected"] == f(r)["injected"]),
        row("user requests (chat / API-style)", lambda r: f"{q(r)['total']} ({q(r)['chat']['total']} / {q(r)['api']['total']})"),
        row("failed", lambda r: str(q(r)["failed"]), "0", lambda r: q(r)["failed"] == 0),
        row("truncated", lambda r: str(q(r)["truncated"]), "0", lambda r: q(r)["truncated"] == 0),
        row("translated again whole (🔁)", lambda r: str(q(r)["retranslated"])),
        row("answered by a standby while the active was down", lambda r: str(q(r)["failover_answers"])),
        row("streamed text ≠ final text; answer not whole (fake only)",
            lambda r: f"{q(r)['stream_mismatch']}; {q(r)['not_whole'] if r['backend'] == 'fake' else '–'}", "0",
            lambda r: q(r)["stream_mismatch"] == 0 and q(r)["not_whole"] == 0),
        row("request latency p50 / p99 (ms)", lambda r: _ms(q(r)["latency"], "p50", "p99")),
        row("hang detected, p50 / p99 / max (ms)", lambda r: _ms(r["detect_ms"]["hang"], "p50", "p99", "max"),
            "p99 ≤ 3000", lambda r: p99_within(r, "detect_ms", "hang", 3000)),
        row("… a hang within 10 s of the version's restart / any other hang, p50 / max (ms)",
            lambda r: f"{_ms(r['detect_ms'].get('hang_within_10_s_of_a_restart'), 'p50', 'max')}; "
                      f"{_ms(r['detect_ms'].get('hang_otherwise'), 'p50', 'max')}"),
        row("stall detected, p50 / p99 / max (ms)", lambda r: _ms(r["detect_ms"]["stall"], "p50", "p99", "max")),
        row("kill detected, p50 / p99 / max (ms)", lambda r: _ms(r["detect_ms"]["kill"], "p50", "p99", "max")),
        row("first good answer after a kill with a ready standby, p50 / p99 / max (ms)",
            lambda r: _ms(r["first_good_answer_ms"]["kill_with_ready_standby"], "p50", "p99", "max"),
            "p99 ≤ 1000", lambda r: p99_within(r, "first_good_answer_ms", "kill_with_ready_standby", 1000)),
        row("… after a kill while the failover target was itself frozen or stalled, unnoticed yet, p50 / max (ms)",
            lambda r: _ms(r["first_good_answer_ms"].get("kill_with_an_unnoticed_faulty_standby"), "p50", "max")),
        row("… after a kill of the active, p50 / p99 (ms)",
            lambda r: _ms(r["first_good_answer_ms"].get("kill_of_the_active"), "p50", "p99")),
        row("first good answer after any fault, p50 / p99 (ms)",
            lambda r: _ms(r["first_good_answer_ms"]["all"], "p50", "p99")),
        row("an answer cut by a fault, whole again after, p50 / p99 (ms)",
            lambda r: _ms(r["cut_answer_whole_ms"]["all"], "p50", "p99")),
        row("restored (ready again) after a kill, p50 / p99 (ms)", lambda r: _ms(r["restore_ms"]["kill"], "p50", "p99")),
        row("… after a hang, p50 / p99 (ms)", lambda r: _ms(r["restore_ms"]["hang"], "p50", "p99")),
        row("… after a stall, p50 / p99 (ms)", lambda r: _ms(r["restore_ms"]["stall"], "p50", "p99")),
        row("admin commands ok / refused with a reason / other",
            lambda r: " / ".join(str(sum(a[k] for a in r["admin"].values())) for k in ("ok", "refused", "other")), "other = 0",
            lambda r: sum(a["other"] for a in r["admin"].values()) == 0),
        row("supervisor audit rows: crash / unhealthy / restart ok",
            lambda r: " / ".join(str(r["audit_supervisor"].get(k, 0)) for k in ("crash failed", "unhealthy failed", "restart ok"))),
        row("backends taken down that no fault hit", lambda r: str(len(r.get("supervisor_failures_without_a_fault", []))), "0",
            lambda r: not r.get("supervisor_failures_without_a_fault")),
        row("supervisor audit rows the database refused (locked)", lambda r: str(len(r["audit_writes_failed"])), "0",
            lambda r: not r["audit_writes_failed"]),
        row("chat history writes Chainlit dropped (database locked)",
            lambda r: str(r["chat_history_writes_failed_database_locked"])),
        row("/healthz answer time p50 / p99 / max (ms)", lambda r: _ms(r["healthz"].get("answer_ms"), "p50", "p99", "max")),
        row("stopped processes left behind", lambda r: str(r["stopped_processes_left"]), "0",
            lambda r: r["stopped_processes_left"] == 0),
        row("processes left after the app stopped", lambda r: str(r["processes_left_behind"]), "0",
            lambda r: r["processes_left_behind"] == 0),
    ]
    header = ["", *[names[b] for b in backends], "target", ""]
    runs = "\n".join(
        f"- {names[b]}: `{c[b]['command']}`, {c[b]['duration_s']:.0f} s of faults, {c[b]['users']} chat users and "
        f"{c[b]['api_clients']} API-style clients, a fault every ~{c[b]['fault_every_s']:g} s and an admin command every "
        f"~{c[b]['admin_every_s']:g} s; settings {', '.join(f'`{k}={v}`' for k, v in c[b]['settings'].items())}. "
        f"Load average during the run {num(c[b]['healthz'].get('load_average_mean'))} (max "
        f"{num(c[b]['healthz'].get('load_average_max'))}). "
        f"Measured {c[b].get('measured_at', '–')} ({c[b].get('machine', '–')})." for b in backends)
    notes = []
    if "vllm" in c:
        v = c["vllm"]
        back = v["restore_ms"]["all"].get("p50")
        notes.append(f"- On real vLLM a faulted version is ready again "
                     f"{'after about ' + format(back / 1000, '.0f') + ' s (p50)' if back else 'only after the run'}: "
                     f"the server loads the model again on 2 busy cores. A fault only goes into a version that is "
                     f"ready with another ready version to take its traffic, so a run of {v['duration_s']:.0f} s "
                     f"injects {v['faults']['injected']} faults, not 50 "
                     f"({v['faults']['skipped_ticks_no_eligible_target']} ticks found no eligible version); "
                     f"the fake server restarts in about a second and gets past 50.")
    if "vllm" in c:
        v = c["vllm"]
        k = v["detect_ms"]["kill"]
        if k.get("n"):
            notes.append(f"- A killed vLLM backend stays `ready` in `/healthz` (and to the router) until its whole process "
                         f"group is gone: the engine marks it failed after reaping the group, {num(k['p50'])} ms (p50) "
                         f"for vLLM's four processes here (API server, resource tracker, EngineCore, Worker). Requests sent to it meanwhile cannot connect and are "
                         f"translated on another version.")
        st = v["detect_ms"]["stall"]
        if st.get("n"):
            env = v["settings"]
            notes.append(f"- vLLM stalls were noticed after {num(st['p50'])} ms (p50), max {num(st['max'])} ms: only a "
                         f"request's token deadline notices a stall, the between-tokens one "
                         f"(`BATON_BETWEEN_TOKENS_TIMEOUT_S={env.get('BATON_BETWEEN_TOKENS_TIMEOUT_S')}`) when an answer "
                         f"is streaming from the version, otherwise the first-token one of the next request sent to it "
                         f"(`BATON_FIRST_TOKEN_TIMEOUT_S={env.get('BATON_FIRST_TOKEN_TIMEOUT_S')}`). Until then the "
                         "version is `ready`: the router sends it traffic (failover traffic too), and an admin may switch to "
                         "it; a stalled standby that gets no traffic is noticed only once traffic reaches it.")
    for b in backends:
        try:
            faults = json.loads((ROOT / "benchmarks" / f"chaos_{b}.json").read_text())["faults"]
        except (OSError, ValueError, KeyError):
            continue
        slow = [f for f in faults if f["kind"] == "kill" and (f.get("first_good_s") or 0) > 1]
        if slow:
            notes.append(f"- {names[b]}, kills after which the first good answer took over 1 s: " + "; ".join(
                f"fault {f['n']} ({f['role']} `{f['target']}`): {f['first_good_s'] * 1000:.0f} ms"
                + (f", the app's event loop answered `/healthz` {f['app_stalled_ms']} ms late meanwhile"
                   if f.get("app_stalled_ms") else "")
                + ("" if f.get("standby_ready", True) else ", its failover target was itself faulted")
                for f in slow) + ".")
    for b in backends:
        r = c[b]
        lost = len(r.get("audit_writes_failed") or [])
        dropped = r.get("chat_history_writes_failed_database_locked") or 0
        if lost or dropped:
            notes.append(f"- {names[b]}: SQLite refused writes under this load (`database is locked`): Chainlit dropped "
                         f"{dropped} chat-history writes, and {lost} supervisor audit row(s) were lost"
                         + (f" (`{r['audit_writes_failed'][0][:120]}`)" if lost else "") + ".")
    if "fake" in c:
        notes.append("- The fake server is one process, so its \"stall\" is a SIGSTOP of the whole group, the same "
                     "fault as a hang (labelled as such in the results). Its answers are 7 chunks "
                     f"{c['fake'].get('fake_token_delay_s') or 0.1:g} s apart: after a kill of the active version, the "
                     "first good answer is at least one whole answer streamed again by another version.")
    for b in backends:
        if c[b].get("notes"):
            notes.append(f"- {names[b]}, injector notes: " + "; ".join(c[b]["notes"][:6]) + ".")
        if c[b].get("app_log_error_lines"):
            notes.append(f"- {names[b]}: {c[b]['app_log_error_lines']} error lines in the app log, e.g. "
                         f"`{c[b]['app_log_error_sample'][0][:200]}`.")
    return f"""## Chaos: faults under traffic (`benchmarks/chaos_bench.py`)

The real app (`chainlit run app.py`) with three versions. Chat users keep one session each and send
one text after another; API-style clients open a fresh session for every request. The admin keeps
switching (`/switch`, `/canary NAME 30`, `/promote`, `/rollback`, `/canary abort`, only towards versions
`/healthz` calls ready; a refusal with a reason is fine). Every few seconds one ready version among
the active, standby and canary ones (never the last one that could serve) gets a fault: **kill**
(SIGKILL of the server's process group, pid from `/status`), **hang** (SIGSTOP of the group), or
**stall** (SIGSTOP of vLLM's EngineCore and its Worker only, the API server left running). `/healthz` is polled every 20 ms: *detected* is
the injection until the version is no longer `ready`, *restored* until it is `ready` again; *first
good answer* is the injection until the first complete, attributed answer to any request in flight
or sent after it; *whole again* until the first answer that a fault cut and that came back whole
(🔁). Failed: an error or no final message; truncated: text without the attribution line.
Per-fault detail: `benchmarks/chaos_vllm.json`, `benchmarks/chaos_fake.json`. The machine was shared
with other test runs (real vLLM among them) while these were measured: the load averages below count them.

{table(header, rows)}

{runs}

{chr(10).join(notes)}
"""


FAULTS = """## Faults and bad input (tests in `make test`)

| case | what a user sees | test |
|---|---|---|
| SIGKILL of the active vLLM backend mid-answer | the partial text is replaced and the answer comes whole from the standby, with a 🔁 line saying why; the backend is restarted and audited (`crash`, `restart`) | `test_engine_vllm.py::test_killed_mid_answer_the_answer_comes_whole_from_the_standby`, `test_engine_faults.py::test_8_a_backend_killed_mid_answer_gives_a_whole_answer_from_one_version`, `test_chat_fast.py::test_an_answer_cut_by_a_dying_backend_is_replaced_by_a_whole_one` |
| a backend frozen (SIGSTOP) or a stream that stalls with /health still fine | noticed by the liveness probe or the request's token deadline; the answer comes whole from a ready version; the process group is killed and restarted (`unhealthy`, `restart`) | `test_engine_vllm.py::test_frozen_backend_is_noticed_and_its_answer_comes_from_the_standby`, `test_engine_faults.py::test_2_a_frozen_backend_is_noticed_its_traffic_moves_and_it_restarts`, `test_engine_faults.py::test_2_a_stalled_stream_with_a_healthy_port_is_noticed` |
| SIGKILL of the process owning the engine | no vLLM process survives; a restart serves the same version | `test_engine_vllm.py::test_sigkill_of_engine_owner_leaves_no_vllm_process`, `test_chat_vllm.py` (restart) |
| a version whose model path is broken | refused with the reason, nothing registered, the active version untouched | `test_engine_fast.py::test_bad_registrations_are_refused_and_save_nothing`, `test_chat_fast.py::test_a_version_that_cannot_start_reports_why_with_its_log` |
| a backend that hangs at start-up | failed after BATON_STARTUP_TIMEOUT_S, its process group stopped | `test_engine_fast.py::test_hanging_startup_times_out_and_cleans_up` |
| an answer cap the context cannot hold | the load fails with the reason; the version never becomes switchable | `test_engine_fast.py::test_answer_length_cap_against_the_context` |
| the database read-only or locked | the switch is refused with the database's words; memory and file unchanged; serving goes on | `test_engine_fast.py::test_read_only_database_refuses_switch_and_keeps_serving`, `::test_database_locked_switch_fails_cleanly` |
| two admins switching at the same moment | serialized; memory and database agree | `test_engine_fast.py::test_two_admins_switching_at_once_are_serialized` |
| names, paths, flags, templates, huge and unicode input, shell metacharacters | a clear refusal, no state change, no process started | `test_engine_bad_input.py` (hypothesis), `test_chat_fast.py::test_bad_admin_input_gets_a_clear_message_and_changes_nothing` |
"""


def quality_section(q: dict) -> str:
    evals, ro, tr = q["evaluations"], q["rollout"], q["traffic"]
    names = list(evals)
    pairs = sorted({p for e in evals.values() for p in e["pairs"]})
    rows = [[f"**{n}**", e["chrf"], e["bleu"], f"{e['exact']:.0%}", e["rows"], e["errors"], e["latency_p50_ms"],
             e["latency_p95_ms"], e["seconds"]] for n, e in evals.items()]
    per_pair = [[p.replace("-", " → ")] + [evals[n]["pairs"].get(p, {}).get("chrf") for n in names] for p in pairs]
    steps = [[e["step"] + 1, f"{e['percent']} %", e["elapsed_s"], e["canary"]["answers"], e["active"]["answers"],
              f"{e['canary']['errors']} / {e['active']['errors']}",
              f"{num(e['canary']['ttft_p95_ms'])} / {num(e['active']['ttft_p95_ms'])}", e["verdict"]]
             for e in ro["timeline"]]
    return "\n".join([
        "## Quality-gated rollout on the demo versions",
        "",
        f"`.venv/bin/python -m benchmarks.quality_bench` ({q['measured_at']}, {q['machine']}): the real demo "
        f"versions on real vLLM, evaluated on `demo/{q['gate_set']}.tsv` (a regression set drawn from the "
        "phrasebook they were trained on: it shows what a version still knows, not how it generalises), "
        f"then `/rollout {ro['candidate']}` from {ro['baseline']} while {tr['users']} users translate "
        "phrasebook lines, each request its own conversation.",
        "",
        "### Evaluation",
        "",
        table(["version", "chrF", "BLEU", "exact", "rows", "errors", "latency p50 (ms)", "p95 (ms)", "took (s)"], rows),
        "",
        table(["pair"] + [f"chrF {n}" for n in names], per_pair),
        "",
        "### One rollout",
        "",
        f"Steps {', '.join(map(str, ro['steps']))} %, each judged after {num(ro['step_s'])} s with at least "
        f"{ro['min_requests']} canary answers. Outcome: **{ro['state']}** ({ro['detail']}). "
        f"Users' requests: {tr['answers']} answered, **{tr['failed']} failed** (target 0: "
        f"{target(tr['failed'] == 0)}); active version afterwards: {q['active_after']}.",
        "",
        table(["step", "share", "after (s)", "canary answers", "active answers", "errors canary / active",
               "first token p95 canary / active (ms)", "decision"], steps),
        "",
        "![rollout timeline](rollout.png)",
        "",
    ])


def detection_section(d: dict) -> str:
    cands = {d["library"]: d, **d.get("candidates", {})}
    rows = [[f"**{n}**" if n == d["library"] else n, c["version"], c["installed_mb"], c["with_dependencies_mb"],
             f"{c['src']['accuracy']:.1%} ({c['src']['language_mean']:.1%})",
             f"{c['tgt']['accuracy']:.1%} ({c['tgt']['language_mean']:.1%})", c["us_per_detection_p50"], c["load_s"]]
            for n, c in cands.items()]
    langs = sorted(d["src"]["per_language"])
    per = [[col] + [f"{d[col]['per_language'][lang]:.0%}" for lang in langs] for col in ("src", "tgt")]
    return f"""## Language detection for a source of "auto" (`benchmarks/detect_bench.py`)

`engine/detect.py` names the language of a text among Baton's 38, offline: {d['library']} {d['version']}, whose
model ({d['model']}) is {d['installed_mb']} MB installed; it knows 37 of the 38, and Traditional Chinese comes
from a character-set test. Accuracy is over the phrasebook's distinct
(text, language) pairs, {d['src']['texts']} in the src column and {d['tgt']['texts']} in tgt: short phrases
("Good morning", "Merci", "Jeudi"), the hard case; in brackets the mean over the six languages, since half the src
texts are English. Each library is restricted to Baton's languages as far as it allows; no answer counts as wrong.
Time is one detection, p50; load is the first call (import and model). Measured {d['measured_at']} ({d['machine']}).

{table(["library", "version", "installed MB", "with dependencies MB", "src accuracy", "tgt accuracy",
        "µs per detection", "load (s)"], rows)}

{d['library']} by language:

{table(["column"] + langs, per)}

Missed, for example: {", ".join(d['src']['wrong_sample'][:6])}. A word the model has no feature of gets
its prior, where English leads, with a confidence near 0.23: the confidence says it is a guess.
"""


def replicas_section(r: dict) -> str:
    c, commit = r["convergence"], r["commit"]
    ratio = (commit["postgres"]["p50_ms"] / commit["sqlite"]["p50_ms"]) if commit["sqlite"]["p50_ms"] else None
    rows = [["convergence, A's switch to B applying it", num(c["p50_ms"], " ms"), num(c["p99_ms"], " ms"),
             num(c["max_ms"], " ms"), target((c["p99_ms"] or 0) < 1000) + " p99 under 1 s"],
            ["of which A's answer to the switch (admin API)", num(r["switch_answered"]["p50_ms"], " ms"),
             num(r["switch_answered"]["p99_ms"], " ms"), num(r["switch_answered"]["max_ms"], " ms"), ""],
            ["switch commit on SQLite (file, WAL)", num(commit["sqlite"]["p50_ms"], " ms"),
             num(commit["sqlite"]["p99_ms"], " ms"), num(commit["sqlite"]["max_ms"], " ms"), ""],
            ["switch commit on Postgres (+ NOTIFY)", num(commit["postgres"]["p50_ms"], " ms"),
             num(commit["postgres"]["p99_ms"], " ms"), num(commit["postgres"]["max_ms"], " ms"),
             f"{ratio:.1f}× SQLite's p50" if ratio else ""]]
    return f"""## Replicas on Postgres (`benchmarks/replicas_bench.py`)

Two app replicas (`chainlit run app.py`) on one throwaway Postgres cluster serve two remote versions (fake
OpenAI-compatible servers started outside Baton, so that the times are Baton's). {r['switches']} switches are made
through replica A's admin API; replica B's `/healthz` is polled every 5 ms until it applies the new generation,
counted from the moment A was asked. Meanwhile {r['clients']} openai-SDK clients stream through B:
**{r['served_through_b']} answers, {r['failed_through_b']} failed**. The commit is `Store.save_change`, what a switch
waits for, {commit['sqlite']['n']} times on each database, alternately. Measured {r['measured_at']} ({r['machine']}).

{table(["", "p50", "p99", "max", "target"], rows)}
"""


def hostile_section(h: dict) -> str:
    health = h["healthz"]
    rows = [[kind, f"{k['bytes'] / 1e6:.2f} MB", ", ".join(k["outcomes"]), num(k["p50_s"], " s"), num(k["max_s"], " s")]
            for kind, k in h["kinds"].items()]
    checks = [["`/healthz` p99 while they upload", num(health["p99_ms"], " ms"), "≤ 100 ms",
               target((health["p99_ms"] or 0) <= 100)],
              ["`/healthz` p50 / max", f"{num(health['p50_ms'], ' ms')} / {num(health['max_ms'], ' ms')}", "", ""],
              ["`/healthz` answers not ok", h["healthz_not_ok"], "0", target(h["healthz_not_ok"] == 0)],
              ["backends declared hung (`baton_backend_unhealthy`)", int(h["unhealthy"]), "0",
               target(h["unhealthy"] == 0)]]
    return f"""## Hostile documents (`benchmarks/hostile_bench.py`)

{h['users']} users at once, each dropping one hostile file of every kind into the chat, one after another
(`tests/hostile.py`: tags, links, code spans, comments and placeholders that open and never close, on long
lines; a .docx of 1,000 paragraphs over 4,000 styles), on the fake server, while a process of its own asks
`/healthz` every 20 ms ({health['n']} probes). Every file is read in full and then refused with what to do (prose runs over
4,000 characters; a cue over 10,000; with `BATON_DOCUMENT_MAX_SEGMENTS=100`, the .docx for its paragraphs):
what is measured is reading hostile files. {h['documents']} documents in {h['duration_s']} s. Measured
{h['measured_at']} ({h['machine']}).

{table(["", "value", "target", ""], checks)}

{table(["kind", "size", "answer", "p50 until answered", "max"], rows)}
"""


def race_section(r: dict) -> str:
    rows, checks = [], []
    for c, sides in r["by_concurrency"].items():
        for name, v in sides.items():
            rows.append([c, name, v["requests_per_s"], v["ratio_requests"], v["output_tokens_per_s"],
                         v["median_ttft_ms"], v["ttft_median_overhead_ms"] if name != "direct" else "",
                         v["p99_ttft_ms"], v["ttft_p99_overhead_ms"] if name != "direct" else "", v["failed"]])
        b, n = sides["baton"], sides["nginx"]
        checks.append([f"concurrency {c}: Baton / direct requests/s (nginx {num(n['ratio_requests'])})",
                       b["ratio_requests"], "≥ 0.9 and ≥ nginx's",
                       target(b["ratio_requests"] >= max(0.9, n["ratio_requests"]))])
        checks.append([f"concurrency {c}: Baton's median TTFT overhead (nginx {num(n['ttft_median_overhead_ms'])} ms)",
                       b["ttft_median_overhead_ms"], "≤ nginx + 1 ms",
                       target(b["ttft_median_overhead_ms"] <= n["ttft_median_overhead_ms"] + 1)])
        checks.append([f"concurrency {c}: Baton's p99 TTFT overhead (ms)", b["ttft_p99_overhead_ms"], "≤ 10",
                       target(b["ttft_p99_overhead_ms"] <= 10)])
    h = r.get("baton_overhead_header", {})
    own = (f"Baton's own account over the race (`X-Baton-Overhead-Ms`, the `baton_overhead_seconds` histogram): "
           f"{h.get('count', 0)} requests, mean {num(h.get('mean_ms'))} ms; share at or under 1 / 2 / 5 / 10 ms: "
           + " / ".join(num(v) for v in h.get("share_at_most_s", {}).values()) + "." if h.get("count") else "")
    load = r.get("load_average_1_5_15", {})
    return f"""## The race: straight to vLLM, nginx, Baton (`benchmarks/race_bench.py`)

vLLM's own serving benchmark ({r['client']}) against three sides in front of the same backend
({r['backend']}): straight to it, nginx as a plain streaming proxy, and Baton's `/v1`. Each concurrency's
sides run in turn in one client process, {r['rounds']} rounds; ratios are to direct, from the same run
(prompts per run: {r['prompts']}). Command: `{r['command']}`. Measured {r['measured_at']} ({r['machine']});
load average (1, 5, 15 min) {load.get('start', '–')} at the start, {load.get('end', '–')} at the end.

{table(["concurrency", "side", "requests/s", "/ direct", "output tokens/s", "TTFT median (ms)", "+ direct",
        "TTFT p99 (ms)", "+ direct", "failed"], rows)}

{table(["", "value", "target", ""], checks)}

{own}
"""


def main() -> None:
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    parts = ["# Benchmarks\n\nWritten by `make bench` (`benchmarks/report.py`) from `benchmarks/results.json`. "
             "All numbers are from 2-core machines without a GPU, serving tiny models on the CPU build of "
             "vLLM; the ratios, measured side by side in one run, carry over better than the absolute times.\n"]
    for key, section in (("engine", engine_section), ("engine_nice", nice_section), ("load", load_section),
                         ("nginx", nginx_section), ("race", race_section), ("chaos", chaos_section), ("quality", quality_section),
                         ("detection", detection_section), ("replicas", replicas_section),
                         ("hostile", hostile_section)):
        parts.append(section(results[key]) if key in results else f"## {key}\n\nNot measured yet: run `make bench`.\n")
    parts.append(FAULTS)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("\n".join(parts))
    print(f"wrote {REPORT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
