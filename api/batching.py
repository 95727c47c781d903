"""Micro-batching: concurrent single-image requests share one forward pass.

Requests that arrive while a forward pass runs wait for it and then share the next one (up to
`max_size` images), classified together in the thread pool; each request gets its own result back. One
forward pass over 32 images costs far less than 32 passes over one, so under concurrency throughput
rises. Without a window (`max_wait_s` 0) a request that finds nothing running or waiting runs at once,
alone, in one hop to the thread pool as without batching; with one, the first waiting request opens
a window of `max_wait_s` for others to join (fuller passes, for up to that much latency).
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from fastapi.concurrency import run_in_threadpool

from api.predictor import Prediction

logger = logging.getLogger("api")
Result = TypeVar("Result")


@dataclass
class Pending:
    pixels: np.ndarray
    top_k: int
    result: "asyncio.Future[Prediction]"


def fail(group: list[Pending], error: Exception) -> None:
    for pending in group:
        if not pending.result.done():
            pending.result.set_exception(error)


class MicroBatcher:
    def __init__(
        self,
        predict: Callable[[list[np.ndarray], int], list[Prediction]],
        max_wait_s: float,
        max_size: int,
        on_batch: Callable[[int], None] = lambda size: None,
    ) -> None:
        self.predict_arrays = predict
        self.max_wait_s = max_wait_s
        self.max_size = max_size
        self.on_batch = on_batch
        self.queue: asyncio.Queue[Pending] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        # One forward pass at a time, shared or alone: what arrives meanwhile queues for the next one.
        self.passing = asyncio.Lock()
        self.drawn: list[Pending] = []  # the group being formed or classified

    @property
    def idle(self) -> bool:
        """No window to wait for, no pass running and none queued: a request may run at once, alone."""
        return self.max_wait_s == 0 and not self.passing.locked() and self.queue.empty() and not self.drawn

    async def alone(self, predict: Callable[[], Awaitable[Result]]) -> Result:
        """Run `predict()` (one request's own pass, or a decision not to make one: anything but a
        `Prediction` is not counted) as the current pass; requests arriving meanwhile queue. The work
        itself gives the turn back when it ends: a cancelled request's thread works on."""
        await self.passing.acquire()
        work = asyncio.ensure_future(predict())
        work.add_done_callback(lambda _: self.passing.release())
        result = await asyncio.shield(work)
        if isinstance(result, Prediction):
            self.on_batch(1)
        return result

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name="micro-batcher")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        queued = [self.queue.get_nowait() for _ in range(self.queue.qsize())]
        fail(self.drawn + queued, RuntimeError("the service is shutting down"))

    async def predict(self, pixels: np.ndarray, top_k: int) -> Prediction:
        if self.task is None or self.task.done():  # stopped: nobody would answer
            raise RuntimeError("the service is shutting down")
        pending = Pending(pixels, top_k, asyncio.get_running_loop().create_future())
        await self.queue.put(pending)
        return await pending.result

    async def collect(self) -> None:
        """Draw the rest of the group: those queued behind its first request, and what arrives within
        the window."""
        group = self.drawn
        while len(group) < self.max_size and not self.queue.empty():
            group.append(self.queue.get_nowait())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while len(group) < self.max_size:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                group.append(await asyncio.wait_for(self.queue.get(), remaining))
            except TimeoutError:
                break

    async def run(self) -> None:
        while True:
            self.drawn = [await self.queue.get()]  # stop() fails what is drawn and not yet answered
            async with self.passing:  # the rest of the group is drawn once the running pass has ended
                await self.collect()
                await self.run_pass([pending for pending in self.drawn if not pending.result.cancelled()])
            self.drawn = []

    async def run_pass(self, group: list[Pending]) -> None:
        if not group:
            return
        try:
            top_k = max(pending.top_k for pending in group)
            results = await run_in_threadpool(self.predict_arrays, [p.pixels for p in group], top_k)
        except Exception as error:  # every waiting request gets the error, the loop goes on
            logger.exception("batched prediction failed")
            fail(group, error)
            return
        self.on_batch(len(group))
        for pending, result in zip(group, results, strict=True):
            if not pending.result.done():
                pending.result.set_result(result.model_copy(update={"top_k": result.top_k[: pending.top_k]}))
