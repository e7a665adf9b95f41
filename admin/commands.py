"""The admin console's grammar and dispatch: a chat line in, engine calls, a markdown reply out.

Both ways a command arrives are accepted: typed as text ("/switch v2", message.command is
None) and picked from the command popup (command="switch", content="v2"). Arguments are
split with shlex, never handed to a shell. The caller's role is read from the accounts table
on every command, so the per-session command popup is cosmetic and a forged command field
meets the same check as a typed command.
"""
from __future__ import annotations

import logging
import re
import shlex
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TypedDict

from engine import MEMORY_SHARED, BatonError, Engine, NewMemoryEntry, detect, masking
from engine.languages import NAMES
from engine.validation import MAX_TOKENS_LIMIT

from . import render, shield
from .accounts import Account, Accounts, check_username
from .denials import Denials
from .glossary import SHARED, Glossary
from .keys import Audited, Keys
from .retire import Retirement

log = logging.getLogger("baton.admin")

NOT_ALLOWED = "🚫 You are not allowed to run admin commands. Anything else you type is translated."
TYPED_RE = re.compile(r"^/([A-Za-z][A-Za-z0-9_-]{0,31})(?:\s+(.*))?$", re.S)


@dataclass(frozen=True)
class Spec:
    usage: str
    description: str
    icon: str
    admin: bool = True
    mutating: bool = False  # changes state: run to completion even if the chat task is stopped


COMMANDS: dict[str, Spec] = {
    "help": Spec("/help", "What you can do here", "info", admin=False),
    "status": Spec("/status", "Versions, processes and traffic", "activity"),
    "tm": Spec("/tm add SOURCE = TARGET [for LANG] [from LANG] | list [TEXT] | remove SOURCE [for LANG] | import "
               "(attach a .tmx) | export (admins: /tm shared ...)", "Translation memory: texts answered as approved",
               "book-open", admin=False, mutating=True),
    "glossary": Spec("/glossary add SOURCE = TARGET [for LANG] | remove SOURCE [for LANG] | list"
                     " (admins: /glossary shared add|remove ...)",
                     "Terms that must be translated your way", "book-a", admin=False, mutating=True),
    "load": Spec("/load NAME [MODEL_PATH [vLLM flags] | --url URL [--served-model M] [--api-key-env VAR]] "
                 "[--template TEXT] [--template-terminology TEXT] [--template-contextual TEXT] "
                 "[--template-formatted TEXT] [--term-format TEXT] [--max-tokens N] "
                 "[--on-wrong-language flag|retranslate]",
                 "Register and start a version (--url: one served elsewhere)", "download", mutating=True),
    "switch": Spec("/switch NAME [--force]", "Send all new requests to a ready version", "repeat", mutating=True),
    "rollback": Spec("/rollback", "Switch back to the previous version", "undo", mutating=True),
    "canary": Spec("/canary NAME PERCENT | /canary abort", "Send a share of conversations to a version", "bird",
                   mutating=True),
    "promote": Spec("/promote [--force]", "Make the canary the active version", "arrow-up", mutating=True),
    "shadow": Spec("/shadow NAME PERCENT | /shadow off | /shadow",
                   "Copy a share of requests to a version, unseen, and compare its answers", "ghost", mutating=True),
    "unload": Spec("/unload NAME", "Drain and stop a version", "power", mutating=True),
    # Not `mutating`: Stop cancels an evaluation, and a cancelled one stores nothing.
    "eval": Spec("/eval [NAME [SET]]", "Score a version on an evaluation set (alone: the sets and scores)", "gauge"),
    "logs": Spec("/logs NAME [N]", "Last log lines of a version", "scroll-text"),
    "audit": Spec("/audit [N] [--action ACTION] [--actor WHO]", "Last admin actions", "shield"),
    "users": Spec("/users add NAME PASSWORD [admin|user] | remove NAME (deletes their history) | list",
                  "Manage accounts", "users",
                  mutating=True),
    "keys": Spec("/keys add NAME [user|admin] | revoke NAME | list", "Manage API keys", "key-round", mutating=True),
    "rollout": Spec("/rollout NAME [--steps 5,25,50,100] [--step-s S] [--step-requests N] | status | abort",
                    "Ramp a version up step by step, judged on live traffic", "trending-up", mutating=True),
}


