"""Serving speed of this checkout against an earlier commit's, side by side on one machine: both servers
run at once, serve the same model (this checkout's promoted weights, computed in float32 and without
averaging each image with its mirror image: older code cannot load those choices, and they are the
model's work, not the code's) and take turns, so background load hits both alike. A figure quoted
against one taken in another session mixes in that session's noise; this one does not. The earlier
commit is checked out in a temporary git worktree, removed afterwards.

Rows: one request at a time (p50 over the `GET /health/live` floor, a synchronous client, interleaved on
one connection per server); requests per second at concurrency 32; 16 images as one batch call against
16 single calls. Default base: baa28e0, the serving code when issue 13 was filed. The base server runs
with this environment, less the packages its own Pipfile.lock did not have (uvicorn's default loop takes
uvloop wherever it imports): so it runs as it was served.

    python -m benchmarks.serving_versus_commit [--base COMMIT] [--rounds 5] [--requests 300]
"""

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import tempfile
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import Any

from api.settings import Settings
from benchmarks.api_load import CONCURRENCY, batch_against_singles, load, payloads, phone_photos, png
from benchmarks.common import median, print_table, write_result
from benchmarks.single_request import interleaved_times, over_floor_rows, requests
from support.local_server import LiveServer
from support.product_photos import product_photo
from text_recognizer.datasets.fashion_mnist import load_fashion_mnist
from text_recognizer.models import ClassifierModel
from text_recognizer.paths import PROJECT_ROOT
from text_recognizer.promoted import model_file

ISSUE_13_FILED = "baa28e0"


def under_load(servers: dict[str, LiveServer], rounds: int, requests_per_round: int) -> list[dict[str, Any]]:
    bodies = payloads()
    routes = ("predict 28x28.png", "predict photo.jpg")
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for _ in range(rounds):
        for route in routes:
            for name, server in servers.items():
                url = server.url + "/v1/predict"
                asyncio.run(load(url, CONCURRENCY[-1], 40, bodies[route]))  # warm-up
                result = asyncio.run(load(url, CONCURRENCY[-1], requests_per_round, bodies[route]))
                results.setdefault((name, route), []).append(result)
    return [
        {
            "code": name,
            "route": route,
            "concurrency": CONCURRENCY[-1],
            "requests_per_s": median([r["requests_per_s"] for r in rounds_of]),
            "each_round": [round(r["requests_per_s"]) for r in rounds_of],
            "errors": sum(r["errors"] for r in rounds_of),
        }
        for (name, route), rounds_of in results.items()
    ]


def batches(servers: dict[str, LiveServer], rounds: int) -> list[dict[str, Any]]:
    items = load_fashion_mnist().test.images[:16].numpy()
    kinds = {
        "product photo JPEG": {f"{i}.jpg": product_photo(item, seed=i) for i, item in enumerate(items)},
        "shop phone photo JPEG": phone_photos(16),
        "28x28 PNG": {f"{i}.png": png(item) for i, item in enumerate(items)},
    }
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for _ in range(rounds):
        for kind, images in kinds.items():
            for name, server in servers.items():
                results.setdefault((name, kind), []).append(batch_against_singles(server.url, images, 3))
    rows = []
    for (name, kind), rounds_of in results.items():
        batch = median([r["batch_ms"] for r in rounds_of])
        singles = median([r["singles_ms"] for r in rounds_of])
        errors = sum(r["errors"] for r in rounds_of)
        rows.append({"code": name, "images": kind, "batch_ms": batch, "singles_ms": singles,
                     "speedup": singles / batch, "errors": errors})  # fmt: skip
    return rows


def plain_float32(model: ClassifierModel) -> ClassifierModel:
    """The same weights in the oldest artifact format, which the base commit loads: computed in float32
    (int8 weights dequantized), one image per forward pass, the temperature kept."""
    plain = ClassifierModel(model.network_name, model.network_args, model.input_shape, model.class_names,
                            model.normalization, model.metadata, model.temperature)  # fmt: skip
    plain.network.load_state_dict(model.network.state_dict())
    return plain


