"""Property-based bad input for everything an operator can hand the engine.

Whatever the input (unicode, shell metacharacters, huge strings, paths outside the roots, flags
not allowed), the engine either accepts a value that is safe by construction or refuses with an
InvalidArgument that says what to do; a refusal saves nothing and starts no process.
"""
from __future__ import annotations

import asyncio
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from engine import Engine, InvalidArgument
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


SETTINGS = fake_settings(Path("/tmp/baton-props"))


@given(st.lists(st.one_of(NASTY, st.sampled_from(SETTINGS.allowed_flags + ["--host", "--api-key", "--download-dir"])),
                max_size=6))
def test_flags_are_allowed_plain_values_or_refused(flags):
    try:
        out = check_flags(flags, SETTINGS)
    except InvalidArgument as exc:
        assert "is not allowed" in str(exc)
        return
    for token in out:
        assert token in SETTINGS.allowed_flags or FLAG_VALUE_RE.fullmatch(token)
    assert "--host" not in out and "--api-key" not in out


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(NASTY, HUGE, st.sampled_from(["/etc", "/", "../../etc", "~root", "/proc/self", "models/../.."])))
def test_model_paths_stay_under_the_roots(raw):
    SETTINGS.model_roots[0].mkdir(parents=True, exist_ok=True)
    try:
        path = check_model_path(raw, SETTINGS)
    except InvalidArgument as exc:
        assert any(s in str(exc) for s in ("outside the allowed model roots", "not a model directory", "empty or malformed", "cannot be read"))
        return
    assert any(path.is_relative_to(root) for root in SETTINGS.model_roots)


@given(st.one_of(st.text(max_size=200), st.sampled_from(["{text:{x}}", "{0}", "{text!z}", "{text.__class__}", "{}"])))
def test_templates_use_only_known_fields(template):
    try:
        out = check_template(template)
    except InvalidArgument as exc:
        assert "template" in str(exc)
        return
    assert "{text}" in out.replace("{{", "").replace("}}", "") or "{text" in out
    out.format(source_lang="a", target_lang="b", text="c")  # never raises once accepted


@pytest.fixture(scope="module")
def engine_for_props(tmp_path_factory):
    loop = asyncio.new_event_loop()
    eng = Engine(fake_settings(tmp_path_factory.mktemp("props")))
    loop.run_until_complete(eng.start())
    fake_model(eng.settings, "good")
    yield loop, eng
    loop.run_until_complete(eng.close())
    loop.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.one_of(NASTY, HUGE), path=st.one_of(NASTY, st.just("good")), flags=st.lists(NASTY, max_size=3))
def test_refused_registration_changes_nothing(engine_for_props, name, path, flags):
    loop, eng = engine_for_props
    assume(not NAME_RE.fullmatch(name) or path != "good" or flags)

    async def attempt():
        before = await eng.store.list_versions()
        try:
            await eng.register(name, path, flags=flags)
        except InvalidArgument:
            assert await eng.store.list_versions() == before
            assert eng.pool.backends == {}
            return
        await eng.load(name)  # accepted: it must be a safe recipe the engine can start
        await eng.unload(name)

    loop.run_until_complete(attempt())