@dataclass(frozen=True)
class Invocation:
    name: str  # lower-case, without the slash
    argtext: str
    typed: bool  # typed as text (True) or sent in the command field (False)

    @property
    def known(self) -> bool:
        return self.name in COMMANDS


@dataclass(frozen=True)
class Button:
    label: str
    command: str  # run as if typed, e.g. "/switch v2"


@dataclass(frozen=True)
class Reply:
    markdown: str
    ok: bool = True
    buttons: tuple[Button, ...] = ()
    follow_load: str | None = None  # a version whose load the chat should follow live
    redacted: str | None = None  # the command as it may be shown and stored (a password masked)
    shown_once: str | None = None  # the reply holds a secret: store this instead, show the reply once
    download: tuple[str, bytes] | None = None  # a file that comes with the reply: (name, content)


class Usage(Exception):
    """Wrong arguments for a command: the reply shows its usage."""


ShowProgress = Callable[[str], Awaitable[None]]  # markdown that replaces the previous progress shown


async def _unseen(_: str) -> None:
    """Progress nobody watches."""


@dataclass
class Context:
    engine: Engine
    accounts: Accounts
    keys: Keys
    actor: Account
    progress: ShowProgress = _unseen  # the chat shows it in one message, updated in place
    glossary: Glossary | None = None
    retirement: Retirement | None = None  # what removing an account does beyond its row
    files: tuple[tuple[str, bytes], ...] = ()  # the files sent with the command: (name, content)


class CommandEntry(TypedDict):
    """Chainlit's CommandDict (chainlit.types), without importing Chainlit here."""

    id: str
    description: str
    icon: str
    button: bool | None
    persistent: bool | None


def command_list(is_admin: bool) -> list[CommandEntry]:
    """The entries for the chat's command popup."""
    return [
        {"id": name, "description": spec.description, "icon": spec.icon, "button": False, "persistent": False}
        for name, spec in COMMANDS.items()
        if is_admin or not spec.admin
    ]


def parse(content: str, command: str | None, *, is_admin: bool) -> Invocation | None:
    """The command in a chat message, or None when the message is text to translate.

    A typed "/word" that is no command is translated for users (it may be a path or a
    quote) but answered with "unknown command" for admins, who more likely mistyped."""
    if command:
        return Invocation(command.strip().lstrip("/").lower(), content or "", typed=False)
    m = TYPED_RE.match((content or "").strip())
    if not m:
        return None
    inv = Invocation(m.group(1).lower(), m.group(2) or "", typed=True)
    if not inv.known and not is_admin:
        return None
    return inv


def redact(inv: Invocation) -> str | None:
    """The command as it may be kept, with the password of `/users add` and any credential in a URL
    or a secret option (engine.masking) masked; None when nothing is secret."""
    words = inv.argtext.split()
    if inv.name == "users" and words and words[0].lower() == "add":
        shown = words[:2] + (["••••••••"] if len(words) > 2 else []) + words[3:4]
        return "/users " + " ".join(shown)
    line = f"/{inv.name} {inv.argtext}".rstrip()
    masked = masking.mask(line)
    return masked if masked != line else None


async def execute(engine: Engine, accounts: Accounts, keys: Keys, username: str, inv: Invocation,
                  progress: ShowProgress = _unseen, glossary: Glossary | None = None,
                  retirement: Retirement | None = None, files: Sequence[tuple[str, bytes]] = ()) -> Reply:
    """Run one command for `username`. Never raises for bad input: the reply says what was wrong
    (a credential it repeats masked). A long command (/eval) shows how far it got through `progress`."""
    hidden = redact(inv)
    reply = await _execute(engine, accounts, keys, username, inv, progress, glossary, retirement, tuple(files))
    reply = replace(reply, markdown=masking.mask(reply.markdown))
    return replace(reply, redacted=hidden) if hidden else reply


