"""Pixforge's hot path against its own stack's floor, in one interleaved run on one PostgreSQL database.

Three servers, one uvicorn process each, on the same throw-away database and the same rows:
- Pixforge (`pixforge serve`), plus a second one with `--workers 2` for scenario a;
- the stack floor (bench/floor_stack.py): FastAPI + one SQLAlchemy async Core statement + python-jose +
  a response model;
- the bare floor (bench/floor_bare.py): Starlette + raw asyncpg (+ the same python-jose decode).
Each scenario is driven at each level (8, 64, 256 connections) against the three in turn:
  a. GET /api/v1/users/credits with a local access token, and with an API key (floors: the balance read);
  b. POST /api/v1/palettes from a base colour, charged 1 credit (floors: the conditional UPDATE + ledger
     INSERT in one transaction); the palette engine's CPU time is subtracted from Pixforge's figures in
     the "pix - engine" row, which the ratios are taken against. It is measured where it ran: Pixforge's
     compute worker counts its tasks' CPU seconds (/metrics), of which the engine's share is the one
     measured alone in this process (the rest renders the answer's JSON, which is request handling). An
     engine measured alone here would be measured on a quieter machine: under load the same work costs
     more CPU time, and the excess is not Pixforge's handling;
  c. GET /api/v1/images?limit=20, a gallery page of 30 jobs (floors: the same two keyset queries).
The load comes from `wrk` when it is installed, else from bench/loadgen.py in a process of its own (which
shares the 2 cores with the server: the fastest floor is then under-measured, so its ratio is a bound).
A request slower than 2 s counts as a client timeout. Each row also gives the server's CPU time per answered
request (from /proc), which other load on the machine does not skew the way it skews req/s and latency,
and Pixforge's ratio to each floor by both.

Each level is measured `--rounds` times (2), the servers taken in turn in one order and then in the other,
and each row gives the median of its rounds (non-2xx answers, timeouts and errors: their sum). Between two
minutes this machine's speed moved by up to 2x; within one round, Pixforge and its floors share what the
machine does, and the reversed order cancels a steady drift.

    .venv/bin/python -m bench.hot_path [--seconds 8] [--levels 8,64,256] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace

import httpx
from sqlalchemy import insert
from sqlalchemy.engine import make_url

from app.config import Settings
from app.db.session import Database
from app.models import Job
from app.security import LocalTokenCodec
from app.services import api_keys as api_keys_service
from bench.common import ROOT, bench_database, free_port, rich_user, server_process, tree_cpu_seconds

SECRET = "bench-secret-key-of-at-least-32-characters"
TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class Server:
    name: str
    base: str
    pid: int

    def cpu_seconds(self) -> float:
        """CPU time the server and its worker processes used so far: per request, the figure that other
        load on the machine does not change (throughput and latency it does)."""
        return tree_cpu_seconds(self.pid)


@contextmanager
def server(name: str, command: list[str], env: dict[str, str], port: int) -> Iterator[Server]:
    """A server process on `port`, up once `/healthz` answers."""
    with server_process(name, command, env, port, start_seconds=60) as running:
        yield Server(name, running.base, running.pid)


def pixforge(database_url: str, workers: int) -> tuple[str, list[str], dict[str, str], int]:
    port = free_port()
    command = [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", str(workers)]
    env = {
        "DATABASE_URL": database_url,
        "SECRET_KEY": SECRET,
        "LOG_LEVEL": "INFO",  # as deployed: the access log is part of the hot path
        "RATE_LIMITS_ENABLED": "false",
        "EMAIL_PROVIDER": "console",
    }
    name = "pixforge" if workers == 1 else f"pixforge x{workers}"
    return name, command, env, port


def floor(module: str, database_url: str) -> tuple[str, list[str], dict[str, str], int]:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", f"bench.{module}:app", "--port", str(port)]
    command += ["--log-level", "warning", "--no-access-log", "--loop", "uvloop", "--http", "httptools"]
    url = make_url(database_url)
    if module == "floor_bare":
        url = url.set(drivername="postgresql")
    env = {"FLOOR_DATABASE_URL": url.render_as_string(hide_password=False), "SECRET_KEY": SECRET}
    return module.replace("floor_", "") + " floor", command, env, port


@dataclass(frozen=True)
class Seeded:
    user_id: uuid.UUID
    api_key: str


async def seed(database_url: str) -> Seeded:
    """One verified user with a balance no run can exhaust, an API key and a 30-job gallery."""
    settings = Settings(database_url=database_url, secret_key=SECRET)  # type: ignore[arg-type]
    database = Database.from_settings(settings)
    async with database.session_scope() as session:
        user = await rich_user(session, settings, "bench")
        created = await api_keys_service.create(session, user, "bench")
        await session.execute(
            insert(Job),
            [
                {"id": uuid.uuid4(), "user_id": user.id, "kind": "vectorize", "status": "COMPLETED"}
                for _ in range(30)
            ],
        )
    await database.dispose()
    return Seeded(user.id, created.secret)


def access_token(user_id: uuid.UUID) -> str:
    """A fresh local access token (10 minutes: one per measurement, so a long run never sees one expire)."""
    return LocalTokenCodec(SECRET, 600, 3600).issue(user_id, "access")[0]


@dataclass(frozen=True)
class Measure:
    rate: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    timeouts: int
    errors: int
    requests: int
    cpu_ms: float = float("nan")  # the server's CPU time per answered request
    engine_ms: float = float("nan")  # of which the palette engine's, in Pixforge's compute worker


_WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _wrk_ms(text: str) -> float:
    # wrk prints "-nan" and the like when no request at all was answered at that level.
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    return float(found.group(1)) * _WRK_UNITS[found.group(2)] if found else float("nan")


def _wrk_percentile(out: str, percent: int) -> float:
    """From wrk's latency distribution, whose lines start with the percentile (a "Req/Sec" line may end in
    "65.50%" too)."""
    found = re.search(rf"^\s+{percent}%\s+(\S+)", out, re.MULTILINE)
    return _wrk_ms(found.group(1)) if found else float("nan")


def drive(url: str, connections: int, seconds: float, headers: list[str], method: str, body: str) -> Measure:
    wrk = shutil.which("wrk")
    if wrk:
        script = "".join(
            f'wrk.headers["{h.split(":", 1)[0]}"] = "{h.split(":", 1)[1].strip()}"\n' for h in headers
        )
        script += f'wrk.method = "{method}"\n'
        if body:
            script += f"wrk.body = {json.dumps(body)}\nwrk.headers['Content-Type'] = 'application/json'\n"
        with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
            lua.write(script)
            lua.flush()
            threads = str(min(2, connections))
            out = subprocess.run(  # noqa: S603
                [
                    wrk,
                    "-t",
                    threads,
                    "-c",
                    str(connections),
                    "-d",
                    f"{max(1, round(seconds))}s",  # wrk takes whole time units only
                    "--latency",
                    "--timeout",
                    f"{round(TIMEOUT_SECONDS)}s",
                    "-s",
                    lua.name,
                    url,
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        return Measure(
            rate=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
            p50_ms=_wrk_percentile(out, 50),
            p99_ms=_wrk_percentile(out, 99),
            non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
            timeouts=int(errors.group(4)) if errors else 0,
            errors=sum(int(errors.group(n)) for n in (1, 2, 3)) if errors else 0,
            requests=int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        )
    command = [sys.executable, "-m", "bench.loadgen", url, "--connections", str(connections)]
    command += ["--seconds", str(seconds), "--timeout", str(TIMEOUT_SECONDS), "--method", method]
    for header in headers:
        command += ["--header", header]
    if body:
        command += ["--body", body]
    out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT).stdout  # noqa: S603
    result = json.loads(out)
    return Measure(
        result["rate"],
        result["p50_ms"],
        result["p99_ms"],
        result["non_2xx"],
        result["timeouts"],
        result["errors"],
        result["requests"],
    )


def median_of(rounds: list[Measure]) -> Measure:
    """One row for a server's rounds at one level: the median of each figure, the sum of the failures."""

    def middle(figure: Callable[[Measure], float]) -> float:
        return statistics.median(figure(m) for m in rounds)

    return Measure(
        rate=middle(lambda m: m.rate),
        p50_ms=middle(lambda m: m.p50_ms),
        p99_ms=middle(lambda m: m.p99_ms),
        non_2xx=sum(m.non_2xx for m in rounds),
        timeouts=sum(m.timeouts for m in rounds),
        errors=sum(m.errors for m in rounds),
        requests=sum(m.requests for m in rounds),
        cpu_ms=middle(lambda m: m.cpu_ms),
        engine_ms=middle(lambda m: m.engine_ms),
    )


