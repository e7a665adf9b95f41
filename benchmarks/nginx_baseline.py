"""Side by side with the usual recipe: nginx in front of two vLLM servers, switched by rewriting
the upstream file and `nginx -s reload`, against Baton's engine over the same two model
directories, with the same streaming clients and the same number of switches.

    .venv/bin/python -m benchmarks.nginx_baseline [--clients 6] [--switches 24] [--interval 3]

Usual recipe: two `python -m vllm.entrypoints.openai.api_server` processes (127.0.0.1, each
`--served-model-name NAME translator`, so clients ask for "translator" and the answer's
`model` field says which one served), an nginx `upstream` in its own file, included by the
main config (proxy_buffering off, HTTP/1.1 keepalive to the upstream). A switch writes the
other server into the upstream file (atomic rename) and runs `nginx -s reload`.

The same recipe is run twice: with clients that keep their connections alive (what HTTP
client libraries, the OpenAI SDK included, do by default) and with a new connection per request.

Baton: engine.Engine in this process (as benchmarks/engine_bench.py), versions a and b on the
same model directories, flags and sampling; a switch is `await engine.switch(name)`.

All four backends are up at once, and the three contenders take turns (`--rounds`, each with
`--switches / --rounds` switches), so that a shared machine's noise falls on all of them alike.

Same load on every side: N clients, each streaming one completion after another (the same
prompt text, max_tokens 32, temperature 0), never waiting between requests. Per switch:
  - switch latency: from the start of the switch until a new request goes to the new version
    (nginx: GET /v1/models through nginx on a fresh connection, in a tight loop, until the
    listed model changes; Baton: the router's pick for a new conversation);
  - the streams in flight when the switch started, and what became of them;
  - requests that started after the switch had begun but were still served by the old version.
Every client is the OpenAI SDK (AsyncOpenAI, max_retries=0, as inside Baton's engine), so the
per-token client work is the same on every side. A request is complete when its stream ends
with a finish_reason; truncated when some text arrived but the stream ended without one;
failed otherwise.

Merges the numbers into benchmarks/results.json under "nginx"; draws docs/latency_nginx.png.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
from openai import AsyncOpenAI

from benchmarks import benchutil as bu
from engine import Engine, RouteInfo, Settings, TranslationRequest
from engine.translate import BackendFailed
from engine.types import DEFAULT_TEMPLATE

ROOT = bu.ROOT
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PLOT = ROOT / "docs" / "latency_nginx.png"
TARGET_LANG = "German"
NAMES = {"a": "bench-a", "b": "bench-b"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prompt(text: str) -> str:
    # What Baton's engine sends for a version with the default template and source "auto".
    return DEFAULT_TEMPLATE.format(source_lang="the detected language", target_lang=TARGET_LANG, text=text)


# processes ------------------------------------------------------------------------
GUARD = ROOT / "engine" / "guard.py"


def guarded(cmd: list[str], log: Path, env: dict[str, str] | None = None, nice: int = 0) -> subprocess.Popen:
    """Start `cmd` under engine/guard.py: in its own process group, which the guard kills when
    our end of its stdin closes, so even a SIGKILLed benchmark leaves no server behind."""
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, str(GUARD), "--nice", str(nice), *cmd], env=env,
                                stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


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


def stop_guarded(proc: subprocess.Popen, grace: float = 15) -> None:
    """SIGTERM (the guard forwards it to the server's group); after `grace`, close its stdin:
    the guard SIGKILLs the group and exits."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    if proc.stdin:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Nginx:
    """nginx with its own prefix and config in a temporary directory, listening on 127.0.0.1."""

    def __init__(self, prefix: Path, port: int, backend_port: int) -> None:
        self.prefix, self.port = prefix, port
        for d in ("logs", "temp/body", "temp/proxy", "temp/fastcgi", "temp/uwsgi", "temp/scgi"):
            (prefix / d).mkdir(parents=True, exist_ok=True)
        # Workers run as an unprivileged user when nginx starts as root: let them into the prefix.
        for p in (prefix, *prefix.rglob("*")):
            if p.is_dir():
                p.chmod(0o777)
        prefix.parent.chmod(0o755)
        self.conf = prefix / "nginx.conf"
        self.upstream = prefix / "upstream.conf"
        self.write_upstream(backend_port)
        self.conf.write_text(f"""
daemon off;
worker_processes 1;
pid {prefix}/logs/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/temp/body;
    proxy_temp_path {prefix}/temp/proxy;
    fastcgi_temp_path {prefix}/temp/fastcgi;
    uwsgi_temp_path {prefix}/temp/uwsgi;
    scgi_temp_path {prefix}/temp/scgi;
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
    }}
}}
""")
        self.proc: subprocess.Popen | None = None

    def base(self) -> list[str]:
        return [NGINX, "-p", str(self.prefix), "-c", str(self.conf), "-e", str(self.prefix / "logs" / "error.log")]

    def write_upstream(self, backend_port: int) -> None:
        tmp = self.upstream.with_suffix(".tmp")
        tmp.write_text(f"upstream translator {{\n    server 127.0.0.1:{backend_port};\n    keepalive 16;\n}}\n")
        os.replace(tmp, self.upstream)

    def start(self) -> None:
        subprocess.run([*self.base(), "-t", "-q"], check=True)
        self.proc = guarded(self.base(), self.prefix / "logs" / "guard.log")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"nginx did not start: {(self.prefix / 'logs' / 'error.log').read_text()[-2000:]}")

    async def switch(self, backend_port: int) -> None:
        """The usual recipe: point the upstream at the other server, `nginx -s reload`."""
        self.write_upstream(backend_port)
        p = await asyncio.create_subprocess_exec(*self.base(), "-s", "reload")
        if await p.wait() != 0:
            raise RuntimeError("nginx -s reload failed")

    def processes(self) -> int:
        """Processes of this nginx (master + workers, old workers still finishing their streams):
        the master leads the process group the guard made for it."""
        try:
            master = int((self.prefix / "logs" / "nginx.pid").read_text())
        except (OSError, ValueError):
            return 0
        n = 0
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) == master:
                        n += 1
        return n

    def stop(self) -> None:
        if self.proc is not None:
            stop_guarded(self.proc, grace=10)


