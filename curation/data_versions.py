"""Create, list, verify, push and pull data versions: `./tasks/data.sh list|verify|add|pull|push`.

A new version is its base's idx files with labelled images appended to (or replacing images of) the
training split; the test split is never changed, so test accuracy stays comparable across versions.
The version is written to a hidden staging folder, hashed, renamed into place, made read-only, then
handed to DVC (`dvc add`, which records it in `data/versions/<name>.dvc`, and `dvc push` to the default
remote). A failure on the way removes what was made, so no half-built version is left behind.
"""

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from api.feedback_schema import DB_URL_ENV
from api.feedback_store import DEFAULT_FEEDBACK_DIR, FeedbackStore
from curation.labelled_images import (
    SELECTION_FILES,
    LabelledImage,
    from_csv,
    from_feedback,
    from_folder,
    from_shop_photos,
    preprocessing_sha256,
    refuse_evaluation_photos,
    summarize_shop_photos,
)
from text_recognizer.atomic import folder_lock, write_text_atomically
from text_recognizer.datasets.download import DownloadError, download_dir
from text_recognizer.datasets.fashion_mnist import read_split
from text_recognizer.datasets.idx import read_idx, write_idx
from text_recognizer.datasets.manifest import Manifest
from text_recognizer.datasets.versions import (
    FASHION_MNIST,
    SPLIT_FILES,
    DataVersion,
    DataVersionError,
    check_name,
    content_hash,
    list_versions,
    resolve_version,
    sha256_file,
)
from text_recognizer.labels import OUT_OF_SCOPE, LabelError
from text_recognizer.paths import PROJECT_ROOT
from training.table import format_table


class DvcError(RuntimeError):
    """A DVC command failed; the message carries its output."""


def dvc(root: Path, *args: str) -> str:
    """Run the DVC of this environment in the repository `root`; raise DvcError with its output."""
    command = [str(Path(sys.executable).parent / "dvc"), *args]
    result = subprocess.run(
        command, cwd=root, capture_output=True, text=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"}
    )
    if result.returncode != 0:
        raise DvcError(f"dvc {' '.join(args)} failed:\n{result.stdout}{result.stderr}".rstrip())
    return result.stdout


def versions_dir_of(root: Path) -> Path:
    return root / "data" / "versions"


def combine(base_dir: Path, images: list[LabelledImage]) -> tuple[torch.Tensor, torch.Tensor]:
    """The base training split with `images` applied (replacements in place, the rest appended)."""
    base = read_split(base_dir, "train")
    pixels, labels = base.images.clone(), base.labels.clone()
    appended = [image for image in images if image.replaces is None]
    for image in images:
        if image.replaces is not None:
            if image.replaces >= len(base):
                raise LabelError(
                    f"{image.source}: replaces index {image.replaces}, but the base has {len(base)} images"
                )
            pixels[image.replaces] = torch.from_numpy(image.pixels)
            labels[image.replaces] = image.label
    if appended:
        pixels = torch.cat([pixels, torch.from_numpy(np.stack([i.pixels for i in appended]))])
        labels = torch.cat([labels, torch.tensor([i.label for i in appended])])
    return pixels, labels


def copy_split(source: Path, staging: Path, split: str) -> None:
    for name in SPLIT_FILES[split]:
        shutil.copyfile(source / name, staging / name)


def stage_version(staging: Path, source_dir: Path, images: list[LabelledImage]) -> None:
    """Write the version's files: the source's, with `images` applied to the training split."""
    staging.mkdir(parents=True)
    copy_split(source_dir, staging, "test")
    if not images:  # an official release, byte for byte
        copy_split(source_dir, staging, "train")
        return
    pixels, labels = combine(source_dir, images)
    images_file, labels_file = SPLIT_FILES["train"]
    write_idx(staging / images_file, pixels)
    write_idx(staging / labels_file, labels.to(torch.uint8))


def create_version(
    name: str,
    *,
    base: str | None,
    images: list[LabelledImage],
    description: str,
    root: Path = PROJECT_ROOT,
    origin: str | None = None,
    push: bool = True,
    classes: tuple[str, ...] = (),
    sources: list[dict[str, Any]] | None = None,
) -> DataVersion:
    """Build version `name`: `base` plus `images`, or the release `origin` as is; record it in DVC.

    `classes` names the labels when they differ from Fashion-MNIST's ten (a version with the class
    "Out of scope"); `sources` records where the images came from when one entry per image would not
    say it better (a whole split of the shop photos: the files and rules that select it, hashed).
    """
    versions_dir = versions_dir_of(root)
    check_name(name)
    target = versions_dir / name
    record_path = DataVersion.record_path(name, versions_dir)
    if record_path.exists() or target.exists():
        raise DataVersionError(f"data version {name} already exists ({record_path}); versions are immutable")
    if origin is not None:
        source_dir = download_dir(Manifest.named(origin))
    elif base is None or not images:
        raise DataVersionError("a new version needs a base version and images to add or replace")
    else:
        source_dir = resolve_version(base, versions_dir=versions_dir)[1]
    staging = versions_dir / f".{name}.part"
    remove_version_files(staging)
    try:
        stage_version(staging, source_dir, images)
        files = {path.name: sha256_file(path) for path in sorted(staging.iterdir())}
        version = DataVersion(
            name=name,
            files=files,
            sha256=content_hash(files),
            base=base,
            origin=origin,
            description=description,
            counts={split: len(read_idx(staging / labels)) for split, (_, labels) in SPLIT_FILES.items()},
            sources=[image.record() for image in images] if sources is None else sources,
            classes=list(classes),
        )
        for path in staging.iterdir():
            path.chmod(0o444)
        staging.rename(target)
        dvc(root, "add", str(target.relative_to(root)))
        record = yaml.safe_load(record_path.read_text())
        record["meta"] = version.to_meta()
        write_text_atomically(record_path, yaml.safe_dump(record, sort_keys=False))
    except BaseException:
        remove_version_files(staging)
        remove_version_files(target)
        record_path.unlink(missing_ok=True)
        raise
    if push:
        dvc(root, "push", str(record_path.relative_to(root)))
    return version


