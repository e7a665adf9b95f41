"""The chat history keeps no secret typed in a command, whatever order its writes come in.

Chainlit writes a user's message in a background task, and our redaction (app.py `_redact`, from
`commands.redact`) rewrites it in another: whichever lands last would win, so a password could stay
in the history. Here every step and thread name is masked as it is written: a step whose text is
a command line with a secret in it (its output, with its popup command if any, or a run step's
input) is stored as `commands.redact` shows it.
"""
from __future__ import annotations

from typing import Any, cast

from chainlit.step import StepDict

from .chat_history import HistoryDataLayer
from .commands import Invocation, parse, redact


def _shown(text: object, command: object = None) -> str | None:
    """`text` as it may be kept, when it is a command line with a secret in it; None otherwise."""
    if not isinstance(text, str):
        return None
    inv = parse(text, command if isinstance(command, str) else None, is_admin=True)
    return redact(inv) if isinstance(inv, Invocation) else None


class MaskedHistory(HistoryDataLayer):
    async def create_step(self, step_dict: StepDict) -> None:
        masked: dict[str, Any] = dict(step_dict)
        if (output := _shown(masked.get("output"), masked.get("command"))) is not None:
            masked["output"] = output
        if (given := _shown(masked.get("input"))) is not None:
            masked["input"] = given
        await super().create_step(cast(StepDict, masked))

    async def update_thread(self, thread_id: str, name: str | None = None, user_id: str | None = None,
                            metadata: dict[str, Any] | None = None, tags: list[str] | None = None) -> None:
        await super().update_thread(thread_id, _shown(name) or name, user_id, metadata, tags)
