"""Invariance: the service predicts on a product photo what the model predicts on the original 28x28 image."""

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from support.product_photos import product_photo
from text_recognizer.datasets.fashion_mnist import read_split
from text_recognizer.models import ClassifierModel
from text_recognizer.promoted import promoted_model_path

CASES = 300
BATCH = 50


@pytest.mark.slow
def test_product_photos_get_the_original_images_predictions(full_data_dir: Path) -> None:
    """300 real test images, each upscaled, tinted, framed in white, EXIF-rotated and JPEG-compressed.

    Compares the service's top category (what it says before any "unsure" threshold).
    """
    images = read_split(full_data_dir, "test").images[:CASES].numpy()
    expected = ClassifierModel.load(promoted_model_path()).predict(images).categories
    served = []
    with TestClient(create_app(Settings(max_batch_files=BATCH))) as client:
        for start in range(0, CASES, BATCH):
            files = [
                ("files", (f"{i}.jpg", product_photo(images[i], seed=i), "image/jpeg"))
                for i in range(start, start + BATCH)
            ]
            results = client.post("/v1/predict/batch", files=files).json()["results"]
            served += [result["prediction"]["top_k"][0]["category"] for result in results]
    agreement = sum(a == b for a, b in zip(expected, served, strict=True)) / CASES
    assert agreement >= 0.9, f"only {agreement:.1%} of product photos got the original image's prediction"
