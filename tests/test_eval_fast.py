"""Evaluation sets, `Engine.evaluate` and the quality gate, on the fake server. No vLLM.

The fake versions use the template "{text}", so the prompt is the text itself: `good` (prefix "")
echoes it, `bad` answers "bad says: <text>". On an identity set (reference = source) `good`
scores chrF 100 and `bad` clearly less.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import pytest

from engine import Conflict, Engine, GateRefused, InvalidArgument, NotFound
from engine.evalsets import HEADER, MAX_ROWS, parse

from .chatkit import wait_until
from .conftest import fake_model, fake_settings

IDENTITY = [
    ("en", "fr", "Good morning"), ("en", "fr", "Thank you very much"), ("en", "de", "Where is the train station?"),
    ("en", "de", "Good night"), ("fr", "en", "Bonjour à tous"), ("en", "zh", "早上好"), ("ja", "en", "こんにちは"),
]


def write_set(root: Path, name: str, rows=IDENTITY, header=HEADER) -> Path:
    """An identity set (each reference is its source) as NAME.tsv under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(header)] + ["\t".join((s, t, text, text)) for s, t, text in rows]
    path = root / f"{name}.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def add(eng: Engine, name: str, **knobs) -> None:
    await eng.register(name, fake_model(eng.settings, name, **knobs), prompt_template="{text}")
    await eng.load(name)
    await eng.wait_loaded(name)


async def snapshot(eng: Engine):
    return eng.router.deployment, await eng.store.get_deployment()


@pytest.fixture
async def gated(tmp_path):
    """Gate set `ident`; `bad` active (a first switch is not gated), `good` ready, nothing evaluated."""
    write_set(tmp_path / "eval", "ident")
    eng = Engine(fake_settings(tmp_path, port_min=28000, port_max=28099, gate_set="ident"))
    await eng.start()
    await add(eng, "good", prefix="")
    await add(eng, "bad")
    await eng.switch("bad")
    yield eng
    await eng.close()


async def last_audit(eng: Engine, action: str):
    return next(a for a in await eng.audit(50) if a.action == action)


