"""Where a remote version's requests really go: its host resolved when its URL is checked against
BATON_ALLOWED_REMOTE, and each connection made to an address resolved then.

engine/urls.py judges a URL's text. A name can resolve elsewhere the next time it is looked up
(DNS rebinding: an allowed name that answers the allowed server when it is checked and 127.0.0.1 or
a cloud metadata address a moment later), so each start of a remote version resolves its host once
and pins its HTTP clients to those addresses until the next start: every connection goes to an
address that was looked up when the URL was checked. The request still names the host: the Host
header, TLS's SNI and the certificate check are for the name.
"""
from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult

from . import urls
from .errors import InvalidArgument

RESOLVE_TIMEOUT_S = 5.0
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressRefused(ValueError):
    """Why a remote server's address may not be used, in a sentence."""


async def _resolve(host: str, port: int) -> set[Address]:
    """An address literal as itself; a name resolved (within RESOLVE_TIMEOUT_S)."""
    try:
        return {_address(host)}
    except ValueError:
        pass
    try:
        infos = await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM),
                                       RESOLVE_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        raise AddressRefused(f"its host {host} could not be resolved ({exc or 'timed out'})") from None
    if not infos:
        raise AddressRefused(f"its host {host} resolves to no address")
    return {_address(str(info[4][0])) for info in infos}


def _address(text: str) -> Address:
    found = ipaddress.ip_address(text.split("%", 1)[0])  # an IPv6 zone (fe80::1%eth0) is not part of it
    return getattr(found, "ipv4_mapped", None) or found


async def checked_addresses(url_text: str, allowed: Iterable[str]) -> list[str]:
    """The addresses `url_text`'s host resolves to now, once its text is under a base URL of
    `allowed` (same scheme, host, port and path prefix: an address shared by several sites does not
    allow every name that resolves to it). The version's clients connect to these only."""
    url = urls.parse(url_text)
    if not any(base.covers(url.api()) for base in map(urls.parse, allowed)):
        raise AddressRefused(f"{url.host} is not the host of an allowed base URL")
    return [str(a) for a in sorted(await _resolve(url.host, url.port), key=lambda a: (a.version, int(a)))]


async def refuse_unallowed(url_text: str, shown: str, allowed: list[str]) -> None:
    """A registration's check (the start checks again, and pins the addresses)."""
    try:
        await checked_addresses(url_text, allowed)
    except AddressRefused as exc:
        raise InvalidArgument(f"The URL {shown} cannot be used: {exc}.",
                              f"Use a URL under {', '.join(allowed)} whose host resolves "
                              "(or add its base to BATON_ALLOWED_REMOTE).") from None


class Pin:
    """The addresses checked at a remote version's start; its clients connect to these only."""

    def __init__(self) -> None:
        self.addresses: list[str] = []


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend connecting to the pin's addresses instead of looking the host up."""

    def __init__(self, pin: Pin) -> None:
        self.pin = pin
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        if not self.pin.addresses:
            raise httpcore.ConnectError(f"{host} has no checked address yet (the version is not started)")
        last: Exception | None = None
        for address in self.pin.addresses:  # the checked addresses, never a fresh lookup of `host`
            try:
                return await self.inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("a remote version is reached over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def _pinned_transport(pin: Pin) -> httpx.AsyncHTTPTransport:
    """httpx's transport with its pool replaced by httpcore's pool on the pinned backend: httpx takes
    no network backend of its own."""
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
    transport = httpx.AsyncHTTPTransport(limits=limits)
    transport._pool = httpcore.AsyncConnectionPool(  # noqa: SLF001
        ssl_context=httpx.create_ssl_context(), max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections, keepalive_expiry=limits.keepalive_expiry,
        network_backend=_PinnedBackend(pin))
    return transport


def prober_options(pin: Pin) -> dict[str, Any]:
    """httpx client options for a remote server's prober: the pinned transport, no environment proxy
    (a proxy would look the name up again), no redirects (the checked URL is the only destination)."""
    return {"transport": _pinned_transport(pin), "trust_env": False, "follow_redirects": False}


class PinnedResolver(AbstractResolver):
    """aiohttp's resolver for a remote version's streaming client (engine/backend_http.py): the
    pin's addresses, never a fresh lookup. The connection still names the host (Host, SNI, the
    certificate check)."""

    def __init__(self, pin: Pin) -> None:
        self.pin = pin

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        if not self.pin.addresses:
            raise OSError(f"{host} has no checked address yet (the version is not started)")
        return [ResolveResult(hostname=host, host=a, port=port, proto=0, flags=socket.AI_NUMERICHOST,
                              family=socket.AF_INET6 if ":" in a else socket.AF_INET) for a in self.pin.addresses]

    async def close(self) -> None:
        """Nothing to release."""
