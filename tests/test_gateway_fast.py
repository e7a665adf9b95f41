"""The gateway on the fake vLLM server: the real app in a subprocess, the official `openai` SDK as
the client, keys made in the chat, the admin API driven over HTTP.

The tests share one app and run in file order: the first one sees it with nothing loaded.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import time
from pathlib import Path

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from engine import Chunk
from engine.backend_http import Event
from engine.router import canary_bucket
from gateway.wire import ChunkWriter
from tests import chatkit as ck
from tests.chatkit import admin_http

ADMIN = ("root", "root-password-1")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("baton-gateway")
    # 7 tokens at 0.15 s: an answer is in flight for about a second, long enough to switch under it.
    ck.make_fake_model(d, "v1", token_delay_s=0.15)
    ck.make_fake_model(d, "v2", token_delay_s=0.15)
    return d


@pytest.fixture(scope="module")
def app(data_dir):
    env = {**ck.fake_env(data_dir), "BATON_PORT_MIN": "25000", "BATON_PORT_MAX": "25999",
           "BATON_RESTART_BACKOFF_S": "2", "BATON_LOGIN_SLOW_AFTER": "2", "BATON_LOGIN_LOCK_AFTER": "4",
           "BATON_LOGIN_DELAY_S": "0.2"}
    with ck.running_app(env, admin=ADMIN) as app:
        yield app


@pytest.fixture(scope="module")
async def chat(app):
    async with ck.chatting(app.url, *ADMIN) as client:
        yield client


@pytest.fixture(scope="module")
async def keys(chat) -> dict[str, str]:
    return {"admin": await ck.make_key(chat, "ci", "admin"), "user": await ck.make_key(chat, "webui", "user")}


@pytest.fixture(scope="module")
async def loaded(app, chat, keys):
    """v1 active and v2 standby, loaded through the admin API."""
    await ck.load_versions(app, keys["admin"], ("v1", "v2"), switches=("v2", "v1"))
    return keys


async def _state(http: httpx.AsyncClient, name: str) -> bool:
    return (await http.get(f"/versions/{name}")).json()["state"] == "ready"


def sdk(app: ck.App, key: str, **headers: str) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{app.url}/v1", api_key=key, max_retries=0, default_headers=headers or None)


# before any version is loaded ---------------------------------------------------------------------
async def test_no_version_ready_is_503_with_retry_after_in_openai_shape(app, keys):
    client = sdk(app, keys["user"])
    with pytest.raises(openai.APIStatusError) as caught:
        await client.completions.create(model="baton", prompt="Good morning")
    err = caught.value
    assert err.status_code == 503
    assert err.response.headers["Retry-After"].isdigit()
    assert "No version can answer right now" in err.message and "No version is active yet" in err.message


async def test_a_key_is_shown_once_and_the_history_keeps_it_masked(app, chat, keys):
    async def stored() -> list[str]:
        with sqlite3.connect(app.data_dir / "baton.db") as db:
            return [row[0] for row in db.execute("SELECT output FROM steps WHERE output LIKE '%Made the%key%'")]

    outputs = await ck.wait_until(lambda: _nonempty(stored), 10, "the key replies in the history")
    assert len(outputs) == 2
    assert not any(secret in out for out in outputs for secret in keys.values())
    assert all("shown once" in out for out in outputs)
    with sqlite3.connect(app.data_dir / "baton.db") as db:
        hashes = [row[0] for row in db.execute("SELECT key_hash FROM api_keys")]
    assert len(hashes) == 2 and not any(secret in h for h in hashes for secret in keys.values())


async def _nonempty(get):
    got = await get()
    return got if len(got) == 2 else None


# authentication ------------------------------------------------------------------------------------
async def test_no_key_and_a_wrong_key_are_refused_with_401(app, loaded):
    async with httpx.AsyncClient(base_url=app.url) as http:
        r = await http.get("/v1/models")
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "missing_api_key"
    with pytest.raises(openai.AuthenticationError) as caught:
        await sdk(app, "baton-not-a-real-key-at-all").models.list()
    assert "wrong or has been revoked" in caught.value.message


async def test_a_user_key_cannot_use_the_admin_api(app, loaded):
    async with admin_http(app, loaded["user"]) as http:
        r = await http.post("/deployment/switch", json={"name": "v2"})
    assert r.status_code == 403
    assert "user key" in r.json()["error"]["message"]
    async with admin_http(app, loaded["admin"]) as http:
        assert (await http.get("/deployment")).json()["active"] == "v1"  # nothing changed


# inference -----------------------------------------------------------------------------------------
async def test_completion_names_the_version_in_model_and_header(app, loaded):
    client = sdk(app, loaded["user"])
    raw = await client.completions.with_raw_response.create(model="baton", prompt="Good morning to you")
    completion = raw.parse()
    assert raw.headers["X-Baton-Version"] == "v1" == completion.model
    assert completion.choices[0].text == "v1 says: Good morning to you"
    assert completion.usage is not None and completion.usage.completion_tokens == 5


async def test_streamed_chat_completion_is_whole_and_attributed(app, loaded):
    client = sdk(app, loaded["user"])
    stream = await client.chat.completions.create(
        model="baton", messages=[{"role": "user", "content": "Where is the station?"}], stream=True,
        stream_options={"include_usage": True})
    text, models, finish, usage = [], set(), None, None
    async for chunk in stream:
        models.add(chunk.model)
        usage = chunk.usage or usage
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(text) == "v1 says: Where is the station?"
    assert models == {"v1"} and finish == "stop" and usage is not None


async def test_sampling_beyond_openai_ranges_is_400_and_unknown_model_404(app, loaded):
    client = sdk(app, loaded["user"])
    with pytest.raises(openai.BadRequestError) as bad:
        await client.completions.create(model="baton", prompt="Hi", temperature=5)
    assert "temperature" in bad.value.message
    with pytest.raises(openai.NotFoundError) as missing:
        await client.completions.create(model="gpt-4", prompt="Hi")
    assert "Ask for 'baton'" in missing.value.message
    with pytest.raises(openai.PermissionDeniedError):
        await client.completions.create(model="v2", prompt="Hi")  # a user key cannot pin a version


async def test_vllm_sampling_extensions_reach_the_backend(app, loaded):
    """ignore_eos and min_tokens (the fake pads its answer as vLLM goes on generating), with more of
    vLLM's fields alongside."""
    client = sdk(app, loaded["user"])
    long = await client.completions.create(model="baton", prompt="Hi", max_tokens=20,
                                           extra_body={"ignore_eos": True, "top_k": 5, "min_p": 0.1,
                                                       "repetition_penalty": 1.1, "stop_token_ids": [2]})
    assert long.usage is not None and long.usage.completion_tokens == 20
    assert long.choices[0].text.endswith(" on on on")
    text, models = [], set()
    stream = await client.chat.completions.create(model="baton", messages=[{"role": "user", "content": "Hi"}],
                                                  stream=True, extra_body={"min_tokens": 9})
    async for chunk in stream:
        models.add(chunk.model)
        text += [c.delta.content or "" for c in chunk.choices]
    assert "".join(text).split() == ["v1", "says:", "Hi"] + ["on"] * 7 and models == {"v1"}


