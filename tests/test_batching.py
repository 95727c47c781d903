"""Micro-batching: concurrent requests share forward passes, each gets its own (identical) answer."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.batching import MicroBatcher
from api.predictor import Prediction
from api.settings import Settings
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


def test_concurrent_requests_are_batched_and_answered_as_if_alone() -> None:
    """A 10 s window that 8 requests fill at once: 24 requests make exactly 3 passes however slowly the
    machine runs (a 50 ms window made the count depend on timing)."""
    photos = [product_photo(IMAGES[i], seed=i) for i in range(REQUESTS)]
    with TestClient(create_app(Settings())) as client:
        alone = post_all(client, photos)
    with TestClient(create_app(Settings(batch_wait_ms=10_000, batch_max_size=8))) as client:
        batched = post_all(client, photos)
        metrics = client.get("/metrics").text
    for one, other in zip(alone, batched, strict=True):
        assert one["category"] == other["category"] and len(one["top_k"]) == len(other["top_k"])  # type: ignore[arg-type]
        assert other["confidence"] == pytest.approx(one["confidence"], abs=1e-5)
    count = float(
        next(
            line.split()[1] for line in metrics.splitlines() if line.startswith("prediction_batch_size_count")
        )
    )
    total = float(
        next(line.split()[1] for line in metrics.splitlines() if line.startswith("prediction_batch_size_sum"))
    )
    assert (total, count) == (REQUESTS, REQUESTS / 8), "full passes of 8"


def test_the_model_input_comes_back_through_the_batcher_too() -> None:
    photo = product_photo(IMAGES[3], seed=3)
    with TestClient(create_app(Settings(batch_wait_ms=5))) as client:
        batched = client.post("/v1/predict?include_input=true", files=upload(photo)).json()
    with TestClient(create_app(Settings())) as client:
        alone = client.post("/v1/predict?include_input=true", files=upload(photo)).json()
    assert batched["model_input"].startswith("data:image/png;base64,")
    assert batched["model_input"] == alone["model_input"] and batched["outcome"] == alone["outcome"]


def test_a_failed_pass_fails_only_its_own_requests() -> None:
    calls: list[int] = []

    def predict(images: list[np.ndarray], top_k: int) -> list[Prediction]:
        calls.append(len(images))
        if len(calls) == 1:
            raise RuntimeError("broken batch")
        return [
            Prediction(
                category="Bag", outcome="class", class_id=8, confidence=0.9, top_k=[], model_version="x"
            )
            for _ in images
        ]

    async def scenario() -> None:
        batcher = MicroBatcher(predict, max_wait_s=0.05, max_size=4)
        batcher.start()
        image = np.zeros((28, 28), dtype=np.uint8)
        first = await asyncio.gather(*(batcher.predict(image, 1) for _ in range(3)), return_exceptions=True)
        assert all(isinstance(result, RuntimeError) for result in first)
        second = await asyncio.gather(*(batcher.predict(image, 1) for _ in range(6)))
        assert [result.category for result in second] == ["Bag"] * 6
        await batcher.stop()

    asyncio.run(scenario())
    assert calls == [3, 4, 2], "groups of at most max_size, the loop survives a failure"
