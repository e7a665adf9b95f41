"""Engine results as markdown for the chat. Pure functions: data in, text out."""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from engine import (
    EvalSetInfo,
    Evaluation,
    MemoryEntry,
    Progress,
    ReplicaView,
    RolloutView,
    RouteInfo,
    Sample,
    Scores,
    ShadowStats,
    Status,
    TranslationResult,
    VersionStatus,
    WaitInfo,
)
from engine.languages import NAMES
from engine.terminology import Term
from engine.types import AuditEvent, Deployment

from .accounts import Account
from .keys import ApiKey

# pieces ---------------------------------------------------------------------
# What could turn outside text into markup: links and images ([ ]), autolinks and HTML (< >), code
# (`), emphasis (* ~), table cells (|), and the escape itself. CommonMark lets any be backslashed.
_MARKUP = re.compile(r"([\\`*~\[\]<>|])")


def text(value: object) -> str:
    """Text from outside (a path, a name, a term, a file name, an error naming them, model output)
    as inert markdown on one line: shown as typed, never a link, an image or a table's end."""
    return _MARKUP.sub(r"\\\1", " ".join(str(value).splitlines()))


def cell(value: object) -> str:
    """A value safe inside a markdown table cell, cut to a readable length."""
    return "" if value is None else text(str(value)[:300])


def code(value: object) -> str:
    """Inline code that cannot be broken out of by a backtick in the value."""
    shown = str(value).replace("`", "'").replace("\n", " ")
    return f"`{shown}`" if shown else "``"


def block(lines: Iterable[str]) -> str:
    """A fenced block; a fence inside the text cannot close it early."""
    body = "\n".join(line.replace("```", "'''") for line in lines)
    return f"```text\n{body}\n```"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = int(seconds)
    if s < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _dash(value: object) -> str:
    return "—" if value in (None, "") else str(value)


# deployment and status --------------------------------------------------------
def deployment(d: Deployment) -> str:
    if not d.active:
        return "No version is active yet. Load one with `/load NAME MODEL_PATH`, then `/switch NAME`."
    parts = [f"**Active:** {code(d.active)}"]
    parts.append(f"**standby:** {code(d.previous)}" if d.previous else "**standby:** —")
    if d.canary:
        parts.append(f"**canary:** {code(d.canary)} ({d.canary_percent}% of conversations)")
    if d.shadow:
        parts.append(f"**shadow:** {code(d.shadow)} ({d.shadow_percent}% of requests copied)")
    return " · ".join(parts)


def shadow(s: ShadowStats | None) -> str:
    """The shadow's statistics since it started, in a sentence."""
    if s is None:
        return "No version is shadowing. Start one with `/shadow NAME PERCENT`."
    head = f"**Shadow** {code(s.version)} answers a copy of {s.percent}% of requests; nobody sees its answers."
    if not s.samples:
        counted = "No copy has finished yet" + (f" ({s.skipped} skipped: too many copies at once)" if s.skipped else "")
        return f"{head} {counted}."
    agreement = "—" if s.agreement is None else f"{s.agreement:.1f}"
    parts = [f"{s.samples} samples", f"agreement with the users' answers (chrF, 100 = identical): **{agreement}**",
             f"{s.errors} errors", f"p95 {_ms(s.p95_ms)} against {_ms(s.primary_p95_ms)} for the users' answers"]
    if s.skipped:
        parts.append(f"{s.skipped} skipped (BATON_SHADOW_MAX_IN_FLIGHT copies were running)")
    return f"{head}\n\n" + " · ".join(parts)