async def test_an_unknown_or_malformed_field_is_400_naming_it(app, loaded):
    client = sdk(app, loaded["user"])
    with pytest.raises(openai.BadRequestError) as unknown:
        await client.completions.create(model="baton", prompt="Hi", extra_body={"frobnicate": 1})
    assert unknown.value.body["message"].startswith("Unrecognized request argument supplied: frobnicate")
    with pytest.raises(openai.BadRequestError) as chat:
        await client.chat.completions.create(model="baton", messages=[{"role": "user", "content": "Hi"}],
                                             extra_body={"guided_regex": "a+"})
    assert "Unrecognized request argument supplied: guided_regex" in chat.value.message
    with pytest.raises(openai.BadRequestError) as flood:
        await client.completions.create(model="baton", prompt="Hi", extra_body={"stop_token_ids": list(range(1000))})
    assert "stop_token_ids" in flood.value.message
    with pytest.raises(openai.BadRequestError) as wrong:
        await client.completions.create(model="baton", prompt="Hi", extra_body={"top_k": "many"})
    assert "top_k" in wrong.value.message


async def test_every_v1_answer_says_batons_own_overhead(app, loaded):
    """X-Baton-Overhead-Ms counts Baton's time only: a whole answer that takes the fake ~0.9 s, and a
    stream whose first text comes after 0.15 s, both report a few ms; refusals carry it too."""
    client = sdk(app, loaded["user"])
    started = time.perf_counter()
    whole = await client.completions.with_raw_response.create(model="baton", prompt="Good morning to you")
    took_ms = (time.perf_counter() - started) * 1000
    async with client.chat.completions.with_streaming_response.create(
            model="baton", messages=[{"role": "user", "content": "Hi"}], stream=True) as streamed:
        stream_ms = float(streamed.headers["X-Baton-Overhead-Ms"])
        [_ async for _ in await streamed.parse()]
    whole_ms = float(whole.headers["X-Baton-Overhead-Ms"])
    assert took_ms > 700 and 0 <= whole_ms < 50, (took_ms, whole_ms)
    assert 0 <= stream_ms < 50, stream_ms
    async with httpx.AsyncClient(base_url=app.url) as http:
        refused = await http.post("/v1/completions", json={"model": "baton", "prompt": "Hi"})
        text = (await http.get("/metrics")).text
    assert refused.status_code == 401 and float(refused.headers["X-Baton-Overhead-Ms"]) >= 0
    counted = re.search(r'baton_overhead_seconds_count\{route="/v1/chat/completions"\} (\d+)', text)
    assert counted and int(counted.group(1)) >= 1, "the overhead histogram is in /metrics, by route"
    assert 'baton_overhead_seconds_bucket{le="0.005",route="/v1/completions"}' in text


