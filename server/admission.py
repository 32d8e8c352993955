"""Admission control in front of the engine: a bounded queue, shared fairly between clients.

Every request that makes the engine generate passes through here first: a chat or completion request takes `n`
engine slots (one per sequence), an arena battle takes 2 (both sides run in the same batch). The contract:

- at most `engine_slots` slots are held at once, and one client holds at most `per_client_slots` of them, so one
  client can never fill the engine and a newcomer finds room while others hold less than their share;
- a request that does not fit waits in its client's queue; freed slots go to clients in round-robin order (a client
  at its own cap is passed over; the client whose turn it is keeps it until the engine has room, so no one starves);
- beyond `per_client_queue` waiting requests for one client, `queue_size` in all, `max_wait_s` of waiting, or
  `battles_per_minute` arena battles started by one client in the last 60 s, the request is refused at once with a
  429 in OpenAI's error shape and a `Retry-After` header: a client is told to come back, it never hangs;
- a slot is released when its request ends, however it ends (done, failed, client gone mid-stream).

A client is its API key (`request.state.api_key_id`, set by the authentication layer when keys are on); without a
key, the arena's judge id (`judge` field or `X-Palate-Judge` header, on any endpoint: the in-process UI sends each
browser session's id from one address, for battles, Compare and Chat), else the client's address. Compare takes one
slot per pane: the first on admission (a 429 when the client has no room), the others as its stream runs (`slot`). Judge ids are self-declared: with API keys on, the key wins.
Queue depth, waiting requests per model, slots held per model, waiting time and rejections go to /metrics.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from core.config import AdmissionConfig
from server.errors import APIError, error_body

BATTLE_SLOTS = 2  # an arena battle runs both sides at once
RATE_WINDOW_S = 60.0


class Rejected(Exception):
    """The request is refused before it reaches the engine: 429 with Retry-After (or 499 once its client left)."""

    def __init__(self, reason: str, message: str, retry_after_s: float, status: int = 429):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retry_after_s = max(1, math.ceil(retry_after_s))
        self.status = status

    def response(self) -> JSONResponse:
        return JSONResponse(error_body(self.status, self.message, code=self.reason, type="rate_limit_error"),
                            status_code=self.status, headers={"Retry-After": str(self.retry_after_s)})


@dataclass(eq=False)
class _Waiter:
    client: str
    cost: int
    model: str
    endpoint: str
    battle: bool
    enqueued: float
    future: asyncio.Future = field(repr=False)


class Ticket:
    """Slots held by one admitted request. `release()` is idempotent; call it when the request ends."""

    def __init__(self, admission: "Admission", waiter: _Waiter, granted_at: float):
        self._admission = admission
        self.client = waiter.client
        self.cost = waiter.cost
        self.model = waiter.model
        self.granted_at = granted_at
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._admission._release(self)


class Admission:
    """The queue and its accounting. One per app; all methods run on the event loop (no locks needed)."""

    def __init__(self, config: AdmissionConfig, metrics: Any = None, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self._active = 0
        self._active_by_client: Counter[str] = Counter()
        self._waiting: dict[str, deque[_Waiter]] = {}
        self._order: deque[str] = deque()  # clients with waiters, in turn order
        self._battles: dict[str, deque[float]] = {}  # battle grant times per client, last RATE_WINDOW_S
        self._hold_s = 5.0  # running mean of how long a request holds its slots (for Retry-After)

    # ---- what is going on (tests, metrics) ------------------------------------------------------------------
    @property
    def active(self) -> int:
        return self._active

    def waiting(self, client: str | None = None) -> int:
        if client is not None:
            return len(self._waiting.get(client, ()))
        return sum(len(q) for q in self._waiting.values())

    def held_by(self, client: str) -> int:
        return self._active_by_client[client]

    # ---- the contract -----------------------------------------------------------------------------------------
    def check_cost(self, cost: int, param: str = "n") -> None:
        """A request needing more slots than one client may hold could never run: 400 naming the limit."""
        if cost > self.config.per_client_slots:
            raise APIError(400, f"{param}={cost} asks for {cost} sequences at once; this server lets one client run "
                                f"{self.config.per_client_slots} (server.admission.per_client_slots). Ask for fewer.",
                           param=param, code="too_many_sequences")

    async def acquire(self, client: str, *, cost: int = 1, model: str = "base", endpoint: str = "chat",
                      battle: bool = False, gone: Callable[[], Awaitable[bool]] | None = None) -> Ticket:
        """Wait for `cost` slots for `client`, in turn; raise `Rejected` when a bound is hit. `gone()` is polled
        while waiting: a client that left gives its place up."""
        self.check_cost(cost)
        now = self.clock()
        if battle:
            self._check_rate(client, now, endpoint)
        if self.waiting(client) >= self.config.per_client_queue:
            self._reject(endpoint, Rejected(
                "client_queue_full", f"Too many requests from this client: {self.held_by(client)} engine slots held "
                f"and {self.waiting(client)} requests waiting (limit {self.config.per_client_queue}, "
                "server.admission.per_client_queue). Wait for them to finish, then retry.", self._estimate(cost)))
        if self.waiting() >= self.config.queue_size:
            self._reject(endpoint, Rejected(
                "queue_full", f"The server is at capacity: {self.waiting()} requests are waiting for the engine "
                f"(limit {self.config.queue_size}, server.admission.queue_size). Retry later.", self._estimate(cost)))
        waiter = _Waiter(client, cost, model, endpoint, battle, now, asyncio.get_running_loop().create_future())
        self._enqueue(waiter)
        self._dispatch()
        try:
            deadline = now + self.config.max_wait_s
            while not waiter.future.done():
                left = deadline - self.clock()
                if left <= 0:
                    self._remove(waiter)
                    self._reject(endpoint, Rejected(
                        "queue_timeout", f"Waited {self.config.max_wait_s:g}s for the engine without getting a turn "
                        "(server.admission.max_wait_s); the server is busy. Retry later.", self._estimate(cost)))
                await asyncio.wait({waiter.future}, timeout=min(left, 1.0))
                if not waiter.future.done() and gone is not None and await gone():
                    self._remove(waiter)
                    self._reject(endpoint, Rejected("client_gone", "The client disconnected while waiting.", 1,
                                                    status=499))
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                waiter.future.result().release()
            else:
                self._remove(waiter)
            raise
        return waiter.future.result()

    # ---- internals --------------------------------------------------------------------------------------------
    def _check_rate(self, client: str, now: float, endpoint: str) -> None:
        window = self._battles.setdefault(client, deque())
        while window and window[0] <= now - RATE_WINDOW_S:
            window.popleft()
        queued = sum(1 for w in self._waiting.get(client, ()) if w.battle)
        limit = self.config.battles_per_minute
        if len(window) + queued >= limit:
            retry = (window[0] + RATE_WINDOW_S - now) if window else self._estimate(BATTLE_SLOTS)
            self._reject(endpoint, Rejected(
                "rate_limited", f"This client started {len(window)} battles in the last minute and has {queued} "
                f"waiting; the limit is {limit} per minute (server.admission.battles_per_minute). Retry in "
                f"{max(1, math.ceil(retry))}s.", retry))

    def _estimate(self, cost: int) -> float:
        """Seconds until a request arriving now could expect a turn: queued slots ahead, drained at the mean hold."""
        ahead = sum(w.cost for q in self._waiting.values() for w in q) + cost
        return min(120.0, self._hold_s * max(1, math.ceil(ahead / self.config.engine_slots)))

    def _reject(self, endpoint: str, rejection: Rejected) -> None:
        if self.metrics:
            self.metrics.admission_rejected(endpoint, rejection.reason)
        raise rejection

    def _enqueue(self, waiter: _Waiter) -> None:
        queue = self._waiting.get(waiter.client)
        if queue is None:
            queue = self._waiting[waiter.client] = deque()
            self._order.append(waiter.client)
        queue.append(waiter)
        if self.metrics:
            self.metrics.admission_waiting(waiter.model, +1)

    def _remove(self, waiter: _Waiter) -> None:
        queue = self._waiting.get(waiter.client)
        if queue is None or waiter not in queue:
            return
        queue.remove(waiter)
        if not queue:
            del self._waiting[waiter.client]
            self._order.remove(waiter.client)
        if self.metrics:
            self.metrics.admission_waiting(waiter.model, -1)
        if not waiter.future.done():
            waiter.future.cancel()
        self._dispatch()  # a waiter that left may have been the one whose turn it was

    def _dispatch(self) -> None:
        """Grant slots in round-robin order across clients while the engine has room."""
        while self._order:
            for _ in range(len(self._order)):
                client = self._order[0]
                head = self._waiting[client][0]
                if self._active_by_client[client] + head.cost > self.config.per_client_slots:
                    self._order.rotate(-1)  # at its own cap: it gets a turn when one of its requests ends
                    continue
                if self._active + head.cost > self.config.engine_slots:
                    return  # the engine is full: this client keeps its turn (nobody overtakes it)
                self._grant(client)
                break
            else:
                return  # every waiting client is at its cap

    def _grant(self, client: str) -> None:
        queue = self._waiting[client]
        waiter = queue.popleft()
        self._order.popleft()
        if queue:
            self._order.append(client)  # served: to the back of the line
        else:
            del self._waiting[client]
        now = self.clock()
        self._active += waiter.cost
        self._active_by_client[client] += waiter.cost
        if waiter.battle:
            self._battles.setdefault(client, deque()).append(now)
        if self.metrics:
            self.metrics.admission_waiting(waiter.model, -1)
            self.metrics.admission_granted(waiter.model, waiter.endpoint, waiter.cost, now - waiter.enqueued)
        waiter.future.set_result(Ticket(self, waiter, now))

    def _release(self, ticket: Ticket) -> None:
        self._active -= ticket.cost
        self._active_by_client[ticket.client] -= ticket.cost
        if self._active_by_client[ticket.client] <= 0:
            del self._active_by_client[ticket.client]
        held = self.clock() - ticket.granted_at
        self._hold_s = 0.8 * self._hold_s + 0.2 * held
        if self.metrics:
            self.metrics.admission_released(ticket.model, ticket.cost)
        self._dispatch()


# ---- HTTP side: who is asking, and holding slots for as long as a response streams -------------------------------
def client_identity(request: Request, judge: str | None = None) -> str:
    """The client a request counts against (see the module docstring). Judge ids are hashed: never kept raw."""
    key = getattr(request.state, "api_key_id", None)
    if key:
        return f"key:{key}"
    judge = judge or request.headers.get("x-palate-judge")
    if judge:
        return "judge:" + hashlib.sha256(judge.encode()).hexdigest()[:16]
    return f"addr:{request.client.host if request.client else 'unknown'}"


class HeldResponse(Response):
    """Wraps a streaming response so its slots are released when the ASGI call ends, however it ends (done,
    client gone before or during the stream, error): a generator's own `finally` never runs if it never started."""

    def __init__(self, inner: Response, release: Callable[[], None]):  # noqa: D107 - no Response.__init__ needed
        self.inner = inner
        self._release = release
        self.status_code = inner.status_code
        self.raw_headers = inner.raw_headers
        self.background = inner.background
        self.media_type = inner.media_type

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001 - ASGI
        self.inner.background = self.background
        try:
            await self.inner(scope, receive, send)
        finally:
            self._release()


