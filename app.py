"""Baton's chat: Chainlit wiring only.

Login, chat start and resume, and each message: admin commands go to `admin.commands`,
everything else is translated through the one `Engine` of this process. Run from the repo
root with `env -u CI .venv/bin/chainlit run app.py --headless --port 8000`; BATON_* variables
configure the engine (engine.Settings) and the first admin (admin.config.ChatConfig).
"""
from __future__ import annotations

import asyncio
import logging
import os
import shlex
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import quote

import chainlit as cl
import jwt
from chainlit.auth import cookie, get_token_from_cookies
from chainlit.auth.jwt import decode_jwt
from chainlit.context import init_ws_context
from chainlit.data import get_data_layer
from chainlit.data.sql_alchemy import SQLAlchemyDataLayer
from chainlit.data.storage_clients.base import BaseStorageClient
from chainlit.input_widget import InputWidget, Switch
from chainlit.server import UserParam, delete_feedback, sio, update_feedback
from chainlit.server import app as http_app
from chainlit.session import WebsocketSession, ws_sessions_id
from chainlit.types import CommandDict, DeleteFeedbackRequest, ThreadDict, UpdateFeedbackRequest
from chainlit.utils import utc_now
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

import gateway
from admin import (
    auth_secret,
    chat_history,
    commands,
    download_headers,
    endpoints,
    http_limits,
    languages,
    login_guard,
    private_dir,
    render,
    sessions,
)
from admin.accounts import USERNAME_RE, Account, Accounts
from admin.config import ChatConfig
from admin.files import FileStore
from admin.glossary import Glossary
from admin.keys import Keys
from admin.masked_history import MaskedHistory
from admin.origin_guard import OriginGuard
from admin.retire import Retirement
from admin.throttle import Locked, LoginThrottle
from admin.votes import Ballot, Votes
from engine import (
    MEMORY,
    BatonError,
    Document,
    Engine,
    Progress,
    Restart,
    RouteInfo,
    Settings,
    Term,
    TranslationRequest,
    TranslationResult,
    WaitInfo,
    shown_name,
)
from engine.languages import CODES

log = logging.getLogger("baton.app")
T = TypeVar("T")
# Chainlit logs at INFO; one line per backend HTTP request would bury everything else.
for noisy in ("httpx", "httpx2"):
    logging.getLogger(noisy).setLevel(logging.WARNING)

SETTINGS = Settings()
CONFIG = ChatConfig()
private_dir.make_private(SETTINGS.data_dir)  # before anything is written there
# Chainlit checks for its token secret right after importing this module.
auth_secret.ensure(SETTINGS.data_dir)

ACTION = "baton_command"  # every button runs a command line, through the same checks as typing it
UNEXPECTED = "⚠️ Something went wrong on our side (it is in the server log). Please try again."

_engine: Engine | None = None
_accounts: Accounts | None = None
_keys: Keys | None = None
_votes: Votes | None = None
_glossary: Glossary | None = None
_retirement: Retirement | None = None
CONTEXT_TURNS = 3  # earlier source texts given as context to a version with a contextual template
_background: set[asyncio.Task] = set()  # load followers; a reference keeps them from being collected
THROTTLE = LoginThrottle.from_config(CONFIG)  # failed logins: chat passwords and API keys


async def _record(actor: str, action: str, args: dict[str, object], outcome: str, detail: str) -> int:
    return await engine().record(actor, action, args, outcome, detail)


async def _amend(row_id: int, detail: str) -> None:
    await engine().amend_record(row_id, detail)


endpoints.install(http_app, lambda: _engine, CONFIG.metrics_token)
http_limits.install(http_limits.Limits(CONFIG.http_header_timeout_s, CONFIG.http_body_timeout_s,
                                       CONFIG.http_max_connections))
