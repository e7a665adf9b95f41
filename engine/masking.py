"""Credentials typed into a command line, masked before the line is kept (history, audit, logs).

Two shapes are recognised: a URL with a user name or password before its host
(`http://user:pass@host` -> `http://***@host`), and the value of an option whose name says it is a
secret (`--api-key X`, `--hf-token=X`, `--password X`; not `--api-key-env NAME`, which names a
variable, nor `--max-tokens N`). Option values are found after `=`, a space, or a JSON list's
`", "` (the audit stores arguments as JSON).
"""
from __future__ import annotations

import re

MASK = "***"
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/'\"]*@")  # to the last @ before the path
_OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z][A-Za-z0-9_-]*)(=|\s+|\"\s*,\s*\")(?!-)(\"[^\"]*\"|'[^']*'|[^\s\"']+)")
_SECRET_WORDS = frozenset({"key", "apikey", "token", "secret", "password", "passwd", "pwd", "credential",
                           "credentials", "auth"})


def _secret_option(name: str) -> bool:
    words = re.split(r"[-_]+", name.strip("-").lower())
    return words[-1] != "env" and not _SECRET_WORDS.isdisjoint(words)


def mask(text: str) -> str:
    """`text` with the credentials in it replaced by ***."""
    text = _USERINFO.sub(rf"\1{MASK}@", text)
    return _OPTION.sub(lambda m: f"{m[1]}{m[2]}{MASK}" if _secret_option(m[1]) else m[0], text)
