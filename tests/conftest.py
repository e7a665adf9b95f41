"""Shared fixtures: engines over the fake server (fast) and over real vLLM (slow, shared)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine import Engine, Settings

from . import pgkit

ROOT = Path(__file__).resolve().parent.parent
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"


def require(ok: bool, why: str) -> None:
    """For a real part a test needs (headless Chromium, the vLLM venv): under CI (`CI` set and not
    0/false/no) its absence fails the test, because a skip there would let `make test` pass without
    testing it; on a developer's machine it skips with the reason."""
    if ok:
        return
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{why} (CI is set, so this fails instead of skipping)", pytrace=False)
    pytest.skip(why, allow_module_level=True)


@pytest.fixture(scope="session", autouse=True)
def hermetic_settings(tmp_path_factory):
    """No developer setting reaches a test. engine.Settings and admin.config.ChatConfig read `.env`
    from the working directory and BATON_* from the environment: the session runs from an empty
    directory, without BATON_* variables. Its `tests` link keeps `python -m tests.fake_vllm` (how
    an in-process engine starts a fake backend) working from there. The app subprocesses get the
    same treatment from tests/chatkit.py (launch_app)."""
    cwd = tmp_path_factory.mktemp("cwd")
    (cwd / "tests").symlink_to(ROOT / "tests", target_is_directory=True)
    mp = pytest.MonkeyPatch()
    for name in [n for n in os.environ if n.startswith("BATON_")]:
        mp.delenv(name)
    mp.chdir(cwd)
    yield cwd
    mp.undo()


def fake_settings(data_dir: Path, **overrides) -> Settings:
    """Settings whose backends are tests/fake_vllm.py: start in well under a second."""
    values = dict(
        data_dir=data_dir,
        vllm_python=Path(sys.executable),
        server_module="tests.fake_vllm",
        startup_timeout_s=20,
        drain_timeout_s=10,
        stop_grace_s=3,
        restart_backoff_s=0.2,
        request_wait_s=5,
        health_interval_s=0.05,
        liveness_interval_s=0.2,
        liveness_timeout_s=1.0,
        first_token_timeout_s=5,
        between_tokens_timeout_s=2,
        port_min=19100,  # apart from the real-vLLM tests' ports, so both suites can run at once
        port_max=19999,
        # The fake servers are test machinery, not what is measured: niced, they would get the CPU
        # only after the test's own clients (and other work on a shared machine), and the tests'
        # throughput floors would measure that instead.
        backend_nice=0,
    )
    values.update(overrides)
    return Settings(**values)


def fake_model(settings: Settings, name: str, **knobs) -> Path:
    """A model directory the fake server accepts; knobs go to its fake.json."""
    path = settings.model_roots[0] / name
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text("{}")
    (path / "fake.json").write_text(json.dumps(knobs))
    return path


async def loaded_engine(settings: Settings, *models: tuple[str, dict], active: str | None = None) -> Engine:
    eng = Engine(settings)
    await eng.start()
    for name, knobs in models:
        await eng.register(name, fake_model(settings, name, **knobs))
        await eng.load(name)
    for name, _ in models:
        await eng.wait_loaded(name)
    if active:
        await eng.switch(active)
    return eng


@pytest.fixture
async def fake_engine(tmp_path):
    """v1 active, v2 standby, both ready on the fake server."""
    settings = fake_settings(tmp_path)
    eng = await loaded_engine(settings, ("v1", {}), ("v2", {}), active="v1")
    await eng.switch("v2")
    await eng.switch("v1")
    yield eng
    await eng.close()


# ---------------------------------------------------------------------------- Postgres

@pytest.fixture(scope="session")
def postgres():
    require(pgkit.installed(), "Debian's postgresql is not installed (make install-postgres)")
    with pgkit.temp_postgres() as pg:
        yield pg


# ---------------------------------------------------------------------------- real vLLM


def build_tiny_model(out: Path, seed: int) -> Path:
    """A random-initialised tiny Llama with its own tokenizer, built locally in seconds."""
    if not (out / "config.json").exists():
        subprocess.run(
            [str(VLLM_PYTHON), str(ROOT / "demo" / "build_model.py"), "--out", str(out), "--steps", "0", "--seed", str(seed)],
            check=True,
        )
    return out


VLLM_FLAGS = ["--dtype", "float32", "--enforce-eager", "--max-model-len", "512"]


def vllm_settings(data_dir: Path, **overrides) -> Settings:
    values = dict(data_dir=data_dir, startup_timeout_s=240, stop_grace_s=10, restart_backoff_s=0.5, request_wait_s=240)
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """Two tiny models under one models root, shared by every vLLM test."""
    root = tmp_path_factory.mktemp("vllm") / "models"
    for i, name in enumerate(("tiny-a", "tiny-b")):
        build_tiny_model(root / name, seed=i + 1)
    return root