gateway.install(http_app, gateway.build(lambda: _engine, lambda: _keys, THROTTLE, _record, _amend))
# Innermost (appended, where add_middleware would put it outermost): Chainlit's CORS and gzip
# middlewares then handle the guard's 429 like any other response.
http_app.user_middleware.append(Middleware(login_guard.LoginGuard, path=http_app.url_path_for("login")))
http_app.user_middleware.append(Middleware(download_headers.DownloadHeaders))
# Outermost: a request from another site's page is refused before anything else sees it, and
# Chainlit's CORS (every origin, with credentials, in its default config) lets only allowed ones read.
http_app.user_middleware[:] = [Middleware(OriginGuard, allowed=CONFIG.allowed_origins)] + [
    Middleware(CORSMiddleware, allow_origins=CONFIG.allowed_origins, allow_credentials=True, allow_methods=["*"],
               allow_headers=["*"]) if m.cls is cast(Any, CORSMiddleware) else m
    for m in http_app.user_middleware]
# The login cookie as strict as Chainlit allows (it reads CHAINLIT_COOKIE_SAMESITE when it is
# imported, before this module): never sent on a request another site started.
if "CHAINLIT_COOKIE_SAMESITE" not in os.environ:
    cookie._cookie_samesite = "strict"
chat_history.refuse_bad_thread_ids(sio)


def _login_of(cookies: Mapping[str, str], authorization: str) -> tuple[str, str] | None:
    """The account name and stamp in a chat login token (Chainlit's JWT); None without a valid one."""
    scheme, _, bearer = authorization.partition(" ")
    token = get_token_from_cookies(dict(cookies)) or (bearer.strip() if scheme.lower() == "bearer" else "")
    try:
        user = decode_jwt(token) if token else None
    except (jwt.PyJWTError, TypeError):  # not a login token (an API key, say): Chainlit and the gateway judge it
        return None
    return (user.identifier, str(user.metadata.get(sessions.STAMP, ""))) if user else None


http_app.user_middleware.append(Middleware(sessions.SessionGuard, read=_login_of,
                                           lookup=lambda: _accounts.get if _accounts else None))


def _started(part: T | None, what: str) -> T:
    """A part startup() made; an error if it was called for before then."""
    if part is None:
        raise RuntimeError(f"{what} is not ready yet")
    return part


def engine() -> Engine:
    return _started(_engine, "the engine")


def accounts() -> Accounts:
    return _started(_accounts, "the accounts store")


def keys() -> Keys:
    return _started(_keys, "the API keys store")


def votes() -> Votes:
    return _started(_votes, "the votes store")


def glossary() -> Glossary:
    return _started(_glossary, "the glossary store")


def _spawn(coro: Coroutine[Any, Any, None]) -> None:
    task = asyncio.create_task(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)


# process life -------------------------------------------------------------------
@cl.on_app_startup
async def startup() -> None:
    global _engine, _accounts, _keys, _votes, _glossary, _retirement
    eng = Engine(SETTINGS)
    eng.notices.subscribe(_tell_admins)  # before start(): a rollout resumed at start is announced too
    await eng.start()  # schema (the stores' and the chat history's too), orphans, the active version loading again
    accts = Accounts(eng.store.engine)
    keys = Keys(eng.store.engine)
    votes = Votes(eng.store.engine)
    terms = Glossary(eng.store.engine)
    await _bootstrap_admin(eng, accts)
    _retirement = Retirement(eng.store.engine, FILES, _end_sessions)
    _engine, _accounts, _keys, _votes, _glossary = eng, accts, keys, votes, terms
    log.info("Baton ready: data in %s, active version %s", SETTINGS.data_dir, eng.router.deployment.active)


