"""Attack: a page of another origin acting with the user's cookie (issue 20, item 2), without a
browser: the same requests a page on another port would make, with the `Origin` a browser puts on
them. tests/test_chat_browser.py runs the attack from a real page in Chromium.

Both sides: another origin is refused (HTTP 403 that says what to do, the socket.io handshake
by long-polling and by websocket), while the app's own origin, an origin the operator allowed
(BATON_ALLOWED_ORIGINS, which also gets CORS headers) and clients that send no Origin (scripts,
the OpenAI SDK) go through.
"""
from __future__ import annotations

import pytest
import socketio
from httpx import AsyncClient

from admin.config import ChatConfig
from tests import chatkit as ck

ADMIN = ("root", "root-password-1")
TRUSTED = "https://chat.example.com"
THREADS = {"pagination": {"first": 50}, "filter": {}}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    d = tmp_path_factory.mktemp("baton-origins")
    with ck.running_app({**ck.fake_env(d), "BATON_ALLOWED_ORIGINS": f'["{TRUSTED}"]'}, admin=ADMIN) as app:
        yield app


@pytest.fixture(scope="module")
async def token(app):
    return await ck.login(app.url, *ADMIN)


async def _threads(app: ck.App, token: str, origin: str | None) -> tuple[int, dict, str | None]:
    headers = {"Origin": origin} if origin else {}
    async with AsyncClient(base_url=app.url, cookies={"access_token": token}, headers=headers) as http:
        r = await http.post("/project/threads", json=THREADS)
        return r.status_code, r.json(), r.headers.get("access-control-allow-origin")


async def test_another_origin_is_refused_over_http_with_what_to_do(app, token):
    other = f"http://127.0.0.1:{app.port + 1}"
    code, body, cors = await _threads(app, token, other)
    assert code == 403 and cors is None
    assert other in body["detail"] and "BATON_ALLOWED_ORIGINS" in body["detail"]
    for origin in ("null", "http://localhost.evil.example", "file://"):
        assert (await _threads(app, token, origin))[0] == 403, origin


async def test_the_apps_own_origin_an_allowed_one_and_no_origin_pass(app, token):
    assert (await _threads(app, token, app.url))[0] == 200
    assert (await _threads(app, token, None))[0] == 200
    code, _, cors = await _threads(app, token, TRUSTED)
    assert code == 200 and cors == TRUSTED


async def test_a_socket_from_another_origin_is_refused_and_from_its_own_opens(app, token):
    other = f"http://127.0.0.1:{app.port + 1}"
    # Long-polling: the engine.io handshake, as a page's fetch sends it.
    async with AsyncClient(base_url=app.url, cookies={"access_token": token}) as http:
        for origin, code in ((other, 403), (app.url, 200)):
            r = await http.get("/ws/socket.io/", params={"EIO": "4", "transport": "polling"}, headers={"Origin": origin})
            assert r.status_code == code, (origin, r.text)
        assert r.text.startswith("0{")  # the handshake's open packet, for the app's own page

    # A websocket, which CORS does not cover: the handshake itself is refused.
    async def connect(origin: str) -> ck.ChatClient:
        client = ck.ChatClient(app.url, token, ADMIN[0])
        await client.sio.connect(app.url, socketio_path="/ws/socket.io", transports=["websocket"], wait_timeout=10,
                                 headers={"Cookie": f"access_token={token}", "Origin": origin},
                                 auth={"sessionId": client.session_id, "clientType": "webapp", "userEnv": "{}",
                                       "chatProfile": "", "threadId": ""})
        return client

    with pytest.raises(socketio.exceptions.ConnectionError):
        await connect(other)
    own = await connect(app.url)
    try:
        assert own.sio.connected
    finally:
        await own.sio.disconnect()


def test_a_setting_that_is_not_an_origin_is_refused_with_an_example():
    with pytest.raises(ValueError, match="is not an origin: write scheme://host"):
        ChatConfig(allowed_origins=["chat.example.com/path"])
    assert ChatConfig(allowed_origins=["https://chat.example.com/"]).allowed_origins == [TRUSTED]


async def test_the_login_cookie_is_strict_and_out_of_scripts_reach(app):
    async with AsyncClient(base_url=app.url) as http:
        r = await http.post("/login", data={"username": ADMIN[0], "password": ADMIN[1]})
    cookie = r.headers["set-cookie"].lower()
    assert "access_token=" in cookie and "samesite=strict" in cookie and "httponly" in cookie, cookie