def test_a_relayed_chunk_keeps_the_backends_bytes_but_the_model():
    """vLLM's compact JSON goes out byte for byte but the model; a server writing JSON its own way
    (spaces, usage in every chunk) still gets the version's name, and no usage the client did not ask for."""
    def chunk(raw: bytes) -> Chunk:
        return Chunk("hi", None, Event(raw, json.loads(raw), 0.0))

    compact = b'{"id":"cmpl-1","object":"text_completion","created":1,"model":"served","choices":[{"index":0,"text":"\\"model\\":\\"served\\""}]}'
    out = ChunkWriter("v1", with_usage=False).encode(chunk(compact))
    assert out == b"data: " + compact.replace(b'"model":"served"', b'"model":"v1"', 1) + b"\n\n"
    assert json.loads(out[6:])["choices"][0]["text"] == '"model":"served"', "the text is never rewritten"
    spaced = b'{"id": "c", "model": "served", "choices": [{"index": 0, "text": "x"}], "usage": {"total_tokens": 3}}'
    again = json.loads(ChunkWriter("v1", with_usage=False).encode(chunk(spaced))[6:])
    assert again["model"] == "v1" and "usage" not in again and again["choices"][0]["text"] == "x"
    usage_only = b'{"id":"c","model":"served","choices":[],"usage":{"total_tokens":3}}'
    assert ChunkWriter("v1", with_usage=False).encode(chunk(usage_only)) is None
    assert json.loads(ChunkWriter("v1", with_usage=True).encode(chunk(usage_only))[6:])["model"] == "v1"


async def test_an_oversized_body_is_413(app, loaded):
    async with httpx.AsyncClient(base_url=app.url, headers={"Authorization": f"Bearer {loaded['user']}"}) as http:
        r = await http.post("/v1/completions", json={"model": "baton", "prompt": "x" * 1_100_000})
    assert r.status_code == 413
    assert "larger than" in r.json()["error"]["message"]


async def test_an_admin_key_may_address_a_version_directly(app, loaded):
    completion = await sdk(app, loaded["admin"]).completions.create(model="v2", prompt="Good night")
    assert completion.model == "v2" and completion.choices[0].text.startswith("v2 says:")
    models = await sdk(app, loaded["admin"]).models.list()
    assert {m.id for m in models.data} == {"baton", "v1", "v2"}
    user_models = await sdk(app, loaded["user"]).models.list()
    assert [m.id for m in user_models.data] == ["baton"]


