"""The two demo versions: how they are built and registered (their recipe for the engine)."""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

from engine import Engine, Sampling

ROOT = Path(__file__).resolve().parent.parent
# Flags for a tiny model on a CPU machine (see ../shared/DESIGN.md: measured there).
CPU_FLAGS = ["--dtype", "float32", "--enforce-eager", "--max-model-len", "512"]


@dataclass(frozen=True)
class DemoVersion:
    name: str
    steps: int  # training steps: v1 is deliberately under-trained
    seed: int
    notes: str


DEMO_VERSIONS = (
    DemoVersion("demo-v1", steps=320, seed=0, notes="under-trained on the phrasebook: knows about half of it"),
    DemoVersion("demo-v2", steps=600, seed=0, notes="trained on the phrasebook (the better version)"),
)


async def build_if_missing(version: DemoVersion, models: Path, vllm_python: Path) -> bool:
    """Train the model once; later runs find it cached in the data directory."""
    out = models / version.name
    if (out / "baton-model.json").exists():
        return False
    proc = await asyncio.create_subprocess_exec(
        str(vllm_python), str(ROOT / "demo" / "build_model.py"),
        "--out", str(out), "--steps", str(version.steps), "--seed", str(version.seed),
    )
    if await proc.wait() != 0:
        raise SystemExit(f"building {version.name} failed (exit code {proc.returncode})")
    return True


async def register_demo_version(eng: Engine, name: str, path: Path, notes: str = "") -> None:
    meta = json.loads((path / "baton-model.json").read_text())
    await eng.register(
        name, path, flags=CPU_FLAGS, prompt_template=meta["prompt_template"],
        sampling=Sampling(temperature=0.0, max_tokens=64, stop=tuple(meta["stop"])),
        notes=notes, actor="make demo",
    )


async def prepare_versions(eng: Engine) -> None:
    """Build missing demo models, register both versions, make demo-v1 active on a fresh install."""
    models = eng.settings.model_roots[0]
    for v in DEMO_VERSIONS:
        if await build_if_missing(v, models, eng.settings.vllm_python):
            print(f"built {v.name} in {models / v.name}", flush=True)
    for v in DEMO_VERSIONS:
        if await eng.store.get_version(v.name) is None:
            await register_demo_version(eng, v.name, models / v.name, v.notes)
    if (await eng.store.get_deployment()).active is None:
        await eng.bootstrap(DEMO_VERSIONS[0].name, actor="make demo")