def remove_version_files(directory: Path) -> None:
    if directory.exists():
        directory.chmod(0o755)
        for path in directory.iterdir():
            path.chmod(0o644)
        shutil.rmtree(directory)


def pull_version(name: str, root: Path = PROJECT_ROOT) -> Path:
    """Make `data/versions/<name>/` present and verified: from the DVC remote, else rebuilt from what it
    was made of (an official release, or a base plus the shop photo export), verified against its record.

    One process at a time per versions folder (two pulls at once would both rebuild into one staging
    folder); the next one finds the version present and keeps it."""
    with folder_lock(versions_dir_of(root)):
        return pulled(name, root)


def pulled(name: str, root: Path) -> Path:
    """`pull_version`'s work, under its lock (a rebuild pulls its base through here, already locked)."""
    versions_dir = versions_dir_of(root)
    version = DataVersion.read(name, versions_dir)
    target = versions_dir / name
    if target.is_dir() and not version.problems(target, exclusive=True):
        return target  # every byte as recorded already: nothing to fetch, and nothing a reader loses
    try:
        dvc(root, "pull", str(DataVersion.record_path(name, versions_dir).relative_to(root)))
    except DvcError:
        if version.origin is None and not rebuildable(version):
            raise
        remove_version_files(target)  # a damaged local copy must not stand in for the rebuilt files
        rebuild(version, root)
    return resolve_version(name, versions_dir=versions_dir)[1]


def rebuildable(version: DataVersion) -> bool:
    """Made only from sources this checkout can fetch and verify: a base and the shop photo export."""
    return (
        version.base is not None
        and bool(version.sources)
        and all(source.get("source") == "shop_photos" for source in version.sources)
    )


def rebuild(version: DataVersion, root: Path) -> None:
    """Stage the version again from its origin or from its base and the shop photos; refuse a result whose
    bytes differ from the record (the mapping, the splits or the preprocessing changed since)."""
    versions_dir = versions_dir_of(root)
    if version.origin is not None:
        source_dir, images = resolve_version(version.name, versions_dir=versions_dir)[1], []
    else:
        assert version.base is not None
        for source in version.sources:
            changed = [
                str(path.relative_to(PROJECT_ROOT))
                for key, path in SELECTION_FILES.items()
                if sha256_file(path) != source[key]
            ]
            if changed:
                raise DataVersionError(
                    f"data version {version.name} cannot be rebuilt here: {', '.join(changed)} changed since "
                    "it was made (check out the commit that made it, or dvc pull it from a remote)"
                )
        source_dir = pulled(version.base, root)
        images = from_shop_photos(version.class_names)
    staging = versions_dir / f".{version.name}.part"
    remove_version_files(staging)
    try:
        stage_version(staging, source_dir, images)
        files = {path.name: sha256_file(path) for path in sorted(staging.iterdir())}
        if files != version.files:
            differing = sorted(
                n for n in files.keys() | version.files.keys() if files.get(n) != version.files.get(n)
            )
            recorded = {source.get("preprocessing_sha256") for source in version.sources} - {None}
            cause = (
                "the preprocessing code changed since it was made"
                if recorded and preprocessing_sha256() not in recorded
                else "the same recipe gave other bytes (another torch, numpy or Pillow?)"
            )
            raise DataVersionError(
                f"rebuilt data version {version.name} differs from its record in {', '.join(differing)}: "
                f"{cause}; dvc pull it from a remote, or check out the commit that made it"
            )
        for path in staging.iterdir():
            path.chmod(0o444)
        staging.rename(versions_dir / version.name)
    except BaseException:
        remove_version_files(staging)
        raise


def verify_versions(names: list[str], root: Path = PROJECT_ROOT) -> list[str]:
    """One line per version; lines starting with FAIL name every changed, missing or extra file."""
    versions_dir = versions_dir_of(root)
    versions = [DataVersion.read(n, versions_dir) for n in names] if names else list_versions(versions_dir)
    lines = []
    for version in versions:
        directory = versions_dir / version.name
        if not directory.is_dir():
            lines.append(f"absent {version.name}: not in {directory}; ./tasks/data.sh pull {version.name}")
        elif problems := version.problems(directory, exclusive=True):
            lines.append(f"FAIL   {version.name} ({version.short_hash}): " + "; ".join(problems))
        else:
            lines.append(f"ok     {version.name} ({version.short_hash}): {len(version.files)} files match")
    return lines


