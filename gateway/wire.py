"""A streamed chunk as it goes out on /v1: the backend's own bytes, with only the `model` field
rewritten to the version's name, and the usage left out when the client did not ask for it.

vLLM writes compact JSON, so the rewrite is a bytes replacement of `"model":"<served name>"`; a
chunk in another layout (a remote server's spaced JSON) is serialized again from its parsed dict.
"""
from __future__ import annotations

import json
from typing import Any

from engine import Chunk

DONE = b"data: [DONE]\n\n"


def _field(name: str, value: str) -> bytes:
    return f'"{name}":{json.dumps(value, ensure_ascii=False)}'.encode()


class ChunkWriter:
    """Encodes one response's chunks for `version`; `with_usage` as the client's stream_options."""

    def __init__(self, version: str, with_usage: bool) -> None:
        self.version = version
        self.with_usage = with_usage
        self._model = _field("model", version)
        self._served: dict[str, bytes] = {}  # the backend's model name -> its field's bytes

    def encode(self, chunk: Chunk) -> bytes | None:
        """The SSE event, or None for the usage chunk the engine asked for and this client did not."""
        data, raw = chunk.event.data, chunk.event.raw
        if not data.get("choices") and not self.with_usage:
            return None
        served = data.get("model")
        if isinstance(served, str) and ("usage" not in data or self.with_usage):
            field = self._served.get(served)
            if field is None:
                field = self._served[served] = _field("model", served)
            if field in raw:
                return b"data: " + raw.replace(field, self._model, 1) + b"\n\n"
        return self._reencoded(dict(data))

    def _reencoded(self, data: dict[str, Any]) -> bytes:
        if not self.with_usage:
            data.pop("usage", None)
        data["model"] = self.version
        return b"data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