async def admitted(request: Request, run: Callable[[], Awaitable[Response]], *, model: str, endpoint: str,
                   cost: int = 1, battle: bool = False, judge: str | None = None) -> Response:
    """Run `run()` (which builds the response) once the request is admitted; return the response, or the 429.

    A JSON response has finished its engine work when `run()` returns, so its slots are released then; a streaming
    one holds them until the stream ends. (A dead engine fails requests at once, so their slots free at once.)"""
    admission: Admission | None = getattr(request.app.state, "admission", None)
    if admission is None:
        return await run()
    try:
        ticket = await admission.acquire(client_identity(request, judge), cost=cost, model=model, endpoint=endpoint,
                                         battle=battle, gone=request.is_disconnected)
    except Rejected as rejection:
        return rejection.response()
    try:
        response = await run()
    except BaseException:
        ticket.release()
        raise
    if isinstance(response, StreamingResponse):
        return HeldResponse(response, ticket.release)
    ticket.release()
    return response


@asynccontextmanager
async def slot(request: Request, *, model: str, endpoint: str, judge: str | None = None) -> AsyncIterator[None]:
    """One more engine slot for a part of an admitted request that runs beside its others (a Compare pane after
    the first), held for the block. Waits its turn like any request; raises `Rejected` at the same bounds."""
    admission: Admission | None = getattr(request.app.state, "admission", None)
    if admission is None:
        yield
        return
    ticket = await admission.acquire(client_identity(request, judge), model=model, endpoint=endpoint,
                                     gone=request.is_disconnected)
    try:
        yield
    finally:
        ticket.release()
