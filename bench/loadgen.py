"""A small HTTP/1.1 keep-alive load generator for bench.hot_path, used when `wrk` is not installed. It runs
in a process of its own (uvloop, raw asyncio streams, no HTTP library) so that its own cost stays out of
the servers' processes; on a 2-core machine it still shares the cores with the server under test, so the
fastest floor's figures are a lower bound. Prints one JSON line:

    python -m bench.loadgen URL --connections 64 --seconds 8 [--method POST] [--header 'K: V'] [--body JSON]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import uvloop


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    non_2xx: int = 0
    timeouts: int = 0
    errors: int = 0


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """The status and whether the server keeps the connection open."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    keep_alive = True
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            keep_alive = False
    if length:
        await reader.readexactly(length)
    return status, keep_alive


async def connection(
    host: str, port: int, request: bytes, deadline: float, limit_seconds: float, tally: Tally
) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while time.perf_counter() < deadline:
        if writer is None:
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                tally.errors += 1
                await asyncio.sleep(0.05)
                continue
        assert reader is not None
        started = time.perf_counter()
        writer.write(request)
        try:
            async with asyncio.timeout(limit_seconds):
                status, keep_alive = await read_response(reader)
        except TimeoutError:
            tally.timeouts += 1
            keep_alive = False
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            tally.errors += 1
            keep_alive = False
        else:
            tally.latencies.append(time.perf_counter() - started)
            if not 200 <= status < 300:
                tally.non_2xx += 1
        if not keep_alive:
            writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def run(args: argparse.Namespace) -> dict[str, object]:
    url = urlsplit(args.url)
    body = (args.body or "").encode()
    headers = [f"Host: {url.netloc}", "Connection: keep-alive", *args.header]
    if body:
        headers += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    target = url.path + (f"?{url.query}" if url.query else "")
    request = (
        f"{args.method} {target} HTTP/1.1\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n"
    ).encode()
    request += body
    tally = Tally()
    started = time.perf_counter()
    deadline = started + args.seconds
    await asyncio.gather(
        *(
            connection(url.hostname or "127.0.0.1", url.port or 80, request, deadline, args.timeout, tally)
            for _ in range(args.connections)
        )
    )
    elapsed = time.perf_counter() - started
    latencies = sorted(tally.latencies)

    def quantile(q: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")
        )

    return {
        "requests": len(latencies),
        "rate": len(latencies) / elapsed,
        "p50_ms": quantile(0.5),
        "p99_ms": quantile(0.99),
        "non_2xx": tally.non_2xx,
        "timeouts": tally.timeouts,
        "errors": tally.errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--method", default="GET")
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--body")
    print(json.dumps(uvloop.run(run(parser.parse_args()))))


if __name__ == "__main__":
    main()