# the load ---------------------------------------------------------------------------
async def nginx_request(client: AsyncOpenAI, text: str) -> dict:
    """One streamed completion through nginx with the OpenAI SDK, as Baton's engine does it (and
    with the same max_retries=0: a retry would hide a dropped request)."""
    rec = {"start": time.monotonic(), "end": None, "ttft": None, "version": None, "outcome": "failed", "detail": "",
           "tokens": 0}
    finish = ""
    try:
        stream = await client.completions.create(
            model="translator", prompt=prompt(text), max_tokens=bu.MAX_TOKENS, temperature=0, top_p=1.0, stream=True,
            stream_options={"include_usage": True})
        async with stream:
            async for chunk in stream:
                rec["version"] = chunk.model or rec["version"]
                for ch in chunk.choices:
                    if ch.text:
                        if rec["ttft"] is None:
                            rec["ttft"] = time.monotonic() - rec["start"]
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


async def baton_request(eng: Engine, conv: str, text: str) -> dict:
    rec = {"start": time.monotonic(), "end": None, "ttft": None, "version": None, "outcome": "failed", "detail": "",
           "tokens": 0}

    async def on_token(_t: str) -> None:
        if rec["ttft"] is None:
            rec["ttft"] = time.monotonic() - rec["start"]
        rec["tokens"] += 1

    async def on_route(route: RouteInfo) -> None:
        rec["version"] = route.version

    try:
        result = await eng.translate(TranslationRequest(text, TARGET_LANG, conversation_id=conv), on_token,
                                     on_route=on_route)
        rec["outcome"] = "ok" if result.finish_reason else "truncated"
        rec["served_by"] = result.served_by
        rec["retranslated"] = bool(result.retranslated)
    except BackendFailed as exc:
        rec["outcome"] = "truncated" if exc.partial else "failed"
        rec["detail"] = str(exc)[:200]
    except Exception as exc:  # noqa: BLE001 - counted; the benchmark goes on
        rec["detail"] = f"{type(exc).__name__}: {exc}"[:200]
    finally:
        rec["end"] = time.monotonic()
    return rec


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


