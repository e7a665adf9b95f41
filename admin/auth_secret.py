"""The secret that signs Chainlit's login tokens: given, or generated once and kept.

Kept in the data directory (mode 0600) so logins survive a restart; a new secret on every
start would log everybody out.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

ENV = "CHAINLIT_AUTH_SECRET"
FILENAME = "chainlit_auth_secret"


def ensure(data_dir: Path) -> str:
    """Put the secret in the environment, where Chainlit reads it. Runs once at import, before
    the event loop starts, so the blocking file access here is harmless."""
    if given := os.environ.get(ENV):
        return given
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / FILENAME
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        secret = ""
    if not secret:
        secret = secrets.token_urlsafe(48)
        # O_EXCL + 0600: never readable by others, even for an instant.
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(secret + "\n")
        os.replace(tmp, path)
    elif path.stat().st_mode & 0o077:
        path.chmod(0o600)  # someone loosened it; the secret lets anyone forge logins
    os.environ[ENV] = secret
    return secret
