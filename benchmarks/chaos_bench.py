"""Chaos benchmark of the real app: users translate without pause while an admin keeps changing
the deployment and backends are killed, frozen and stalled at random.

    .venv/bin/python -m benchmarks.chaos_bench --backend vllm   [--duration 480] [--fault-every 12]
                                               [--users 4] [--api-clients 2]
    .venv/bin/python -m benchmarks.chaos_bench --backend fake   [--duration 300] [--fault-every 3]

Starts `chainlit run app.py` (tests/chatkit.py's launcher, CI removed from its environment) with
three versions a, b, c: tiny random-weight Llamas on real vLLM (`--backend vllm`, built with
demo/build_model.py --steps 0 like benchmarks/load_bench.py) or the tests' fake OpenAI-compatible
server (`--backend fake`, tests/fake_vllm.py, which restarts in well under a second). Then, for
`--duration` seconds:

- chat users (`--users`) keep one session each and send one text after another;
- API-style clients (`--api-clients`) open a fresh session for every request (no thread reuse),
  as a script would;
- the admin, in its own session, every few seconds does one of /switch, /canary NAME 30,
  /promote, /rollback, /canary abort, only towards versions /healthz calls ready; a refusal with a
  reason is fine (a race with a fault) and is counted apart, never as a failed user request;
- the fault injector, every `--fault-every` seconds (jittered), picks a READY version among the
  active, standby and canary ones, never the last one that could serve (another version of the
  deployment must be ready, so that there is somewhere to fail over to), takes its pid from
  /status in the chat (the vLLM server's pid, also its process group id), checks it in /proc
  (it carries this run's tag and serves that version), and injects one of:
    kill   os.killpg(pid, SIGKILL): the server and its EngineCore die;
    hang   os.killpg(pid, SIGSTOP): the whole group frozen, port still open;
    stall  SIGSTOP of vLLM's engine only: the EngineCore process and its Worker (the group's
           VLLM:: processes; the API server, the group leader, is left running): /health keeps
           answering, tokens stop. The fake server has no child, so there a stall is a SIGSTOP
           of its group, the same as a hang; the results say so.
  A version stays out of the injector's reach from its fault until it is ready again.

A dedicated thread polls GET /healthz every 20 ms. Per fault:
  detect   injection -> /healthz no longer shows that version `ready`;
  first good answer   injection -> the first complete (attributed) answer to any request in
           flight at the injection or sent after it;
  cut answer whole    injection -> the first answer that was translated again (🔁) because of
           this fault (when the fault cut any);
  restore  injection -> that version `ready` again.
Requests: failed (an error, or no final message within --request-timeout), truncated (text but
no attribution), retranslated (the 🔁 line). After the injection phase, traffic goes on without
faults until every faulted version is ready again (at most --settle seconds). A stopped process
is never left behind: groups this run froze are checked at the end (SIGCONT + SIGKILL of
anything left, counted), every process carrying the run's tag is reaped, and the supervisor's
audit rows (crash / unhealthy / restart) are read from the database.

Writes benchmarks/results.json ("chaos" -> backend) and benchmarks/chaos_<backend>.json (every
fault and admin action, and the requests that did not end well).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shlex
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from benchmarks import benchutil as bu
from benchmarks.load_bench import TimedClient, exchange
from tests import chatkit as ck

ROOT = bu.ROOT
ADMIN = ("root", "root-password-1")
VERSIONS = ("a", "b", "c")
MODELS = {"a": "bench-a", "b": "bench-b", "c": "bench-c"}
ATTRIBUTION_RE = re.compile(r"_Translated by \*\*([^*]+)\*\* \((\w+)\) in ([\d.]+) s · first token (\d+) ms_")
RETRANSLATED_RE = re.compile(r"🔁 Version (\S+) ")
EXPECT = {"switch": "Switched:", "canary": "Canary on:", "promote": "Promoted:", "rollback": "Rolled back:",
          "canary abort": "Canary stopped:"}
POLL_S = 0.02

# Settings of the app under test, per backend (recorded with the results).
COMMON_ENV = {
    "BATON_LIVENESS_INTERVAL_S": "0.5",
    "BATON_LIVENESS_TIMEOUT_S": "2",
    "BATON_RESTART_BACKOFF_S": "0.5",
    # A version faulted again soon after coming back doubles its backoff up to this; the default
    # (60 s) would make this benchmark measure the backoff policy instead of the restart.
    "BATON_RESTART_BACKOFF_MAX_S": "5",
    "BATON_STOP_GRACE_S": "3",
}
PROFILES = {
    "vllm": {
        "env": {**COMMON_ENV, "BATON_BETWEEN_TOKENS_TIMEOUT_S": "5", "BATON_FIRST_TOKEN_TIMEOUT_S": "30",
                "BATON_REQUEST_WAIT_S": "240", "BATON_STARTUP_TIMEOUT_S": "600"},
        "duration": 480.0, "fault_every": 12.0, "admin_every": 4.0, "request_timeout": 300.0, "settle": 120.0,
        "give_up": 240.0, "lead": 15.0, "port_min": 27000, "startup_timeout": 900.0,
    },
    "fake": {
        "env": {**COMMON_ENV, "BATON_BETWEEN_TOKENS_TIMEOUT_S": "2", "BATON_FIRST_TOKEN_TIMEOUT_S": "5",
                "BATON_REQUEST_WAIT_S": "60", "BATON_STARTUP_TIMEOUT_S": "30"},
        "duration": 300.0, "fault_every": 3.0, "admin_every": 2.0, "request_timeout": 90.0, "settle": 30.0,
        "give_up": 60.0, "lead": 5.0, "port_min": 27600, "startup_timeout": 60.0,
    },
}
FAKE_TOKEN_DELAY_S = 0.1  # an answer of 7 chunks takes ~0.7 s: faults find answers in flight


# processes ----------------------------------------------------------------------------
def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def tagged(pid: int, tag: str) -> bool:
    return f"{bu.TAG_ENV}={tag}".encode() in _read(f"/proc/{pid}/environ").split(b"\0")


def stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name: [state, ppid, pgrp, ...]."""
    raw = _read(f"/proc/{pid}/stat").decode(errors="replace")
    return raw.rsplit(")", 1)[1].split() if ")" in raw else []


