"""A small HTTP/1.1 keep-alive load generator for bench.hot_path (used when `wrk` is not installed) and
bench.mixed. It runs in a process of its own (uvloop, raw asyncio streams, no HTTP library) so that its own
cost stays out of the servers' processes; on a 2-core machine it still shares the cores with the server
under test, so the fastest floor's figures are a lower bound. It reports its own CPU time (`cpu_seconds`)
so that a run can show it was not the bottleneck. Prints one JSON line:

    python -m bench.loadgen URL --connections 64 --seconds 8 [--method POST] [--header 'K: V'] [--body JSON]
    python -m bench.loadgen URL --mix MIX.json --connections 200 --seconds 60

With `--mix`, each request of each connection is of a kind drawn at random by weight (seeded: runs are
repeatable), from MIX.json: {"kinds": [{"name", "weight", "shared", "requests": [raw HTTP/1.1 request
text]}]}. A kind that is not `shared` gives connection i its request i modulo their number (a user per
connection); a `shared` kind hands its requests out once each, in order, across all connections (signed
webhook deliveries; a duplicate is a request listed twice), and `sent` reports how many went out, so
the first `sent` of them were sent. The JSON line then has the overall figures and one entry per kind:
requests, req/s, p50/p95/p99, answers by status, client timeouts and connection errors.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import json
import random
import resource
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import uvloop


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    non_2xx: int = 0
    timeouts: int = 0
    errors: int = 0
    statuses: Counter[int] = field(default_factory=Counter)

    def figures(self, elapsed: float) -> dict[str, object]:
        latencies = sorted(self.latencies)

        def quantile(q: float) -> float:
            if not latencies:
                return float("nan")
            return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

        return {
            "requests": len(latencies),
            "rate": len(latencies) / elapsed,
            "p50_ms": quantile(0.5),
            "p95_ms": quantile(0.95),
            "p99_ms": quantile(0.99),
            "non_2xx": self.non_2xx,
            "statuses": {str(status): count for status, count in sorted(self.statuses.items())},
            "timeouts": self.timeouts,
            "errors": self.errors,
        }


def cpu_seconds() -> float:
    """This process's CPU time so far (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


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
    await mixed_connection(host, port, lambda: (request, tally), deadline, limit_seconds, tally)


async def mixed_connection(
    host: str,
    port: int,
    next_request: Callable[[], tuple[bytes, Tally]],
    deadline: float,
    limit_seconds: float,
    refused: Tally,
) -> None:
    """One keep-alive client sending `next_request()`'s request, each counted in the tally it comes with,
    until the deadline; a connection refused counts as an error in `refused`."""
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while time.perf_counter() < deadline:
        if writer is None:
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                refused.errors += 1
                await asyncio.sleep(0.05)
                continue
        assert reader is not None
        request, tally = next_request()
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
            tally.statuses[status] += 1
            if not 200 <= status < 300:
                tally.non_2xx += 1
        if not keep_alive:
            writer.close()
            writer = None
    if writer is not None:
        writer.close()


@dataclass
class Kind:
    """One kind of request of a mix (see the module docstring)."""

    name: str
    weight: float
    requests: list[bytes]
    shared: bool = False
    tally: Tally = field(default_factory=Tally)
    sent: int = 0  # shared kinds: how many of `requests` went out (in order)

    def request_for(self, client: int) -> bytes:
        if not self.shared:
            return self.requests[client % len(self.requests)]
        request = self.requests[self.sent % len(self.requests)]  # past the end: duplicates, reported
        self.sent += 1
        return request


def load_mix(path: Path) -> list[Kind]:
    spec = json.loads(path.read_text())
    return [
        Kind(
            kind["name"],
            float(kind["weight"]),
            [request.encode("latin-1") for request in kind["requests"]],
            bool(kind.get("shared", False)),
        )
        for kind in spec["kinds"]
    ]


async def run_mix(args: argparse.Namespace) -> dict[str, object]:
    url = urlsplit(args.url)
    kinds = load_mix(Path(args.mix))
    total = sum(kind.weight for kind in kinds)
    bounds = list(itertools.accumulate(kind.weight / total for kind in kinds))
    rng = random.Random(args.seed)

    def chooser(client: int) -> Callable[[], tuple[bytes, Tally]]:
        def next_request() -> tuple[bytes, Tally]:
            kind = kinds[min(bisect.bisect(bounds, rng.random()), len(kinds) - 1)]
            return kind.request_for(client), kind.tally

        return next_request

    cpu_before = cpu_seconds()
    started = time.perf_counter()
    deadline = started + args.seconds
    host, port = url.hostname or "127.0.0.1", url.port or 80
    overall = Tally()  # and connections refused
    await asyncio.gather(
        *(
            mixed_connection(host, port, chooser(i), deadline, args.timeout, overall)
            for i in range(args.connections)
        )
    )
    elapsed = time.perf_counter() - started
    for kind in kinds:
        overall.latencies += kind.tally.latencies
        overall.non_2xx += kind.tally.non_2xx
        overall.timeouts += kind.tally.timeouts
        overall.errors += kind.tally.errors
        overall.statuses.update(kind.tally.statuses)
    return {
        **overall.figures(elapsed),
        "seconds": elapsed,
        "cpu_seconds": cpu_seconds() - cpu_before,
        "kinds": {
            kind.name: {
                **kind.tally.figures(elapsed),
                **({"sent": kind.sent, "available": len(kind.requests)} if kind.shared else {}),
            }
            for kind in kinds
        },
    }


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
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    deadline = started + args.seconds
    await asyncio.gather(
        *(
            connection(url.hostname or "127.0.0.1", url.port or 80, request, deadline, args.timeout, tally)
            for _ in range(args.connections)
        )
    )
    elapsed = time.perf_counter() - started
    figures = tally.figures(elapsed)
    return {
        key: figures[key] for key in ("requests", "rate", "p50_ms", "p99_ms", "non_2xx", "timeouts", "errors")
    } | {"cpu_seconds": cpu_seconds() - cpu_before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--method", default="GET")
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--body")
    parser.add_argument("--mix", help="a mix of request kinds (see the module docstring)")
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args()
    print(json.dumps(uvloop.run(run_mix(args) if args.mix else run(args))))


if __name__ == "__main__":
    main()
