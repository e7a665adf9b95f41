"""Files the chat keeps with its history: documents users drop in and their translations.

Chainlit names each file `USER_ID/ELEMENT_ID/NAME`, and NAME comes from the browser, so a key never
becomes a path: the file is stored under the SHA-256 of its key, with its media type beside it.
Only the user the key names may read it back.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StoredFile:
    data: bytes
    mime: str
    name: str  # the last part of its key, for the download


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _paths(self, key: str) -> tuple[Path, Path]:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self.root / digest, self.root / f"{digest}.json"

    async def put(self, key: str, data: bytes, mime: str) -> None:
        body, meta = self._paths(key)

        def write() -> None:
            self.root.mkdir(parents=True, exist_ok=True)
            body.write_bytes(data)
            meta.write_text(json.dumps({"key": key, "mime": mime}))

        await asyncio.to_thread(write)

    async def get(self, key: str, owner: str) -> StoredFile | None:
        """The file under `key` if `owner` (a Chainlit user id) is the user it belongs to."""
        if not owner or key.split("/", 1)[0] != owner:
            return None
        body, meta = self._paths(key)

        def read() -> StoredFile | None:
            if not body.is_file():
                return None
            info = json.loads(meta.read_text())
            return StoredFile(body.read_bytes(), str(info.get("mime") or "application/octet-stream"),
                              key.rsplit("/", 1)[-1])

        return await asyncio.to_thread(read)

    async def delete(self, key: str) -> bool:
        def remove() -> bool:
            found = False
            for path in self._paths(key):
                if path.is_file():
                    path.unlink()
                    found = True
            return found

        return await asyncio.to_thread(remove)

    async def delete_owned(self, owner: str) -> int:
        """Delete every file of the user `owner` (a Chainlit user id); how many there were."""
        def remove() -> int:
            if not owner or not self.root.is_dir():
                return 0
            count = 0
            for meta in self.root.glob("*.json"):
                key = str(json.loads(meta.read_text()).get("key") or "")
                if key.split("/", 1)[0] == owner:
                    meta.with_suffix("").unlink(missing_ok=True)
                    meta.unlink()
                    count += 1
            return count

        return await asyncio.to_thread(remove)