async def _bootstrap_admin(eng: Engine, accts: Accounts) -> None:
    user, password = CONFIG.admin_user, CONFIG.admin_password
    if not (user and password):
        if await accts.count_admins() == 0:
            log.warning("No admin account exists: set BATON_ADMIN_USER and BATON_ADMIN_PASSWORD and restart.")
        return
    try:
        created = await accts.bootstrap_admin(user, password.get_secret_value())
    except BatonError as exc:
        log.error("Could not create the first admin from BATON_ADMIN_USER: %s", exc)
        return
    if created:
        await eng.store.audit("system", "users-add", {"name": user, "role": "admin"}, "ok",
                              "first admin, from BATON_ADMIN_USER")
        log.info("Created the first admin account %r", user)


@cl.on_app_shutdown
async def shutdown() -> None:
    for task in list(_background):
        task.cancel()
    if _engine is not None:
        await _engine.close()  # stops every backend process


FILES = FileStore(SETTINGS.data_dir / "files")


class _LocalFiles(BaseStorageClient):
    """Chainlit's storage for the files of the history, on this machine (admin/files.py); served to
    their owner only, by `get_file` below."""

    async def upload_file(self, object_key: str, data: bytes | str, mime: str = "application/octet-stream",
                          overwrite: bool = True, content_disposition: str | None = None) -> dict[str, Any]:
        await FILES.put(object_key, data.encode() if isinstance(data, str) else data, mime)
        return {"object_key": object_key, "url": await self.get_read_url(object_key)}

    async def delete_file(self, object_key: str) -> bool:
        return await FILES.delete(object_key)

    async def get_read_url(self, object_key: str) -> str:
        return f"/baton/files/{quote(object_key)}"

    async def close(self) -> None:
        return None


async def get_file(key: str, user: UserParam) -> Response:
    """A file of the history, for the user it belongs to; 404 for anyone else."""
    found = await FILES.get(key, str(getattr(user, "id", "") or ""))
    if found is None:
        return JSONResponse({"detail": "No such file."}, status_code=404)
    return Response(found.data, media_type=found.mime,
                    headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(found.name)}",
                             "Cache-Control": "private, no-store"})


endpoints.in_front(http_app, "/baton/files/{key:path}", get_file, "GET")


@cl.data_layer
def data_layer() -> SQLAlchemyDataLayer:
    # Chat history lives in the engine's database; engine/migrations creates its tables (Engine.start).
    return MaskedHistory(conninfo=SETTINGS.db_url, storage_provider=_LocalFiles())


# login and session ----------------------------------------------------------------
@cl.password_auth_callback
async def login(username: str, password: str) -> cl.User | None:
    """Check the password, unless the throttle refuses the attempt (then POST /login answers 429,
    see admin/login_guard.py). Failures, the start of a lock and its first refusal are audited;
    attempts refused after that are not, so a locked-out attacker cannot fill the audit."""
    attempt = login_guard.current()
    address = attempt.address if attempt else "unknown"
    try:
        await THROTTLE.admit(username, address)
    except Locked as refused:
        if attempt:
            attempt.refusal = refused
        if refused.first_refusal:
            await _audit_login(username, "login-refused", address, "refused", refused)
        return None
    account = await accounts().verify(username, password)
    if account is None:
        locked = THROTTLE.failed(username, address)
        await _audit_login(username, "login-failed", address, "failed", None)
        if locked:
            await _audit_login(username, "login-locked", address, "locked", locked)
        return None
    THROTTLE.succeeded(username, address)
    # The role here is informative only; every command reads it from the accounts table.
    # The stamp ties the login to this account: a later account with the same name is someone else.
    return cl.User(identifier=account.username, metadata={"role": account.role, "provider": "credentials",
                                                          sessions.STAMP: sessions.stamp(account)})


async def _audit_login(username: str, action: str, address: str, outcome: str, lock: Locked | None) -> None:
    """An audit row for a login attempt. The name is shown only when such an account exists: a
    password typed into the name field must not land in the audit."""
    known = bool(USERNAME_RE.fullmatch(username)) and await accounts().get(username) is not None
    detail = ""
    if lock is not None:
        what = " and ".join(("the account" if k.startswith("account:") else "the address") for k in lock.keys)
        detail = f"{what} refused for {lock.retry_after_s} s"
    await engine().record(username if known else "(unknown account)", action, {"address": address}, outcome, detail)


