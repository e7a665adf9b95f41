"""Plain data passed across the engine's seams."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0
    top_p: float = 1.0
    # None: up to what the backend's context leaves after the prompt. A fixed default would be
    # refused outright by any version started with a smaller --max-model-len.
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()  # the model's own end-of-sequence token ends an answer


WrongLanguagePolicy = Literal["flag", "retranslate"]
WRONG_LANGUAGE_POLICIES: tuple[WrongLanguagePolicy, ...] = ("flag", "retranslate")
DEFAULT_TEMPLATE = "Translate the following text from {source_lang} to {target_lang}.\n{text}\n"


@dataclass(frozen=True)
class VersionSpec:
    """Everything needed to start a version again: a version's row is its recipe. A remote version
    (`url` set) is served by a server Baton neither starts nor stops: it has no model path."""

    name: str
    model_path: Path | None
    served_name: str
    flags: tuple[str, ...] = ()
    interpreter: Path | None = None
    prompt_template: str = DEFAULT_TEMPLATE  # the plain one
    # More templates by capability (engine.templates: terminology, contextual, formatted, term)
    templates: Mapping[str, str] = field(default_factory=dict)
    sampling: Sampling = field(default_factory=Sampling)
    notes: str = ""
    created_by: str = ""
    created_at: datetime | None = None
    url: str | None = None  # a remote version's server base URL (under BATON_ALLOWED_REMOTE)
    api_key_env: str | None = None  # the environment variable holding its API key (never the key)
    # An answer that does not read as the target language (engine/checks.py): shown with a warning
    # ("flag"), or translated again once by another ready version ("retranslate").
    on_wrong_language: WrongLanguagePolicy = "flag"

    @property
    def remote(self) -> bool:
        return self.url is not None


@dataclass(frozen=True)
class Deployment:
    active: str | None = None
    previous: str | None = None
    canary: str | None = None
    canary_percent: int = 0
    shadow: str | None = None  # a ready version that also answers a sample of routed requests, unseen
    shadow_percent: int = 0
    updated_by: str = ""
    updated_at: datetime | None = None
    generation: int = 0  # the store's count of changes; a change from an older one is refused


@dataclass(frozen=True)
class ReplicaRecord:
    """An app replica as its last heartbeat left it."""

    id: str
    generation: int  # of the deployment it serves
    started_at: datetime
    heartbeat_at: datetime


@dataclass(frozen=True)
class AuditEvent:
    at: datetime
    actor: str
    action: str
    arguments: str
    outcome: str
    detail: str


@dataclass(frozen=True)
class RolloutPlan:
    steps: tuple[int, ...]  # canary percents, ending with 100 (the promote)
    step_s: float  # a step is judged after this long...
    step_requests: int  # ...or after this many canary answers (0: by time only), whichever comes first


@dataclass(frozen=True)
class RolloutRecord:
    """A progressive rollout as persisted: what it moves, where it is, and every analysis so far."""

    id: int | None
    candidate: str
    baseline: str
    plan: RolloutPlan
    state: str  # engine.rollout.RolloutState
    step: int  # index into plan.steps
    started_by: str
    started_at: datetime | None = None
    ended_at: datetime | None = None
    detail: str = ""  # why it ended
    timeline: tuple[dict[str, Any], ...] = ()  # one entry per analysis (engine.rollout.Analysis.as_dict)
    runner: str = ""  # the replica that drives it (engine.rollout.Rollouts): one at a time