def in_turn(servers: list[Server], rounds: int) -> Iterator[Server]:
    """The servers once per round, each round in the other order than the one before."""
    for number in range(rounds):
        yield from (servers if number % 2 == 0 else reversed(servers))


def measure(
    target: Server, path: str, connections: int, seconds: float, headers: list[str], method: str, body: str
) -> Measure:
    """`drive`, with the server's CPU time per answered request."""
    before = target.cpu_seconds()
    result = drive(target.base + path, connections, seconds, headers, method, body)
    cpu = target.cpu_seconds() - before
    return replace(result, cpu_ms=cpu * 1000 / result.requests if result.requests else float("nan"))


PALETTE_TASK = "app.services.design.palettes.rendered_from_color"


def compute_cpu_seconds(server: Server) -> float:
    """The CPU seconds Pixforge's compute workers spent on palettes so far, from its /metrics."""
    text = httpx.get(server.base + "/metrics", timeout=10).text
    found = re.search(rf'^pixforge_compute_cpu_seconds_total{{task="{PALETTE_TASK}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def measure_palettes(
    target: Server, path: str, connections: int, seconds: float, headers: list[str], body: str, share: float
) -> Measure:
    """`measure`, with the engine's CPU time per answered request: its `share` of what the server's compute
    worker spent on palettes meanwhile."""
    before = compute_cpu_seconds(target)
    result = measure(target, path, connections, seconds, headers, "POST", body)
    spent = compute_cpu_seconds(target) - before
    engine_ms = spent * share * 1000 / result.requests if result.requests else float("nan")
    return replace(result, engine_ms=engine_ms)


