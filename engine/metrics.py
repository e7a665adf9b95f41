"""Prometheus metrics, defined once per process (the default registry refuses duplicates)."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from .states import State

REQUESTS = Counter("baton_requests", "Translation attempts by version and outcome", ["version", "outcome"])
RETRIES = Counter("baton_retranslations", "Answers translated again after their backend failed them", ["version"])
FEEDBACK = Counter("baton_feedback", "Users' thumbs up and down on answers, by the version that gave them",
                   ["version", "value"])
ANSWERS_CHECKED = Counter("baton_answers_checked", "Translations whose answer was checked (engine/checks.py)",
                          ["version"])
ANSWER_FLAGS = Counter("baton_answer_flags", "Checked answers flagged, by version and check (wrong_language, "
                       "untranslated, length_ratio, missing_terms, format_lost)", ["version", "check"])
SHADOW = Counter("baton_shadow_requests", "Copies of routed requests sent to the shadow version, by outcome "
                 "(ok, failed; skipped: over BATON_SHADOW_MAX_IN_FLIGHT)", ["version", "outcome"])
SHADOW_AGREEMENT = Histogram(
    "baton_shadow_agreement", "chrF of the shadow's answer against the answer users got (100: identical)", ["version"],
    buckets=(10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 100),
)
SWITCHES = Counter("baton_switches", "Deployment changes by action", ["action"])
BACKEND_CRASHES = Counter("baton_backend_crashes", "Backend processes that exited unexpectedly", ["version"])
UNHEALTHY = Counter("baton_backend_unhealthy", "Backends that failed a liveness check or stalled", ["version"])
BACKEND_STATE = Gauge("baton_backend_state", "1 for the state each backend is in", ["version", "state"])
IN_FLIGHT = Gauge("baton_in_flight_requests", "Requests currently streaming", ["version"])
TTFT = Histogram(
    "baton_time_to_first_token_seconds", "Time to first token through the engine", ["version"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def set_backend_state(version: str, state: str) -> None:
    for s in State:
        BACKEND_STATE.labels(version, s.value).set(1 if s.value == state else 0)
