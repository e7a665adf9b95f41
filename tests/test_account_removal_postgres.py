"""Issue 20 item 5 on a real Postgres server: removing an account ends its sessions and deletes its
history there too (Chainlit's ids are UUIDs on Postgres, TEXT on SQLite), and a new account of the
same name starts empty. The scenario is tests/test_admin_security.py's, on this module's app."""
from __future__ import annotations

import pytest

from tests import chatkit as ck
from tests.test_admin_security import ADMIN
from tests.test_admin_security import admin as admin  # the fixture, for this module's app
from tests.test_admin_security import (
    test_a_removed_account_loses_its_sessions_and_a_new_one_of_that_name_starts_empty as removal_scenario,
)


@pytest.fixture(scope="module")
def app(postgres, tmp_path_factory):
    d = tmp_path_factory.mktemp("baton-pg-removal")
    ck.make_fake_model(d, "v1", prefix="v1:")
    env = {**ck.fake_env(d), "BATON_DATABASE_URL": postgres.new_database(),
           "BATON_PORT_MIN": "33200", "BATON_PORT_MAX": "33299"}
    with ck.running_app(env, admin=ADMIN) as app:
        yield app


async def test_a_removed_account_loses_everything_on_postgres(app, admin):
    await removal_scenario(app, admin)
