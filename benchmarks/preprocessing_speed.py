"""Time to turn an uploaded photo into the model's 28x28 input, before and after item separation.

    python -m benchmarks.preprocessing_speed [--repeats 30]

Photos: a real catalogue shot (60x80), a real studio shoe (136x102) and a real phone photo (320 px) from
the committed fixture of the shop export, and a 12-megapixel JPEG made by enlarging that phone photo
(4000x3000, quality 90: the size a phone camera sends). "before" is the conversion this project served
until now (full-size decode, corner trim at full size); "after" is the serving conversion (reduced JPEG
decode, reduced to 112 px before the trim). One thread, medians of interleaved runs. Prints a table and writes
benchmarks/results/preprocessing_speed.json.
"""

import argparse
import io
import time
from pathlib import Path

import torch
from PIL import Image

from benchmarks.common import median, percentile, print_table, write_result
from text_recognizer.datasets.shop_photos import iter_image_bytes, read_photos
from text_recognizer.preprocessing import Conversion, fashion_mnist_style, image_bytes_to_input

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "shop_photos"
BEFORE = Conversion(work_side=100_000)


def full_decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def sample_photos() -> dict[str, bytes]:
    photos = read_photos(FIXTURE)
    first = {
        source: next(p.image for p in photos if p.source == source)
        for source in ("catalogue", "shoes", "phone")
    }
    images = dict(iter_image_bytes(FIXTURE, first.values()))
    phone = Image.open(io.BytesIO(images[first["phone"]])).convert("RGB")
    large = io.BytesIO()
    phone.resize(
        (4000, 3000) if phone.width >= phone.height else (3000, 4000), Image.Resampling.BICUBIC
    ).save(large, "JPEG", quality=90)
    return {
        "catalogue shot 60x80": images[first["catalogue"]],
        "studio shoe 136x102": images[first["shoes"]],
        "phone photo 320 px": images[first["phone"]],
        "12-megapixel JPEG": large.getvalue(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pipelines = {
        "before": lambda data: fashion_mnist_style(full_decode(data), BEFORE),
        "after": image_bytes_to_input,
    }
    rows = []
    for name, data in sample_photos().items():
        timings: dict[str, list[float]] = {key: [] for key in pipelines}
        for _ in range(args.repeats):  # interleaved, so load on the machine hits both alike
            for key, pipeline in pipelines.items():
                started = time.perf_counter()
                pipeline(data)
                timings[key].append((time.perf_counter() - started) * 1000)
        rows.append(
            {
                "photo": name,
                "bytes": len(data),
                "before_p50_ms": round(median(timings["before"]), 2),
                "after_p50_ms": round(median(timings["after"]), 2),
                "after_p99_ms": round(percentile(timings["after"], 0.99), 2),
                "after/before": round(median(timings["after"]) / median(timings["before"]), 2),
            }
        )
    print_table("Photo to 28x28 input, one thread (ms)", rows)
    write_result("preprocessing_speed", rows, repeats=args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
