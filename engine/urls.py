"""Base URLs of remote servers: parsed strictly, compared by scheme, host, port and path prefix (the
addresses a host resolves to are checked and pinned in engine/remote_address.py, which needs I/O).

Only what can be judged from the text is accepted: http(s), a host, no user name or password, no
query or fragment, and a path of plain segments (no `.`/`..`, no percent-escapes, no backslash) so
that the path checked is the path the server will see. Pure functions, no I/O: a URL is judged
before anything is sent to it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL_CHARS = 2048
SEGMENT_RE = re.compile(r"^[A-Za-z0-9_~-][A-Za-z0-9._~-]*$")
DEFAULT_PORTS = {"http": 80, "https": 443}


class BadUrl(ValueError):
    """Why a text is not an acceptable base URL, in a sentence."""


@dataclass(frozen=True)
class BaseUrl:
    scheme: str
    host: str  # lower case; an IPv6 address without its brackets
    port: int  # the default port of the scheme when none was written
    path: str  # "" or "/a/b", without a trailing slash

    def text(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if DEFAULT_PORTS[self.scheme] == self.port else f":{self.port}"
        return f"{self.scheme}://{host}{port}{self.path}"

    def covers(self, other: BaseUrl) -> bool:
        """`other` is this URL or below it: same scheme, host and port, and a path equal to this one
        or under it on a `/` boundary (http://a/v1x is not under http://a/v1). Hosts are compared as
        names: a name that shares an allowed address may be another site on a shared server."""
        return ((self.scheme, self.host, self.port) == (other.scheme, other.host, other.port)
                and (other.path == self.path or other.path.startswith(self.path + "/")))

    def server_base(self) -> BaseUrl:
        """The server's base: a trailing /v1 dropped (requests go to BASE/v1/...)."""
        return BaseUrl(self.scheme, self.host, self.port, self.path.removesuffix("/v1"))

    def api(self) -> BaseUrl:
        """What every request to this server starts with: its base's /v1."""
        base = self.server_base()
        return BaseUrl(base.scheme, base.host, base.port, base.path + "/v1")


def parse(raw: str) -> BaseUrl:
    if not raw or len(raw) > MAX_URL_CHARS or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in raw):
        raise BadUrl("it is empty, too long, or has spaces or control characters")
    if "\\" in raw or "%" in raw:
        raise BadUrl("it has a backslash or a percent-escape")
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise BadUrl(f"it cannot be parsed ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise BadUrl("only http:// and https:// are allowed")
    if "@" in parts.netloc:
        raise BadUrl("it has a user name or password before the host (user@host)")
    if "?" in raw or "#" in raw:
        raise BadUrl("it has a query (?) or a fragment (#)")
    if not parts.hostname:
        raise BadUrl("it has no host")
    path = parts.path.rstrip("/")
    if path and not all(SEGMENT_RE.fullmatch(seg) and seg not in (".", "..") for seg in path[1:].split("/")):
        raise BadUrl("its path has empty, '.' or '..' segments or unusual characters")
    return BaseUrl(scheme, parts.hostname.lower(), port if port is not None else DEFAULT_PORTS[scheme], path)
