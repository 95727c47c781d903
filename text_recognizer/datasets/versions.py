"""Data versions: immutable, content-hashed sets of idx files, each recorded in `data/versions/<name>.dvc`.

DVC stores and moves the bytes (`dvc push/pull`); the record's `meta.data_version` block, committed
with the code, says what the version is: its base, the sha256 of every file and one content hash over
them. Training verifies the bytes it reads against that record, so a changed byte is refused, not
trained on. A version made from an official release (v1) names the release's manifest as its origin
and can always be rebuilt by the downloader, even where no DVC remote is reachable.
"""

import hashlib
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from text_recognizer.datasets.download import download_dir
from text_recognizer.datasets.manifest import Manifest
from text_recognizer.paths import PROJECT_ROOT

VERSIONS_DIR = PROJECT_ROOT / "data" / "versions"
OFFICIAL_VERSION = "v1"  # the official Fashion-MNIST release; the default of configs and loaders
FASHION_MNIST = "fashion_mnist"  # its manifest
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


class DataVersionError(ValueError):
    """A data version is unknown, missing, or its bytes do not match its record."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def content_hash(files: dict[str, str]) -> str:
    """One hash for a set of files: sha256 over sorted `name sha256` lines (names matter, order not)."""
    lines = "".join(f"{name} {files[name]}\n" for name in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise DataVersionError(
            f"data version name {name!r} must be lowercase letters, digits, '.', '_' or '-' (e.g. v2)"
        )
    return name


@dataclass(frozen=True)
class DataVersion:
    name: str
    files: dict[str, str]  # file name -> sha256
    sha256: str  # content_hash(files)
    base: str | None = None
    origin: str | None = None  # manifest of an official release the downloader can rebuild it from
    description: str = ""
    counts: dict[str, int] = field(default_factory=dict)  # images per split
    sources: list[dict[str, Any]] = field(default_factory=list)  # what was added or replaced, from where
    classes: list[str] = field(default_factory=list)  # label names by index; empty: Fashion-MNIST's ten

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.classes) or Manifest.named(FASHION_MNIST).classes

    @property
    def has_shop_photos(self) -> bool:
        """Made with shop photos (here or in a base): validation then includes the photo split."""
        return any(source.get("source") == "shop_photos" for source in self.sources) or (
            self.base is not None and DataVersion.read(self.base).has_shop_photos
        )

    @property
    def short_hash(self) -> str:
        return self.sha256[:12]

    @staticmethod
    def record_path(name: str, versions_dir: Path = VERSIONS_DIR) -> Path:
        return versions_dir / f"{name}.dvc"

    @classmethod
    def read(cls, name: str, versions_dir: Path = VERSIONS_DIR) -> "DataVersion":
        path = cls.record_path(check_name(name), versions_dir)
        if not path.exists() and name == OFFICIAL_VERSION:
            return official_version()
        if not path.exists():
            known = ", ".join(v.name for v in list_versions(versions_dir)) or "none"
            raise DataVersionError(f"unknown data version {name!r} (no {path}); known versions: {known}")
        return cls.from_record(yaml.safe_load(path.read_text()), path)

    @classmethod
    def from_record(cls, record: Any, path: Path) -> "DataVersion":
        try:
            version = cls(**record["meta"]["data_version"])
        except (KeyError, TypeError) as error:
            raise DataVersionError(f"{path} has no valid meta.data_version block ({error})") from None
        if content_hash(version.files) != version.sha256:
            raise DataVersionError(
                f"{path}: the recorded content hash does not match the recorded file hashes (edited record?)"
            )
        return version

    def to_meta(self) -> dict[str, Any]:
        return {"data_version": asdict(self)}

    def problems(self, directory: Path, *, exclusive: bool) -> list[str]:
        """Every difference between the files in `directory` and this record; empty when identical.

        `exclusive`: the directory is the version's own, so files the record does not list are
        problems too (a download directory may hold other files).
        """
        problems = []
        for name, expected in sorted(self.files.items()):
            path = directory / name
            if not path.exists():
                problems.append(f"{name} is missing")
            elif (actual := sha256_file(path)) != expected:
                problems.append(f"{name} changed (sha256 {actual[:12]}, recorded {expected[:12]})")
        if exclusive:
            extra = sorted(p.name for p in directory.iterdir() if p.name not in self.files)
            problems += [f"{name} is not part of the version" for name in extra]
        return problems


def official_version() -> DataVersion:
    """The official release as a version, from its manifest: for an installed package, which has no
    version records (in a checkout `data/versions/v1.dvc` says the same; a test compares them)."""
    files = Manifest.named(FASHION_MNIST).checksums()
    return DataVersion(
        name=OFFICIAL_VERSION,
        files=files,
        sha256=content_hash(files),
        origin=FASHION_MNIST,
        description="Fashion-MNIST official release (Zalando Research): 60,000 train, 10,000 test",
        counts={"train": 60_000, "test": 10_000},
    )


def list_versions(versions_dir: Path = VERSIONS_DIR) -> list[DataVersion]:
    records = sorted(versions_dir.glob("*.dvc")) if versions_dir.is_dir() else []
    return [DataVersion.from_record(yaml.safe_load(p.read_text()), p) for p in records]


def resolve_version(
    name: str,
    *,
    expected_hash: str | None = None,
    mirror: str | None = None,
    raw_dir: Path | None = None,
    versions_dir: Path = VERSIONS_DIR,
) -> tuple[DataVersion, Path]:
    """The version's record and a directory holding exactly its bytes, verified; else DataVersionError.

    Its own directory `data/versions/<name>/` is used when present (from `dvc pull` or `data.sh add`);
    a version with an origin is otherwise fetched by the verifying downloader.
    """
    version = DataVersion.read(name, versions_dir)
    if expected_hash is not None and expected_hash != version.sha256:
        raise DataVersionError(
            f"data.version_hash {expected_hash} does not match data version {name}, whose recorded hash is "
            f"{version.sha256}; fix the config or name the version that hash belongs to"
        )
    directory = versions_dir / name
    exclusive = directory.is_dir()
    if not exclusive:
        if version.origin is None:
            raise DataVersionError(
                f"data version {name} is not present in {directory}; "
                f"fetch it with ./tasks/data.sh pull {name}"
            )
        directory = download_dir(Manifest.named(version.origin), raw_dir, mirror)
    problems = version.problems(directory, exclusive=exclusive)
    if problems:
        raise DataVersionError(
            f"data in {directory} does not match data version {name} ({version.short_hash}): "
            + "; ".join(problems)
        )
    return version, directory
