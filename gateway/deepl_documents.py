"""DeepL's document jobs (/v2/document): a document uploaded, translated in the background by one
version (Engine.translate_document, as the chat's documents are), and downloaded once.

Each job is a task this module owns: a bounded number translate at once and the others wait
their turn (queued); a key may have that many unfinished, and all keys four times as many, past
which an upload is refused (429). Every failure ends the job in "error" with its reason, which
the client's next status request reads, and an unexpected one is logged too: none vanishes. A
job belongs to the key that uploaded it, and its document_key (kept as a hash) must come with
every request; anything else reads as "no such document". Finished jobs are kept for a while,
the oldest dropped first past a bound, and a downloaded one at once. Jobs live in this process:
behind a load balancer, pin a client to one replica.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from engine import BatonError, Document, Engine, NotFound, Restart, TranslationRequest

from .config import GatewayConfig
from .errors import ApiError

log = logging.getLogger("baton.gateway")

OnDone = Callable[["Job"], Awaitable[None]]  # a job translated: count its characters


@dataclass
class Job:
    id: str
    key_name: str
    key_hash: str
    doc: Document
    req: TranslationRequest
    filename: str  # the translated file's name
    status: str = "queued"  # queued, translating, done, error (DeepL's words)
    done: list[str | None] = field(default_factory=list)
    count: int = 0  # segments translated
    started: float = 0.0
    finished: float = 0.0
    version: str = ""
    restarted: str = ""  # why a version's partial work was discarded
    error: str = ""
    result: bytes = b""

    @property
    def characters(self) -> int:
        return sum(len(s) for s in self.doc.segments)

    def seconds_remaining(self) -> int | None:
        """A guess from the pace so far (DeepL's clients poll at their own pace anyway)."""
        if self.status != "translating" or not self.count:
            return None
        pace = (time.monotonic() - self.started) / self.count
        return round(pace * (len(self.doc.segments) - self.count))


def _digest(document_key: str) -> str:
    return hashlib.sha256(document_key.encode()).hexdigest()


class DocumentJobs:
    def __init__(self, get_engine: Callable[[], Engine], config: GatewayConfig, on_done: OnDone) -> None:
        self._engine, self._config, self._on_done = get_engine, config, on_done
        self._jobs: dict[str, Job] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._gate = asyncio.Semaphore(config.documents_in_flight)

    def submit(self, key_name: str, doc: Document, req: TranslationRequest, filename: str) -> tuple[Job, str]:
        """A new job, under way, and its document_key (shown once, to the uploader)."""
        self._drop_old()
        unfinished = [j for j in self._jobs.values() if j.status in ("queued", "translating")]
        mine = sum(j.key_name == key_name for j in unfinished)
        if mine >= self._config.documents_in_flight:  # so one key cannot fill the queue for everyone
            raise ApiError(429, f"This key has {mine} document{'s' * (mine > 1)} being translated or waiting "
                                "already. Wait for it to be done, then send the next.",
                           "too_many_documents", {"Retry-After": "30"})
        if len(unfinished) >= 4 * self._config.documents_in_flight:
            raise ApiError(429, f"{len(unfinished)} documents are being translated or waiting already. Retry in a "
                                "minute.", "too_many_documents", {"Retry-After": "60"})
        document_key = secrets.token_urlsafe(32)
        job = Job(uuid.uuid4().hex.upper(), key_name, _digest(document_key), doc, req, filename)
        self._jobs[job.id] = job
        task = asyncio.create_task(self._run(job), name=f"deepl-document-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job, document_key

    def find(self, document_id: str, key_name: str, document_key: str) -> Job:
        """The key's job with this id and document_key; one message for every mismatch, so a
        stranger learns nothing about other keys' documents."""
        job = self._jobs.get(document_id[:64])
        if job is None or job.key_name != key_name or not hmac.compare_digest(job.key_hash, _digest(document_key)):
            raise NotFound(f"There is no document '{document_id[:64]}' with that document_key for this API key.",
                           "Send the document_id and document_key that POST /v2/document returned, with the "
                           "same API key.")
        return job

    def take(self, job: Job) -> bytes:
        """The translated file, once: a downloaded job is gone, as with DeepL."""
        if job.status == "error":  # final: a 503 would have DeepL's clients retry in vain
            raise ApiError(400, f"The document could not be translated: {job.error}", "document_failed")
        if job.status != "done":
            raise ApiError(503, f"The document is {job.status}; poll POST /v2/document/{{id}} until its status is "
                                "done.", "document_not_ready")
        del self._jobs[job.id]
        return job.result

    async def _run(self, job: Job) -> None:
        engine = self._engine()

        async def on_progress(count: int, _total: int) -> None:
            job.count = count

        async def on_restart(restart: Restart) -> None:
            job.restarted = restart.reason

        async with self._gate:
            job.status, job.started = "translating", time.monotonic()
            try:
                result = await engine.translate_document(job.doc, job.req, job.done, on_progress,
                                                         on_restart=on_restart)
                job.result, _ = await engine.rebuild_document(job.doc, job.done, job.filename, user=job.key_name)
                job.version, job.status = result.version, "done"
            except BatonError as exc:
                job.status, job.error = "error", str(exc)
            except Exception as exc:  # a defect: logged, and the client is told rather than left polling
                log.exception("document job %s failed", job.id)
                job.status, job.error = "error", f"Baton failed to translate it ({type(exc).__name__}); retry."
            finally:
                job.finished = time.monotonic()
        if job.status == "done":
            try:
                await self._on_done(job)
            except BatonError as exc:  # the file is made; only its count is missing
                log.warning("document job %s: %s", job.id, exc)

    def _drop_old(self) -> None:
        now = time.monotonic()
        finished = sorted((j for j in self._jobs.values() if j.finished), key=lambda j: j.finished)
        expired = [j for j in finished if now - j.finished > self._config.documents_keep_s]
        over = len(finished) - len(expired) - self._config.documents_kept + 1
        for j in expired + [j for j in finished if j not in expired][:max(over, 0)]:
            del self._jobs[j.id]
