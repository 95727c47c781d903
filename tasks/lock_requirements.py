"""Requirements from Pipfile.lock, for the installs that do not go through pipenv. Standard library only:
it runs before anything is installed.

    python3 tasks/lock_requirements.py constraints [LOCK]
        every locked runtime package as `name==version`, "+local" tags dropped so that a CPU build of the
        same torch satisfies its pin (tasks/install_runtime.sh, the Docker image)
    python3 tasks/lock_requirements.py torch [LOCK]
        the torch and torchvision pins alone, "+local" tags dropped
    python3 tasks/lock_requirements.py without-torch [LOCK]
        runtime and dev packages with their hashes, minus torch, torchvision and torch's CUDA stack, which
        come from TORCH_INDEX_URL instead (tasks/setup.sh)
"""

import json
import sys
from pathlib import Path

TORCH = ("torch", "torchvision")
CUDA_STACK_PREFIXES = ("nvidia-", "cuda-", "triton")  # what the CUDA build of torch pulls in


def pin(name: str, entry: dict) -> str:
    return name + entry["version"].split("+")[0]


def hashed(name: str, entry: dict) -> str:
    markers = f" ; {entry['markers']}" if "markers" in entry else ""
    return " ".join([f"{name}{entry['version']}{markers}", *(f"--hash={h}" for h in entry["hashes"])])


def main(argv: list[str]) -> int:
    mode, lock_path = argv[0], Path(argv[1] if len(argv) > 1 else "Pipfile.lock")
    lock = json.loads(lock_path.read_text())
    runtime = {name: entry for name, entry in lock["default"].items() if "version" in entry}
    if mode == "constraints":
        lines = [pin(name, entry) for name, entry in runtime.items()]
    elif mode == "torch":
        lines = [pin(name, runtime[name]) for name in TORCH]
    elif mode == "without-torch":
        everything = {**runtime, **lock["develop"]}
        lines = [
            hashed(name, entry)
            for name, entry in everything.items()
            if name not in TORCH and not name.startswith(CUDA_STACK_PREFIXES)
        ]
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
