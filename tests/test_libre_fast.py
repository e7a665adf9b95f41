"""LibreTranslate's API under /libretranslate/ on the fake vLLM server: the real app in a subprocess,
libretranslatepy as the client, and Mastodon's and Weblate's exact requests replayed.

The tests share one app and run in file order: v1 serves until the switch test near the end, and
the throttle test, which locks this address for wrong keys, comes last.
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from libretranslatepy import LibreTranslateAPI

from gateway.downloads import Downloads
from gateway.translating import language_code
from tests import chatkit as ck
from tests import hostile
from tests.chatkit import admin_http

ADMIN = ("root", "root-password-1")
PREFIX = "/libretranslate"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    data_dir: Path = tmp_path_factory.mktemp("baton-libre")
    # 8 chunks at 0.12 s: a text is in flight for about a second, long enough to switch under it.
    ck.make_fake_model(data_dir, "v1", token_delay_s=0.12)
    ck.make_fake_model(data_dir, "v2", token_delay_s=0.12)
    env = {**ck.fake_env(data_dir), "BATON_PORT_MIN": "35500", "BATON_PORT_MAX": "35599",
           "BATON_LOGIN_SLOW_AFTER": "2", "BATON_LOGIN_LOCK_AFTER": "4", "BATON_LOGIN_DELAY_S": "0.1",
           "BATON_TRANSLATE_CONCURRENCY": "4"}
    with ck.running_app(env, admin=ADMIN) as app:
        yield app


@pytest.fixture(scope="module")
async def chat(app):
    async with ck.chatting(app.url, *ADMIN) as client:
        yield client


@pytest.fixture(scope="module")
async def keys(app, chat) -> dict[str, str]:
    """A user key and an admin key; v1 active and v2 loaded, through the admin API."""
    made = {"admin": await ck.make_key(chat, "ops", "admin"), "user": await ck.make_key(chat, "mastodon", "user")}
    await ck.load_versions(app, made["admin"], ("v1", "v2"), switches=("v1",))
    return made


async def _version(http: httpx.AsyncClient, name: str, field: str, value: object) -> bool:
    return (await http.get(f"/versions/{name}")).json()[field] == value


def libre(app: ck.App) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"{app.url}{PREFIX}", timeout=60)


# without the app ---------------------------------------------------------------------------------
def test_the_codes_clients_send_map_to_batons():
    sent = {"fr": "fr", "EN-GB": "en", "en_US": "en", "pt_BR": "pt", "PT-PT": "pt", "pb": "pt", "zh-Hans": "zh",
            "ZH-HANT": "zh-Hant", "zt": "zh-Hant", "zh_TW": "zh-Hant", "zh-Hant-TW": "zh-Hant", "yue-HK": "yue",
            "fil": "tl"}
    assert {code: language_code(code) for code in sent} == sent
    assert [language_code(c) for c in ("klingon", "", "auto", "-", "x" * 10_000)] == [None] * 5


def test_kept_files_are_bounded_per_key_in_all_and_in_time():
    now = [0.0]
    kept = Downloads(max_files=3, per_key=2, ttl_s=60, clock=lambda: now[0])
    a1, a2, a3 = (kept.put("a", f"a{i}.txt", b"x") for i in range(3))
    assert kept.get(a1) is None and kept.get(a2) and kept.get(a3)  # a's oldest went first
    b1, b2 = kept.put("b", "b1.txt", b"x"), kept.put("b", "b2.txt", b"x")
    assert kept.get(a2) is None and all(kept.get(t) for t in (a3, b1, b2))  # 3 in all
    assert len(b1) >= 43 and b1 != b2  # 256 random bits each
    now[0] = 61
    assert kept.get(b2) is None


# the clients ---------------------------------------------------------------------------------------
async def test_libretranslatepy_translates_detects_and_lists_languages(app, keys):
    lt = LibreTranslateAPI(url=f"{app.url}{PREFIX}/", api_key=keys["user"])
    # The fake answers with the prompt's last six words: the default template names the pair.
    assert await asyncio.to_thread(lt.translate, "Good morning", "en", "fr") == \
        "v1 says: from English to French. Good morning"
    assert await asyncio.to_thread(lt.translate, "Good morning", "auto", "de") == \
        "v1 says: from English to German. Good morning"
    [found] = await asyncio.to_thread(lt.detect, "Bonjour tout le monde, comment allez-vous aujourd'hui ?")
    assert found["language"] == "fr" and 50 < found["confidence"] <= 100
    langs = await asyncio.to_thread(lt.languages)
    french = next(lang for lang in langs if lang["code"] == "fr")
    assert french["name"] == "French" and "de" in french["targets"] and "fr" not in french["targets"]
    assert len(langs) == 38


async def test_mastodons_request_gets_an_array_with_tags_kept_and_detected_languages(app, keys):
    """app/lib/translation_service/libre_translate.rb: JSON, q an array of HTML, source auto."""
    texts = ["<p>Good morning</p>", "<p>Thank you <a href=\"https://example.com/x\">friend</a></p>"]
    async with libre(app) as http:
        r = await http.post("/translate", json={"q": texts, "source": "auto", "target": "fr", "format": "html",
                                                "api_key": keys["user"]},
                            headers={"Content-Type": "application/json"})
        languages = await http.get("/languages")  # Mastodon asks without a key
    assert r.status_code == 200, r.text
    body = r.json()
    assert r.headers["X-Baton-Version"] == "v1"
    good, thanks = body["translatedText"]
    assert good.startswith("<p>") and good.endswith("</p>") and "v1 says:" in good and "Good morning" in good
    assert thanks.startswith("<p>") and '<a href="https://example.com/x">' in thanks and thanks.endswith("</a></p>")
    assert [d["language"] for d in body["detectedLanguage"]] == ["en", "en"]
    assert all(0 < d["confidence"] <= 100 for d in body["detectedLanguage"])
    # Mastodon keys each language's targets by code, without the language itself.
    assert languages.status_code == 200
    assert {lang["code"]: set(lang["targets"]) for lang in languages.json()}["en"] >= {"fr", "de", "zh"}


async def test_weblates_requests_in_json_and_in_a_form(app, keys):
    """weblate/machinery/libretranslate.py: JSON with q an array (today), a form with one q (before),
    and Weblate's own codes (pt_BR, zh_Hant)."""
    async with libre(app) as http:
        batch = await http.post("/translate", json={"api_key": keys["user"], "q": ["Thank you", "Good night"],
                                                    "source": "en", "target": "pt_BR"})
        single = await http.post("/translate", data={"api_key": keys["user"], "q": "Good night", "source": "en",
                                                     "target": "zh_Hant"})
        codes = [lang["code"] for lang in (await http.get("/languages")).json()]
    assert batch.status_code == 200, batch.text
    assert batch.json() == {"translatedText": ["v1 says: from English to Portuguese. Thank you",
                                               "v1 says: from English to Portuguese. Good night"]}
    assert single.json() == {"translatedText": "v1 says: English to Traditional Chinese. Good night"}
    assert {"en", "de", "zh", "zh-Hant"} <= set(codes)


