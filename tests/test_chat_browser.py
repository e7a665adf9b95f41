"""The chat in headless Chromium: log in, translate, pick the target language in the composer,
and as admin load and switch versions; a user's thumbs down, and a subtitle file uploaded,
translated and downloaded.

Screenshots go to tests/artifacts/ (gitignored) for a human look.
"""
from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import srt

from tests import chatkit as ck
from tests import docsamples

from .conftest import require

try:
    from playwright.async_api import Page, async_playwright, expect
except ImportError:  # a test dependency: `make install` brings it
    async_playwright = None

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-quic"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
ADMIN = ("root", "root-password-1")
USER = ("carol", "carol-password-1")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    require(async_playwright is not None, "playwright (Python) is not installed: make install-app")
    require(Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM}: make install-browser")
    d = tmp_path_factory.mktemp("baton-browser")
    ck.make_fake_model(d, "v1", token_delay_s=0.05)
    ck.make_fake_model(d, "v2", token_delay_s=0.05, startup_s=3)  # `starting` for 3 s: its live progress shows it
    app = ck.launch_app({**ck.fake_env(d), "BATON_PORT_MIN": "23000", "BATON_PORT_MAX": "23999"}, admin=ADMIN)
    yield app
    app.stop()


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


async def log_in(page: Page, url: str, user: tuple[str, str]) -> None:
    await page.goto(f"{url}/login")
    await page.fill("#email", user[0])
    await page.fill("#password", user[1])
    await page.click("button[type=submit]")
    await expect(page.locator("#chat-input")).to_be_visible(timeout=20_000)


async def say(page: Page, text: str) -> None:
    """Type a message like a person would, once the previous answer has finished."""
    await expect(page.locator("#stop-button")).to_have_count(0, timeout=60_000)
    box = page.locator("#chat-input")
    await box.click()
    await box.fill(text)
    await box.press("Enter")
    if text.startswith("/") and " " not in text:
        # A bare "/status" matches the command popup: Enter picks the command (it becomes a
        # chip, sent as command="status"), a second Enter sends it.
        await expect(page.locator(f"#command-{text[1:]}")).to_be_visible(timeout=5_000)
        await box.press("Enter")
    await expect(box).to_have_value("", timeout=5_000)  # sent


async def open_command_menu(page: Page) -> None:
    """Type `/` and wait until the command popup lists its entries (/help is everyone's)."""
    await page.locator("#chat-input").fill("/")
    await expect(page.locator('[cmdk-list] [role=option][data-value^="help"]')).to_be_visible(timeout=5_000)


