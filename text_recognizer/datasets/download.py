"""Fetch the files of a dataset manifest, verified, with retries, never leaving a partial file.

Sources, in order: the mirror given by flag or by the manifest's environment variable (a directory, a
`file://` URL or an http(s) base URL) or else each file's official URL followed by the manifest's mirrors.
A file already present and valid is skipped before any source is looked at (a recorded mirror that is
gone breaks nothing that is already here); a corrupt or truncated one is reported and fetched again.
Processes sharing a folder (two runs on a fresh machine, DDP nodes) take turns on it.
"""

import argparse
import functools
import hashlib
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path

from text_recognizer.atomic import atomic_path, folder_lock, remove_stale_parts
from text_recognizer.datasets.manifest import FileSpec, Manifest
from text_recognizer.paths import raw_data_dir
from text_recognizer.progress import progress

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
TIMEOUT_SECONDS = 60.0


class DownloadError(RuntimeError):
    """A file could not be obtained with the expected content from any source."""


class ChecksumError(DownloadError):
    """Fetched bytes differ from the manifest (corrupt mirror copy or a transfer cut short)."""


@dataclass(frozen=True)
class Digest:
    size: int
    md5: str
    sha256: str

    @classmethod
    def of_file(cls, path: Path) -> "Digest":
        md5, sha256, size = hashlib.md5(), hashlib.sha256(), 0
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK_BYTES):
                md5.update(chunk)
                sha256.update(chunk)
                size += len(chunk)
        return cls(size, md5.hexdigest(), sha256.hexdigest())

    def mismatch(self, spec: FileSpec) -> str | None:
        """Why this content is not the file the manifest describes, or None when it is."""
        if self.size != spec.size:
            return f"{spec.name}: size {self.size} bytes, expected {spec.size} (truncated or wrong file)"
        if self.md5 != spec.md5 or self.sha256 != spec.sha256:
            return f"{spec.name}: sha256 {self.sha256}, expected sha256 {spec.sha256} (md5 {spec.md5})"
        return None


def source_urls(spec: FileSpec, manifest: Manifest, mirror: str | None) -> list[str]:
    """Where to fetch `spec` from: the explicit mirror only, or the official URL and then the mirrors."""
    mirror = mirror or os.environ.get(manifest.mirror_env) or None
    if mirror:
        return [join_url(as_url(mirror), spec.name)]
    urls = [spec.url] if spec.url else []
    return urls + [join_url(base, spec.name) for base in manifest.mirrors]


def as_url(location: str) -> str:
    """A mirror given as a plain directory becomes a `file://` URL; URLs pass through."""
    if "://" in location:
        return location
    directory = Path(location).expanduser().resolve()
    if not directory.is_dir():
        raise DownloadError(f"mirror directory {directory} does not exist")
    return directory.as_uri()