async def test_a_text_file_is_translated_and_downloaded_by_its_link(app, chat, keys):
    owner = await ck.make_key(chat, "files", "user")
    async with libre(app) as http:
        r = await http.post("/translate_file", data={"source": "en", "target": "fr", "api_key": owner},
                            files={"file": ("notes.txt", b"Good morning\n\nThank you\n", "text/plain")})
        assert r.status_code == 200, r.text
        url = r.json()["translatedFileUrl"]
        got = await http.get(url)
        guessed = await http.get(url[:-4] + "AAAA")
        pdf = await http.post("/translate_file", data={"source": "en", "target": "fr", "api_key": owner},
                              files={"file": ("notes.pdf", b"%PDF-1.4", "application/pdf")})
        no_file = await http.post("/translate_file", data={"source": "en", "target": "fr", "api_key": owner})
        huge = await http.post("/translate_file", data={"source": "en", "target": "fr", "api_key": owner},
                               files={"file": ("big.txt", b"Good morning\n" * 200_000, "text/plain")})
        assert "Revoked" in await chat.reply("/keys revoke files")
        after_revoke = await http.get(url)
    assert r.headers["X-Baton-Version"] == "v1"
    assert url.startswith(f"{app.url}{PREFIX}/download_file/") and len(url.rsplit("/", 1)[1]) >= 43
    assert got.status_code == 200
    assert got.text == ("v1 says: from English to French. Good morning\n\n"
                        "v1 says: from English to French. Thank you\n")
    assert "notes.fr.txt" in got.headers["Content-Disposition"] and got.headers["Content-Disposition"].startswith(
        "attachment")
    assert got.headers["X-Content-Type-Options"] == "nosniff"
    assert guessed.status_code == 404 and "translate_file" in guessed.json()["error"]
    assert after_revoke.status_code == 404  # the file belongs to its key
    assert pdf.status_code == 400 and ".docx" in pdf.json()["error"] and "notes.pdf" in pdf.json()["error"]
    assert no_file.status_code == 400 and "multipart field file" in no_file.json()["error"]
    assert huge.status_code == 413 and "larger than" in huge.json()["error"]


