"""Progress bars for long work (epochs, downloads, photo conversions, labelling queues), shown only on an
interactive terminal: logs, CI and pipes keep their plain lines. `TQDM_DISABLE=1` turns them off."""

import os
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm import tqdm

Item = TypeVar("Item")


def progress(
    iterable: Iterable[Item] | None = None, *, desc: str, shown: bool = True, **options: Any
) -> "tqdm[Item]":
    """`tqdm` over `iterable` (or updated by hand), on stderr when it is a terminal (and `shown`: one
    process of several draws it); gone when done."""
    # None: tqdm's own check for a terminal. Its TQDM_DISABLE yields to an explicit keyword, so read here.
    disable = None if shown and not os.environ.get("TQDM_DISABLE") else True
    return tqdm(iterable, desc=desc, disable=disable, leave=False, dynamic_ncols=True, **options)