# ------------------------------------------------------------------------------------ the gate
async def test_gate_needs_both_evaluations_and_refuses_a_worse_version_with_both_scores(gated):
    eng = gated
    before = await snapshot(eng)
    with pytest.raises(GateRefused, match=r"refuses good: it has no evaluation on 'ident'") as no_eval:
        await eng.switch("good")
    assert "Run /eval good first" in no_eval.value.fix and "--force" in no_eval.value.fix
    assert await snapshot(eng) == before

    progress: list[tuple[int, int]] = []

    async def on_progress(done: int, total: int) -> None:
        progress.append((done, total))

    good = await eng.evaluate("good", actor="tester", on_progress=on_progress)  # the gate set by default
    assert progress[0] == (0, len(IDENTITY)) and progress[-1] == (len(IDENTITY), len(IDENTITY))
    assert [d for d, _ in progress] == list(range(len(IDENTITY) + 1))
    # Pinned: `bad` is the active version, yet every answer came from `good`.
    assert (good.version, good.set_name, good.rows, good.errors, good.by) == ("good", "ident", 7, 0, "tester")
    assert good.chrf == 100.0 and good.overall.exact == 1.0 and good.overall.bleu == 100.0
    pairs = {(p.src_lang, p.tgt_lang): p.scores for p in good.pairs}
    assert set(pairs) == {("en", "fr"), ("en", "de"), ("fr", "en"), ("en", "zh"), ("ja", "en")}
    assert pairs[("en", "fr")].segments == 2 and pairs[("en", "zh")].chrf == 100.0
    assert good.latency_p50_ms is not None and good.latency_p95_ms >= good.latency_p50_ms
    assert len(good.set_checksum) == 64
    audit = await last_audit(eng, "eval")
    assert (audit.actor, audit.outcome) == ("tester", "ok") and "chrF 100.0" in audit.detail
    assert eng.live_sample("good").answers == 0, "evaluation answers stay out of live stats"

    with pytest.raises(GateRefused, match=r"cannot compare good \(chrF 100.0 on 'ident'\) with the active version "
                                          r"bad: it has no evaluation on 'ident'") as no_active:
        await eng.switch("good")
    assert "Run /eval bad first" in no_active.value.fix
    bad = await eng.evaluate("bad", "ident")
    assert 40 < bad.chrf < 90 and bad.overall.exact == 0.0

    assert (await eng.switch("good")).active == "good", "better than the active version: passes"
    with pytest.raises(GateRefused) as worse:
        await eng.switch("bad")
    drop = 100.0 - bad.chrf
    message = str(worse.value)
    assert f"chrF {bad.chrf:.1f} on 'ident' against 100.0 for the active version good" in message, message
    assert f"a drop of {drop:.1f} points (at most 1 allowed" in message
    assert "/eval bad" in worse.value.fix and "--force" in worse.value.fix
    refused = await last_audit(eng, "switch")
    assert refused.outcome == "refused" and "drop of" in refused.detail
    assert eng.router.deployment.active == "good"

    dep = await eng.switch("bad", force=True, actor="tester")
    assert dep.active == "bad"
    forced = await last_audit(eng, "switch")
    assert forced.outcome == "ok" and json.loads(forced.arguments) == {"name": "bad", "force": True}
    assert forced.detail.startswith("forced past the gate: The quality gate refuses bad: chrF"), forced.detail

    # Rollback is the way back, never gated; here it even goes back to the worse version.
    assert (await eng.rollback()).active == "good"
    assert (await eng.rollback()).active == "bad"
    assert (await eng.switch("good")).active == "good"
    eng.settings.gate_max_drop = 100.0
    assert (await eng.switch("bad")).active == "bad", "a drop within BATON_GATE_MAX_DROP passes"
    board = await eng.scoreboard()
    assert board["good"].chrf == 100.0 and board["bad"].chrf == bad.chrf


async def test_promote_is_gated_and_canary_is_not(gated):
    eng = gated
    await eng.evaluate("good")
    await eng.evaluate("bad")
    await eng.switch("good")
    dep = await eng.canary("bad", 20)
    assert dep.canary == "bad", "a canary leaves the active version as it is"
    with pytest.raises(GateRefused, match="refuses bad: chrF"):
        await eng.promote()
    assert eng.router.deployment.canary == "bad"
    assert (await eng.promote(force=True)).active == "bad"
    forced = await last_audit(eng, "promote")
    assert json.loads(forced.arguments) == {"force": True} and forced.detail.startswith("forced past the gate")


async def test_an_evaluation_older_than_the_recipe_or_of_another_file_no_longer_counts(gated, tmp_path):
    eng = gated
    await add(eng, "good2", prefix="")
    for name in ("good", "bad", "good2"):
        await eng.evaluate(name)
    await eng.switch("good")

    # The recipe of good2 saved again after its evaluation: that evaluation is of another recipe.
    await eng.unload("good2")
    await eng.register("good2", fake_model(eng.settings, "good2", prefix=""), prompt_template="{text}")
    await eng.load("good2")
    await eng.wait_loaded("good2")
    with pytest.raises(GateRefused, match=r"refuses good2: its evaluation on 'ident' \(.*\) is older than its recipe"):
        await eng.switch("good2")
    await eng.evaluate("good2")
    assert (await eng.switch("good2")).active == "good2"

    # The set file changed: every evaluation of the old file is out of date, both sides.
    write_set(tmp_path / "eval", "ident", IDENTITY + [("en", "es", "Good morning")])
    with pytest.raises(GateRefused, match="was of an earlier version of the set file"):
        await eng.switch("good")
    await eng.evaluate("good")
    with pytest.raises(GateRefused, match="active version good2: its evaluation on 'ident' .* earlier version"):
        await eng.switch("good")
    assert eng.router.deployment.active == "good2"


