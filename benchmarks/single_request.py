"""One request at a time against the live server, and where its time goes (issue 13, points 1 and 4).

Two servers run side by side, one worker and one torch thread each: the forward pass by PyTorch (the
batch-norm-folded network, as served before) and by ONNX Runtime (as served now); only the second for a
model computed in int8, which PyTorch does not run (one server alone meets less contention on two
cores than two do). Requests alternate between them, and on each server's own connection
`GET /health/live` (the HTTP floor), a 28x28 PNG and a product-photo JPEG alternate too, so background
load hits every figure alike. Then py-spy samples each server while it answers 28x28 PNGs one at a time:
the share of samples in each part of the request.

    python -m benchmarks.single_request [--rounds 300] [--profile-seconds 15] [--models A B ...]

With `--models`, the servers are one per given model (each as the service serves it: ONNX Runtime)
instead of one per backend: a before/after of two models under the same load.
"""

import argparse
import collections
import io
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
from PIL import Image

from api.settings import Settings
from benchmarks.common import median, percentile, print_table, write_result
from support.local_server import LiveServer
from support.product_photos import product_photo
from text_recognizer.datasets.fashion_mnist import load_fashion_mnist
from text_recognizer.models import ClassifierModel
from text_recognizer.promoted import model_file

BACKENDS = ("torch", "onnxruntime")
PY_SPY = str(Path(sys.executable).parent / "py-spy")
# Parts of a request, by the first frame of a sample that names them (checked in this order).
PARTS = {
    "forward pass": ("OnnxRuntimeNetwork.forward", "GraphModule", "_conv_forward", "Module._call_impl"),
    "decode and preprocess": ("upload_views", "decoded_pixels"),
    "multipart parsing": ("python_multipart", "parse_form", "MultiPartParser"),
    "softmax, top-k, response": ("Predictor.predict_arrays", "Predictor.answer", "serialize_response"),
    "HTTP (uvicorn, httptools) and middleware": ("httptools", "h11", "uvicorn", "starlette", "observability"),
}


def requests() -> dict[str, dict[str, Any]]:
    image = load_fashion_mnist().test.images[0].numpy()
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return {
        "GET /health/live": {},
        "28x28 PNG": {"files": {"file": ("item.png", buffer.getvalue(), "image/png")}},
        "photo JPEG": {"files": {"file": ("item.jpg", product_photo(image, seed=10), "image/jpeg")}},
    }


