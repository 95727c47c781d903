"""Time to turn an uploaded photo into the model's 28x28 inputs, as served and as served before.

    python -m benchmarks.preprocessing_speed [--repeats 30]

Photos: a real catalogue shot (60x80), a real studio shoe (136x102) and a real phone photo (320 px) from
the committed fixture of the shop export, the product photo the serving benchmarks send (388x444, a
Fashion-MNIST test image made into a photo), and a 12-megapixel JPEG made by enlarging that phone photo
(4000x3000, quality 90: the size a phone camera sends). "full size" is the first conversion (full-size
decode, corner trim at full size); "colour" the one served until data version v4 (a JPEG decoded in colour
at reduced scale, reduced to 112 px in colour, then made greyscale); "one view" the conversion since (a
JPEG's luma alone decoded at reduced scale, greyscale before the reduction to 112 px), served alone until
model 76753daf1e7d; "served" the views now: that one and, where the border is busy (the phone photo and
its enlargement), the item separated by GrabCut at `SEPARATED_VIEW_SIDE` from the photo decoded again in
colour. One thread, medians of interleaved runs. Prints a table and writes
benchmarks/results/preprocessing_speed.json.
"""

import argparse
import io
import time
from pathlib import Path

import torch
from PIL import Image

from benchmarks.common import median, percentile, print_table, write_result
from support.product_photos import product_photo
from text_recognizer.datasets.fashion_mnist import load_fashion_mnist
from text_recognizer.datasets.shop_photos import iter_image_bytes, read_photos
from text_recognizer.preprocessing import (
    JPEG_FORMATS,
    SEPARATED_VIEW_SIDE,
    SERVING_CONVERSION,
    Conversion,
    fashion_mnist_style,
    flattened,
    image_bytes_to_input,
    image_bytes_to_views,
)

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "shop_photos"
FULL_SIZE = Conversion(work_side=100_000)


def full_decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def colour_working_image(data: bytes) -> Image.Image:
    """A photo in colour at the working size, as the conversion served until data version v4 had it: a
    JPEG decoded at reduced scale down to twice the working size, in colour."""
    upload = Image.open(io.BytesIO(data))
    if upload.format in JPEG_FORMATS:
        upload.draft(upload.mode, (2 * SERVING_CONVERSION.work_side,) * 2)
    image = flattened(upload)
    image.thumbnail((SERVING_CONVERSION.work_side,) * 2, Image.Resampling.LANCZOS, reducing_gap=2.0)
    return image


def serving_photo() -> bytes:
    """The product photo the serving benchmarks send (388x444 JPEG): the first test image as a photo."""
    return product_photo(load_fashion_mnist().test.images[0].numpy(), seed=10)


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
        "product photo 388x444": serving_photo(),
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
        "full_size": lambda data: fashion_mnist_style(full_decode(data), FULL_SIZE),
        "colour": lambda data: fashion_mnist_style(colour_working_image(data)),
        "one_view": image_bytes_to_input,
        "served": lambda data: image_bytes_to_views(data, separated_view_side=SEPARATED_VIEW_SIDE),
    }
    rows = []
    for name, data in sample_photos().items():
        timings: dict[str, list[float]] = {key: [] for key in pipelines}
        views = len(pipelines["served"](data))
        for _ in range(args.repeats):  # interleaved, so load on the machine hits all alike
            for key, pipeline in pipelines.items():
                started = time.perf_counter()
                pipeline(data)
                timings[key].append((time.perf_counter() - started) * 1000)
        served = median(timings["served"])
        rows.append(
            {
                "photo": name,
                "bytes": len(data),
                "served_views": views,
                **{f"{key}_p50_ms": round(median(timings[key]), 2) for key in pipelines},
                "served_p99_ms": round(percentile(timings["served"], 0.99), 2),
                "served/one_view": round(served / median(timings["one_view"]), 2),
                "served/colour": round(served / median(timings["colour"]), 2),
                "served/full_size": round(served / median(timings["full_size"]), 2),
            }
        )
    print_table("Photo to 28x28 input, one thread (ms)", rows)
    write_result("preprocessing_speed", rows, repeats=args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
