"""The service under hostile load, against a real uvicorn server (one worker), in two parts:

1. Large images: 4 simultaneous uploads of the issue's 6000x6000 lossless WebP (1.4 kB; refused from
   its header now), then of the largest image still decoded in full (12 megapixels, about 1 kB). Wall
   time, answers, and the server's peak RSS over its idle RSS (target: at most 2 s and 300 MB).
2. Mixed load at concurrency 32: valid photos and 28x28 PNGs interleaved with hostile uploads (crafted
   EXIF, a lying JPEG header, a PNG bomb header, HEIC and SVG, empty and truncated files, 12-megapixel
   decodes, seeded corruptions of valid files) and feedback, while 8 slowloris connections trickle their
   headers. Status counts and latency per kind, and the server's peak RSS. Target: no 5xx but the
   designed back-pressure (503 `busy`), every valid request answered, every slow client closed.

    python -m benchmarks.hostile_load [--requests 1500]

Peak RSS is the kernel's high-water mark (VmHWM) of the server process, read from /proc.
"""

import argparse
import asyncio
import io
import tempfile
import time
from collections import Counter, defaultdict
from itertools import cycle
from pathlib import Path
from typing import Any

import httpx2 as httpx
from PIL import Image

from benchmarks.common import median, percentile, print_table, write_result
from support import hostile_uploads
from support.local_server import LiveServer
from support.product_photos import product_photo
from text_recognizer.datasets.fashion_mnist import load_fashion_mnist
from text_recognizer.preprocessing import MAX_FULL_DECODE_PIXELS

CONCURRENCY = 32
SLOW_CLIENTS = 8
LARGEST_FULL_DECODE_SIDE = int(MAX_FULL_DECODE_PIXELS**0.5)  # 3464 x 3464, just under the cap


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak since start) of a process, in kB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def largest_full_decode() -> bytes:
    side = LARGEST_FULL_DECODE_SIDE
    return hostile_uploads.encode(Image.new("RGB", (side, side), "white"), "WEBP", lossless=True, method=0)


