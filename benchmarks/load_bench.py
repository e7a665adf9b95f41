"""Load benchmark of the real app: simulated users translate over Chainlit's websocket while an
admin switches versions, runs a canary, promotes, rolls back and unloads an idle version.

    .venv/bin/python -m benchmarks.load_bench [--users 6] [--duration 180] [--switches 24]

Starts `chainlit run app.py` (tests/chatkit.py's launcher) on real vLLM backends serving three
tiny random-weight models (demo/build_model.py --steps 0), loaded with the admin console's
`/load`. Each user is a normal account with its own socket.io session, sending one text after
another for `--duration` seconds. An answer is complete when its final message carries the
attribution line render.answer adds (`_Translated by **v** (role) in ...`); a final message
with some text but no attribution is truncated, one with no text is failed (as is a request
that got no final message within --request-timeout).

Writes benchmarks/results.json ("load"), benchmarks/load_requests.json (every request and
every admin action, with times) and docs/latency.png (latency over time, lines at switches).
`--plot-only` redraws the plot from load_requests.json.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks import benchutil as bu
from tests import chatkit as ck

ROOT = bu.ROOT
REQUESTS_FILE = ROOT / "benchmarks" / "load_requests.json"
PLOT = ROOT / "docs" / "latency.png"
ADMIN = ("root", "root-password-1")
MODELS = ["bench-a", "bench-b", "bench-c"]
VERSIONS = {"a": "bench-a", "b": "bench-b", "c": "bench-c"}
SERVER_RE = re.compile(r"_Translated by \*\*[^*]+\*\* \(\w+\) in ([\d.]+) s · first token (\d+) ms_")
WINDOW_S = 2.0  # a request overlapping [action sent, action answered + WINDOW_S] is "during"
EXPECT = {"switch": "Switched:", "canary": "Canary on:", "promote": "Promoted:", "rollback": "Rolled back:",
          "unload": "Unloaded"}


class TimedClient(ck.ChatClient):
    """chatkit's client, plus: the arrival time of each message's first token, a task_end
    counter, and no stored stream_token events (the stock client keeps every event and
    rescans them on each one, which grows quadratically over minutes of streaming)."""

    def __init__(self, base_url: str, token: str, username: str) -> None:
        self.first_token_at: dict[str, float] = {}
        self.task_ends = 0
        self.task_end_at = 0.0
        super().__init__(base_url, token, username)

    def _handler(self, name: str):
        async def handle(data=None) -> None:
            now = time.monotonic()
            if name == "stream_token" and data and data.get("token"):
                self.first_token_at.setdefault(data["id"], now)
            self._apply(name, data)
            if name == "task_end":
                self.task_ends += 1
                self.task_end_at = now
            async with self._changed:
                if name != "stream_token":
                    self.events.append((name, data))
                self._changed.notify_all()
        return handle


async def connect(url: str, user: str, password: str) -> TimedClient:
    client = TimedClient(url, await ck.login(url, user, password), user)
    await client.connect()
    return client


async def exchange(c: ck.ChatClient, text: str, timeout: float) -> tuple[float, float | None, list[ck.Msg]]:
    """Send one message; (sent at, task ended at or None on timeout, the assistant messages after it).
    `c` counts task ends (`task_ends`, `task_end_at`), as TimedClient and chaos_bench's client do."""
    await c.wait_for(lambda: not c.busy, timeout, "the previous task to end")
    before_end, before = c.task_ends, len(c.order)
    t0 = time.monotonic()
    await c.send(text)
    try:
        await c.wait_for(lambda: c.task_ends > before_end, timeout, f"the answer to {text!r}")
        t1: float | None = c.task_end_at
    except AssertionError:
        t1 = None
    msgs = [c.messages[i] for i in c.order[before:]
            if c.messages[i].type == "assistant_message" and not c.messages[i].removed]
    return t0, t1, msgs


