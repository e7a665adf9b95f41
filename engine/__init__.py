"""Baton's engine: model versions as supervised vLLM subprocesses, routed and persisted.

Never imports Chainlit: the chat app, the tests and the benchmarks all drive `Engine`.
"""
from .errors import BatonError, Conflict, InvalidArgument, NoBackendAvailable, NotFound, NotReady, StoreUnavailable
from .facade import Engine, Status, VersionStatus
from .settings import Settings
from .translate import BackendFailed, TranslationRequest, TranslationResult
from .types import Deployment, Sampling, VersionSpec

__all__ = [
    "BackendFailed", "BatonError", "Conflict", "Deployment", "Engine", "InvalidArgument", "NoBackendAvailable",
    "NotFound", "NotReady", "Sampling", "Settings", "Status", "StoreUnavailable", "TranslationRequest",
    "TranslationResult", "VersionSpec", "VersionStatus",
]