def status(st: Status, scores: Mapping[str, Evaluation]) -> str:
    """`scores`: each version's latest evaluation (on the gate set when there is one)."""
    lines = [deployment(st.deployment), ""]
    if st.shadow is not None:
        lines += [shadow(st.shadow), ""]
    if st.replicas:
        lines += [replicas(st.replicas, st.deployment.generation), ""]
    if not st.versions:
        lines.append("No version is registered yet.")
        return "\n".join(lines)
    lines += [
        "| version | state | wanted | role | pid | port or URL | uptime | in flight | served | errors | chrF "
        "| flagged |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in st.versions:
        ev = scores.get(v.name)
        chrf = f"{ev.chrf:.1f} ({cell(ev.set_name)})" if ev else "—"
        lines.append(
            f"| {cell(v.name)} | {cell(v.state)} | {cell(v.desired)} | {cell(v.role or '—')} "
            f"| {_dash(v.pid)} | {cell(v.url) if v.url else _dash(v.port)} "
            f"| {duration(v.uptime_s)} | {v.in_flight} | {v.served} | {v.errors} | {chrf} | {flagged(v)} |"
        )
    notes = [f"- **{cell(v.name)}** {cell(v.state)}: {cell(v.reason)}" for v in st.versions if v.reason]
    notes += [f"- **{cell(v.name)}** restarted {v.restarts}×" for v in st.versions if v.restarts]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def flagged(v: VersionStatus) -> str:
    """The share of a version's checked answers each check flagged, e.g. "wrong language 3 (12%)"."""
    if not v.checked:
        return "—"
    found = [f"{check.replace('_', ' ')} {_rate(n, v.checked)}" for check, n in sorted(v.flagged.items()) if n]
    return " · ".join(found) or f"none of {v.checked}"


def replicas(views: Sequence[ReplicaView], generation: int) -> str:
    """Every replica on the database: the generation it applies and when it last said so."""
    newest = max([generation, *(r.generation for r in views)])
    lines = [f"**Replicas** (deployment generation {newest})", "",
             "| replica | generation | last heartbeat | |", "|---|---|---|---|"]
    for r in views:
        mark = ("⚠️ silent: stopped, or cut off from the database" if r.silent else
                "✅ converged" if r.converged else f"⏳ behind ({r.generation} of {newest})")
        name = f"{cell(r.id)} (this one)" if r.this else cell(r.id)
        lines.append(f"| {name} | {r.generation} | {duration(r.heartbeat_age_s)} ago | {mark} |")
    return "\n".join(lines)


def switched(action: str, d: Deployment) -> str:
    what = {
        "switch": f"Switched: {code(d.active)} now answers every new request.",
        "rollback": f"Rolled back: {code(d.active)} answers every new request again.",
        "promote": f"Promoted: {code(d.active)} now answers every request.",
        "canary": f"Canary on: {code(d.canary)} answers {d.canary_percent}% of conversations, "
                  f"{code(d.active)} the rest.",
        "canary-abort": f"Canary stopped: {code(d.active)} answers every request again.",
        "shadow": f"Shadow on: {code(d.shadow)} also answers a copy of {d.shadow_percent}% of requests, "
                  "after the user's answer; only the statistics see it (`/shadow`).",
        "shadow-off": "Shadow stopped: no request is copied any more.",
    }[action]
    tail = ""
    if action in ("switch", "rollback", "promote") and d.previous:
        tail = (" Answers already streaming finish where they started; "
                f"{code(d.previous)} stays loaded as standby for `/rollback`.")
    return what + tail


def unloaded(name: str, drained: bool) -> str:
    if drained:
        return f"Unloaded {code(name)}: its requests had finished and its process is stopped."
    return (f"Unloaded {code(name)}, but some of its requests were still running when the drain timeout "
            "(BATON_DRAIN_TIMEOUT_S) ran out; they were cut off.")


def logs(name: str, lines: Sequence[str]) -> str:
    if not lines:
        return f"{code(name)} has written no log lines yet."
    return f"Last {len(lines)} log lines of {code(name)}:\n\n{block(lines)}"


def audit(events: Sequence[AuditEvent]) -> str:
    if not events:
        return "The audit log is empty."
    rows = ["| when (UTC) | who | action | arguments | outcome | detail |", "|---|---|---|---|---|---|"]
    for e in events:
        when = e.at.strftime("%Y-%m-%d %H:%M:%S") if e.at else ""
        rows.append(f"| {when} | {cell(e.actor)} | {cell(e.action)} | {cell(e.arguments)} "
                    f"| {cell(e.outcome)} | {cell(e.detail)} |")
    return f"Last {len(events)} audit events, newest first:\n\n" + "\n".join(rows)


def accounts(items: Sequence[Account]) -> str:
    rows = ["| account | role | created by | created (UTC) |", "|---|---|---|---|"]
    for a in items:
        when = a.created_at.strftime("%Y-%m-%d %H:%M") if a.created_at else ""
        rows.append(f"| {cell(a.username)} | {a.role} | {cell(a.created_by)} | {when} |")
    return f"{len(items)} accounts:\n\n" + "\n".join(rows)


def api_keys(items: Sequence[ApiKey]) -> str:
    rows = ["| key | role | starts | created by | created (UTC) | revoked (UTC) |", "|---|---|---|---|---|---|"]
    for k in items:
        made = k.created_at.strftime("%Y-%m-%d %H:%M") if k.created_at else ""
        revoked = k.revoked_at.strftime("%Y-%m-%d %H:%M") if k.revoked_at else ""
        rows.append(f"| {cell(k.name)} | {k.role} | `{k.hint}…` | {cell(k.created_by)} | {made} | {revoked} |")
    return f"{len(items)} API keys:\n\n" + "\n".join(rows)


def key_made(key: ApiKey, secret: str | None) -> str:
    """The reply to /keys add; with `secret=None`, what the chat history keeps instead."""
    shown = (f"```\n{secret}\n```\nCopy it now: it is shown only this once and stored only as a hash "
             "(this message keeps a masked copy in the history)." if secret else
             f"`{key.hint}…` (shown once when it was made; the history keeps only this).")
    return (f"Made the {key.role} key {code(key.name)}:\n\n{shown}\n\n"
            "Use it as `Authorization: Bearer KEY`, e.g. `OPENAI_BASE_URL=<this server>/v1 OPENAI_API_KEY=KEY`.")


# evaluations and rollouts ---------------------------------------------------
BAR_WIDTH = 20
STOPPED = "_Stopped: nothing was stored._"


def progress_step(done: int, total: int) -> int:
    """How many cells of the bar are full."""
    return done * BAR_WIDTH // total if total else BAR_WIDTH


def _bar(done: int, total: int) -> str:
    full = progress_step(done, total)
    return "█" * full + "░" * (BAR_WIDTH - full)


def eval_progress(name: str, set_name: str, done: int, total: int) -> str:
    return (f"Evaluating {code(name)} on {code(set_name)}: `{_bar(done, total)}` {done}/{total} rows\n\n"
            "_Press Stop to cancel: nothing is stored then._")


def _pct(share: float) -> str:
    return f"{share:.0%}"


def _rate(part: int, whole: int) -> str:
    return f"{part} ({part / whole:.0%})" if whole else str(part)


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f} ms"


