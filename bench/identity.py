"""Login, refresh and Clerk-verified request throughput against a real server on PostgreSQL, each as a
ratio to a bare GET /healthz in the same run.

    .venv/bin/python -m bench.identity [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time

import httpx
import uvicorn
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.db.session import create_engine
from bench.common import HEADER, Result, api_server, bench_database, free_port, load, unique_email
from tests.fakes.keys import RsaKey

PASSWORD = "bench passphrase 1"


def serve_jwks(key: RsaKey) -> str:
    """Clerk's JWKS endpoint, on loopback."""
    port = free_port()
    app = Starlette(
        routes=[Route("/.well-known/jwks.json", lambda _: JSONResponse({"keys": [key.public_jwk()]}))]
    )
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}"


def clerk_token(key: RsaKey, issuer: str, sub: str) -> str:
    now = int(time.time())
    return key.sign(
        {"iss": issuer, "sub": sub, "sid": "sess_bench", "iat": now, "nbf": now - 5, "exp": now + 3600}
    )


async def verified_account(base: str, database_url: str, client: httpx.AsyncClient) -> str:
    email = unique_email()
    response = await client.post(f"{base}/api/v1/auth/register", json={"email": email, "password": PASSWORD})
    response.raise_for_status()
    engine = create_engine(database_url)
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE users SET email_verified_at = now() WHERE email = :e"), {"e": email}
        )
    await engine.dispose()
    return email


async def run(database_url: str, concurrency: int, scale: int) -> list[Result]:
    key = RsaKey.generate("ins_bench")
    issuer = serve_jwks(key)
    env = {"DATABASE_URL": database_url, "CLERK_ISSUER": issuer, "EMAIL_PROVIDER": "console"}
    with api_server(env) as server:
        base = server.base
        limits = httpx.Limits(max_connections=concurrency * 2)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
            email = await verified_account(base, database_url, client)
            login_body = {"email": email, "password": PASSWORD}
            refresh_tokens = [
                (await client.post("/api/v1/auth/login", json=login_body)).json()["refresh_token"]
                for _ in range(concurrency)
            ]
            clerk_tokens = [clerk_token(key, issuer, f"user_bench{n}") for n in range(concurrency)]
            for token in clerk_tokens:  # first use creates the users; measure steady state
                (
                    await client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
                ).raise_for_status()

            async def healthz(_: int) -> None:
                (await client.get("/healthz")).raise_for_status()

            async def login(_: int) -> None:
                (await client.post("/api/v1/auth/login", json=login_body)).raise_for_status()

            # Each refresh token is used once: take one, put its successor back.
            idle_tokens: asyncio.Queue[str] = asyncio.Queue()
            for token in refresh_tokens:
                idle_tokens.put_nowait(token)

            async def refresh(_: int) -> None:
                token = await idle_tokens.get()
                response = await client.post("/api/v1/auth/refresh", json={"refresh_token": token})
                response.raise_for_status()
                idle_tokens.put_nowait(response.json()["refresh_token"])

            async def clerk_me(index: int) -> None:
                headers = {"Authorization": f"Bearer {clerk_tokens[index % concurrency]}"}
                (await client.get("/api/v1/users/me", headers=headers)).raise_for_status()

            await load("warm-up", 200, concurrency, healthz)
            return [
                await load("GET /healthz", 2000 * scale, concurrency, healthz),
                await load("POST auth/login (argon2id)", 40 * scale, concurrency, login),
                await load("POST auth/refresh", 1000 * scale, concurrency, refresh),
                await load("GET users/me (Clerk JWT)", 2000 * scale, concurrency, clerk_me),
            ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--scale", type=int, default=1)
    args = parser.parse_args()
    with bench_database() as database_url:
        results = asyncio.run(run(database_url, args.concurrency, args.scale))
    print(f"identity bench on PostgreSQL, one uvicorn worker, {args.concurrency} concurrent clients")
    print(HEADER)
    for result in results:
        print(result.row(results[0] if result is not results[0] else None))


if __name__ == "__main__":
    main()