async def _account() -> Account | None:
    """The account of this chat's login token, if it still exists and is the one that logged in (not
    a later account given the same name)."""
    token = getattr(cl.context.session, "token", None)
    login = _login_of({}, f"Bearer {token}") if token else None
    return await sessions.current(login, accounts().get) if login else None


def _settings_widgets(context: bool) -> cl.ChatSettings:
    widgets: list[InputWidget] = [
        Switch(id="context", label="Use earlier turns as context", initial=context,
               description="Your last messages go with each new one, as context that is not translated, "
                           "to versions that have a contextual template."),
        Switch(id="memory", label="Answer from translation memory", initial=True,
               description="A text in your memory or the shared one is answered with its approved translation, "
                           "without asking a model (/tm list shows them)."),
    ]
    return cl.ChatSettings(widgets)


def _language_modes(pair: languages.Pair) -> list[cl.Mode]:
    """The pair in plain sight: From and To pickers beside the message box, set to `pair`."""
    source = [cl.ModeOption(id=languages.AUTO, name=languages.AUTO_LABEL, default=pair.source == languages.AUTO)]
    source += [cl.ModeOption(id=code, name=name, default=code == pair.source) for code, name in languages.LANGUAGES]
    target = [cl.ModeOption(id=code, name=f"→ {name}", default=code == pair.target)
              for code, name in languages.LANGUAGES]
    return [cl.Mode(id="source", name="From", options=source), cl.Mode(id="target", name="To", options=target)]


def _remember(pair: languages.Pair) -> None:
    """The chosen pair, kept in the chat settings: Chainlit stores them with the thread."""
    chosen = {"source_lang": pair.source, "target_lang": pair.target}
    cl.context.session.chat_settings.update(chosen)
    cl.user_session.set("languages", chosen)


async def _prepare_session(chosen: dict[str, Any]) -> None:
    """Per-session command popup (admins see their commands, users /help and /glossary), the
    language pickers and the settings, restored when a thread is resumed."""
    account = await _account()
    entries = commands.command_list(bool(account and account.is_admin))
    await cl.context.emitter.set_commands(cast(list[CommandDict], entries))  # CommandEntry is this shape
    try:
        pair = languages.resolve(chosen)
    except BatonError:
        pair = languages.resolve({})
    _remember(pair)
    await cl.context.emitter.set_modes(_language_modes(pair))
    await _settings_widgets(chosen.get("context") is not False).send()


@cl.on_chat_start
async def chat_start() -> None:
    await _prepare_session({})


@cl.on_chat_resume
async def chat_resume(thread: ThreadDict) -> None:
    await _prepare_session(dict(cl.context.session.chat_settings or {}))


@cl.set_starters
async def starters(user: cl.User | None = None, language: str | None = None) -> list[cl.Starter]:
    return [
        cl.Starter(label="Where is the station?", message="Where is the station?"),
        cl.Starter(label="Thank you very much", message="Thank you very much"),
        cl.Starter(label="How much is this?", message="How much is this?"),
        cl.Starter(label="Can you help me?", message="Can you help me?"),
    ]


@cl.on_settings_update
async def settings_update(chosen: dict[str, Any]) -> None:
    try:
        pair = languages.resolve(chosen)
    except BatonError as exc:
        # Chainlit already stored the new values: put the last good ones back.
        previous = cl.user_session.get("languages") or {}
        cl.context.session.chat_settings.update(previous)
        await cl.Message(f"⚠️ {render.text(exc)} Your languages did not change.").send()
        return
    _remember(pair)


