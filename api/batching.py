"""Micro-batching: concurrent single-image requests share one forward pass.

Requests that arrive while a forward pass runs wait for it and then share the next one (up to
`max_size` images), classified together in the thread pool; each request gets its own result back. One
forward pass over 32 images costs far less than 32 passes over one, so under concurrency throughput
rises. Without a window (`max_wait_s` 0) a request that finds nothing running or waiting runs at once,
alone, so a quiet server answers as fast as without batching; with one, the first waiting request opens
a window of `max_wait_s` for others to join (fuller passes, for up to that much latency).
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
from fastapi.concurrency import run_in_threadpool

from api.predictor import Prediction

logger = logging.getLogger("api")


@dataclass
class Pending:
    pixels: np.ndarray
    top_k: int
    result: "asyncio.Future[Prediction]"


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
        self.running = 0  # forward passes in flight, shared or alone

    @property
    def idle(self) -> bool:
        """No window to wait for, no pass running and none queued: a request may run at once, alone."""
        return self.max_wait_s == 0 and self.running == 0 and self.queue.empty()

    async def alone(self, predict: Callable[[], Awaitable[Prediction]]) -> Prediction:
        """Run one request's own prediction, counted as a running pass so that others queue behind it."""
        self.running += 1
        try:
            prediction = await predict()
        finally:
            self.running -= 1
        self.on_batch(1)
        return prediction

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name="micro-batcher")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        while not self.queue.empty():
            pending = self.queue.get_nowait()
            if not pending.result.done():
                pending.result.set_exception(RuntimeError("the service is shutting down"))

    async def predict(self, pixels: np.ndarray, top_k: int) -> Prediction:
        pending = Pending(pixels, top_k, asyncio.get_running_loop().create_future())
        await self.queue.put(pending)
        return await pending.result

    async def collect(self) -> list[Pending]:
        """The next group: the first waiting request, those queued behind it, and what arrives within
        the window."""
        group = [await self.queue.get()]
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
        return [pending for pending in group if not pending.result.cancelled()]  # gone clients

    async def run(self) -> None:
        while True:
            group = await self.collect()
            if not group:
                continue
            try:
                top_k = max(pending.top_k for pending in group)
                self.running += 1
                try:
                    results = await run_in_threadpool(self.predict_arrays, [p.pixels for p in group], top_k)
                finally:
                    self.running -= 1
            except Exception as error:  # every waiting request gets the error, the loop goes on
                logger.exception("batched prediction failed")
                for pending in group:
                    if not pending.result.done():
                        pending.result.set_exception(error)
                continue
            self.on_batch(len(group))
            for pending, result in zip(group, results, strict=True):
                if not pending.result.done():
                    pending.result.set_result(
                        result.model_copy(update={"top_k": result.top_k[: pending.top_k]})
                    )
