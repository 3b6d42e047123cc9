"""Admission: how many requests run at once, and the order the others wait in.

One process runs every request on one event loop. Under a crowd (256 clients at once), letting them all
in makes each turn of the loop run a step of every one of them: a request's every await then waits for
a whole crowd's steps, the CPU-heavy routes (a palette computed on the loop) stretch a turn to a second,
and a short lookup that many requests wait on (verifying a busy credential again) takes seconds. Most
requests were answered fast and some waited past their clients' timeouts.

`AdmissionGate` lets `max_active` requests run at once; the others wait, doing nothing, in the order
they came, and each takes the slot of a request that ends. Overload then raises every request's latency
evenly instead of some requests' by seconds. Past `max_queued` waiting, a request is answered 503
`overloaded` at once (with Retry-After): that is the documented queue limit.

Requests for `first_paths` (the routes that start image work on this machine) wait in a lane of their
own, and a slot given back goes to that lane first, up to half the slots while others wait: a crowd
polling its balance then no longer delays a cut-out by the whole queue's length (bench.images, a 512 px
cut-out while 64 clients read their credits), and the reads keep the other half.

While such a request holds its slot, the others run at most `max_beside_first` at once. Its every
await then waits for one or two other requests' steps rather than for a full gate's, and its engine's
worker process shares the cores with less of the crowd's work (the server's loop, the database, the
clients).
bench.images, a 512 px cut-out while 64 clients read their credits, over raw onnxruntime: +27% without
the limit, +20% with two others at most; the crowd pays for it in reads while cut-outs run (README,
"Overload queues").

A slot is held until the answer starts (a stream, a download or an event feed holds none while it
flows) and at most `lease_seconds`: a request still running then is waiting on something outside (a
model, a payment provider, its own client's upload), not using the loop, and runs on without a slot.
"""

from __future__ import annotations

import asyncio
from collections import deque

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import ServiceUnavailable

# Probes that must answer whatever the load (a load balancer takes a queued /healthz for a dead process).
UNGATED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class Overloaded(ServiceUnavailable):
    code = "overloaded"
    default_detail = "The server is at its queue limit; retry shortly."


class _Slot:
    """One admitted request's place: given back once, whichever comes first (its answer starting, its
    end, its lease running out)."""

    __slots__ = ("_gate", "_lease", "first", "held")

    def __init__(self, gate: AdmissionGate, lease_seconds: float, first: bool) -> None:
        self._gate = gate
        self.first = first
        self.held = True
        self._lease = asyncio.get_running_loop().call_later(lease_seconds, self.release)

    def release(self) -> None:
        if self.held:
            self.held = False
            self._lease.cancel()
            self._gate.give_back(self.first)


class AdmissionGate:
    """ASGI middleware: at most `max_active` requests at once, the others first come, first served in
    their lane (`first_paths`' own, served first, or the others'), and at most `max_beside_first` of the
    others while a first-lane request runs; `max_active` 0 admits every request at once (no gate)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_active: int,
        max_queued: int,
        lease_seconds: float,
        retry_after: int = 1,
        first_paths: frozenset[str] = frozenset(),
        max_beside_first: int | None = None,
    ) -> None:
        self.app = app
        self.max_active = max_active
        self.max_queued = max_queued
        self.lease_seconds = lease_seconds
        self.retry_after = retry_after
        self.first_paths = first_paths
        # While others wait, the first lane is handed slots only while it holds fewer than this.
        self.max_first = max(1, max_active // 2)
        self.max_beside_first = max_active if max_beside_first is None else max(1, max_beside_first)
        self.active = 0
        self.active_first = 0
        # Requests waiting for a slot, oldest first: the first lane's, and the others'.
        self._first: deque[asyncio.Future[_Slot]] = deque()
        self._waiting: deque[asyncio.Future[_Slot]] = deque()

    @property
    def queued(self) -> int:
        return len(self._first) + len(self._waiting)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.max_active <= 0 or scope["path"] in UNGATED_PATHS:
            await self.app(scope, receive, send)
            return
        slot = await self._enter(scope["path"] in self.first_paths)

        async def send_releasing(message: Message) -> None:
            if message["type"] == "http.response.start":
                slot.release()
            await send(message)

        try:
            await self.app(scope, receive, send_releasing)
        finally:
            slot.release()

    def _may_take(self, first: bool) -> bool:
        """Whether a request of that lane may take a free slot now: the first lane beyond its share
        only when the others would not take the slot (none waits, or image work holds them back)."""
        if self.active >= self.max_active:
            return False
        others_may = not self.active_first or self.active - self.active_first < self.max_beside_first
        if first:
            return self.active_first < self.max_first or not self._waiting or not others_may
        return others_may

    async def _enter(self, first: bool) -> _Slot:
        if not self.queued and self._may_take(first):
            return self._take(first)
        if self.queued >= self.max_queued:
            raise Overloaded(headers={"Retry-After": str(self.retry_after)})
        line = self._first if first else self._waiting
        turn: asyncio.Future[_Slot] = asyncio.get_running_loop().create_future()
        line.append(turn)
        self.hand_out()  # image work may go in beside others held back
        try:
            return await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                turn.result().release()  # the slot handed over in the same moment goes to the next in line
            else:
                turn.cancel()
                if turn in line:  # else `hand_out` dropped it already
                    line.remove(turn)
                self.hand_out()  # a lane left empty may let the other one in
            raise

    def _take(self, first: bool) -> _Slot:
        self.active += 1
        self.active_first += first
        return _Slot(self, self.lease_seconds, first)

    def give_back(self, first: bool) -> None:
        """A slot given back (by a request of the first lane or not): free, then handed out."""
        self.active -= 1
        self.active_first -= first
        self.hand_out()

    def hand_out(self) -> None:
        """Free slots to whoever may take them, oldest first: the first lane's while it holds less than
        its share, or the others would not take the slot; then the others', up to `max_beside_first`
        while the first lane runs."""
        while True:
            # A waiter cancelled (its client gone) leaves its line when its task runs next: until then it
            # is skipped here, or another request's release would fail handing it a slot.
            for line in (self._first, self._waiting):
                while line and line[0].cancelled():
                    line.popleft()
            if self._first and self._may_take(first=True):
                self._first.popleft().set_result(self._take(first=True))
            elif self._waiting and self._may_take(first=False):
                self._waiting.popleft().set_result(self._take(first=False))
            else:
                return
