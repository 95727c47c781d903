"""Where the project keeps its data: one place, so every module and script agrees.

In a checkout, everything is under the checkout. An installed package writes nothing into itself: its
data (`data/raw/`, `data/versions/`, `data/feedback/`), runs, MLflow store and promotions go under
`TEXT_RECOGNIZER_HOME`, or the current directory. The dataset manifests and the shipped model travel
inside the package. `TEXT_RECOGNIZER_DATA_DIR` moves the raw data elsewhere (a shared disk, a CI cache).
"""

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
IN_CHECKOUT = (PACKAGE_DIR.parent / "pyproject.toml").is_file()


def project_root() -> Path:
    """The folder holding `data/`, `runs/` and `mlruns/`: the checkout, else `TEXT_RECOGNIZER_HOME`, else
    the current folder (in a checkout the committed inputs, version records and labels, live there)."""
    if IN_CHECKOUT:
        return PACKAGE_DIR.parent
    home = os.environ.get("TEXT_RECOGNIZER_HOME")
    return Path(home).resolve() if home else Path.cwd()


PROJECT_ROOT = project_root()
MANIFESTS_DIR = PACKAGE_DIR / "datasets" / "manifests"


def raw_data_dir() -> Path:
    """The directory that downloads go to, read from the environment at call time."""
    override = os.environ.get("TEXT_RECOGNIZER_DATA_DIR")
    return Path(override) / "raw" if override else PROJECT_ROOT / "data" / "raw"


# The production model: promoted by `tasks/promote.sh`, shipped inside the package.
WEIGHTS_DIR = PACKAGE_DIR / "weights"
# Where promotion writes: the shipped weights in a checkout; outside one, `weights/` under the project root.
PROMOTION_DIR = WEIGHTS_DIR if IN_CHECKOUT else PROJECT_ROOT / "weights"
# What the service and the labelling queue use by default: a promotion made here, else the shipped model.
SERVED_WEIGHTS_DIR = PROMOTION_DIR if (PROMOTION_DIR / "CURRENT").is_file() else WEIGHTS_DIR
MODEL_CARD_NAME = "model_card.json"  # beside a promoted artifact: its version, threshold and figures