@dataclass(frozen=True)
class Scenario:
    name: str
    pixforge_path: str
    floor_path: str
    method: str = "GET"
    body: str = ""
    api_key: bool = False
    engine: bool = False  # runs a palette engine whose measured CPU time is subtracted for the ratios


SCENARIOS = [
    Scenario("a. GET users/credits (access token)", "/api/v1/users/credits", "/credits"),
    Scenario("a. GET users/credits (API key)", "/api/v1/users/credits", "/credits", api_key=True),
    Scenario(
        "b. POST palettes (1 credit)",
        "/api/v1/palettes",
        "/spend",
        "POST",
        '{"base_color": "#3366ff"}',
        engine=True,
    ),
    Scenario("c. GET images?limit=20", "/api/v1/images?limit=20", "/images?limit=20"),
]

ROW = "{:<13} {:>5} {:>9} {:>8} {:>8} {:>7} {:>8} {:>8} {:>8} {:>14} {:>12}"
HEADER = ROW.replace("{:>14} {:>12}", "{{:>14}} {{:>12}}").format(
    "server", "conns", "req/s", "p50 ms", "p99 ms", "non2xx", "timeouts", "errors", "cpu ms"
)


def row(name: str, level: int, m: Measure, pixforge: Measure | None) -> str:
    """One server at one level; against a floor, Pixforge's ratio by throughput and by CPU per request
    (the second is what the other load on the machine cannot skew)."""
    ratio = f"{pixforge.rate / m.rate:.2f}" if pixforge is not None and m.rate else ""
    cpu_ratio = f"{m.cpu_ms / pixforge.cpu_ms:.2f}" if pixforge is not None and pixforge.cpu_ms else ""
    return ROW.format(
        name,
        level,
        f"{m.rate:,.0f}",
        f"{m.p50_ms:.1f}",
        f"{m.p99_ms:.1f}",
        m.non_2xx,
        m.timeouts,
        m.errors,
        f"{m.cpu_ms:.2f}",
        ratio,
        cpu_ratio,
    )


def least_cpu_ms(work: Callable[[], object]) -> float:
    """`work`'s CPU time in this process: the least disturbed of five batches."""
    work()
    runs, batches = 20, []
    for _ in range(5):
        started = time.process_time()
        for _ in range(runs):
            work()
        batches.append((time.process_time() - started) * 1000 / runs)
    return min(batches)


@dataclass(frozen=True)
class EngineAlone:
    """Scenario b's own work alone, in this process: the palette from the colour with the colour analysis
    its answer carries (OKLCH and contrast of each of its colours). Pixforge's compute worker runs it and
    then renders the answer's JSON, which is request handling and stays in Pixforge's figures."""

    engine_ms: float
    render_ms: float

    @property
    def share(self) -> float:
        """The engine's part of the worker's task."""
        return self.engine_ms / (self.engine_ms + self.render_ms)


def engine_alone() -> EngineAlone:
    from app.schemas.palette_answer import palette_json
    from app.services.design.palettes import analysed_from_color

    palette = analysed_from_color("#3366ff", "complementary")
    return EngineAlone(
        least_cpu_ms(lambda: analysed_from_color("#3366ff", "complementary")),
        least_cpu_ms(lambda: palette_json(palette)),
    )


