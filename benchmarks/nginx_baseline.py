"""Side by side with the usual recipe: nginx in front of two vLLM servers, switched by rewriting
the upstream file and `nginx -s reload`, against the real Baton app (`chainlit run app.py`) and
its OpenAI-compatible gateway, both driven over HTTP by the same client process.

    .venv/bin/python -m benchmarks.nginx_baseline [--clients 6] [--switches 40] [--interval 3]

Usual recipe: two `python -m vllm.entrypoints.openai.api_server` processes (127.0.0.1, each
`--served-model-name NAME translator`, so clients ask for "translator" and the answer's
`model` field says which one served), an nginx `upstream` in its own file, included by the
main config (proxy_buffering off, HTTP/1.1 keepalive to the upstream). A switch writes the
other server into the upstream file (atomic rename) and runs `nginx -s reload`. The same recipe
runs twice: with clients that keep their connections alive (what HTTP client libraries, the
OpenAI SDK included, do by default) and with a new connection per request.

Baton: the app started as a subprocess the way it is deployed (tests/chatkit.launch_app: no CI,
BATON_* settings only). Two API keys are made in the chat (`/keys add NAME user|admin`); versions
bench-a and bench-b are registered and loaded through the admin API (POST /admin/v1/versions) on
the same model directories, vLLM flags and answer cap as the nginx side's servers, and a switch is
`POST /admin/v1/deployment/switch`. Clients ask for the alias "baton"; the answer's `model` field
names the version that answered.

The four backends are up at once, and the three contenders take turns (`--rounds`, each with
`--switches / --rounds` switches), so that a shared machine's noise falls on all of them alike.

Same load on every side: N clients, each streaming one completion after another (the same
prompt texts, max_tokens 32, temperature 0), never waiting between requests. Every client is the
OpenAI SDK (AsyncOpenAI, max_retries=0: a retry would hide a dropped request), so the per-token
client work is the same on every side. A request is complete when its stream ends with a
finish_reason; truncated when some text arrived but the stream ended without one; failed otherwise.
Per switch:
  - switch until the new version answers: from the start of the switch (the upstream rewrite; the
    admin API call) until the answer to a new request comes from the new version. The probe is
    the same on both sides: a completion with max_tokens 1 (not streamed), each on a new
    connection (a new client), in a tight loop in a thread of its own, until the answer's `model`
    names the new version. Also kept: when that first new-version probe was sent (`routed`);
  - the streams in flight when the switch started, and what became of them;
  - requests that started after the switch had begun but were still served by the old version.

Gateway overhead against direct to vLLM, in every round, with no switches:
  - TTFT: paired requests, the same prompt (streamed, max_tokens 4) to the active backend
    directly and through the gateway (alias "baton", so routed like any client's request), one
    after the other, the order alternating from pair to pair; median and p99 of the differences.
    Direct requests need the backend's own API key, which exists only in the backend's
    environment: it is read from /proc/<pid>/environ (pid from GET /admin/v1/versions/NAME), which
    only the same OS user as the app (or root) can do.
  - throughput at saturation: `--sat-clients` clients streaming without pause for `--sat-seconds`
    to the same backend, directly and through the gateway in alternating order (ABBA), tokens and
    completed requests per second within the window; the ratio gateway / direct.
    Meanwhile /healthz of the app is timed every 200 ms (in both, so both carry the same extra
    load): how late the app's event loop answers while it relays, against while it idles. The
    app's CPU seconds (/proc/<pid>/stat) per round say what relaying costs.

Merges the numbers into benchmarks/results.json under "nginx" (with the load averages seen); draws
docs/latency_nginx.png.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
from openai import AsyncOpenAI

from benchmarks import benchutil as bu
from engine import Settings
from engine.types import DEFAULT_TEMPLATE
from tests import chatkit as ck
from tests import nginxkit
from tests.nginxkit import guarded, stop_guarded

ROOT = bu.ROOT
PLOT = ROOT / "docs" / "latency_nginx.png"
TARGET_LANG = "German"
NAMES = {"a": "bench-a", "b": "bench-b"}  # nginx's server names and Baton's version names alike
ALIAS = "baton"
ADMIN = ("root", "root-password-1")
PAIR_MAX_TOKENS = 4


def prompt(text: str) -> str:
    # What Baton's chat sends for a version with the default template and source "auto".
    return DEFAULT_TEMPLATE.format(source_lang="the detected language", target_lang=TARGET_LANG, text=text)


def phrase(i: int, n: int) -> str:
    return bu.PHRASES[(i + n) % len(bu.PHRASES)]


# processes ------------------------------------------------------------------------
def start_vllm(model: Path, name: str, port: int, log: Path) -> subprocess.Popen:
    cmd = [str(bu.VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1", "--port", str(port),
           "--model", str(model), "--served-model-name", name, "translator", *bu.FLAGS]
    # The same backend environment and niceness as Baton's own backends, so both sides run the same servers.
    settings = Settings()
    return guarded(cmd, log, {**os.environ, **settings.backend_env, "PYTHONUNBUFFERED": "1"}, settings.backend_nice)


def wait_healthy(procs: dict[str, tuple[subprocess.Popen, int]], timeout: float) -> None:
    pending = dict(procs)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for name, (proc, port) in list(pending.items()):
            if proc.poll() is not None:
                raise RuntimeError(f"vLLM {name} exited with {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    del pending[name]
        time.sleep(1)
    if pending:
        raise RuntimeError(f"vLLM {sorted(pending)} not healthy within {timeout:.0f} s")


class Nginx(nginxkit.Nginx):
    """The usual recipe: the upstream in a file of its own, included by the main config."""

    def __init__(self, prefix: Path, port: int, backend_port: int) -> None:
        prefix.mkdir(parents=True, exist_ok=True)
        self.upstream = prefix / "upstream.conf"
        self.write_upstream(backend_port)
        super().__init__(prefix, port, f"""
    include {self.upstream};
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://translator;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 600s;
            add_header X-Upstream $upstream_addr always;
        }}
    }}""")

    def write_upstream(self, backend_port: int) -> None:
        tmp = self.upstream.with_suffix(".tmp")
        tmp.write_text(f"upstream translator {{\n    server 127.0.0.1:{backend_port};\n    keepalive 16;\n}}\n")
        os.replace(tmp, self.upstream)

    async def switch(self, backend_port: int) -> None:
        """The usual recipe: point the upstream at the other server, `nginx -s reload`."""
        self.write_upstream(backend_port)
        p = await asyncio.create_subprocess_exec(*self.base(), "-s", "reload")
        if await p.wait() != 0:
            raise RuntimeError("nginx -s reload failed")


# Baton ------------------------------------------------------------------------------
@dataclass
class Baton:
    app: ck.App
    user_key: str
    admin: httpx.AsyncClient  # /admin/v1 with an admin key

    async def load(self, names: list[str]) -> None:
        for name in names:
            r = await self.admin.post("/versions", json={"name": name, "model_path": name, "flags": bu.FLAGS,
                                                         "max_tokens": bu.MAX_TOKENS})
            r.raise_for_status()

    async def wait_ready(self, names: list[str], timeout: float) -> None:
        for name in names:
            await ck.wait_until(lambda n=name: self._ready(n), timeout, f"Baton's {name} ready", interval=1)

    async def _ready(self, name: str) -> bool:
        state = (await self.admin.get(f"/versions/{name}")).json()["state"]
        if state == "failed":
            raise RuntimeError(f"Baton's {name} failed to start: {self.app.log()[-2000:]}")
        return state == "ready"

    async def switch(self, name: str) -> None:
        (await self.admin.post("/deployment/switch", json={"name": name})).raise_for_status()

    async def make_active(self, name: str) -> None:
        """Switch unless `name` is active already (a switch to the active version is refused)."""
        if (await self.admin.get("/deployment")).json()["active"] != name:
            await self.switch(name)

    async def direct(self, name: str) -> tuple[str, str]:
        """(base URL, API key) of a version's backend. The key is only in the backend's environment."""
        v = (await self.admin.get(f"/versions/{name}")).json()
        for item in Path(f"/proc/{v['pid']}/environ").read_bytes().split(b"\0"):
            if item.startswith(b"VLLM_API_KEY="):
                return f"http://127.0.0.1:{v['port']}", item.split(b"=", 1)[1].decode()
        raise RuntimeError(f"no VLLM_API_KEY in the environment of {name}'s backend (pid {v['pid']})")


async def start_baton(work: Path, startup_timeout: float) -> Baton:
    data = Path(tempfile.mkdtemp(prefix="baton-", dir=work))
    (data / "models").symlink_to(work / "models")
    env = {**ck.vllm_env(data), "BATON_STARTUP_TIMEOUT_S": str(startup_timeout), "BATON_REQUEST_WAIT_S": "300"}
    app = await asyncio.to_thread(ck.launch_app, env, admin=ADMIN, timeout=120)
    chat = await ck.connect(app.url, *ADMIN)
    try:
        user_key = await ck.make_key(chat, "bench", "user")
        admin_key = await ck.make_key(chat, "bench-admin", "admin")
    finally:
        await chat.close()
    admin = httpx.AsyncClient(base_url=f"{app.url}/admin/v1", headers={"Authorization": f"Bearer {admin_key}"},
                              timeout=60)
    return Baton(app, user_key, admin)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# the load ---------------------------------------------------------------------------
async def stream_request(client: AsyncOpenAI, model: str, text: str, max_tokens: int = bu.MAX_TOKENS,
                         token_at: list[float] | None = None) -> dict:
    """One streamed completion with the OpenAI SDK; `token_at` collects each text chunk's arrival."""
    rec = {"start": time.monotonic(), "end": None, "ttft": None, "version": None, "outcome": "failed", "detail": "",
           "tokens": 0}
    finish = ""
    try:
        stream = await client.completions.create(
            model=model, prompt=prompt(text), max_tokens=max_tokens, temperature=0, top_p=1.0, stream=True,
            stream_options={"include_usage": True})
        async with stream:
            async for chunk in stream:
                rec["version"] = chunk.model or rec["version"]
                for ch in chunk.choices:
                    if ch.text:
                        now = time.monotonic()
                        if rec["ttft"] is None:
                            rec["ttft"] = now - rec["start"]
                        if token_at is not None:
                            token_at.append(now)
                        rec["tokens"] += 1
                    finish = ch.finish_reason or finish
    except openai.APIError as exc:
        rec["detail"] = f"{type(exc).__name__}: {exc} ({type(exc.__cause__).__name__})"[:200]
    finally:
        rec["end"] = time.monotonic()
    if finish:
        rec["outcome"] = "ok"
    elif rec["tokens"]:
        rec["outcome"] = "truncated"
        rec["detail"] = rec["detail"] or "the stream ended without a finish_reason"
    return rec