async def run_round(side: Side, args: argparse.Namespace, n_switches: int, request, switch, wait_new,
                    after_switch=None) -> None:
    """N clients stream without pause; `n_switches` switches, `--interval` apart, b, a, b, ...
    `request(i, n)` -> a record; `switch(target)` switches; `wait_new(target)` -> (the time a
    new request first went to `target`, probes sent, probe errors)."""
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
            t_new, probes, errors = await wait_new(target)
            side.switches.append({"target": target, "t0": t0, "t": t0 - origin + side.clock, "cmd_s": t_cmd - t0,
                                  "new_s": None if t_new is None else t_new - t0, "probes": probes,
                                  "probe_errors": errors})
            if after_switch:
                await after_switch()
            target = "a" if target == "b" else "b"

    tasks = [asyncio.create_task(client(i)) for i in range(args.clients)] + [asyncio.create_task(operator())]
    done, pending = await asyncio.wait(tasks, timeout=t_end - time.monotonic() + 300)
    for t in pending:
        t.cancel()
    for t in done:
        if t.exception() is not None:
            raise t.exception()
    side.clock += time.monotonic() - origin


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
    cmd_ms = [s["cmd_s"] * 1000 for s in sws]
    windows = [(s["t0"], s["t0"] + min(s["new_s"] or 30.0, 30.0) + 2.0) for s in sws]
    near = [r["end"] - r["start"] for r in reqs if r["outcome"] == "ok"
            and any(r["start"] <= w1 and r["end"] >= w0 for w0, w1 in windows)]
    r2 = lambda v: round(v, 1)  # noqa: E731
    out = {
        "requests": {"started": len(reqs), "completed": count("ok"), "failed": count("failed"),
                     "truncated": count("truncated")},
        "switches": len(sws),
        "switch_to_new_version_ms": {"p50": r2(bu.pct(new_ms, 50)), "p99": r2(bu.pct(new_ms, 99)), "max": r2(max(new_ms))},
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
    for ax, side in zip(axes, sides):
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


async def main(args: argparse.Namespace) -> dict:
    work = Path(args.work or tempfile.mkdtemp(prefix="baton-nginx-")).resolve()
    bu.build_models(work / "models", list(NAMES.values()))
    per_round = args.switches // args.rounds
    async with contextlib.AsyncExitStack() as stack:
        # The usual recipe's two servers and Baton's two backends start together; the sides then
        # take turns (nginx, nginx without client keepalive, Baton; again), so that the noise of a
        # shared machine falls on all of them alike.
        ports = {"a": free_port(), "b": free_port()}
        procs: dict[str, tuple[subprocess.Popen, int]] = {}
        for v, port in ports.items():
            procs[v] = (start_vllm(work / "models" / NAMES[v], NAMES[v], port, work / f"vllm-{v}.log"), port)
            stack.callback(stop_guarded, procs[v][0])
        data = Path(tempfile.mkdtemp(prefix="engine-", dir=work))
        (data / "models").symlink_to(work / "models")
        eng = Engine(Settings(data_dir=data, startup_timeout_s=args.startup_timeout, request_wait_s=300,
                              port_min=args.port_min, port_max=args.port_min + 499))
        await eng.start()
        stack.push_async_callback(eng.close)
        for v, model in NAMES.items():
            await eng.register(v, model, flags=bu.FLAGS, sampling=bu.SAMPLING)
            await eng.load(v)
        t0 = time.monotonic()
        await asyncio.gather(asyncio.to_thread(wait_healthy, procs, args.startup_timeout),
                             eng.wait_loaded("a"), eng.wait_loaded("b"))
        startup = time.monotonic() - t0
        print(f"four backends ready in {startup:.0f} s", flush=True)
        ngx = Nginx(Path(tempfile.mkdtemp(prefix="nginx-", dir=work)), free_port(), ports["a"])
        ngx.start()
        stack.callback(ngx.stop)
        url = f"http://127.0.0.1:{ngx.port}"

        def sdk(keepalive: bool) -> AsyncOpenAI:
            limits = httpx.Limits() if keepalive else httpx.Limits(max_keepalive_connections=0)
            c = AsyncOpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=600,
                            http_client=httpx.AsyncClient(limits=limits, timeout=600))
            stack.push_async_callback(c.close)
            return c

        keep = [sdk(True) for _ in range(args.clients)]  # the SDK's default: connections kept alive
        fresh = [sdk(False) for _ in range(args.clients)]

        # Warm every backend (first requests allocate), outside the measurement.
        for v in ports:
            await ngx.switch(ports[v])
            await asyncio.sleep(0.5)
            await nginx_request(keep[0], "warm up")
        for v in ("b", "a"):
            await eng.switch(v)
            await baton_request(eng, "warm", "warm up")

        def probe_loop(target: str) -> tuple[float | None, int, int]:
            """In a thread, so that the streams' event loop does not delay it: GET /v1/models
            through nginx, each on a new connection (a new client), until the other model answers."""
            probes = errors = 0
            deadline = time.monotonic() + 30
            with httpx.Client(base_url=url, timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as probe:
                while time.monotonic() < deadline:
                    sent = time.monotonic()
                    probes += 1
                    try:
                        if probe.get("/v1/models").json()["data"][0]["id"] == NAMES[target]:
                            return sent, probes, errors
                    except (httpx.HTTPError, ValueError, KeyError, IndexError):
                        errors += 1
                    time.sleep(0.001)
            return None, probes, errors

        async def engine_new(target: str) -> tuple[float | None, int, int]:
            """The router's pick for a new conversation (what the next request gets), until `target`."""
            probes = 0
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                probes += 1
                route = eng.router.pick(f"probe-{time.monotonic_ns()}")
                if route is not None and route.backend.spec.name == target:
                    return time.monotonic(), probes, 0
                await asyncio.sleep(0.001)
            return None, probes, 0

        def phrase(i: int, n: int) -> str:
            return bu.PHRASES[(i + n) % len(bu.PHRASES)]

        sides = {
            "nginx": Side("nginx", "nginx: upstream rewrite + `nginx -s reload`, clients keep connections alive"),
            "nginx_fresh": Side("nginx_fresh", "the same, clients open a new connection per request"),
            "baton": Side("baton", "Baton: engine.switch()"),
        }

        def counter(side: Side):
            async def count() -> None:
                await asyncio.sleep(0.3)
                side.max_nginx_processes = max(side.max_nginx_processes, ngx.processes())
            return count

        for rnd in range(args.rounds):
            for name, side in sides.items():
                print(f"round {rnd + 1}/{args.rounds}: {name}", flush=True)
                if name == "baton":
                    if eng.router.deployment.active != "a":
                        await eng.switch("a")
                    await run_round(side, args, per_round, lambda i, n: baton_request(eng, f"r{rnd}-c{i}-{n}", phrase(i, n)),
                                    eng.switch, engine_new)
                else:
                    clients = keep if name == "nginx" else fresh
                    await ngx.switch(ports["a"])
                    await asyncio.sleep(1)
                    await run_round(side, args, per_round, lambda i, n, c=clients: nginx_request(c[i], phrase(i, n)),
                                    lambda target: ngx.switch(ports[target]),
                                    lambda target: asyncio.to_thread(probe_loop, target), counter(side))
        for side in sides.values():
            for r in side.requests:  # the model field names the server; call it by Baton's version name
                r["version"] = {NAMES["a"]: "a", NAMES["b"]: "b"}.get(r["version"], r["version"])

    out: dict = {"clients": args.clients, "switches_per_side": per_round * args.rounds, "rounds": args.rounds,
                 "switch_interval_s": args.interval, "max_tokens": bu.MAX_TOKENS,
                 "backend_startup_s_four_in_parallel": round(startup, 1)}
    for name, side in sides.items():
        out[name] = analyse(side)
        print(name, json.dumps(out[name], indent=2), flush=True)
    plot(list(sides.values()))
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--switches", type=int, default=24, help="switches per side, over all rounds")
    parser.add_argument("--rounds", type=int, default=2, help="the sides take turns this many times")
    parser.add_argument("--interval", type=float, default=3.0, help="seconds between switches")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before a round's first switch")
    parser.add_argument("--tail", type=float, default=3.0, help="seconds of load after a round's last switch")
    parser.add_argument("--startup-timeout", type=float, default=900)
    parser.add_argument("--port-min", type=int, default=26500, help="Baton's backend ports (127.0.0.1)")
    parser.add_argument("--work", help="directory for the models (kept, reused), nginx prefix, logs")
    a = parser.parse_args()
    if a.switches < a.rounds or a.switches % a.rounds:
        parser.error("--switches must be a multiple of --rounds")
    bu.exit_on_signals()
    tag = bu.new_tag()
    try:
        result = asyncio.run(main(a))
    finally:
        left = bu.reap(tag)
        print(f"processes left behind and reaped: {left or 'none'}", flush=True)
    result["processes_left_behind"] = len(left)
    bu.merge_results("nginx", result)
    for k in ("nginx", "nginx_fresh", "baton"):
        print(f"{k:12s} {result[k]['requests']}, switch->new p50 {result[k]['switch_to_new_version_ms']['p50']} ms")
