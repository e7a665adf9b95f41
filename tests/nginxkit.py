"""Run nginx from tests and benchmarks: its own prefix and main config in a temporary directory,
listening on 127.0.0.1, under engine/guard.py so that nothing outlives the run.

The caller gives what goes inside `http {}`: benchmarks/nginx_baseline.py its usual recipe,
tests/test_load_balancer.py the shipped docs/deploy/nginx.conf, rendered by `deploy_config` with
the test's ports.
"""
from __future__ import annotations

import contextlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests import chatkit as ck

ROOT = Path(__file__).resolve().parent.parent
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
GUARD = ROOT / "engine" / "guard.py"
DEPLOY_CONF = ROOT / "docs" / "deploy" / "nginx.conf"


def guarded(cmd: list[str], log: Path, env: dict[str, str] | None = None, nice: int = 0) -> subprocess.Popen:
    """Start `cmd` under engine/guard.py: in its own process group, which the guard kills when
    our end of its stdin closes, so even a SIGKILLed test or benchmark leaves no server behind."""
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, str(GUARD), "--nice", str(nice), *cmd], env=env,
                                stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


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


def deploy_config(upstreams: list[int], listen: int) -> str:
    """docs/deploy/nginx.conf as shipped, with the replicas' ports in `upstream baton` and nginx on
    127.0.0.1:`listen`. Each line replaced must be there exactly as shipped, so that an edit of
    the file fails here loudly instead of leaving the test on something else than what ships."""
    text = DEPLOY_CONF.read_text()
    servers = re.findall(r"^ *server 127\.0\.0\.1:\d+ ", text, re.M)
    if len(servers) != len(upstreams):
        raise AssertionError(f"{DEPLOY_CONF} lists {len(servers)} replicas, the test runs {len(upstreams)}")
    for line, port in zip(servers, upstreams, strict=True):
        text = text.replace(line, re.sub(r":\d+ $", f":{port} ", line), 1)
    text, n = re.subn(r"^( *)listen 80;$", rf"\1listen 127.0.0.1:{listen};", text, flags=re.M)
    if n != 1:
        raise AssertionError(f"{DEPLOY_CONF} has {n} `listen 80;` lines, expected one")
    return text


@dataclass(frozen=True)
class Logged:
    """A request in the access log of an Nginx with `log_requests`."""
    method: str
    path: str
    transport: str  # socket.io's ?transport= (polling, websocket), "-" elsewhere
    status: int
    upstream: str  # every replica nginx tried, comma-separated ("127.0.0.1:P1, 127.0.0.1:P2")

    @property
    def answered_by(self) -> str:
        """The replica that answered: the last one tried (earlier ones refused or were down)."""
        return self.upstream.rsplit(", ", 1)[-1]


class Nginx:
    """nginx with its own prefix and main config; `http_body` goes inside `http {}`. With
    `log_requests`, each request's upstream is logged (`requests()`); a benchmark leaves it off."""

    def __init__(self, prefix: Path, port: int, http_body: str, *, log_requests: bool = False) -> None:
        self.prefix, self.port = prefix, port
        for d in ("logs", "temp/body", "temp/proxy", "temp/fastcgi", "temp/uwsgi", "temp/scgi"):
            (prefix / d).mkdir(parents=True, exist_ok=True)
        # Workers run as an unprivileged user when nginx starts as root: let them into the prefix.
        for p in (prefix, *prefix.rglob("*")):
            if p.is_dir():
                p.chmod(0o777)
        prefix.parent.chmod(0o755)
        self.conf = prefix / "nginx.conf"
        self.access_log = prefix / "logs" / "access.log"
        log = (f"log_format upstream '$request_method $uri $arg_transport $status $upstream_addr';\n"
               f"    access_log {self.access_log} upstream;") if log_requests else "access_log off;"
        self.conf.write_text(f"""
daemon off;
worker_processes 1;
pid {prefix}/logs/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    {log}
    client_body_temp_path {prefix}/temp/body;
    proxy_temp_path {prefix}/temp/proxy;
    fastcgi_temp_path {prefix}/temp/fastcgi;
    uwsgi_temp_path {prefix}/temp/uwsgi;
    scgi_temp_path {prefix}/temp/scgi;
{http_body}
}}
""")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def base(self) -> list[str]:
        return [NGINX, "-p", str(self.prefix), "-c", str(self.conf), "-e", str(self.prefix / "logs" / "error.log")]

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
        raise RuntimeError(f"nginx did not start: {self.error_log()[-2000:]}")

    def reload(self) -> None:
        subprocess.run([*self.base(), "-s", "reload"], check=True)

    def error_log(self) -> str:
        path = self.prefix / "logs" / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def requests(self) -> list[Logged]:
        """Every request so far (logged when it ends: a websocket when it closes), oldest first."""
        if not self.access_log.exists():
            return []
        rows = []
        for line in self.access_log.read_text().splitlines():
            method, path, transport, status, upstream = line.split(" ", 4)
            rows.append(Logged(method, path, transport, int(status), upstream))
        return rows

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


@dataclass
class Balanced:
    """App replicas behind nginx running the shipped config."""
    nginx: Nginx
    apps: list[ck.App]

    def app_at(self, upstream: str) -> ck.App:
        """The replica behind an upstream address as nginx logs it ("127.0.0.1:PORT")."""
        return next(a for a in self.apps if upstream == f"127.0.0.1:{a.port}")


@contextlib.contextmanager
def balanced(envs: list[dict[str, str]], prefix: Path, *, admin: tuple[str, str]) -> Iterator[Balanced]:
    """One app replica per environment (launch_app: each env has its own BATON_DATA_DIR and port
    range, and whatever the replicas share: CHAINLIT_AUTH_SECRET, BATON_DATABASE_URL, ...), behind
    nginx on docs/deploy/nginx.conf, which logs each request's upstream."""
    apps: list[ck.App] = []
    nginx: Nginx | None = None
    try:
        for env in envs:
            apps.append(ck.launch_app(env, admin=admin))
        port = ck.free_port()
        nginx = Nginx(prefix, port, deploy_config([a.port for a in apps], port), log_requests=True)
        nginx.start()
        yield Balanced(nginx, apps)
    finally:
        if nginx is not None:
            nginx.stop()
        for app in apps:
            app.stop(timeout=60)
