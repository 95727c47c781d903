"""The library depends on what it needs, and on no extra: every module of `text_recognizer` imports with
the serving, tracking and plotting packages out of reach."""

import subprocess
import sys

from .conftest import REPO_ROOT

EXTRAS_ONLY = (
    *("sqlalchemy", "alembic", "fastapi", "fastapi_offline", "starlette", "uvicorn", "multipart"),
    *("prometheus_client", "pydantic_settings", "mlflow", "matplotlib", "optuna", "torchvision"),
    *("uvloop", "httptools"),
)

PROBE = f"""
import importlib, pkgutil, sys

class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {EXTRAS_ONLY!r}:
            raise ImportError(f"{{name}} is not a dependency of the library")

sys.meta_path.insert(0, Blocked())
import text_recognizer
for module in pkgutil.walk_packages(text_recognizer.__path__, "text_recognizer."):
    importlib.import_module(module.name)
print("imported")
"""


def test_the_library_imports_without_any_extra() -> None:
    """Before, the feedback store lived in `text_recognizer.datasets` and made SQLAlchemy a core
    dependency."""
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "imported", done.stderr[-2000:]