def join_url(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name


def is_transient(error: BaseException) -> bool:
    """Worth retrying the same source: timeouts, dropped connections, 5xx and 429, bad content."""
    if isinstance(error, urllib.error.HTTPError):
        return error.code >= 500 or error.code == 429
    if isinstance(error, urllib.error.URLError):
        return not isinstance(error.reason, FileNotFoundError | PermissionError | IsADirectoryError)
    return isinstance(error, TimeoutError | ConnectionError | HTTPException | ChecksumError)


def fetch_verified(url: str, spec: FileSpec, target: Path) -> None:
    """Stream `url` into a temporary file and move it onto `target` only if it matches `spec`; a stream
    longer than the manifest's size is cut off there."""
    with atomic_path(target) as tmp_path:
        received = 0
        bar = progress(desc=spec.name, total=spec.size, unit="B", unit_scale=True, unit_divisor=1024)
        with (
            urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response,
            tmp_path.open("wb") as out,
            bar,
        ):
            while chunk := response.read(CHUNK_BYTES):
                received += len(chunk)
                if received > spec.size:
                    raise ChecksumError(f"{spec.name}: more than the expected {spec.size} bytes, from {url}")
                out.write(chunk)
                bar.update(len(chunk))
        problem = Digest.of_file(tmp_path).mismatch(spec)
        if problem:
            raise ChecksumError(f"{problem}, from {url}")
        tmp_path.chmod(0o444)  # raw data is immutable


def ensure_file(
    spec: FileSpec,
    sources: Callable[[], list[str]],
    dest_dir: Path,
    *,
    attempts: int = 3,
    backoff_seconds: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
    no_source_hint: str = "",
) -> Path:
    """Return the verified path of `spec` in `dest_dir`, fetching it from `sources()` (asked only then)
    if it is missing or corrupt."""
    target = dest_dir / spec.name
    with folder_lock(dest_dir):
        remove_stale_parts(target)  # safe under the lock: no other process is writing one
        if target.exists():
            problem = Digest.of_file(target).mismatch(spec)
            if problem is None:
                logger.info("ok       %s (already present, checksums match)", spec.name)
                return target
            logger.warning("corrupt  %s; fetching it again", problem)
        return fetch_from_sources(spec, sources(), target, attempts, backoff_seconds, sleep, no_source_hint)


def fetch_from_sources(
    spec: FileSpec,
    urls: list[str],
    target: Path,
    attempts: int,
    backoff_seconds: float,
    sleep: Callable[[float], None],
    no_source_hint: str,
) -> Path:
    dest_dir = target.parent
    if not urls:
        raise DownloadError(f"{spec.name} is not in {dest_dir} and has no public URL: {no_source_hint}")
    failures: list[str] = []
    for url in urls:
        for attempt in range(1, attempts + 1):
            try:
                fetch_verified(url, spec, target)
            except (OSError, HTTPException, DownloadError) as error:
                failures.append(f"{url} (attempt {attempt}): {error}")
                logger.warning("failed   %s", failures[-1])
                if not is_transient(error) or attempt == attempts:
                    break
                sleep(backoff_seconds * 2 ** (attempt - 1))
            else:
                logger.info("fetched  %s from %s (%d bytes, sha256 ok)", spec.name, url, spec.size)
                return target
    raise DownloadError(
        f"could not fetch {spec.name} with sha256 {spec.sha256}; tried:\n  " + "\n  ".join(failures)
    )


def download(
    manifest: Manifest,
    dest_dir: Path | None = None,
    mirror: str | None = None,
    *,
    attempts: int = 3,
    backoff_seconds: float = 1.0,
) -> dict[str, Path]:
    """Make every file of `manifest` present and verified in `dest_dir` (default `data/raw/<name>`)."""
    dest_dir = dest_dir or raw_data_dir() / manifest.name
    dest_dir.mkdir(parents=True, exist_ok=True)
    return {
        spec.name: ensure_file(
            spec,
            functools.partial(source_urls, spec, manifest, mirror),
            dest_dir,
            attempts=attempts,
            backoff_seconds=backoff_seconds,
            no_source_hint=f"set {manifest.mirror_env} or pass --mirror (a directory, file:// or URL)",
        )
        for spec in manifest.files
    }


def download_dir(manifest: Manifest, dest_dir: Path | None = None, mirror: str | None = None) -> Path:
    """`download`, returning the one directory that now holds every verified file."""
    return next(iter(download(manifest, dest_dir, mirror).values())).parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dataset",
        default="fashion_mnist",
        help="fashion_mnist or shop_photos (a manifest in text_recognizer/datasets/manifests/)",
    )
    parser.add_argument("--mirror", help="directory, file:// or http(s) URL holding the files")
    parser.add_argument("--dest", type=Path, help="target directory (default data/raw/<dataset>)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    manifest = Manifest.named(args.dataset)
    try:
        directory = download_dir(manifest, args.dest, args.mirror)
    except DownloadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{manifest.name}: {len(manifest.files)} files verified in {directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