async def test_frontend_settings_in_libretranslates_shape(app):
    async with libre(app) as http:
        s = (await http.get("/frontend/settings")).json()
    assert s["apiKeys"] is True and s["keyRequired"] is True and s["suggestions"] is False
    assert s["charLimit"] == 4000 and s["frontendTimeout"] > 0 and ".docx" in s["supportedFilesFormat"]
    assert s["language"]["source"]["code"] == "auto" and s["language"]["target"]["code"] == "fr"


# refusals --------------------------------------------------------------------------------------------
async def test_no_key_or_a_wrong_key_is_403_in_libretranslates_shape(app, keys):
    async with libre(app) as http:
        missing = await http.post("/translate", json={"q": "Hi", "source": "en", "target": "fr"})
        wrong = await http.post("/translate", data={"q": "Hi", "source": "en", "target": "fr",
                                                    "api_key": "baton-not-a-real-key-at-all"})
        detect = await http.post("/detect", data={"q": "Hi"})
    assert missing.status_code == wrong.status_code == detect.status_code == 403
    assert "api_key" in missing.json()["error"] and "/keys add" in missing.json()["error"]
    assert set(wrong.json()) == {"error"} and "wrong or has been revoked" in wrong.json()["error"]


async def test_bad_input_is_400_saying_what_to_do_and_nothing_is_translated(app, keys):
    key = keys["user"]
    cases = {
        "klingon": ({"q": "Hi", "source": "en", "target": "klingon"}, "GET /libretranslate/languages"),
        "empty q": ({"q": "", "source": "en", "target": "fr"}, "q is empty"),
        "empty array": ({"q": [], "source": "en", "target": "fr"}, "q is empty"),
        "q a number": ({"q": 5, "source": "en", "target": "fr"}, "q"),
        "no target": ({"q": "Hi", "source": "en"}, "target"),
        "format": ({"q": "Hi", "source": "en", "target": "fr", "format": "pdf"}, "format"),
        "too long": ({"q": "a " * 2001, "source": "en", "target": "fr"}, "limit is 4000"),
        "too many": ({"q": ["Hi"] * 65, "source": "en", "target": "fr"}, "the limit is 64"),
    }
    async with admin_http(app, keys["admin"]) as admin:
        served = {name: (await admin.get(f"/versions/{name}")).json()["served"] for name in ("v1", "v2")}
    async with libre(app) as http:
        answers = {name: await http.post("/translate", json={**body, "api_key": key})
                   for name, (body, _) in cases.items()}
        not_json = await http.post("/translate", content=b"[1, 2", headers={"Content-Type": "application/json"})
        nested = await http.post("/translate", content=b"[" * 200_000, headers={"Content-Type": "application/json"})
        huge = await http.post("/translate", json={"q": "x" * 1_100_000, "target": "fr", "api_key": key})
    for name, (_, says) in cases.items():
        assert answers[name].status_code == 400, (name, answers[name].text)
        assert says in answers[name].json()["error"], (name, answers[name].json())
    assert "klingon" in answers["klingon"].json()["error"]
    assert not_json.status_code == nested.status_code == 400 and "JSON object" in nested.json()["error"]
    assert huge.status_code == 413 and "larger than" in huge.json()["error"]
    async with admin_http(app, keys["admin"]) as admin:
        assert {name: (await admin.get(f"/versions/{name}")).json()["served"] for name in served} == served


