"""Print the API's OpenAPI schema (what /admin/v1/openapi.json serves) for docs/openapi.json:

    .venv/bin/python -m gateway.openapi > docs/openapi.json
"""
from __future__ import annotations

import json

from admin.config import ChatConfig
from admin.throttle import LoginThrottle

from . import build


async def _nowhere(*_: object) -> None:
    """The schema needs no audit."""


def main() -> None:
    api = build(lambda: None, lambda: None, LoginThrottle.from_config(ChatConfig()), _nowhere)
    print(json.dumps(api.openapi(), indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