def classify(c: TimedClient, t0: float, t1: float | None, msgs: list[ck.Msg]) -> dict:
    rec: dict = {"start": t0, "latency": None, "ttft": None, "version": None, "role": None, "outcome": "failed",
                 "detail": "", "stream_ok": None}
    if t1 is None:
        rec["detail"] = "no final message within the request timeout"
        return rec
    rec["latency"] = t1 - t0
    answer = next((m for m in reversed(msgs) if m.attribution), msgs[-1] if msgs else None)
    if answer is None:
        rec["detail"] = "no answer message"
        return rec
    if answer.id in c.first_token_at:
        rec["ttft"] = c.first_token_at[answer.id] - t0
    if answer.attribution:
        rec["version"], rec["role"] = answer.attribution
        rec["out_chars"] = len(answer.translation)
        if m := SERVER_RE.search(answer.output):  # the engine's own timing, without Chainlit
            rec["server_s"], rec["server_ttft"] = float(m.group(1)), int(m.group(2)) / 1000
        rec["outcome"] = "ok"
        rec["stream_ok"] = (not answer.streamed) or "".join(answer.tokens) == answer.translation
    else:
        partial = "".join(answer.tokens).strip() or "partial translation above" in answer.output
        rec["outcome"] = "truncated" if partial else "failed"
        m = re.search(r"\(from `([^`]+)`\)", answer.output)
        rec["version"] = m.group(1) if m else None
        rec["detail"] = answer.output[-300:]
    return rec


def schedule(switches: int) -> list[tuple[str, str]]:
    """Admin actions, in order: `switches` switches (a<->b, one round through c), an unload of
    c once it is idle, a canary, a promote and a rollback."""
    seq: list[tuple[str, str]] = []
    n = 0

    def switch(name: str) -> None:
        nonlocal n
        seq.append(("switch", name))
        n += 1

    first = max(0, min(8, switches - 4))
    for i in range(first):  # a is active at the start
        switch("b" if i % 2 == 0 else "a")
    if seq and seq[-1] == ("switch", "b"):
        switch("a")
    for name in ("c", "a", "b"):  # c serves a while, then is neither active nor standby: idle
        switch(name)
    seq.append(("unload", "c"))
    switch("a")  # active a, standby b
    seq += [("canary", "b 50"), ("promote", ""), ("rollback", "")]  # -> b active, then a again
    while n < switches:
        switch("b" if seq[-1] in (("switch", "a"), ("rollback", "")) else "a")
    return seq


class Expect:
    """What the deployment should be after each admin action, to check where answers come from."""

    def __init__(self) -> None:
        self.active, self.previous, self.canary = "a", None, None

    def apply(self, kind: str, arg: str) -> None:
        if kind == "switch":
            self.active, self.previous = arg, self.active
            if self.canary == arg:
                self.canary = None
        elif kind == "canary":
            self.canary = arg.split()[0]
        elif kind == "promote":
            self.active, self.previous, self.canary = self.canary, self.active, None
        elif kind == "rollback":
            self.active, self.previous = self.previous, self.active

    def snapshot(self) -> dict:
        return {"active": self.active, "previous": self.previous, "canary": self.canary}


@dataclass
class Run:
    t_origin: float
    requests: list[dict]
    actions: list[dict]


