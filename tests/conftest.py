"""Shared fixtures: the real Fashion-MNIST files (via the real downloader) and the committed subsets."""

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from curation.data_versions import pull_version
from text_recognizer.datasets.download import download_dir
from text_recognizer.datasets.manifest import FileSpec, Manifest
from text_recognizer.datasets.versions import VERSIONS_DIR
from text_recognizer.models import ClassifierModel
from text_recognizer.promoted import promoted_model_path

from .support.fixture_model import FASHION_MNIST_FIXTURES, train_fixture_model
from .support.postgres import PostgresCluster, binaries

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES_DIR = FASHION_MNIST_FIXTURES
DVC = str(Path(sys.executable).parent / "dvc")

# One thread: results do not depend on how busy the shared machine is, and small CPU kernels run fastest.
torch.set_num_threads(1)


DATA_FIXTURES = {"full_data_dir", "shipped_data_version"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use the full dataset are marked `data`, so `-m "not slow and not data"` is the quick
    loop of a fresh clone with no dataset and no network."""
    for item in items:
        if DATA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.data)


@pytest.fixture(scope="session", autouse=True)
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Runs started by tests (in-process or as subprocesses) track into a throwaway MLflow store."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    yield uri
    if previous is None:
        del os.environ["MLFLOW_TRACKING_URI"]
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous


@pytest.fixture(scope="session")
def fixture_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model trained on the committed fixtures (see tests/support/fixture_model.py)."""
    return train_fixture_model(tmp_path_factory.mktemp("fixture-model"))


@pytest.fixture(scope="module")
def serving_fixture_model(fixture_model: Path) -> Iterator[Path]:
    """Servers started by the module (in-process or as processes) serve the fixture model, not the
    shipped one: `pytestmark = pytest.mark.usefixtures("serving_fixture_model")`."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("APPAREL_MODEL_PATH", str(fixture_model))
        yield fixture_model


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster for the session (tests/support/postgres.py). CI installs the
    server when missing (.ci/run); elsewhere a machine without it skips these tests."""
    if binaries() is None and not os.environ.get("CI"):
        pytest.skip("no PostgreSQL server (apt-get install postgresql, or set PG_BIN)")
    cluster = PostgresCluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def feedback_db(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """The feedback store's database, each in turn: SQLite in the feedback folder (the default), and a
    fresh database in the session's PostgreSQL cluster, given as deployed, through APPAREL_FEEDBACK_DB_URL
    (read by the server, the review tool and data.sh). Returns the URL; None for SQLite."""
    if request.param == "sqlite":
        monkeypatch.delenv("APPAREL_FEEDBACK_DB_URL", raising=False)
        return None
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    url = cluster.create_database(f"feedback_{len(cluster.databases)}")
    monkeypatch.setenv("APPAREL_FEEDBACK_DB_URL", url)
    return url


@pytest.fixture(scope="session")
def full_data_dir() -> Path:
    """The four official files, verified; fetched once from FASHION_MNIST_MIRROR or the official URLs."""
    return download_dir(Manifest.named("fashion_mnist"))


@pytest.fixture(scope="session")
def shipped_data_version(full_data_dir: Path) -> str:
    """The data version the shipped model was trained on, present and verified (a clean clone rebuilds
    it from Fashion-MNIST and the shop photo export): its validation split is rebuilt from it."""
    name = str(ClassifierModel.load(promoted_model_path()).metadata["config"]["data"]["version"])
    pull_version(name)  # test processes (xdist) take turns: it holds a lock on the versions folder
    return name


def spec_for(path: Path) -> FileSpec:
    data = path.read_bytes()
    return FileSpec(
        name=path.name,
        url=f"unused://{path.name}",
        size=len(data),
        md5=hashlib.md5(data).hexdigest(),
        sha256=hashlib.sha256(data).hexdigest(),
    )


@pytest.fixture
def fixture_manifest() -> Manifest:
    """A manifest describing the committed fixture files, for exercising the downloader on small files."""
    files = tuple(spec_for(path) for path in sorted(FIXTURES_DIR.glob("*.gz")))
    return Manifest(
        name="fixture",
        description="committed Fashion-MNIST subset",
        mirror_env="TEXT_RECOGNIZER_TEST_UNSET_MIRROR",
        mirrors=(),
        classes=Manifest.named("fashion_mnist").classes,
        files=files,
    )


@pytest.fixture
def dvc_repo(tmp_path: Path, full_data_dir: Path) -> Path:
    """A git + DVC repository with a local default remote and the committed v1 record."""
    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    for command in (["init", "-q"], ["remote", "add", "-d", "local", str(tmp_path / "storage")]):
        subprocess.run([DVC, *command], cwd=root, check=True, capture_output=True)
    (root / "data" / "versions").mkdir(parents=True)
    shutil.copy(VERSIONS_DIR / "v1.dvc", root / "data" / "versions" / "v1.dvc")
    return root


@pytest.fixture
def pipeline_copy(tmp_path: Path) -> Iterator[Path]:
    """The project's tracked files in a fresh git repository, training the smoke config."""
    root = tmp_path / "project"
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO_ROOT,
                            capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    for name in listed:
        if name.split("/")[0] not in {"tests", "notebooks", "benchmarks"} and (REPO_ROOT / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO_ROOT / name, root / name)
    params = root / "params.yaml"
    params.write_text(params.read_text().replace("configs/default.yaml", "configs/smoke.yaml"))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    yield root
