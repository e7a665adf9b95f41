"""`make demo`, before the app starts: demo versions built and registered, logins ready.

    .venv/bin/python -m demo.prepare

Idempotent: a second run rebuilds nothing and only prints how to log in.
"""
from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path

from admin.accounts import Accounts
from admin.config import ChatConfig
from demo.versions import prepare_versions
from engine import Engine, Settings

DEMO_LOGINS = (("admin", "admin"), ("guest", "user"))


async def ensure_logins(accounts: Accounts, path: Path) -> None:
    """On a fresh install, an admin and a user with random passwords, kept in a 0600 file."""
    if ChatConfig().admin_user or path.exists() or await accounts.count_admins() > 0:
        return  # done before, or the operator chose the accounts
    lines = []
    for name, role in DEMO_LOGINS:
        password = secrets.token_urlsafe(9)
        await accounts.add(name, password, role, created_by="make demo")
        lines.append(f"  {role:5}  user {name}  password {password}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")


async def main() -> None:
    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    eng = Engine(settings)
    await eng.store.migrate()
    logins = settings.data_dir / "demo-logins.txt"
    try:
        await prepare_versions(eng)
        accounts = Accounts(eng.store.engine)
        await ensure_logins(accounts, logins)
    finally:
        await eng.store.close()
    print("\nBaton demo: open http://localhost:8000 and log in with")
    print(logins.read_text() if logins.exists() else "  the accounts you created (BATON_ADMIN_USER / /users add)\n")
    print(f"(kept in {logins}). As admin, try: /status, /load demo-v2, then /eval demo-v1 and /eval demo-v2")
    print("(switches are gated on demo/golden.tsv) and /switch demo-v2;")
    print("as guest, translate a phrase from demo/phrasebook.tsv, e.g. 'Good morning' to French.\n", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
