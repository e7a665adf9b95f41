"""The real app on a real Postgres server: its start-up migrates the empty database (every table,
Chainlit's too), the admin bootstraps, and a conversation is kept: the user's message (with the
composer's languages, which Chainlit hands over as a dict) and its answer come back when the
thread is resumed. Two replicas on one database are the lead's tests (test_replicas*)."""
from __future__ import annotations

import pytest

from tests import chatkit as ck

ADMIN = ("root", "root-password-1")


@pytest.fixture(scope="module")
def app(postgres, tmp_path_factory):
    d = tmp_path_factory.mktemp("baton-pg-app")
    ck.make_fake_model(d, "v1")
    env = {**ck.fake_env(d), "BATON_DATABASE_URL": postgres.new_database(),
           "BATON_PORT_MIN": "31050", "BATON_PORT_MAX": "31099"}
    with ck.running_app(env, admin=ADMIN) as app:
        yield app


async def test_a_conversation_on_postgres_is_kept_and_resumed(app):
    async with ck.chatting(app.url, *ADMIN) as admin:
        assert "Loading `v1`" in await admin.reply("/load v1 v1")
        await admin.wait_message(r"`v1` is ready")
        assert "Switched: `v1` now answers" in await admin.reply("/switch v1")
        admin.pick(source="en", target="de")
        answer = (await admin.ask("good morning to everyone"))[-1]
        assert answer.attribution == ("v1", "active"), answer.output
        thread_id = await admin.wait_for(lambda: admin.thread_id, 5, "the conversation's id")
        token = admin.token

    listed = await ck.threads(app.url, token)
    assert thread_id in [t["id"] for t in listed]
    again = ck.ChatClient(app.url, token, ADMIN[0])
    try:
        await again.connect(thread_id)
        resumed = await again.wait_for(lambda: next((d for n, d in again.events if n == "resume_thread"), None),
                                       10, "the resumed thread")
        outputs = [s.get("output", "") for s in resumed["steps"]]
        assert "good morning to everyone" in outputs, "the user's message (sent with its languages) was kept"
        assert any("_Translated by **v1**" in o for o in outputs), outputs
        assert again.chosen_modes() == {"source": "en", "target": "de"}, "the thread's languages come back"
    finally:
        await again.close()
