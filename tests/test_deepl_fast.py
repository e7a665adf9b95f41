"""DeepL's API v2 at /v2/ on the fake server: the official `deepl` library, unchanged but for its
`server_url`, against the real app in a subprocess; keys made in the chat.

One app for the module; the tests run in file order (they switch versions). The fake versions:
`v1` echoes the last words of its prompt, and its terminology template puts the terms last, so
an answer shows the glossary terms it got; `v2` and `slow` have the template "{text}" and answer
"<name>: <text>", so a translation shows which version made it.
"""
from __future__ import annotations

import asyncio
import io
import os
import signal
import sqlite3
from collections.abc import Iterator
from types import SimpleNamespace

import deepl
import docx
import httpx
import pytest

from engine import NotFound, TranslationRequest, documents
from gateway.config import GatewayConfig
from gateway.deepl_documents import DocumentJobs
from tests import chatkit as ck
from tests import docsamples
from tests.deeplkit import Client as Library

ADMIN = ("root", "root-password-1")
TERMINOLOGY = "Translate into {target_lang}: {text} Terms: {terms}"


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Iterator[ck.App]:
    d = tmp_path_factory.mktemp("baton-deepl")
    ck.make_fake_model(d, "v1", echo_prompt=True, prefix="v1:")
    ck.make_fake_model(d, "v2", prefix="v2:")
    ck.make_fake_model(d, "slow", prefix="slow:", token_delay_s=0.05)
    env = {**ck.fake_env(d), "BATON_PORT_MIN": "34600", "BATON_PORT_MAX": "34799",
           "BATON_DOCUMENT_MAX_SEGMENTS": "100", "BATON_DOCUMENTS_IN_FLIGHT": "1",
           "BATON_LOGIN_SLOW_AFTER": "2", "BATON_LOGIN_LOCK_AFTER": "4", "BATON_LOGIN_DELAY_S": "0.2"}
    with ck.running_app(env, admin=ADMIN) as app:
        yield app


@pytest.fixture(scope="module")
async def keys(app) -> dict[str, str]:
    """Keys made in the chat, and v1, v2 and slow loaded through the admin API, v1 serving."""
    async with ck.chatting(app.url, *ADMIN) as chat:
        made = {name: await ck.make_key(chat, name, role)
                for name, role in (("ops", "admin"), ("tool", "user"), ("counter", "user"))}
    async with admin_http(app, made["ops"]) as http:
        for name, extra in (("v1", {"templates": {"terminology": TERMINOLOGY}}), ("v2", {"template": "{text}"}),
                            ("slow", {"template": "{text}"})):
            r = await http.post("/versions", json={"name": name, "model_path": name, **extra})
            assert r.status_code == 202, r.text
        for name in ("v1", "v2", "slow"):
            await ck.wait_until(lambda n=name: _ready(http, n), 30, f"{name} ready")
        await switch(http, "v1")
    return made


def admin_http(app: ck.App, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"{app.url}/admin/v1", headers={"Authorization": f"Bearer {key}"}, timeout=30)


async def _ready(http: httpx.AsyncClient, name: str) -> bool:
    return (await http.get(f"/versions/{name}")).json()["state"] == "ready"


async def switch(http: httpx.AsyncClient, name: str) -> None:
    r = await http.post("/deployment/switch", json={"name": name, "force": True})
    assert r.status_code == 200 or "already active" in r.text, r.text


def http(app: ck.App, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"{app.url}/v2", headers={"Authorization": f"DeepL-Auth-Key {key}"},
                             timeout=30)


# authentication --------------------------------------------------------------------------------------
async def test_a_wrong_or_missing_key_is_refused_with_403_as_deepl_does(app, keys):
    with pytest.raises(deepl.AuthorizationException, match="The API key is wrong or has been revoked"):
        await Library(app.url, "baton-not-a-key")("get_usage")
    async with httpx.AsyncClient(base_url=app.url) as bare:
        for headers in ({}, {"Authorization": f"Bearer {keys['tool']}"}):
            r = await bare.post("/v2/translate", json={"text": ["Hello"], "target_lang": "FR"}, headers=headers)
            assert r.status_code == 403 and "DeepL-Auth-Key" in r.json()["message"], r.text