# messages -------------------------------------------------------------------------
@cl.on_message
async def on_message(message: cl.Message) -> None:
    if message is None:  # an edit event naming an unknown message
        return
    account = await _account()
    if account is None:
        await cl.Message("Your account no longer exists, so Baton cannot answer. Ask an admin.").send()
        return
    inv = commands.parse(message.content, message.command, is_admin=account.is_admin)
    if inv is not None:
        await _run_command(inv, account.username, message)
        return
    settings = cl.context.session.chat_settings
    try:  # the pickers' values come from the browser: checked, and kept only when good
        pair = languages.resolve(languages.modes_chosen(message.modes or {}, settings))
    except BatonError as exc:
        await cl.Message(f"⚠️ {render.text(exc)} Nothing was translated.").send()
        return
    _remember(pair)
    files = [e for e in message.elements or [] if isinstance(e, cl.File) and e.path]
    if files:
        for element in files:
            await _translate_document(element, pair, account.username)
    else:
        await _translate(message.content, pair, account.username, account.is_admin)


class _Progress:
    """A command's progress (the /eval bar) in one message, sent at the first update and then updated."""

    def __init__(self) -> None:
        self.message: cl.Message | None = None

    async def show(self, text: str) -> None:
        if self.message is None:
            self.message = cl.Message(content=text)
            await self.message.send()
        else:
            self.message.content = text
            await self.message.update()

    async def stopped(self) -> None:
        if self.message is not None:
            self.message.content = f"{self.message.content}\n\n{render.STOPPED}"
            await self.message.update()


async def _run_command(inv: commands.Invocation, username: str, typed: cl.Message | None, echo: str = "") -> None:
    progress = _Progress()
    attached = [e for e in (typed.elements or [] if typed is not None else []) if isinstance(e, cl.File) and e.path]
    try:
        files = [(e.name, await asyncio.to_thread(Path(str(e.path)).read_bytes)) for e in attached]
        reply = await commands.execute(engine(), accounts(), keys(), username, inv, progress.show, glossary(),
                                       _retirement, files)
    except asyncio.CancelledError:  # Stop: a command that can be stopped (/eval) says it left nothing
        await progress.stopped()
        raise
    except Exception:
        log.exception("command /%s by %s failed", inv.name, username)
        reply = commands.Reply(UNEXPECTED, ok=False)
    if reply.redacted and typed is not None:
        await _redact(typed, reply.redacted)
    actions = [cl.Action(name=ACTION, payload={"command": b.command}, label=b.label) for b in reply.buttons]
    elements: list[cl.Element] = ([cl.File(name=reply.download[0], content=reply.download[1], display="inline")]
                                  if reply.download else [])
    out = cl.Message(content=f"{echo}{reply.markdown}", actions=actions, elements=elements)
    dl = get_data_layer() if reply.shown_once is not None else None
    out.persisted = dl is not None  # Chainlit must not store it as sent
    await out.send()
    if dl is not None:  # the browser got the secret this once; the history gets the masked reply
        await dl.create_step({**out.to_dict(), "output": f"{echo}{reply.shown_once}"})
    if reply.follow_load:
        _spawn(_follow_load(reply.follow_load, out.id))


async def _redact(typed: cl.Message, shown: str) -> None:
    """Replace a typed password in what the browser shows: the message, and the run step that
    recorded it as input. What is stored (the steps, the thread's name) is masked as it is written,
    in whatever order Chainlit's writes land (admin/masked_history.py)."""
    original = typed.content
    typed.content = shown
    await typed.update()
    if (run := cl.context.current_step) is not None and run.input == original:
        run.input = shown  # written back when the run step closes