async def _execute(engine: Engine, accounts: Accounts, keys: Keys, username: str, inv: Invocation,
                   progress: ShowProgress, glossary: Glossary | None, retirement: Retirement | None,
                   files: tuple[tuple[str, bytes], ...]) -> Reply:
    spec = COMMANDS.get(inv.name)
    if spec is None:
        return Reply(f"Unknown command {render.code('/' + inv.name[:32])}. Type `/help` for the list.", ok=False)
    actor = await accounts.get(username)
    if actor is None:
        return Reply("Your account no longer exists. Ask an admin.", ok=False)
    if spec.admin and not actor.is_admin:
        await _denials(engine).refused(username, "denied", {"command": inv.name, "typed": inv.typed})
        return Reply(NOT_ALLOWED, ok=False)
    try:
        args = shlex.split(inv.argtext)
    except ValueError as exc:
        return Reply(f"Could not read the arguments ({render.text(exc)}). Check the quotes.\n\nUsage: `{spec.usage}`",
                     ok=False)
    ctx = Context(engine, accounts, keys, actor, progress, glossary, retirement, files)
    work = HANDLERS[inv.name](ctx, args)
    try:
        if spec.mutating:  # Stop cancels the chat task
            return await shield.to_completion(work, (Usage,))
        return await work
    except Usage as exc:
        detail = f"{exc} " if str(exc) else ""
        return Reply(f"{detail}Usage: `{spec.usage}`", ok=False)
    except BatonError as exc:
        return Reply(f"**Refused:** {render.text(exc)}", ok=False)


_DENIALS: weakref.WeakKeyDictionary[Engine, Denials] = weakref.WeakKeyDictionary()


def _denials(engine: Engine) -> Denials:
    """A user's refused admin commands: one counted audit row per user and minute (admin/denials.py)."""
    if (found := _DENIALS.get(engine)) is None:
        found = _DENIALS[engine] = Denials(engine.record, engine.amend_record)
    return found


async def _audit(engine: Engine, actor: str, action: str, args: Mapping[str, object], outcome: str,
                 detail: str = "") -> None:
    try:
        await engine.record(actor, action, args, outcome, detail)
    except BatonError as exc:  # the refusal still stands; only its record is missing
        log.warning("could not audit %s by %s: %s", action, actor, exc)


def _int(raw: str, what: str, low: int, high: int) -> int:
    try:
        value = int(raw.rstrip("%"))
    except ValueError:
        raise Usage(f"{what} must be a whole number, not {render.code(raw[:20])}.") from None
    if not low <= value <= high:
        raise Usage(f"{what} must be between {low} and {high}, not {value}.")
    return value


def _arity(args: list[str], low: int, high: int) -> None:
    if not low <= len(args) <= high:
        raise Usage()


def _force(args: list[str]) -> tuple[list[str], bool]:
    """The arguments without `--force`, and whether it was there."""
    rest = [a for a in args if a != "--force"]
    return rest, len(rest) < len(args)


# handlers -------------------------------------------------------------------
async def _help(ctx: Context, args: list[str]) -> Reply:
    return Reply(render.ADMIN_HELP if ctx.actor.is_admin else render.USER_HELP)


async def _status(ctx: Context, args: list[str]) -> Reply:
    _arity(args, 0, 0)
    st = await ctx.engine.status()
    d = st.deployment
    buttons = tuple(Button(f"Switch to {v.name}", f"/switch {v.name}")
                    for v in st.versions if v.state == "ready" and v.name not in (d.active, d.canary))[:3]
    running = ctx.engine.rollout_status()
    text = render.status(st, await ctx.engine.scoreboard())
    if running is not None and running.record.state == "running":
        text += "\n\n" + render.rollout_line(running)
    return Reply(text, buttons=buttons)


@dataclass(frozen=True)
class LoadOptions:
    """Baton's own options on a /load line; the first other token is the model path, the rest vLLM flags."""

    model_path: str | None
    flags: list[str]
    url: str | None = None  # a remote version: its server's URL (under BATON_ALLOWED_REMOTE)
    served_model: str | None = None
    api_key_env: str | None = None  # the NAME of the variable holding the remote server's key
    template: str | None = None
    templates: dict[str, str] | None = None  # by capability, when any was given
    max_tokens: int | None = None
    on_wrong_language: str | None = None  # flag / retranslate (engine.types.WrongLanguagePolicy)


# --template-terminology TEXT etc.: the templates of a recipe beside the plain one
TEMPLATE_OPTIONS = {"--template-terminology": "terminology", "--template-contextual": "contextual",
                    "--template-formatted": "formatted", "--term-format": "term"}