# translation -----------------------------------------------------------------------------------------
async def test_several_texts_are_translated_by_one_version_named_in_a_header(app, keys):
    client = Library(app.url, keys["tool"])
    async with admin_http(app, keys["ops"]) as admin:
        await switch(admin, "v2")
    got = await client("translate_text", ["Good morning", "Thank you very much", "Hello"], source_lang="EN",
                       target_lang="FR")
    assert [r.text for r in got] == ["v2: Good morning", "v2: Thank you very much", "v2: Hello"]
    assert {r.detected_source_lang for r in got} == {"EN"}
    assert client.headers[-1]["X-Baton-Version"] == "v2"
    assert "X-Baton-Formality" not in client.headers[-1]
    # No source: detected, per text, in DeepL's code.
    one = await client("translate_text", "Where is the station? I would like to buy a ticket to Paris, please.",
                       target_lang="DE")
    assert one.detected_source_lang == "EN" and one.text.startswith("v2: ")


async def test_a_request_split_by_a_switch_is_translated_again_by_one_version(app, keys):
    """12 texts on `slow`, four at a time: the admin switches to v2 once the first are answered, so
    the last ones start on v2. The answer is not a mix: the texts the other version answered are
    translated again by the one that answered most (gateway/translating.py), and the header names it."""
    client = Library(app.url, keys["tool"])
    async with admin_http(app, keys["ops"]) as ops:
        await switch(ops, "slow")
        served = (await ops.get("/versions/slow")).json()["served"]
        on_v2 = (await ops.get("/versions/v2")).json()["served"]
        texts = [f"Sentence number {i}" for i in range(12)]
        call = asyncio.create_task(client("translate_text", texts, source_lang="EN", target_lang="FR"))
        await ck.wait_until(lambda: _served_more(ops, "slow", served), 10, "the first texts answered by slow")
        await switch(ops, "v2")
        got = await call
        assert (await ops.get("/versions/v2")).json()["served"] > on_v2, "the request was really split"
    one = client.headers[-1]["X-Baton-Version"]
    assert one in ("slow", "v2") and [r.text for r in got] == [f"{one}: {t}" for t in texts], got


async def _served_more(http: httpx.AsyncClient, name: str, than: int) -> bool:
    return (await http.get(f"/versions/{name}")).json()["served"] > than


async def test_an_older_clients_form_with_repeated_text_and_formality_said_to_be_ignored(app, keys):
    async with http(app, keys["tool"]) as client:
        r = await client.post("/translate", data={"text": ["Good night", "Excuse me"], "target_lang": "PT-BR",
                                                  "source_lang": "en", "formality": "more", "split_sentences": "0"})
    assert r.status_code == 200, r.text
    assert [t["text"] for t in r.json()["translations"]] == ["v2: Good night", "v2: Excuse me"]
    assert r.headers["X-Baton-Formality"].startswith("ignored")


async def test_weblates_deepl_requests_work_and_its_placeholders_survive(app, keys):
    """Weblate's DeepL back-end (weblate/machinery/deepl.py): languages by query parameter, plain
    "EN" as a target, placeholders as XML tags it asks to be left alone."""
    async with http(app, keys["tool"]) as weblate:
        listed = [(await weblate.get("/languages", params={"type": kind})).json() for kind in ("source", "target")]
        assert "EN" in {x["language"] for x in listed[0]} and "DE" in {x["language"] for x in listed[1]}
        r = await weblate.post("/translate", json={
            "text": ['Hello <x id="0"></x>, good morning', "Thank you"], "source_lang": "DE", "target_lang": "EN",
            "formality": "default", "tag_handling": "xml", "ignore_tags": ["x"]})
    assert r.status_code == 200, r.text
    first, second = (t["text"] for t in r.json()["translations"])
    assert '<x id="0"></x>' in first and second == "v2: Thank you", (first, second)
    assert "X-Baton-Formality" not in r.headers