class _Ending:
    """How a translation ended, for the message that shows it: a refusal or failure is kept as its
    text (a bug is logged, the user gets a plain apology), Stop marks it stopped and propagates."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.error = ""
        self.stopped = False

    def __enter__(self) -> _Ending:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        if kind is None or exc is None:
            return False
        if isinstance(exc, asyncio.CancelledError):
            self.stopped = True
            return False
        if isinstance(exc, BatonError):
            self.error = str(exc)
            return True
        if isinstance(exc, Exception):
            log.error("%s failed", self.what, exc_info=exc)
            self.error = UNEXPECTED.removeprefix("⚠️ ")
            return True
        return False


def _request(text: str, pair: languages.Pair, terms: tuple[Term, ...], context: str = "") -> TranslationRequest:
    return TranslationRequest(text=text, target_lang=pair.target_name, source_lang=pair.source_name,
                              conversation_id=cl.context.session.thread_id, terms=terms, context=context,
                              user=cl.context.session.user.identifier if cl.context.session.user else "",
                              use_memory=cl.context.session.chat_settings.get("memory") is not False)


def _context(text: str) -> str:
    """The user's last turns, as context for this one (when the setting is on); this turn joins them."""
    turns: list[str] = cl.user_session.get("turns") or []
    if text.strip():
        cl.user_session.set("turns", [*turns, text][-CONTEXT_TURNS:])
    return "\n".join(turns) if cl.context.session.chat_settings.get("context") is not False else ""


async def _translate(text: str, pair: languages.Pair, username: str, is_admin: bool) -> None:
    """Stream the translation into one message. Whatever happens (done, error, Stop), the
    message is completed in `finally` with what arrived and where it came from. A whole answer
    names its language pair and version (in its metadata too), says what the glossary and
    format checks found, and may be rated by `username`."""
    answer = cl.Message(content="")
    waiting: cl.Message | None = None
    result: TranslationResult | None = None
    route: RouteInfo | None = None

    async def clear_waiting() -> None:
        nonlocal waiting
        if waiting is not None:
            gone, waiting = waiting, None
            await gone.remove()

    async def on_wait(info: WaitInfo) -> None:
        nonlocal waiting
        if waiting is None:
            waiting = cl.Message(content=render.waiting(info))
            await waiting.send()
        else:
            waiting.content = render.waiting(info)
            await waiting.update()

    async def on_route(chosen: RouteInfo) -> None:
        nonlocal route
        route = chosen

    async def on_restart(_: Restart) -> None:
        # The backend failed mid-answer: the whole answer comes again from another version.
        answer.content = ""
        await answer.update()

    async def on_token(token: str) -> None:
        await clear_waiting()
        await answer.stream_token(token)

    ended = _Ending("translation")
    try:
        with ended:
            request = _request(text, pair, await glossary().for_user(username), _context(text))
            result = await engine().translate(request, on_token=on_token, on_wait=on_wait, on_route=on_route,
                                              on_restart=on_restart)
    finally:
        await clear_waiting()
        answer.content = render.answer(answer.content, result, ended.error, ended.stopped, route)
        if result is not None:
            answer.metadata = _answer_metadata(result)
        await answer.send()
    if result is not None and result.version != MEMORY:  # an answer from memory is no version's to judge
        await _ratable(result, username)
        if is_admin:  # read with the account at the message's start
            await _approvable(answer, text, result, pair)


async def _approvable(answer: cl.Message, text: str, result: TranslationResult, pair: languages.Pair) -> None:
    """A button under an admin's answer that adds it to the shared memory, as `/tm shared approve` would."""
    source = CODES.get(result.source_lang) or pair.source
    if source not in languages.NAMES:
        return  # the source language is unknown: an entry needs it
    line = (f"/tm shared approve {shlex.quote(text)} = {shlex.quote(result.text)} "
            f"from {source} for {CODES.get(result.target_lang, pair.target)}")
    answer.actions = [cl.Action(name=ACTION, payload={"command": line}, label="📚 Approve into shared memory")]
    await answer.update()


def _answer_metadata(result: TranslationResult) -> dict[str, Any]:
    return {"version": result.version, "source_lang": result.source_lang, "target_lang": result.target_lang,
            "detected": result.detected.code if result.detected else None, "memory": result.memory or None,
            "flags": [f.check for f in result.flags]}


