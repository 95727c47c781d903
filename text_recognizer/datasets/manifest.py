"""A dataset manifest: where each file comes from and the size and checksums it must have."""

import tomllib
from dataclasses import dataclass
from pathlib import Path

from text_recognizer.paths import MANIFESTS_DIR


@dataclass(frozen=True)
class FileSpec:
    name: str
    size: int
    md5: str
    sha256: str
    url: str | None = None  # None: no public URL, the file comes from a mirror only


@dataclass(frozen=True)
class Manifest:
    name: str
    description: str
    mirror_env: str
    mirrors: tuple[str, ...]
    classes: tuple[str, ...]
    files: tuple[FileSpec, ...]

    @classmethod
    def load(cls, path: Path) -> "Manifest":
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
        return cls(
            name=raw["name"],
            description=raw["description"],
            mirror_env=raw["mirror_env"],
            mirrors=tuple(raw.get("mirrors", ())),
            classes=tuple(raw.get("classes", ())),
            files=tuple(FileSpec(**spec) for spec in raw["files"]),
        )

    @classmethod
    def named(cls, name: str) -> "Manifest":
        """The committed manifest `text_recognizer/datasets/manifests/<name>.toml`."""
        return cls.load(MANIFESTS_DIR / f"{name}.toml")

    def checksums(self) -> dict[str, str]:
        """File name to sha256: what runs and model artifacts record as the data they came from."""
        return {spec.name: spec.sha256 for spec in self.files}
