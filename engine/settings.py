"""One typed settings object, read once from the environment (BATON_*) and `.env`."""
from __future__ import annotations

import socket
import sys
from functools import cached_property
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from . import urls

ROOT = Path(__file__).resolve().parent.parent

# Flags an operator may pass to vLLM through /load. Anything that could point vLLM at
# another path, host or key (--host, --api-key, --download-dir, --chat-template...) is
# deliberately absent: the engine sets those itself.
DEFAULT_ALLOWED_FLAGS = [
    "--dtype",
    "--max-model-len",
    "--enforce-eager",
    "--gpu-memory-utilization",
    "--max-num-seqs",
    "--max-num-batched-tokens",
    "--tensor-parallel-size",
    "--quantization",
    "--kv-cache-dtype",
    "--seed",
    "--swap-space",
    "--block-size",
    "--enable-prefix-caching",
    "--no-enable-prefix-caching",
]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BATON_", env_file=".env", extra="ignore")

    data_dir: Path = ROOT / "data"
    database_url: str | None = None  # default: SQLite file in data_dir

    # Replicas on one Postgres database (engine/replicas.py). The id names this replica in /status
    # and must differ between replicas (the host name does, one replica per host or pod).
    replica_id: str = Field(default_factory=socket.gethostname, min_length=1, max_length=128)
    replica_heartbeat_s: float = Field(default=1.0, gt=0)
    replica_poll_s: float = Field(default=5.0, gt=0)  # a missed notification is caught up within this
    # False on a replica that must not start vLLM processes: with several replicas, versions are
    # remote (/load NAME --url), served by an engine built for clusters.
    run_local_versions: bool = True

    vllm_python: Path = ROOT / ".venv-vllm" / "bin" / "python"
    # Extra interpreters a version may name (two vLLM releases side by side).
    allowed_interpreters: list[Path] = Field(default_factory=list)
    server_module: str = "vllm.entrypoints.openai.api_server"
    # Environment given to every backend, tuned for small CPU machines (a GPU ignores it; a big
    # CPU box should raise both numbers). 1 GiB of KV cache. No thread pinning: vLLM's "auto"
    # pins every instance to the same cores, and a second version then could not start while
    # the first one served (stuck for minutes on 2 cores). One OpenMP thread per backend: with
    # two, their spin-waiting left the CPU to the kernel (94 % system time) while two versions
    # ran, and the same switch benchmark served 5x fewer requests.
    backend_env: dict[str, str] = Field(default_factory=lambda: {
        "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": "1"})
    # Variables of the app's environment a backend also gets, beyond engine/backend_env.py's
    # allow-list (names, or prefixes ending in `*`); the app's secrets never pass by default.
    backend_pass_env: list[str] = Field(default_factory=list)
    # Niceness of every backend process, added to the app's own (and given to its session's
    # autogroup: engine/guard.py). On a CPU-only box vLLM at 0 starves the app's event loop: a
    # switch under load took over a second at p99 against ~10 ms idle. At 10 the app wins the CPU
    # whenever it wants it and the backends get the rest (docs/BENCHMARKS.md, "Backend niceness").
    # A GPU box is unaffected: vLLM mostly waits on the GPU there.
    backend_nice: int = 10

    port_min: int = 18100
    port_max: int = 18999
    model_roots: list[Path] = Field(default_factory=list)  # default: data_dir/models
    allowed_flags: list[str] = Field(default_factory=lambda: list(DEFAULT_ALLOWED_FLAGS))
    # Remote versions (/load NAME --url URL): a URL must fall under one of these base URLs (JSON list;
    # empty: no remote version). Checked before any request is sent, against server-side request forgery.
    allowed_remote: list[str] = Field(default_factory=list)
    # The environment variables a remote version may read its API key from (by name; empty: none).
    remote_key_envs: list[str] = Field(default_factory=list)

    startup_timeout_s: float = 300.0
    health_interval_s: float = 0.5
    drain_timeout_s: float = 60.0
    stop_grace_s: float = 15.0
    restart_backoff_s: float = 1.0
    restart_backoff_max_s: float = 60.0
    request_wait_s: float = 30.0  # how long a request waits for a ready version
    # Liveness once ready: a /health probe every interval, answered within the timeout (a frozen
    # server keeps its port open; only a timeout notices it). A hang is noticed within about
    # interval + timeout.
    liveness_interval_s: float = 0.5
    liveness_timeout_s: float = 2.0
    liveness_failures: int = 1  # consecutive failed probes that make a backend unhealthy
    # Stall detection on each request: no first token, or no next token, within these.
    first_token_timeout_s: float = 60.0
    between_tokens_timeout_s: float = 10.0
    # Shadow copies running at once; a sampled request over the bound is skipped (and counted), so
    # a slow or hung shadow costs the serving versions nothing but what the bound allows.
    shadow_max_in_flight: int = Field(default=4, ge=1)
    request_attempts: int = 3  # an answer cut by a failing backend is translated again, whole
    log_max_bytes: int = 10_000_000  # per version; the older part is kept in NAME.log.1

    # Evaluation sets (/eval): NAME.tsv directly under one of these folders.
    eval_roots: list[Path] = Field(default_factory=list)  # default: data_dir/eval
    # Documents dropped into the chat: their size, and how many segments one may have.
    document_max_bytes: int = Field(default=2_000_000, ge=1_000)
    document_max_segments: int = Field(default=2_000, ge=1)
    # CPU-bound work (documents, scoring) runs on this many threads, off the event loop; one user's
    # jobs beyond cpu_per_user wait their turn (engine/cpu.py). One thread: parsing is Python code,
    # so a second one is no faster under the GIL, and the loop waits longer for it (measured).
    cpu_workers: int = Field(default=1, ge=1, le=64)
    cpu_per_user: int = Field(default=1, ge=1, le=64)
    eval_concurrency: int = Field(default=4, ge=1, le=64)  # rows of one evaluation translated at once
    # The quality gate: with a set named here, a switch or promote needs a current evaluation on it
    # and may lose at most gate_max_drop chrF points against the active version (engine/gate.py).
    gate_set: str | None = None
    gate_max_drop: float = Field(default=1.0, ge=0)

    # /rollout: the canary's steps (percent; 100 is the promote), and when a step is judged: after
    # step_s, or after step_requests canary answers if that comes first (0: by time only).
    rollout_steps: list[int] = Field(default_factory=lambda: [5, 25, 50, 100])
    rollout_step_s: float = 60.0
    rollout_step_requests: int = 0
    # What a step must show, on live traffic since it began, compared with the active version.
    rollout_min_requests: int = 10  # canary answers needed to judge; fewer and the step waits...
    rollout_step_max_s: float = 600.0  # ...this long at most, then the rollout aborts
    rollout_max_error_increase: float = 0.05  # canary error rate minus the active's
    rollout_max_ttft_ratio: float = 1.5  # canary first-token p95 over the active's...
    rollout_ttft_slack_ms: float = 100.0  # ...unless they differ by less than this
    rollout_max_thumbs_down_increase: float = 0.05  # thumbs down per answer, canary minus active
    rollout_max_wrong_language_increase: float = 0.05  # answers not in the target language, canary minus active
    rollout_min_shadow_agreement: float = 0.0  # chrF against the active's answers; 0: shown, not judged

    @field_validator("backend_nice")
    @classmethod
    def _nice_range(cls, v: int) -> int:
        if not 0 <= v <= 19:
            raise ValueError(f"BATON_BACKEND_NICE must be 0..19, not {v}: 19 is the lowest priority Linux has, and "
                             "a negative value (backends above the app) would need root")
        return v

    @field_validator("allowed_remote")
    @classmethod
    def _remote_bases(cls, v: list[str]) -> list[str]:
        out = []
        for raw in v:
            try:
                out.append(urls.parse(raw).text())
            except urls.BadUrl as exc:
                raise ValueError(f"BATON_ALLOWED_REMOTE: {raw[:200]!r} is not a base URL: {exc}") from None
        return out

    @model_validator(mode="after")
    def _defaults(self) -> Settings:
        self.data_dir = self.data_dir.resolve()
        if not self.model_roots:
            self.model_roots = [self.data_dir / "models"]
        self.model_roots = [p.resolve() for p in self.model_roots]
        self.eval_roots = [p.resolve() for p in self.eval_roots or [self.data_dir / "eval"]]
        self.gate_set = self.gate_set or None  # BATON_GATE_SET= (empty) turns the gate off
        if self.port_min > self.port_max:
            raise ValueError("BATON_PORT_MIN must not exceed BATON_PORT_MAX")
        return self

    @cached_property
    def db_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'baton.db'}"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def interpreters(self) -> list[Path]:
        return [self.vllm_python, *self.allowed_interpreters]

    @property
    def guard_python(self) -> str:
        return sys.executable
