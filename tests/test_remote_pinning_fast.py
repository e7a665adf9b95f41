"""Issue 20 item 13: a remote version's URL is checked against BATON_ALLOWED_REMOTE (its host as a
name), its host is resolved then, and its requests go to those addresses only (DNS rebinding).

A rebinding DNS server is played by replacing socket.getaddrinfo in this process (what asyncio,
and so httpx, looks names up with) for the name `models.test`; `localhost` is resolved for real.
The "internal service" a rebinding would reach is a decoy fake server on 127.0.0.2, same port.
"""
from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from engine import InvalidArgument

from .test_engine_fast import translate
from .test_remote_fast import KEY, KEY_VAR, engine_with, load_remote, remote

NAME = "models.test"


class RebindingDns:
    """Answers `models.test` with `answer` (the test changes it); every other name for real."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.real = socket.getaddrinfo
        self.lookups: list[str] = []

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if (host.decode() if isinstance(host, bytes) else host) != NAME:  # anyio passes the name as IDNA bytes
            return self.real(host, port, *args, **kwargs)
        self.lookups.append(self.answer)
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (self.answer, int(port or 80)))]


@pytest.fixture
def dns(monkeypatch) -> RebindingDns:
    fake = RebindingDns("127.0.0.1")
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return fake


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv(KEY_VAR, KEY)


async def test_requests_go_to_the_address_checked_when_the_name_moves(tmp_path, dns, key):
    with remote(tmp_path / "real") as real, remote(tmp_path / "decoy", port=real.port, host="127.0.0.2") as decoy:
        url = f"http://{NAME}:{real.port}/v1"
        async with engine_with(tmp_path, url) as eng:
            await load_remote(eng, "r1", real, url=url)
            await eng.switch("r1")
            # The name now points at the internal service. New connections (concurrent requests need
            # several) must still go where the check said.
            dns.answer = "127.0.0.2"
            results = await asyncio.gather(*(translate(eng, conv=f"c{i}") for i in range(8)))
            assert all(r.version == "r1" and r.text.startswith("remote-m says:") for r in results)
            assert decoy.requests() == [], "a request followed the name to an address that was never checked"
            assert real.requests()


async def test_a_name_is_not_allowed_by_sharing_an_allowed_address(tmp_path, dns, key):
    """A listed address does not allow every name that resolves to it: on a shared server (a CDN,
    virtual hosts) that name, sent as Host and SNI, is another site, which would get the key."""
    with remote(tmp_path / "real") as real:
        allowed = f"http://127.0.0.1:{real.port}/v1"  # an address is listed, not the name
        async with engine_with(tmp_path, allowed) as eng:
            dns.answer = "127.0.0.1"
            with pytest.raises(InvalidArgument, match="is not under an allowed base URL"):
                await eng.register("r0", url=f"http://{NAME}:{real.port}/v1", served_name=real.served,
                                   api_key_env=KEY_VAR)
            await load_remote(eng, "r1", real, url=allowed)
            await eng.switch("r1")
            assert (await translate(eng)).text.startswith("remote-m says:")


async def test_localhost_is_resolved_for_real_and_served(tmp_path, key):
    with remote(tmp_path / "real") as real, pytest.raises(InvalidArgument, match="is not under an allowed base URL"):
        async with engine_with(tmp_path, f"http://127.0.0.2:{real.port}/v1") as eng:
            await eng.register("r0", url=f"http://localhost:{real.port}/v1", served_name=real.served,
                               api_key_env=KEY_VAR)
    with remote(tmp_path / "real2") as real:
        async with engine_with(tmp_path / "named", f"http://localhost:{real.port}/v1") as eng:
            await load_remote(eng, "r1", real, url=f"http://localhost:{real.port}/v1")
            await eng.switch("r1")
            assert (await translate(eng)).text.startswith("remote-m says:")
