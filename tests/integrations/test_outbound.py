"""URLs a provider hands us are fetched from public addresses only, checked where the connection opens."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpcore
import httpx
import pytest

from app.integrations.images.base import EngineError
from app.integrations.images.replicate import ReplicateClient
from app.integrations.outbound import ForbiddenDestination, PublicAddressesOnly, is_public, public_only_client


def resolving_to(*addresses: str) -> Any:
    async def resolver(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolver


async def unresolvable(host: str, port: int) -> list[str]:
    raise OSError("Name or service not known")


@pytest.fixture
async def local_server() -> AsyncIterator[dict[str, int]]:
    """A real HTTP server on 127.0.0.1 that counts the connections it is offered."""
    seen = {"connections": 0, "port": 0}

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen["connections"] += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    seen["port"] = server.sockets[0].getsockname()[1]
    async with server:
        yield seen


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.9",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",  # noqa: S104 (an address to refuse, not one to bind)
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fd00::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
    ],
)
def test_inward_addresses_are_not_public(address: str) -> None:
    assert not is_public(address)


@pytest.mark.parametrize("address", ["151.101.1.1", "34.120.0.5", "2606:4700::6810:1"])
def test_internet_addresses_are_public(address: str) -> None:
    assert is_public(address)


@pytest.mark.parametrize(
    "resolver",
    [resolving_to("127.0.0.1"), resolving_to("151.101.1.1", "10.0.0.7"), resolving_to(), unresolvable],
    ids=["loopback", "one-of-several-inward", "no-address", "unresolvable"],
)
async def test_a_name_that_does_not_resolve_to_public_addresses_only_is_never_connected(
    local_server: dict[str, int], resolver: Any
) -> None:
    async with public_only_client(resolver=resolver) as client:
        with pytest.raises(ForbiddenDestination):
            await client.get(f"http://files.example:{local_server['port']}/out.png")

    assert local_server["connections"] == 0


async def test_the_same_server_answers_a_client_without_the_guard(local_server: dict[str, int]) -> None:
    """The refusal above is the guard's, not an unreachable server's."""
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{local_server['port']}/out.png")

    assert response.text == "ok"
    assert local_server["connections"] == 1


async def test_the_connection_goes_to_the_address_that_was_checked() -> None:
    resolutions: list[str] = []
    connections: list[tuple[str, int]] = []

    async def resolver(host: str, port: int) -> list[str]:
        # A rebinding name: public when checked, inward on any later lookup.
        resolutions.append(host)
        return ["151.101.1.1"] if len(resolutions) == 1 else ["127.0.0.1"]

    class Recording(httpcore.AsyncNetworkBackend):
        async def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
            connections.append((host, port))
            raise httpcore.ConnectError("recorded, not connected")

    backend = PublicAddressesOnly(resolver, inner=Recording())
    with pytest.raises(httpcore.ConnectError):
        await backend.connect_tcp("files.example", 443)

    assert connections == [("151.101.1.1", 443)]
    assert resolutions == ["files.example"]


async def test_a_replicate_output_on_a_delivery_name_pointing_inward_is_refused_unretried() -> None:
    async with (
        httpx.AsyncClient() as api_http,
        public_only_client(resolver=resolving_to("169.254.169.254")) as download_http,
    ):
        replicate = ReplicateClient(api_http, api_token="r8_test", download_http=download_http)
        with pytest.raises(EngineError) as caught:
            await replicate.download("https://pbxt.replicate.delivery/out.png")

    assert (caught.value.code, caught.value.retryable) == ("provider_error", False)
    assert "non-public address" in str(caught.value)