async def drive(app: ck.App, args: argparse.Namespace) -> tuple[Run, dict]:
    admin = await connect(app.url, *ADMIN)
    users: list[TimedClient] = []
    try:
        for i in range(args.users):
            reply = await admin.reply(f"/users add load{i} load-user-password-{i}", timeout=60)
            assert f"Added `load{i}`" in reply, reply
        # Answers of MAX_TOKENS tokens, as on every side of benchmarks/nginx_baseline.py.
        flags = " ".join([*bu.FLAGS, "--max-tokens", str(bu.MAX_TOKENS)])
        mark = len(admin.order)
        t_load = time.monotonic()
        for name, model in VERSIONS.items():
            reply = await admin.reply(f"/load {name} {model} {flags}", timeout=60)
            assert f"Loading `{name}`" in reply, reply
        for name in VERSIONS:
            msg = await admin.wait_message(rf"`{name}` (is ready|failed)", timeout=args.startup_timeout, after=mark)
            assert "is ready" in msg.output, msg.output
        setup_s = time.monotonic() - t_load
        print(f"three backends ready in {setup_s:.0f} s", flush=True)
        assert "Switched: `a`" in await admin.reply("/switch a", timeout=60)
        users = [await connect(app.url, f"load{i}", f"load-user-password-{i}") for i in range(args.users)]

        requests: list[dict] = []
        actions: list[dict] = []
        t_origin = time.monotonic()
        t_end = t_origin + args.duration
        lead = min(20.0, args.duration * 0.12)
        plan = schedule(args.switches)
        span = args.duration - 2 * lead
        spacing = span / len(plan)

        async def user_loop(i: int, c: TimedClient) -> None:
            n = 0
            while time.monotonic() < t_end:
                text = bu.PHRASES[(i + n) % len(bu.PHRASES)]
                n += 1
                t0, t1, msgs = await exchange(c, text, args.request_timeout)
                rec = classify(c, t0, t1, msgs)
                rec.update(user=i, text=text)
                requests.append(rec)

        async def admin_loop() -> None:
            expect = Expect()
            due = t_origin + lead
            for k, (kind, arg) in enumerate(plan):
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                t0, t1, msgs = await exchange(admin, f"/{kind} {arg}".strip(), 120)
                reply = msgs[-1].output if msgs else ""
                ok = t1 is not None and reply.startswith(EXPECT[kind])
                if ok:
                    expect.apply(kind, arg)
                actions.append({"kind": kind, "arg": arg, "sent": t0, "done": t1 if t1 is not None else t0 + 120,
                                "ok": ok, "reply": reply[:200], "expect": expect.snapshot()})
                # Next one `spacing` later; after a slow action (an unload drains), spread the rest
                # over what is left of the action phase, at least 1 s apart.
                left = len(plan) - k - 1
                now = time.monotonic()
                due = max(due + spacing, now + max(1.0, min(spacing, (t_origin + lead + span - now) / max(left, 1))))
                print(f"{t0 - t_origin:6.1f} s  /{kind} {arg}: {'ok' if ok else 'NOT OK'} "
                      f"({((t1 or t0) - t0) * 1000:.0f} ms)  {reply[:80]!r}", flush=True)

        tasks = [asyncio.create_task(user_loop(i, c)) for i, c in enumerate(users)]
        tasks.append(asyncio.create_task(admin_loop()))
        # Bounded: users stop starting requests at t_end; the last ones get request_timeout.
        done, pending = await asyncio.wait(tasks, timeout=args.duration + args.request_timeout + 240)
        for t in pending:
            t.cancel()
        for t in done:
            if t.exception() is not None:
                raise t.exception()
        status = await admin.reply("/status", timeout=60)
        print(status, flush=True)
        return Run(t_origin, requests, actions), {"setup_s_three_backends": round(setup_s, 1), "final_status": status}
    finally:
        for c in [admin, *users]:
            try:
                await asyncio.wait_for(c.close(), 10)
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass


def analyse(run: Run, args: argparse.Namespace) -> dict:
    reqs, acts = run.requests, run.actions
    deploy = [a for a in acts if a["kind"] in ("switch", "canary", "promote", "rollback")]
    windows = [(a["sent"], a["done"] + WINDOW_S) for a in acts]
    first = min(a["sent"] for a in acts) if acts else float("inf")
    last = max(w[1] for w in windows) if windows else float("-inf")

    def end(r: dict) -> float:
        return r["start"] + (r["latency"] or args.request_timeout)

    phases: dict[str, list[dict]] = {"before": [], "during": [], "between": [], "after": []}
    for r in reqs:
        if end(r) < first:
            phases["before"].append(r)
        elif r["start"] > last:
            phases["after"].append(r)
        elif any(r["start"] <= w1 and end(r) >= w0 for w0, w1 in windows):
            phases["during"].append(r)
        else:
            phases["between"].append(r)

    # Where answers came from: a request sent after an action was answered, and before the
    # next one was sent, must come from the version that action made active (or the canary).
    misrouted, standby = 0, 0
    for r in reqs:
        if r["outcome"] != "ok":
            continue
        if r["role"] == "standby":
            standby += 1
        settled = [a for a in deploy if a["ok"] and a["done"] < r["start"]]
        pending_ = [a for a in acts if a["sent"] <= r["start"] <= a["done"]]
        if pending_:
            continue
        exp = settled[-1]["expect"] if settled else {"active": "a", "canary": None}
        allowed = {exp["active"]} | ({exp["canary"]} if exp["canary"] else set())
        if r["version"] not in allowed:
            misrouted += 1

    count = lambda o: sum(r["outcome"] == o for r in reqs)  # noqa: E731
    by_version: dict[str, int] = {}
    roles: dict[str, int] = {}
    for r in reqs:
        if r["outcome"] == "ok":
            by_version[r["version"]] = by_version.get(r["version"], 0) + 1
            roles[r["role"]] = roles.get(r["role"], 0) + 1
    kinds: dict[str, dict] = {}
    for a in acts:
        k = kinds.setdefault(a["kind"], {"count": 0, "ok": 0, "round_trip_ms": []})
        k["count"] += 1
        k["ok"] += a["ok"]
        k["round_trip_ms"].append((a["done"] - a["sent"]) * 1000)
    for k in kinds.values():
        rt = k.pop("round_trip_ms")
        k["round_trip_p50_ms"] = round(bu.pct(rt, 50), 1)
        k["round_trip_max_ms"] = round(max(rt), 1)
    return {
        "users": args.users,
        "duration_s": args.duration,
        "requests": {"started": len(reqs), "completed": count("ok"), "failed": count("failed"),
                     "truncated": count("truncated")},
        "stream_mismatch": sum(r["stream_ok"] is False for r in reqs),
        "misrouted": misrouted,
        "answered_by_standby": standby,
        "answers_by_version": by_version,
        "answers_by_role": roles,
        "actions": kinds,
        "latency": {p: bu.lat_summary([r["latency"] for r in rs if r["outcome"] == "ok"]) for p, rs in phases.items()},
        "latency_all": bu.lat_summary([r["latency"] for r in reqs if r["outcome"] == "ok"]),
        # The engine's own time for the same answers (from the attribution line): the rest of
        # the latency is Chainlit, the websocket and the chat history writes.
        "engine_time": {p: bu.lat_summary([r["server_s"] for r in rs if r.get("server_s") is not None])
                        for p, rs in phases.items()},
        "output_chars_p50": bu.pct([r["out_chars"] for r in reqs if "out_chars" in r], 50),
        "ttft": {p: bu.lat_summary([r["ttft"] for r in rs if r["outcome"] == "ok" and r["ttft"] is not None])
                 for p, rs in phases.items()},
        "window_s": WINDOW_S,
        "failures": [{"t": round(r["start"] - run.t_origin, 2), "outcome": r["outcome"], "detail": r["detail"]}
                     for r in reqs if r["outcome"] != "ok"][:20],
    }


def save_requests(run: Run) -> None:
    o = run.t_origin
    data = {
        "origin_unix": round(time.time() - (time.monotonic() - o), 3),
        "requests": [{**r, "start": round(r["start"] - o, 3),
                      "latency": None if r["latency"] is None else round(r["latency"], 3),
                      "ttft": None if r["ttft"] is None else round(r["ttft"], 3)} for r in run.requests],
        "actions": [{**a, "sent": round(a["sent"] - o, 3), "done": round(a["done"] - o, 3)} for a in run.actions],
    }
    REQUESTS_FILE.write_text(json.dumps(data, indent=1) + "\n")


