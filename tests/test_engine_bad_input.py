"""Property-based bad input for everything an operator can hand the engine.

Whatever the input (unicode, shell metacharacters, huge strings, paths outside the roots, flags
not allowed), the engine either accepts a value that is safe by construction or refuses with an
InvalidArgument that says what to do; a refusal saves nothing and starts no process.
"""
from __future__ import annotations

import asyncio
import functools
import string
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine import Engine, InvalidArgument
from engine.settings import DEFAULT_ALLOWED_FLAGS
from engine.validation import FLAG_VALUE_RE, NAME_RE, check_flags, check_model_path, check_name, check_template

from .conftest import fake_model, fake_settings

SHELLISH = st.sampled_from([";", "&&", "|", "`", "$(", ")", ">", "<", "\n", "'", '"', "*", "~", "..", "/", "\\", "\0", " "])
NASTY = st.lists(st.one_of(st.text(max_size=20), SHELLISH), max_size=8).map("".join)
HUGE = st.integers(1000, 100_000).map(lambda n: "x" * n)


@given(st.one_of(NASTY, HUGE, st.text()))
def test_names_are_safe_or_refused(name):
    try:
        assert check_name(name) == name
    except InvalidArgument as exc:
        assert "not a valid version name" in str(exc) and "Use 1-48 letters" in str(exc)
        return
    assert NAME_RE.fullmatch(name) and set(name) <= set(string.ascii_letters + string.digits + "._-")


@functools.cache
def flag_settings():
    """Built on first use, inside the session (tests/conftest.py hermetic_settings), not at import."""
    return fake_settings(Path("/nonexistent/baton-props"))  # flag checks only: no file is touched


@given(st.lists(st.one_of(NASTY, st.sampled_from(DEFAULT_ALLOWED_FLAGS + ["--host", "--api-key", "--download-dir"])),
                max_size=6))
def test_flags_are_allowed_plain_values_or_refused(flags):
    settings_ = flag_settings()
    assert settings_.allowed_flags == DEFAULT_ALLOWED_FLAGS
    try:
        out = check_flags(flags, settings_)
    except InvalidArgument as exc:
        assert "is not allowed" in str(exc)
        return
    for token in out:
        assert token in settings_.allowed_flags or FLAG_VALUE_RE.fullmatch(token)
    assert "--host" not in out and "--api-key" not in out


MODEL_DIRS = ("good", "nested/inner")  # real model directories (config.json) under the root
# {root} is the model root, {outside} a model directory outside it.
ACCEPTED_PATHS = ("good", "good/", "./good", "good/.", "nested/inner", "nested/../good", "{root}/good", "{root}/nested/inner")
REFUSED_PATHS = ("/etc", "/", "../../etc", "~root", "/proc/self", "models/../..", "", "empty", "nested", "missing",
                 "escape", "escape/passwd", "sneaky", "{outside}", "{root}/../outside-model", "good\0")
OUTSIDE_PATHS = ("/etc", "/", "../../etc", "/proc/self", "models/../..", "escape", "escape/passwd", "sneaky",
                 "{outside}", "{root}/../outside-model")


def test_model_paths_stay_under_the_roots(tmp_path):
    """A path is accepted only when it resolves to a model directory under a model root; both
    outcomes occur (the root holds real model directories, a plain directory, links out of it)."""
    settings_ = fake_settings(tmp_path / "data")
    root = settings_.model_roots[0]
    for name in MODEL_DIRS:
        (root / name).mkdir(parents=True)
        (root / name / "config.json").write_text("{}")
    (root / "empty").mkdir()
    outside = tmp_path / "outside-model"
    outside.mkdir()
    (outside / "config.json").write_text("{}")
    (root / "escape").symlink_to("/etc")
    (root / "sneaky").symlink_to(outside)  # a model directory, but reached through a link out of the root
    models = {(root / name).resolve() for name in MODEL_DIRS}
    fill = {"{root}": str(root), "{outside}": str(outside)}
    known_good = {_fill(p, fill) for p in ACCEPTED_PATHS}
    outside_cases = {_fill(p, fill) for p in OUTSIDE_PATHS}
    seen = {"accepted": 0, "refused": 0}

    @settings(max_examples=200, deadline=None)
    @given(raw=st.one_of(NASTY, HUGE, st.sampled_from(ACCEPTED_PATHS + REFUSED_PATHS),
                         st.tuples(st.sampled_from(ACCEPTED_PATHS + REFUSED_PATHS), NASTY).map("".join)))
    def check(raw):
        raw = _fill(raw, fill)
        try:
            path = check_model_path(raw, settings_)
        except InvalidArgument as exc:
            seen["refused"] += 1
            assert raw not in known_good, f"{raw!r} names a model directory under the root, yet: {exc}"
            assert any(s in str(exc) for s in ("outside the allowed model roots", "not a model directory",
                                               "empty or malformed", "cannot be read")), str(exc)
            if raw in outside_cases:
                assert "outside the allowed model roots" in str(exc), str(exc)
            return
        seen["accepted"] += 1
        assert path in models, f"{raw!r} was accepted as {path}, which is not a model directory under the root"
        assert path == path.resolve() and (path / "config.json").is_file()

    for raw in ACCEPTED_PATHS + REFUSED_PATHS:  # every listed case, whatever hypothesis draws
        check.hypothesis.inner_test(raw)
    check()
    assert seen["accepted"] >= len(ACCEPTED_PATHS) and seen["refused"] >= len(REFUSED_PATHS), seen