async def _ratable(result: TranslationResult, username: str) -> None:
    if (run := cl.context.current_step) is not None:
        try:  # the feedback buttons name the run the answer belongs to
            await votes().answered(run.id, result.version, username, cl.context.session.thread_id)
        except BatonError as exc:
            log.warning("the answer %s cannot be rated: %s", run.id, exc)


async def _translate_document(element: cl.File, pair: languages.Pair, username: str) -> None:
    """Translate a dropped document segment by segment with one version, a progress bar counting
    the segments, and send the translated file back. Stop, a failure or the end: whatever is
    translated by then comes back, the rest in its original words."""
    status = cl.Message(content=f"📄 Reading {render.code(shown_name(element.name))}…")
    await status.send()
    try:
        data = await asyncio.to_thread(Path(str(element.path)).read_bytes)
        doc = await engine().open_document(element.name, data, user=username)
    except BatonError as exc:
        status.content = f"⚠️ {render.text(exc)}"
        await status.update()
        return
    done: list[str | None] = []
    result: TranslationResult | None = None
    restarted = ""
    shown = -1

    async def on_progress(count: int, total: int) -> None:
        nonlocal shown
        step = render.progress_step(count, total)
        if step != shown:  # one update per step of the bar, not per segment, as for /eval
            shown = step
            status.content = render.document_progress(doc.filename, count, total, restarted)
            await status.update()

    async def on_restart(restart: Restart) -> None:
        nonlocal restarted
        restarted = restart.reason

    ended = _Ending("document translation")
    try:
        with ended:
            req = _request(doc.segments[0], pair, await glossary().for_user(username))
            result = await engine().translate_document(doc, req, done, on_progress, on_restart=on_restart)
    finally:
        await _send_document(doc, pair, done, result, status, ended.error, ended.stopped, username)
    if result is not None:
        await _ratable(result, username)


async def _send_document(doc: Document, pair: languages.Pair, done: list[str | None], result: TranslationResult | None,
                         status: cl.Message, error: str, stopped: bool, username: str) -> None:
    translated = sum(bool(t) for t in done)
    outcome = render.document_done(doc.filename, len(doc.segments), translated, result, error, stopped)
    files: list[cl.Element] = []
    if translated:
        name = render.translated_name(doc.filename, pair.target)
        data, differs = await engine().rebuild_document(doc, done, name, user=username)
        if differs:
            outcome += f"\n\n⚠️ The translated file's structure differs from the original's: {differs}."
        files.append(cl.File(name=name, content=data, display="inline"))
    status.content = outcome
    await status.update()
    if files:
        await cl.Message(content=f"⬇️ {render.code(files[0].name)}", elements=files,
                         metadata=_answer_metadata(result) if result else {}).send()


# votes ----------------------------------------------------------------------------
async def put_feedback(request: Request, update: UpdateFeedbackRequest, user: UserParam) -> Response:
    """Chainlit's own feedback route, for a translation this user got, counted for its version
    (admin/votes.py says why Chainlit's route alone would not do)."""
    fb = update.feedback
    try:
        ballot = await votes().ballot(fb.forId, _voter(user))
    except BatonError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=404)
    fb.id, fb.threadId = ballot.feedback_id, ballot.thread_id  # one vote per answer, whatever id was sent
    response = await update_feedback(request, update, user)
    await _cast(ballot, fb.id, fb.value == 1)
    return response


async def delete_feedback_of_answer(request: Request, payload: DeleteFeedbackRequest, user: UserParam) -> Response:
    """Chainlit's route that takes a vote back, for a vote on this user's translation only."""
    try:
        ballot = await votes().ballot_of(payload.feedbackId, _voter(user))
    except BatonError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=404)
    response = await delete_feedback(request, payload, user)
    await _cast(ballot, None, None)
    return response


def _voter(user: object) -> str:
    return str(getattr(user, "identifier", ""))  # "" owns no answer