def group_members(pgid: int, tag: str) -> list[int]:
    """This run's processes in process group `pgid` (vLLM's EngineCore and Worker included:
    they lose the tag from their environment when they rename themselves, see benchutil)."""
    return [pid for pid in bu.tagged_pids(tag) if (f := stat_fields(pid)) and len(f) > 2 and int(f[2]) == pgid]


def stopped_tagged(tag: str) -> list[int]:
    """Processes of this run in the stopped state (T)."""
    return [pid for pid in bu.tagged_pids(tag) if (f := stat_fields(pid)) and f[0] in ("T", "t")]


def cmdline(pid: int) -> list[str]:
    return [a.decode(errors="replace") for a in _read(f"/proc/{pid}/cmdline").split(b"\0") if a]


def serves(pid: int, version: str, tag: str) -> bool:
    """`pid` is this run's backend server for `version` and leads its own process group."""
    argv = cmdline(pid)
    try:
        name = argv[argv.index("--served-model-name") + 1]
    except (ValueError, IndexError):
        return False
    try:
        return name == version and tagged(pid, tag) and os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


# the chat client ------------------------------------------------------------------------
class ChaosClient(TimedClient):
    """load_bench's client (task_end counting, no stored stream_token events), plus the tokens of
    each message since its content was last reset (the chat empties an answer that is
    translated again)."""

    def __init__(self, base_url: str, token: str, username: str) -> None:
        self.fresh_tokens: dict[str, list[str]] = {}
        self.resets: dict[str, int] = {}
        super().__init__(base_url, token, username)

    def _handler(self, name: str):
        counted = super()._handler(name)

        async def handle(data=None) -> None:
            if name == "stream_token" and data:
                self.fresh_tokens.setdefault(data["id"], []).append(data.get("token", ""))
            elif name == "stream_start" and data:
                self.fresh_tokens[data["id"]] = [data.get("output", "")]
            elif (name == "update_message" and data and data.get("output", None) == ""
                  and data["id"] in self.fresh_tokens):
                self.fresh_tokens[data["id"]] = []
                self.resets[data["id"]] = self.resets.get(data["id"], 0) + 1
            await counted(data)
        return handle


async def open_client(url: str, token: str, username: str) -> ChaosClient:
    c = ChaosClient(url, token, username)
    await c.connect()
    return c


async def close_client(c: ChaosClient) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(c.close(), 10)


def classify(c: ChaosClient, text: str, t0: float, t1: float | None, msgs: list[ck.Msg], fake: bool) -> dict:
    rec: dict = {"start": t0, "end": t1, "outcome": "failed", "version": None, "role": None, "retranslated": None,
                 "failover": False, "server_s": None, "detail": "", "stream_ok": None, "whole": None, "resets": 0}
    if t1 is None:
        rec["detail"] = "no final message within the request timeout"
        return rec
    answer = next((m for m in reversed(msgs) if ATTRIBUTION_RE.search(m.output)), msgs[-1] if msgs else None)
    if answer is None:
        rec["detail"] = "no answer message"
        return rec
    out = answer.output
    rec["resets"] = c.resets.get(answer.id, 0)
    m = ATTRIBUTION_RE.search(out)
    if m is None:
        body = out.split("\n\n⚠️", 1)[0] if not out.startswith("⚠️") else ""
        partial = bool(body.strip()) or "partial translation above" in out
        rec["outcome"] = "truncated" if partial else "failed"
        rec["detail"] = out[-400:]
        return rec
    rec["outcome"] = "ok"
    rec["version"], rec["role"] = m.group(1), m.group(2)
    rec["server_s"] = float(m.group(3))
    if (r := RETRANSLATED_RE.search(out)) is not None:
        rec["retranslated"] = r.group(1)
        rec["detail"] = out[out.index("🔁"):][:300]
    rec["failover"] = "answered by standby" in out
    body = ck.translation_of(out)
    if answer.streamed:  # what streamed since the last reset is exactly the final text
        rec["stream_ok"] = "".join(c.fresh_tokens.get(answer.id, [])) == body
    if fake:  # "<version> says: <the prompt's last words>": one version, whole
        rec["whole"] = body.startswith(f"{rec['version']} says:") and body.count(" says:") == 1 \
            and body.endswith(text.split()[-1])
    return rec


# /healthz, every 20 ms, in its own thread --------------------------------------------
@dataclass
class Fault:
    n: int
    kind: str  # kill | hang | stall
    method: str
    target: str
    role: str  # active | standby | canary
    pid: int
    signalled: list[int]
    at: float  # monotonic, right after the signal
    at_wall: float
    deployment: dict
    fallback_ready: list[str]  # other versions of the deployment ready at the injection (and not faulted)
    # Where the router sends the target's traffic meanwhile: for the active, the first ready one of
    # standby and canary (the router's failover order); for a standby or canary, the active.
    failover_to: str | None
    # ... and that version really answers: ready, and not itself frozen or stalled by a fault that
    # nobody has noticed yet (/healthz still says ready then, and the router still picks it).
    standby_ready: bool
    detected: float | None = None
    detected_state: str = ""
    restored: float | None = None
    gave_up: bool = False
    ready_for_s: float | None = None  # since the version was last seen ready again after an earlier fault
    app_stalled_ms: int = 0  # the longest /healthz answer between the injection and the first good answer
    old_group_gone_at_restore: bool | None = None
    audited_as: str = ""
    first_good_s: float | None = None
    cut: int = 0
    cut_whole_s: float | None = None

    @property
    def open(self) -> bool:
        return self.restored is None and not self.gave_up


