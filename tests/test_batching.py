"""Micro-batching: concurrent requests share forward passes, each gets its own (identical) answer."""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.concurrency import run_in_threadpool
from fastapi.testclient import TestClient
from PIL import Image

import api.app
import api.predictor
from api.app import create_app
from api.batching import MicroBatcher
from api.predictor import Prediction
from api.settings import Settings
from support import hostile_uploads
from support.product_photos import product_photo
from text_recognizer.datasets.idx import read_idx

from .conftest import FIXTURES_DIR
from .test_api import upload

pytestmark = pytest.mark.usefixtures("serving_fixture_model")  # not the shipped model

IMAGES = read_idx(FIXTURES_DIR / "t10k-images-idx3-ubyte.gz").numpy()
REQUESTS = 24


def post_all(client: TestClient, photos: list[bytes]) -> list[dict[str, object]]:
    def post(index: int) -> dict[str, object]:
        response = client.post(f"/v1/predict?top_k={1 + index % 4}", files=upload(photos[index]))
        assert response.status_code == 200, response.text
        return dict(response.json())

    with ThreadPoolExecutor(max_workers=REQUESTS) as pool:
        return list(pool.map(post, range(REQUESTS)))


def batch_sizes(metrics: str) -> tuple[float, float]:
    """(images, passes) from /metrics' prediction_batch_size histogram."""
    values = dict(
        line.split()[:2] for line in metrics.splitlines() if line.startswith("prediction_batch_size_")
    )
    return float(values["prediction_batch_size_sum"]), float(values["prediction_batch_size_count"])


def test_concurrent_requests_are_batched_and_answered_as_if_alone() -> None:
    """A 10 s window that 8 requests fill at once: 24 requests make exactly 3 passes however slowly the
    machine runs (a 50 ms window made the count depend on timing)."""
    photos = [product_photo(IMAGES[i], seed=i) for i in range(REQUESTS)]
    with TestClient(create_app(Settings(micro_batching=False))) as client:
        alone = post_all(client, photos)
    with TestClient(create_app(Settings(batch_wait_ms=10_000, batch_max_size=8))) as client:
        batched = post_all(client, photos)
        metrics = client.get("/metrics").text
    for one, other in zip(alone, batched, strict=True):
        assert one["category"] == other["category"] and len(one["top_k"]) == len(other["top_k"])  # type: ignore[arg-type]
        assert other["confidence"] == pytest.approx(one["confidence"], abs=1e-5)
    assert batch_sizes(metrics) == (REQUESTS, REQUESTS / 8), "full passes of 8"


