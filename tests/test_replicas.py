"""Two API replicas (two server processes on two ports) with one PostgreSQL feedback store and one image
folder, as the README's scaling section deploys them; then `data.sh add --feedback` reads that store."""

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx2 as httpx
import pytest
import yaml

from api.feedback_store import FeedbackStore
from curation.review_feedback import main as review_main
from support.local_server import LiveServer
from support.product_photos import product_photo
from text_recognizer.datasets.idx import read_idx

from .conftest import FIXTURES_DIR
from .support.postgres import PostgresCluster

TEST_IMAGES = read_idx(FIXTURES_DIR / "t10k-images-idx3-ubyte.gz").numpy()
DISTINCT, SHARED = 24, 8


async def send_feedback(replicas: list[LiveServer]) -> tuple[list[int], list[tuple[int, int]]]:
    """Distinct photos spread over both replicas, and each shared photo sent to both at the same moment,
    all at once. Returns the distinct photos' statuses, and each shared photo's pair of statuses."""
    distinct = [product_photo(TEST_IMAGES[i], seed=2000 + i) for i in range(DISTINCT)]
    shared = [product_photo(TEST_IMAGES[i], seed=3000 + i) for i in range(SHARED)]
    async with httpx.AsyncClient(timeout=60) as client:

        def post(replica: LiveServer, photo: bytes) -> object:
            files = {"file": ("p.jpg", photo)}
            return client.post(replica.url + "/v1/feedback", files=files, data={"confirm": "true"})

        requests = [post(replicas[i % 2], photo) for i, photo in enumerate(distinct)]
        requests += [post(replica, photo) for photo in shared for replica in replicas]
        responses = await asyncio.gather(*requests)  # type: ignore[call-overload]
    statuses = [response.status_code for response in responses]
    pairs = statuses[DISTINCT:]
    return statuses[:DISTINCT], [(pairs[i], pairs[i + 1]) for i in range(0, len(pairs), 2)]


@pytest.mark.slow
@pytest.mark.usefixtures("serving_fixture_model")
def test_two_replicas_share_one_postgresql_store_and_data_sh_builds_a_version_from_it(
    postgres: PostgresCluster, tmp_path: Path, pipeline_copy: Path, full_data_dir: Path
) -> None:
    url = postgres.create_database("replicas")
    images = tmp_path / "feedback"
    env = {"APPAREL_FEEDBACK_DIR": str(images), "APPAREL_FEEDBACK_DB_URL": url}
    env["APPAREL_FEEDBACK_PER_MINUTE"] = "0"  # every request comes from one address
    replicas: list[LiveServer] = []
    try:
        for i in range(2):  # inside the try: the first is stopped if the second fails to start
            replicas.append(LiveServer.start(tmp_path / f"replica-{i}.log", env=env))
        distinct, shared = asyncio.run(send_feedback(replicas))
    finally:
        for replica in replicas:
            replica.stop()
    logs = "".join(replica.log_path.read_text() for replica in replicas)
    assert distinct == [201] * DISTINCT, logs
    assert [sorted(pair) for pair in shared] == [[201, 409]] * SHARED, "each shared photo stored once"
    assert " 500 " not in logs and "Traceback" not in logs

    records = FeedbackStore.at(images, url).all()
    assert len(records) == len({r.image_sha256 for r in records}) == DISTINCT + SHARED, "nothing lost"
    assert all(record.image_path.is_file() for record in records)
    assert review_main(["--feedback", str(images), "--feedback-db", url, "accept", "--confirmed"]) == 0

    add = [
        sys.executable,
        "-m",
        "curation.data_versions",
        "add",
        "v9",
        "--from",
        "v1",
        "--feedback",
        str(images),
    ]
    data_sh = {**os.environ, "APPAREL_FEEDBACK_DB_URL": url, "FASHION_MNIST_MIRROR": str(full_data_dir)}
    result = subprocess.run(
        [*add, "--no-push"], cwd=pipeline_copy, env=data_sh, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    version = yaml.safe_load((pipeline_copy / "data" / "versions" / "v9.dvc").read_text())["meta"][
        "data_version"
    ]
    assert version["base"] == "v1" and version["counts"]["train"] == 60_000 + DISTINCT + SHARED
    added = {source["source"]: source["label"] for source in version["sources"]}
    assert added == {f"feedback:{record.id}": record.label for record in records}
