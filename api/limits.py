"""Limits on what one request may cost: the body size, enforced while the body streams in, before anything
is parsed or buffered; and how many images are decoded at once."""

import asyncio
import ctypes
import hmac
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import ApiError, error_response

# Multipart framing (boundaries, part headers) on top of the files themselves.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's malloc.h


class BodySizeLimit:
    """Refuse a body over its limit: at once from Content-Length, or as soon as the stream exceeds it.

    `limit_bytes` applies to every path except those given their own limit in `path_limits`.

    The streaming check raises `ApiError` (413) from `receive`, inside the route's body parsing, where the
    app's error handler turns it into the JSON error response.
    """

    def __init__(self, app: ASGIApp, limit_bytes: int, path_limits: dict[str, int] | None = None) -> None:
        self.app = app
        self.limit_bytes = limit_bytes
        self.path_limits = path_limits or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.path_limits.get(scope["path"], self.limit_bytes)
        await LimitedRequest(self.app, limit + MULTIPART_OVERHEAD_BYTES)(scope, receive, send)


class LimitedRequest:
    def __init__(self, app: ASGIApp, limit_bytes: int) -> None:
        self.app = app
        self.limit_bytes = limit_bytes

    def too_large(self) -> ApiError:
        return ApiError(
            413, "payload_too_large", f"the request body exceeds the limit of {self.limit_bytes} bytes"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit_bytes:
            error = self.too_large()
            await error_response(413, error.code, error.message)(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit_bytes:
                    raise self.too_large()
            return message

        await self.app(scope, limited_receive, send)


Result = TypeVar("Result")
Value = TypeVar("Value")
Item = TypeVar("Item")
Decoded = TypeVar("Decoded")


@dataclass(frozen=True)
class Large:
    """What a decode that found a large image in its header returns instead of decoding it."""

    pixels: int


class DecodeSlots:
    """At most `slots` image decodes at once, and of them at most one large one (over
    `LARGE_DECODE_PIXELS`, from the header); a request waits at most `wait_s` for its slots.

    Decoding is where an upload's cost lives (memory and CPU grow with its pixels, not its bytes); bounding
    it keeps a burst of large images to a known peak, and the request that finds every slot busy gets a
    503 with `Retry-After` instead of queueing without end. Two 12-megapixel WebP decodes at once peaked
    at 250 MB over idle, one at 69 MB (measured). Found in review, and so: the wait is in the event loop
    (waits that blocked worker threads let a queue of large uploads hold the thread pool); the header is
    read on the thread pool (a PNG of many tiny chunks took 1.9 s to open); and a slot is freed when its
    decode ends, not when its request does (a cancelled request let a third decode start)."""

    LARGE_DECODE_PIXELS = 2_000_000

    def __init__(self, slots: int, wait_s: float) -> None:
        self.slots = asyncio.Semaphore(slots)
        self.large = asyncio.Semaphore(1)
        # Reading a header can cost as much as a decode (a PNG of many tiny chunks): bounded too.
        self.headers = asyncio.Semaphore(slots)
        self.wait_s = wait_s

    async def run(self, pixels: Callable[[], int], decode: Callable[[], Result]) -> Result:
        """`decode()` on the thread pool, once it has the slots its image needs: `pixels()` (run first,
        on the thread pool too) says how many pixels it decodes to.

        With a slot free, the header is read and a small image decoded in one thread hop (a 28x28 PNG:
        2.16 -> 2.01 ms over the HTTP floor, both servers side by side); a large one then waits for the
        large slot. With none free, the header is read under the header slots while the request waits."""
        deadline = asyncio.get_running_loop().time() + self.wait_s  # one wait for every slot
        result = await self.run_if_small(pixels, decode)
        if result is None:
            largest = await self.guarded([self.headers], deadline, pixels)
        elif isinstance(result, Large):
            largest = result.pixels
        else:
            return result
        return await self.run_sized(largest, decode, deadline)

    async def run_sized(
        self, pixels: int, decode: Callable[[], Result], deadline: float | None = None
    ) -> Result:
        """`decode()` of an image whose header said `pixels`, once it has the slots that needs."""
        deadline = deadline or asyncio.get_running_loop().time() + self.wait_s
        return await self.guarded(self.needed(pixels), deadline, decode)

    async def run_if_small(
        self, pixels: Callable[[], int], decode: Callable[[], Result]
    ) -> Result | Large | None:
        """`decode()` in one thread hop, if a slot is free now and the header (`pixels()`, in the same
        hop) says the image is small. Else nothing is decoded: `Large` (with the header's pixels) or
        None (no slot free), and nothing was waited for."""
        if self.slots.locked():
            return None

        def decode_if_small() -> Result | Large:
            count = pixels()
            return decode() if count <= self.LARGE_DECODE_PIXELS else Large(count)

        return await self.guarded(
            [self.slots], asyncio.get_running_loop().time() + self.wait_s, decode_if_small
        )

    async def run_shared(
        self,
        items: Sequence[Item],
        pixels: Callable[[Item], int],
        decode: Callable[[Item], Decoded],
        then: Callable[[list[Decoded]], Result],
    ) -> Result:
        """A batch: `decode` each item, then `then(all decoded, in order)`, on the thread pool.

        One wait for a slot (and the large one, if the largest header asks for it), as for one upload;
        then, for small images, every other slot free at that moment joins, each taking the next item
        in turn (decoding is most of a batch of photos, and Pillow decodes and resizes without the GIL).
        The last to finish runs `then` (the forward pass) in its slot, so a batch never holds a slot it
        waited for in vain, and single requests find a slot as soon as a helper runs out of items."""
        deadline = asyncio.get_running_loop().time() + self.wait_s
        largest = await self.guarded([self.headers], deadline, lambda: max(map(pixels, items), default=0))
        held = [await self.hold(self.needed(largest), deadline)]
        while largest <= self.LARGE_DECODE_PIXELS and len(held) < len(items) and not self.slots.locked():
            held.append(await self.hold([self.slots], deadline))  # free: taken without waiting
        queue = iter(enumerate(items))
        decoded: dict[int, Decoded] = {}
        outcome: list[Result] = []
        lock = threading.Lock()
        working = len(held)

        def work() -> None:
            nonlocal working
            while (taken := next_of(queue, lock)) is not None:
                decoded[taken[0]] = decode(taken[1])
            with lock:
                working -= 1
                last = working == 0
            if last:
                outcome.append(then([decoded[position] for position in range(len(items))]))

        calls = [self.start(semaphores, work) for semaphores in held]
        await asyncio.shield(asyncio.gather(*calls))  # cancelled, the request stops waiting
        return outcome[0]

    def needed(self, pixels: int) -> list[asyncio.Semaphore]:
        return [self.large, self.slots] if pixels > self.LARGE_DECODE_PIXELS else [self.slots]

    async def guarded(
        self, needed: list[asyncio.Semaphore], deadline: float, function: Callable[[], Value]
    ) -> Value:
        """`function()` on the thread pool, holding `needed` until it returns, even if the request
        waiting for it is cancelled first."""
        call = self.start(await self.hold(needed, deadline), function)
        return await asyncio.shield(call)  # cancelled, the request stops waiting; the decode runs on

    async def hold(self, needed: list[asyncio.Semaphore], deadline: float) -> list[asyncio.Semaphore]:
        """Acquire `needed` in order, each waiting until `deadline` at most; all or none."""
        held: list[asyncio.Semaphore] = []
        try:
            for semaphore in needed:
                await self.acquire(semaphore, deadline)
                held.append(semaphore)
        except BaseException:
            for semaphore in held:
                semaphore.release()
            raise
        return held

    @staticmethod
    def start(held: list[asyncio.Semaphore], function: Callable[[], Value]) -> "asyncio.Future[Value]":
        """`function()` on the thread pool; `held` is released when it returns."""

        def release(_: object) -> None:
            for semaphore in held:
                semaphore.release()

        call = asyncio.ensure_future(run_in_threadpool(function))
        call.add_done_callback(release)
        return call

    @staticmethod
    async def acquire(semaphore: asyncio.Semaphore, deadline: float) -> None:
        try:
            async with asyncio.timeout_at(deadline if semaphore.locked() else None):
                await semaphore.acquire()
        except TimeoutError:
            raise ApiError(
                503,
                "busy",
                "the service is decoding as many images as it can; retry in a second",
                headers={"Retry-After": "1"},
            ) from None


def next_of(items: Iterator[Value], lock: threading.Lock) -> Value | None:
    with lock:
        return next(items, None)


class RateLimit:
    """A token bucket per client address: `per_minute` requests, refilled evenly, at most `per_minute` in
    a burst; past it a 429 with `Retry-After`. Per worker process (N workers allow N times the rate);
    at most `MAX_CLIENTS` addresses are remembered, the least recently seen forgotten first."""

    MAX_CLIENTS = 10_000

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, when)
        self.lock = threading.Lock()

    def take(self, client: str) -> None:
        if self.per_minute <= 0:
            return
        with self.lock:
            now = self.clock()
            tokens, then = self.buckets.pop(client, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - then) * self.per_minute / 60)
            if tokens < 1:
                self.buckets[client] = (tokens, now)
                wait = math.ceil((1 - tokens) * 60 / self.per_minute)
                raise ApiError(
                    429,
                    "rate_limited",
                    f"at most {self.per_minute} requests a minute from one client here; retry in {wait} s",
                    headers={"Retry-After": str(wait)},
                )
            self.buckets[client] = (tokens - 1, now)
            if len(self.buckets) > self.MAX_CLIENTS:
                self.buckets.popitem(last=False)