async def _cast(ballot: Ballot, feedback_id: str | None, up: bool | None) -> None:
    try:
        await votes().cast(engine(), ballot, feedback_id, up)
    except BatonError as exc:  # Chainlit kept the vote; only the count misses it
        log.warning("a vote on %s was not counted: %s", ballot.answer, exc)


endpoints.in_front(http_app, "/feedback", put_feedback, "PUT")
endpoints.in_front(http_app, "/feedback", delete_feedback_of_answer, "DELETE")


# admin extras ---------------------------------------------------------------------
async def _tell_admins(text: str) -> None:
    """An engine notice (a rollout's decision) to every admin connected to the chat now; the
    role is read from the accounts table, as for commands."""
    if _accounts is None:
        return  # still starting: the notice is in the log and the audit
    for session in list(ws_sessions_id.values()):
        user = session.user
        account = await _accounts.get(user.identifier) if user is not None else None
        if account is not None and account.is_admin:
            _spawn(_post_notice(session, text))


async def _end_sessions(username: str) -> int:
    """Disconnect this process's open chats of `username` (a removed account); how many there were."""
    open_chats = [s for s in list(ws_sessions_id.values()) if s.user is not None and s.user.identifier == username]
    for session in open_chats:
        await sio.disconnect(session.socket_id)
    return len(open_chats)


async def _post_notice(session: WebsocketSession, text: str) -> None:
    init_ws_context(session)  # this task only: the message goes to that admin's chat
    status = cl.Action(name=ACTION, payload={"command": "/rollout status"}, label="Rollout status")
    await cl.Message(content=text, actions=[status]).send()


async def _follow_load(name: str, reply_id: str) -> None:
    """A live step under the /load reply: pid, port, elapsed time, last log line; then the
    outcome with a log tail on failure, and a button to switch to it once ready."""
    step = cl.Step(name=f"Loading {name}", type="tool", parent_id=reply_id, show_input=False, default_open=True)
    step.start = utc_now()
    step.output = f"Starting `{name}`…"
    await step.send()
    last: Progress | None = None
    try:
        async for item in engine().watch(name, interval_s=CONFIG.progress_interval_s):
            last = item
            step.output = render.load_progress(item)
            await step.update()
    except BatonError as exc:
        step.output, step.is_error, step.end = f"Lost track of the load: {render.text(exc)}", True, utc_now()
        await step.update()
        return
    assert last is not None
    tail: list[str] = []
    if last.phase == "failed":
        try:
            tail = await engine().logs(name, 15)
        except BatonError:
            tail = []
    final = render.load_finished(last, tail)
    step.output, step.is_error, step.end = render.load_progress(last), last.phase == "failed", utc_now()
    await step.update()
    actions = []
    if last.phase == "ready":
        if SETTINGS.gate_set:  # switching needs an evaluation on the gate set first
            actions.append(cl.Action(name=ACTION, payload={"command": f"/eval {name}"}, label=f"Evaluate {name}"))
        actions.append(cl.Action(name=ACTION, payload={"command": f"/switch {name}"}, label=f"Switch to {name}"))
        actions.append(cl.Action(name=ACTION, payload={"command": f"/canary {name} 10"}, label=f"Canary {name} at 10%"))
    await cl.Message(content=final, actions=actions).send()


@cl.action_callback(ACTION)
async def on_action(action: cl.Action) -> None:
    """A button click runs its command line as the clicking user, with the same role check
    as typing it: the payload comes from the browser and may be forged."""
    raw = action.payload.get("command") if isinstance(action.payload, dict) else None
    user = cl.user_session.get("user")
    inv = commands.parse(raw, None, is_admin=True) if isinstance(raw, str) else None
    if inv is None or user is None:
        await cl.Message("⚠️ That button does not hold a command.").send()
        return
    await action.remove()  # one click, one run
    await _run_command(inv, user.identifier, None, echo=f"{render.code(raw)}\n\n")
