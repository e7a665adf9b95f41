"""Checks on everything an operator can type: names, model paths, vLLM flags, templates, remote URLs."""
from __future__ import annotations

import os
import re
import string
from collections.abc import Mapping
from pathlib import Path

from . import urls
from .errors import InvalidArgument
from .settings import Settings
from .templates import OPTIONAL, REQUIRED, SLOTS, Capability
from .types import WRONG_LANGUAGE_POLICIES, WrongLanguagePolicy

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,47}$")
FLAG_VALUE_RE = re.compile(r"^[A-Za-z0-9._:+-]{1,64}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MAX_TEMPLATE_CHARS = 4000
MAX_TOKENS_LIMIT = 32768  # above any context a translation model is served with


def check_wrong_language_policy(policy: str) -> WrongLanguagePolicy:
    if policy not in WRONG_LANGUAGE_POLICIES:
        raise InvalidArgument(f"'{policy[:32]}' is not a policy for answers in the wrong language.",
                              "Use flag (warn, the default) or retranslate (translate it again once by another "
                              "ready version).")
    return "retranslate" if policy == "retranslate" else "flag"


def check_name(name: str, what: str = "version", example: str = "v2 or hy-mt-1.5") -> str:
    """A version's name (or, with `what`, another name of the same form: an evaluation set's)."""
    if not NAME_RE.fullmatch(name or ""):
        raise InvalidArgument(
            f"'{name[:60]}' is not a valid {what} name.",
            "Use 1-48 letters, digits, dots, dashes or underscores, "
            f"starting with a letter or digit (e.g. {example}).",
        )
    return name


def check_model_path(raw: str, settings: Settings) -> Path:
    roots = ", ".join(str(r) for r in settings.model_roots)
    if not raw or "\0" in raw or len(raw) > 1024:
        raise InvalidArgument("The model path is empty or malformed.", f"Give a model directory under {roots}.")
    path = Path(raw)  # no ~ expansion: relative paths are relative to the first model root
    if not path.is_absolute():
        path = settings.model_roots[0] / path
    resolved = path.resolve()
    if not any(resolved.is_relative_to(root) for root in settings.model_roots):
        raise InvalidArgument(
            f"The model path {raw[:200]} is outside the allowed model roots.",
            f"Put the model under {roots} (or add its folder to BATON_MODEL_ROOTS).",
        )
    try:
        is_model = (resolved / "config.json").is_file()
    except OSError as exc:  # e.g. a name longer than the file system allows
        raise InvalidArgument(f"The model path cannot be read ({exc.strerror}).",
                              f"Give a model directory under {roots}.") from None
    if not is_model:
        raise InvalidArgument(
            f"{resolved} is not a model directory (no config.json there).",
            "Point to the folder that holds config.json, the tokenizer and the weights.",
        )
    return resolved


def check_flags(flags: list[str] | tuple[str, ...], settings: Settings) -> tuple[str, ...]:
    """Accept `--flag`, `--flag value` and `--flag=value`, only for allowed flags."""
    allowed = ", ".join(settings.allowed_flags)
    out: list[str] = []
    i = 0
    while i < len(flags):
        token = flags[i]
        name, eq, value = token.partition("=")
        if name not in settings.allowed_flags:
            raise InvalidArgument(
                f"The vLLM flag '{token[:60]}' is not allowed.",
                f"Allowed flags: {allowed} (BATON_ALLOWED_FLAGS).",
            )
        if not eq and i + 1 < len(flags) and not flags[i + 1].startswith("--"):
            i += 1
            value, eq = flags[i], "="
        if eq and not FLAG_VALUE_RE.fullmatch(value):
            raise InvalidArgument(
                f"The value '{value[:60]}' for {name} is not allowed.",
                "Values are 1-64 letters, digits, dots, colons, plus or dashes.",
            )
        out.extend([name, value] if eq else [name])
        i += 1
    return tuple(out)


def check_remote_url(raw: str, settings: Settings) -> str:
    """A remote version's URL, judged from its text alone (nothing is sent to it): every request Baton
    will send it (BASE/v1/...) falls under an allowed base URL (its addresses are resolved and pinned
    by engine/remote_address.py). Returned as the server's base (no trailing / or /v1)."""
    allowed = ", ".join(settings.allowed_remote)
    if not settings.allowed_remote:
        raise InvalidArgument("No remote version is allowed here (BATON_ALLOWED_REMOTE is empty).",
                              "Ask the operator to add the server's base URL to BATON_ALLOWED_REMOTE.")
    try:
        url = urls.parse(raw)
    except urls.BadUrl as exc:
        raise InvalidArgument(f"The URL {shown_url(raw)} is not acceptable: {exc}.",
                              f"Give the server's base URL, e.g. {settings.allowed_remote[0]}.") from None
    if not any(urls.parse(base).covers(url.api()) for base in settings.allowed_remote):
        raise InvalidArgument(f"The URL {shown_url(raw)} is not under an allowed base URL.",
                              f"Use a URL under {allowed} (or add its base to BATON_ALLOWED_REMOTE).")
    return url.server_base().text()


def shown_url(raw: str) -> str:
    """A URL as it may be audited and shown: a password typed into it is masked."""
    scheme, sep, rest = raw[:300].partition("://")
    authority, slash, path = rest.partition("/")
    if sep and "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    return f"{scheme}{sep}{authority}{slash}{path}"


def check_key_env(name: str, settings: Settings) -> str:
    """The name of the environment variable a remote version's API key is read from: allowed, and set.
    The key itself is read at each request, never stored."""
    if not ENV_NAME_RE.fullmatch(name or "") or name not in settings.remote_key_envs:
        allowed = ", ".join(settings.remote_key_envs) or "none"
        raise InvalidArgument(f"'{name[:60]}' is not an environment variable a remote version may read its key from.",
                              f"Use one of: {allowed} (BATON_REMOTE_KEY_ENVS); put the key in that variable "
                              "where Baton runs, never in the chat.")
    if not os.environ.get(name):
        raise InvalidArgument(f"The environment variable {name} is not set where Baton runs.",
                              f"Set {name} to the remote server's API key in Baton's environment, then load again.")
    return name


def check_interpreter(raw: str | Path | None, settings: Settings) -> Path | None:
    if raw is None or raw == "":
        return None
    path = Path(raw)
    if path not in settings.interpreters:
        raise InvalidArgument(
            f"The interpreter {str(raw)[:200]} is not one the operator allowed.",
            f"Use one of: {', '.join(map(str, settings.interpreters))} (BATON_ALLOWED_INTERPRETERS).",
        )
    return path


def check_max_tokens(max_tokens: int) -> int:
    if not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
        raise InvalidArgument(f"max_tokens must be between 1 and {MAX_TOKENS_LIMIT}, not {max_tokens}.",
                              "Give the longest answer, in tokens, this version may write.")
    return max_tokens


def check_template(template: str, capability: Capability = Capability.PLAIN) -> str:
    allowed, required = SLOTS[capability], REQUIRED[capability]
    what_template = "prompt template" if capability is Capability.PLAIN else f"{capability.value} template"
    hint = (f"Use the fields {', '.join('{' + f + '}' for f in sorted(allowed))}, with "
            f"{' and '.join('{' + f + '}' for f in sorted(required))}; write {{{{ and }}}} for literal braces.")
    if len(template) > MAX_TEMPLATE_CHARS:
        raise InvalidArgument(f"The {what_template} is longer than {MAX_TEMPLATE_CHARS} characters.", "Shorten it.")
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise InvalidArgument(f"The {what_template} is malformed ({exc}).", hint) from None
    unknown, absent = fields - allowed, required - fields
    if unknown or absent:
        missing = " or ".join("{" + f + "}" for f in sorted(absent))
        what = f"unknown fields {sorted(unknown)}" if unknown else f"no {missing} field"
        raise InvalidArgument(f"The {what_template} has {what}.", hint)
    marker = "\x00text\x00"
    main = "source_term" if capability is Capability.TERM else "text"
    try:  # nested fields in format specs ("{text:{x}}") only show up when formatting
        filled = template.format(**{f: "" for f in allowed} | {main: marker})
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise InvalidArgument(f"The {what_template} cannot be filled in ({type(exc).__name__}: {exc}).", hint) from None
    if marker not in filled:  # e.g. "{text:.0}" fills in as nothing: the model would never see the text
        raise InvalidArgument(f"The {what_template} drops the text ({{{main}}} has a format that cuts it).", hint)
    return template


def check_templates(templates: Mapping[str, str]) -> dict[str, str]:
    """A recipe's extra templates, by capability name (terminology, contextual, formatted, term)."""
    out: dict[str, str] = {}
    for key, template in templates.items():
        try:
            capability = Capability(key)
        except ValueError:
            capability = None
        if capability is None or capability not in OPTIONAL:
            raise InvalidArgument(f"'{str(key)[:40]}' is not a template capability.",
                                  f"Use one of: {', '.join(c.value for c in OPTIONAL)}.")
        out[capability.value] = check_template(template, capability)
    return out
