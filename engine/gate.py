"""The quality gate: may a switch or promote make another version active?

With a gate set configured (BATON_GATE_SET), both the candidate and the active version need a
current evaluation on it (of the set file as it is now, and newer than the version's recipe),
and the candidate's chrF may be at most BATON_GATE_MAX_DROP points below the active version's.
Rollback is never gated: it is the way back to the version that was serving.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from .errors import GateRefused
from .evalsets import EvalSet
from .evaluation import Evaluation

OVERRIDE = "or add --force to override (audited as forced)"


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)  # SQLite gives back naive UTC


def _when(at: datetime | None) -> str:
    return _utc(at).strftime("%Y-%m-%d %H:%M:%S UTC") if at else "?"


@dataclass(frozen=True)
class Standing:
    """A version's evaluation on the gate set as the gate sees it: `current` counts, or `why` not."""

    version: str
    current: Evaluation | None
    why: str = ""


def standing(version: str, evset: EvalSet, same_file: Evaluation | None, any_file: Evaluation | None,
             recipe_at: datetime | None) -> Standing:
    """`same_file`: its latest evaluation of the set with today's checksum; `any_file`: its latest
    on the set at all (to say why nothing counts)."""
    if same_file is not None and same_file.at is not None and (
            recipe_at is None or _utc(same_file.at) > _utc(recipe_at)):
        return Standing(version, same_file)
    if same_file is not None:
        return Standing(version, None, f"its evaluation on '{evset.name}' ({_when(same_file.at)}) is older than its "
                                       f"recipe (registered {_when(recipe_at)})")
    if any_file is not None:
        return Standing(version, None, f"its evaluation on '{evset.name}' ({_when(any_file.at)}) was of an earlier "
                                       "version of the set file, which has changed since")
    return Standing(version, None, f"it has no evaluation on '{evset.name}'")


def check(candidate: Standing, active: Standing, set_name: str, max_drop: float) -> GateRefused | None:
    """None when the gate lets `candidate` replace `active`, else the refusal to raise."""
    new, old = candidate.current, active.current
    if new is None:
        return GateRefused(f"The quality gate refuses {candidate.version}: {candidate.why}, and the gate set is "
                           f"'{set_name}'.", f"Run /eval {candidate.version} first, {OVERRIDE}.")
    if old is None:
        return GateRefused(f"The quality gate cannot compare {candidate.version} (chrF {new.chrf:.1f} on "
                           f"'{set_name}') with the active version {active.version}: {active.why}.",
                           f"Run /eval {active.version} first, {OVERRIDE}.")
    drop = old.chrf - new.chrf
    if drop > max_drop:
        return GateRefused(f"The quality gate refuses {candidate.version}: chrF {new.chrf:.1f} on '{set_name}' "
                           f"against {old.chrf:.1f} for the active version {active.version}, a drop of "
                           f"{drop:.1f} points (at most {max_drop:g} allowed, BATON_GATE_MAX_DROP).",
                           f"Improve {candidate.version} and run /eval {candidate.version} again, {OVERRIDE}.")
    return None