async def test_the_gate_set_missing_refuses_with_the_reason(gated, tmp_path):
    eng = gated
    (tmp_path / "eval" / "ident.tsv").unlink()
    with pytest.raises(GateRefused, match="gate set .* is unusable. No evaluation set named 'ident'"):
        await eng.switch("good")
    assert (await eng.switch("good", force=True)).active == "good"


# ------------------------------------------------------------------------------------ evaluations
async def test_bad_set_names_and_paths_are_refused_and_store_nothing(gated, tmp_path):
    eng = gated
    outside = tmp_path / "outside"
    write_set(outside, "secret")
    (tmp_path / "eval" / "linked.tsv").symlink_to(outside / "secret.tsv")
    for name, error, words in [
        ("../outside/secret", InvalidArgument, "not a valid evaluation set name"),
        ("sub/ident", InvalidArgument, "not a valid evaluation set name"),
        ("/etc/passwd", InvalidArgument, "not a valid evaluation set name"),
        ("..", InvalidArgument, "not a valid evaluation set name"),
        ("nope", NotFound, "No evaluation set named 'nope'"),
        ("linked", InvalidArgument, "points outside the evaluation roots"),
    ]:
        with pytest.raises(error, match=words):
            await eng.evaluate("good", name)
    with pytest.raises(NotFound, match="No version named 'ghost'"):
        await eng.evaluate("ghost", "ident")
    assert await eng.evaluations() == []
    assert {a.outcome for a in await eng.audit(50) if a.action == "eval"} == {"refused"}
    sets = {s.name: s for s in await eng.eval_sets()}
    assert sets["ident"].rows == len(IDENTITY) and not sets["ident"].problem
    assert "points outside" in sets["linked"].problem

    eng.settings.gate_set = None
    with pytest.raises(InvalidArgument, match="Name the evaluation set: no gate set is configured"):
        await eng.evaluate("good")


@pytest.mark.parametrize("text, line, words", [
    ("src\ttgt\tsource\treference\nen\tfr\ta\ta\n", 1, "should be the header"),
    (f"{chr(9).join(HEADER)}\nen\tfr\tGood morning\tBonjour\nen\tfr\tHello\n", 3, "has 3 tab-separated fields"),
    (f"{chr(9).join(HEADER)}\nen\txx\tHello\tBonjour\n", 2, "names the language 'xx', which Baton does not know"),
    (f"{chr(9).join(HEADER)}\n\nen\ten\tHello\tHello\n", 3, "translates English into itself"),
    (f"{chr(9).join(HEADER)}\nen\tfr\tHello\t \n", 2, "has an empty reference"),
    (f"{chr(9).join(HEADER)}\nen\tfr\t{'x' * 4001}\tx\n", 2, "has a source of 4001 characters"),
])
def test_a_malformed_set_is_refused_with_its_line(text, line, words):
    with pytest.raises(InvalidArgument, match=rf"Line {line} of the evaluation set 'bad' \(.*\) {words}"):
        parse("bad", Path("bad.tsv"), text.encode())


def test_set_limits_and_encoding():
    header = "\t".join(HEADER) + "\n"
    with pytest.raises(InvalidArgument, match="Line 3 .* is not UTF-8"):
        parse("s", Path("s.tsv"), (header + "en\tfr\ta\tb\n").encode() + b"en\tfr\t\xff\tb\n")
    with pytest.raises(InvalidArgument, match="has no rows"):
        parse("s", Path("s.tsv"), header.encode())
    too_many = header + "en\tfr\ta\tb\n" * (MAX_ROWS + 1)
    with pytest.raises(InvalidArgument, match=f"Line {MAX_ROWS + 2} .* past the limit of 5,000 rows"):
        parse("s", Path("s.tsv"), too_many.encode())
    with pytest.raises(InvalidArgument, match="larger than 5,000,000 bytes"):
        parse("s", Path("s.tsv"), (header + "en\tfr\ta\tb\n" * 500_000).encode())
    ok = parse("s", Path("s.tsv"), ("\ufeff" + header + "en\tfr\ta\tb\r\n\n").encode())
    assert [(r.line, r.source, r.reference) for r in ok.rows] == [(2, "a", "b")]