def version_rows(root: Path = PROJECT_ROOT) -> list[dict[str, object]]:
    versions_dir = versions_dir_of(root)
    return [
        {
            "version": v.name,
            "base": v.base or v.origin or "-",
            "sha256": v.short_hash,
            "train": v.counts.get("train", "?"),
            "test": v.counts.get("test", "?"),
            "local": "yes" if (versions_dir / v.name).is_dir() else "no",
            "description": v.description,
        }
        for v in list_versions(versions_dir)
    ]


def new_version_classes(args: argparse.Namespace) -> tuple[str, ...]:
    """The base version's classes; adding shop photos adds the class "Out of scope"."""
    base = DataVersion.read(args.base) if args.base else None
    if args.shop_photos and base is not None and base.has_shop_photos:
        raise DataVersionError(f"{args.base} already holds the shop photos' training split; base it on v1")
    classes = base.class_names if base else Manifest.named(FASHION_MNIST).classes
    if args.shop_photos and OUT_OF_SCOPE not in classes:
        classes = (*classes, OUT_OF_SCOPE)
    return classes


def labelled_images(args: argparse.Namespace, classes: tuple[str, ...]) -> list[LabelledImage]:
    """The images to add; on a base with shop photos, none may be a photo of their evaluation splits."""
    if args.shop_photos:
        return from_shop_photos(classes, mirror=args.mirror)
    if args.images:
        images = from_folder(args.images, classes)
    elif args.csv:
        images = from_csv(args.csv, classes)
    elif args.feedback:
        images = from_feedback(FeedbackStore.at(args.feedback, args.feedback_db))
    else:
        return []
    if args.base and DataVersion.read(args.base).has_shop_photos:
        refuse_evaluation_photos(images, mirror=args.mirror)
    return images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="data.sh", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="table of data versions")
    verify = commands.add_parser("verify", help="check every byte of local versions against their records")
    verify.add_argument("names", nargs="*", metavar="NAME")
    add = commands.add_parser("add", help="create a new, immutable data version")
    add.add_argument("name", metavar="NAME")
    source = add.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, metavar="DIR", help="labelled photos in DIR/<class>/<image>")
    source.add_argument("--csv", type=Path, metavar="FILE", help="CSV with path,label[,replaces]")
    source.add_argument(
        "--feedback",
        type=Path,
        nargs="?",
        const=DEFAULT_FEEDBACK_DIR,
        metavar="DIR",
        help="feedback sent to the API (default data/feedback; --feedback-db for another database)",
    )
    source.add_argument("--official", metavar="MANIFEST", help="a release as is (fashion_mnist)")
    source.add_argument(
        "--shop-photos",
        action="store_true",
        help="the training split of the shop photo export, mapped by data/labels/shop_photos_mapping.csv",
    )
    add.add_argument("--mirror", help="shop photos: directory or URL of the export (else SHOP_PHOTOS_MIRROR)")
    add.add_argument("--from", dest="base", metavar="BASE", help="the version to start from")
    add.add_argument(
        "--feedback-db",
        default=os.environ.get(DB_URL_ENV),
        metavar="URL",
        help=f"SQLAlchemy URL of the feedback database (default: {DB_URL_ENV}, else SQLite in the folder)",
    )
    add.add_argument("--description", default="", help="what changed and why")
    add.add_argument("--no-push", action="store_true", help="do not push to the default DVC remote")
    for command in ("pull", "push"):
        commands.add_parser(command, help=f"dvc {command} one version").add_argument("name", metavar="NAME")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            rows = version_rows()
            print(format_table(rows) if rows else "no data versions (add v1 --official fashion_mnist)")
        elif args.command == "verify":
            lines = verify_versions(args.names)
            print("\n".join(lines))
            return 1 if any(line.startswith("FAIL") for line in lines) else 0
        elif args.command == "add":
            classes = new_version_classes(args)
            images = labelled_images(args, classes)
            version = create_version(
                args.name,
                base=args.base,
                images=images,
                description=args.description,
                origin=args.official,
                push=not args.no_push,
                classes=classes if classes != Manifest.named(FASHION_MNIST).classes else (),
                sources=summarize_shop_photos(images, classes) if args.shop_photos else None,
            )
            print(
                f"created data version {version.name} ({version.sha256}): {version.counts}; "
                f"commit data/versions/{version.name}.dvc and data/versions/.gitignore"
            )
        elif args.command == "pull":
            print(f"data version {args.name} is in {pull_version(args.name)}, verified")
        else:
            dvc(PROJECT_ROOT, "push", f"data/versions/{check_name(args.name)}.dvc")
            print(f"pushed data version {args.name}")
    except (DataVersionError, LabelError, DvcError, DownloadError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