async def test_translate_endpoint_uses_the_version_template(app, loaded):
    async with httpx.AsyncClient(base_url=app.url, headers={"Authorization": f"Bearer {loaded['user']}"}) as http:
        r = await http.post("/v1/translate", json={"text": ["Good morning", "Thank you"], "target_lang": "fr"})
        assert r.status_code == 200, r.text
        body = r.json()
        bad = await http.post("/v1/translate", json={"text": ["Hi"], "target_lang": "klingon"})
    # The fake answers with the prompt's last six words: the default template, filled in with the
    # detected source language, ends so.
    assert [t["text"] for t in body["translations"]] == ["v1 says: from English to French. Good morning",
                                                         "v1 says: from English to French. Thank you"]
    assert {t["version"] for t in body["translations"]} == {"v1"}
    assert body["target_lang"] == "fr" and body["translations"][0]["detected_source_lang"] == "en"
    assert 0 < body["translations"][0]["detected_confidence"] <= 1
    assert bad.status_code == 400 and "klingon" in bad.json()["error"]["message"]


# switches and faults under streaming clients ----------------------------------------------------
async def stream_text(client: AsyncOpenAI, i: int) -> tuple[str, set[str]]:
    stream = await client.completions.create(model="baton", prompt=f"request number {i} please", stream=True)
    text, models = [], set()
    async for chunk in stream:
        models.add(chunk.model)
        text.extend(c.text for c in chunk.choices)
    return "".join(text), models


async def test_switches_through_the_admin_api_drop_no_stream(app, loaded):
    client = sdk(app, loaded["user"])
    streams = [asyncio.create_task(stream_text(client, i)) for i in range(12)]
    async with admin_http(app, loaded["admin"]) as http:
        for target in ("v2", "v1", "v2"):
            await asyncio.sleep(0.3)
            r = await http.post("/deployment/switch", json={"name": target})
            assert r.status_code == 200 and r.json()["active"] == target
    results = await asyncio.gather(*streams)
    for i, (text, models) in enumerate(results):
        assert len(models) == 1, models  # one version per answer
        (version,) = models
        assert text == f"{version} says: request number {i} please"
    completion = await client.completions.create(model="baton", prompt="after the switches")
    assert completion.model == "v2"


async def test_a_canary_split_is_sticky_by_user_or_conversation_header(app, loaded):
    client = sdk(app, loaded["user"])
    async with admin_http(app, loaded["admin"]) as http:
        active = (await http.get("/deployment")).json()["active"]
        canary = "v1" if active == "v2" else "v2"
        assert (await http.post("/deployment/canary", json={"name": canary, "percent": 50})).status_code == 200
        try:
            for i in range(12):
                conversation = f"client-{i}"
                expected = canary if canary_bucket(conversation) < 50 else active
                by_user = await client.completions.create(model="baton", prompt="hello", user=conversation)
                header = sdk(app, loaded["user"], **{"X-Baton-Conversation": conversation})
                by_header = await header.completions.create(model="baton", prompt="hello")
                assert by_user.model == by_header.model == expected, (conversation, by_user.model, by_header.model)
        finally:
            assert (await http.delete("/deployment/canary")).json()["canary"] is None


async def test_admin_api_changes_are_audited_with_the_key_name(app, loaded):
    async with admin_http(app, loaded["admin"]) as http:
        r = await http.post("/deployment/rollback")
        assert r.status_code == 200 and r.json()["active"] == "v1"
        refused = await http.post("/deployment/switch", json={"name": "nope"})
        events = (await http.get("/audit", params={"n": 30})).json()
    assert refused.status_code == 409 and "not loaded" in refused.json()["error"]["message"]
    mine = [(e["actor"], e["action"], e["outcome"]) for e in events]
    assert ("key:ci", "rollback", "ok") in mine
    assert ("key:ci", "switch", "refused") in mine
    assert ("key:webui", "admin-api-denied", "refused") in mine