def probe_loop(url: str, model: str, want: str, headers: dict[str, str]) -> tuple[float | None, float | None, int, int]:
    """In a thread, so that the streams' event loop does not delay it: a max_tokens=1 completion,
    each on a new connection, until `want` answers. (sent, answered, probes, errors)."""
    probes = errors = 0
    deadline = time.monotonic() + 30
    body = {"model": model, "prompt": prompt("Hello"), "max_tokens": 1, "temperature": 0}
    with httpx.Client(base_url=url, headers=headers, timeout=10,
                      limits=httpx.Limits(max_keepalive_connections=0)) as probe:
        while time.monotonic() < deadline:
            sent = time.monotonic()
            probes += 1
            try:
                r = probe.post("/v1/completions", json=body)
                if r.status_code != 200:
                    errors += 1
                elif r.json()["model"] == want:
                    return sent, time.monotonic(), probes, errors
            except (httpx.HTTPError, ValueError, KeyError):
                errors += 1
            time.sleep(0.001)
    return None, None, probes, errors


@dataclass
class Side:
    """One contender's run, over several rounds: every request and every switch, with times on
    the side's own clock (rounds laid end to end), for the plot."""
    name: str
    title: str
    requests: list[dict] = field(default_factory=list)
    switches: list[dict] = field(default_factory=list)
    clock: float = 0.0  # seconds of this side's load so far
    max_nginx_processes: int = 0
    loadavg: list[float] = field(default_factory=list)


