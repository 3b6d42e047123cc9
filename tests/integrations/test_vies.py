"""The VIES client (app/integrations/vies.py) against a fake VIES speaking its REST contract: "registered",
"not registered", and every way of not answering, which is never read as "not registered"."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import respx

from app.integrations.vies import VatCheckUnavailable, ViesClient
from tests.fakes.vies import BASE_URL, FakeVies


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def fake_vies(outside_http: respx.MockRouter) -> FakeVies:
    return FakeVies(outside_http)


@pytest.fixture
def vies(http: httpx.AsyncClient) -> ViesClient:
    return ViesClient(http, base_url=BASE_URL + "/", timeout_seconds=2)


async def test_a_registered_number_is_confirmed_and_another_is_not(
    vies: ViesClient, fake_vies: FakeVies
) -> None:
    fake_vies.registered.add("FR40303265045")

    assert await vies.is_registered("FR40303265045") is True
    assert await vies.is_registered("DE129273398") is False
    assert fake_vies.calls == ["FR40303265045", "DE129273398"]


@pytest.mark.parametrize(
    "failure",
    ["member-state-down", "http-500", "http-429", "timeout", "not-json", "no-isValid"],
)
async def test_vies_not_answering_is_unavailable_never_invalid(
    vies: ViesClient, outside_http: respx.MockRouter, failure: str
) -> None:
    if failure in ("member-state-down", "http-500", "http-429"):
        fake_vies = FakeVies(outside_http)
        if failure == "member-state-down":
            fake_vies.unavailable.add("DE")
        else:
            fake_vies.fail_with(int(failure.removeprefix("http-")))
    else:
        answers = {
            "timeout": httpx.ConnectTimeout("slow"),
            "not-json": httpx.Response(200, text="<html>maintenance</html>"),
            "no-isValid": httpx.Response(200, json={"userError": "VALID"}),
        }
        outside_http.get(url__startswith=f"{BASE_URL}/ms/DE/").mock(side_effect=[answers[failure]])

    with pytest.raises(VatCheckUnavailable):
        await vies.is_registered("DE129273398")