def _when(ev: Evaluation) -> str:
    return ev.at.strftime("%Y-%m-%d %H:%M") if ev.at else ""


def evaluation(ev: Evaluation, active: str | None, other: Evaluation | None, gate_set: str | None) -> str:
    """The reply to /eval NAME: scores per pair and overall, next to the active version's latest
    evaluation on the same set (`other`, if it has one)."""
    o = ev.overall
    head = (f"**{cell(ev.version)}** on {code(ev.set_name)}"
            f"{' (the gate set)' if ev.set_name == gate_set else ''}: chrF **{o.chrf:.1f}** · BLEU {o.bleu:.1f} · "
            f"exact {_pct(o.exact)} · {ev.rows} rows, {ev.errors} errors · "
            f"latency p50 {_ms(ev.latency_p50_ms)}, p95 {_ms(ev.latency_p95_ms)}")
    theirs: dict[tuple[str, str], Scores] = {}
    if other is not None:
        theirs = {(p.src_lang, p.tgt_lang): p.scores for p in other.pairs}
        theirs[("", "")] = other.overall
    columns = ["pair", "rows", "chrF", "BLEU", "exact"]
    if other is not None:
        columns += [f"chrF {cell(other.version)} (active)", "Δ chrF"]
    rows = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines = [((p.src_lang, p.tgt_lang), f"{cell(p.src_lang)} → {cell(p.tgt_lang)}", p.scores) for p in ev.pairs]
    for key, label, sc in [*lines, (("", ""), "**overall**", o)]:
        row = [label, str(sc.segments), f"{sc.chrf:.1f}", f"{sc.bleu:.1f}", _pct(sc.exact)]
        if other is not None:
            them = theirs.get(key)
            row += [f"{them.chrf:.1f}", f"{sc.chrf - them.chrf:+.1f}"] if them else ["—", "—"]
        rows.append("| " + " | ".join(row) + " |")
    if other is not None:
        changed = " (of an earlier version of the set file)" if other.set_checksum != ev.set_checksum else ""
        tail = f"The active version {code(other.version)} was evaluated {_when(other)} by {cell(other.by)}{changed}."
    elif active and active != ev.version:
        tail = (f"The active version {code(active)} has no evaluation on {code(ev.set_name)} to compare with: "
                f"`/eval {active} {ev.set_name}`.")
    else:
        tail = ""
    found = [f"{check.replace('_', ' ')} {_rate(n, ev.rows)}" for check, n in sorted((ev.flagged or {}).items()) if n]
    checked = ("" if ev.flagged is None else f"Answer checks flagged: {' · '.join(found)}." if found
               else "Answer checks flagged no answer.")
    stored = f"Stored as evaluation {ev.id} (set sha256 {ev.set_checksum[:12]}…)."
    return "\n\n".join(filter(None, [head, "\n".join(rows), checked, tail, stored]))


