"""POST /v1/feedback: durable storage in SQLite and PostgreSQL (image, label, prediction, model version),
clear 4xx for malformed or duplicate feedback, and the round trip into a new data version."""

import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from api.errors import ApiError
from api.feedback_schema import DB_URL_ENV
from api.feedback_store import FeedbackStore, pixels_sha256
from api.limits import RateLimit
from api.settings import Settings
from curation.data_versions import create_version
from curation.labelled_images import from_feedback
from curation.review_feedback import main as review_main
from support.product_photos import product_photo
from text_recognizer.datasets.fashion_mnist import read_split
from text_recognizer.datasets.idx import read_idx
from text_recognizer.labels import LabelError
from text_recognizer.preprocessing import image_bytes_to_input

from .conftest import FIXTURES_DIR
from .test_api import assert_error, upload

# The fixture model, not the shipped one; every test against SQLite and PostgreSQL (conftest.feedback_db).
pytestmark = pytest.mark.usefixtures("serving_fixture_model", "feedback_db")

TEST_IMAGES = read_idx(FIXTURES_DIR / "t10k-images-idx3-ubyte.gz").numpy()
TEST_LABELS = read_idx(FIXTURES_DIR / "t10k-labels-idx1-ubyte.gz").tolist()
TROUSER, BOOT = TEST_LABELS.index(1), TEST_LABELS.index(9)


def store_at(feedback_dir: Path) -> FeedbackStore:
    """The store as the tools open it: the database from APPAREL_FEEDBACK_DB_URL, else SQLite there."""
    return FeedbackStore.at(feedback_dir, os.environ.get(DB_URL_ENV))


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

    first, second = store_at(feedback_dir).all()  # a fresh connection: the rows are committed
    assert (first.id, first.label, first.category) == (corrected["id"], 8, "Bag")
    assert first.predicted_category == "Trouser" and not first.confirmed
    # What is kept is the image the model worked from, converting to exactly the same 28x28 input.
    assert np.array_equal(image_bytes_to_input(first.image_path.read_bytes()), image_bytes_to_input(trouser))
    assert first.image_path.suffix == ".png" and second.model_version == version and second.request_id
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
    again = client.post("/v1/feedback", files=upload(photo), data={"category": "ankle-boot"})
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
    client.post("/v1/feedback", files=upload(photos[0]), data={"category": "Trouser"})  # a confirmation
    client.post("/v1/feedback", files=upload(photos[1]), data={"category": "sandal"})  # a correction
    with pytest.raises(LabelError, match="no accepted feedback"):
        from_feedback(store_at(feedback_dir))  # before: the confirmation was used unreviewed
    assert review_main(["--feedback", str(feedback_dir), "accept", "--confirmed"]) == 0
    assert [image.source for image in from_feedback(store_at(feedback_dir))] == ["feedback:1"]
    assert review_main(["--feedback", str(feedback_dir), "accept", "2"]) == 0  # the correction, reviewed
    images = from_feedback(store_at(feedback_dir))
    version = create_version(
        "v2", base="v1", images=images, description="feedback", root=dvc_repo, push=False
    )
    assert version.counts["train"] == 60002
    assert [source["source"] for source in version.sources] == ["feedback:1", "feedback:2"]
    train = read_split(dvc_repo / "data" / "versions" / "v2", "train")
    assert train.labels[-2:].tolist() == [1, 5]
    assert torch.equal(train.images[-1], torch.from_numpy(image_bytes_to_input(photos[1])))


def test_stored_images_keep_no_metadata_and_nothing_after_the_pixels(
    client: TestClient, feedback_dir: Path
) -> None:
    """Before, uploads were kept byte for byte: EXIF GPS stayed, and a PNG+ZIP polyglot kept its payload."""
    exif = Image.Exif()
    exif[0x8825] = {2: (52.0, 31.0, 0.0)}  # GPS latitude
    buffer = io.BytesIO()
    Image.fromarray(255 - TEST_IMAGES[BOOT]).resize((600, 600)).convert("RGB").save(buffer, "JPEG", exif=exif)
    polyglot = buffer.getvalue() + b"PK\x03\x04" + b"payload" * 100
    receipt = client.post("/v1/feedback", files=upload(polyglot), data={"confirm": "true"}).json()
    (record,) = store_at(feedback_dir).all()
    stored = record.image_path.read_bytes()
    assert b"PK\x03\x04" not in stored and b"payload" not in stored and receipt["id"] == record.id
    with Image.open(io.BytesIO(stored)) as image:
        assert image.format == "PNG" and "exif" not in image.info and max(image.size) <= 112
    assert record.image_sha256 == pixels_sha256(stored)  # named by the pixels kept


def test_the_same_picture_as_other_bytes_is_the_same_image(client: TestClient) -> None:
    """Found in review: images were told apart by the upload's bytes, so one appended byte gave the
    same picture a second row (and a second label)."""
    photo = product_photo(TEST_IMAGES[BOOT], seed=9)
    assert client.post("/v1/feedback", files=upload(photo), data={"confirm": "true"}).status_code == 201
    again = client.post("/v1/feedback", files=upload(photo + b"\0"), data={"confirm": "true"})
    assert_error(again, 409, "duplicate_feedback")


def test_feedback_can_require_a_key(feedback_dir: Path) -> None:
    photo = upload(product_photo(TEST_IMAGES[0], seed=7))
    with TestClient(create_app(Settings(feedback_dir=feedback_dir, feedback_api_key="s3cret"))) as client:
        for headers in ({}, {"X-API-Key": "guess"}):
            response = client.post("/v1/feedback", files=photo, data={"confirm": "true"}, headers=headers)
            assert_error(response, 401, "unauthorized")
        # Refused before the body is read (found in review: this was a 422 for the missing file).
        assert_error(client.post("/v1/feedback", data={"confirm": "true"}), 401, "unauthorized")
        keyed = {"X-API-Key": "s3cret"}
        response = client.post("/v1/feedback", files=photo, data={"confirm": "true"}, headers=keyed)
        assert response.status_code == 201
        assert client.post("/v1/predict", files=photo).status_code == 200  # predictions need no key


