"""What translators expect, through the real app over its websocket, on the fake server: the
language pair and the detected language on every answer, glossaries in the prompt and checked
in the answer, earlier turns as context, formatting kept, and documents translated by one
version from the first segment to the last.

One app for the module; the tests run in file order (they switch versions). The fake versions:
`v1` echoes the whole prompt it got (so a test sees what the template made of a request) and has
terminology and contextual templates; `v2` and `slow` have the template "{text}" and answer
"<name>: <text>", so a translated piece shows which version made it; `zh` answers everything in
Chinese (the last tests load it, with each policy for an answer in the wrong language).
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3

import httpx
import pytest

from engine import documents
from tests import chatkit as ck
from tests import docsamples

ADMIN = ("root", "root-password-1")
ALICE = ("alice", "alice-password-1")
BOB = ("bob", "bob-password-12")
TERMINOLOGY = "Use these terms:\\n{terms}\\nTranslate into {target_lang}:\\n{text}"
CONTEXTUAL = "Context: {context}\\nTranslate into {target_lang}:\\n{text}"


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("baton-translator")
    ck.make_fake_model(d, "v1", echo_prompt=True)
    ck.make_fake_model(d, "v2", prefix="v2:")
    ck.make_fake_model(d, "slow", prefix="slow:", token_delay_s=0.05)
    ck.make_fake_model(d, "zh", answer="晚上好")  # demo-v1's answer to "Good morning" into French
    return {**ck.fake_env(d), "BATON_PORT_MIN": "30200", "BATON_PORT_MAX": "30499",
            "BATON_DOCUMENT_MAX_SEGMENTS": "100"}


@pytest.fixture(scope="module")
def app(env):
    with ck.running_app(env, admin=ADMIN) as app:
        yield app


@pytest.fixture(scope="module")
async def admin(app):
    client = await ck.connect(app.url, *ADMIN)
    loads = {"v1": f'/load v1 v1 --template-terminology "{TERMINOLOGY}" --template-contextual "{CONTEXTUAL}"',
             "v2": '/load v2 v2 --template "{text}"', "slow": '/load slow slow --template "{text}"'}
    for line in loads.values():
        assert "Loading" in await client.reply(line)
    for name in loads:
        await client.wait_message(rf"`{name}` is ready", timeout=30)
    assert "Switched" in await client.reply("/switch v1")
    for user, password in (ALICE, BOB):
        assert "Added" in await client.reply(f"/users add {user} {password} user")
    yield client
    await client.close()


@pytest.fixture(scope="module")
async def alice(app, admin):
    async with ck.chatting(app.url, *ALICE) as client:
        yield client


DOCX_MIME = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


async def answer(chat: ck.ChatClient, text: str) -> str:
    return (await chat.ask(text))[-1].output


def texts(name: str, data: bytes) -> list[str]:
    """The text segments of a file, as the document reader finds them."""
    return list(documents.read_document(name, data, max_bytes=10**7, max_segments=10**5).segments)


async def translated_file(chat: ck.ChatClient, name: str, timeout: float) -> dict:
    """The file element Baton sent back for `name` (the chat also shows the user's own upload)."""
    want = name.replace(".", ".fr.")
    return await chat.wait_for(lambda: next((e for e in chat.elements if e["name"] == want), None), timeout,
                               f"the translated {name}")


def long_srt(cues: int) -> bytes:
    phrases = list(docsamples.phrasebook("en", "fr"))[:cues]
    return "".join(f"{i}\n00:00:{i:02d},000 --> 00:00:{i:02d},900\n{p}\n\n"
                   for i, p in enumerate(phrases, 1)).encode()


async def test_every_answer_names_its_pair_and_the_detected_language(app, alice):
    out = await answer(alice, "Good morning")
    assert re.search(r"\*\*English → French\*\* \(detected, \d+% sure\) · _Translated by \*\*v1\*\*", out), out
    assert "from English to French" in out, "the detected language, not 'the detected language', is in the prompt"
    alice.pick(source="de")
    out = await answer(alice, "Guten Morgen")
    assert "**German → French** · _Translated by" in out and "detected" not in out.split("_Translated")[0], out
    alice.pick(source="auto")

    def kept(text: str) -> bool:  # the message sent with the pickers' values is in the history
        with contextlib.closing(sqlite3.connect(app.data_dir / "baton.db")) as db:
            return db.execute("SELECT count(*) FROM steps WHERE type = 'user_message' AND output = ?",
                              (text,)).fetchone()[0] == 1
    await ck.wait_until(lambda: kept("Good morning") and kept("Guten Morgen"), 10, "the user's messages stored")


async def test_text_already_in_the_target_language_gets_a_hint(alice):
    out = await answer(alice, "Bonjour tout le monde, merci beaucoup pour votre aide")
    assert "already reads as French" in out and "Choose another target language" in out, out
    assert "_Translated by" not in out, "nothing went to a model"


async def test_a_glossary_term_reaches_the_prompt_and_is_checked(app, admin, alice):
    reply = await answer(alice, "/glossary add station = gare")
    assert "Added in your glossary: `station` = `gare`" in reply, reply
    out = await answer(alice, "Where is the station?")
    assert "Use these terms: station → gare" in out, "the terminology template got the term"
    assert "📖 Glossary: ✅ `gare`" in out, out
    assert "| station | gare | every target |" in await answer(alice, "/glossary list")

    # Another user's glossary is their own; a shared term is everyone's, and only admins keep it.
    async with ck.chatting(app.url, *BOB) as bob:
        assert "Glossary" not in await answer(bob, "Where is the station?")
        assert "Only admins keep the shared glossary" in await answer(bob, "/glossary shared add train = TGV")
    assert "Added in the shared glossary" in await answer(admin, "/glossary shared add train = TGV for fr")
    out = await answer(alice, "The train to the station")
    assert "station → gare" in out and "train → TGV" in out and "✅ `TGV`" in out, out

    # A version without a terminology template: the answer says so and shows the missing term.
    assert "Switched" in await answer(admin, "/switch v2")
    out = await answer(alice, "Where is the station?")
    assert out.startswith("v2: Where is the station?"), out
    assert "v2 has no terminology template, so your glossary terms were not given to it" in out
    assert "❌ `gare` missing (for `station`)" in out, out
    assert "Removed `station`" in await answer(alice, "/glossary remove station")
    assert "no term 'station'" in await answer(alice, "/glossary remove station")
    assert "Switched" in await answer(admin, "/switch v1")


async def test_a_glossary_term_in_a_later_segment_of_a_document_reaches_its_prompt(alice):
    """The shared term occurs only in the second line: that segment's prompt gets it (v1 echoes it)."""
    ref = await alice.upload("notes.txt", b"Good morning\nThe train is late\n", "text/plain")
    msgs = await alice.ask("", files=[ref])
    note = next(m.output for m in msgs if "segments translated" in m.output)
    assert "📖 Glossary: ✅ `TGV`" in note, note
    first, second = texts("notes.txt", await alice.download(await translated_file(alice, "notes.txt", 10)))
    assert "train → TGV" in second and "→" not in first, (first, second)


async def test_earlier_turns_reach_the_contextual_template(alice):
    await answer(alice, "Thank you very much")
    out = await answer(alice, "See you tomorrow")
    assert "Context:" in out and "Thank you very much" in out.split("Translate into")[0], out
    await alice.change_settings(context=False)
    out = await answer(alice, "Good night")
    assert "Context:" not in out and "Translate the following text" in out, "the setting turns context off"
    await alice.change_settings(context=True)


async def test_the_translate_api_takes_a_glossary_and_context(app, admin):
    key = await ck.make_key(admin, "translator-api", "user")
    glossary = [{"source": "station", "target": "gare"}, {"source": "bus", "target": "autobus"}]
    async with httpx.AsyncClient(base_url=app.url, headers={"Authorization": f"Bearer {key}"}) as http:
        terms = await http.post("/v1/translate", json={"text": ["Where is the station?"], "target_lang": "fr",
                                                        "glossary": glossary})
        context = await http.post("/v1/translate", json={"text": ["See you tomorrow"], "target_lang": "de",
                                                          "context": "We are lost."})
        same = await http.post("/v1/translate", json={"text": ["Guten Morgen, wie geht es Ihnen heute?"],
                                                       "target_lang": "de"})
    t = terms.json()["translations"][0]
    assert t["template"] == "terminology" and "station → gare" in t["text"] and "autobus" not in t["text"], t
    assert t["missing_terms"] == [] and t["detected_source_lang"] == "en" and t["version"] == "v1"
    c = context.json()["translations"][0]
    assert c["template"] == "contextual" and "Context: We are lost." in c["text"] and "into German" in c["text"], c
    assert same.status_code == 400 and "already reads as German" in same.json()["error"]["message"]


async def test_markdown_code_links_and_placeholders_survive(admin, alice):
    assert "Switched" in await answer(admin, "/switch v2")
    text = ("# Tickets\n\nRun `baton status` and read [the guide](https://example.com/guide) "
            "for {name} <b>today</b> %s\n\n```\nkeep = this\n```")
    out = await answer(alice, text)
    body = out.split("\n\n**")[0]
    for kept in ("# v2: Tickets", "`baton status`", "](https://example.com/guide)", "[v2: the guide]", "{name}",
                 "<b>v2: today</b>", "%s", "```\nkeep = this\n```"):
        assert kept in body, (kept, body)
    assert "Formatting not kept" not in out, out


async def test_a_docx_and_an_srt_come_back_with_the_same_structure(alice):
    for name, data, mime in (("letter.docx", docsamples.sample_docx()[0], DOCX_MIME),
                             ("film.srt", docsamples.sample_srt()[0], "application/x-subrip")):
        ref = await alice.upload(name, data, mime)
        msgs = await alice.ask("", files=[ref], timeout=60)
        status = next(m.output for m in msgs if "segments translated" in m.output)
        assert "all by one version" in status and "structure differs" not in status, status
        element = await translated_file(alice, name, 10)
        translated = await alice.download(element)
        assert documents.structure_of(name, translated) == documents.structure_of(name, data)
        done = texts(name, translated)
        assert len(done) == len(texts(name, data)) and all(t.startswith("v2: ") for t in done), done


async def test_a_translated_file_stays_in_the_history_for_its_owner_only(app, alice):
    """Resumed later, the thread still offers the translated file, to alice and nobody else."""
    first = await translated_file(alice, "letter.docx", 10)
    live = await alice.download(first)
    again = ck.ChatClient(app.url, alice.token, "alice")
    await again.connect(alice.thread_id)
    resumed = await again.wait_for(lambda: next((d for n, d in again.events if n == "resume_thread"), None), 10,
                                   "the resumed thread")
    await again.close()
    kept = next(e for e in resumed["elements"] if e["name"] == "letter.fr.docx")
    assert kept["url"].startswith("/baton/files/"), kept
    async def fetch(token: str | None) -> httpx.Response:
        async with httpx.AsyncClient(base_url=app.url, cookies={"access_token": token} if token else None) as http:
            return await http.get(kept["url"])
    mine, bobs, nobody = await fetch(alice.token), await fetch(await ck.login(app.url, *BOB)), await fetch(None)
    assert mine.status_code == 200 and mine.content == live
    assert 'filename*=UTF-8\'\'letter.fr.docx' in mine.headers["content-disposition"]
    assert bobs.status_code == 404 and nobody.status_code == 401


async def test_a_document_in_flight_during_a_switch_is_finished_by_one_version(admin, alice):
    assert "Switched" in await answer(admin, "/switch slow")
    data = long_srt(40)
    ref = await alice.upload("long.srt", data, "application/x-subrip")
    mark = len(alice.order)
    await alice.send("", files=[ref])
    await alice.wait_for(lambda: alice.find(r"Translating `long.srt`: \S+ ([1-9]\d*) / ", after=mark), 30,
                         "the document to be under way")
    assert "Switched" in await answer(admin, "/switch v2")
    element = await translated_file(alice, "long.srt", 60)
    done = texts("long.srt", await alice.download(element))
    assert len(done) == 40 and all(t.startswith("slow: ") for t in done), "every segment from the version that started it"
    status = alice.find(r"segments translated", after=mark)
    assert status is not None and "_Translated by **slow**" in status.output
    # New text goes to the version switched to.
    assert (await answer(alice, "Good morning")).startswith("v2:")


async def test_stop_keeps_the_segments_done(admin, alice):
    assert "Switched" in await answer(admin, "/switch slow")
    ref = await alice.upload("stopped.srt", long_srt(40), "application/x-subrip")
    mark = len(alice.order)
    await alice.send("", files=[ref])
    await alice.wait_for(lambda: alice.find(r"Translating `stopped.srt`: \S+ ([3-9]|\d\d) / ", after=mark), 30,
                         "a few segments")
    await alice.stop()
    element = await translated_file(alice, "stopped.srt", 30)
    got = texts("stopped.srt", await alice.download(element))
    done = [t for t in got if t.startswith("slow: ")]
    assert 3 <= len(done) < len(got) == 40, "what was done is kept, the rest in its original words"
    await alice.wait_for(lambda: alice.find(r"Stopped.*keep their original words", after=mark), 10, "the note")


async def test_a_document_whose_version_dies_is_translated_again_whole_by_another(admin, alice):
    """`slow` (active, v2 its standby) is killed mid-document: the document starts again from its
    first segment on v2, and the file comes back from v2 alone, never stitched from both."""
    status = await answer(admin, "/status")
    assert status.startswith("**Active:** `slow` · **standby:** `v2`"), status
    pid = next(int(cells[5]) for line in status.splitlines() if line.startswith("| slow ")
               for cells in [[c.strip() for c in line.split("|")]] if cells[5].isdigit())
    ref = await alice.upload("crash.srt", long_srt(40), "application/x-subrip")
    mark = len(alice.order)
    await alice.send("", files=[ref])
    await alice.wait_for(lambda: alice.find(r"Translating `crash.srt`: \S+ ([3-9]|\d\d) / ", after=mark), 30,
                         "a few segments")
    os.kill(pid, signal.SIGKILL)
    element = await translated_file(alice, "crash.srt", 60)
    done = texts("crash.srt", await alice.download(element))
    assert len(done) == 40 and all(t.startswith("v2: ") for t in done), done
    note = alice.find(r"segments translated", after=mark)
    assert note is not None and "_Translated by **v2** (standby)" in note.output, note.output if note else None
    assert "🔁 Version slow stopped answering" in note.output, note.output


async def test_documents_of_an_unknown_kind_broken_or_too_long_are_refused(alice):
    with pytest.raises(AssertionError, match="File type not allowed"):  # Chainlit's upload check, first
        await alice.upload("notes.pdf", b"%PDF-1.4", "application/pdf")
    lines = "".join(f"Line {i}\n" for i in range(150)).encode()
    for name, data, expected in (("broken.docx", b"not a zip", r"broken\.docx"),
                                 ("many.txt", lines, r"150 pieces of text to translate, over the limit of 100")):
        ref = await alice.upload(name, data, "application/octet-stream")
        msgs = await alice.ask("", files=[ref])
        assert re.search(expected, msgs[-1].output) and "⚠️" in msgs[-1].output, msgs[-1].output
        assert not any(e["name"].startswith(name.split(".")[0] + ".fr") for e in alice.elements), "no file back"


async def test_an_answer_in_the_wrong_language_is_flagged_and_counted(app, admin, alice):
    """Issue 25: the answer checks. Leaves v1 active."""
    assert "Loading" in await admin.reply("/load zh zh")
    await admin.wait_message(r"`zh` is ready", timeout=30)
    assert "Switched" in await admin.reply("/switch zh")
    alice.pick(source="auto", target="fr")
    msg = (await alice.ask("Good morning"))[-1]
    assert msg.attribution == ("zh", "active"), msg.output
    assert re.search(r"⚠️ This answer does not read as French \(detected: Chinese, \d+ %\)", msg.output), msg.output
    status = await admin.reply("/status")
    row = next(line for line in status.splitlines() if line.startswith("| zh "))
    assert "wrong language 1 (100%)" in row, row
    key = await ck.make_key(admin, "checks", "user")
    async with httpx.AsyncClient(base_url=app.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        r = await http.post("/v1/translate", json={"text": ["Good morning"], "target_lang": "fr"})
        assert r.status_code == 200, r.text
        flags = r.json()["translations"][0]["flags"]
        assert [f["check"] for f in flags] == ["wrong_language"] and "Chinese" in flags[0]["message"], flags
        metrics = (await http.get("/metrics")).text
    counted = re.search(r'baton_answer_flags_total\{check="wrong_language",version="zh"\} (\d+)', metrics)
    assert counted and int(counted.group(1)) == 2, metrics[-2000:]
    assert "Switched" in await admin.reply("/switch v1")


async def test_a_version_told_to_retranslate_has_its_wrong_language_answer_translated_again(admin, alice):
    """With `--on-wrong-language retranslate`, the standby translates such an answer again, whole, and
    the answer says so; a bad policy is refused and changes nothing. Leaves v1 active."""
    reply = await admin.reply("/load zh2 zh --on-wrong-language sometimes")
    assert "not a policy" in reply and "retranslate" in reply, reply
    assert "`zh2`" not in await admin.reply("/status")
    assert "Loading" in await admin.reply("/load zh2 zh --on-wrong-language retranslate")
    await admin.wait_message(r"`zh2` is ready", timeout=30)
    assert "Switched" in await admin.reply("/switch v2")
    assert "Switched" in await admin.reply("/switch zh2")  # v2 is the standby
    alice.pick(source="auto", target="fr")
    msg = (await alice.ask("Good morning"))[-1]
    assert msg.attribution == ("v2", "standby"), msg.output
    assert msg.translation.startswith("v2:") and "晚上好" not in msg.translation, msg.output
    assert "It was translated again by v2." in msg.output, msg.output
    # The first answer streamed, then was cleared from the message before the second one streamed.
    cleared = [d for n, d in alice.events if n == "update_message" and d.get("id") == msg.id and not d.get("output")]
    assert "".join(msg.tokens) == "晚上好" + msg.translation and cleared, msg.tokens
    assert "Switched" in await admin.reply("/switch v1")


async def test_a_text_in_translation_memory_is_answered_from_it_and_says_so(app, admin, alice):
    """Issue 25: shared entries kept by admins (audited), a user's own entry winning, no model asked,
    provenance in the chat and on /v1/translate, and the opt-out."""
    refused = await alice.reply("/tm shared add Good evening = Bonsoir for fr")
    assert "Only admins keep the shared translation memory" in refused, refused
    added = await admin.reply("/tm shared add Good morning = Bonjour for fr")
    assert "Added to the shared memory" in added and "English → French" in added, added
    served = await _served(admin, "v1")
    alice.pick(source="auto", target="fr")
    msg = (await alice.ask("good   MORNING"))[-1]
    assert msg.translation == "Bonjour", msg.output
    assert re.search(r"📚 From translation memory \(shared, added by root on \d{4}-\d\d-\d\d\)", msg.output), msg.output
    assert await _served(admin, "v1") == served, "no model was asked"
    assert "tm-add" in await admin.reply("/audit 5 --action tm-add")

    assert "Added to your memory" in await alice.reply("/tm add Good morning = Salut for fr")
    assert (await alice.ask("Good morning"))[-1].translation == "Salut", "the user's own entry wins"
    listed = await alice.reply("/tm list morning")
    assert "| Good morning | Salut |" in listed and "| Good morning | Bonjour |" in listed, listed

    key = await ck.make_key(admin, "memory", "user")
    async with httpx.AsyncClient(base_url=app.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        r = await http.post("/v1/translate", json={"text": ["Good morning"], "target_lang": "fr"})
        one = r.json()["translations"][0]
        assert (one["text"], one["version"]) == ("Bonjour", "memory") and "shared" in one["memory"], r.text
        r = await http.post("/v1/translate", json={"text": ["Good morning"], "target_lang": "fr", "use_memory": False})
        one = r.json()["translations"][0]
        assert one["version"] == "v1" and one["memory"] is None, r.text
    assert "Removed 1 entry" in await alice.reply("/tm remove Good morning for fr")


async def test_memory_goes_out_and_back_as_tmx_and_a_broken_file_changes_nothing(app, admin):
    reply = (await admin.ask("/tm shared export"))[-1]
    element = await admin.wait_for(lambda: next((e for e in admin.elements if e["name"] == "shared-memory.tmx"), None),
                                   10, "the exported file")
    tmx = await admin.download(element)
    assert b"<seg>Good morning</seg>" in tmx and b"<seg>Bonjour</seg>" in tmx, reply.output
    assert "Removed" in await admin.reply("/tm shared remove Good morning")
    ref = await admin.upload("shared-memory.tmx", tmx, "application/xml")
    back = (await admin.ask("/tm shared import", files=[ref]))[-1].output
    assert "1 entries added" in back, back
    broken = tmx.replace(b"</tu>", b"", 1)
    ref = await admin.upload("broken.tmx", broken, "application/xml")
    refused = (await admin.ask("/tm shared import", files=[ref]))[-1].output
    assert re.search(r"Line \d+: the TMX file is not well-formed XML", refused) and "Nothing was imported" in refused
    assert (await admin.reply("/tm list")).count("| Good morning |") == 1, "nothing half-imported"
    async with httpx.AsyncClient(base_url=f"{app.url}/admin/v1", timeout=30,
                                 headers={"Authorization": f"Bearer {await ck.make_key(admin, 'tmx', 'admin')}"}) as api:
        r = await api.get("/memory/export")
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-tmx+xml"), r.text
        bomb = b'<?xml version="1.0"?><!DOCTYPE t [<!ENTITY a "aaaa">]><tmx version="1.4"></tmx>'
        r = await api.post("/memory/import", content=bomb)
        assert r.status_code == 400 and "entities" in r.json()["error"]["message"], r.text


async def test_an_admin_approves_an_answer_into_the_shared_memory(admin):
    admin.pick(source="en", target="de")
    msg = (await admin.ask("Thank you very much"))[-1]
    action = await admin.wait_for(lambda: next((a for a in admin.actions if a.get("forId") == msg.id
                                                and "Approve" in a.get("label", "")), None), 10, "the approve button")
    assert (await admin.click(action)).status_code == 200
    await admin.wait_message(r"Added to the shared memory: `Thank you very much`", timeout=10)
    again = (await admin.ask("Thank you very much"))[-1]
    assert again.translation == msg.translation and "approved by root" in again.output, again.output


async def _served(admin: ck.ChatClient, version: str) -> int:
    status = await admin.reply("/status")
    row = next(line for line in status.splitlines() if line.startswith(f"| {version} "))
    return int(row.split("|")[9])
