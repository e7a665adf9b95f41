"""OpenAI's JSON error shape for every gateway and admin API answer that is not a success.

The routes live inside Chainlit's FastAPI app, whose exception handlers answer in FastAPI's own
shape; so the route class below turns errors into `{"error": {"message", "type", "param",
"code"}}` itself, with the status a client can branch on. It also refuses an oversized body
(413) before anything parses it.
"""
from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from engine import (
    BackendFailed,
    BatonError,
    Conflict,
    InvalidArgument,
    NoBackendAvailable,
    NotFound,
    NotReady,
    StoreUnavailable,
)

from . import metrics, overhead

RETRY_AFTER_S = 5  # while no version is ready: about one liveness round plus a failover
MAX_BODY_BYTES = 1_000_000

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 409: "conflict_error", 413: "invalid_request_error", 429: "rate_limit_error",
          502: "server_error", 503: "service_unavailable"}


class ApiError(Exception):
    """An answer that is not a success, with what was wrong and what to do in `message`."""

    def __init__(self, status: int, message: str, code: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers = dict(headers or {})


def response(err: ApiError) -> JSONResponse:
    body = {"error": {"message": err.message, "type": _TYPES.get(err.status, "server_error"), "param": None,
                      "code": err.code}}
    return JSONResponse(body, status_code=err.status, headers=err.headers)


def unavailable(message: str) -> ApiError:
    return ApiError(503, message, "no_version_ready", {"Retry-After": str(RETRY_AFTER_S)})


def from_baton(exc: BatonError, *, inference: bool) -> ApiError:
    """The status for an engine refusal. A version that is not ready is a conflict for an
    operator's change, and a temporary unavailability for a request to answer."""
    if isinstance(exc, BackendFailed):
        return (ApiError(400, str(exc), "refused_by_version") if exc.refused
                else ApiError(502, str(exc), "backend_failed"))
    if isinstance(exc, NoBackendAvailable | StoreUnavailable) or (inference and isinstance(exc, NotReady)):
        return unavailable(str(exc))
    if isinstance(exc, InvalidArgument):
        return ApiError(400, str(exc), "invalid_argument")
    if isinstance(exc, NotFound):
        return ApiError(404, str(exc), "not_found")
    if isinstance(exc, Conflict | NotReady):
        return ApiError(409, str(exc), "conflict")
    return ApiError(500, str(exc), "error")


def _invalid(exc: RequestValidationError) -> ApiError:
    errors = exc.errors()
    unknown = [str(e["loc"][-1]) for e in errors if e.get("type") == "extra_forbidden" and e.get("loc")]
    if unknown:  # OpenAI's words, which clients know
        return ApiError(400, f"Unrecognized request argument supplied: {', '.join(unknown[:5])}. Baton takes "
                             "OpenAI's fields and vLLM's sampling extensions (the README lists them); remove it.",
                        "unrecognized_argument")
    problems = []
    for e in errors[:5]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        problems.append(f"{where}: {e.get('msg', 'invalid')}")
    return ApiError(400, "The request is not valid: " + "; ".join(problems) + ". Fix these fields and send it again.",
                    "invalid_request")


async def _read_bounded(request: Request, limit: int) -> None:
    """Read the body up to `limit` bytes, and keep it where Starlette's request.body() finds it."""
    declared = request.headers.get("content-length")
    too_big = ApiError(413, f"The request body is larger than {limit} bytes. Send less text per request.",
                       "body_too_large")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_big
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise too_big
    request._body = bytes(body)  # noqa: SLF001  Starlette's cache for request.body()


class ErrorShapedRoute(APIRoute):
    """Every failure in OpenAI's error shape, and a request counter labelled with the caller's key.
    A subclass answers in another API's shape (`shaped`) or takes larger bodies (`max_body_bytes`)."""

    max_body_bytes = MAX_BODY_BYTES

    @staticmethod
    def shaped(err: ApiError) -> Response:
        return response(err)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        inference = not self.path.startswith("/admin/")
        path, shaped, limit = self.path, self.shaped, self.max_body_bytes

        async def run(request: Request) -> Response:
            with overhead.measured() as spent:
                try:
                    if request.method in ("POST", "PUT", "PATCH"):
                        await _read_bounded(request, limit)
                    result = await handler(request)
                except ApiError as exc:
                    result = shaped(exc)
                except RequestValidationError as exc:
                    result = shaped(_invalid(exc))
                except HTTPException as exc:
                    result = shaped(ApiError(exc.status_code, str(exc.detail), "http_error", exc.headers))
                except BatonError as exc:
                    result = shaped(from_baton(exc, inference=inference))
                if inference:
                    overhead.report(spent, result, path)
            metrics.API_REQUESTS.labels(getattr(request.state, "key_name", "-"), path, str(result.status_code)).inc()
            return result

        return run
