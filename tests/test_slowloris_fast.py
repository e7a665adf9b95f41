"""Issue 20 item 9, slowloris: half-sent requests on the real app (`chainlit run`, uvicorn's h11).

The app starts with a soft limit of 1,024 open files, as on the machine where 1,101 half-sent
requests made /healthz time out. Every connection here is on loopback, bounded in number and time.
"""
from __future__ import annotations

import asyncio
import contextlib
import resource
import time

import httpx
import pytest

from tests import chatkit as ck

HEADER_TIMEOUT_S = 6
MAX_CONNECTIONS = 1300
ATTACK = 1100  # more than the 1,024 files the app is started with
HALF_SENT = b"GET /healthz HTTP/1.1\r\nHost: baton\r\nX-Slow: "  # the headers never end


@contextlib.contextmanager
def open_files_soft_limit(limit: int):
    """Processes started in the body inherit this soft limit (the test's own is restored after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(limit, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    d = tmp_path_factory.mktemp("baton-slowloris")
    env = {**ck.fake_env(d), "BATON_PORT_MIN": "32300", "BATON_PORT_MAX": "32399",
           "BATON_HTTP_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S), "BATON_HTTP_MAX_CONNECTIONS": str(MAX_CONNECTIONS)}
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 2 * MAX_CONNECTIONS:
        pytest.skip(f"the hard open-files limit ({hard}) is too low for this test")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the attacker's own side
    with open_files_soft_limit(1024):
        app = ck.launch_app(env)
    try:
        yield app
    finally:
        app.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def half_sent(port: int, n: int) -> list[Conn]:
    async def one() -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(HALF_SENT)
        await writer.drain()
        return reader, writer
    return list(await asyncio.gather(*(one() for _ in range(n))))


async def answer_within(reader: asyncio.StreamReader, timeout: float) -> bytes | None:
    """What the server sends before it closes the connection; None if it is still open at the timeout."""
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    except TimeoutError:
        return None
    except ConnectionError:
        return b""


def close_all(conns: list[Conn]) -> None:
    for _, writer in conns:
        writer.close()


async def healthz_time(app: ck.App) -> float:
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=app.url, timeout=10) as http:
        r = await http.get("/healthz")
    assert r.status_code in (200, 503) and "status" in r.json(), r.text
    return time.monotonic() - started


async def test_half_sent_requests_do_not_starve_healthz_and_are_cut_off(app):
    conns = await half_sent(app.port, ATTACK)
    try:
        took = await healthz_time(app)
        assert took < 3, f"/healthz took {took:.1f} s while {ATTACK} half-sent requests were open"
        # Each is closed once its headers are late: within the timeout plus the time to accept them all.
        answers = await asyncio.gather(*(answer_within(r, HEADER_TIMEOUT_S + 10) for r, _ in conns))
        still_open = sum(a is None for a in answers)
        assert still_open == 0, f"{still_open} of {ATTACK} half-sent requests still open after the header timeout"
    finally:
        close_all(conns)
    assert await healthz_time(app) < 3


async def test_past_the_connection_cap_a_new_connection_gets_503_at_once(tmp_path):
    """On an app of its own with a small cap and a header timeout long enough that no connection is cut
    while the flood is still being accepted (on a busy CI box that took longer than 6 s, and the early
    connections were cut before the cap filled)."""
    cap, excess = 100, 40
    env = {**ck.fake_env(tmp_path), "BATON_PORT_MIN": "32400", "BATON_PORT_MAX": "32499",
           "BATON_HTTP_HEADER_TIMEOUT_S": "120", "BATON_HTTP_MAX_CONNECTIONS": str(cap)}
    with ck.running_app(env) as app:
        await flood_past_the_cap(app, cap, excess)


async def flood_past_the_cap(app: ck.App, cap: int, excess: int) -> None:
    conns = await half_sent(app.port, cap + excess)
    reads = [asyncio.ensure_future(r.read()) for r, _ in conns]
    try:
        # Those over the cap get 503 as soon as they are accepted; the others stay open, waiting.
        done: set[asyncio.Future[bytes]] = set()
        deadline = time.monotonic() + 60
        while len(done) < excess and time.monotonic() < deadline:
            done, _ = await asyncio.wait(reads, timeout=deadline - time.monotonic(),
                                         return_when=asyncio.FIRST_COMPLETED)
        answers = [f.result() if not f.exception() else b"" for f in done]
        busy = sum(a.startswith(b"HTTP/1.1 503") for a in answers)
        assert busy == len(answers) == excess, f"{busy} of {len(answers)} closed ones got 503 (expected {excess})"
    finally:
        for f in reads:
            f.cancel()
        close_all(conns)
    # Once they are gone, the server answers as before.
    await ck.wait_until(lambda: healthz_time(app), 20, "/healthz answered after the flood")


async def test_a_slow_but_steady_request_still_gets_its_answer(app):
    """The legitimate side: headers sent in pieces, each well within the timeout, are answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", app.port)
    try:
        for piece in (b"GET /healthz HTTP/1.1\r\n", b"Host: baton\r\n", b"Connection: close\r\n\r\n"):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(1)  # a slow client's pace, the behaviour under test (not a wait for state)
        answer = await answer_within(reader, 10)
        assert answer is not None and answer.startswith(b"HTTP/1.1 "), answer
    finally:
        writer.close()
