"""What a job a client waits for costs the database: its credits are held and settled without reading
the ledger (the hold's key is new, and the job's row lock proves it unsettled) and its owner's row is
locked once per transaction."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from tests.conftest import make_settings
from tests.support.images import logo_like
from tests.support.statements import recorded_statements, selects_from

CUT_OUT = "/api/v1/images/remove-background"


@pytest.fixture
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return make_settings(database_url=database_url, data_dir=tmp_path_factory.mktemp("data"))


async def test_a_waited_job_holds_and_captures_its_credits_in_two_writes_each(
    client: httpx.AsyncClient, auth: dict[str, str], engine: AsyncEngine
) -> None:
    with recorded_statements(engine) as statements:
        response = await client.post(CUT_OUT, headers=auth, files={"file": ("a.png", logo_like(48))})
    assert response.status_code == 200, response.text
    assert response.json()["credits"] == pytest.approx(9.0)
    assert selects_from(statements, "credit_ledger") == []
    assert len([s for s in statements if s.startswith("update credit_accounts")]) == 2  # hold, capture
    assert len([s for s in statements if s.startswith("insert into credit_ledger")]) == 2
    # Where an UPDATE cannot return the balance it wrote, each move reads it back under its lock.
    rereads = 0 if engine.dialect.update_returning else 2
    assert len(selects_from(statements, "credit_accounts")) == rereads
    # The upload and the job are created under one lock of their owner's row (SQLite locks the file, and
    # reads the row plainly), and the request reads it no other time: only its credential's first
    # verification does, with the access token's revocation (then cached for AUTH_CACHE_SECONDS).
    users = selects_from(statements, "users")
    locks = [s for s in users if " for update" in s or " for no key update" in s]
    assert len(locks) == (0 if engine.dialect.name == "sqlite" else 1)
    assert len([s for s in users if "revoked_access_tokens" not in s]) == 1
