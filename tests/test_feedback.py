"""POST /v1/feedback: durable storage in SQLite (image, label, prediction, model version), clear 4xx for
malformed or duplicate feedback, and the round trip into a new data version."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from text_recognizer.datasets.fashion_mnist import read_split
from text_recognizer.datasets.feedback import FeedbackStore
from text_recognizer.datasets.idx import read_idx
from text_recognizer.preprocessing import image_bytes_to_input
from training.data_versions import create_version
from training.labelled_images import from_feedback

from .conftest import FIXTURES_DIR
from .support.product_photos import product_photo
from .test_api import assert_error, upload

TEST_IMAGES = read_idx(FIXTURES_DIR / "t10k-images-idx3-ubyte.gz").numpy()
TEST_LABELS = read_idx(FIXTURES_DIR / "t10k-labels-idx1-ubyte.gz").tolist()
TROUSER, BOOT = TEST_LABELS.index(1), TEST_LABELS.index(9)


@pytest.fixture
def feedback_dir(tmp_path: Path) -> Path:
    return tmp_path / "feedback"


@pytest.fixture
def client(feedback_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(feedback_dir=feedback_dir))) as test_client:
        yield test_client


def test_a_correction_and_a_confirmation_are_stored_with_image_prediction_and_model_version(
    client: TestClient, feedback_dir: Path
) -> None:
    trouser = product_photo(TEST_IMAGES[TROUSER], seed=1)
    response = client.post("/v1/feedback", files=upload(trouser), data={"category": "bag"})
    assert response.status_code == 201, response.text
    corrected = response.json()
    assert corrected["category"] == "Bag" and corrected["predicted_category"] == "Trouser"
    assert corrected["confirmed"] is False and corrected["predicted_confidence"] > 0.9
    version = client.get("/health/ready").json()["model_version"]
    assert corrected["model_version"] == version
    boot = product_photo(TEST_IMAGES[BOOT], seed=2, image_format="PNG")
    confirmed = client.post("/v1/feedback", files=upload(boot), data={"confirm": "true"}).json()
    assert confirmed["category"] == confirmed["predicted_category"] == "Ankle boot" and confirmed["confirmed"]

    first, second = FeedbackStore.at(feedback_dir).all()  # a fresh connection: the rows are committed
    assert (first.id, first.label, first.category) == (corrected["id"], 8, "Bag")
    assert first.predicted_category == "Trouser" and not first.confirmed
    assert first.image_path.read_bytes() == trouser and first.image_path.suffix == ".jpg"
    assert second.image_path.suffix == ".png" and second.model_version == version and second.request_id
    assert 'feedback_total{confirmed="false"} 1.0' in client.get("/metrics").text


def test_malformed_and_duplicate_feedback_get_clear_4xx(client: TestClient) -> None:
    photo = product_photo(TEST_IMAGES[0], seed=3)
    assert_error(client.post("/v1/feedback", files=upload(photo)), 422, "validation_error")
    both = client.post("/v1/feedback", files=upload(photo), data={"category": "Bag", "confirm": "true"})
    assert_error(both, 422, "validation_error")
    unknown = client.post("/v1/feedback", files=upload(photo), data={"category": "hat"})
    assert_error(unknown, 422, "unknown_category")
    assert "ankle-boot" in unknown.json()["error"]["message"]
    assert_error(client.post("/v1/feedback", data={"category": "Bag"}), 422, "missing_file")
    not_image = client.post("/v1/feedback", files=upload(b"plain text"), data={"category": "Bag"})
    assert_error(not_image, 400, "invalid_image")
    for digit in ("²", "①", "٣", "𝟑", "３"):  # noqa: RUF001 - digits to str.isdigit(), not class indexes
        odd = client.post("/v1/feedback", files=upload(photo), data={"category": digit})
        assert_error(odd, 422, "unknown_category")
    assert client.post("/v1/feedback", files=upload(photo), data={"category": "9"}).status_code == 201
    again = client.post("/v1/feedback", files=upload(photo), data={"category": "Sandal"})
    assert_error(again, 409, "duplicate_feedback")
    assert "already has feedback (id 1)" in again.json()["error"]["message"]


def test_unusable_storage_is_a_503_and_the_service_keeps_predicting(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the feedback folder should be")
    with TestClient(create_app(Settings(feedback_dir=blocker))) as client:
        photo = product_photo(TEST_IMAGES[0], seed=4)
        response = client.post("/v1/feedback", files=upload(photo), data={"confirm": "true"})
        assert_error(response, 503, "feedback_unavailable")
        assert client.post("/v1/predict", files=upload(photo)).status_code == 200


def test_feedback_becomes_a_new_data_version(client: TestClient, feedback_dir: Path, dvc_repo: Path) -> None:
    photos = [product_photo(TEST_IMAGES[TROUSER], seed=5), product_photo(TEST_IMAGES[BOOT], seed=6)]
    client.post("/v1/feedback", files=upload(photos[0]), data={"category": "Trouser"})
    client.post("/v1/feedback", files=upload(photos[1]), data={"category": "sandal"})
    images = from_feedback(FeedbackStore.at(feedback_dir))
    version = create_version(
        "v2", base="v1", images=images, description="feedback", root=dvc_repo, push=False
    )
    assert version.counts["train"] == 60002
    assert [source["source"] for source in version.sources] == ["feedback:1", "feedback:2"]
    train = read_split(dvc_repo / "data" / "versions" / "v2", "train")
    assert train.labels[-2:].tolist() == [1, 5]
    assert torch.equal(train.images[-1], torch.from_numpy(image_bytes_to_input(photos[1])))