def payloads() -> dict[str, tuple[str, bytes, bool]]:
    """Kind -> (file name, bytes, valid)."""
    images = load_fashion_mnist().test.images[:2].numpy()
    png = io.BytesIO()
    Image.fromarray(images[1]).save(png, format="PNG")
    truncated = product_photo(images[0], seed=1)
    return {
        "valid photo (JPEG)": ("photo.jpg", product_photo(images[0], seed=0), True),
        "valid 28x28 PNG": ("item.png", png.getvalue(), True),
        "12 MP lossless WebP": ("big.webp", largest_full_decode(), True),
        "EXIF negative rational": ("exif.jpg", hostile_uploads.exif_negative_rational_jpeg(), False),
        "malformed EXIF WebP": ("exif.webp", hostile_uploads.malformed_exif_webp(), False),
        "lying JPEG header": ("lying.jpg", hostile_uploads.lying_jpeg(), False),
        "36 MP WebP": ("huge.webp", hostile_uploads.white_webp(6000), False),
        "HEIC": ("photo.heic", hostile_uploads.heic_header(), False),
        "SVG": ("logo.svg", hostile_uploads.svg_logo(), False),
        "empty": ("empty.jpg", b"", False),
        "truncated JPEG": ("cut.jpg", truncated[: len(truncated) // 2], False),
    }


async def large_decodes(url: str, data: bytes, count: int = 4) -> tuple[float, list[int]]:
    async with httpx.AsyncClient(timeout=60) as client:
        started = time.perf_counter()
        posts = [client.post(url + "/v1/predict", files={"file": ("big.webp", data)}) for _ in range(count)]
        responses = await asyncio.gather(*posts)
    return time.perf_counter() - started, sorted(r.status_code for r in responses)


async def slowloris(url: str, seconds_between_bytes: float = 1.0) -> float:
    """Trickle a request's headers one byte a second; return how long the server kept the connection."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    started = time.perf_counter()
    try:
        for byte in b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 120:
            writer.write(bytes([byte]))
            await writer.drain()
            if reader.at_eof():
                break
            try:
                await asyncio.wait_for(reader.read(1024), seconds_between_bytes)
                break  # the server answered (408) and closed
            except TimeoutError:
                continue
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
    return time.perf_counter() - started


async def mixed(
    url: str, requests: int, kinds: dict[str, tuple[str, bytes, bool]], feedback: list[bytes]
) -> dict[str, Any]:
    schedule = cycle([*kinds, *["mutation"] * 2, "feedback"])
    mutations = cycle(list(hostile_uploads.mutations(400, seed=1)))
    feedback_photos = cycle(feedback)
    results: dict[str, list[tuple[int, float]]] = defaultdict(list)
    failures: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    jobs = iter(range(requests))
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def user() -> None:
            for _ in jobs:
                kind = next(schedule)
                if kind == "mutation":
                    name, data = next(mutations)
                    request = client.post(url + "/v1/predict", files={"file": (name, data)})
                elif kind == "feedback":
                    photo = next(feedback_photos)
                    request = client.post(
                        url + "/v1/feedback", files={"file": ("f.jpg", photo)}, data={"confirm": "true"}
                    )
                else:
                    name, data, _ = kinds[kind]
                    request = client.post(url + "/v1/predict", files={"file": (name, data)})
                started = time.perf_counter()
                try:
                    response = await request
                except httpx.HTTPError as error:
                    failures[f"{kind}: {type(error).__name__}"] += 1
                    continue
                results[kind].append((response.status_code, (time.perf_counter() - started) * 1000))

        started = time.perf_counter()
        slow = [asyncio.create_task(slowloris(url)) for _ in range(SLOW_CLIENTS)]
        await asyncio.gather(*(user() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - started
        slow_seconds = await asyncio.gather(*slow)
    return {"results": results, "failures": failures, "elapsed": elapsed, "slow_seconds": slow_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=1500, help="requests in the mixed part")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hostile-load-") as scratch:  # logs, feedback
        folder = Path(scratch)
        kinds = payloads()
        items = load_fashion_mnist().test.images[:40].numpy()
        feedback = [product_photo(item, seed=seed) for seed, item in enumerate(items)]

        large = []
        for kind in ("36 MP WebP", "12 MP lossless WebP"):  # the file, and the largest decoded
            server = LiveServer.start(folder / "large.log")
            try:
                asyncio.run(large_decodes(server.url, kinds["valid photo (JPEG)"][1], 1))  # warm
                idle = memory_kb(server.process.pid)
                seconds, statuses = asyncio.run(large_decodes(server.url, kinds[kind][1]))
                peak = memory_kb(server.process.pid)
            finally:
                server.stop()
            large.append(
                {
                    "upload": f"4 x {kind} ({len(kinds[kind][1]):,} bytes)",
                    "seconds": round(seconds, 2),
                    "statuses": statuses,
                    "idle_rss_mb": round(idle["VmRSS"] / 1024, 1),
                    "peak_rss_over_idle_mb": round((peak["VmHWM"] - idle["VmRSS"]) / 1024, 1),
                    "rss_after_over_idle_mb": round((peak["VmRSS"] - idle["VmRSS"]) / 1024, 1),
                }
            )
        print_table("4 simultaneous large images (target: <= 2 s, <= 300 MB over idle)", large)

        env = {"APPAREL_FEEDBACK_DIR": str(folder / "feedback")}
        server = LiveServer.start(folder / "mixed.log", env=env)
        try:
            idle = memory_kb(server.process.pid)
            outcome = asyncio.run(mixed(server.url, args.requests, kinds, feedback))
            after = memory_kb(server.process.pid)
            alive = httpx.get(server.url + "/health/ready").status_code == 200
        finally:
            server.stop()
    rows = []
    for kind, answers in outcome["results"].items():
        counts = Counter(status for status, _ in answers)
        latencies = [ms for _, ms in answers]
        rows.append(
            {
                "kind": kind,
                "requests": len(answers),
                "statuses": ", ".join(f"{s}: {n}" for s, n in sorted(counts.items())),
                "p50_ms": median(latencies),
                "p99_ms": percentile(latencies, 0.99),
            }
        )
    all_statuses = Counter(status for answers in outcome["results"].values() for status, _ in answers)
    server_errors = sum(n for status, n in all_statuses.items() if status >= 500 and status != 503)
    busy = all_statuses[503]
    valid_unanswered = sum(
        1
        for kind, answers in outcome["results"].items()
        if kind in kinds and kinds[kind][2]
        for status, _ in answers
        if status not in (200, 503)
    )
    summary = {
        "concurrency": CONCURRENCY,
        "requests": sum(len(a) for a in outcome["results"].values()),
        "seconds": round(outcome["elapsed"], 1),
        "5xx_other_than_busy": server_errors,
        "503_busy": busy,
        "client_errors": dict(outcome["failures"]),
        "valid_not_answered": valid_unanswered,
        "idle_rss_mb": round(idle["VmRSS"] / 1024, 1),
        "peak_rss_mb": round(after["VmHWM"] / 1024, 1),
        "rss_after_mb": round(after["VmRSS"] / 1024, 1),
        "slow_clients_closed_after_s": [round(s, 1) for s in outcome["slow_seconds"]],
        "server_ready_after": alive,
    }
    print_table(f"mixed hostile load, concurrency {CONCURRENCY}, {SLOW_CLIENTS} slowloris connections", rows)
    for name, value in summary.items():
        print(f"{name}: {value}")
    write_result("hostile_load", rows, large_decodes=large, mixed=summary)
    if server_errors or outcome["failures"] or valid_unanswered or not alive:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