async def test_log_in_translate_and_switch_versions_in_the_browser(app, tmp_path):
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            await page.goto(f"{app.url}/login")
            await expect(page.get_by_text("Log in to Baton")).to_be_visible(timeout=20_000)
            await shot(page, "01-login")
            await log_in(page, app.url, ADMIN)
            await expect(page.locator("#starters")).to_be_visible()
            await shot(page, "02-welcome")

            await say(page, "/load v1 v1")
            await page.get_by_role("button", name="Switch to v1").click(timeout=30_000)
            await expect(page.get_by_text("now answers every new request").first).to_be_visible(timeout=15_000)
            await shot(page, "03-loaded-and-switched")

            await say(page, "Where is the station?")
            await expect(page.get_by_text("Translated by v1 (active)")).to_be_visible(timeout=30_000)
            await shot(page, "04-translated-by-v1")

            # Pick the target language in the composer's "To" picker (a Chainlit Mode).
            await page.locator("#mode-picker-trigger-target").click()
            german = page.locator("#mode-picker-popover-target").get_by_role("option", name="→ German", exact=True)
            await german.hover()
            await shot(page, "05a-language-picker")
            await german.click()
            await expect(page.locator("#mode-picker-trigger-target")).to_have_text("→ German")

            await say(page, "/load v2 v2")
            await expect(page.get_by_text("v2 is starting").first).to_be_visible(timeout=10_000)
            await shot(page, "05b-loading-v2")
            await page.get_by_role("button", name="Switch to v2").click(timeout=30_000)
            await expect(page.get_by_text("v1 stays loaded as standby").first).to_be_visible(timeout=15_000)
            await say(page, "Thank you very much")
            await expect(page.get_by_text("Translated by v2 (active)")).to_be_visible(timeout=30_000)
            await expect(page.get_by_text("v2 says: to German. Thank you very much")).to_be_visible()
            await shot(page, "05-translated-by-v2")

            await say(page, "/status")
            await expect(page.get_by_text("| v2 |")).to_have_count(0)
            await expect(page.locator("table").last).to_contain_text("standby", timeout=15_000)
            await shot(page, "06-status")

            await say(page, f"/users add {USER[0]} {USER[1]}")
            await expect(page.get_by_text(f"Added {USER[0]} as user")).to_be_visible(timeout=15_000)
            await expect(page.locator("#stop-button")).to_have_count(0, timeout=30_000)
            await open_command_menu(page)
            await shot(page, "07-admin-command-menu")
            # Admins see their commands in the popup.
            await expect(page.get_by_text("Register and start a version")).to_be_visible()

            # A user: no admin commands in the popup, and a typed one is refused.
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            user_page = await context.new_page()
            await log_in(user_page, app.url, USER)
            await open_command_menu(user_page)
            await shot(user_page, "08-user-command-menu")
            # A user's popup holds /help, /tm and /glossary only (the list is rendered whole).
            await expect(user_page.locator("[cmdk-list] [role=option]")).to_have_count(3)
            await expect(user_page.locator('[cmdk-list] [role=option][data-value^="glossary"]')).to_be_visible()
            await expect(user_page.locator('[cmdk-list] [role=option][data-value^="tm"]')).to_be_visible()
            assert await user_page.get_by_text("Register and start a version").count() == 0
            await user_page.locator("#chat-input").fill("")
            await say(user_page, "/switch v1")
            await expect(user_page.get_by_text("not allowed to run admin commands")).to_be_visible(timeout=15_000)
            await say(user_page, "How much is this?")
            await expect(user_page.get_by_text("Translated by")).to_be_visible(timeout=30_000)
            # The fake answers in English, not in the user's target language: the answer checks say so (issue 25).
            await expect(user_page.get_by_text("This answer does not read as")).to_be_visible()
            await shot(user_page, "09-user-translated-and-flagged")
            # Thumbs down under the answer (Chainlit shows the buttons when its data layer is on),
            # with a comment in its dialog: counted for the version that answered.
            await user_page.locator(".negative-feedback-off").last.click()
            await user_page.get_by_placeholder("Your feedback...").fill("not what I meant")
            await user_page.locator("#submit-feedback").click()
            await expect(user_page.locator(".negative-feedback-on")).to_have_count(1, timeout=10_000)
            await shot(user_page, "10-user-thumbs-down")
            assert await ck.metric(app.url, "baton_feedback_total", version="v2", value="down") == 1
            await say(page, "/tm shared add Good morning = Bonjour for fr")  # the user's pickers: auto → French
            await expect(page.get_by_text("Added to the shared memory")).to_be_visible(timeout=15_000)
            await say(user_page, "Good morning")
            await expect(user_page.get_by_text("From translation memory (shared, added by root")).to_be_visible(
                timeout=30_000)
            await shot(user_page, "09b-answer-from-memory")

            # A subtitle file through the composer's paperclip: translated cue by cue, and back
            # as a file to download with the same cues.
            original, _ = docsamples.sample_srt()
            upload = tmp_path / "greetings.srt"
            upload.write_bytes(original)
            await user_page.locator("#upload-button-input").set_input_files(str(upload))
            await expect(user_page.locator("#attachments")).to_contain_text("greetings.srt", timeout=10_000)
            await user_page.locator("#chat-input").press("Enter")
            await expect(user_page.get_by_text("segments translated, all by one version")).to_be_visible(timeout=60_000)
            link = user_page.locator("a.inline-file[download]").last
            await expect(link).to_be_visible(timeout=10_000)
            await expect(user_page.get_by_text("Feedback updated")).to_have_count(0, timeout=15_000)  # the vote's toast
            await shot(user_page, "11-document-translated")
            async with user_page.expect_download() as download_info:
                await link.click()
            download = await download_info.value
            assert download.suggested_filename.startswith("greetings.") and download.suggested_filename.endswith(".srt")
            cues = list(srt.parse((await download.path()).read_text(encoding="utf-8")))
            assert len(cues) == len(list(srt.parse(original.decode("utf-8"))))
            assert all(cue.content.startswith("v2 says:") for cue in cues), [c.content for c in cues]
            assert (await ck.healthz(app.url))[1]["active"] == "v2"
        finally:
            await browser.close()


