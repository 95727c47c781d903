"""Hostile uploads, made on demand (the corpus is this script, not committed binaries).

Each maker returns the bytes of one file that once broke the service or cost it too much; `mutations`
derives thousands of seeded corruptions of valid files for fuzzing the preprocessing.
"""

import io
import struct
from collections.abc import Iterator

import numpy as np
from PIL import Image

ORIENTATION, X_RESOLUTION = 0x0112, 0x011A
SHORT, SRATIONAL = 3, 10


def tiff_ifd(entries: list[tuple[int, int, int, bytes]]) -> bytes:
    """A little-endian TIFF header and one IFD of (tag, type, count, value bytes) entries."""
    data_offset = 8 + 2 + len(entries) * 12 + 4
    ifd, extra = struct.pack("<H", len(entries)), b""
    for tag, kind, count, value in entries:
        if len(value) <= 4:
            ifd += struct.pack("<HHI", tag, kind, count) + value.ljust(4, b"\0")
        else:
            ifd += struct.pack("<HHII", tag, kind, count, data_offset + len(extra))
            extra += value
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + extra


def encode(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def exif_negative_rational_jpeg() -> bytes:
    """Orientation 6 beside a resolution stored as a negative signed rational: rewriting the EXIF while
    applying the orientation fails (`struct.error`)."""
    exif = b"Exif\x00\x00" + tiff_ifd(
        [
            (ORIENTATION, SHORT, 1, struct.pack("<H", 6)),
            (X_RESOLUTION, SRATIONAL, 1, struct.pack("<ii", -1, 1)),
        ]
    )
    return encode(Image.new("RGB", (40, 30), "white"), "JPEG", exif=exif)


def malformed_exif_webp() -> bytes:
    """A WebP whose EXIF chunk is not TIFF data (`SyntaxError` when read)."""
    return encode(Image.new("RGB", (40, 30), "white"), "WEBP", exif=b"garbage-not-tiff")


def white_webp(side: int = 6000) -> bytes:
    """`side` x `side` white pixels in a lossless WebP of about a kilobyte: small upload, big decode."""
    return encode(Image.new("RGB", (side, side), "white"), "WEBP", lossless=True, quality=100, method=0)


def valid_seeds() -> dict[str, bytes]:
    """Small valid files of every accepted format, with EXIF where the format carries it."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (48, 36, 3), dtype=np.uint8))
    exif = b"Exif\x00\x00" + tiff_ifd([(ORIENTATION, SHORT, 1, struct.pack("<H", 6))])
    return {
        "jpeg": encode(image, "JPEG", exif=exif),
        "progressive_jpeg": encode(image, "JPEG", progressive=True),
        "png": encode(image, "PNG", exif=exif),
        "webp": encode(image, "WEBP", exif=exif),
        "lossless_webp": encode(image, "WEBP", lossless=True),
        "gif": encode(image.convert("P"), "GIF"),
        "bmp": encode(image, "BMP"),
    }


def mutations(count: int, seed: int = 0) -> Iterator[tuple[str, bytes]]:
    """`count` seeded corruptions of the valid files: flipped bytes, overwritten runs, truncations,
    duplicated or deleted spans."""
    rng = np.random.default_rng(seed)
    seeds = valid_seeds()
    names = sorted(seeds)
    for number in range(count):
        name = names[number % len(names)]
        data = bytearray(seeds[name])
        for _ in range(int(rng.integers(1, 4))):
            if not data:
                break
            kind = int(rng.integers(0, 5))
            at = int(rng.integers(0, len(data)))
            if kind == 0:
                data[at] ^= 1 << int(rng.integers(0, 8))
            elif kind == 1:
                span = int(rng.integers(1, 16))
                data[at : at + span] = rng.integers(0, 256, span, dtype=np.uint8).tobytes()
            elif kind == 2:
                del data[at:]
            elif kind == 3:
                data[at:at] = data[at : at + int(rng.integers(1, 64))]
            else:
                del data[at : at + int(rng.integers(1, 64))]
        yield f"{name}#{number}", bytes(data)


def lying_jpeg(claimed: tuple[int, int] = (4000, 3000)) -> bytes:
    """A 64x48 JPEG whose frame header claims `claimed` (width, height): the decoder pads it with grey."""
    data = bytearray(encode(Image.new("RGB", (64, 48), "white"), "JPEG"))
    frame = data.index(b"\xff\xc0")  # SOF0: marker, length (2), precision (1), height (2), width (2)
    data[frame + 5 : frame + 9] = struct.pack(">HH", claimed[1], claimed[0])
    return bytes(data)


def heic_header() -> bytes:
    """The start of an iPhone photo: an ISO-BMFF `ftyp` box with the brand heic (Pillow cannot open it)."""
    return b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(100)


def svg_logo() -> bytes:
    return b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"></svg>'
