"""The `baton` command: every admin action of the chat, over Baton's admin API, for people and pipelines.

Human tables on stdout by default; `--json` prints the API's JSON instead. Errors go to stderr,
and the exit code says what kind of failure it was (client.Exit).
"""
from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from .client import Client, CliError, Exit

EXIT_CODES = ("Exit codes: 0 ok · 1 refused by Baton (conflict, invalid, not found; the reason on stderr) · "
              "2 usage error · 3 cannot reach Baton, or a server error (5xx, 503) · 4 no key, a wrong key, "
              "not an admin key, or too many wrong keys · 5 wait-ready (or rollout --wait) timed out · 6 the version "
              "failed to start · 7 the rollout was aborted.")

app = typer.Typer(
    name="baton",
    help="Operate Baton (load, switch, canary, shadow, roll back) through its admin API /admin/v1.",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    add_completion=False,
    # A traceback's locals would include the API key.
    pretty_exceptions_show_locals=False,
)
keys_app = typer.Typer(help="API keys: list, add (the secret is shown once), revoke.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
rollout_app = typer.Typer(help="Progressive rollouts: start (ramp a version up, judged on live traffic), status, "
                               "abort.", no_args_is_help=True)
app.add_typer(rollout_app, name="rollout")
tm_app = typer.Typer(help="The shared translation memory: list, add, remove, import and export TMX.",
                     no_args_is_help=True)
app.add_typer(tm_app, name="tm")

JsonOut = Annotated[bool, typer.Option("--json", help="Print the API's JSON (for scripts) instead of a table.")]
Timeout = Annotated[float, typer.Option(min=0, help="Seconds to wait for ready before giving up (exit 5).")]
Lines = Annotated[int, typer.Option("-n", "--lines", min=1, help="How many lines or events.")]
Force = Annotated[bool, typer.Option("--force", help="Make the change even if the quality gate refuses it "
                                                     "(audited as forced).")]


class Role(StrEnum):  # typer offers the values as the choices
    user = "user"
    admin = "admin"


@dataclass(frozen=True)
class Target:
    url: str
    api_key: str | None


@app.callback()
def main(
    ctx: typer.Context,
    url: Annotated[str, typer.Option(envvar="BATON_URL", help="Baton's base URL.")] = "http://127.0.0.1:8000",
    api_key: Annotated[str | None, typer.Option(
        envvar="BATON_API_KEY", show_default=False,
        help="An admin API key. Prefer the BATON_API_KEY variable: an argument is visible to other local "
             "users (ps) and stays in shell history.")] = None,
) -> None:
    ctx.obj = Target(url, api_key)


def _client(ctx: typer.Context) -> Client:
    target: Target = ctx.obj
    return Client(target.url, target.api_key)


def _show(data: Any, json_out: bool, human: str) -> None:
    typer.echo(json.dumps(data, indent=2) if json_out else human)


def _cell(value: object) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}"
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    cells = [list(headers), *([_cell(v) for v in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def _deployment_line(d: dict[str, Any]) -> str:
    """GET /deployment and every deployment change answer the same shape."""
    canary = f"{d['canary']} ({d['canary_percent']} %)" if d.get("canary") else None
    shadow = f" · shadow {d['shadow']} ({d['shadow_percent']} %)" if d.get("shadow") else ""
    return (f"active {_cell(d.get('active'))} · canary {_cell(canary)} · standby {_cell(d.get('standby'))}{shadow}"
            f" · by {_cell(d.get('updated_by'))} at {_cell(d.get('updated_at'))}")


def _shadow_stats(d: dict[str, Any]) -> str:
    """The shadow's statistics in a line; "" when there is no shadow."""
    s = d.get("shadow_stats")
    if not s:
        return ""
    agreement = "-" if s["agreement"] is None else f"{s['agreement']:.1f}"
    return (f"shadow {s['version']}: {s['samples']} samples · agreement chrF {agreement} · {s['errors']} errors"
            f" · p95 {_cell(s['p95_ms'])} ms against {_cell(s['primary_p95_ms'])} ms for the users' answers"
            f" · {s['skipped']} skipped")


# deployment ------------------------------------------------------------------------------
@app.command()
def status(ctx: typer.Context, json_out: JsonOut = False) -> None:
    """Which version is active, canary and standby, and every version's process and traffic."""
    c = _client(ctx)
    deployment, versions = c.get("/deployment"), c.get("/versions")
    rows = [(v["name"], v["state"], v["role"], v["desired"], v["pid"], v.get("url") or v["port"], v["uptime_s"],
             v["in_flight"],
             v["served"], v["errors"], v["restarts"], v["reason"]) for v in versions]
    human = "\n".join(filter(None, [
        f"{deployment['status']}: {_deployment_line(deployment)}", deployment.get("detail"),
        _shadow_stats(deployment), "",
        table(("NAME", "STATE", "ROLE", "DESIRED", "PID", "PORT/URL", "UP S", "IN FLIGHT", "SERVED", "ERRORS",
               "RESTARTS", "REASON"), rows) if rows else "No version is registered yet: baton load NAME MODEL_PATH."]))
    _show({"deployment": deployment, "versions": versions}, json_out, human)


def _change(ctx: typer.Context, method: str, path: str, body: dict[str, Any] | None, json_out: bool) -> None:
    """A deployment change; prints the deployment it left."""
    d = _client(ctx).call(method, path, json=body)
    _show(d, json_out, _deployment_line(d))


def _share(ctx: typer.Context, role: str, name: str, percent: int | None, stop: str, json_out: bool) -> None:
    """`ROLE NAME PERCENT` gives a version that role for a share of traffic; `ROLE STOP` ends it."""
    path = f"/deployment/{role}"
    if percent is not None:
        _change(ctx, "POST", path, {"name": name, "percent": percent}, json_out)
    elif name == stop:
        _change(ctx, "DELETE", path, None, json_out)
    else:
        raise typer.BadParameter(f"give a PERCENT, or `{role} {stop}` to end the {role}", param_hint="PERCENT")


@app.command()
def switch(ctx: typer.Context, name: str, force: Force = False, json_out: JsonOut = False) -> None:
    """Send all new requests to a ready version (the current one stays loaded as standby). With a gate
    set, the version needs a current evaluation no worse than the active version's (see `baton eval`)."""
    _change(ctx, "POST", "/deployment/switch", {"name": name, "force": force}, json_out)


@app.command()
def rollback(ctx: typer.Context, json_out: JsonOut = False) -> None:
    """Switch back to the standby (previous) version. Never gated: it is the way back."""
    _change(ctx, "POST", "/deployment/rollback", None, json_out)


@app.command()
def canary(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="A ready version, or `abort` to end the canary.")],
    percent: Annotated[int | None, typer.Argument(min=1, max=99, help="Share of conversations, 1-99.")] = None,
    json_out: JsonOut = False,
) -> None:
    """`canary NAME PERCENT` sends a share of conversations to a version; `canary abort` ends it."""
    _share(ctx, "canary", name, percent, "abort", json_out)


@app.command()
def promote(ctx: typer.Context, force: Force = False, json_out: JsonOut = False) -> None:
    """Make the canary the active version (quality-gated like switch)."""
    _change(ctx, "POST", "/deployment/promote", {"force": force}, json_out)


@app.command("eval")
def evaluate(
    ctx: typer.Context,
    name: str,
    set_name: Annotated[str | None, typer.Option("--set", help="An evaluation set; default: the gate set.")] = None,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for the scores.")] = 1800,
    json_out: JsonOut = False,
) -> None:
    """Translate an evaluation set with a version (its own backend, outside live traffic), score it
    (chrF, BLEU, exact match per language pair and overall) and store the scores for the gate."""
    ev = _client(ctx).call("POST", f"/versions/{name}/evaluations", json={"set": set_name}, read_timeout_s=timeout)

    def row(label: str, s: dict[str, Any]) -> tuple[object, ...]:
        return label, s["segments"], f"{s['chrf']:.1f}", f"{s['bleu']:.1f}", f"{s['exact']:.0%}"

    rows = [row(f"{p['src_lang']}->{p['tgt_lang']}", p["scores"]) for p in ev["pairs"]]
    latency = f"latency p50 {_cell(ev['latency_p50_ms'])} ms, p95 {_cell(ev['latency_p95_ms'])} ms"
    human = "\n".join([
        f"{name} on {ev['set_name']}: chrF {ev['overall']['chrf']:.1f} ({ev['rows']} rows, {ev['errors']} errors, "
        f"{latency})", "", table(("PAIR", "ROWS", "CHRF", "BLEU", "EXACT"), [*rows, row("overall", ev["overall"])])])
    _show(ev, json_out, human)


@app.command()
def shadow(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(
        help="A ready version, or `off` to stop the shadow; omit it to see the shadow's statistics.")] = None,
    percent: Annotated[int | None, typer.Argument(min=1, max=100, help="Share of requests copied, 1-100.")] = None,
    json_out: JsonOut = False,
) -> None:
    """`shadow NAME PERCENT` also sends a copy of a share of requests to a version, after the users' answers,
    and compares its answers; `shadow off` stops it; `shadow` shows its statistics."""
    if name is None:
        d = _client(ctx).get("/deployment")
        _show(d, json_out, _shadow_stats(d) or "No version is shadowing.")
        return
    _share(ctx, "shadow", name, percent, "off", json_out)


