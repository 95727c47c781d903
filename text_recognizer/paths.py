"""Where the project keeps its data: one place, so every module and script agrees.

`data/manifests/` is committed; `data/raw/` holds immutable downloads and stays out of git.
`TEXT_RECOGNIZER_DATA_DIR` moves the raw data elsewhere (a shared disk, a CI cache).
"""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MANIFESTS_DIR = PROJECT_ROOT / "data" / "manifests"


def raw_data_dir() -> Path:
    """The directory that downloads go to, read from the environment at call time."""
    override = os.environ.get("TEXT_RECOGNIZER_DATA_DIR")
    return Path(override) / "raw" if override else PROJECT_ROOT / "data" / "raw"


# The production model: promoted by `tasks/promote.sh`, shipped inside the package.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MODEL_CARD_NAME = "model_card.json"  # beside a promoted artifact: its version, threshold and figures
