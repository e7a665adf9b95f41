"""Print the API's OpenAPI schema (what /admin/v1/openapi.json serves) for docs/openapi.json:

    .venv/bin/python -m gateway.openapi > docs/openapi.json
"""
from __future__ import annotations

import json

from admin.config import ChatConfig
from admin.throttle import LoginThrottle

from . import build


async def _nowhere(*_: object) -> int:
    """The schema needs no audit."""
    return 0


async def _unchanged(*_: object) -> None:
    """Nor a change to one."""


def main() -> None:
    api = build(lambda: None, lambda: None, LoginThrottle.from_config(ChatConfig()), _nowhere, _unchanged)
    print(json.dumps(api.openapi(), indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
