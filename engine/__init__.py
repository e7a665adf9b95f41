"""Baton's engine: model versions as supervised vLLM subprocesses, routed and persisted.

Never imports Chainlit: the chat app, the tests and the benchmarks all drive `Engine`.
"""
from .detect import Detection
from .documents import Document, shown_name
from .errors import (
    BatonError,
    Conflict,
    GateRefused,
    InvalidArgument,
    NoBackendAvailable,
    NotFound,
    NotReady,
    StoreUnavailable,
)
from .evalsets import EvalSetInfo
from .evaluation import Evaluation, PairScores
from .facade import MEMORY, Engine, Health, Progress, Status, VersionStatus
from .livestats import Sample
from .memory import SHARED as MEMORY_SHARED
from .memory import Entry as MemoryEntry
from .memory import NewEntry as NewMemoryEntry
from .replicas import ReplicaView
from .rollout import RolloutView
from .router import RouteInfo, WaitInfo
from .scoring import Scores
from .settings import Settings
from .shadow import ShadowStats
from .states import Desired, State
from .terminology import Term
from .translate import BackendFailed, Chunk, CompletionRequest, Restart, TranslationRequest, TranslationResult
from .types import AuditEvent, Deployment, ReplicaRecord, Sampling, VersionSpec

__all__ = [
    "AuditEvent", "BackendFailed", "BatonError", "Chunk", "CompletionRequest", "Conflict", "Deployment", "Desired",
    "Detection", "Document", "MEMORY", "MEMORY_SHARED", "MemoryEntry", "NewMemoryEntry",
    "Engine", "EvalSetInfo", "Evaluation", "GateRefused", "Health", "InvalidArgument", "NoBackendAvailable",
    "NotFound", "NotReady", "PairScores", "Progress", "ReplicaRecord", "ReplicaView", "Restart", "RolloutView",
    "RouteInfo", "Sample", "Sampling",
    "Scores", "Settings", "ShadowStats", "State", "Status", "StoreUnavailable", "Term", "TranslationRequest",
    "TranslationResult", "VersionSpec", "VersionStatus", "WaitInfo", "shown_name",
]