# versions --------------------------------------------------------------------------------
def _wait_ready(c: Client, name: str, timeout: float) -> dict[str, Any]:
    """Poll until the version is ready, or Baton has given up on starting it."""
    deadline = time.monotonic() + timeout
    shown = None
    while True:
        v: dict[str, Any] = c.get(f"/versions/{name}")
        state = v["state"]
        if state != shown:  # progress for people; stdout stays for the result
            typer.echo(f"{name}: {state}" + (f" ({v['reason']})" if v["reason"] else ""), err=True)
            shown = state
        if state == "ready":
            return v
        if v["desired"] == "unloaded":
            raise CliError(Exit.REFUSED, f"Version '{name}' is not loaded ({state}). Load it: baton load {name}")
        if v["gave_up"]:
            raise CliError(Exit.FAILED, f"Version '{name}' failed to start: {v['reason']} "
                                        f"See `baton logs {name}`, fix the recipe and load it again.")
        left = deadline - time.monotonic()
        if left <= 0:
            raise CliError(Exit.TIMEOUT, f"Version '{name}' is not ready after {timeout:g} s (state {state}). "
                                         "It keeps loading; wait again or see `baton logs NAME`.")
        time.sleep(min(0.5, left))


@app.command()
def load(
    ctx: typer.Context,
    name: str,
    model_path: Annotated[str | None, typer.Argument(
        help="Model directory under BATON_MODEL_ROOTS; registers (or re-registers) the version. "
             "Omit it to load the recipe saved for NAME.")] = None,
    url: Annotated[str | None, typer.Option(
        "--url", help="Instead of MODEL_PATH: a remote version, served by an OpenAI-compatible server that runs "
                      "elsewhere (under BATON_ALLOWED_REMOTE); Baton never starts or stops it.")] = None,
    served_model: Annotated[str | None, typer.Option(
        "--served-model", help="The model name the server serves (default: NAME).")] = None,
    api_key_env: Annotated[str | None, typer.Option(
        "--api-key-env", help="The environment variable, where Baton runs, holding the remote server's API key "
                              "(one of BATON_REMOTE_KEY_ENVS); never the key itself.")] = None,
    flag: Annotated[list[str] | None, typer.Option(
        "--flag", help="vLLM flags from BATON_ALLOWED_FLAGS, repeatable: --flag '--dtype bfloat16'.")] = None,
    template: Annotated[str | None, typer.Option(
        help="Prompt template with {source_lang}, {target_lang} and {text}.")] = None,
    template_for: Annotated[list[str] | None, typer.Option(
        "--template-for", help="A capability's template, repeatable: terminology=TEXT (with {terms}), "
                               "contextual=TEXT (with {context}), formatted=TEXT, term=TEXT (one glossary line, "
                               "with {source_term} and {target_term}).")] = None,
    max_tokens: Annotated[int | None, typer.Option(min=1, help="Cap on each answer's tokens.")] = None,
    on_wrong_language: Annotated[str | None, typer.Option(
        "--on-wrong-language", help="An answer not in the target language: flag (warn, the default) or "
                                    "retranslate (once, by another ready version).")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until it is ready, as wait-ready does.")] = False,
    timeout: Timeout = 600,
    json_out: JsonOut = False,
) -> None:
    """Start a version in the background (its process starts, then warms up); the chat keeps serving."""
    body: dict[str, Any] = {"name": name}
    templates = dict(_capability(t) for t in template_for or [])
    if model_path is not None or url is not None:
        body.update(model_path=model_path, url=url, served_model=served_model, api_key_env=api_key_env,
                    flags=[t for f in flag or [] for t in shlex.split(f)],
                    template=template, templates=templates or None, max_tokens=max_tokens,
                    on_wrong_language=on_wrong_language)
    elif (flag or template is not None or templates or max_tokens is not None or served_model or api_key_env
          or on_wrong_language):
        raise typer.BadParameter("--flag, --template, --template-for, --max-tokens, --served-model, --api-key-env and "
                                 "--on-wrong-language need MODEL_PATH or --url (they register a new recipe)")
    c = _client(ctx)
    v = c.post("/versions", body)
    if wait:
        v = _wait_ready(c, name, timeout)
    human = (f"{name} is ready ({_where(v)})." if v["state"] == "ready" else
             f"Loading {name} ({v['state']}). `baton wait-ready {name}` waits until it is ready.")
    _show(v, json_out, human)


def _where(v: dict[str, Any]) -> str:
    return f"served at {v['url']}" if v.get("url") else f"pid {v['pid']}, port {v['port']}"


def _capability(option: str) -> tuple[str, str]:
    capability, eq, text = option.partition("=")
    if not eq or not capability:
        raise typer.BadParameter(f"--template-for takes CAPABILITY=TEXT, not {option[:40]!r}")
    return capability.strip(), text


@app.command("wait-ready")
def wait_ready(
    ctx: typer.Context,
    name: str,
    timeout: Timeout = 600,
    json_out: JsonOut = False,
) -> None:
    """Wait until a version is ready (exit 0); exit 6 if it failed to start, 5 on timeout."""
    v = _wait_ready(_client(ctx), name, timeout)
    _show(v, json_out, f"{name} is ready ({_where(v)}).")


@app.command()
def unload(ctx: typer.Context, name: str, json_out: JsonOut = False) -> None:
    """Drain a version that is not serving (bounded) and stop its process."""
    r = _client(ctx).delete(f"/versions/{name}")
    cut = "" if r["drained"] else ", cutting requests that did not finish in time"
    _show(r, json_out, f"Unloaded {name}{cut}.")


@app.command()
def logs(ctx: typer.Context, name: str, n: Lines = 50, json_out: JsonOut = False) -> None:
    """The last lines of a version's process log."""
    r = _client(ctx).get(f"/versions/{name}/logs", n=n)
    _show(r, json_out, "\n".join(r["lines"]))


@app.command()
def audit(ctx: typer.Context, n: Lines = 20, json_out: JsonOut = False,
          action: Annotated[str | None, typer.Option(help="Only this action, e.g. keys-add.")] = None,
          actor: Annotated[str | None, typer.Option(help="Only this actor, e.g. root or key:ci.")] = None) -> None:
    """The last admin actions, newest first: who did what, and how it ended."""
    only = {k: v for k, v in (("action", action), ("actor", actor)) if v is not None}
    events = _client(ctx).get("/audit", n=n, **only)
    rows = [(e["at"], e["actor"], e["action"], e["arguments"], e["outcome"], e["detail"]) for e in events]
    _show(events, json_out, table(("AT", "ACTOR", "ACTION", "ARGUMENTS", "OUTCOME", "DETAIL"), rows))


# keys ------------------------------------------------------------------------------------
@keys_app.command("list")
def keys_list(ctx: typer.Context, json_out: JsonOut = False) -> None:
    """Every key with its role (never a secret)."""
    keys = _client(ctx).get("/keys")
    rows = [(k["name"], k["role"], k["hint"] + "…", k["created_by"], k["created_at"], k["revoked_at"]) for k in keys]
    _show(keys, json_out, table(("NAME", "ROLE", "STARTS", "CREATED BY", "CREATED AT", "REVOKED AT"), rows))


@keys_app.command("add")
def keys_add(
    ctx: typer.Context,
    name: str,
    role: Annotated[Role, typer.Option(help="user: inference on /v1; admin: also the admin API.")] = Role.user,
    json_out: JsonOut = False,
) -> None:
    """Make a key; its secret goes to stdout, once."""
    made = _client(ctx).post("/keys", {"name": name, "role": role})
    typer.echo(f"baton: this is the only time the secret of key '{name}' ({role.value}) is shown; store it now.",
               err=True)
    _show(made, json_out, made["secret"])


@keys_app.command("revoke")
def keys_revoke(ctx: typer.Context, name: str, json_out: JsonOut = False) -> None:
    """Revoke a key at once."""
    k = _client(ctx).delete(f"/keys/{name}")
    _show(k, json_out, f"Revoked the key '{name}'.")


# translation memory ------------------------------------------------------------------------
@tm_app.command("list")
def tm_list(ctx: typer.Context, containing: Annotated[str | None, typer.Option(
        help="Only entries whose source contains this.")] = None, json_out: JsonOut = False) -> None:
    """The shared memory's entries."""
    found = _client(ctx).get("/memory", **({"containing": containing} if containing else {}))
    rows = [(e["source"], e["target"], f"{e['src_lang']} → {e['tgt_lang']}", e["added_by"], e["added_at"], e["origin"])
            for e in found]
    _show(found, json_out, table(("SOURCE", "TARGET", "PAIR", "ADDED BY", "ADDED AT", "HOW"), rows))


@tm_app.command("add")
def tm_add(ctx: typer.Context, source: str, target: str,
           source_lang: Annotated[str, typer.Option("--from", help="The source's language code, e.g. en.")],
           target_lang: Annotated[str, typer.Option("--for", help="The target's language code, e.g. fr.")],
           json_out: JsonOut = False) -> None:
    """Add (or replace) an entry: SOURCE is then answered with TARGET, without asking a model."""
    r = _client(ctx).call("POST", "/memory", json=[{"source": source, "target": target, "source_lang": source_lang,
                                                    "target_lang": target_lang}])
    _show(r, json_out, f"{'Added' if r['added'] else 'Replaced'}: {source} → {target}.")


@tm_app.command("remove")
def tm_remove(ctx: typer.Context, source: str, target_lang: Annotated[str | None, typer.Option(
        "--for", help="Only the entry into this language.")] = None, json_out: JsonOut = False) -> None:
    """Remove the entries for SOURCE."""
    params = {"source": source, **({"target_lang": target_lang} if target_lang else {})}
    r = _client(ctx).call("DELETE", "/memory", params=params)
    _show(r, json_out, f"Removed {r['removed']} entries.")


@tm_app.command("import")
def tm_import(ctx: typer.Context, path: Path, json_out: JsonOut = False) -> None:
    """Import a TMX file into the shared memory, whole or not at all."""
    r = _client(ctx).call("POST", "/memory/import", content=path.read_bytes(),
                          headers={"Content-Type": "application/x-tmx+xml"})
    _show(r, json_out, f"Imported {path.name}: {r['added']} added, {r['replaced']} replaced.")


@tm_app.command("export")
def tm_export(ctx: typer.Context, path: Path) -> None:
    """Write the shared memory to PATH as TMX 1.4."""
    path.write_bytes(_client(ctx).call("GET", "/memory/export", raw=True))
    typer.echo(f"Wrote {path}.")


# rollouts --------------------------------------------------------------------------------
def _rollout_text(r: dict[str, Any]) -> str:
    steps = " → ".join(f"{p} %" for p in r["steps"])
    lines = [f"rollout of {r['candidate']} (replacing {r['baseline']}): {r['state']}, step {r['step']} of "
             f"{len(r['steps'])} ({steps})"]
    if r["state"] == "running":
        lines.append(r["next_decision"])
    elif r["detail"]:
        lines.append(r["detail"])
    rows = [(e["step"] + 1, f"{e['percent']} %", e["verdict"], e["canary"]["answers"], "; ".join(e["reasons"]))
            for e in r["timeline"]]
    if rows:
        lines += ["", table(("STEP", "SHARE", "VERDICT", "CANARY ANSWERS", "WHY"), rows)]
    return "\n".join(lines)


@rollout_app.command("start")
def rollout_start(
    ctx: typer.Context,
    name: str,
    steps: Annotated[str | None, typer.Option(help="Canary percents ending with 100, e.g. 5,25,50,100.")] = None,
    step_s: Annotated[float | None, typer.Option(min=1, help="Judge each step after this many seconds...")] = None,
    step_requests: Annotated[int | None, typer.Option(
        min=0, help="...or after this many canary answers, whichever comes first (0: by time only).")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until it passes (exit 0) or aborts (exit 7).")] = False,
    timeout: Annotated[float, typer.Option(min=0, help="Seconds --wait waits before giving up (exit 5).")] = 3600,
    json_out: JsonOut = False,
) -> None:
    """Ramp NAME up as the canary step by step; each step is judged against the active version on live
    traffic, a failed check moves traffic back at once, and the last step promotes."""
    try:
        percents = [int(p) for p in steps.split(",")] if steps else None
    except ValueError:
        raise typer.BadParameter(f"{steps!r} is not a list of percents such as 5,25,50,100",
                                 param_hint="--steps") from None
    c = _client(ctx)
    r = c.post("/rollout", {"name": name, "steps": percents, "step_s": step_s, "step_requests": step_requests})
    if wait:
        deadline = time.monotonic() + timeout
        step = None
        while r["state"] == "running":
            if r["step"] != step:
                typer.echo(f"{name}: step {r['step']} of {len(r['steps'])} ({r['percent']} %)", err=True)
                step = r["step"]
            if time.monotonic() > deadline:
                raise CliError(Exit.TIMEOUT, f"The rollout of {name} is still running after {timeout:g} s; "
                                             "it goes on: `baton rollout status`.")
            time.sleep(1)
            r = c.get("/rollout")
    _show(r, json_out, _rollout_text(r))
    if wait and r["state"] != "passed":
        raise CliError(Exit.ABORTED, f"The rollout of {name} was aborted: {r['detail']}")


@rollout_app.command("status")
def rollout_status(ctx: typer.Context, json_out: JsonOut = False) -> None:
    """The running rollout (or the last one): step, numbers so far, next decision, every analysis."""
    r = _client(ctx).get("/rollout")
    _show(r, json_out, _rollout_text(r))


@rollout_app.command("abort")
def rollout_abort(ctx: typer.Context, json_out: JsonOut = False) -> None:
    """Stop the running rollout: traffic back to the active version at once."""
    r = _client(ctx).delete("/rollout")
    _show(r, json_out, _rollout_text(r))


def run() -> None:
    """The console script `baton`: a refusal or an unreachable Baton ends here, as a sentence and an exit code."""
    try:
        app(prog_name="baton")
    except CliError as err:
        typer.echo(f"baton: {err.message}", err=True)
        sys.exit(int(err.code))