async def test_a_malformed_set_through_evaluate_names_the_line(gated, tmp_path):
    (tmp_path / "eval" / "broken.tsv").write_text("\t".join(HEADER) + "\nen\tfr\tHello\tBonjour\nen\tkl\tHi\tHi\n")
    with pytest.raises(InvalidArgument, match=r"Line 3 of the evaluation set 'broken' .* language 'kl'"):
        await gated.evaluate("good", "broken")
    assert await gated.evaluations() == []


async def test_a_cancelled_evaluation_stores_nothing(gated):
    eng = gated
    await add(eng, "slow", prefix="", token_delay_s=0.3)
    done: list[int] = []

    async def on_progress(n: int, _total: int) -> None:
        done.append(n)

    task = asyncio.create_task(eng.evaluate("slow", on_progress=on_progress))
    await wait_until(lambda: any(done), 10, "the first row to finish")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await eng.evaluations("slow") == []
    assert not [a for a in await eng.audit(50) if a.action == "eval"]
    assert eng.pool.get("slow").traffic.in_flight == 0, "the rows still running were cancelled"


async def test_failed_rows_count_as_errors_with_an_empty_answer(gated):
    eng = gated
    # A context of 8 "tokens" and answers capped at 4: the 4-word row's prompt still fits, the
    # 5-word one is refused by the backend (prompt + max_tokens > context).
    await eng.register("short", fake_model(eng.settings, "short", prefix=""), prompt_template="{text}",
                       flags=["--max-model-len", "8"], max_tokens=4)
    await eng.load("short")
    await eng.wait_loaded("short")
    ev = await eng.evaluate("short")
    assert (ev.rows, ev.errors) == (len(IDENTITY), 1)
    assert ev.chrf < 100 and ev.overall.exact == pytest.approx(6 / 7, abs=1e-3)
    assert [e.id for e in await eng.evaluations("short")] == [ev.id]


async def test_an_evaluation_during_a_recipe_change_is_not_stored(gated):
    eng = gated
    await add(eng, "slow", prefix="", token_delay_s=0.2)
    task = asyncio.create_task(eng.evaluate("slow"))
    await asyncio.sleep(0.3)
    spec = await eng.store.get_version("slow")
    await eng.store.save_version(replace(spec, created_at=None), ("tester", "register", {}))
    with pytest.raises(Conflict, match="saved again during its evaluation; nothing was stored"):
        await task
    assert await eng.evaluations("slow") == []


async def test_a_rollout_meets_the_gate_at_its_start(gated):
    """A rollout ends in a promote, so the gate judges its candidate before any traffic moves."""
    eng = gated
    before = await snapshot(eng)
    with pytest.raises(GateRefused, match="refuses good: it has no evaluation") as refused:
        await eng.start_rollout("good", steps=[50, 100], actor="tester")
    assert "/eval good" in refused.value.fix and "/promote --force" in refused.value.fix
    assert await snapshot(eng) == before and eng.rollout_status() is None
    assert (await last_audit(eng, "rollout-start")).outcome == "refused"
    for name in ("good", "bad"):
        await eng.evaluate(name, actor="tester")
    view = await eng.start_rollout("good", steps=[50, 100], step_s=3600, actor="tester")
    assert view.record.state == "running" and eng.router.deployment.canary == "good"
    await eng.abort_rollout(actor="tester")


async def test_an_evaluation_counts_the_answers_the_checks_flag(gated):
    """Issue 25: `good` echoes each source, so every row of two words or more whose languages differ
    comes back untranslated; the count is stored with the scores."""
    ev = await gated.evaluate("good", actor="tester")
    assert ev.flagged is not None and ev.flagged.get("untranslated") == sum(
        1 for src, tgt, text in IDENTITY if src != tgt and len(text.split()) >= 2), ev.flagged
    assert (await gated.evaluations("good", limit=1))[0].flagged == ev.flagged