def test_a_quiet_server_runs_each_request_alone_as_unbatched(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a window (the default), a request that finds the batcher idle is not queued: one by one,
    requests get their unbatched answers, each in its own pass."""
    queued: list[np.ndarray] = []
    queue_for_a_pass = MicroBatcher.predict

    async def counted(self: MicroBatcher, pixels: np.ndarray, top_k: int) -> Prediction:
        queued.append(pixels)
        return await queue_for_a_pass(self, pixels, top_k)

    monkeypatch.setattr(MicroBatcher, "predict", counted)
    photos = [product_photo(IMAGES[i], seed=i) for i in range(4)]
    with TestClient(create_app(Settings(micro_batching=False))) as client:
        unbatched = [client.post("/v1/predict", files=upload(photo)).json() for photo in photos]
        assert batch_sizes(client.get("/metrics").text) == (4, 4), "off: four passes of one"
    with TestClient(create_app(Settings())) as client:
        answers = [client.post("/v1/predict", files=upload(photo)).json() for photo in photos]
        assert batch_sizes(client.get("/metrics").text) == (4, 4), "four passes of one"
    assert answers == unbatched and not queued


BLANK = np.zeros((28, 28), dtype=np.uint8)


def bags(images: list[np.ndarray]) -> list[Prediction]:
    return [
        Prediction(category="Bag", outcome="class", class_id=8, confidence=0.9, top_k=[], model_version="x")
        for _ in images
    ]


def started_batcher() -> MicroBatcher:
    """A batcher without a window whose passes answer "Bag" (inside a running event loop)."""
    batcher = MicroBatcher(lambda images, top_k: bags(images), max_wait_s=0, max_size=4)
    batcher.start()
    return batcher


def holding_the_turn(batcher: MicroBatcher) -> tuple["asyncio.Future[Prediction]", asyncio.Event]:
    """A request's own pass that holds the batcher's turn until the event is set."""
    may_end = asyncio.Event()

    async def own_pass() -> Prediction:
        await may_end.wait()
        return bags([BLANK])[0]

    return asyncio.ensure_future(batcher.alone(own_pass)), may_end


@pytest.mark.parametrize("first_pass", ["shared", "alone"])
def test_requests_queued_behind_a_running_pass_share_the_next(first_pass: str) -> None:
    """No window: what queues while a pass runs (a shared one, or a request's own) goes in one pass
    after it; before, each queued request ran at once in a pass of its own (the "alone" case: beside
    the running one)."""
    passes: list[int] = []
    running, may_end = threading.Event(), threading.Event()

    def predict(images: list[np.ndarray], top_k: int) -> list[Prediction]:
        passes.append(len(images))
        running.set()
        may_end.wait(10)
        return bags(images)

    async def scenario() -> None:
        batcher = MicroBatcher(predict, max_wait_s=0, max_size=4)
        batcher.start()
        assert batcher.idle

        async def own_pass() -> Prediction:
            return (await run_in_threadpool(predict, [BLANK], 1))[0]

        first = asyncio.ensure_future(
            batcher.alone(own_pass) if first_pass == "alone" else batcher.predict(BLANK, 1)
        )
        assert await asyncio.to_thread(running.wait, 10), "the first pass never started"
        assert not batcher.idle
        queued = asyncio.gather(*(batcher.predict(BLANK, 1) for _ in range(6)))
        await asyncio.sleep(0.05)
        assert passes == [1], "nothing runs beside the running pass"
        may_end.set()
        assert len(await queued) == 6 and (await first).category == "Bag"
        assert batcher.idle
        assert not MicroBatcher(predict, max_wait_s=0.005, max_size=4).idle, "a window: every request waits"
        await batcher.stop()

    asyncio.run(scenario())
    assert passes == [1, 4, 2], "the six queued behind the first pass, in passes of at most four"


def test_a_large_image_decodes_without_holding_the_batchers_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found in review: a large upload to an idle server held the batcher's turn through its wait for
    the large decode slot and its decode, and every small request queued behind it."""
    held: list[bool] = []
    convert = api.predictor.upload_views
    large = hostile_uploads.encode(Image.new("RGB", (2000, 1500), "white"), "PNG")
    with TestClient(create_app(Settings())) as client:
        batcher: MicroBatcher = client.app.state.batcher  # type: ignore[attr-defined]

        def watched(data: bytes, max_pixels: int, side: int) -> tuple[Image.Image, np.ndarray]:
            held.append(batcher.passing.locked())
            return convert(data, max_pixels, side)

        monkeypatch.setattr(api.predictor, "upload_views", watched)  # both paths convert there
        response = client.post("/v1/predict", files=upload(large))
    assert response.status_code == 200, response.text
    assert held == [False], "decoded apart from the pass, then queued"


def test_stopping_fails_a_request_waiting_for_its_turn() -> None:
    """Found in review: stopped while a request waited for the running pass to end, the batcher left
    that request waiting for ever."""

    async def scenario() -> None:
        batcher = started_batcher()
        running, may_end = holding_the_turn(batcher)
        await asyncio.sleep(0.01)
        waiting = asyncio.ensure_future(batcher.predict(BLANK, 1))
        await asyncio.sleep(0.01)
        await batcher.stop()
        with pytest.raises(RuntimeError, match="shutting down"):
            await asyncio.wait_for(waiting, 5)
        may_end.set()
        assert (await running).category == "Bag"

    asyncio.run(scenario())


def test_a_cancelled_request_keeps_the_turn_until_its_work_ends() -> None:
    """Found in review: cancelled (twice, as a cancel scope may), a request's own pass gave the turn
    back while its thread still worked, and the next pass ran beside it."""

    async def scenario() -> None:
        batcher = started_batcher()
        request, may_end = holding_the_turn(batcher)
        await asyncio.sleep(0.01)
        for _ in range(2):
            request.cancel()
            await asyncio.sleep(0.01)
        assert request.cancelled() and batcher.passing.locked(), "the work still holds the turn"
        may_end.set()
        await asyncio.sleep(0.01)
        assert batcher.idle
        await batcher.stop()
        with pytest.raises(RuntimeError, match="shutting down"):
            await batcher.predict(BLANK, 1)

    asyncio.run(scenario())


def test_a_window_without_micro_batching_is_refused() -> None:
    with pytest.raises(ValueError, match="a batching window needs micro-batching on"):
        Settings(micro_batching=False, batch_wait_ms=5)


def test_the_model_input_comes_back_through_the_batcher_too() -> None:
    photo = product_photo(IMAGES[3], seed=3)
    with TestClient(create_app(Settings(batch_wait_ms=5))) as client:
        batched = client.post("/v1/predict?include_input=true", files=upload(photo)).json()
    with TestClient(create_app(Settings(micro_batching=False))) as client:
        alone = client.post("/v1/predict?include_input=true", files=upload(photo)).json()
    assert batched["model_input"].startswith("data:image/png;base64,")
    assert batched["model_input"] == alone["model_input"] and batched["outcome"] == alone["outcome"]


def test_a_failed_pass_fails_only_its_own_requests() -> None:
    calls: list[int] = []

    def predict(images: list[np.ndarray], top_k: int) -> list[Prediction]:
        calls.append(len(images))
        if len(calls) == 1:
            raise RuntimeError("broken batch")
        return bags(images)

    async def scenario() -> None:
        batcher = MicroBatcher(predict, max_wait_s=0.05, max_size=4)
        batcher.start()
        first = await asyncio.gather(*(batcher.predict(BLANK, 1) for _ in range(3)), return_exceptions=True)
        assert all(isinstance(result, RuntimeError) for result in first)
        second = await asyncio.gather(*(batcher.predict(BLANK, 1) for _ in range(6)))
        assert [result.category for result in second] == ["Bag"] * 6
        await batcher.stop()

    asyncio.run(scenario())
    assert calls == [3, 4, 2], "groups of at most max_size, the loop survives a failure"