def without_newer_packages(base: str, folder: Path) -> tuple[dict[str, str], list[str]]:
    """Environment variables for the base commit's server that hide the top-level modules of the
    packages this checkout's lock has and the base's had not (a module of that name that fails to
    import, ahead of the installed one), and the modules hidden."""
    shown = subprocess.run(["git", "show", f"{base}:Pipfile.lock"], capture_output=True, text=True,
                           check=True, cwd=PROJECT_ROOT)  # fmt: skip
    then = json.loads(shown.stdout)["default"]
    now = json.loads((PROJECT_ROOT / "Pipfile.lock").read_text())["default"]
    newer = {normalized(name) for name in set(now) - set(then)}
    modules = sorted(
        module
        for module, distributions in packages_distributions().items()
        if module.isidentifier() and any(normalized(name) in newer for name in distributions)
    )
    hidden = folder / "hidden"
    hidden.mkdir()
    for module in modules:
        (hidden / f"{module}.py").write_text(
            f"raise ImportError('{module} was not installed at commit {base}')\n"
        )
    path = os.pathsep.join(filter(None, [str(hidden), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path}, modules


def normalized(distribution: str) -> str:
    """A distribution's name as the lock writes it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", default=ISSUE_13_FILED, help="the commit to compare against")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds at concurrency 32")
    parser.add_argument("--requests", type=int, default=300, help="requests per round at concurrency 32")
    parser.add_argument("--single-rounds", type=int, default=300)
    args = parser.parse_args()
    model = model_file(Settings.from_env().model_path).resolve()
    found = subprocess.run(["git", "rev-parse", "--short", "--verify", "--quiet", f"{args.base}^{{commit}}"],
                           capture_output=True, text=True, cwd=PROJECT_ROOT)  # fmt: skip
    if found.returncode != 0:  # e.g. a shallow clone: nothing to compare against
        print(f"serving_versus_commit: skipped, commit {args.base} is not in this clone")
        return
    base = found.stdout.strip()
    folder = Path(tempfile.mkdtemp(prefix="serving-versus-commit-"))
    worktree = folder / "base"
    names = {f"base {base}": worktree, "this checkout": PROJECT_ROOT}
    servers: dict[str, LiveServer] = {}
    try:
        plain_float32(ClassifierModel.load(model)).save(folder / "model.pt")  # no card beside it
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(worktree), base], check=True,
                       cwd=PROJECT_ROOT)  # fmt: skip
        base_env, hidden = without_newer_packages(base, folder)
        for name, cwd in names.items():
            log = folder / f"{name.split()[0]}.log"
            env = {"APPAREL_MODEL_PATH": str(folder / "model.pt")} | (base_env if cwd == worktree else {})
            servers[name] = LiveServer.start(log, env=env, cwd=cwd)
        bodies = requests()
        times = interleaved_times(servers, bodies, args.single_rounds)
        single = over_floor_rows(times, list(servers), bodies, label="code")
        loaded = under_load(servers, args.rounds, args.requests)
        batched = batches(servers, args.rounds)
    finally:
        for server in servers.values():
            server.stop()
        subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], check=False, cwd=PROJECT_ROOT)
        subprocess.run(["git", "worktree", "prune"], check=False, cwd=PROJECT_ROOT)
        shutil.rmtree(folder, ignore_errors=True)  # the servers' logs, read back already
    print_table(f"one request at a time, {args.single_rounds} interleaved rounds, model {model}", single)
    print_table(f"concurrency {CONCURRENCY[-1]}, median of {args.rounds} alternating rounds", loaded)
    print_table("16 images: one batch call against 16 single calls (one connection)", batched)
    print(f"hidden from the base server (not in its lock): {', '.join(hidden) or 'nothing'}")
    write_result("serving_versus_commit", single + loaded + batched, base=base, model=str(model),
                 rounds=args.rounds, hidden_from_base=hidden)  # fmt: skip
    errors = sum(row.get("errors", 0) for row in loaded + batched)
    raise SystemExit(1 if errors else 0)


if __name__ == "__main__":
    main()