async def test_bad_input_is_a_400_that_says_what_was_wrong(app, keys):
    client = Library(app.url, keys["tool"])
    with pytest.raises(deepl.DeepLException, match="'XX' is not a target language Baton knows") as caught:
        await client("translate_text", "Hello", target_lang="XX")
    assert caught.value.http_status_code == 400
    with pytest.raises(deepl.DeepLException, match="51 texts in one request; the limit is 50"):
        await client("translate_text", ["Hello"] * 51, target_lang="FR")
    async with http(app, keys["tool"]) as raw:
        for body, said in (({"text": ["Hello", " "], "target_lang": "FR"}, "text[1] is empty"),
                           ({"text": [], "target_lang": "FR"}, "text"),
                           ({"text": ["Hello"]}, "target_lang"),
                           ({"text": ["Hello"], "target_lang": "FR", "tag_handling": "latex"}, "tag_handling"),
                           ({"text": ["Hello"], "target_lang": "FR", "source_lang": "ZH-HANT"}, "ZH-HANT")):
            r = await raw.post("/translate", json=body)
            assert r.status_code == 400 and said in r.json()["message"], (body, r.text)
        r = await raw.post("/translate", content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and "not valid JSON" in r.json()["message"]
        r = await raw.post("/translate", json={"text": ["x" * 1_100_000], "target_lang": "FR"})
        assert r.status_code == 413 and "larger than 1000000 bytes" in r.json()["message"]


async def test_languages_in_deepls_codes_with_variants(app, keys):
    client = Library(app.url, keys["tool"])
    targets = {lang.code: lang for lang in await client("get_target_languages")}
    assert {"EN-GB", "EN-US", "PT-BR", "PT-PT", "ZH-HANS", "ZH-HANT", "FR", "DE"} <= set(targets)
    assert "EN" not in targets and targets["FR"].supports_formality is False
    sources = {lang.code for lang in await client("get_source_languages")}
    assert {"EN", "ZH", "PT", "FR"} <= sources and "ZH-HANT" not in sources and "EN-GB" not in sources
    for code in ("EN-GB", "ZH-HANT"):  # every listed target is accepted
        assert (await client("translate_text", "Hello", source_lang="EN", target_lang=code)).text == "v2: Hello"


async def test_usage_counts_the_keys_characters_this_month(app, keys):
    client = Library(app.url, keys["counter"])
    before = await client("get_usage")
    assert before.character.count == 0 and before.character.valid and not before.any_limit_reached
    await client("translate_text", ["Good morning", "Hello"], source_lang="EN", target_lang="FR")
    after = await client("get_usage")
    assert after.character.count == len("Good morning") + len("Hello")
    with sqlite3.connect(app.data_dir / "baton.db") as db:  # durable, by key name, never the secret
        rows = db.execute("SELECT key_name, characters FROM key_usage WHERE key_name = 'counter'").fetchall()
    assert [(name, n) for name, n in rows] == [("counter", 17)]


# glossaries ------------------------------------------------------------------------------------------
async def test_an_admin_makes_a_glossary_and_a_translation_uses_it(app, keys):
    admin, user = Library(app.url, keys["ops"]), Library(app.url, keys["tool"])
    async with admin_http(app, keys["ops"]) as ops:
        await switch(ops, "v1")
    made = await admin("create_glossary", "Travel", "EN", "FR", {"station": "gare", "ticket": "billet"})
    assert (made.name, made.source_lang, made.target_lang, made.entry_count, made.ready) == ("Travel", "EN", "FR",
                                                                                               2, True)
    assert made.glossary_id in [g.glossary_id for g in await user("list_glossaries")]
    assert (await user("get_glossary", made.glossary_id)).name == "Travel"
    assert await user("get_glossary_entries", made) == {"station": "gare", "ticket": "billet"}
    got = await user("translate_text", ["Where is the station?", "Good morning"], source_lang="EN",
                     target_lang="FR", glossary=made)
    assert got[0].text.endswith("Terms: station → gare"), got[0].text  # only the term that occurs
    assert "Terms" not in got[1].text, got[1].text
    assert user.headers[-1]["X-Baton-Version"] == "v1"
    pairs = await user("get_glossary_languages")
    assert any((p.source_lang, p.target_lang) == ("en", "fr") for p in pairs)
    # From CSV too, DeepL's optional language columns included.
    from_csv = await admin("create_glossary_from_csv", "Rail", "EN", "DE", "platform,Bahnsteig,en,de\ntrain,Zug\n")
    assert await admin("get_glossary_entries", from_csv) == {"platform": "Bahnsteig", "train": "Zug"}
    async with admin_http(app, keys["ops"]) as ops:
        audit = (await ops.get("/audit", params={"action": "glossary-create"})).json()
    assert {(e["actor"], e["outcome"]) for e in audit} == {("key:ops", "ok")} and len(audit) == 2, audit


async def test_a_user_key_may_not_create_or_delete_a_glossary(app, keys):
    user, admin = Library(app.url, keys["tool"]), Library(app.url, keys["ops"])
    with pytest.raises(deepl.AuthorizationException, match="'tool' is a user key"):
        await user("create_glossary", "Mine", "EN", "FR", {"hello": "salut"})
    kept = (await admin("list_glossaries"))[0]
    with pytest.raises(deepl.AuthorizationException, match="'tool' is a user key"):
        await user("delete_glossary", kept)
    assert (await admin("get_glossary", kept.glossary_id)).entry_count == kept.entry_count
    assert "Mine" not in [g.name for g in await admin("list_glossaries")]


async def test_bad_glossaries_are_refused_and_change_nothing(app, keys):
    admin = Library(app.url, keys["ops"])
    count = len(await admin("list_glossaries"))
    async with http(app, keys["ops"]) as raw:
        base = {"name": "Bad", "source_lang": "en", "target_lang": "fr", "entries_format": "tsv"}
        for entries, said in (("station\tgare\nno separator here\n", "Entry 2 of the glossary"),
                              ("station\tgare\nStation\tquai\n", "repeats the source term 'Station'"),
                              ("", "no entries"),
                              ("x" * 101 + "\ty\n", "the limit is 100"),
                              ("".join(f"w{i}\tm{i}\n" for i in range(1200)), "more than 500 entries")):
            r = await raw.post("/glossaries", json={**base, "entries": entries})
            assert r.status_code == 400 and said in r.json()["message"], (said, r.text)
        r = await raw.post("/glossaries", json={**base, "target_lang": "xx", "entries": "a\tb"})
        assert r.status_code == 400 and "'xx'" in r.json()["message"]
        # Using one: unknown, or for another pair.
        rail = next(g for g in await admin("list_glossaries") if g.name == "Rail")
        for body, said in (({"glossary_id": "0" * 36}, "no glossary"),
                           ({"glossary_id": rail.glossary_id}, "is for EN → DE")):
            r = await raw.post("/translate", json={"text": ["Hello"], "source_lang": "EN", "target_lang": "FR", **body})
            assert r.status_code == 400 and said in r.json()["message"], r.text
    with pytest.raises(deepl.GlossaryNotFoundException):
        await admin("get_glossary", "not-an-id")
    assert len(await admin("list_glossaries")) == count


async def test_an_admin_deletes_a_glossary_and_its_terms_go(app, keys):
    admin = Library(app.url, keys["ops"])
    rail = next(g for g in await admin("list_glossaries") if g.name == "Rail")
    await admin("delete_glossary", rail)
    with pytest.raises(deepl.GlossaryNotFoundException):
        await admin("get_glossary", rail.glossary_id)
    with sqlite3.connect(app.data_dir / "baton.db") as db:
        left = db.execute("SELECT count(*) FROM glossary_terms WHERE owner = ?", (f"glossary:{rail.glossary_id}",))
        assert left.fetchone()[0] == 0
    with pytest.raises(deepl.GlossaryNotFoundException):
        await admin("delete_glossary", rail.glossary_id)


# documents -------------------------------------------------------------------------------------------
def long_txt(lines: int) -> bytes:
    return "".join(f"{p}\n" for p in list(docsamples.phrasebook("en", "fr"))[:lines]).encode()


def segments(name: str, data: bytes) -> list[str]:
    return list(documents.read_document(name, data, max_bytes=10**7, max_segments=10**5).segments)


async def test_a_docx_round_trips_through_translate_document(app, keys):
    client = Library(app.url, keys["tool"])
    async with admin_http(app, keys["ops"]) as ops:
        await switch(ops, "v2")
    data, expected = docsamples.sample_docx()
    out = io.BytesIO()
    status = await client("translate_document", data, out, target_lang="FR", filename="report.docx")
    assert status.done and status.billed_characters == sum(len(s) for s in expected)
    assert segments("report.docx", out.getvalue()) == [f"v2: {s}" for s in expected]
    assert len(docx.Document(io.BytesIO(out.getvalue())).tables) == 1
    assert client.headers[-1]["X-Baton-Version"] == "v2"


async def test_a_txt_round_trips_and_only_its_owner_with_its_key_reads_it(app, keys):
    owner, other = Library(app.url, keys["tool"]), Library(app.url, keys["counter"])
    data = long_txt(5)
    handle = await owner("translate_document_upload", data, target_lang="DE", filename="notes.txt")
    for client, wrong in ((owner, deepl.DocumentHandle(handle.document_id, "not-the-key")), (other, handle)):
        with pytest.raises(deepl.DeepLException, match="There is no document") as caught:
            await client("translate_document_get_status", wrong)
        assert caught.value.http_status_code == 404
    await ck.wait_until(lambda: _done(owner, handle), 30, "the document translated")
    out = io.BytesIO()
    await owner("translate_document_download", handle, out)
    assert segments("notes.txt", out.getvalue()) == [f"v2: {s}" for s in segments("notes.txt", data)]
    with pytest.raises(deepl.DeepLException, match="There is no document"):  # downloaded once, then gone
        await owner("translate_document_get_status", handle)


async def _done(client: Library, handle: deepl.DocumentHandle) -> bool:
    status = await client("translate_document_get_status", handle)
    assert status.ok, status.error_message
    return status.done


async def test_documents_that_cannot_be_translated_are_refused_at_upload(app, keys):
    client = Library(app.url, keys["tool"])
    many = "".join(f"Line {i}\n" for i in range(150)).encode()
    for name, data, said in (("notes.pdf", b"%PDF-1.4", "it is a .pdf file"),
                             ("broken.docx", b"not a zip", "broken.docx"), ("many.txt", many, "over the limit of 100")):
        with pytest.raises(deepl.DeepLException, match=said) as caught:
            await client("translate_document_upload", data, target_lang="FR", filename=name)
        assert caught.value.http_status_code == 400
    async with http(app, keys["tool"]) as raw:
        r = await raw.post("/document", data={"target_lang": "FR"})
        assert r.status_code == 400 and "multipart field `file`" in r.json()["message"]
        r = await raw.post("/document", data={"target_lang": "FR"}, files={"file": ("big.txt", b"a b\n" * 600_000)})
        assert r.status_code == 413 and "larger than 2100000 bytes" in r.json()["message"], r.text
        r = await raw.post("/document/NOPE/result", json={"document_key": "x"})
        assert r.status_code == 404
        async with admin_http(app, keys["ops"]) as ops:
            await switch(ops, "slow")  # 10 lines take it seconds: the result is asked for well before
        handle = await client("translate_document_upload", long_txt(10), target_lang="FR", filename="early.txt")
        r = await raw.post(f"/document/{handle.document_id}/result", json={"document_key": handle.document_key})
        assert r.status_code == 503 and "poll POST /v2/document/{id}" in r.json()["message"], r.text
        await ck.wait_until(lambda: _done(client, handle), 30, "the early document translated")


async def test_a_document_that_fails_while_translating_ends_in_error_with_the_reason(app, keys):
    """The job's failure is not lost in the background: its status says error and why."""
    client = Library(app.url, keys["tool"])
    french = "".join(f"{p}\n" for p in list(docsamples.phrasebook("en", "fr").values())[:8]).encode()
    handle = await client("translate_document_upload", french, target_lang="FR", filename="déjà.txt")

    async def ended() -> deepl.DocumentStatus | None:
        status = await client("translate_document_get_status", handle)
        return status if status.status == deepl.DocumentStatus.Status.ERROR else None

    status = await ck.wait_until(ended, 30, "the job to end in error")
    assert "already reads as French" in status.error_message, status.error_message
    async with http(app, keys["tool"]) as raw:
        r = await raw.post(f"/document/{handle.document_id}/result", json={"document_key": handle.document_key})
    assert r.status_code == 400 and "could not be translated: This text already reads as French" in r.json()["message"]


async def test_a_document_whose_version_dies_is_translated_again_whole_by_another(app, keys):
    """`slow` (active, v2 its standby) is killed mid-document: the document starts again from its
    first segment on v2, and the file comes back from v2 alone, never stitched from both."""
    client = Library(app.url, keys["tool"])
    async with admin_http(app, keys["ops"]) as ops:
        await switch(ops, "v2")
        await switch(ops, "slow")
        pid = (await ops.get("/versions/slow")).json()["pid"]
    data = long_txt(40)
    handle = await client("translate_document_upload", data, target_lang="FR", filename="crash.txt")

    async def under_way() -> bool:
        status = await client("translate_document_get_status", handle)
        return status.status == deepl.DocumentStatus.Status.TRANSLATING and status.seconds_remaining is not None

    await ck.wait_until(under_way, 30, "a few segments translated")
    os.kill(pid, signal.SIGKILL)
    await ck.wait_until(lambda: _done(client, handle), 60, "the document translated again")
    assert client.headers[-1]["X-Baton-Version"] == "v2"
    out = io.BytesIO()
    await client("translate_document_download", handle, out)
    assert segments("crash.txt", out.getvalue()) == [f"v2: {s}" for s in segments("crash.txt", data)]


async def test_a_flood_of_documents_is_refused_past_the_bound_and_the_queue_drains(app, keys):
    """One document per key at a time (BATON_DOCUMENTS_IN_FLIGHT=1): a key's second is refused with
    429 at once, another key's waits its turn, and both taken are translated."""
    tool, counter = Library(app.url, keys["tool"]), Library(app.url, keys["counter"])
    taken = [(tool, await tool("translate_document_upload", long_txt(10), target_lang="FR", filename="a.txt"))]
    async with http(app, keys["tool"]) as raw:
        r = await raw.post("/document", data={"target_lang": "FR"}, files={"file": ("b.txt", long_txt(10))})
    assert r.status_code == 429 and "This key has 1 document being translated" in r.json()["message"], r.text
    assert r.headers["Retry-After"].isdigit()
    taken.append((counter, await counter("translate_document_upload", long_txt(10), target_lang="FR",
                                         filename="c.txt", formality="less")))
    assert counter.headers[-1]["X-Baton-Formality"].startswith("ignored")
    for client, handle in taken:
        await ck.wait_until(lambda c=client, h=handle: _done(c, h), 60, "each document taken translated")
    with pytest.raises(deepl.DeepLException, match="cannot turn a .txt file into .pdf"):
        await tool("translate_document_upload", long_txt(2), target_lang="FR", filename="d.txt", output_format="pdf")


async def test_repeated_wrong_keys_are_slowed_then_refused_with_429_in_deepls_shape(app, keys):
    """Last: it locks the test's address out for wrong keys (a valid key still works)."""
    async with httpx.AsyncClient(base_url=f"{app.url}/v2") as bare:
        statuses = []
        for _ in range(6):
            r = await bare.get("/usage", headers={"Authorization": "DeepL-Auth-Key baton-guessed"})
            statuses.append(r.status_code)
        assert statuses[0] == 403 and statuses[-2:] == [429, 429] and statuses == sorted(statuses), statuses
        assert "Retry-After" in r.headers and r.json()["message"]
    assert (await Library(app.url, keys["tool"])("get_usage")).character.count is not None
    async with admin_http(app, keys["ops"]) as ops:
        audit = (await ops.get("/audit", params={"action": "api-key-failed"})).json()
    assert len(audit) >= 4 and all("baton-guessed" not in str(e) for e in audit)


# the job store alone -----------------------------------------------------------------------------------
class _Engine:
    """What DocumentJobs calls of the engine: bug.txt fails as a defect would, others translate."""

    async def translate_document(self, doc, req, done, on_progress, on_restart=None):
        if doc.filename == "bug.txt":
            raise RuntimeError("a defect")
        done[:] = [f"v9: {s}" for s in doc.segments]
        await on_progress(len(done), len(done))
        return SimpleNamespace(version="v9")

    async def rebuild_document(self, doc, done, filename, *, user):
        return doc.rebuild(done), ""


async def test_jobs_keep_a_bounded_number_of_results_and_a_defect_is_told_and_logged(caplog):
    counted: list[str] = []

    async def on_done(job) -> None:
        counted.append(job.id)

    jobs = DocumentJobs(lambda: _Engine(), GatewayConfig(documents_in_flight=1, documents_kept=2), on_done)
    req = TranslationRequest("-", "French")
    handles = []
    for i in range(4):
        doc = documents.read_document(f"d{i}.txt", b"Hello\n", max_bytes=100, max_segments=10)
        job, key = jobs.submit("tool", doc, req, f"d{i}.fr.txt")
        await ck.wait_until(lambda j=job: j.status == "done", 5, "the job done")
        handles.append((job.id, key))
    kept = [i for i, (job_id, key) in enumerate(handles) if _found(jobs, job_id, key)]
    assert kept == [2, 3] and len(counted) == 4, kept  # the two newest results (BATON_DOCUMENTS_KEPT=2)
    assert jobs.take(jobs.find(handles[3][0], "tool", handles[3][1])) == b"v9: Hello\n"
    bug = documents.read_document("bug.txt", b"Hello\n", max_bytes=100, max_segments=10)
    job, _ = jobs.submit("tool", bug, req, "bug.fr.txt")
    await ck.wait_until(lambda: job.status == "error", 5, "the job ended")
    assert "Baton failed to translate it (RuntimeError)" in job.error
    assert any("document job" in r.message and r.exc_info for r in caplog.records)


def _found(jobs: DocumentJobs, job_id: str, key: str) -> bool:
    try:
        jobs.find(job_id, "tool", key)
    except NotFound:
        return False
    return True
