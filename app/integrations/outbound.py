"""Fetching URLs that a provider handed us (not our settings): public addresses only.

A provider's answer names a host; what that name resolves to is decided by whoever controls its DNS at the
moment we connect. So the check is made where the connection is opened, on the addresses the name
resolves to right then, and the connection goes to the address that was checked: a name that resolves to
a loopback, private, link-local or otherwise non-public address is refused before any byte is sent, and
no second resolution can swap the address afterwards (DNS rebinding). Every connection the client opens
goes through it, so a redirect, were one ever followed, would be checked again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from functools import cache
from typing import Any

import httpcore
import httpx

Resolver = Callable[[str, int], Awaitable[list[str]]]


class ForbiddenDestination(Exception):
    """The host resolves to an address the server must not reach (or to none at all)."""


async def resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class PublicAddressesOnly(httpcore.AsyncNetworkBackend):
    """A network backend that resolves the name itself, refuses it unless every address is public, and
    connects to the address it checked (TLS still verifies the certificate against the name)."""

    def __init__(
        self, resolver: Resolver = resolve, inner: httpcore.AsyncNetworkBackend | None = None
    ) -> None:
        self._resolver = resolver
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = await self._resolver(host, port)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
        except OSError as exc:
            raise ForbiddenDestination(f"{host} does not resolve ({exc})") from exc
        if not addresses:
            raise ForbiddenDestination(f"{host} does not resolve")
        # All of them, not only the first: a name that also points inward is not a public host.
        refused = [address for address in addresses if not is_public(address)]
        if refused:
            raise ForbiddenDestination(f"{host} resolves to a non-public address ({refused[0]})")
        return await self._inner.connect_tcp(
            addresses[0], port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise ForbiddenDestination("unix sockets are not public destinations")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


@cache
def _tls_context() -> ssl.SSLContext:
    """The default verifying TLS context, built once per process: loading the CA bundle costs tens of
    milliseconds, and the context is never modified once made."""
    return httpx.create_ssl_context(trust_env=False)


def public_only_client(
    *, resolver: Resolver = resolve, timeout: httpx.Timeout | None = None, limits: httpx.Limits | None = None
) -> httpx.AsyncClient:
    """An httpx client whose every connection goes through :class:`PublicAddressesOnly`: no proxy from the
    environment (a proxy would connect in our place, unchecked), no redirects followed by default."""
    limits = limits or httpx.Limits(max_connections=20, max_keepalive_connections=5)
    tls = _tls_context()
    transport = httpx.AsyncHTTPTransport(verify=tls, trust_env=False, limits=limits)
    # httpx takes no network backend; its pool is rebuilt with the same settings around ours.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=tls,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=PublicAddressesOnly(resolver),
    )
    return httpx.AsyncClient(
        transport=transport,
        trust_env=False,
        follow_redirects=False,
        timeout=timeout or httpx.Timeout(30.0, connect=5.0),
        headers={"User-Agent": "pixforge/0.1"},
    )
