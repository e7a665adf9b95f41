"""Translation memory in the engine, on the fake server: exact answers without a model, a close
entry as a reference for a contextual template only, evaluations untouched, TMX read whole or not
at all, and the shared memory's changes audited."""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from engine import MEMORY, MEMORY_SHARED, Engine, InvalidArgument, MemoryEntry, NewMemoryEntry, TranslationRequest
from engine.memory import read_tmx, write_tmx

from .conftest import fake_model, fake_settings


@pytest.fixture
async def eng(tmp_path):
    """`ctx` (with a contextual template) active; both echo the prompt they got."""
    e = Engine(fake_settings(tmp_path, port_min=29700, port_max=29799))
    await e.start()
    await e.register("ctx", fake_model(e.settings, "ctx", echo_prompt=True), prompt_template="{text}",
                     templates={"contextual": "Context: {context}\nTranslate into {target_lang}:\n{text}"})
    await e.register("plain", fake_model(e.settings, "plain", echo_prompt=True), prompt_template="{text}")
    for name in ("ctx", "plain"):
        await e.load(name)
        await e.wait_loaded(name)
    await e.switch("ctx")
    yield e
    await e.close()


def ask(text: str, user: str = "ann", **kw) -> TranslationRequest:
    return TranslationRequest(text, "French", "English", conversation_id="c", user=user, **kw)


async def quiet(_: str) -> None:
    await asyncio.sleep(0)


async def test_an_exact_match_answers_without_a_model_and_the_users_entry_wins(eng):
    await eng.memory_add(MEMORY_SHARED, [NewMemoryEntry("en", "fr", "Good morning", "Bonjour")], actor="root")
    served = eng.pool.get("ctx").snapshot().served
    r = await eng.translate(ask("  good MORNING "), quiet)
    assert (r.version, r.text) == (MEMORY, "Bonjour") and "shared, added by root" in r.memory
    assert eng.pool.get("ctx").snapshot().served == served
    await eng.memory_add("ann", [NewMemoryEntry("en", "fr", "Good morning", "Salut")], actor="ann")
    assert (await eng.translate(ask("Good morning"), quiet)).text == "Salut"
    assert (await eng.translate(ask("Good morning", user="bob"), quiet)).text == "Bonjour"
    asked = await eng.translate(ask("Good morning", use_memory=False), quiet)
    assert asked.version == "ctx" and asked.memory == ""
    pinned = await eng.translate(ask("Good morning", version="plain"), quiet)
    assert pinned.version == "plain", "an evaluation measures the version, not the memory"
    audit = [a.action for a in await eng.audit(10)]
    assert audit.count("tm-add") == 1, "the shared memory's change is audited, a user's own is not"


async def test_a_close_entry_is_a_reference_for_a_contextual_template_only(eng):
    await eng.memory_add(MEMORY_SHARED, [NewMemoryEntry("en", "fr", "Where is the train station?",
                                                        "Où est la gare ?")], actor="root")
    r = await eng.translate(ask("Where is the train station"), quiet)
    assert "A similar text translated before: Where is the train station? => Où est la gare ?" in r.text
    assert r.version == "ctx" and "% alike" in r.reference
    far = await eng.translate(ask("I would like a coffee"), quiet)
    assert "similar text" not in far.text and far.reference == ""
    await eng.switch("plain")
    plain = await eng.translate(ask("Where is the train station"), quiet)
    assert "similar text" not in plain.text and plain.reference == "", "no contextual template, no reference"


async def test_tmx_round_trips_and_a_bad_file_changes_nothing(eng):
    entries = [NewMemoryEntry("en", "fr", f"Sentence {i}", f"Phrase {i}") for i in range(3)]
    await eng.memory_add(MEMORY_SHARED, entries, actor="root")
    data = await eng.memory_export(MEMORY_SHARED)
    assert sorted(read_tmx(data), key=lambda e: e.source) == entries
    before = await eng.memory.entries(MEMORY_SHARED)
    bad_lang = data.replace(b'xml:lang="fr"', b'xml:lang="xx"', 1)
    with pytest.raises(InvalidArgument, match=r"Line \d+: the language 'xx'"):
        await eng.memory_import(MEMORY_SHARED, bad_lang + b"", actor="root")
    with pytest.raises(InvalidArgument, match="not well-formed"):
        await eng.memory_import(MEMORY_SHARED, data[:-20], actor="root")
    assert await eng.memory.entries(MEMORY_SHARED) == before
    refused = [a for a in await eng.audit(10) if a.action == "tm-import"]
    assert [a.outcome for a in refused] == ["refused", "refused"]


async def test_a_memory_is_bounded_and_an_import_past_it_adds_nothing(eng, monkeypatch):
    monkeypatch.setattr("engine.memory.MAX_ENTRIES", 5)
    entries = [NewMemoryEntry("en", "fr", f"Line {i}", f"Ligne {i}") for i in range(6)]
    with pytest.raises(InvalidArgument, match="limit of 5"):
        await eng.memory_import("ann", write_tmx_of(entries), actor="ann")
    assert await eng.memory.entries("ann") == []


def write_tmx_of(entries: list[NewMemoryEntry]) -> bytes:
    return write_tmx([MemoryEntry(i, "", e.src_lang, e.tgt_lang, e.source, e.target, "t", datetime.now(UTC), "typed")
                      for i, e in enumerate(entries)])
