"""Turning images into network input: the one place training, evaluation and serving share.

Two stages: an uploaded photo becomes a Fashion-MNIST-style uint8 28x28 image (`image_bytes_to_input`),
and uint8 images become normalized float tensors (`normalize`, with statistics from the training split).
"""

import io
import struct
from dataclasses import asdict, dataclass
from types import ModuleType

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image, ImageOps, UnidentifiedImageError


@dataclass(frozen=True)
class Normalization:
    """Per-dataset pixel statistics (on the 0..1 scale), computed from the training split only."""

    mean: float
    std: float

    @classmethod
    def fit(cls, images: torch.Tensor) -> "Normalization":
        pixels = images.double() / 255.0
        return cls(mean=float(pixels.mean()), std=float(pixels.std()))

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def as_image_batch(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Accept (H, W), (N, H, W) or (N, 1, H, W) uint8 images; return a (N, 1, H, W) uint8 tensor."""
    batch = torch.as_tensor(images)
    if batch.dtype != torch.uint8:
        raise TypeError(f"images must be uint8 (0..255), got {batch.dtype}")
    if batch.dim() == 2:
        batch = batch.unsqueeze(0)
    if batch.dim() == 3:
        batch = batch.unsqueeze(1)
    if batch.dim() != 4 or batch.shape[1] != 1:
        raise ValueError(
            f"expected (H, W), (N, H, W) or (N, 1, H, W) grayscale images, got {tuple(batch.shape)}"
        )
    return batch


def normalize(images: torch.Tensor, normalization: Normalization) -> torch.Tensor:
    """Scale a uint8 (N, 1, H, W) batch to float and standardize it with the training statistics."""
    return (images.float() / 255.0 - normalization.mean) / normalization.std


# --- Uploaded photos -> Fashion-MNIST-style 28x28 images ----------------------------------------------

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")
# JPEGs as Pillow names them: MPO is a JPEG with more pictures after the first (phone cameras write it);
# the first picture is decoded as any JPEG is.
JPEG_FORMATS = ("JPEG", "MPO")
# Opening a PNG walks every chunk before its image data: a 1.2 MB file of tiny chunks took 0.27 s (found
# in review). Real files have a handful (header, palette, colour profile, text).
MAX_PNG_CHUNKS_BEFORE_DATA = 1000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DEFAULT_MAX_PIXELS = 40_000_000  # a JPEG is decoded at reduced scale: a 40-megapixel photo costs little
# Other formats decode every pixel at 4 bytes each: at this cap one decode peaks near 70 MB and 0.25 s
# (a 6000x6000 white WebP of 38 bytes took 205 MB and 0.8 s); 4000x3000 still passes.
MAX_FULL_DECODE_PIXELS = 12_000_000
# A JPEG header can claim any size; the decoder then pads the missing data with grey. Measured: a uniform
# white 4000x3000 JPEG, progressive and optimised, still takes a byte per 169 pixels; claiming more than
# 4096 pixels per byte of file is a lie (a 600-byte file said to be 12 megapixels).
MAX_JPEG_PIXELS_PER_BYTE = 4096
# Formats Pillow cannot open but people send (phone photos, vector logos): named in a 415, not "not an image".
SNIFFED_FORMATS = {b"ftypheic": "HEIC", b"ftypheix": "HEIC", b"ftyphevc": "HEIC", b"ftypmif1": "HEIF",
                   b"ftypmsf1": "HEIF", b"ftypavif": "AVIF", b"ftypavis": "AVIF"}  # fmt: skip
SIDE = 28
# Fashion-MNIST trimmed edges "close to the colour of the corner pixels" with a 5% distance threshold.
TRIM_THRESHOLD = 0.05 * 255
# A border is busy when at least this share of its pixels is far (TRIM_THRESHOLD) from the corner colour:
# a phone photo's bed, floor or hanger, not a catalogue shot's backdrop. Then the item is separated from
# its background (`separated`) before the trim.
BUSY_BORDER_SHARE = 0.3
GRABCUT_ITERATIONS = 3
GRABCUT_MARGIN = 0.05  # GrabCut starts from the image less this share of each side: the item is inside
MIN_ITEM_SHARE = 0.02  # a separation that keeps less of the image than this is not used


class ImageError(ValueError):
    """An upload that cannot be turned into a model input; `code` is stable for API clients."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, colour: bool = False) -> Image.Image:
    """Open and decode an upload (first frame of a GIF), refusing what is not a usable image.

    The pixel count is checked from the header, before decoding, so a decompression bomb costs nothing.
    A JPEG is decoded at reduced scale, a colour one as its luma plane alone unless `colour` (`draft`):
    a 12-megapixel photo costs a fraction of a full decode and of its memory. Other formats are decoded
    in full, so their cap (`MAX_FULL_DECODE_PIXELS`) is lower.
    """
    if not data:
        raise ImageError("empty_file", "the uploaded file is empty")
    refuse_chunk_floods(data)
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise ImageError("image_too_large", f"the image has more than {max_pixels} pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        known = sniffed_format(data)
        if known:
            raise ImageError(
                "unsupported_format",
                f"{known} images are not accepted; send one of {', '.join(ACCEPTED_FORMATS)}",
            ) from None
        raise ImageError(
            "invalid_image", f"not a readable image; send one of {', '.join(ACCEPTED_FORMATS)}"
        ) from None
    if image.format not in (*ACCEPTED_FORMATS, *JPEG_FORMATS):
        raise ImageError(
            "unsupported_format",
            f"{image.format} images are not accepted; send one of {', '.join(ACCEPTED_FORMATS)}",
        )
    if image.width * image.height > max_pixels:
        raise ImageError(
            "image_too_large",
            f"the image is {image.width}x{image.height} pixels; the limit is {max_pixels} pixels",
        )
    if image.format not in JPEG_FORMATS and image.width * image.height > MAX_FULL_DECODE_PIXELS:
        raise ImageError(
            "image_too_large",
            f"the image is {image.width}x{image.height} pixels; {image.format} images are decoded in full, "
            f"limit {MAX_FULL_DECODE_PIXELS} pixels (JPEG: {max_pixels})",
        )
    if image.format in JPEG_FORMATS:
        if image.width * image.height > len(data) * MAX_JPEG_PIXELS_PER_BYTE:
            raise ImageError(
                "corrupt_image",
                f"the JPEG header claims {image.width}x{image.height} pixels, more than its {len(data)} "
                "bytes can hold",
            )
        draft(image, colour)
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageError("corrupt_image", f"the image data is truncated or corrupt ({error})") from None
    return image


def refuse_chunk_floods(data: bytes) -> None:
    """A PNG with more than `MAX_PNG_CHUNKS_BEFORE_DATA` chunks before its image data is refused before
    Pillow walks them; counting them here reads 8 bytes a chunk."""
    if not data.startswith(PNG_SIGNATURE):
        return
    position, chunks = len(PNG_SIGNATURE), 0
    while position + 8 <= len(data) and data[position + 4 : position + 8] not in (b"IDAT", b"IEND"):
        chunks += 1
        if chunks > MAX_PNG_CHUNKS_BEFORE_DATA:
            raise ImageError(
                "corrupt_image",
                f"the PNG has more than {MAX_PNG_CHUNKS_BEFORE_DATA} chunks before its image data",
            )
        position += 12 + int.from_bytes(data[position : position + 4], "big")


def draft(jpeg: Image.Image, colour: bool = False) -> None:
    """Set a JPEG to decode at 1/2, 1/4 or 1/8 scale, where that still covers twice the working size, and
    a colour (YCbCr) one, unless `colour`, to decode its luma plane alone: the conversion is greyscale
    (colour only separates the item from a busy background), so one channel is decoded and resized
    instead of three (CMYK stays CMYK). Down to the working size itself would be faster again, but then a
    JPEG's 28x28 input often differs from the same photo's as a PNG (a row more or less after the trim;
    15 of 100 test photos by over 6 grey levels)."""
    side = 2 * SERVING_CONVERSION.work_side
    jpeg.draft("RGB" if colour else "L", (side, side))


def decoded_pixels(data: bytes) -> int:
    """How many pixels `decode_image` would decode (a JPEG at its reduced scale), read from the header
    alone; 0 for what it refuses before decoding or cannot read (it then says why, at no cost)."""
    try:
        refuse_chunk_floods(data)  # ImageError is a ValueError
        with Image.open(io.BytesIO(data)) as image:
            if image.format in JPEG_FORMATS:
                draft(image)
            pixels = image.width * image.height
            return pixels if pixels <= MAX_FULL_DECODE_PIXELS else 0
    except (Image.DecompressionBombError, UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return 0


def sniffed_format(data: bytes) -> str | None:
    """The name of a known format Pillow cannot open (HEIC, HEIF, AVIF, SVG), from its first bytes."""
    if data[4:12] in SNIFFED_FORMATS:
        return SNIFFED_FORMATS[data[4:12]]
    head = data[:1024].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        return "SVG"
    return None


def flattened(image: Image.Image) -> Image.Image:
    """An 8-bit RGB or L image after EXIF orientation (applied to `image` itself); alpha is flattened
    onto a white background.

    Handles palette, 16-bit, 32-bit and float, CMYK and alpha modes. Malformed EXIF is refused: reading
    or rewriting it raises assorted errors, and a wrong orientation would turn the item on its side.
    """
    try:
        ImageOps.exif_transpose(image, in_place=True)  # a copy would double a large image's memory
    except (SyntaxError, struct.error, ValueError, TypeError, KeyError, IndexError, OSError) as error:
        raise ImageError("corrupt_image", f"the image's EXIF metadata is malformed ({error})") from None
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if pixels.max() > 255 else 255.0
        return Image.fromarray(np.clip(pixels * (255.0 / top), 0, 255).round().astype(np.uint8))
    if image.mode == "RGBA" and image.getchannel("A").getextrema()[0] == 255:
        # Opaque (screenshots, exports): the same pixels without compositing, 37 against 128 ms at 12 MP.
        return image.convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image if image.mode in ("RGB", "L") else image.convert("RGB")


@dataclass(frozen=True)
class Conversion:
    """How a photo becomes a Fashion-MNIST-style image. The defaults are what training and serving use,
    each step measured on the photo validation split (`./tasks/benchmark.sh preprocessing_variants`).

    Separating the item from its background with a border-seeded colour model was measured too, and made
    every photo domain worse (phone photos 50.8% -> 45.8%). GrabCut where the border is busy
    (`separation_side`) makes the second view a model can average with (`image_bytes_to_views`).
    """

    work_side: int = 112  # the photo is first reduced to this longest side: speed, and enough for 28
    # The dataset's resize, skipping rows and columns instead of filtering: no better on the photo
    # validation split (small CNN, 3 seeds: mean 0.797 vs 0.800), worse with sharpening (0.795).
    subsample: bool = False
    # The dataset's sharpening (unsharp masking, Gaussian sigma 1.0) after resizing: better there (0.806),
    # but the shipped network trained on sharpened photos (data version v3) failed two behaviour gates
    # (JPEG re-encoding changed 4.3% of predictions, bar 4%; occlusion 69%, bar 70%), so it is not served.
    sharpen: bool = False
    # Where the border is busy (`BUSY_BORDER_SHARE`), separate the item from its background with GrabCut
    # (OpenCV) on the working image in colour, reduced to this side; 0: never.
    # A small CNN trained on each conversion (3 seeds, photo validation split) gained on phone photos:
    # 49.0% without, 52.7% with GrabCut in greyscale, in colour 65.2% at 112 px (15.6 ms a phone photo),
    # 64.5% at 64 px (4.2 ms), 62.8% at 48 px (2.1 ms), the other domains within a point. The shipped
    # network did not, fine-tuned 8 epochs on photos converted at 64 px (phone validation 82.7% against
    # 83.0% without), so the data versions convert without it, and serving averages it in as a second
    # view (`image_bytes_to_views`).
    separation_side: int = 0


SERVING_CONVERSION = Conversion()
# The separated view's GrabCut side that evaluation splits hold and promotion tries
# (`ClassifierModel.separated_view_side`): GrabCut 4.2 ms a phone photo, the whole view 5.8 ms.
SEPARATED_VIEW_SIDE = 64
# The sides a model may name: below this GrabCut gets too few pixels to separate anything; the working
# image is never larger than `Conversion.work_side`.
MIN_SEPARATION_SIDE = 16


def gaussian_blur(values: np.ndarray, sigma: float) -> np.ndarray:
    """A Gaussian blur of a float image over a black surround (Pillow blurs no float images)."""
    radius = 3 * int(np.ceil(sigma))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-(offsets**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    padded = np.pad(values, radius)
    rows = sliding_window_view(padded, kernel.size, axis=1) @ kernel
    blurred: np.ndarray = sliding_window_view(rows, kernel.size, axis=0) @ kernel
    return blurred


def longest_side(size: tuple[int, int], side: int) -> tuple[int, int]:
    """`size` scaled so that its longest edge is `side` (each edge at least 1)."""
    scale = side / max(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def working_image(
    image: Image.Image, conversion: Conversion = SERVING_CONVERSION, colour: bool = False
) -> Image.Image:
    """What the conversion works from, made from a `flattened` image: greyscale unless `colour` (then
    RGB, or L for a greyscale image), and no larger than its working size. Flattening is the caller's,
    once for both working images: done again on a converted copy, an orientation that EXIF transposing
    reads but does not remove (an XMP `tiff:Orientation="6 "`) was applied twice (found in review)."""
    if not colour:
        image = image.convert("L")  # before resizing: one channel to resize, not three
    if max(image.size) > conversion.work_side:
        # Whole blocks of pixels are averaged first where the photo is 3x the working size or more, then
        # Lanczos does the rest: 0.25 ms for a 388x444 product photo, against 0.64 ms with Lanczos over
        # the whole reduction (reducing_gap 2.0 averages blocks only from 4x). The export's photos (at
        # most 320 px) are all under 3x: this changes nothing for them. reducing_gap 1.0 was faster
        # again (0.16 ms), but a JPEG's 28x28 image then differed from its PNG's more often.
        image = image.resize(
            longest_side(image.size, conversion.work_side), Image.Resampling.LANCZOS, reducing_gap=1.5
        )
    return image


def upload_working_image(
    data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, conversion: Conversion = SERVING_CONVERSION
) -> Image.Image:
    """The working image of an upload: greyscale; in colour where its border is busy and `conversion`
    separates (`colour_working_image`). Converting it gives the upload's 28x28 image (no metadata, no
    bytes beyond the pixels)."""
    flat = flattened(decode_image(data, max_pixels))
    grey = working_image(flat, conversion)
    return colour_working_image(flat, data, max_pixels, conversion) if separates(grey, conversion) else grey


def colour_working_image(
    flat: Image.Image, data: bytes, max_pixels: int, conversion: Conversion
) -> Image.Image:
    """The working image of an upload in colour, as separation needs it, from the decoded upload after
    `flattened` (which the greyscale working image came from too: flattening a 12-megapixel PNG costs
    0.13 s). A JPEG decoded as its luma alone for speed (`flattened` returns it as it is, still named a
    JPEG) is decoded a second time, in colour; a CMYK one, which `flattened` converts to RGB (no longer
    named a JPEG), already has its colours at the same scale."""
    if flat.format in JPEG_FORMATS:
        flat = flattened(decode_image(data, max_pixels, colour=True))
    return working_image(flat, conversion, colour=True)


def separates(grey: Image.Image, conversion: Conversion) -> bool:
    """Whether `conversion` separates the item in this greyscale working image: it is not a 28x28 input
    and its border is busy."""
    return bool(conversion.separation_side) and grey.size != (SIDE, SIDE) and busy_border(np.asarray(grey))


def busy_border(pixels: np.ndarray) -> bool:
    """Whether at least `BUSY_BORDER_SHARE` of a greyscale image's border is far from its corner colour."""
    pixels = pixels.astype(np.float64)
    background = np.median([pixels[0, 0], pixels[0, -1], pixels[-1, 0], pixels[-1, -1]])
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return bool(np.mean(np.abs(border - background) > TRIM_THRESHOLD) >= BUSY_BORDER_SHARE)


def separated(pixels: np.ndarray, colour: Image.Image, side: int) -> np.ndarray | None:
    """`pixels` (greyscale, of the same size as `colour`) with the background GrabCut finds in `colour`,
    reduced to `side`, painted white behind a dark item and black behind a light one, so that the trim
    and the negation that follow see a plain background; None where GrabCut keeps less than
    `MIN_ITEM_SHARE` of the image or cannot run (nothing separated)."""
    small = colour.convert("RGB")
    if max(small.size) > side:
        small = small.resize(longest_side(small.size, side), Image.Resampling.BILINEAR)
    width, height = small.size
    margin_x, margin_y = max(1, round(width * GRABCUT_MARGIN)), max(1, round(height * GRABCUT_MARGIN))
    if min(width, height) <= 2 * max(margin_x, margin_y) + 2:
        return None  # too small to hold a rectangle inside its margins
    mask = np.zeros((height, width), np.uint8)
    rectangle = (margin_x, margin_y, width - 2 * margin_x, height - 2 * margin_y)
    models = np.zeros((1, 65)), np.zeros((1, 65))
    cv2 = opencv()

    # GrabCut starts from k-means with OpenCV's random numbers: seeded, the same image gives the same mask.
    cv2.setRNGSeed(0)  # the calling thread's (OpenCV keeps one state per thread); nothing else here draws
    try:
        bgr = np.ascontiguousarray(np.asarray(small)[:, :, ::-1])
        cv2.grabCut(bgr, mask, rectangle, *models, GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_RECT)
    except cv2.error:  # for example too few distinct colours for its colour models
        return None
    item = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
    if item.sum() < MIN_ITEM_SHARE * item.size:
        return None
    full = Image.fromarray(item.astype(np.uint8) * 255).resize(colour.size, Image.Resampling.NEAREST)
    item = np.asarray(full) > 0
    painted = pixels.copy()
    painted[~item] = 255.0 if pixels[item].mean() < 128 else 0.0
    return painted


def opencv() -> ModuleType:
    """OpenCV, imported when first needed (0.06 s): only separation uses it. A service whose model
    separates calls this before it says it is ready, so a missing OpenCV stops it at start, by name."""
    try:
        import cv2
    except ImportError as error:
        raise ImportError(
            f"separating an item from its background needs OpenCV (opencv-python-headless): {error}"
        ) from error
    return cv2


def fashion_mnist_style(image: Image.Image, conversion: Conversion = SERVING_CONVERSION) -> np.ndarray:
    """Convert a photo the way Fashion-MNIST was made from product photos; 28x28 inputs pass unchanged.

    Steps (from the dataset's README): trim the border close to the corner colour, resize the longest
    edge to 28, extend the shorter edge to 28 keeping the item centred, negate (when the background is
    light, as in product photos), 8-bit grayscale; then stretch to full intensity, as the dataset is.
    Before them, where `conversion` separates and the border is busy, the item is separated from its
    background (`separated`, in colour where `image` has it).
    """
    image = flattened(image)
    work = working_image(image, conversion)
    if separates(work, conversion):
        work = working_image(image, conversion, colour=True)
    return from_working_image(work, conversion)


def from_working_image(work: Image.Image, conversion: Conversion = SERVING_CONVERSION) -> np.ndarray:
    """`fashion_mnist_style` of a working image (`working_image`, `upload_working_image`), which it does
    not reduce again. Whether to separate is decided again here, on the image made greyscale, so a stored
    working image converts as its upload did."""
    return converted_working_image(work, conversion)[0]


def converted_working_image(work: Image.Image, conversion: Conversion) -> tuple[np.ndarray, bool]:
    """`from_working_image`'s 28x28 image, and whether its item was separated from the background."""
    grey = work.convert("L") if work.mode != "L" else work
    if grey.size == (SIDE, SIDE):
        return np.asarray(grey, dtype=np.uint8), False
    pixels = np.asarray(grey, dtype=np.float64)
    painted = separated(pixels, work, conversion.separation_side) if separates(grey, conversion) else None
    if painted is not None:
        pixels = painted
    corners = np.array([pixels[0, 0], pixels[0, -1], pixels[-1, 0], pixels[-1, -1]])
    background = float(np.median(corners))
    # Negate a light background (measured from the corners, so an off-white one also becomes 0); a dark
    # background is already Fashion-MNIST's polarity. Trim what is close to the corner colour.
    values = np.clip(background - pixels if background > 127 else pixels - background, 0, None)
    rows, cols = np.nonzero(values > TRIM_THRESHOLD)
    if rows.size:
        values = values[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    height, width = values.shape
    size = longest_side((width, height), SIDE)
    resampling = Image.Resampling.NEAREST if conversion.subsample else Image.Resampling.LANCZOS
    resized = np.asarray(Image.fromarray(values.astype(np.float32), mode="F").resize(size, resampling))
    if conversion.sharpen:
        resized = 2 * resized - gaussian_blur(resized, sigma=1.0)  # unsharp masking
    result = np.zeros((SIDE, SIDE))
    top, left = (SIDE - size[1]) // 2, (SIDE - size[0]) // 2
    result[top : top + size[1], left : left + size[0]] = np.clip(resized, 0, None)
    # Every Fashion-MNIST image peaks at 250-255, so stretch the item to full intensity: a tinted or
    # dim photo then looks like the training data.
    peak = result.max()
    if peak > 0:
        result = result * (255.0 / peak)
    return result.round().astype(np.uint8), painted is not None


def image_bytes_to_input(
    data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, conversion: Conversion = SERVING_CONVERSION
) -> np.ndarray:
    """An uploaded file's bytes to the uint8 (28, 28) array a Fashion-MNIST model expects."""
    return from_working_image(upload_working_image(data, max_pixels, conversion), conversion)


def image_bytes_to_views(
    data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, separated_view_side: int = 0
) -> np.ndarray:
    """An upload's views, uint8 (V, 28, 28), whose logits a model averages (`upload_views`)."""
    return upload_views(data, max_pixels, separated_view_side)[1]


def upload_views(
    data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, separated_view_side: int = 0
) -> tuple[Image.Image, np.ndarray]:
    """An upload's greyscale working image (what feedback keeps of it) and its views, uint8 (V, 28, 28):
    the image as `image_bytes_to_input` converts it and, where `separated_view_side` is set, the border
    is busy and GrabCut separates the item at that side (`separated`), a second one, so separated.

    Why both, not the separated one alone: a network trained on the first kind was right on more phone
    validation photos with the two averaged than with either (`ClassifierModel.separated_view_side`).
    """
    flat = flattened(decode_image(data, max_pixels))
    grey = working_image(flat)
    plain = from_working_image(grey)
    separation = Conversion(separation_side=separated_view_side)
    if not separates(grey, separation):
        return grey, plain[None]
    second, separated_item = converted_working_image(
        colour_working_image(flat, data, max_pixels, separation), separation
    )
    return grey, np.stack([plain, second]) if separated_item else plain[None]
