"""The `baton` CLI against the real app on the fake vLLM server: each command runs as its own
process (`python -m baton_cli`), configured only by BATON_URL and BATON_API_KEY, the way a
deployment pipeline runs it; the exit codes are what such a pipeline branches on.

The tests share one app and run in file order: the first one loads the versions.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import chatkit as ck

ROOT = Path(__file__).resolve().parent.parent
ADMIN = ("root", "root-password-1")
OK, REFUSED, USAGE, UNREACHABLE, AUTH, TIMEOUT, FAILED = range(7)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("baton-cli")
    for name in ("v1", "v2"):
        ck.make_fake_model(data_dir, name)
    ck.make_fake_model(data_dir, "broken", exit_at_start=True)
    ck.make_fake_model(data_dir, "slow", startup_s=60)
    with ck.running_app({**ck.fake_env(data_dir), "BATON_PORT_MIN": "26000", "BATON_PORT_MAX": "26999"},
                        admin=ADMIN) as app:
        yield app


@pytest.fixture(scope="module")
async def keys(app) -> dict[str, str]:
    chat = await ck.connect(app.url, *ADMIN)
    try:
        return {"admin": await ck.make_key(chat, "ci", "admin"), "user": await ck.make_key(chat, "webui", "user")}
    finally:
        await chat.close()


@pytest.fixture(scope="module")
def baton(app, keys):
    """Run the CLI with the admin key (or `key`) and Baton's URL (or `url`) in its environment."""

    def run(*args: str, key: str | None = keys["admin"], url: str = app.url) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
        env["BATON_URL"] = url
        if key is not None:
            env["BATON_API_KEY"] = key
        return subprocess.run([sys.executable, "-m", "baton_cli", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=90)

    return run


def active(baton) -> str | None:
    done = baton("status", "--json")
    assert done.returncode == OK, done.stderr
    return json.loads(done.stdout)["deployment"]["active"]


def test_load_and_wait_ready(baton):
    loaded = baton("load", "v1", "v1", "--wait", "--timeout", "30")
    assert loaded.returncode == OK, loaded.stderr
    assert "v1 is ready" in loaded.stdout
    refused = baton("load", "v2", "v2", "--flag", "--trust-remote-code")
    assert refused.returncode == REFUSED and "is not allowed" in refused.stderr
    started = baton("load", "v2", "v2", "--flag", "--dtype float32", "--flag=--enforce-eager", "--json")
    assert started.returncode == OK, started.stderr
    assert json.loads(started.stdout)["name"] == "v2"
    ready = baton("wait-ready", "v2", "--timeout", "30", "--json")
    assert ready.returncode == OK, ready.stderr
    status = json.loads(ready.stdout)
    assert status["state"] == "ready"
    argv = Path(f"/proc/{status['pid']}/cmdline").read_bytes().split(b"\0")
    assert argv[-4:-1] == [b"--dtype", b"float32", b"--enforce-eager"]  # each --flag split like a shell would


def test_templates_per_capability(baton):
    wrong = baton("load", "v3", "v1", "--template-for", "sarcastic=Say {text}")
    assert wrong.returncode == REFUSED and "'sarcastic' is not a template capability" in wrong.stderr
    no_terms = baton("load", "v3", "v1", "--template-for", "terminology=Translate {text}")
    assert no_terms.returncode == REFUSED and "terminology template has no {terms} field" in no_terms.stderr
    usage = baton("load", "v3", "--template-for", "terminology=x")
    assert usage.returncode == USAGE and "MODEL_PATH" in usage.stderr
    ok = baton("load", "v3", "v1", "--template-for", "terminology=Terms: {terms}\n{text}", "--template-for",
               "term={source_term} means {target_term}", "--wait", "--timeout", "30")
    assert ok.returncode == OK, ok.stderr
    assert baton("unload", "v3").returncode == OK


def test_switch_and_rollback(baton):
    assert baton("switch", "v1").returncode == OK
    switched = baton("switch", "v2")
    assert switched.returncode == OK, switched.stderr
    assert "active v2" in switched.stdout and "standby v1" in switched.stdout
    assert active(baton) == "v2"
    rolled = baton("rollback", "--json")
    assert rolled.returncode == OK, rolled.stderr
    assert json.loads(rolled.stdout)["active"] == "v1"
    assert active(baton) == "v1"


def test_status_table_names_every_version(baton):
    shown = baton("status")
    assert shown.returncode == OK, shown.stderr
    assert shown.stdout.startswith("ok: active v1")
    rows = {line.split()[0]: line.split()[1:3] for line in shown.stdout.splitlines()[2:] if line}
    assert rows["v1"] == ["ready", "active"] and rows["v2"] == ["ready", "standby"]


def test_refusals_exit_1_with_the_reason_on_stderr(baton):
    unknown = baton("switch", "nope")
    assert unknown.returncode == REFUSED
    assert "HTTP 409" in unknown.stderr and "not loaded" in unknown.stderr and unknown.stdout == ""
    missing = baton("wait-ready", "nope", "--timeout", "5")
    assert missing.returncode == REFUSED and "No version named 'nope'" in missing.stderr
    assert active(baton) == "v1"  # nothing changed


def test_usage_errors_exit_2(baton):
    assert baton("canary", "v2", "150").returncode == USAGE
    assert baton("canary", "v2").returncode == USAGE  # a percent, or `canary abort`
    assert baton("nonsense").returncode == USAGE


def test_keys_and_addresses_that_cannot_work(baton, keys):
    user = baton("switch", "v2", key=keys["user"])
    assert user.returncode == AUTH and "user key" in user.stderr
    missing = baton("status", key=None)
    assert missing.returncode == AUTH and "BATON_API_KEY" in missing.stderr and "/keys add" in missing.stderr
    nobody = baton("status", url=f"http://127.0.0.1:{ck.free_port()}")
    assert nobody.returncode == UNREACHABLE and "Cannot reach Baton" in nobody.stderr
    assert keys["admin"] not in user.stderr + missing.stderr + nobody.stderr
    assert active(baton) == "v1"


def test_a_version_that_fails_to_start_exits_6(baton):
    failed = baton("load", "broken", "broken", "--wait", "--timeout", "30")
    assert failed.returncode == FAILED, failed.stderr
    assert "failed to start" in failed.stderr and "baton logs broken" in failed.stderr
    assert baton("wait-ready", "broken", "--timeout", "30").returncode == FAILED
    # Loaded again it is retried; the old failure is not taken for the new attempt's, nor waited out.
    again = baton("load", "broken", "--wait", "--timeout", "30")
    assert again.returncode == FAILED, again.stderr
    assert baton("unload", "broken").returncode == OK


def test_wait_ready_timeout_exits_5(baton):
    assert baton("load", "slow", "slow").returncode == OK
    late = baton("wait-ready", "slow", "--timeout", "1")
    assert late.returncode == TIMEOUT and "not ready after 1 s" in late.stderr
    assert baton("unload", "slow").returncode == OK


def test_canary_then_promote(baton):
    canary = baton("canary", "v2", "30")
    assert canary.returncode == OK and "canary v2 (30 %)" in canary.stdout
    assert baton("canary", "abort").returncode == OK
    assert baton("canary", "v2", "20").returncode == OK
    promoted = baton("promote", "--json")
    assert promoted.returncode == OK and json.loads(promoted.stdout)["active"] == "v2"


def test_keys_add_shows_the_secret_once_on_stdout(baton):
    added = baton("keys", "add", "pipeline", "--role", "user")
    assert added.returncode == OK, added.stderr
    assert ck.KEY_RE.fullmatch(added.stdout.strip()) and "only time" in added.stderr
    listed = baton("keys", "list", "--json")
    assert {k["name"]: k["role"] for k in json.loads(listed.stdout)} == {"ci": "admin", "webui": "user",
                                                                         "pipeline": "user"}
    assert added.stdout.strip() not in listed.stdout
    assert baton("keys", "revoke", "pipeline").returncode == OK
    assert baton("switch", "v1", key=added.stdout.strip()).returncode == AUTH


def test_logs_and_audit(baton):
    logs = baton("logs", "v1", "-n", "5", "--json")
    assert logs.returncode == OK and len(json.loads(logs.stdout)["lines"]) <= 5
    audit = baton("audit", "-n", "50", "--json")
    events = {(e["actor"], e["action"], e["outcome"]) for e in json.loads(audit.stdout)}
    assert {("key:ci", "switch", "ok"), ("key:ci", "rollback", "ok"), ("key:ci", "promote", "ok"),
            ("key:ci", "switch", "refused")} <= events
    only = baton("audit", "--action", "rollback", "--actor", "key:ci", "--json")
    assert {(e["actor"], e["action"]) for e in json.loads(only.stdout)} == {("key:ci", "rollback")}, only.stdout
    table = baton("audit", "-n", "3")
    assert table.stdout.splitlines()[0].split()[:3] == ["AT", "ACTOR", "ACTION"]