async def run_round(side: Side, args: argparse.Namespace, n_switches: int,
                    request: Callable[[int, int], Awaitable[dict]], switch: Callable[[str], Awaitable[None]],
                    wait_new: Callable[[str], Awaitable[tuple[float | None, float | None, int, int]]],
                    after_switch: Callable[[], Awaitable[None]] | None = None) -> None:
    """N clients stream without pause; `n_switches` switches, `--interval` apart, b, a, b, ...
    `request(i, n)` -> a record; `switch(target)` switches; `wait_new(target)` -> probe_loop's answer."""
    origin = time.monotonic()
    t_switches = origin + args.warmup
    t_end = t_switches + n_switches * args.interval + args.tail
    side.loadavg.append(os.getloadavg()[0])

    async def client(i: int) -> None:
        n = 0
        while time.monotonic() < t_end:
            n += 1
            rec = await request(i, n)
            side.requests.append({**rec, "client": i, "t": rec["start"] - origin + side.clock})

    async def operator() -> None:
        target = "b"
        for k in range(n_switches):
            await asyncio.sleep(max(0.0, t_switches + k * args.interval - time.monotonic()))
            t0 = time.monotonic()
            await switch(target)
            t_cmd = time.monotonic()
            t_sent, t_new, probes, errors = await wait_new(target)
            side.switches.append({"target": target, "t0": t0, "t": t0 - origin + side.clock, "cmd_s": t_cmd - t0,
                                  "new_s": None if t_new is None else t_new - t0,
                                  "routed_s": None if t_sent is None else t_sent - t0, "probes": probes,
                                  "probe_errors": errors})
            if after_switch:
                await after_switch()
            target = "a" if target == "b" else "b"

    tasks = [asyncio.create_task(client(i)) for i in range(args.clients)] + [asyncio.create_task(operator())]
    done, pending = await asyncio.wait(tasks, timeout=t_end - time.monotonic() + 300)
    for t in pending:
        t.cancel()
    for t in done:
        if (exc := t.exception()) is not None:
            raise exc
    side.clock += time.monotonic() - origin