def _fill(raw: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        raw = raw.replace(key, value)
    return raw


TEMPLATE_PIECES = st.one_of(
    st.text(alphabet=st.characters(blacklist_characters="{}"), max_size=20),
    st.sampled_from(["{text}", "{source_lang}", "{target_lang}", "{{", "}}", "{", "}", "{text:>8}", "{text!r}",
                     "{x}", "{0}", "{}", "{text!z}", "{text.__class__}", "{text:{x}}", "{text[0]}"]),
)


def test_templates_use_only_known_fields():
    """A template is accepted only with a {text} field and no other field than the three known
    ones, and an accepted template always fills in; both outcomes occur."""
    seen = {"accepted": 0, "refused": 0}

    @settings(max_examples=300)
    @given(st.one_of(st.text(max_size=200), st.lists(TEMPLATE_PIECES, max_size=8).map("".join)))
    @example("Translate from {source_lang} to {target_lang}:\\n{text}\\n")
    @example("{text:{x}}")
    def check(template):
        try:
            out = check_template(template)
        except InvalidArgument as exc:
            seen["refused"] += 1
            assert "template" in str(exc)
            return
        seen["accepted"] += 1
        assert out == template
        fields = {f for _, f, _, _ in string.Formatter().parse(out) if f is not None}
        assert "text" in fields and fields <= {"source_lang", "target_lang", "text"}, fields
        out.format(source_lang="a", target_lang="b", text="c")  # never raises once accepted

    check()
    assert seen["accepted"] and seen["refused"], seen


@pytest.fixture(scope="module")
def engine_for_props(tmp_path_factory):
    loop = asyncio.new_event_loop()
    eng = Engine(fake_settings(tmp_path_factory.mktemp("props")))
    loop.run_until_complete(eng.start())
    fake_model(eng.settings, "good")
    yield loop, eng
    loop.run_until_complete(eng.close())
    loop.close()


SAFE_FLAGS = ["--dtype", "float32", "--enforce-eager", "--seed", "7"]


def test_registration_is_safe_or_refused_and_a_refusal_changes_nothing(engine_for_props):
    """Whatever name, path and flags: a refusal (InvalidArgument) saves nothing and starts no process;
    an accepted registration is a recipe the engine can start and stop. Both outcomes occur."""
    loop, eng = engine_for_props
    good = (eng.settings.model_roots[0] / "good").resolve()
    seen = {"accepted": 0, "refused": 0}

    @settings(max_examples=60, deadline=None)
    @given(name=st.one_of(NASTY, HUGE, st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True)),
           path=st.one_of(NASTY, st.just("good")),
           flags=st.lists(st.one_of(NASTY, st.sampled_from(SAFE_FLAGS)), max_size=3))
    @example(name="ok-1", path="good", flags=["--dtype", "float32"])
    @example(name="bad name", path="good", flags=[])
    @example(name="outside", path="../good", flags=[])
    @example(name="host", path="good", flags=["--host", "0.0.0.0"])
    def check(name, path, flags):
        async def attempt():
            before = await eng.store.list_versions()
            try:
                spec = await eng.register(name, path, flags=flags)
            except InvalidArgument:
                seen["refused"] += 1
                assert await eng.store.list_versions() == before
                assert eng.pool.backends == {}
                return
            seen["accepted"] += 1
            assert NAME_RE.fullmatch(name) and spec.model_path == good, spec
            assert all(t in eng.settings.allowed_flags or FLAG_VALUE_RE.fullmatch(t) for t in spec.flags), spec.flags
            assert name in {v.name for v in await eng.store.list_versions()}
            await eng.load(name)  # accepted: a safe recipe the engine can start
            assert (await eng.wait_loaded(name)).state == "ready"
            assert await eng.unload(name) is True
            assert eng.pool.get(name) is None, "an unloaded version keeps no backend"

        loop.run_until_complete(attempt())

    check()
    assert seen["accepted"] and seen["refused"], seen
