"""/eval and the quality gate through the real app on the fake server: in the chat (progress bar,
reply table, refusals with both scores, --force in the audit, Stop), over the admin API with plain
httpx, and with the `baton` CLI as a subprocess.

The fake versions use the template "{text}": `good` echoes the text (chrF 100 on the identity set
`ident`), `bad` answers "bad says: <text>". The tests share one app and run in file order: the
first one loads the versions.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests import chatkit as ck

from .test_eval_fast import IDENTITY, write_set

ROOT = Path(__file__).resolve().parent.parent
ADMIN = ("root", "root-password-1")
SETS = "sets"  # BATON_EVAL_ROOTS, outside the data directory
ROWS = len(IDENTITY)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    d = tmp_path_factory.mktemp("baton-eval")
    ck.make_fake_model(d, "good", prefix="")
    ck.make_fake_model(d, "bad")
    # About a second per row: an evaluation to stop halfway.
    ck.make_fake_model(d, "slow", prefix="", token_delay_s=0.4)
    write_set(d / SETS, "ident")
    env = {**ck.fake_env(d), "BATON_PORT_MIN": "28100", "BATON_PORT_MAX": "28299",
           "BATON_EVAL_ROOTS": json.dumps([str(d / SETS)]), "BATON_GATE_SET": "ident"}
    with ck.running_app(env, admin=ADMIN) as app:
        yield app


@pytest.fixture(scope="module")
async def admin(app):
    async with ck.chatting(app.url, *ADMIN) as client:
        yield client


@pytest.fixture(scope="module")
async def http(app, admin):
    key = await ck.make_key(admin, "ci", "admin")
    async with httpx.AsyncClient(base_url=f"{app.url}/admin/v1", headers={"Authorization": f"Bearer {key}"},
                                 timeout=60) as client:
        client.key = key
        yield client


async def active(app) -> str | None:
    return (await ck.healthz(app.url))[1]["active"]


def chrf_of(reply: str) -> float:
    return float(re.search(r"chrF \*\*([\d.]+)\*\*", reply).group(1))


# ------------------------------------------------------------------------------------ the chat
async def test_eval_in_the_chat_then_the_gate_refuses_the_worse_version_with_both_scores(app, admin):
    for name in ("good", "bad", "slow"):
        mark = len(admin.order)
        assert f"Loading `{name}`" in await admin.reply(f'/load {name} {name} --template "{{text}}"')
        await admin.wait_message(rf"`{name}` is ready", after=mark)
    assert any(a["label"] == "Evaluate good" for a in admin.actions), "a loaded version offers its evaluation"
    assert "Switched: `bad`" in await admin.reply("/switch bad"), "the first version is not gated"

    refused = await admin.reply("/switch good")
    assert "**Refused:** The quality gate refuses good: it has no evaluation on 'ident'" in refused, refused
    assert "Run /eval good first" in refused and "--force" in refused
    assert await active(app) == "bad"

    mark = len(admin.order)
    msgs = await admin.ask("/eval good")
    bar, reply = msgs[0], msgs[-1].output
    assert bar.output.startswith("Evaluating `good` on `ident`: `" + "█" * 20 + "`"), bar.output
    assert f"{ROWS}/{ROWS} rows" in bar.output
    shown = [d["output"] for n, d in admin.events if n in ("new_message", "update_message") and d.get("id") == bar.id]
    counts = [int(re.search(r"(\d+)/\d+ rows", o).group(1)) for o in shown]
    assert counts == list(range(ROWS + 1)), "one message, updated in place as the rows finished"
    assert "**good** on `ident` (the gate set): chrF **100.0**" in reply, reply
    assert "| en → fr | 2 | 100.0 | 100.0 | 100% |" in reply and "| **overall** | 7 | 100.0 |" in reply, reply
    assert "The active version `bad` has no evaluation on `ident` to compare with" in reply

    bad = chrf_of(await admin.reply("/eval bad"))
    assert bad < 90
    beside = await admin.reply("/eval good ident")
    assert f"| chrF bad (active) | Δ chrF |" in beside and f"| **overall** | 7 | 100.0 | 100.0 | 100% | {bad:.1f} |" in beside

    assert "Switched: `good`" in await admin.reply("/switch good")
    worse = await admin.reply("/switch bad")
    assert f"The quality gate refuses bad: chrF {bad:.1f} on 'ident' against 100.0 for the active version good" \
           f", a drop of {100 - bad:.1f} points" in worse, worse
    assert await active(app) == "good"
    assert "Switched: `bad`" in await admin.reply("/switch bad --force")
    audit = await admin.reply("/audit 3")
    forced = next(line for line in audit.splitlines() if "| switch |" in line)
    assert '"force": true' in forced and "| ok | forced past the gate: The quality gate refuses bad" in forced, audit

    status = await admin.reply("/status")
    assert re.search(r"\| good \| ready \|.*\| 100\.0 \(ident\) \|", status), status
    assert re.search(rf"\| bad \| ready \|.*\| {bad:.1f} \(ident\) \|", status)
    listing = await admin.reply("/eval")
    assert "The gate set is `ident`" in listing and f"| ident (gate) | {ROWS} |" in listing, listing
    assert "| good | ident | 100.0 |" in listing and f"| bad | ident | {bad:.1f} |" in listing
    assert "Usage: `/eval [NAME [SET]]`" in await admin.reply("/eval a b c")
    assert "not a valid evaluation set name" in await admin.reply("/eval good ../ident")


async def test_stop_cancels_an_evaluation_and_stores_nothing(app, admin, http):
    mark = len(admin.order)
    await admin.send("/eval slow")
    bar = await admin.wait_message(r"Evaluating `slow` on `ident`: `█", timeout=30, after=mark)
    await admin.stop()
    await admin.wait_for(lambda: "Stopped: nothing was stored." in bar.output, 10, "the bar to say it stopped")
    assert f"{ROWS}/{ROWS} rows" not in bar.output
    await admin.wait_for(lambda: not admin.busy, 10, "the task to end")
    assert (await http.get("/versions/slow/evaluations")).json() == []
    assert "| slow |" not in await admin.reply("/eval")


# ------------------------------------------------------------------------------------ the admin API
async def test_the_admin_api_evaluates_and_the_gate_answers_409(app, http):
    sets = (await http.get("/evaluation-sets")).json()
    assert [(s["name"], s["rows"], s["problem"]) for s in sets] == [("ident", ROWS, "")]

    made = await http.post("/versions/good/evaluations", json={})
    assert made.status_code == 201, made.text
    ev = made.json()
    assert (ev["version"], ev["set_name"], ev["rows"], ev["errors"]) == ("good", "ident", ROWS, 0)
    assert ev["overall"]["chrf"] == 100.0 and len(ev["set_checksum"]) == 64
    assert {(p["src_lang"], p["tgt_lang"]) for p in ev["pairs"]} == {(s, t) for s, t, _ in IDENTITY}
    listed = (await http.get("/versions/good/evaluations", params={"set": "ident", "n": 1})).json()
    assert [e["id"] for e in listed] == [ev["id"]]

    for path, body, status, words in [
        ("/versions/good/evaluations", {"set": "../ident"}, 400, "not a valid evaluation set name"),
        ("/versions/good/evaluations", {"set": "nope"}, 404, "No evaluation set named 'nope'"),
        ("/versions/ghost/evaluations", None, 404, "No version named 'ghost'"),
    ]:
        r = await http.post(path, json=body)
        assert r.status_code == status and words in r.json()["error"]["message"], r.text
    assert (await http.get("/versions/ghost/evaluations")).status_code == 404

    if await active(app) != "good":
        assert (await http.post("/deployment/switch", json={"name": "good"})).status_code == 200
    refused = await http.post("/deployment/switch", json={"name": "bad"})
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["type"] == "conflict_error" and error["code"] == "conflict"
    assert re.search(r"chrF [\d.]+ on 'ident' against 100\.0 for the active version good, a drop of", error["message"])
    assert await active(app) == "good"
    forced = await http.post("/deployment/switch", json={"name": "bad", "force": True})
    assert forced.status_code == 200 and forced.json()["active"] == "bad"
    audit = (await http.get("/audit", params={"n": 1})).json()[0]
    assert json.loads(audit["arguments"]) == {"name": "bad", "force": True}
    assert audit["actor"] == "key:ci" and audit["detail"].startswith("forced past the gate")

    # Promote is gated too: `bad` as canary beside `good`.
    assert (await http.post("/deployment/rollback")).json()["active"] == "good", "rollback is not gated"
    assert (await http.post("/deployment/canary", json={"name": "bad", "percent": 10})).status_code == 200
    assert (await http.post("/deployment/promote")).status_code == 409
    promoted = await http.post("/deployment/promote", json={"force": True})
    assert promoted.status_code == 200 and promoted.json()["active"] == "bad"


# ------------------------------------------------------------------------------------ the CLI
def test_the_cli_evaluates_and_a_gate_refusal_exits_1(app, http):
    def baton(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
        env.update(BATON_URL=app.url, BATON_API_KEY=http.key)
        return subprocess.run([sys.executable, "-m", "baton_cli", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=90)

    done = baton("eval", "good", "--set", "ident")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"good on ident: chrF 100.0 ({ROWS} rows, 0 errors")
    assert re.search(r"^en->fr\s+2\s+100\.0\s+100\.0\s+100%$", done.stdout, re.M), done.stdout
    assert json.loads(baton("eval", "bad", "--json").stdout)["set_name"] == "ident", "the gate set by default"
    missing = baton("eval", "good", "--set", "nope")
    assert missing.returncode == 1 and "No evaluation set named 'nope'" in missing.stderr

    status = json.loads(baton("status", "--json").stdout)["deployment"]
    if status["active"] != "good":
        assert baton("switch", "good").returncode == 0
    refused = baton("switch", "bad")
    assert refused.returncode == 1 and "HTTP 409" in refused.stderr and "against 100.0" in refused.stderr, refused
    forced = baton("switch", "bad", "--force")
    assert forced.returncode == 0 and "active bad" in forced.stdout, forced.stderr
    last = json.loads(baton("audit", "-n", "1", "--json").stdout)[0]
    assert json.loads(last["arguments"]) == {"name": "bad", "force": True}