class HealthPoller:
    """GET /healthz every POLL_S in a thread (the benchmark's event loop may lag under load):
    keeps the latest answer and marks faults detected / restored as the states change."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.lock = threading.Lock()
        self.latest: dict = {}
        self.faults: list[Fault] = []
        self.polls = 0
        self.errors = 0
        self.rtts: list[float] = []  # answer time of each poll: the app's event loop answers it
        self.gaps: list[float] = []  # time between poll starts: this thread's own scheduling
        self.loads: list[float] = []  # the machine's 1-minute load average, every 5 s
        self.slow: list[tuple[float, float]] = []  # (sent at, answer time) of polls answered in more than 250 ms
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="healthz-poller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def snapshot(self) -> dict:
        with self.lock:
            return dict(self.latest)

    def add(self, fault: Fault) -> None:
        with self.lock:
            self.faults.append(fault)

    def _run(self) -> None:
        last_start = last_load = 0.0
        with httpx.Client(base_url=self.url, timeout=5) as http:
            while not self._stop.is_set():
                t0 = time.monotonic()
                if last_start:
                    self.gaps.append(t0 - last_start)
                last_start = t0
                if t0 - last_load >= 5:
                    last_load = t0
                    self.loads.append(os.getloadavg()[0])
                try:
                    body = http.get("/healthz").json()
                except (httpx.HTTPError, ValueError):
                    self.errors += 1
                    body = None
                t1 = time.monotonic()
                self.polls += 1
                self.rtts.append(t1 - t0)
                if t1 - t0 > 0.25:
                    self.slow.append((t0, t1 - t0))
                if body is not None and "versions" in body:
                    states = body["versions"]
                    with self.lock:
                        self.latest = body
                        for f in self.faults:
                            if not f.open or t0 < f.at:  # a poll sent before the signal says nothing of it
                                continue
                            state = states.get(f.target)
                            if f.detected is None:
                                if state != "ready":
                                    f.detected, f.detected_state = t1, str(state)
                            elif state == "ready":
                                f.restored = t1
                self._stop.wait(max(0.0, POLL_S - (time.monotonic() - t0)))


# the run ---------------------------------------------------------------------------
@dataclass
class Run:
    origin: float
    requests: list[dict] = field(default_factory=list)
    actions: list[dict] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    skipped_ticks: int = 0
    injector_notes: list[str] = field(default_factory=list)
    stopped_groups: dict[int, list[int]] = field(default_factory=dict)  # pgid -> pids we SIGSTOPped
    healed: list[int] = field(default_factory=list)
    setup_s: float = 0.0
    final_status: str = ""
    stopped_left: list[dict] = field(default_factory=list)
    healthz: dict = field(default_factory=dict)


def roles_of(h: dict) -> dict[str, str]:
    out = {}
    for role, key in (("active", "active"), ("standby", "standby"), ("canary", "canary")):
        if h.get(key) and h[key] not in out:
            out[h[key]] = role
    return out


def parse_status(markdown: str) -> dict[str, dict]:
    """The /status table: version -> {state, pid, ...}."""
    rows = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 10 and cells[0] not in ("version", "---"):
            pid = int(cells[4]) if cells[4].isdigit() else None
            rows[cells[0]] = {"state": cells[1], "wanted": cells[2], "role": cells[3], "pid": pid}
    return rows


async def drive(app: ck.App, args: argparse.Namespace, tag: str) -> Run:
    fake = args.backend == "fake"
    admin_token = await ck.login(app.url, *ADMIN)
    admin = await open_client(app.url, admin_token, ADMIN[0])
    ops = None
    clients: list[ChaosClient] = []
    poller = HealthPoller(app.url)
    run = Run(origin=time.monotonic())
    try:
        names = [f"chat{i}" for i in range(args.users)] + [f"api{i}" for i in range(args.api_clients)]
        for name in names:
            reply = await admin.reply(f"/users add {name} {name}-password-1", timeout=60)
            assert f"Added `{name}`" in reply, reply
        flags = "" if fake else " ".join([*bu.FLAGS, "--max-tokens", str(bu.MAX_TOKENS)])
        mark = len(admin.order)
        t_load = time.monotonic()
        for v in VERSIONS:
            reply = await admin.reply(f"/load {v} {MODELS[v] if not fake else v} {flags}".strip(), timeout=60)
            assert f"Loading `{v}`" in reply, reply
        for v in VERSIONS:
            msg = await admin.wait_message(rf"`{v}` (is ready|failed)", timeout=args.startup_timeout, after=mark)
            assert "is ready" in msg.output, msg.output
        run.setup_s = time.monotonic() - t_load
        print(f"three backends ready in {run.setup_s:.0f} s", flush=True)
        for cmd, expect in (("/switch b", "Switched: `b`"), ("/switch a", "Switched: `a`")):  # active a, standby b
            reply = await admin.reply(cmd, timeout=60)
            assert expect in reply, reply
        ops = await open_client(app.url, admin_token, ADMIN[0])  # the fault injector's /status, a session of its own
        tokens = {n: await ck.login(app.url, n, f"{n}-password-1") for n in names}
        clients = [await open_client(app.url, tokens[n], n) for n in names[:args.users]]
        poller.start()
        while not poller.snapshot():
            await asyncio.sleep(0.05)

        run.origin = time.monotonic()
        t_inject_end = run.origin + args.duration
        stop_traffic = asyncio.Event()
        rng = random.Random(args.seed)

        def phrase(i: int, n: int) -> str:
            return bu.PHRASES[(i * 3 + n) % len(bu.PHRASES)]

        async def chat_user(i: int, c: ChaosClient) -> None:
            n = 0
            while not stop_traffic.is_set():
                n += 1
                text = phrase(i, n)
                t0, t1, msgs = await exchange(c, text, args.request_timeout)
                run.requests.append({**classify(c, text, t0, t1, msgs, fake), "client": f"chat{i}", "kind": "chat",
                                     "text": text})
                if t1 is None:  # the session is stuck on that task: carry on in a new one
                    await close_client(c)
                    c = await open_client(app.url, tokens[f"chat{i}"], f"chat{i}")
                    clients.append(c)

        async def api_client(i: int) -> None:
            n = 0
            name = f"api{i}"
            while not stop_traffic.is_set():
                n += 1
                text = phrase(i + 5, n)
                t0 = time.monotonic()
                try:
                    c = await open_client(app.url, tokens[name], name)
                except Exception as exc:  # noqa: BLE001 - a session the app would not open is a failed request
                    run.requests.append({"start": t0, "end": None, "outcome": "failed", "client": name, "kind": "api",
                                         "text": text, "detail": f"could not open a session: {exc}"[:300],
                                         "version": None, "retranslated": None})
                    await asyncio.sleep(1)
                    continue
                try:
                    _, t1, msgs = await exchange(c, text, args.request_timeout)
                    rec = classify(c, text, t0, t1, msgs, fake)  # from before the session opened: a script's view
                finally:
                    await close_client(c)
                run.requests.append({**rec, "client": name, "kind": "api", "text": text})

        async def admin_loop() -> None:
            while not stop_traffic.is_set():
                await asyncio.sleep(args.admin_every * rng.uniform(0.5, 1.5))
                if stop_traffic.is_set():
                    return
                h = poller.snapshot()
                states, active = h.get("versions", {}), h.get("active")
                standby, canary = h.get("standby"), h.get("canary")
                ready = [v for v in VERSIONS if states.get(v) == "ready"]
                options = [("switch", v) for v in ready if v != active]
                options += [("canary", f"{v} 30") for v in ready if v not in (active, canary)]
                if canary:
                    options.append(("canary abort", ""))
                    if canary in ready:
                        options.append(("promote", ""))
                if standby in ready:
                    options.append(("rollback", ""))
                if not options:
                    continue
                kind, arg = rng.choice(options)
                cmd = f"/{'canary abort' if kind == 'canary abort' else kind} {arg}".strip()
                t0, t1, msgs = await exchange(admin, cmd, 120)
                reply = msgs[-1].output if msgs else ""
                outcome = ("ok" if reply.startswith(EXPECT[kind]) else "refused" if reply.startswith("**Refused:**")
                           else "no reply" if t1 is None else "unexpected")
                run.actions.append({"kind": kind, "arg": arg, "sent": t0, "done": t1, "outcome": outcome,
                                    "reply": reply[:300]})

        async def ops_status() -> dict[str, dict]:
            assert ops is not None
            return parse_status(await ops.reply("/status", timeout=60))

        def inject(kind: str, pid: int) -> tuple[str, list[int]]:
            if kind == "kill":
                os.killpg(pid, signal.SIGKILL)
                return "SIGKILL of the server's process group", group_members(pid, tag) or [pid]
            members = group_members(pid, tag)
            if kind == "stall" and not fake:
                # vLLM's engine: the EngineCore process and its Worker (both renamed VLLM::...).
                children = [p for p in members if p != pid]
                engine = [p for p in children if " ".join(cmdline(p)).startswith("VLLM::")]
                chosen = engine or children
                if chosen:
                    for p in chosen:
                        os.kill(p, signal.SIGSTOP)
                    run.stopped_groups.setdefault(pid, []).extend(chosen)
                    what = (" + ".join(" ".join(cmdline(p)).strip() for p in engine) if engine
                            else "the server's child processes")
                    return f"SIGSTOP of {what} only (pids {chosen}); the API server and /health still answer", chosen
                run.injector_notes.append(f"stall of {pid}: no child process, the group was stopped instead")
            os.killpg(pid, signal.SIGSTOP)
            run.stopped_groups.setdefault(pid, []).extend(members or [pid])
            if kind == "stall":
                return ("SIGSTOP of the whole group: the fake server has no engine child, so this stall is a hang",
                        members)
            return "SIGSTOP of the server's process group", members

        kinds_left: list[str] = []

        async def injector() -> None:
            await asyncio.sleep(args.lead)
            next_at = time.monotonic()
            while time.monotonic() < t_inject_end and len(run.faults) < args.max_faults:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                if time.monotonic() >= t_inject_end:
                    return
                now = time.monotonic()
                for f in run.faults:  # a fault nobody noticed in time: recorded, then undone
                    if f.open and f.detected is None and now - f.at > args.give_up:
                        f.gave_up = True
                        for p in run.stopped_groups.get(f.pid, []):
                            with contextlib.suppress(ProcessLookupError):
                                os.kill(p, signal.SIGCONT)
                        run.healed.append(f.pid)
                        run.injector_notes.append(f"fault {f.n} ({f.kind} of {f.target}) not detected within "
                                                  f"{args.give_up:g} s: its processes were sent SIGCONT")
                pending = {f.target for f in run.faults if f.open}
                h = poller.snapshot()
                states = h.get("versions", {})
                roles = roles_of(h)
                good = {v for v in roles if states.get(v) == "ready" and v not in pending}
                candidates = [v for v in good if good - {v}]
                if not candidates:
                    run.skipped_ticks += 1
                    next_at = time.monotonic() + 1.0
                    continue
                target = rng.choice(sorted(candidates))
                if not kinds_left:  # every kind in each block of three, in random order: a short run covers all
                    kinds_left.extend(rng.sample(("kill", "hang", "stall"), 3))
                kind = kinds_left[-1]
                rows = await ops_status()
                pid = rows.get(target, {}).get("pid")
                h = poller.snapshot()
                if (pid is None or rows[target]["state"] != "ready" or h.get("versions", {}).get(target) != "ready"
                        or not serves(pid, target, tag)):
                    run.injector_notes.append(f"skipped {kind} of {target}: not ready, "
                                              f"or pid {pid} not its server any more")
                    next_at = time.monotonic() + 1.0
                    continue
                roles = roles_of(h)
                fallback = sorted(v for v in roles
                                  if v != target and h["versions"].get(v) == "ready" and v not in pending)
                states_now = h.get("versions", {})
                if roles.get(target) == "active":
                    failover_to = next((v for v in (h.get("standby"), h.get("canary"))
                                        if v and v != target and states_now.get(v) == "ready"), None)
                else:
                    failover_to = h.get("active") if states_now.get(h.get("active")) == "ready" else None
                if not fallback:  # the admin moved things meanwhile: this would be the last one that can serve
                    run.injector_notes.append(f"skipped {kind} of {target}: no other version could serve any more")
                    next_at = time.monotonic() + 1.0
                    continue
                try:
                    method, signalled = inject(kind, pid)
                except ProcessLookupError:
                    run.injector_notes.append(f"skipped {kind} of {target}: pid {pid} gone before the signal")
                    next_at = time.monotonic() + 1.0
                    continue
                at, at_wall = time.monotonic(), time.time()
                kinds_left.pop()
                f = Fault(len(run.faults) + 1, kind, method, target, roles.get(target, ""), pid, signalled, at, at_wall,
                          {"active": h.get("active"), "standby": h.get("standby"), "canary": h.get("canary")},
                          fallback, failover_to, failover_to is not None and failover_to not in pending)
                run.faults.append(f)
                poller.add(f)
                print(f"{at - run.origin:7.1f} s  fault {f.n}: {kind} {target} ({f.role}, pid {pid}); "
                      f"ready elsewhere: {fallback}; traffic meanwhile to {f.failover_to}"
                      f"{'' if f.standby_ready else ' (itself faulted, not noticed yet)'}", flush=True)
                next_at = at + args.fault_every * rng.uniform(0.6, 1.4)

        async def watch_groups() -> None:
            """Once a faulted version is ready again, its old process group must be gone."""
            while not stop_traffic.is_set():
                for f in run.faults:
                    if f.restored is not None and f.old_group_gone_at_restore is None:
                        f.old_group_gone_at_restore = not group_members(f.pid, tag)
                await asyncio.sleep(0.2)

        tasks = [asyncio.create_task(chat_user(i, c)) for i, c in enumerate(clients)]
        tasks += [asyncio.create_task(api_client(i)) for i in range(args.api_clients)]
        tasks += [asyncio.create_task(admin_loop()), asyncio.create_task(watch_groups())]
        inj = asyncio.create_task(injector())
        await asyncio.wait([inj, *tasks], timeout=args.duration + 60, return_when=asyncio.FIRST_EXCEPTION)
        for t in [inj, *tasks]:
            if t.done() and t.exception() is not None:
                raise t.exception()
        if not inj.done():
            inj.cancel()
        # Settle: traffic goes on, no new fault, until every faulted version is ready again.
        deadline = time.monotonic() + args.settle
        while any(f.open for f in run.faults) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        for f in run.faults:
            if f.open:
                run.injector_notes.append(f"fault {f.n} ({f.kind} of {f.target}) still not "
                                          f"{'restored' if f.detected else 'detected'} when the run ended")
        stop_traffic.set()
        done, pending = await asyncio.wait(tasks, timeout=args.request_timeout + 60)
        for t in pending:
            t.cancel()
        for t in done:
            if not t.cancelled() and t.exception() is not None:
                raise t.exception()
        undetected = {f.pid for f in run.faults if f.open}
        run.stopped_left = [{"pid": p, "pgid": int(stat_fields(p)[2]), "cmd": " ".join(cmdline(p))[:160],
                             "fault_still_open": int(stat_fields(p)[2]) in undetected} for p in stopped_tagged(tag)]
        run.final_status = await admin.reply("/status", timeout=60)
        print(run.final_status, flush=True)
        return run
    finally:
        poller.stop()
        loads = poller.loads or [os.getloadavg()[0]]
        run.healthz = {"polls": poller.polls, "errors": poller.errors, "answer_ms": summary_ms(poller.rtts),
                       "interval_ms": summary_ms(poller.gaps), "interval_target_ms": POLL_S * 1000,
                       "load_average_mean": round(sum(loads) / len(loads), 1), "load_average_max": round(max(loads), 1),
                       "slow_answers": [(round(t - run.origin, 2), round(d * 1000)) for t, d in poller.slow]}
        for c in [admin, *([ops] if ops else []), *clients]:
            await close_client(c)  # type: ignore[arg-type]
        unfreeze(run, tag, kill=False)  # a stall nobody noticed: let the app stop it the normal way


def unfreeze(run: Run, tag: str, kill: bool) -> list[int]:
    """Never leave a stopped process behind: SIGCONT (and, once the app has stopped, SIGKILL)
    whatever is left of the groups this run froze (normally nothing: the supervisor killed them).
    Returns the pids signalled."""
    ours = set(bu.tagged_pids(tag))
    done = []
    for pgid, pids in run.stopped_groups.items():
        for p in (set(pids) | set(group_members(pgid, tag))) & ours:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGCONT)
                if kill:
                    os.kill(p, signal.SIGKILL)
                done.append(p)
    return done


# analysis --------------------------------------------------------------------------
def audit_rows(db: Path) -> list[dict]:
    if not db.exists():
        return []
    with contextlib.closing(sqlite3.connect(db)) as con:
        rows = con.execute(
            "SELECT at, actor, action, arguments, outcome, detail FROM audit_events ORDER BY id").fetchall()
    out = []
    for at, actor, action, arguments, outcome, detail in rows:
        try:
            when = datetime.fromisoformat(str(at))
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            ts = when.timestamp()
        except ValueError:
            ts = None
        out.append({"at": ts, "actor": actor, "action": action, "arguments": arguments, "outcome": outcome,
                    "detail": detail})
    return out


def summary_ms(values_s: list[float]) -> dict:
    s = bu.lat_summary(values_s)
    return {"n": s["n"], "p50": s["p50_ms"], "p99": s["p99_ms"], "max": s["max_ms"]}


def analyse(run: Run, args: argparse.Namespace, audit: list[dict], app_log: str) -> dict:
    reqs, faults = run.requests, run.faults
    done = sorted((r["end"], r) for r in reqs if r["outcome"] == "ok" and r["end"] is not None)
    # The supervisor's crash / unhealthy rows, each matched to the fault that caused it: the first
    # row for that version from the injection until it was ready again. Rows left over are
    # failures nobody injected (e.g. a healthy but slow backend taken for a stalled one).
    sup_rows = [a for a in audit if a["actor"] == "supervisor" and a["action"] in ("crash", "unhealthy")
                and a["at"] is not None]
    matched: set[int] = set()
    for f in faults:
        back = [g.restored for g in faults if g.target == f.target and g.restored is not None and g.restored < f.at]
        f.ready_for_s = f.at - max(back) if back else None
        nxt = next((t for t, _ in done if t > f.at), None)
        f.first_good_s = None if nxt is None else nxt - f.at
        if nxt is not None:
            f.app_stalled_ms = max((d for t, d in run.healthz.get("slow_answers", [])
                                    if f.at - run.origin - d / 1000 <= t <= nxt - run.origin), default=0)
        # Answers translated again because of this fault: in flight at it, or sent to the version
        # before it was seen failing.
        until = f.restored if f.restored is not None else float("inf")
        cut = [r for _, r in done if r.get("retranslated") == f.target and r["end"] > f.at and r["start"] < until]
        f.cut = len(cut)
        f.cut_whole_s = min(r["end"] for r in cut) - f.at if cut else None
        end_wall = f.at_wall + ((f.restored - f.at) if f.restored is not None else args.give_up + args.settle) + 1
        for i, a in enumerate(sup_rows):
            if i not in matched and f'"{f.target}"' in (a["arguments"] or "") and f.at_wall - 1 <= a["at"] <= end_wall:
                matched.add(i)
                f.audited_as = a["action"]
                break
    unprovoked = [f"{a['action']} {a['arguments']}: {a['detail'][:200]}"
                  for i, a in enumerate(sup_rows) if i not in matched]

    def by_kind(kind: str | None, attr: str, pred=lambda f: True) -> dict:
        vals = [getattr(f, attr) - f.at if attr in ("detected", "restored") else getattr(f, attr)
                for f in faults if (kind is None or f.kind == kind) and pred(f) and getattr(f, attr) is not None]
        return summary_ms(vals)

    count = lambda o, rs=reqs: sum(r["outcome"] == o for r in rs)  # noqa: E731
    kinds = ("kill", "hang", "stall")
    sup = [a for a in audit if a["actor"] == "supervisor"]
    audit_counts: dict[str, int] = {}
    for a in sup:
        key = f"{a['action']} {a['outcome']}"
        audit_counts[key] = audit_counts.get(key, 0) + 1
    acts: dict[str, dict] = {}
    for a in run.actions:
        k = acts.setdefault(a["kind"], {"count": 0, "ok": 0, "refused": 0, "other": 0})
        k["count"] += 1
        k["ok" if a["outcome"] == "ok" else "refused" if a["outcome"] == "refused" else "other"] += 1
    log_lines = app_log.splitlines()
    errors = [ln for ln in log_lines if " - ERROR - " in ln or " - CRITICAL - " in ln]
    hang = by_kind("hang", "detected")
    soon = 10.0  # a hang this soon after a restart: the supervisor may still be writing its audit row
    kill_first = by_kind("kill", "first_good_s", lambda f: f.standby_ready)
    out = {
        "backend": args.backend,
        "command": "python -m benchmarks.chaos_bench " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "duration_s": args.duration,
        "users": args.users,
        "api_clients": args.api_clients,
        "fault_every_s": args.fault_every,
        "admin_every_s": args.admin_every,
        "settings": PROFILES[args.backend]["env"] | {"BATON_PORT_MIN": str(args.port_min)},
        "fake_token_delay_s": FAKE_TOKEN_DELAY_S if args.backend == "fake" else None,
        "setup_s_three_backends": round(run.setup_s, 1),
        "faults": {
            "injected": len(faults),
            "by_kind": {k: sum(f.kind == k for f in faults) for k in kinds},
            "by_role": {r: sum(f.role == r for f in faults) for r in ("active", "standby", "canary")},
            "with_a_ready_standby": sum(f.standby_ready for f in faults),
            "detected": sum(f.detected is not None for f in faults),
            "restored": sum(f.restored is not None for f in faults),
            "not_detected": [f"{f.n}: {f.kind} {f.target} ({f.role})" for f in faults if f.detected is None],
            "old_group_left_at_restore": sum(f.old_group_gone_at_restore is False for f in faults),
            "audited": {k: sum(f.kind == k and bool(f.audited_as) for f in faults) for k in kinds},
            "skipped_ticks_no_eligible_target": run.skipped_ticks,
            "stall_method": ("SIGSTOP of the whole group (the fake server has no EngineCore child): the same as a hang"
                             if args.backend == "fake" else "SIGSTOP of vLLM's EngineCore and Worker only"),
        },
        "requests": {
            "total": len(reqs), "ok": count("ok"), "failed": count("failed"), "truncated": count("truncated"),
            "retranslated": sum(bool(r.get("retranslated")) for r in reqs),
            "failover_answers": sum(bool(r.get("failover")) for r in reqs),
            "stream_mismatch": sum(r.get("stream_ok") is False for r in reqs),
            "not_whole": sum(r.get("whole") is False for r in reqs),
            "chat": {"total": sum(r["kind"] == "chat" for r in reqs),
                     "failed": count("failed", [r for r in reqs if r["kind"] == "chat"]),
                     "truncated": count("truncated", [r for r in reqs if r["kind"] == "chat"])},
            "api": {"total": sum(r["kind"] == "api" for r in reqs),
                    "failed": count("failed", [r for r in reqs if r["kind"] == "api"]),
                    "truncated": count("truncated", [r for r in reqs if r["kind"] == "api"])},
            "by_version": {v: sum(r.get("version") == v for r in reqs) for v in VERSIONS},
            "latency": summary_ms([r["end"] - r["start"] for r in reqs if r["outcome"] == "ok"]),
        },
        "detect_ms": {**{k: by_kind(k, "detected") for k in kinds},
                      "hang_within_10_s_of_a_restart": by_kind("hang", "detected", lambda f: f.ready_for_s is not None
                                                               and f.ready_for_s < soon),
                      "hang_otherwise": by_kind("hang", "detected",
                                                lambda f: f.ready_for_s is None or f.ready_for_s >= soon)},
        "first_good_answer_ms": {"all": by_kind(None, "first_good_s"), **{k: by_kind(k, "first_good_s") for k in kinds},
                                 "kill_with_ready_standby": kill_first,
                                 "kill_with_an_unnoticed_faulty_standby": by_kind("kill", "first_good_s",
                                                                                  lambda f: not f.standby_ready),
                                 # the faults users feel: on the version that answers most requests
                                 "on_the_active": by_kind(None, "first_good_s", lambda f: f.role == "active"),
                                 "kill_of_the_active": by_kind("kill", "first_good_s", lambda f: f.role == "active")},
        "cut_answer_whole_ms": {"all": by_kind(None, "cut_whole_s"), **{k: by_kind(k, "cut_whole_s") for k in kinds}},
        "answers_cut_by_a_fault": sum(f.cut for f in faults),
        "restore_ms": {"all": by_kind(None, "restored"), **{k: by_kind(k, "restored") for k in kinds}},
        "admin": acts,
        "audit_supervisor": audit_counts,
        # Stopped processes found after the traffic ended, before this run's own clean-up: of a
        # fault the supervisor had handled (a process it failed to end), and of one still open.
        "stopped_processes_left": sum(not p["fault_still_open"] for p in run.stopped_left),
        "stopped_processes_of_open_faults": sum(p["fault_still_open"] for p in run.stopped_left),
        "stopped_processes_left_detail": run.stopped_left[:10],
        # How well /healthz could be watched: its answer time is the app's event-loop delay (it
        # answers from memory), the interval this thread's; the load average is the whole machine's.
        "healthz": {k: v for k, v in run.healthz.items() if k != "slow_answers"}
        | {"answers_over_250_ms": len(run.healthz.get("slow_answers", []))},
        "supervisor_failures_without_a_fault": unprovoked,
        "app_log_error_lines": len(errors),
        "app_log_error_sample": [ln[:300] for ln in errors[:8]],
        "app_log_tracebacks": sum("Traceback (most recent call last)" in ln for ln in log_lines),
        # SQLite under this load: the supervisor's audit rows it could not write, and the chat
        # history writes Chainlit's data layer dropped (it logs a warning and goes on).
        "audit_writes_failed": [ln[:200] for ln in log_lines if "audit write failed" in ln],
        "chat_history_writes_failed_database_locked": sum(" - chainlit - " in ln and "database is locked" in ln
                                                          for ln in log_lines),
        "notes": run.injector_notes[:30],
        "failures": [{"t": round(r["start"] - run.origin, 2), "kind": r["kind"], "outcome": r["outcome"],
                      "detail": r.get("detail", "")[:300]} for r in reqs if r["outcome"] != "ok"][:20],
    }
    q = out["requests"]
    out["targets"] = {
        "faults >= 50": len(faults) >= 50,
        "failed = 0": q["failed"] == 0,
        "truncated = 0": q["truncated"] == 0,
        "hang detected within 3 s (p99)": hang["p99"] is not None and hang["p99"] <= 3000,
        "first good answer within 1 s of a kill with a ready standby (p99)":
            kill_first["p99"] is not None and kill_first["p99"] <= 1000,
        "no stopped process left": not run.stopped_left,
        "every fault detected": all(f.detected is not None for f in faults),
    }
    return out


def save_detail(run: Run, out: dict, path: Path) -> None:
    o = run.origin
    faults = []
    for f in run.faults:
        d = asdict(f)
        for k in ("at", "detected", "restored"):
            d[k] = None if d[k] is None else round(d[k] - o, 3)
        for k in ("first_good_s", "cut_whole_s"):
            d[k] = None if d[k] is None else round(d[k], 3)
        d["detect_s"] = None if f.detected is None else round(f.detected - f.at, 3)
        d["restore_s"] = None if f.restored is None else round(f.restored - f.at, 3)
        faults.append(d)
    data = {
        "summary": {k: v for k, v in out.items() if k not in ("failures",)},
        "faults": faults,
        "admin_actions": [{**a, "sent": round(a["sent"] - o, 3),
                           "done": None if a["done"] is None else round(a["done"] - o, 3)}
                          for a in run.actions],
        "requests_not_ok": [{**r, "start": round(r["start"] - o, 3),
                             "end": None if r["end"] is None else round(r["end"] - o, 3)}
                            for r in run.requests if r["outcome"] != "ok"],
        "requests_retranslated": [{k: r.get(k) for k in ("kind", "client", "version", "retranslated", "detail")}
                                  | {"start": round(r["start"] - o, 3), "end": round(r["end"] - o, 3)}
                                  for r in run.requests if r.get("retranslated")][:200],
        "final_status": run.final_status,
        "healthz_slow_answers_s_ms": run.healthz.get("slow_answers", []),
    }
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=sorted(PROFILES), default="vllm")
    parser.add_argument("--duration", type=float, help="seconds of traffic with faults (vllm 480, fake 300)")
    parser.add_argument("--users", type=int, default=4, help="chat users: one session each, one text after another")
    parser.add_argument("--api-clients", type=int, default=2, help="API-style clients: a fresh session per request")
    parser.add_argument("--fault-every", type=float,
                        help="mean seconds between faults (vllm 12, fake 3), jittered ±40%%")
    parser.add_argument("--admin-every", type=float, help="mean seconds between admin commands (vllm 4, fake 2)")
    parser.add_argument("--max-faults", type=int, default=300)
    parser.add_argument("--request-timeout", type=float, help="a request with no final message by then failed")
    parser.add_argument("--settle", type=float,
                        help="after the faults, wait this long at most for every version to be ready")
    parser.add_argument("--give-up", type=float, help="a fault not detected by then is recorded and undone (SIGCONT)")
    parser.add_argument("--lead", type=float, help="seconds of traffic before the first fault")
    parser.add_argument("--startup-timeout", type=float, help="for the three backends to be ready")
    parser.add_argument("--port-min", type=int, help="backend ports (127.0.0.1)")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--work", help="directory for the models (kept, reused) and a fresh data dir per run")
    parser.add_argument("--no-save", action="store_true",
                        help="a smoke run: leave results.json and benchmarks/chaos_*.json alone "
                             "(the detail goes to the work directory)")
    args = parser.parse_args()
    profile = PROFILES[args.backend]
    for key in ("duration", "fault_every", "admin_every", "request_timeout", "settle", "give_up", "lead",
                "startup_timeout", "port_min"):
        if getattr(args, key) is None:
            setattr(args, key, profile[key])
    bu.exit_on_signals()
    tag = bu.new_tag()
    work = Path(args.work or tempfile.mkdtemp(prefix=f"baton-chaos-{args.backend}-")).resolve()
    data = Path(tempfile.mkdtemp(prefix="data-", dir=work))
    if args.backend == "vllm":
        bu.build_models(work / "models", list(MODELS.values()))
        (data / "models").symlink_to(work / "models")
        env = ck.vllm_env(data)
    else:
        for v in VERSIONS:
            ck.make_fake_model(data, v, token_delay_s=FAKE_TOKEN_DELAY_S)
        env = ck.fake_env(data)
    env.update(profile["env"])
    env.update({"BATON_PORT_MIN": str(args.port_min), "BATON_PORT_MAX": str(args.port_min + 499),
                "BATON_STARTUP_TIMEOUT_S": str(int(args.startup_timeout)) if args.backend == "vllm"
                else profile["env"]["BATON_STARTUP_TIMEOUT_S"]})
    app = ck.launch_app(env, admin=ADMIN, timeout=120)
    print(f"app on {app.url}, data in {data}, log {app.log_path}", flush=True)
    leftovers: list[int] = []
    run: Run | None = None
    try:
        run = asyncio.run(drive(app, args, tag))
    finally:
        code = app.stop(timeout=90)
        if run is not None:
            unfrozen = unfreeze(run, tag, kill=True)
            if unfrozen:
                print(f"processes of frozen groups still there after the app stopped: {unfrozen}", flush=True)
        leftovers = bu.reap(tag)
        print(f"app exited with {code}; processes left behind and reaped: {leftovers or 'none'}", flush=True)
    out = analyse(run, args, audit_rows(data / "baton.db"), app.log())
    out["processes_left_behind"] = len(leftovers)
    out["app_exit_code"] = code
    detail = (work if args.no_save else ROOT / "benchmarks") / f"chaos_{args.backend}.json"
    save_detail(run, out, detail)
    print(f"per-fault detail: {detail}", flush=True)
    if not args.no_save:
        existing = json.loads(bu.RESULTS.read_text()).get("chaos", {}) if bu.RESULTS.exists() else {}
        existing = {k: v for k, v in existing.items() if k in PROFILES}
        out["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        out["machine"] = bu.machine()
        bu.merge_results("chaos", {**existing, args.backend: out})
    print(json.dumps({k: v for k, v in out.items() if k not in ("failures", "notes", "app_log_error_sample")}, indent=2,
                     ensure_ascii=False))
    print("targets:", ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in out["targets"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
