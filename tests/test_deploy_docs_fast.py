"""The deployment examples stay true: every BATON_* variable the Kubernetes example sets is one
Baton reads (a renamed setting would otherwise be silently ignored there), and the settings it
gives parse."""
from __future__ import annotations

import json
import re
from pathlib import Path

from admin.config import ChatConfig
from engine import Settings
from gateway.config import GatewayConfig

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "deploy" / "kubernetes.yaml"


def _env(text: str) -> dict[str, str | None]:
    """name -> literal value (None when it comes from a Secret or the pod)."""
    found: dict[str, str | None] = {}
    for m in re.finditer(r"- name: (\w+)[^\n]*\n\s+(value: (.*)|valueFrom:)", text):
        found[m.group(1)] = json.loads(m.group(3)) if m.group(3) and m.group(3).startswith('"') else (
            m.group(3).strip("'") if m.group(3) else None)
    return found


def test_the_kubernetes_example_sets_only_variables_baton_reads():
    env = _env(EXAMPLE.read_text())
    known = {f"BATON_{name.upper()}" for cls in (Settings, ChatConfig, GatewayConfig) for name in cls.model_fields}
    key_envs = json.loads(env["BATON_REMOTE_KEY_ENVS"] or "[]")
    baton = {name for name in env if name.startswith("BATON_")}
    assert baton - known - set(key_envs) == set(), baton - known
    assert "BATON_DATABASE_URL" in baton and env["BATON_RUN_LOCAL_VERSIONS"] == "false"
    allowed = json.loads(env["BATON_ALLOWED_REMOTE"] or "[]")
    settings = Settings(allowed_remote=allowed, remote_key_envs=key_envs, run_local_versions=False)
    assert settings.allowed_remote and settings.remote_key_envs == key_envs
    # The /load line in the example's comment names a URL the example allows and a key it lists.
    load = re.search(r"/load \S+ --url (\S+) --served-model \S+ --api-key-env (\S+)", EXAMPLE.read_text())
    assert load and any(load.group(1).startswith(base) for base in allowed) and load.group(2) in key_envs