def test_one_client_is_rate_limited_and_the_storage_has_a_quota(feedback_dir: Path) -> None:
    photos = [upload(product_photo(TEST_IMAGES[i], seed=i)) for i in range(3)]
    with TestClient(create_app(Settings(feedback_dir=feedback_dir, feedback_per_minute=2))) as client:
        responses = [client.post("/v1/feedback", files=p, data={"confirm": "true"}) for p in photos]
    assert [response.status_code for response in responses] == [201, 201, 429]
    limited = responses[2]
    assert_error(limited, 429, "rate_limited")
    assert int(limited.headers["Retry-After"]) == 30
    with TestClient(create_app(Settings(feedback_dir=feedback_dir, feedback_max_bytes=1))) as client:
        full = client.post("/v1/feedback", files=photos[2], data={"confirm": "true"})
    assert_error(full, 507, "storage_full")
    assert len(store_at(feedback_dir).all()) == 2


def test_the_rate_limit_refills_evenly_per_client() -> None:
    now = [0.0]
    limit = RateLimit(per_minute=6, clock=lambda: now[0])
    for _ in range(6):
        limit.take("a")
    with pytest.raises(ApiError, match="retry in 10 s"):
        limit.take("a")
    limit.take("b")  # another client has its own bucket
    now[0] = 10.0
    limit.take("a")  # one token back after 60/6 seconds
    with pytest.raises(ApiError):
        limit.take("a")


def test_conflicting_labels_are_kept_for_review_not_dropped(client: TestClient, feedback_dir: Path) -> None:
    """Before, the first label won and a different one for the same image was lost."""
    photo = upload(product_photo(TEST_IMAGES[BOOT], seed=8))
    assert client.post("/v1/feedback", files=photo, data={"confirm": "true"}).status_code == 201
    conflicting = client.post("/v1/feedback", files=photo, data={"category": "Sandal"})
    assert_error(conflicting, 409, "conflicting_feedback")
    message = conflicting.json()["error"]["message"]
    assert "saying 'Ankle boot'; your 'Sandal' is recorded as a conflict" in message
    # Found in review: each repeat was stored, without bound; now once per label (409 duplicate after).
    repeated = client.post("/v1/feedback", files=photo, data={"category": "Sandal"})
    assert_error(repeated, 409, "duplicate_feedback")
    store = store_at(feedback_dir)
    assert [c.category for c in store.conflicts()[1]] == ["Sandal"]
    assert store.training_rows().conflicted == [1]
    assert review_main(["--feedback", str(feedback_dir), "accept", "--confirmed"]) == 0
    with pytest.raises(LabelError, match="no accepted feedback"):
        from_feedback(store)  # a confirmed image with a conflict waits for its own review
    assert review_main(["--feedback", str(feedback_dir), "accept", "1", "--category", "sandal"]) == 0
    (image,) = from_feedback(store_at(feedback_dir))
    assert image.label == 5 and image.source == "feedback:1"
    # Found in review: a conflict arriving after the review left the reviewed label in use.
    later = client.post("/v1/feedback", files=photo, data={"category": "Sneaker"})
    assert_error(later, 409, "conflicting_feedback")
    assert store_at(feedback_dir).training_rows().conflicted == [1]
    # Found in review: new labels were compared with the sender's label, not the reviewer's.
    assert review_main(["--feedback", str(feedback_dir), "accept", "1", "--category", "coat"]) == 0
    assert_error(
        client.post("/v1/feedback", files=photo, data={"category": "Coat"}), 409, "duplicate_feedback"
    )
    assert store_at(feedback_dir).training_rows().conflicted == []
    sender_again = client.post("/v1/feedback", files=photo, data={"confirm": "true"})  # Ankle boot
    assert_error(sender_again, 409, "conflicting_feedback")
    assert store_at(feedback_dir).training_rows().conflicted == [1]
    assert review_main(["--feedback", str(feedback_dir), "reject", "1"]) == 0
    assert store_at(feedback_dir).training_rows().rejected == [1]
    assert review_main(["--feedback", str(feedback_dir), "reject", "99"]) == 2


def test_a_decision_records_the_conflicts_its_listing_showed_and_is_all_or_nothing(
    client: TestClient, feedback_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found in review: a conflict arriving between `list` and `accept` counted as seen; `accept 1 99`
    wrote row 1 and then failed."""
    photo = upload(product_photo(TEST_IMAGES[BOOT], seed=10))
    assert client.post("/v1/feedback", files=photo, data={"confirm": "true"}).status_code == 201
    client.post("/v1/feedback", files=photo, data={"category": "Sandal"})
    review = ["--feedback", str(feedback_dir)]
    assert review_main([*review, "list"]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("1@1 ")  # row 1, newest conflict 1
    client.post("/v1/feedback", files=photo, data={"category": "Sneaker"})  # conflict 2, not yet seen
    assert review_main([*review, "accept", "1@1", "--category", "sandal"]) == 0
    assert store_at(feedback_dir).training_rows().conflicted == [1]
    assert review_main([*review, "accept", "1", "99"]) == 2
    assert "no feedback with id 99" in capsys.readouterr().err
    assert store_at(feedback_dir).training_rows().conflicted == [1], "row 1 was not accepted"