def eval_sets(sets: Sequence[EvalSetInfo], evaluations: Sequence[Evaluation], gate_set: str | None) -> str:
    """The reply to /eval: the sets, then each version's latest scores on each set."""
    gate = (f"The gate set is {code(gate_set)}: `/switch` and `/promote` need a current evaluation on it."
            if gate_set else "No gate set is configured (BATON_GATE_SET): switches are not gated.")
    if sets:
        rows = ["| set | rows | sha256 | file |", "|---|---|---|---|"]
        for s in sets:
            size = str(s.rows) if not s.problem else f"⚠️ {cell(s.problem)}"
            rows.append(f"| {cell(s.name)}{' (gate)' if s.name == gate_set else ''} | {size} "
                        f"| {s.checksum[:12] or '—'} | {cell(s.path)} |")
        listed = "\n".join(rows)
    else:
        listed = "No evaluation set found: put NAME.tsv files under BATON_EVAL_ROOTS."
    current = {s.name: s.checksum for s in sets}
    latest: dict[tuple[str, str], Evaluation] = {}
    for ev in evaluations:  # newest first
        latest.setdefault((ev.version, ev.set_name), ev)
    if latest:
        rows = ["| version | set | chrF | BLEU | exact | errors | when (UTC) | by |", "|" + "---|" * 8]
        for ev in latest.values():
            stale = " (set changed since)" if current.get(ev.set_name) not in (None, ev.set_checksum) else ""
            rows.append(f"| {cell(ev.version)} | {cell(ev.set_name)}{stale} | {ev.chrf:.1f} | {ev.overall.bleu:.1f} "
                        f"| {_pct(ev.overall.exact)} | {ev.errors} | {_when(ev)} | {cell(ev.by)} |")
        scores = "Latest scores:\n\n" + "\n".join(rows)
    else:
        scores = "No evaluation yet: `/eval NAME [SET]` runs one."
    return "\n\n".join([gate, listed, scores])