def _take_options(tokens: list[str], names: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    """Baton's own `--opt VALUE` (or `--opt=value`) out of a command line; the other tokens, in order."""
    rest: list[str] = []
    values: dict[str, str] = {}
    i = 0
    while i < len(tokens):
        option, eq, value = tokens[i].partition("=")
        if option not in names:
            rest.append(tokens[i])
            i += 1
            continue
        if not eq:
            if i + 1 >= len(tokens):
                raise Usage(f"{option} needs a value after it (quote a value with spaces).")
            value, i = tokens[i + 1], i + 1
        values[option] = value
        i += 1
    return rest, values


REMOTE_OPTIONS = ("--url", "--served-model", "--api-key-env")


def _load_options(rest: list[str]) -> LoadOptions:
    """Take Baton's options (a remote server's, the templates, `--max-tokens N`) out of a /load line.
    A chat box cannot hold a line break inside one argument, so \\n stands for one in a template."""
    others, values = _take_options(rest, (*REMOTE_OPTIONS, "--template", "--max-tokens", "--on-wrong-language",
                                          *TEMPLATE_OPTIONS))
    policy = values.pop("--on-wrong-language", None)
    remote = {k: values.pop(k) for k in REMOTE_OPTIONS if k in values}
    texts = {k: v.replace("\\n", "\n") for k, v in values.items()}
    extra = {cap: texts[option] for option, cap in TEMPLATE_OPTIONS.items() if option in texts}
    max_tokens = values.get("--max-tokens")
    return LoadOptions(
        others[0] if others else None,
        others[1:],
        remote.get("--url"),
        remote.get("--served-model"),
        remote.get("--api-key-env"),
        texts.get("--template"),
        extra or None,
        _int(max_tokens, "--max-tokens", 1, MAX_TOKENS_LIMIT) if max_tokens is not None else None,
        policy,
    )


async def _load(ctx: Context, args: list[str]) -> Reply:
    if not args:
        raise Usage()
    name, rest = args[0], args[1:]
    who = ctx.actor.username
    if rest:
        opts = _load_options(rest)
        await ctx.engine.register(name, opts.model_path, url=opts.url, api_key_env=opts.api_key_env,
                                  served_name=opts.served_model, flags=opts.flags, prompt_template=opts.template,
                                  templates=opts.templates, max_tokens=opts.max_tokens,
                                  on_wrong_language=opts.on_wrong_language, actor=who)
    snap = await ctx.engine.load(name, actor=who)
    return Reply(render.load_started(snap), follow_load=name)


async def _switch(ctx: Context, args: list[str]) -> Reply:
    args, force = _force(args)
    _arity(args, 1, 1)
    d = await ctx.engine.switch(args[0], force=force, actor=ctx.actor.username)
    buttons = (Button(f"Roll back to {d.previous}", "/rollback"),) if d.previous else ()
    return Reply(render.switched("switch", d), buttons=buttons)


async def _rollback(ctx: Context, args: list[str]) -> Reply:
    _arity(args, 0, 0)
    d = await ctx.engine.rollback(actor=ctx.actor.username)
    return Reply(render.switched("rollback", d))


async def _canary(ctx: Context, args: list[str]) -> Reply:
    if args == ["abort"]:
        d = await ctx.engine.abort_canary(actor=ctx.actor.username)
        return Reply(render.switched("canary-abort", d))
    _arity(args, 2, 2)
    percent = _int(args[1], "PERCENT", 1, 99)
    d = await ctx.engine.canary(args[0], percent, actor=ctx.actor.username)
    return Reply(render.switched("canary", d),
                 buttons=(Button(f"Promote {d.canary}", "/promote"), Button("Abort canary", "/canary abort")))


async def _promote(ctx: Context, args: list[str]) -> Reply:
    args, force = _force(args)
    _arity(args, 0, 0)
    d = await ctx.engine.promote(force=force, actor=ctx.actor.username)
    return Reply(render.switched("promote", d))


async def _shadow(ctx: Context, args: list[str]) -> Reply:
    if not args:
        return Reply(render.shadow(ctx.engine.shadow_stats()))
    if args == ["off"]:
        last = ctx.engine.shadow_stats()
        d = await ctx.engine.stop_shadow(actor=ctx.actor.username)
        return Reply("\n\n".join((render.switched("shadow-off", d), render.shadow(last))))
    _arity(args, 2, 2)
    percent = _int(args[1], "PERCENT", 1, 100)
    d = await ctx.engine.shadow(args[0], percent, actor=ctx.actor.username)
    return Reply(render.switched("shadow", d),
                 buttons=(Button("Shadow statistics", "/shadow"), Button("Stop the shadow", "/shadow off")))


async def _unload(ctx: Context, args: list[str]) -> Reply:
    _arity(args, 1, 1)
    drained = await ctx.engine.unload(args[0], actor=ctx.actor.username)
    return Reply(render.unloaded(args[0], drained))


async def _eval(ctx: Context, args: list[str]) -> Reply:
    _arity(args, 0, 2)
    engine = ctx.engine
    gate_set = engine.settings.gate_set
    if not args:
        return Reply(render.eval_sets(await engine.eval_sets(), await engine.evaluations(limit=200), gate_set))
    name, set_name = args[0], args[1] if len(args) == 2 else None
    shown = -1

    async def on_progress(done: int, total: int) -> None:
        nonlocal shown
        step = render.progress_step(done, total)
        if step != shown:  # one update per step of the bar, not per row
            shown = step
            await ctx.progress(render.eval_progress(name, set_name or gate_set or "", done, total))

    ev = await engine.evaluate(name, set_name, actor=ctx.actor.username, on_progress=on_progress)
    active = engine.health().deployment.active
    found = await engine.evaluations(active, ev.set_name, limit=1) if active and active != name else []
    return Reply(render.evaluation(ev, active, found[0] if found else None, gate_set))


async def _logs(ctx: Context, args: list[str]) -> Reply:
    _arity(args, 1, 2)
    n = _int(args[1], "N", 1, 5000) if len(args) == 2 else 50
    return Reply(render.logs(args[0], await ctx.engine.logs(args[0], n)))


async def _audit_log(ctx: Context, args: list[str]) -> Reply:
    rest, only = _take_options(args, ("--action", "--actor"))
    _arity(rest, 0, 1)
    n = _int(rest[0], "N", 1, 1000) if rest else 20
    return Reply(render.audit(await ctx.engine.audit(n, only.get("--action"), only.get("--actor"))))


async def _users(ctx: Context, args: list[str]) -> Reply:
    if not args:
        raise Usage()
    sub, rest = args[0].lower(), args[1:]
    who = ctx.actor.username
    if sub == "list" and not rest:
        return Reply(render.accounts(await ctx.accounts.list()))
    if sub == "add" and len(rest) in (2, 3):
        name, password = rest[0], rest[1]
        role = rest[2].lower() if len(rest) == 3 else "user"
        audit_args = {"name": name, "role": role}  # never the password
        try:
            # What an earlier account of this name left behind is not the new person's.
            left = await _retirement(ctx).forget(name) if await ctx.accounts.get(check_username(name)) is None else None
            account = await ctx.accounts.add(name, password, role, created_by=who)
        except BatonError as exc:
            await _audit(ctx.engine, who, "users-add", audit_args, "refused", str(exc))
            raise
        earlier = f"an earlier account of this name: {left}" if left else ""
        await _audit(ctx.engine, who, "users-add", audit_args, "ok", earlier)
        return Reply(f"Added {render.code(account.username)} as {account.role}. They can log in now."
                     + (f" ({earlier}.)" if earlier else ""))
    if sub == "remove" and len(rest) == 1:
        try:
            gone = await ctx.accounts.remove(rest[0], actor=who)
        except BatonError as exc:
            await _audit(ctx.engine, who, "users-remove", {"name": rest[0]}, "refused", str(exc))
            raise
        try:
            forgotten = await _retirement(ctx).forget(gone.username)
        except BaseException as exc:  # the account is gone already: that much is audited, whatever stopped the rest
            await _audit(ctx.engine, who, "users-remove", {"name": gone.username}, "ok",
                         f"was {gone.role}; their history was not deleted ({type(exc).__name__}: {exc})")
            raise
        await _audit(ctx.engine, who, "users-remove", {"name": gone.username}, "ok", f"was {gone.role}; {forgotten}")
        return Reply(f"Removed {render.code(gone.username)}: their logins are refused from now on; {forgotten}. "
                     "A new account with this name starts with nothing of theirs.")
    raise Usage()


def _retirement(ctx: Context) -> Retirement:
    assert ctx.retirement is not None, "the chat passes what removing an account does"
    return ctx.retirement


async def _keys(ctx: Context, args: list[str]) -> Reply:
    sub, rest = (args[0].lower(), args[1:]) if args else ("", [])
    audited = Audited(ctx.engine, ctx.keys, ctx.actor.username)
    if sub == "list" and not rest:
        return Reply(render.api_keys(await ctx.keys.list()))
    if sub == "add" and len(rest) in (1, 2):
        made, secret = await audited.add(rest[0], rest[1].lower() if len(rest) == 2 else "user")
        shown = render.key_made(made, secret)
        return Reply(shown, shown_once=render.key_made(made, None))
    if sub == "revoke" and len(rest) == 1:
        gone = await audited.revoke(rest[0])
        return Reply(f"Revoked the key {render.code(gone.name)}. Requests with it are refused from now on.")
    raise Usage()


async def _rollout(ctx: Context, args: list[str]) -> Reply:
    who = ctx.actor.username
    if args == ["status"]:
        return Reply(render.rollout(ctx.engine.rollout_status()), buttons=_rollout_buttons(ctx))
    if args == ["abort"]:
        return Reply(render.rollout(await ctx.engine.abort_rollout(actor=who)))
    rest, opts = _take_options(args, ("--steps", "--step-s", "--step-requests"))
    if len(rest) != 1 or rest[0].startswith("-"):
        raise Usage()
    steps = None
    if "--steps" in opts:
        steps = [_int(p, "Each step", 1, 100) for p in opts["--steps"].split(",") if p.strip()]
    step_s = _int(opts["--step-s"], "--step-s", 1, 86_400) if "--step-s" in opts else None
    count = opts.get("--step-requests")
    step_requests = _int(count, "--step-requests", 0, 1_000_000) if count is not None else None
    view = await ctx.engine.start_rollout(rest[0], steps=steps, step_s=step_s, step_requests=step_requests, actor=who)
    return Reply(render.rollout(view), buttons=_rollout_buttons(ctx))


def _rollout_buttons(ctx: Context) -> tuple[Button, ...]:
    view = ctx.engine.rollout_status()
    if view is None or view.record.state != "running":
        return ()
    return (Button("Rollout status", "/rollout status"), Button("Abort rollout", "/rollout abort"))


async def _glossary(ctx: Context, args: list[str]) -> Reply:
    """`/glossary [shared] add SOURCE = TARGET [for LANG] | remove SOURCE [for LANG] | list`."""
    assert ctx.glossary is not None, "the chat passes its glossary store"
    shared = bool(args) and args[0] == "shared"
    if shared:
        args = args[1:]
        if not ctx.actor.is_admin:
            return Reply("🚫 Only admins keep the shared glossary. `/glossary add` keeps a term in yours.", ok=False)
    owner = SHARED if shared else ctx.actor.username
    whose = "the shared glossary" if shared else "your glossary"
    verb, rest = (args[0], args[1:]) if args else ("list", [])
    if verb == "list" and not rest:
        own = await ctx.glossary.terms(ctx.actor.username)
        common = await ctx.glossary.terms(SHARED)
        return Reply(render.glossary(own, common))
    lang = None
    if len(rest) >= 2 and rest[-2] == "for":
        rest, lang = rest[:-2], rest[-1]
    if verb == "add":
        if "=" not in rest:
            raise Usage("Separate the term and its translation with ` = `.")
        cut = rest.index("=")
        term, replaced = await ctx.glossary.add(owner, " ".join(rest[:cut]), " ".join(rest[cut + 1:]), lang)
        if shared:
            await _audit(ctx.engine, ctx.actor.username, "glossary-add", {"source": term.source, "lang": lang}, "ok")
        return Reply(f"{'Replaced' if replaced else 'Added'} in {whose}: {render.term(term)}. "
                     "It goes to every version that has a terminology template, and each answer is checked for it.")
    if verb == "remove" and rest:
        await ctx.glossary.remove(owner, " ".join(rest), lang)
        if shared:
            await _audit(ctx.engine, ctx.actor.username, "glossary-remove", {"source": " ".join(rest), "lang": lang},
                         "ok")
        return Reply(f"Removed {render.code(' '.join(rest))} from {whose}.")
    raise Usage()


def _detected(text: str, what: str) -> str:
    found = detect.detect(text)
    if found is None:
        raise Usage(f"Could not tell the {what} language of {render.code(text[:60])}: name it with "
                    f"`{'from' if what == 'source' else 'for'} LANG`.")
    return found.code


async def _tm(ctx: Context, args: list[str]) -> Reply:
    """`/tm [shared] add SOURCE = TARGET [for LANG] [from LANG] | list [TEXT] | remove SOURCE [for LANG]
    | import (with a .tmx file) | export`."""
    shared = bool(args) and args[0] == "shared"
    if shared:
        args = args[1:]
        if not ctx.actor.is_admin:
            return Reply("🚫 Only admins keep the shared translation memory. `/tm add` keeps an entry in yours.",
                         ok=False)
    owner = MEMORY_SHARED if shared else ctx.actor.username
    whose = "the shared memory" if shared else "your memory"
    who = ctx.actor.username
    verb, rest = (args[0], args[1:]) if args else ("list", [])
    langs: dict[str, str] = {}
    while len(rest) >= 2 and rest[-2] in ("for", "from"):
        langs[rest[-2]], rest = rest[-1], rest[:-2]
    if verb == "list":
        text = " ".join(rest) or None
        return Reply(render.memory(await ctx.engine.memory.entries(who, text, 50),
                                   await ctx.engine.memory.entries(MEMORY_SHARED, text, 50), text))
    if verb in ("add", "approve"):  # approve: an answer's button adds it, marked as an approved answer
        if "=" not in rest:
            raise Usage("Separate the text and its translation with ` = `.")
        cut = rest.index("=")
        source, target = " ".join(rest[:cut]), " ".join(rest[cut + 1:])
        entry = NewMemoryEntry(langs.get("from") or _detected(source, "source"),
                               langs.get("for") or _detected(target, "target"), source, target)
        added, _ = await ctx.engine.memory_add(owner, [entry], actor=who,
                                               origin="approved" if verb == "approve" else "typed")
        return Reply(f"{'Added to' if added else 'Replaced in'} {whose}: {render.code(entry.source)} → "
                     f"{render.code(entry.target)} ({NAMES.get(entry.src_lang, entry.src_lang)} → "
                     f"{NAMES.get(entry.tgt_lang, entry.tgt_lang)}). This text now gets this answer at once.")
    if verb == "remove" and rest:
        count = await ctx.engine.memory_remove(owner, " ".join(rest), langs.get("for"), actor=who)
        return Reply(f"Removed {count} {'entry' if count == 1 else 'entries'} for {render.code(' '.join(rest))} "
                     f"from {whose}.")
    if verb == "import" and not rest:
        tmx = [(name, data) for name, data in ctx.files if name.lower().endswith(".tmx")]
        if len(tmx) != 1:
            raise Usage("Attach one .tmx file to the `/tm import` message.")
        added, replaced = await ctx.engine.memory_import(owner, tmx[0][1], actor=who)
        return Reply(f"Imported {render.code(tmx[0][0])} into {whose}: {added} entries added, {replaced} replaced.")
    if verb == "export" and not rest:
        data = await ctx.engine.memory_export(owner)
        name = "shared-memory.tmx" if shared else f"{who}-memory.tmx"
        return Reply(f"⬇️ {whose.capitalize()} as TMX: {render.code(name)}.", download=(name, data))
    raise Usage()


HANDLERS: dict[str, Callable[[Context, list[str]], Awaitable[Reply]]] = {
    "tm": _tm, "glossary": _glossary, "help": _help, "status": _status, "load": _load, "switch": _switch,
    "rollback": _rollback,
    "canary": _canary, "promote": _promote, "shadow": _shadow, "unload": _unload, "eval": _eval, "logs": _logs,
    "audit": _audit_log, "users": _users, "keys": _keys, "rollout": _rollout,
}
assert HANDLERS.keys() == COMMANDS.keys()

__all__ = ["COMMANDS", "NOT_ALLOWED", "Button", "Invocation", "Reply", "command_list", "execute", "parse"]