def plot(path: Path = PLOT) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(REQUESTS_FILE.read_text())
    reqs, acts = data["requests"], data["actions"]
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(13, 7.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    colors = {"a": "tab:blue", "b": "tab:orange", "c": "tab:green"}
    for v, col in colors.items():
        pts = [r for r in reqs if r["outcome"] == "ok" and r["version"] == v]
        if pts:
            ax.scatter([r["start"] for r in pts], [r["latency"] for r in pts], s=9, color=col, label=f"answered by {v}")
            tt = [r for r in pts if r["ttft"] is not None]
            ax2.scatter([r["start"] for r in tt], [r["ttft"] * 1000 for r in tt], s=9, color=col)
    bad = [r for r in reqs if r["outcome"] != "ok"]
    if bad:
        ax.scatter([r["start"] for r in bad], [r["latency"] or 0 for r in bad], s=40, marker="x", color="red",
                   label=f"failed or truncated ({len(bad)})")
    styles = {"switch": ("0.55", "--"), "canary": ("tab:purple", "-"), "promote": ("tab:red", "-"),
              "rollback": ("black", "-"), "unload": ("tab:brown", ":")}
    seen = set()
    for a in acts:
        col, ls = styles[a["kind"]]
        for axis in (ax, ax2):
            axis.axvline(a["sent"], color=col, ls=ls, lw=1.1 if a["kind"] == "switch" else 1.8,
                         label=None if a["kind"] in seen or axis is ax2 else f"/{a['kind']}")
        seen.add(a["kind"])
        if a["kind"] != "switch":
            ax.annotate(f"/{a['kind']} {a['arg']}".strip(), (a["sent"], 1.0), xycoords=("data", "axes fraction"),
                        rotation=90, va="top", ha="right", fontsize=8, color=col)
    ok = sum(r["outcome"] == "ok" for r in reqs)
    nsw = sum(a["kind"] == "switch" for a in acts)
    ax.set_title(f"Baton under load: {len(reqs)} requests over the websocket, {ok} complete, {len(reqs) - ok} "
                 f"failed/truncated; {nsw} switches + canary, promote, rollback, unload")
    ax.set_ylabel("request latency (s)\nsend -> final message")
    ax2.set_ylabel("first token (ms)")
    ax2.set_xlabel("time since the users started (s); vertical lines: admin commands sent")
    ax.set_ylim(bottom=0)
    ax2.set_ylim(bottom=0)
    ax.legend(loc="upper left", fontsize=8, ncol=3)
    ax.grid(alpha=0.3)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=6, help="concurrent users (socket.io sessions)")
    parser.add_argument("--duration", type=float, default=180, help="seconds of sustained load")
    parser.add_argument("--switches", type=int, default=24, help="/switch commands during the load (>= 20)")
    parser.add_argument("--request-timeout", type=float, default=120)
    parser.add_argument("--startup-timeout", type=float, default=900, help="for the three backends to be ready")
    parser.add_argument("--work", help="directory for the models (kept, reused) and a fresh data dir per run")
    parser.add_argument("--port-min", type=int, default=26000, help="backend ports (127.0.0.1)")
    parser.add_argument("--plot-only", action="store_true", help="redraw docs/latency.png from load_requests.json")
    args = parser.parse_args()
    if args.plot_only:
        plot()
        return 0
    if args.switches < 4:
        parser.error("--switches must be at least 4")
    bu.exit_on_signals()
    tag = bu.new_tag()
    work = Path(args.work or tempfile.mkdtemp(prefix="baton-load-")).resolve()
    bu.build_models(work / "models", MODELS)
    data = Path(tempfile.mkdtemp(prefix="data-", dir=work))
    (data / "models").symlink_to(work / "models")
    env = {**ck.vllm_env(data), "BATON_PORT_MIN": str(args.port_min), "BATON_PORT_MAX": str(args.port_min + 499),
           "BATON_STARTUP_TIMEOUT_S": str(args.startup_timeout), "BATON_REQUEST_WAIT_S": "60"}
    app = ck.launch_app(env, admin=ADMIN, timeout=120)
    print(f"app on {app.url}, data in {data}, log {app.log_path}", flush=True)
    leftovers: list[int] = []
    try:
        run, extra = asyncio.run(drive(app, args))
    finally:
        code = app.stop(timeout=90)
        leftovers = bu.reap(tag)
        print(f"app exited with {code}; processes left behind and reaped: {leftovers or 'none'}", flush=True)
    out = analyse(run, args)
    out.update(setup_s_three_backends=extra["setup_s_three_backends"], processes_left_behind=len(leftovers))
    save_requests(run)
    bu.merge_results("load", out)
    print(json.dumps(out, indent=2))
    plot()
    r = out["requests"]
    targets = {"failed=0": r["failed"] == 0, "truncated=0": r["truncated"] == 0, "misrouted=0": out["misrouted"] == 0,
               "switches>=20": out["actions"].get("switch", {}).get("ok", 0) >= 20,
               "canary/promote/rollback/unload ok": all(out["actions"].get(k, {}).get("ok") for k in
                                                        ("canary", "promote", "rollback", "unload"))}
    print("targets:", ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in targets.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
