"""The real downloader against local mirrors and a loopback HTTP server: verification and recovery."""

import http.server
import logging
import shutil
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from text_recognizer.datasets.download import Digest, DownloadError, download, folder_lock
from text_recognizer.datasets.manifest import Manifest

from .conftest import FIXTURES_DIR


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    directory = tmp_path / "mirror"
    shutil.copytree(FIXTURES_DIR, directory)
    return directory


def corrupt(path: Path) -> None:
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".part"))


def test_fetches_and_verifies_every_file(fixture_manifest: Manifest, mirror: Path, tmp_path: Path) -> None:
    paths = download(fixture_manifest, tmp_path / "raw", str(mirror))
    assert sorted(paths) == sorted(spec.name for spec in fixture_manifest.files)
    for spec in fixture_manifest.files:
        assert paths[spec.name].read_bytes() == (mirror / spec.name).read_bytes()
        assert paths[spec.name].stat().st_mode & 0o777 == 0o444  # raw data is read-only


def test_accepts_file_url_and_skips_valid_files(
    fixture_manifest: Manifest, mirror: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dest = tmp_path / "raw"
    download(fixture_manifest, dest, mirror.as_uri())
    shutil.rmtree(mirror)  # a second run must not need the source at all
    with caplog.at_level(logging.INFO):
        download(fixture_manifest, dest, mirror.as_uri())
    assert caplog.text.count("already present") == len(fixture_manifest.files)


def test_mirror_from_environment_variable(
    fixture_manifest: Manifest, mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(fixture_manifest.mirror_env, str(mirror))
    assert len(download(fixture_manifest, tmp_path / "raw")) == len(fixture_manifest.files)


def test_corrupt_mirror_copy_is_rejected_and_nothing_partial_is_left(
    fixture_manifest: Manifest, mirror: Path, tmp_path: Path
) -> None:
    spec = fixture_manifest.files[0]
    corrupt(mirror / spec.name)
    dest = tmp_path / "raw"
    with pytest.raises(DownloadError) as error:
        download(fixture_manifest, dest, str(mirror), backoff_seconds=0)
    message = str(error.value)
    assert spec.name in message and spec.sha256 in message
    assert not (dest / spec.name).exists()
    assert leftovers(dest) == []


def test_recovers_from_a_corrupted_or_truncated_local_file(
    fixture_manifest: Manifest, mirror: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dest = tmp_path / "raw"
    download(fixture_manifest, dest, str(mirror))
    first, second = fixture_manifest.files[:2]
    corrupt(dest / first.name)
    (dest / second.name).chmod(0o644)
    (dest / second.name).write_bytes((dest / second.name).read_bytes()[:10])
    (dest / f".{first.name}.stale.part").write_bytes(b"left by a killed download")
    with caplog.at_level(logging.INFO):
        download(fixture_manifest, dest, str(mirror))
    assert f"corrupt  {first.name}: sha256" in caplog.text and first.sha256 in caplog.text
    assert f"{second.name}: size 10 bytes, expected {second.size}" in caplog.text
    for spec in (first, second):
        assert (dest / spec.name).read_bytes() == (mirror / spec.name).read_bytes()
    assert leftovers(dest) == []


def test_missing_mirror_directory_is_a_clear_error(fixture_manifest: Manifest, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=r"mirror directory .*nowhere does not exist"):
        download(fixture_manifest, tmp_path / "raw", str(tmp_path / "nowhere"))


def test_files_already_present_need_no_source(
    fixture_manifest: Manifest, mirror: Path, tmp_path: Path
) -> None:
    """A mirror recorded in an artifact may be gone later: verified files already here still serve."""
    download(fixture_manifest, tmp_path / "raw", str(mirror))
    shutil.rmtree(mirror)
    paths = download(fixture_manifest, tmp_path / "raw", str(mirror))
    assert sorted(paths) == sorted(spec.name for spec in fixture_manifest.files)


def test_a_stream_longer_than_the_manifest_says_is_cut_off(
    fixture_manifest: Manifest, mirror: Path, tmp_path: Path
) -> None:
    spec = fixture_manifest.files[0]
    (mirror / spec.name).chmod(0o644)
    (mirror / spec.name).write_bytes(b"\0" * (spec.size + 5 * 1024 * 1024))  # an endless body, in effect
    with pytest.raises(DownloadError, match=f"more than the expected {spec.size} bytes"):
        download(fixture_manifest, tmp_path / "raw", str(mirror), attempts=1)
    assert leftovers(tmp_path / "raw") == []


def test_a_download_in_progress_elsewhere_is_waited_for_not_deleted(
    fixture_manifest: Manifest, mirror: Path, tmp_path: Path
) -> None:
    """Before: a second process deleted the first one's live .part file. Here the test plays the first
    process: it holds the folder's lock with a part file half written, while a second download starts."""
    raw = tmp_path / "raw"
    raw.mkdir()
    spec = fixture_manifest.files[0]
    live_part = raw / f".{spec.name}.other.part"
    second = threading.Thread(target=download, args=(fixture_manifest, raw, str(mirror)))
    with folder_lock(raw):
        live_part.write_bytes((mirror / spec.name).read_bytes()[:100])
        second.start()
        second.join(timeout=1.0)
        assert second.is_alive() and live_part.exists(), "the second download waits, the part survives"
        live_part.write_bytes((mirror / spec.name).read_bytes())
        live_part.rename(raw / spec.name)  # the first process finishes its file
    second.join(timeout=30)
    assert not second.is_alive() and Digest.of_file(raw / spec.name).mismatch(spec) is None


class FlakyHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a directory, failing the first requests of each file as the test's plan says."""

    plan: dict[str, list[str]]
    requests: list[str]

    def do_GET(self) -> None:
        name = self.path.lstrip("/")
        self.requests.append(name)
        failure = self.plan.get(name, [])
        action = failure.pop(0) if failure else "serve"
        if action == "503":
            self.send_error(503, "busy")
        elif action == "404":
            self.send_error(404, "gone")
        elif action == "truncate":
            body = (Path(self.directory) / name).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 3])
            self.close_connection = True
        else:
            super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def flaky_server(mirror: Path) -> Iterator[tuple[str, type[FlakyHandler]]]:
    handler = type("Handler", (FlakyHandler,), {"plan": {}, "requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(mirror)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", handler
    server.shutdown()
    server.server_close()


def test_retries_transient_failures(
    fixture_manifest: Manifest, flaky_server: tuple[str, type[FlakyHandler]], tmp_path: Path
) -> None:
    url, handler = flaky_server
    first, second = fixture_manifest.files[:2]
    handler.plan = {first.name: ["503", "truncate"], second.name: ["truncate"]}
    paths = download(fixture_manifest, tmp_path / "raw", url, attempts=3, backoff_seconds=0)
    assert handler.requests.count(first.name) == 3
    assert handler.requests.count(second.name) == 2
    assert paths[first.name].stat().st_size == first.size


def test_does_not_retry_a_missing_file_and_names_it(
    fixture_manifest: Manifest, flaky_server: tuple[str, type[FlakyHandler]], tmp_path: Path
) -> None:
    url, handler = flaky_server
    spec = fixture_manifest.files[0]
    handler.plan = {spec.name: ["404"]}
    with pytest.raises(DownloadError, match=f"(?s)could not fetch {spec.name}.*HTTP Error 404"):
        download(fixture_manifest, tmp_path / "raw", url, attempts=3, backoff_seconds=0)
    assert handler.requests.count(spec.name) == 1


# The md5s Zalando Research publishes beside the files (the Fashion-MNIST README's download table): an
# independent source, so an edit of the committed manifest to fit a damaged mirror is caught.
PUBLISHED_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}


def test_official_manifest_has_the_publishers_checksums() -> None:
    manifest = Manifest.named("fashion_mnist")
    assert {spec.name: spec.md5 for spec in manifest.files} == PUBLISHED_MD5
