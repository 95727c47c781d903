"""Class labels as people write them: an index, the class name, or its folder-safe slug."""

import re

# The class a model learns from out-of-scope photos: its answer means "not one of the ten".
OUT_OF_SCOPE = "Out of scope"
# ASCII digits only: str.isdigit() also accepts "²", "①" and "٣", which int() then fails on or reads.
INDEX_PATTERN = re.compile(r"[0-9]+")


def is_index(text: str) -> bool:
    """Whether `text` is a whole number written in ASCII digits."""
    return INDEX_PATTERN.fullmatch(text) is not None


class LabelError(ValueError):
    """A label, image source or labelled file is unusable; the message names it."""


def slug(text: str) -> str:
    """Folder-safe class name: "T-shirt/top" -> "t-shirt-top", "Ankle boot" -> "ankle-boot"."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def class_index(label: str, class_names: tuple[str, ...]) -> int:
    """A label given as an index, the class name or its slug, to the class index."""
    text = label.strip()
    if is_index(text) and int(text) < len(class_names):
        return int(text)
    for index, name in enumerate(class_names):
        if text == name or slug(text) == slug(name):
            return index
    choices = ", ".join(f"{i} {slug(name)}" for i, name in enumerate(class_names))
    raise LabelError(f"unknown class {label!r}; use an index, a class name or one of: {choices}")