async def test_hostile_text_is_translated_in_bounded_time(app, keys):
    texts = [hostile.hostile_line(4_000, opener) for opener in ("<a", "[", "&a", "{")]
    started = time.monotonic()
    async with libre(app) as http:
        r = await http.post("/translate", json={"q": texts, "source": "en", "target": "fr", "format": "html",
                                                "api_key": keys["user"]})
    assert r.status_code == 200, r.text
    assert len(r.json()["translatedText"]) == 4 and time.monotonic() - started < 30


async def test_the_key_never_reaches_the_log_or_metrics(app, keys):
    async with httpx.AsyncClient(base_url=app.url) as http:
        metrics = (await http.get("/metrics")).text
    assert 'endpoint="/libretranslate/translate",key="mastodon",status="200"' in metrics
    assert keys["user"] not in metrics and keys["user"] not in app.log()


# last: a switch, then the throttle's lock ---------------------------------------------------------
async def test_one_requests_texts_stay_on_one_version_across_a_switch(app, keys):
    """Four texts at a time: the first four start on v1, the switch comes, the last four would start
    on v2; they are translated again by v1, and the header names it."""
    texts = [f"Text number {i}" for i in range(8)]
    async with libre(app) as http, admin_http(app, keys["admin"]) as admin:
        served_v2 = (await admin.get("/versions/v2")).json()["served"]
        request = asyncio.ensure_future(http.post("/translate", json={"q": texts, "source": "en", "target": "fr",
                                                                      "api_key": keys["user"]}))
        await ck.wait_until(lambda: _version(admin, "v1", "in_flight", 4), 10, "four texts on v1")
        assert (await admin.post("/deployment/switch", json={"name": "v2"})).status_code == 200
        r = await request
        assert (await admin.get("/versions/v2")).json()["served"] > served_v2  # v2 did answer some
    assert r.status_code == 200, r.text
    assert r.headers["X-Baton-Version"] == "v1"
    assert [t.split(" says:")[0] for t in r.json()["translatedText"]] == ["v1"] * 8


async def test_wrong_keys_count_as_failed_logins_then_429(app, keys):
    """4 wrong keys lock the address (the refusal test sent one already)."""
    codes = []
    async with libre(app) as http:
        for i in range(5):
            r = await http.post("/detect", json={"q": "Hi", "api_key": f"baton-guess-{i:040d}"})
            codes.append(r.status_code)
        ok = await http.post("/detect", json={"q": "Good morning", "api_key": keys["user"]})
    assert codes == [403, 403, 403, 429, 429], codes
    assert "Try again in" in r.json()["error"] and int(r.headers["Retry-After"]) > 0
    assert ok.status_code == 200  # a valid key proves itself
    async with admin_http(app, keys["admin"]) as admin:
        actions = [e["action"] for e in (await admin.get("/audit", params={"n": 30})).json()]
    assert actions.count("api-key-failed") >= 4 and "api-key-locked" in actions



async def test_a_text_in_the_shared_memory_is_answered_from_it_and_the_headers_say_so(app, keys):
    """Issue 25 through LibreTranslate's API: its body has no room for provenance, so a header says
    which texts translation memory answered and where each entry came from."""
    async with httpx.AsyncClient(base_url=f"{app.url}/admin/v1", timeout=30,
                                 headers={"Authorization": f"Bearer {keys['admin']}"}) as ops:
        r = await ops.post("/memory", json=[{"source": "Good night", "target": "Bonne nuit", "source_lang": "en",
                                             "target_lang": "fr"}])
        assert r.status_code == 201 and r.json() == {"added": 1, "replaced": 0}, r.text
        try:
            async with libre(app) as http:
                r = await http.post("/translate", json={"q": ["Good night", "Good morning"], "source": "en",
                                                        "target": "fr", "api_key": keys["user"]})
            assert r.status_code == 200, r.text
            night, morning = r.json()["translatedText"]
            version = r.headers["X-Baton-Version"]  # the active one: the tests above switch
            assert night == "Bonne nuit" and f"{version} says:" in morning, r.text
            assert r.headers["X-Baton-Memory"].startswith("text 1: From translation memory (shared, added by key:ops")
        finally:
            assert (await ops.delete("/memory", params={"source": "Good night"})).json() == {"removed": 1}