# overhead against direct ------------------------------------------------------------
@dataclass
class Overhead:
    pairs: list[tuple[float, float]] = field(default_factory=list)  # (direct TTFT, gateway TTFT), s
    sat: dict[str, list[dict]] = field(default_factory=lambda: {"direct": [], "gateway": []})
    failed: dict[str, int] = field(default_factory=lambda: {"direct": 0, "gateway": 0})
    failures: list[str] = field(default_factory=list)
    unpaired: int = 0

    def count(self, who: str, rec: dict) -> bool:
        if rec["outcome"] == "ok":
            return True
        self.failed[who] += 1
        self.failures.append(f"{who}: {rec['outcome']}: {rec['detail']}"[:200])
        return False


async def paired_ttft(ov: Overhead, direct: AsyncOpenAI, direct_model: str, gateway: AsyncOpenAI, n: int) -> None:
    """`n` pairs, back to back, the order alternating: a shared machine's drift and the backend's
    cache warmth from the first of a pair fall on both sides alike."""
    for k in range(n):
        text = phrase(k, 0)
        order = [("direct", direct, direct_model), ("gateway", gateway, ALIAS)]
        if k % 2:
            order.reverse()
        ttft: dict[str, float] = {}
        for who, client, model in order:
            rec = await stream_request(client, model, text, PAIR_MAX_TOKENS)
            if ov.count(who, rec) and rec["ttft"] is not None:
                ttft[who] = rec["ttft"]
        if len(ttft) == 2:
            ov.pairs.append((ttft["direct"], ttft["gateway"]))
        else:
            ov.unpaired += 1  # one of the two failed, or answered no text (a random model may)