# A page on another port of the same host: same site, so the browser sends the admin's cookie with
# its requests. It tries to read the admin's threads, to open socket.io by long-polling, and to type
# `/keys add stolen admin` as the admin over a websocket (which CORS does not cover).
ATTACK_PAGE = """<!doctype html><meta charset="utf-8"><title>cat pictures</title><script>
const APP = "%(app)s", result = {};
async function attempt(name, f) { try { result[name] = await f(); } catch (e) { result[name] = "refused: " + e; } }
function socket() {
  return new Promise((done) => {
    const ws = new WebSocket(APP.replace("http", "ws") + "/ws/socket.io/?EIO=4&transport=websocket");
    const auth = {sessionId: crypto.randomUUID(), clientType: "webapp", userEnv: "{}", chatProfile: "", threadId: ""};
    const message = {threadId: "", id: crypto.randomUUID(), name: "root", type: "user_message",
                     output: "/keys add stolen admin", createdAt: new Date().toISOString(), metadata: {}};
    ws.onmessage = (e) => {
      if (e.data.startsWith("0")) ws.send("40" + JSON.stringify(auth));
      else if (e.data.startsWith("40")) {
        ws.send('42["connection_successful"]');
        ws.send("42" + JSON.stringify(["client_message", {message, fileReferences: null}]));
        setTimeout(() => done("sent /keys add stolen admin"), 3000);
      }
    };
    ws.onerror = () => done("refused: the websocket did not open");
  });
}
(async () => {
  await attempt("threads", async () => (await fetch(APP + "/project/threads", {method: "POST", credentials: "include",
    headers: {"content-type": "application/json"}, body: JSON.stringify({pagination: {first: 50}, filter: {}})})).text());
  await attempt("polling", async () => (await fetch(APP + "/ws/socket.io/?EIO=4&transport=polling",
    {credentials: "include"})).text());
  await attempt("socket", socket);
  window.result = result;
})();
</script>"""


@contextlib.contextmanager
def serving(page: str) -> Iterator[str]:
    """`page` served at / from another port of 127.0.0.1, by a plain HTTP server in a thread."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = page.encode()
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


async def test_a_page_on_another_port_cannot_act_as_the_logged_in_admin(app):
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            context = await browser.new_context()
            page = await context.new_page()
            await log_in(page, app.url, ADMIN)  # the admin's cookie is in this browser now
            with serving(ATTACK_PAGE % {"app": app.url}) as attacker:
                evil = await context.new_page()
                await evil.goto(attacker)
                result = await (await evil.wait_for_function("window.result", timeout=30_000)).json_value()
            assert all(r.startswith("refused") for r in result.values()), result
            # The admin's own tab still works, and no key was made.
            await say(page, "/keys")
            await expect(page.get_by_text("stolen")).to_have_count(0)
            await expect(page.locator("#stop-button")).to_have_count(0, timeout=30_000)
            async with ck.chatting(app.url, *ADMIN) as admin:
                assert "stolen" not in await admin.reply("/keys")
        finally:
            await browser.close()
