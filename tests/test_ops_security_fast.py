"""Issue 20's operational holes, attacked through the real app on the fake vLLM server: what a backend
process inherits (item 12), who may read /metrics (item 11), and how a translated HTML file is served
(item 14).

One app for the module (the nginx test starts its own), started with secrets in its environment and
a metrics token; the tests run in file order (the first loads the version the others use).
"""
from __future__ import annotations

import os

import httpx
import pytest
from pydantic import SecretStr

from admin import endpoints
from tests import chatkit as ck
from tests import nginxkit

ADMIN = ("root", "root-password-1")
METRICS_TOKEN = "metrics-token-6d1e0c5b9a7f4e21"
REMOTE_KEY_VAR = "VLLM_REMOTE_KEY"  # a remote version's key variable, in a family backends otherwise get
SECRETS = {"CHAINLIT_AUTH_SECRET": "auth-secret-" + "x" * 40, REMOTE_KEY_VAR: "remote-secret-0b9c",
           "ACME_DB_PASSWORD": "db-secret-77"}
# What vLLM and its libraries read: these reach every backend.
NEEDED = {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "262144", "HF_HUB_OFFLINE": "1", "LANG": "C.UTF-8"}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    d = tmp_path_factory.mktemp("baton-ops")
    ck.make_fake_model(d, "v1", log_env=True, prefix="")
    env = {**ck.fake_env(d), "BATON_PORT_MIN": "32100", "BATON_PORT_MAX": "32199",
           "BATON_METRICS_TOKEN": METRICS_TOKEN, "BATON_REMOTE_KEY_ENVS": f'["{REMOTE_KEY_VAR}"]',
           "BATON_BACKEND_PASS_ENV": '["ACME_PUBLIC_*"]', "ACME_PUBLIC_REGION": "eu", **SECRETS, **NEEDED}
    with ck.running_app(env, admin=ADMIN) as app:
        yield app


@pytest.fixture(scope="module")
async def admin(app):
    async with ck.chatting(app.url, *ADMIN) as client:
        assert "Loading" in await client.reply('/load v1 v1 --template "{text}"')
        await client.wait_message(r"`v1` is ready", timeout=30)
        assert "Switched" in await client.reply("/switch v1")
        yield client


def backend_env_names(app: ck.App, version: str) -> set[str]:
    lines = [line for line in (app.data_dir / "logs" / f"{version}.log").read_text().splitlines()
             if line.startswith("env: ")]
    assert lines, "the fake backend logged its environment at start"
    return set(lines[-1].removeprefix("env: ").split())


# item 12 -----------------------------------------------------------------------------
async def test_a_backend_gets_none_of_the_apps_secrets_and_still_answers(app, admin):
    answer = (await admin.ask("Good morning everyone"))[-1]
    assert answer.translation.strip() == "Good morning everyone", answer.output
    names = backend_env_names(app, "v1")
    leaked = {"BATON_ADMIN_PASSWORD", "BATON_ADMIN_USER", "BATON_METRICS_TOKEN", *SECRETS} & names
    assert not leaked, f"the backend inherited {sorted(leaked)}"
    assert not [n for n in names - {"BATON_BACKEND_MARKER"} if n.startswith(("BATON_", "CHAINLIT_"))], sorted(names)
    # What vLLM needs still reaches it, with what Baton and the operator set.
    assert {*NEEDED, "PATH", "HOME", "VLLM_API_KEY", "BATON_BACKEND_MARKER", "VLLM_CPU_KVCACHE_SPACE",
            "OMP_NUM_THREADS", "ACME_PUBLIC_REGION"} <= names, sorted(names)


# item 11 -----------------------------------------------------------------------------
async def test_metrics_need_the_token_when_one_is_set(app, admin):
    async with httpx.AsyncClient(base_url=app.url) as http:
        missing = await http.get("/metrics")
        wrong = await http.get("/metrics", headers={"Authorization": "Bearer not-the-token-at-all"})
        right = await http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert missing.status_code == wrong.status_code == 401, (missing.text, wrong.text)
    assert "BATON_METRICS_TOKEN" in missing.text and "baton_" not in missing.text
    assert missing.headers["www-authenticate"] == "Bearer"
    assert right.status_code == 200 and "baton_" in right.text, right.text[:300]


def test_without_a_token_metrics_answer_loopback_clients_only():
    for host in ("127.0.0.1", "::1", "127.0.0.2"):
        assert endpoints.metrics_refusal(host, None, None) is None, host
    for host in ("10.0.0.7", "192.168.1.20", "2001:db8::1", None, "testclient"):
        refused = endpoints.metrics_refusal(host, None, None)
        assert refused is not None and refused.status_code == 403, host
    token = SecretStr(METRICS_TOKEN)
    refused = endpoints.metrics_refusal("127.0.0.1", None, token)  # with a token, loopback needs it too
    assert refused is not None and refused.status_code == 401
    assert endpoints.metrics_refusal("10.0.0.7", f"Bearer {METRICS_TOKEN}", token) is None


@pytest.mark.skipif(not os.path.exists(nginxkit.NGINX), reason="nginx is not installed")
def test_the_nginx_recipe_keeps_metrics_from_the_outside(tmp_path):
    """nginx reaches the app from loopback, which the app trusts when no token is set: the shipped
    recipe must refuse /metrics itself (the same replica twice stands in for the recipe's two)."""
    d = tmp_path / "data"
    with ck.running_app({**ck.fake_env(d), "BATON_PORT_MIN": "32200", "BATON_PORT_MAX": "32299"}) as app:
        port = ck.free_port()
        nginx = nginxkit.Nginx(tmp_path / "nginx", port, nginxkit.deploy_config([app.port, app.port], port))
        nginx.start()
        try:
            assert httpx.get(f"{app.url}/metrics").status_code == 200, "loopback, no token: Prometheus on the host"
            for path in ("/metrics", "/metrics?x=1", "/%6detrics", "//metrics"):
                assert httpx.get(f"{nginx.url}{path}").status_code in (403, 404), path
            assert httpx.get(f"{nginx.url}/healthz").status_code in (200, 503), "the rest still passes"
        finally:
            nginx.stop()


# item 14 -----------------------------------------------------------------------------
async def test_a_translated_html_file_is_downloaded_not_run_in_the_page(app, admin):
    page = b"<html><body><p>Hello there</p><script>fetch('/project/threads')</script></body></html>"
    ref = await admin.upload("page.html", page, "text/html")
    await admin.ask("", files=[ref])
    element = await admin.wait_for(lambda: next((e for e in admin.elements if e["name"] == "page.fr.html"), None),
                                   30, "the translated page")
    again = ck.ChatClient(app.url, admin.token, ADMIN[0])  # the history's copy, as a resumed thread offers it
    await again.connect(admin.thread_id)
    resumed = await again.wait_for(lambda: next((d for n, d in again.events if n == "resume_thread"), None), 10,
                                   "the resumed thread")
    await again.close()
    kept = next(e for e in resumed["elements"] if e["name"] == "page.fr.html")
    async with httpx.AsyncClient(base_url=app.url, cookies={"access_token": admin.token}) as http:
        live = await http.get(f"/project/file/{element['chainlitKey']}", params={"session_id": admin.session_id})
        stored = await http.get(kept["url"])
    for r in (live, stored):
        assert r.status_code == 200 and b"<script>" in r.content, r.text[:300]
        assert r.headers["content-disposition"].startswith("attachment"), r.headers
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["content-security-policy"] == "sandbox"
