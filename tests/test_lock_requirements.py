"""The requirements that setup.sh (with TORCH_INDEX_URL) and the Docker image derive from Pipfile.lock."""

import json
import subprocess
import sys

from .conftest import REPO_ROOT

LOCK = json.loads((REPO_ROOT / "Pipfile.lock").read_text())


def requirements(mode: str) -> list[str]:
    script = REPO_ROOT / "tasks" / "lock_requirements.py"
    result = subprocess.run([sys.executable, str(script), mode, str(REPO_ROOT / "Pipfile.lock")],
                            capture_output=True, text=True, check=True)  # fmt: skip
    return result.stdout.splitlines()


def test_torch_from_another_index_leaves_every_other_locked_package_hash_pinned() -> None:
    lines = requirements("without-torch")
    names = [line.split("==")[0] for line in lines]
    cuda_stack = {name for name in LOCK["default"] if name.startswith(("nvidia-", "cuda-", "triton"))}
    locked = {
        name for section in ("default", "develop") for name, e in LOCK[section].items() if "version" in e
    }
    assert len(cuda_stack) > 10 and {"fastapi", "pytest", "numpy"} <= set(names)
    assert sorted(names) == sorted(locked - cuda_stack - {"torch", "torchvision"})
    for line in lines:
        name = line.split("==")[0]
        entry = LOCK["default"].get(name) or LOCK["develop"][name]
        assert line.startswith(f"{name}{entry['version']} ") and "--hash=sha256:" in line


def test_the_torch_pins_are_the_locked_versions_without_a_build_tag() -> None:
    versions = {name: LOCK["default"][name]["version"].split("+")[0] for name in ("torch", "torchvision")}
    assert requirements("torch") == [f"torch{versions['torch']}", f"torchvision{versions['torchvision']}"]
    constraints = requirements("constraints")
    assert f"torch{versions['torch']}" in constraints and not any("+" in line for line in constraints)


def test_an_unknown_mode_prints_the_usage() -> None:
    script = REPO_ROOT / "tasks" / "lock_requirements.py"
    result = subprocess.run([sys.executable, str(script), "everything"], capture_output=True, text=True)
    assert result.returncode == 2 and "without-torch" in result.stderr