def _live_table(canary: Sample, active: Sample) -> list[str]:
    rows = [f"| this step | canary {code(canary.version)} | active {code(active.version)} |", "|---|---|---|",
            f"| answers | {canary.answers} | {active.answers} |",
            f"| errors | {_rate(canary.errors, canary.answers)} | {_rate(active.errors, active.answers)} |",
            f"| first token p95 | {_ms(canary.ttft_p95_ms)} | {_ms(active.ttft_p95_ms)} |",
            f"| thumbs down | {_rate(canary.votes_down, canary.answers)} "
            f"| {_rate(active.votes_down, active.answers)} |",
            f"| not in the target language | {_rate(canary.flagged.get('wrong_language', 0), canary.checked)} "
            f"| {_rate(active.flagged.get('wrong_language', 0), active.checked)} |"]
    if canary.shadow_agreement is not None:
        rows.append(f"| shadow agreement (chrF) | {canary.shadow_agreement:.1f} | — |")
    return rows


def _timeline(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    """Analysis.as_dict entries, one row each."""
    rows = ["| step | share | after | verdict | canary answers | why |", "|---|---|---|---|---|---|"]
    for e in entries:
        rows.append(f"| {e['step'] + 1} | {e['percent']} % | {e['elapsed_s']} s | {cell(e['verdict'])} "
                    f"| {e['canary']['answers']} | {cell('; '.join(e['reasons']))} |")
    return rows


def rollout_line(view: RolloutView) -> str:
    r = view.record
    return (f"**Rollout:** {code(r.candidate)} is at step {r.step + 1} of {len(r.plan.steps)} ({view.percent} % of "
            "conversations); `/rollout status` for its numbers.")


def rollout(view: RolloutView | None) -> str:
    if view is None:
        return "No rollout has run yet. Start one with `/rollout NAME`."
    r = view.record
    steps = " → ".join(f"{p} %" for p in r.plan.steps)
    head = (f"**Rollout of {code(r.candidate)}** replacing {code(r.baseline)}, started by {cell(r.started_by)}: "
            f"**{r.state}**" + (f", driven by replica {code(view.runner)}" if view.runner else ""))
    lines = [head, "", f"Steps {steps}; each judged after {duration(r.plan.step_s)}"
             + (f" or {r.plan.step_requests} canary answers" if r.plan.step_requests else "") + "."]
    if view.canary is not None and view.active is not None:
        lines += ["", f"Step {r.step + 1} of {len(r.plan.steps)}: {view.percent} % of conversations, "
                      f"{duration(view.step_elapsed_s)} in.", "", *_live_table(view.canary, view.active)]
    elif r.state == "running":  # driven by another replica, which has the step's numbers
        lines += ["", f"Step {r.step + 1} of {len(r.plan.steps)}: {view.percent} % of conversations."]
    lines += ["", f"**Next:** {cell(view.next_decision)}" if r.state == "running" else f"**Outcome:** {cell(r.detail)}"]
    if r.timeline:
        lines += ["", "Analyses so far:" if r.state == "running" else "Analyses:", "", *_timeline(r.timeline)]
    return "\n".join(lines)


# translation ----------------------------------------------------------------
def attribution(r: TranslationResult) -> str:
    if r.memory:
        return f"_📚 {cell(r.memory)}_"
    line = (f"_Translated by **{cell(r.version)}** ({cell(r.role)}) in {r.total_ms / 1000:.2f} s"
            f" · first token {r.ttft_ms:.0f} ms_")
    if r.failover_note:
        line += f"\n\n⚠️ {cell(r.failover_note)}"
    if r.retranslated:
        line += f"\n\n🔁 {cell(r.retranslated)}"
    return line


def pair(r: TranslationResult) -> str:
    """"English → French", with the detected language's confidence when it was detected."""
    shown = f"**{text(r.source_lang or 'Auto-detected')} → {text(r.target_lang)}**"
    if r.detected is not None:
        shown += f" (detected, {r.detected.confidence:.0%} sure)"
    return shown


def term(t: Term) -> str:
    where = f" (for {NAMES.get(t.lang, t.lang)})" if t.lang else ""
    return f"{code(t.source)} = {code(t.target)}{where}"


def footer(r: TranslationResult) -> list[str]:
    """Under a translation: its pair and where it came from, then what the checks found."""
    head = f"{pair(r)} · {attribution(r)}" if r.target_lang else attribution(r)
    return [head, *checks(r)]


def checks(r: TranslationResult) -> list[str]:
    """What the translator should know beyond the text: glossary terms, a template the version
    lacked, formatting that did not survive, and what else the answer checks flagged."""
    lines = []
    if r.terms:
        kept = [t for t in r.terms if t not in r.missing_terms]
        parts = [f"✅ {code(t.target)}" for t in kept] + [f"❌ {code(t.target)} missing (for {code(t.source)})"
                                                        for t in r.missing_terms]
        lines.append("📖 Glossary: " + " · ".join(parts))
    if r.note:
        lines.append(f"ℹ️ {cell(r.note)}.")
    if r.reference:
        lines.append(f"📚 A close entry of translation memory went to the version as a reference: {cell(r.reference)}.")
    if r.format_lost:
        lines.append("⚠️ Formatting not kept: " + "; ".join(cell(x) for x in r.format_lost))
    # The glossary and formatting lines above say more than their flags do.
    lines += [f"⚠️ {cell(f.message)}" for f in r.flags if f.check not in ("missing_terms", "format_lost")]
    return lines


def memory(own: Sequence[MemoryEntry], shared: Sequence[MemoryEntry], containing: str | None) -> str:
    """The reply to /tm list: the user's entries, then the shared ones."""
    def table(entries: Sequence[MemoryEntry]) -> str:
        rows = [f"| {cell(e.source)} | {cell(e.target)} | {e.src_lang} → {e.tgt_lang} | {cell(e.added_by)} "
                f"{e.added_at:%Y-%m-%d} ({e.origin}) |" for e in entries]
        return "\n".join(["| text | translation | pair | added |", "|---|---|---|---|", *rows])
    which = f" containing {code(containing)}" if containing else ""
    parts = [f"**Your memory**{which}: " + (f"\n\n{table(own)}" if own else "no entry."),
             f"**Shared memory**{which}: " + (f"\n\n{table(shared)}" if shared else "no entry."),
             "Add one with `/tm add TEXT = TRANSLATION [for LANG]`; a text in memory is answered from it at once "
             "(your entry before a shared one)."]
    return "\n\n".join(parts)


def glossary(own: Sequence[Term], shared: Sequence[Term]) -> str:
    def table(terms: Sequence[Term]) -> str:
        rows = [f"| {cell(t.source)} | {cell(t.target)} | {NAMES.get(t.lang, t.lang) if t.lang else 'every target'} |"
                for t in terms]
        return "\n".join(["| term | translation | for |", "|---|---|---|", *rows])
    parts = [f"**Your glossary** ({len(own)} terms)", table(own) if own else "_Empty._ Add a term with "
             "`/glossary add SOURCE = TARGET [for LANG]`."]
    if shared:
        parts += [f"**Shared glossary** ({len(shared)} terms, kept by admins; yours wins where both have a term)",
                  table(shared)]
    return "\n\n".join(parts)


def answer(partial: str, result: TranslationResult | None, error: str | None, stopped: bool,
           route: RouteInfo | None = None) -> str:
    """The final text of an answer: the translation, then its language pair, where it came from,
    and what the checks found; or why it stopped."""
    body = result.text if result is not None else partial
    source = f" (from {code(route.version)})" if route is not None and body else ""
    if result is not None:
        tail = "\n\n".join(footer(result))
        if not body.strip():  # e.g. a model that ends at once on a phrase it does not know
            tail += "\n\n_No text came back for this: the model may not know it. Try rephrasing it._"
    elif stopped:
        tail = (f"_Stopped: the partial translation above{source} is kept._" if body
                else "_Stopped before any text arrived._")
    else:
        why = f"⚠️ {text(error)}"
        tail = why if not body else f"{why}\n\n_The partial translation above{source} is kept._"
    return f"{body}\n\n{tail}" if body else tail


def translated_name(filename: str, target: str) -> str:
    """report.docx -> report.fr.docx"""
    stem, dot, ext = filename.rpartition(".")
    return f"{stem}.{target}.{ext}" if dot and stem else f"{filename}.{target}"


def document_progress(filename: str, count: int, total: int, restarted: str = "") -> str:
    text = f"📄 Translating {code(filename)}: `{_bar(count, total)}` {count} / {total} segments"
    if restarted:
        text += f"\n\n🔁 {cell(restarted)} The document is being translated again from its first segment, " \
                "so that one version translates all of it."
    return text


def document_done(filename: str, total: int, translated: int, result: TranslationResult | None, error: str,
                  stopped: bool) -> str:
    """What happened to a document: whole, stopped or failed, and which one version translated it."""
    if result is not None:
        lines = [f"📄 {code(filename)}: {translated} of {total} segments translated, all by one version, "
                 f"from the first to the last.", *footer(result)]
        if translated < total:
            lines.append(f"ℹ️ {total - translated} segments came back empty and keep their original words.")
        return "\n\n".join(lines)
    head = "⏹️ Stopped" if stopped else f"⚠️ {text(error)}"
    kept = (f"The {translated} segments translated by then are in the file below; the other {total - translated} "
            "keep their original words." if translated else "Nothing was translated.")
    return f"{head}\n\n📄 {code(filename)}: {kept}"


def waiting(info: WaitInfo) -> str:
    return (f"⏳ **Waiting for a model version to be ready** ({info.waited_s:.0f} s so far). {text(info.detail)}\n\n"
            "Your text will be translated as soon as one is ready; there is no need to send it again.")


# loading --------------------------------------------------------------------
def _where(v: VersionStatus) -> str:
    """Where a version runs: its process, or the remote server it is served by."""
    return f"served at {text(v.url)}" if v.url else f"pid {_dash(v.pid)}, port {_dash(v.port)}"


def load_started(v: VersionStatus) -> str:
    where = f" (served at {text(v.url)})" if v.url else f" on port {v.port}" if v.port else ""
    name = v.name
    return (f"Loading {code(name)}{where} in the background. Progress shows below; "
            "the chat stays usable meanwhile, for you and everyone else.")


def load_progress(p: Progress) -> str:
    v = p.version
    if v is None:
        return f"{code(p.name)} · waiting for its process · {duration(p.elapsed_s)}"
    lines = [f"**{cell(v.name)}** is **{cell(v.state)}** · {duration(p.elapsed_s)}",
             _where(v).replace(", ", " · ")]
    if v.last_line:
        lines.append(f"last log line: {code(v.last_line[:200])}")
    return "\n\n".join(lines)


def load_finished(p: Progress, tail: Sequence[str]) -> str:
    v = p.version
    if p.phase == "ready" and v is not None:
        return (f"✅ {code(v.name)} is ready after {duration(p.elapsed_s)} ({_where(v)}). "
                f"Send traffic to it with `/switch {v.name}` or `/canary {v.name} 10`.")
    if p.phase == "failed":
        reason = v.reason if v and v.reason else "no reason was given"
        failed = f"❌ {code(p.name)} failed to start after {duration(p.elapsed_s)}: {text(reason)}"
        if tail:
            failed += f"\n\nLast log lines:\n\n{block(tail)}"
        recipe = "--url URL ..." if v and v.url else "MODEL_PATH ..."
        return failed + (f"\n\nFix the recipe with `/load {p.name} {recipe}`, "
                       f"or try it again as it is with `/load {p.name}`.")
    return f"{code(p.name)} stopped loading (it was unloaded)."


# help -----------------------------------------------------------------------
USER_HELP = """**Baton translates what you type.**

- Pick the languages under **From** and **To**, below the message box. The source language is detected by default; every answer names its pair.
- Keep your own terms: `/glossary add station = gare [for fr]`, `/glossary list`, `/glossary remove station`. Each answer is checked for them.
- Markdown, code, links, HTML tags and placeholders such as `{name}` or `%s` are kept as they are.
- Drop a `.txt`, `.md`, `.srt`, `.html` or `.docx` file into the chat to get it back translated, with the same structure.
- Your last messages go with each new one as context, for versions that can use it (switch it off in the settings).
- Press **Stop** to end an answer early: the part already translated is kept.
- Every answer says which model version produced it and how long it took.
- Your conversations are kept; find them in the sidebar."""  # noqa: E501 - Markdown, one line per item

ADMIN_HELP = """**Admin commands** (type them, or pick one from the `/` menu; anything else is translated)

| command | what it does |
|---|---|
| `/load NAME MODEL_PATH [vLLM flags] [--template TEXT] [--template-terminology TEXT] [--template-contextual TEXT] [--template-formatted TEXT] [--term-format TEXT] [--max-tokens N]` | register a version and start it in the background |
| `/load NAME --url URL [--served-model M] [--api-key-env VAR]` | a version served elsewhere (URL under BATON_ALLOWED_REMOTE; the key from the variable VAR, never typed here) |
| `/load NAME` | start a registered version again |
| `/switch NAME [--force]` | send every new request to a ready version |
| `/rollback` | switch back to the previous version (never gated: the way back) |
| `/canary NAME PERCENT` · `/canary abort` | send PERCENT % of conversations to NAME · stop that |
| `/promote [--force]` | make the canary the active version |
| `/rollout NAME [--steps 5,25,50,100] [--step-s S] [--step-requests N]` | ramp NAME up as the canary step by step; each step is judged against the active version on live traffic (errors, first-token p95, thumbs down, shadow agreement): a failed check moves traffic back at once, the last step promotes |
| `/rollout status` · `/rollout abort` | where the rollout is and what it decides next · stop it, traffic back to the active version |
| `/shadow NAME PERCENT` · `/shadow off` · `/shadow` | also send a copy of PERCENT % of requests to NAME, after the user's answer, and compare its answers (chrF), errors and latency with the users' · stop that · its statistics |
| `/eval NAME [SET]` · `/eval` | score a version on an evaluation set (default: the gate set) · the sets and latest scores |
| `/unload NAME` | let its requests finish, then stop the version |
| `/status` | versions, their processes and traffic |
| `/logs NAME [N]` | the last N (default 50) log lines of a version |
| `/audit [N] [--action ACTION] [--actor WHO]` | the last N (default 20) admin actions, of one action or actor |
| `/users add NAME PASSWORD [admin\\|user]` · `/users remove NAME` · `/users list` | accounts; removing one ends its sessions and deletes its history, files and glossary |
| `/keys add NAME [user\\|admin]` · `/keys revoke NAME` · `/keys list` | API keys for `/v1` (user) and `/admin/v1` (admin) |
| `/glossary shared add SOURCE = TARGET [for LANG]` · `/glossary shared remove SOURCE [for LANG]` | the glossary every user gets (a user's own term wins) |

A relative MODEL_PATH is under the model root (BATON_MODEL_ROOTS). Quote arguments with spaces.
A template uses `{source_lang}`, `{target_lang}` and `{text}`; write `\\n` for a line break, e.g.
`/load v3 demo-v3 --dtype float32 --template "Translate from {source_lang} to {target_lang}:\\n{text}\\n"`.
`--max-tokens N` caps the length of each answer; without it an answer may fill what the context leaves.
A terminology template also has `{terms}` (one line per glossary term that occurs in the text, written by
`--term-format`, default `{source_term} → {target_term}`), a contextual one `{context}` (the user's last turns);
a formatted one gets text with markup in it. A version without the template a request needs gets the plain one.
With a gate set (BATON_GATE_SET), `/switch`, `/promote` and a rollout's last step refuse a version without a
current `/eval` on it, or whose chrF is more than BATON_GATE_MAX_DROP below the active version's; `--force`
overrides (audited)."""  # noqa: E501 - Markdown table rows cannot wrap