def without_engine(m: Measure) -> Measure:
    """Pixforge's figures less the engine's CPU time per request: a CPU-bound server's throughput scales
    by cpu / (cpu - engine)."""
    left = max(m.cpu_ms - m.engine_ms, 0.01)
    return replace(m, rate=m.rate * m.cpu_ms / left, cpu_ms=left)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--levels", default="8,64,256")
    parser.add_argument("--rounds", type=int, default=2, help="measurements per server and level")
    parser.add_argument("--only", help="run the scenarios whose name contains this")
    parser.add_argument("--no-workers", action="store_true", help="skip the --workers 2 comparison")
    args = parser.parse_args()
    levels = [int(level) for level in args.levels.split(",")]
    tool = "wrk" if shutil.which("wrk") else "bench/loadgen.py (wrk is not installed)"
    print(
        f"hot path bench on PostgreSQL, one process per server, {args.seconds:g} s per level and round,"
        f" median of {args.rounds} rounds, load: {tool}"
    )
    with bench_database() as database_url, ExitStack() as stack:
        seeded = asyncio.run(seed(database_url))
        alone = engine_alone()
        print(
            f"b's palette engine alone here: {alone.engine_ms:.2f} ms CPU per palette, then"
            f" {alone.render_ms:.2f} ms rendering its JSON: 'pix - engine' subtracts the engine's share"
            f" ({alone.share:.0%}) of the CPU time of Pixforge's compute worker"
        )
        pix = stack.enter_context(server(*pixforge(database_url, 1)))
        with ExitStack() as floor_servers:
            floors = [
                floor_servers.enter_context(server(*floor(module, database_url)))
                for module in ("floor_stack", "floor_bare")
            ]
            run_scenarios(args, levels, seeded, alone.share, pix, floors)
        if not args.no_workers and (not args.only or "credits" in args.only):
            # Started once the floors are gone: each process has its own pool, and PostgreSQL's
            # max_connections (100 by default) does not hold all five servers' pools at once.
            multi = stack.enter_context(server(*pixforge(database_url, 2)))
            compare_workers(args, levels, seeded, pix, multi)


def run_scenarios(
    args: argparse.Namespace,
    levels: list[int],
    seeded: Seeded,
    engine_share: float,
    pix: Server,
    floors: list[Server],
) -> None:
    for scenario in SCENARIOS:
        if args.only and args.only not in scenario.name:
            continue
        print(f"\n{scenario.name}", flush=True)
        print(HEADER.format("pix/x (req/s)", "pix/x (cpu)"))
        for level in levels:
            rounds: dict[str, list[Measure]] = {}
            for target in in_turn([pix, *floors], args.rounds):
                credential = seeded.api_key if scenario.api_key else access_token(seeded.user_id)
                path = scenario.pixforge_path if target is pix else scenario.floor_path
                headers = [f"Authorization: Bearer {credential}"]
                if scenario.engine and target is pix:
                    measured = measure_palettes(
                        target, path, level, args.seconds, headers, scenario.body, engine_share
                    )
                else:
                    measured = measure(
                        target, path, level, args.seconds, headers, scenario.method, scenario.body
                    )
                rounds.setdefault(target.name, []).append(measured)
            results = {name: median_of(measured) for name, measured in rounds.items()}
            reference = results[pix.name]
            print(row(pix.name, level, reference, None))
            if scenario.engine:
                engine = f"{reference.engine_ms:.2f} ms CPU per palette"
                print(f"  of which the engine in Pixforge's worker: {engine}")
                reference = median_of([without_engine(m) for m in rounds[pix.name]])
                print(row("pix - engine", level, reference, None))
            for target in floors:
                print(row(target.name, level, results[target.name], reference), flush=True)


def compare_workers(
    args: argparse.Namespace, levels: list[int], seeded: Seeded, pix: Server, multi: Server
) -> None:
    print("\na. GET users/credits (access token): --workers 2 vs 1")
    print(HEADER.format("x/1 (req/s)", ""))
    for level in levels:
        headers = [f"Authorization: Bearer {access_token(seeded.user_id)}"]
        rounds: dict[str, list[Measure]] = {}
        for target in in_turn([pix, multi], args.rounds):
            measured = measure(target, SCENARIOS[0].pixforge_path, level, args.seconds, headers, "GET", "")
            rounds.setdefault(target.name, []).append(measured)
        one, two = median_of(rounds[pix.name]), median_of(rounds[multi.name])
        print(row(pix.name, level, one, None))
        gain = f" {two.rate / one.rate:14.2f}" if one.rate else ""
        print(row(multi.name, level, two, None).rstrip() + gain, flush=True)


if __name__ == "__main__":
    main()