async def saturate(ov: Overhead, who: str, clients: list[AsyncOpenAI], model: str, args: argparse.Namespace,
                   app: ck.App) -> None:
    """Every client streams without pause for a settle time plus the window; tokens and completed
    requests are counted within the window only. Meanwhile /healthz is timed every 200 ms."""
    t0 = time.monotonic()
    w0, w1 = t0 + args.sat_settle, t0 + args.sat_settle + args.sat_seconds
    token_at: list[float] = []
    ends: list[float] = []
    healthz: list[float] = []

    async def client(i: int) -> None:
        n = 0
        while time.monotonic() < w1:
            n += 1
            rec = await stream_request(clients[i], model, phrase(i, n), token_at=token_at)
            if ov.count(who, rec):
                ends.append(rec["end"])

    async def timer() -> None:
        async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
            while time.monotonic() < w1:
                sent = time.monotonic()
                await http.get("/healthz")
                if sent >= w0:
                    healthz.append(time.monotonic() - sent)
                await asyncio.sleep(0.2)

    cpu0, load = cpu_seconds(app.proc.pid), os.getloadavg()[0]
    await asyncio.gather(timer(), *(client(i) for i in range(len(clients))))
    ov.sat[who].append({"tokens": sum(w0 <= t < w1 for t in token_at), "requests": sum(w0 <= t < w1 for t in ends),
                        "seconds": w1 - w0, "app_cpu_s": cpu_seconds(app.proc.pid) - cpu0, "load_average": load,
                        "healthz_s": healthz})


def analyse(side: Side) -> dict:
    reqs, sws = side.requests, side.switches
    count = lambda o: sum(r["outcome"] == o for r in reqs)  # noqa: E731
    in_flight = [r for s in sws for r in reqs if r["start"] < s["t0"] < r["end"]]
    stale = []
    for s in sws:
        old = "a" if s["target"] == "b" else "b"
        nxt = min((x["t0"] for x in sws if x["t0"] > s["t0"]), default=s["t0"] + 60)
        stale += [r["start"] - s["t0"] for r in reqs if s["t0"] <= r["start"] < nxt and r["version"] == old]
    new_ms = [s["new_s"] * 1000 if s["new_s"] is not None else float("inf") for s in sws]
    routed_ms = [s["routed_s"] * 1000 if s["routed_s"] is not None else float("inf") for s in sws]
    cmd_ms = [s["cmd_s"] * 1000 for s in sws]
    windows = [(s["t0"], s["t0"] + min(s["new_s"] or 30.0, 30.0) + 2.0) for s in sws]
    near = [r["end"] - r["start"] for r in reqs if r["outcome"] == "ok"
            and any(r["start"] <= w1 and r["end"] >= w0 for w0, w1 in windows)]
    r2 = lambda v: round(v, 1)  # noqa: E731
    out = {
        "requests": {"started": len(reqs), "completed": count("ok"), "failed": count("failed"),
                     "truncated": count("truncated")},
        "switches": len(sws),
        "switch_to_new_version_ms": {"p50": r2(bu.pct(new_ms, 50)), "p99": r2(bu.pct(new_ms, 99)),
                                     "max": r2(max(new_ms))},
        "switch_to_new_version_routed_ms": {"p50": r2(bu.pct(routed_ms, 50)), "p99": r2(bu.pct(routed_ms, 99))},
        "switch_command_ms": {"p50": r2(bu.pct(cmd_ms, 50)), "p99": r2(bu.pct(cmd_ms, 99))},
        "switch_never_took_effect": sum(s["new_s"] is None for s in sws),
        "per_switch_to_new_ms": [r2(v) for v in new_ms],
        "probe_errors": sum(s["probe_errors"] for s in sws),
        "in_flight_at_switch": {"streams": len(in_flight), "completed": sum(r["outcome"] == "ok" for r in in_flight),
                                "failed": sum(r["outcome"] == "failed" for r in in_flight),
                                "truncated": sum(r["outcome"] == "truncated" for r in in_flight)},
        "served_by_old_after_switch_began": {"requests": len(stale),
                                             "latest_start_after_switch_ms": r2(max(stale) * 1000) if stale else 0},
        "latency_all": bu.lat_summary([r["end"] - r["start"] for r in reqs if r["outcome"] == "ok"]),
        "latency_near_switch": bu.lat_summary(near),
        "ttft": bu.lat_summary([r["ttft"] for r in reqs if r["outcome"] == "ok" and r["ttft"] is not None]),
        "load_average_at_round_start": [r2(x) for x in side.loadavg],
        "failures": [{"t": r2(r["t"]), "outcome": r["outcome"], "detail": r["detail"]}
                     for r in reqs if r["outcome"] != "ok"][:10],
    }
    if side.name.startswith("nginx"):
        out["max_nginx_processes_after_a_reload"] = side.max_nginx_processes
    return out


