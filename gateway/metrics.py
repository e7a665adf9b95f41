"""The gateway's Prometheus metrics, labelled with the calling key's name (never its secret)."""
from __future__ import annotations

from prometheus_client import Counter

API_REQUESTS = Counter("baton_api_requests", "Gateway and admin API requests", ["key", "endpoint", "status"])
API_TOKENS = Counter("baton_api_completion_tokens", "Tokens answered through the gateway", ["key", "version"])
AUTH_FAILURES = Counter("baton_api_auth_failures", "Requests refused for a missing, wrong or locked key", ["why"])