async def test_a_backend_killed_mid_answer(app, loaded):
    """Streamed: the text already sent cannot be taken back, so the stream ends with an error the
    SDK raises (never a second answer stitched on). Whole: the answer comes again, from v2."""
    client = sdk(app, loaded["user"])
    async with admin_http(app, loaded["admin"]) as http:
        pid = (await http.get("/versions/v1")).json()["pid"]
        stream = await client.completions.create(model="baton", prompt="one two three four five six", stream=True)
        first = await anext(aiter(stream))
        assert first.model == "v1"
        whole = asyncio.create_task(client.completions.create(model="baton", prompt="a whole answer please"))
        await asyncio.sleep(0.3)
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(openai.APIError) as cut:
            async for _ in stream:
                pass
        assert "Version v1 stopped answering" in str(cut.value)
        answer = await whole
        assert answer.model == "v2" and answer.choices[0].text == "v2 says: a whole answer please"
        await ck.wait_until(lambda: _state(http, "v1"), 30, "v1 restarted")


async def test_a_client_that_leaves_mid_stream_frees_its_backend(app, loaded):
    """Closing the stream cancels the request inside Baton, which closes the backend stream (vLLM
    aborts the generation): the lease is released, nothing keeps running for nobody."""
    client = sdk(app, loaded["user"])
    async with admin_http(app, loaded["admin"]) as http:
        active = (await http.get("/deployment")).json()["active"]
        stream = await client.completions.create(model="baton", prompt="one two three four five six", stream=True)
        await anext(aiter(stream))
        assert (await http.get(f"/versions/{active}")).json()["in_flight"] == 1
        await stream.close()

        async def idle() -> bool:
            return (await http.get(f"/versions/{active}")).json()["in_flight"] == 0

        await ck.wait_until(idle, 5, "the lease to be released")


async def test_revoked_key_is_refused_at_once(app, chat, loaded):
    temp = await ck.make_key(chat, "temp", "user")
    client = sdk(app, temp)
    assert (await client.models.list()).data
    assert "Revoked the key `temp`" in await chat.reply("/keys revoke temp")
    with pytest.raises(openai.AuthenticationError):
        await client.models.list()


async def test_metrics_carry_the_key_name(app, loaded):
    async with httpx.AsyncClient(base_url=app.url) as http:
        text = (await http.get("/metrics")).text
    assert re.search(r'baton_api_requests_total\{endpoint="/v1/completions",key="webui",status="200"\} [1-9]', text)
    assert loaded["user"] not in text


async def test_repeated_wrong_keys_are_slowed_then_refused_and_audited(app, loaded):
    """The app allows 4 wrong keys per address, slowing after 2 (by 0.2 s, doubling); the earlier
    tests already sent two from this address."""
    async with httpx.AsyncClient(base_url=app.url, timeout=30) as http:
        codes, took = [], []
        for i in range(5):
            t0 = time.perf_counter()
            r = await http.get("/v1/models", headers={"Authorization": f"Bearer baton-guess-{i:040d}"})
            codes.append(r.status_code)
            took.append(time.perf_counter() - t0)
        assert codes == [401, 401, 429, 429, 429], codes
        assert min(took[:2]) >= 0.2  # slowed before the lock
        assert "Try again in" in r.json()["error"]["message"] and int(r.headers["Retry-After"]) > 0
        # A valid key from the same address still works: it proves itself.
        ok = await http.get("/v1/models", headers={"Authorization": f"Bearer {loaded['user']}"})
        assert ok.status_code == 200
    async with admin_http(app, loaded["admin"]) as admin:
        events = (await admin.get("/audit", params={"n": 30})).json()
    actions = [e["action"] for e in events]
    assert actions.count("api-key-failed") >= 4 and "api-key-locked" in actions


async def test_the_published_openapi_schema_is_current(app):
    async with httpx.AsyncClient(base_url=app.url) as http:
        live = (await http.get("/admin/v1/openapi.json")).json()
    assert {"/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/translate", "/admin/v1/versions",
            "/admin/v1/deployment/switch", "/admin/v1/keys"} <= set(live["paths"])
    published = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert published == live, "docs/openapi.json is stale: .venv/bin/python -m gateway.openapi > docs/openapi.json"