def return_freed_memory_promptly() -> None:
    """glibc raises its mmap threshold after each large free, so later decode buffers come from the
    heap and stay in the process: RSS after a burst of large images stayed ~1 GB over idle (measured,
    benchmarks/hostile_load). A fixed threshold keeps every buffer over 128 kB mmapped and returned to
    the OS when freed. A no-op where the C library is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)
    except (OSError, AttributeError):
        pass


FEEDBACK_KEY_HEADER = {
    "name": "X-API-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "required when the service sets a feedback key (APPAREL_FEEDBACK_API_KEY)",
}


class FeedbackGate:
    """The rate limit and the key for POST `path`, checked before its body is read: FastAPI parses a
    form before the endpoint runs, so checks there let any client make the server spool 10 MB uploads
    (found in review). Failed keys count against the rate limit, which slows guessing."""

    def __init__(self, app: ASGIApp, path: str, api_key: str, rate: RateLimit) -> None:
        self.app = app
        self.path = path
        self.api_key = api_key.encode()
        self.rate = rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self.path and scope["method"] == "POST":
            try:
                self.check(scope)
            except ApiError as error:
                headers = dict(error.headers or {})
                answer = error_response(error.status_code, error.code, error.message, headers)
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def check(self, scope: Scope) -> None:
        client = scope.get("client")
        self.rate.take(client[0] if client else "unknown")
        sent = Headers(scope=scope).get("x-api-key", "").encode()
        if self.api_key and not hmac.compare_digest(sent, self.api_key):
            raise ApiError(401, "unauthorized", "feedback needs this service's key in the X-API-Key header")
