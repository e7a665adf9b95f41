"""The gateway's Prometheus metrics, labelled with the calling key's name (never its secret)."""
from __future__ import annotations

from prometheus_client import Counter, Histogram

API_REQUESTS = Counter("baton_api_requests", "Gateway and admin API requests", ["key", "endpoint", "status"])
API_TOKENS = Counter("baton_api_completion_tokens", "Tokens answered through the gateway", ["key", "version"])
AUTH_FAILURES = Counter("baton_api_auth_failures", "Requests refused for a missing, wrong or locked key", ["why"])
OVERHEAD = Histogram("baton_overhead_seconds", "Baton's own time on an inference request, backend waits excluded "
                     "(the X-Baton-Overhead-Ms header)", ["route"],
                     buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))