def plot(sides: list[Side], path: Path = PLOT) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(sides), 1, figsize=(13, 3.4 * len(sides)), sharex=True, sharey=True)
    colors = {"a": "tab:blue", "b": "tab:orange"}
    top = max((r["end"] - r["start"] for side in sides for r in side.requests), default=1.0) * 1.05
    for ax, side in zip(axes, sides, strict=True):
        for v, col in colors.items():
            pts = [r for r in side.requests if r["outcome"] == "ok" and r["version"] == v]
            ax.scatter([r["t"] for r in pts], [r["end"] - r["start"] for r in pts], s=7, color=col,
                       label=f"served by {v}")
        bad = [r for r in side.requests if r["outcome"] != "ok"]
        if bad:
            ax.scatter([r["t"] for r in bad], [r["end"] - r["start"] for r in bad], s=50, marker="x",
                       color="red", label=f"failed/truncated ({len(bad)})", zorder=5)
        for s in side.switches:
            ax.axvline(s["t"], color="0.6", ls="--", lw=0.9)
        ok = sum(r["outcome"] == "ok" for r in side.requests)
        ax.set_title(f"{side.title}: {len(side.requests)} streams, {ok} complete, "
                     f"{len(side.requests) - ok} failed, {len(side.switches)} switches (dashed)", fontsize=10)
        ax.set_ylabel("latency (s)")
        ax.set_ylim(0, top)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    axes[-1].set_xlabel("seconds of load on this side (its rounds laid end to end)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    print(f"plot: {path}")


def analyse_overhead(ov: Overhead) -> dict:
    diffs = [(g - d) * 1000 for d, g in ov.pairs]
    r2 = lambda v: None if v is None else round(v, 2)  # noqa: E731

    def rate(who: str, what: str) -> float:
        rounds = ov.sat[who]
        return sum(x[what] for x in rounds) / sum(x["seconds"] for x in rounds) if rounds else 0.0

    def ratio(what: str) -> float | None:
        return r2(rate("gateway", what) / rate("direct", what)) if rate("direct", what) else None

    sat = {}
    for who in ("direct", "gateway"):
        rounds = ov.sat[who]
        lag = [s for x in rounds for s in x["healthz_s"]]
        sat[who] = {"tokens_per_s": r2(rate(who, "tokens")), "requests_per_s": r2(rate(who, "requests")),
                    "per_round_tokens_per_s": [r2(x["tokens"] / x["seconds"]) for x in rounds],
                    "app_cpu_s_per_round": [r2(x["app_cpu_s"]) for x in rounds],
                    "load_average_at_round_start": [r2(x["load_average"]) for x in rounds],
                    "app_healthz_answer": bu.lat_summary(lag)}
    gw_req = sum(x["requests"] for x in ov.sat["gateway"])
    gw_cpu = sum(x["app_cpu_s"] for x in ov.sat["gateway"]) - sum(x["app_cpu_s"] for x in ov.sat["direct"])
    return {
        "ttft_pairs": len(diffs),
        "ttft_pairs_dropped": ov.unpaired,
        "ttft_overhead_ms": {"median": r2(bu.pct(diffs, 50)), "p99": r2(bu.pct(diffs, 99)),
                             "p1": r2(bu.pct(diffs, 1))},
        "ttft_direct": bu.lat_summary([d for d, _ in ov.pairs]),
        "ttft_gateway": bu.lat_summary([g for _, g in ov.pairs]),
        "throughput": {**sat,
                       "ratio_tokens": ratio("tokens"), "ratio_requests": ratio("requests"),
                       "app_cpu_ms_per_gateway_request": r2(gw_cpu * 1000 / gw_req) if gw_req else None},
        "failed": ov.failed,
        "failures": ov.failures[:10],
    }


async def main(args: argparse.Namespace) -> dict:
    work = Path(args.work or tempfile.mkdtemp(prefix="baton-nginx-")).resolve()
    bu.build_models(work / "models", list(NAMES.values()))
    per_round = args.switches // args.rounds
    load_start = [round(x, 2) for x in os.getloadavg()]
    async with contextlib.AsyncExitStack() as stack:
        # Baton and the usual recipe's two servers start together; the sides then take turns
        # (nginx, nginx without client keepalive, Baton, the overhead; again), so that the noise
        # of a shared machine falls on all of them alike.
        t0 = time.monotonic()
        baton = await start_baton(work, args.startup_timeout)
        stack.callback(baton.app.stop, 60)
        stack.push_async_callback(baton.admin.aclose)
        await baton.load(list(NAMES.values()))
        ports = {"a": ck.free_port(), "b": ck.free_port()}
        procs: dict[str, tuple[subprocess.Popen, int]] = {}
        for v, port in ports.items():
            procs[v] = (start_vllm(work / "models" / NAMES[v], NAMES[v], port, work / f"vllm-{v}.log"), port)
            stack.callback(stop_guarded, procs[v][0])
        await asyncio.gather(asyncio.to_thread(wait_healthy, procs, args.startup_timeout),
                             baton.wait_ready(list(NAMES.values()), args.startup_timeout))
        startup = time.monotonic() - t0
        print(f"four backends ready in {startup:.0f} s", flush=True)
        ngx = Nginx(Path(tempfile.mkdtemp(prefix="nginx-", dir=work)), ck.free_port(), ports["a"])
        ngx.start()
        stack.callback(ngx.stop)
        ngx_url, app_url = f"http://127.0.0.1:{ngx.port}", baton.app.url
        user_auth = {"Authorization": f"Bearer {baton.user_key}"}

        def sdk(url: str, key: str = "none", keepalive: bool = True) -> AsyncOpenAI:
            limits = httpx.Limits() if keepalive else httpx.Limits(max_keepalive_connections=0)
            c = AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=600,
                            http_client=httpx.AsyncClient(limits=limits, timeout=600))
            stack.push_async_callback(c.close)
            return c

        keep = [sdk(ngx_url) for _ in range(args.clients)]  # the SDK's default: connections kept alive
        fresh = [sdk(ngx_url, keepalive=False) for _ in range(args.clients)]
        gw = [sdk(app_url, baton.user_key) for _ in range(max(args.clients, args.sat_clients))]
        # Baton's bench-a backend, straight: what the gateway adds is measured against it.
        direct_url, direct_key = await baton.direct(NAMES["a"])
        direct = [sdk(direct_url, direct_key) for _ in range(args.sat_clients)]

        # Warm every backend and connection (first requests allocate), outside the measurement.
        for v in ("b", "a"):
            await ngx.switch(ports[v])
            await asyncio.sleep(0.5)
            await stream_request(keep[0], "translator", "warm up")
            await baton.switch(NAMES[v])
            await stream_request(gw[0], ALIAS, "warm up")
        await stream_request(direct[0], NAMES["a"], "warm up")

        sides = {
            "nginx": Side("nginx", "nginx: upstream rewrite + `nginx -s reload`, clients keep connections alive"),
            "nginx_fresh": Side("nginx_fresh", "the same, clients open a new connection per request"),
            "baton": Side("baton", "Baton: the app's gateway, POST /admin/v1/deployment/switch"),
        }

        def counter(side: Side) -> Callable[[], Awaitable[None]]:
            async def count() -> None:
                await asyncio.sleep(0.3)
                side.max_nginx_processes = max(side.max_nginx_processes, ngx.processes())
            return count

        async def ngx_switch(target: str) -> None:
            await ngx.switch(ports[target])

        async def ngx_new(target: str) -> tuple[float | None, float | None, int, int]:
            return await asyncio.to_thread(probe_loop, ngx_url, "translator", NAMES[target], {})

        async def baton_switch(target: str) -> None:
            await baton.switch(NAMES[target])

        async def baton_new(target: str) -> tuple[float | None, float | None, int, int]:
            return await asyncio.to_thread(probe_loop, app_url, ALIAS, NAMES[target], user_auth)

        ov = Overhead()
        for rnd in range(args.rounds):
            for name, side in sides.items():
                print(f"round {rnd + 1}/{args.rounds}: {name} (load average {os.getloadavg()[0]:.1f})", flush=True)
                if name == "baton":
                    await baton.make_active(NAMES["a"])
                    await run_round(side, args, per_round, lambda i, n: stream_request(gw[i], ALIAS, phrase(i, n)),
                                    baton_switch, baton_new)
                else:
                    clients = keep if name == "nginx" else fresh
                    await ngx.switch(ports["a"])
                    await asyncio.sleep(1)
                    await run_round(side, args, per_round,
                                    lambda i, n, c=clients: stream_request(c[i], "translator", phrase(i, n)),
                                    ngx_switch, ngx_new, counter(side))
            # The overhead: bench-a active (the backend `direct` talks to), no switches.
            await baton.make_active(NAMES["a"])
            print(f"round {rnd + 1}/{args.rounds}: overhead, {args.pairs} pairs, then saturation", flush=True)
            await paired_ttft(ov, direct[0], NAMES["a"], gw[0], args.pairs)
            order = ["direct", "gateway", "gateway", "direct"]  # ABBA, then BAAB: drift falls on both
            if rnd % 2:
                order = order[1:3] + order[::3]
            for who in order:
                clients, model = (direct, NAMES["a"]) if who == "direct" else (gw[:args.sat_clients], ALIAS)
                await saturate(ov, who, clients, model, args, baton.app)
        for side in sides.values():
            for r in side.requests:  # the model field names the server; call it a or b
                r["version"] = {NAMES["a"]: "a", NAMES["b"]: "b"}.get(r["version"], r["version"])

    out: dict = {"command": " ".join(["python -m benchmarks.nginx_baseline", *sys.argv[1:]]),
                 "clients": args.clients, "switches_per_side": per_round * args.rounds, "rounds": args.rounds,
                 "switch_interval_s": args.interval, "max_tokens": bu.MAX_TOKENS,
                 "switch_probe": "a max_tokens=1 completion on a new connection, in a loop, until the answer's "
                                 "model names the new version (the same on every side)",
                 "backend_startup_s_four_in_parallel": round(startup, 1),
                 "load_average_1_5_15": {"start": load_start, "end": [round(x, 2) for x in os.getloadavg()]}}
    for name, side in sides.items():
        out[name] = analyse(side)
        print(name, json.dumps(out[name], indent=2), flush=True)
    out["overhead"] = {"pair_max_tokens": PAIR_MAX_TOKENS, "saturation_clients": args.sat_clients,
                       "saturation_seconds_per_round": args.sat_seconds, **analyse_overhead(ov)}
    print("overhead", json.dumps(out["overhead"], indent=2), flush=True)
    plot(list(sides.values()))
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--switches", type=int, default=40, help="switches per side, over all rounds")
    parser.add_argument("--rounds", type=int, default=2, help="the sides take turns this many times")
    parser.add_argument("--interval", type=float, default=3.0, help="seconds between switches")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before a round's first switch")
    parser.add_argument("--tail", type=float, default=3.0, help="seconds of load after a round's last switch")
    parser.add_argument("--pairs", type=int, default=150, help="paired TTFT requests per round")
    parser.add_argument("--sat-clients", type=int, default=12, help="clients for the throughput at saturation")
    parser.add_argument("--sat-seconds", type=float, default=15.0, help="measured seconds per saturation run")
    parser.add_argument("--sat-settle", type=float, default=2.0, help="seconds of load before the window opens")
    parser.add_argument("--startup-timeout", type=float, default=900)
    parser.add_argument("--work", help="directory for the models (kept, reused), app data, nginx prefix, logs")
    a = parser.parse_args()
    if a.switches < a.rounds or a.switches % a.rounds:
        parser.error("--switches must be a multiple of --rounds")
    result, left = bu.run_reaped(main(a))
    result["processes_left_behind"] = len(left)
    bu.merge_results("nginx", result)
    for k in ("nginx", "nginx_fresh", "baton"):
        print(f"{k:12s} {result[k]['requests']}, switch->new p50 {result[k]['switch_to_new_version_ms']['p50']} ms")
    o = result["overhead"]
    print(f"overhead: TTFT median {o['ttft_overhead_ms']['median']} ms, p99 {o['ttft_overhead_ms']['p99']} ms; "
          f"throughput ratio {o['throughput']['ratio_tokens']}")