def timed(client: httpx.Client, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    response = client.get("/health/live") if not body else client.post("/v1/predict", **body)
    elapsed = (time.perf_counter() - started) * 1000
    response.raise_for_status()
    return elapsed


def profile(server: LiveServer, body: dict[str, Any], seconds: float, output: Path) -> dict[str, Any]:
    """py-spy's raw samples of the server while one client sends `body` again and again."""
    record = [PY_SPY, "record", "--pid", str(server.process.pid), "--duration", str(round(seconds)),
              "--rate", "500", "--format", "raw", "--nonblocking", "--output", str(output)]  # fmt: skip
    spy = subprocess.Popen(record, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    sent = 0
    stop = threading.Event()

    def send() -> None:
        nonlocal sent
        with httpx.Client(base_url=server.url, timeout=30) as client:
            while not stop.is_set():
                client.post("/v1/predict", **body)
                sent += 1

    sender = threading.Thread(target=send)
    sender.start()
    _, errors = spy.communicate(timeout=seconds + 60)
    stop.set()
    sender.join()
    if spy.returncode != 0:
        raise RuntimeError(f"py-spy failed: {errors}")
    parts: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()  # where the samples were taken: own time
    total = 0
    for line in output.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        samples = int(count)
        total += samples
        part = next(
            (name for name, markers in PARTS.items() if any(m in f for f in frames for m in markers)), "other"
        )
        parts[part] += samples
        leaves[frames[-1]] += samples
    shares = {p: parts[p] / max(total, 1) for p in [*PARTS, "other"]}
    top = {frame: count / max(total, 1) for frame, count in leaves.most_common(12)}
    return {"requests": sent, "samples": total, **shares, "top_own_time": top}


def interleaved_times(
    servers: dict[str, LiveServer], bodies: dict[str, dict[str, Any]], rounds: int, warm_up: int = 20
) -> dict[tuple[str, str], list[float]]:
    """Milliseconds per (server, request): each server in turn answers every request once, one at a time
    on its own connection, for `warm_up` untimed rounds and then `rounds` timed ones."""
    times: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    clients = {name: httpx.Client(base_url=server.url, timeout=30) for name, server in servers.items()}
    try:
        for round_number in range(warm_up + rounds):
            for name, client in clients.items():
                for request, body in bodies.items():
                    elapsed = timed(client, body)
                    if round_number >= warm_up:
                        times[name, request].append(elapsed)
    finally:
        for client in clients.values():
            client.close()
    return times


def over_floor_rows(
    times: dict[tuple[str, str], list[float]], servers: list[str], bodies: dict[str, Any], label: str
) -> list[dict[str, Any]]:
    """p50 and p99 per server and request, and the p50 over that server's `GET /health/live`."""
    rows = []
    for server in servers:
        floor = median(times[server, "GET /health/live"])
        for request in bodies:
            values = times[server, request]
            p50 = median(values)
            rows.append({label: server, "request": request, "p50_ms": p50,
                         "p99_ms": percentile(values, 0.99), "over_floor_p50_ms": p50 - floor})  # fmt: skip
    return rows


def runnable_backends(model: ClassifierModel) -> tuple[str, ...]:
    """The backends that serve `model`: a model computed in int8 runs only in ONNX Runtime."""
    if model.computation == "int8":
        print("single_request: torch skipped, the served model computes in int8 (ONNX Runtime only)")
        return ("onnxruntime",)
    return BACKENDS


def server_settings(models: list[Path] | None) -> tuple[str, dict[str, dict[str, str]]]:
    """What the servers differ in, as (row label, {server name: environment}): the backend, serving the
    promoted model; or, given `models`, the model, each served as the service serves it by default."""
    if models:
        return "model", {str(path): {"APPAREL_MODEL_PATH": str(path.resolve())} for path in models}
    backends = runnable_backends(ClassifierModel.load(model_file(Settings.from_env().model_path)))
    return "backend", {backend: {"APPAREL_INFERENCE_BACKEND": backend} for backend in backends}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--profile-seconds", type=float, default=15)
    parser.add_argument(
        "--models", nargs="+", type=Path, help="serve these models (artifacts) side by side instead"
    )
    args = parser.parse_args()
    bodies = requests()
    label, settings = server_settings(args.models)
    servers: dict[str, LiveServer] = {}
    profiles = []
    with tempfile.TemporaryDirectory(prefix="single-request-") as scratch:  # servers' logs, profiles
        folder = Path(scratch)
        try:
            for number, (name, env) in enumerate(settings.items()):
                servers[name] = LiveServer.start(folder / f"{number}.log", env=env)
            times = interleaved_times(servers, bodies, args.rounds)
            for number, (name, server) in enumerate(servers.items()):
                output = folder / f"{number}.profile.txt"
                profiles.append(
                    {label: name, **profile(server, bodies["28x28 PNG"], args.profile_seconds, output)}
                )
        finally:
            for server in servers.values():
                server.stop()
    rows = over_floor_rows(times, list(servers), bodies, label=label)
    print_table(f"one request at a time, {args.rounds} interleaved rounds, 1 worker each", rows)
    print_table(
        "share of py-spy samples while answering 28x28 PNGs one at a time",
        [{k: v for k, v in profile.items() if k != "top_own_time"} for profile in profiles],
    )
    for profile_row in profiles:
        print(f"\n{profile_row[label]}: own time, largest first")
        for frame, share in profile_row["top_own_time"].items():
            print(f"  {share:6.1%}  {frame}")
    write_result("single_request", rows, rounds=args.rounds, profiles=profiles, parts=PARTS)


if __name__ == "__main__":
    main()
