"""Uploaded photos become Fashion-MNIST-style inputs: modes, orientation, and refusals with clear codes."""

import io
import struct
import zlib
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps, PngImagePlugin

from support.hostile_uploads import (
    exif_negative_rational_jpeg,
    heic_header,
    lying_jpeg,
    malformed_exif_webp,
    mutations,
    svg_logo,
    white_webp,
)
from support.product_photos import ROTATIONS, product_photo
from text_recognizer.datasets.idx import read_idx
from text_recognizer.datasets.shop_photos import iter_image_bytes, read_photos
from text_recognizer.preprocessing import (
    Conversion,
    ImageError,
    busy_border,
    decode_image,
    decoded_pixels,
    fashion_mnist_style,
    from_working_image,
    image_bytes_to_input,
    image_bytes_to_views,
    separated,
    upload_working_image,
)

from .conftest import FIXTURES_DIR

TEST_IMAGES = read_idx(FIXTURES_DIR / "t10k-images-idx3-ubyte.gz").numpy()


def encode(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def photo_of(index: int) -> Image.Image:
    """A clean product photo (PNG-decoded, upright, without EXIF) of fixture test image `index`."""
    photo = Image.open(io.BytesIO(product_photo(TEST_IMAGES[index], seed=index, image_format="PNG")))
    return ImageOps.exif_transpose(photo).convert("RGB")


SHOP_FIXTURES = FIXTURES_DIR.parent / "shop_photos"
SEPARATION = Conversion(separation_side=64)  # the separated view's conversion (see `Conversion`)


def shop_photos(source: str) -> list[bytes]:
    """The real photos of one source in the committed fixture of the shop export."""
    names = [photo.image for photo in read_photos(SHOP_FIXTURES) if photo.source == source]
    return [data for _, data in iter_image_bytes(SHOP_FIXTURES, names)]


def separated_input(data: bytes) -> np.ndarray:
    return image_bytes_to_input(data, conversion=SEPARATION)


def views(data: bytes) -> np.ndarray:
    return image_bytes_to_views(data, separated_view_side=64)


def test_separation_works_on_busy_backgrounds_and_only_there(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real phone photos (a bed, a floor, a hanger behind the item) have busy borders: their working
    image stays in colour for GrabCut, and the background it paints out changes their 28x28 input
    (against the same colour path where GrabCut fails and nothing is painted). Studio shoes on a plain
    backdrop, and catalogue shots whose working image is greyscale (plain border), convert exactly as the
    served conversion, which separates nothing, converts them."""
    phone = shop_photos("phone")
    assert len(phone) == 29
    separated_inputs = [separated_input(data) for data in phone]
    for data in phone:
        assert upload_working_image(data, conversion=SEPARATION).mode == "RGB"
        assert upload_working_image(data).mode == "L"

    def fail(*_: object) -> None:
        raise cv2.error("GrabCut refused")

    monkeypatch.setattr(cv2, "grabCut", fail)
    changed = [
        not np.array_equal(separated_input(data), ours)
        for data, ours in zip(phone, separated_inputs, strict=True)
    ]
    assert sum(changed) >= 25  # 25 of the 29; on 4, GrabCut keeps under MIN_ITEM_SHARE: nothing painted
    plain = shop_photos("shoes") + shop_photos("catalogue")
    greyscale = [data for data in plain if upload_working_image(data, conversion=SEPARATION).mode == "L"]
    assert len(greyscale) >= len(plain) - 1  # one catalogue shot of the fixture has a busy border
    for data in greyscale:
        assert np.array_equal(separated_input(data), image_bytes_to_input(data))


def test_a_separated_photo_converts_the_same_every_time_and_from_its_working_image() -> None:
    """GrabCut starts from random numbers: seeded, the same photo gives the same input in any order and
    on several threads at once; and its working image, stored as a PNG (as feedback keeps one),
    converts to the same input."""
    phone = shop_photos("phone")[:8]
    first = [separated_input(data) for data in phone]
    with ThreadPoolExecutor(4) as pool:
        again = list(pool.map(separated_input, reversed(phone * 3)))[::-1]
    assert all(np.array_equal(a, b) for a, b in zip(first * 3, again, strict=True))
    for data, expected in zip(phone, first, strict=True):
        stored = encode(upload_working_image(data, conversion=SEPARATION), "PNG")
        assert np.array_equal(separated_input(stored), expected)
        assert np.array_equal(fashion_mnist_style(Image.open(io.BytesIO(stored)), SEPARATION), expected)
        assert np.array_equal(from_working_image(Image.open(io.BytesIO(stored)), SEPARATION), expected)


def test_an_upload_has_a_separated_view_only_where_its_border_is_busy_and_something_was_separated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`image_bytes_to_views`: the first view is the input as served; a second, the item separated at the
    given side, only for a busy border (the fixture's phone photos, not its studio shoes), only when a
    side is given, and only where GrabCut separated something (on 4 of the 29 it keeps too little; where
    it fails, on none); a 28x28 image is its only view."""
    phone = shop_photos("phone")
    counts = []
    for data in phone:
        views = image_bytes_to_views(data, separated_view_side=64)
        counts.append(len(views))
        assert views.dtype == np.uint8 and np.array_equal(views[0], image_bytes_to_input(data))
        if len(views) == 2:
            assert np.array_equal(views[1], separated_input(data))
        assert np.array_equal(image_bytes_to_views(data), views[:1])
    assert counts.count(2) == 25 and counts.count(1) == 4

    def fail(*_: object) -> None:
        raise cv2.error("GrabCut refused")

    monkeypatch.setattr(cv2, "grabCut", fail)
    assert all(len(image_bytes_to_views(data, separated_view_side=64)) == 1 for data in phone)
    for data in shop_photos("shoes"):
        assert np.array_equal(
            image_bytes_to_views(data, separated_view_side=64), image_bytes_to_input(data)[None]
        )
    small = encode(Image.fromarray(TEST_IMAGES[3]), "PNG")
    assert np.array_equal(image_bytes_to_views(small, separated_view_side=64), TEST_IMAGES[3][None])


def test_a_busy_png_is_flattened_once_and_an_opaque_one_not_composited(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found measuring a 12-megapixel RGBA PNG with a busy border: it was composited onto white twice,
    once per working image. Now once, in every path that makes both working images, and an opaque one
    (alpha 255 everywhere, as screenshots and exports are) not at all, with the views of the same photo
    in RGB."""
    photos = [ImageOps.exif_transpose(Image.open(io.BytesIO(data))) for data in shop_photos("phone")]
    photo = next(photo for photo in photos if len(views(encode(photo, "PNG"))) == 2)
    composites = []
    composite = Image.alpha_composite

    def counted(*images: Image.Image) -> Image.Image:
        composites.append(images)
        return composite(*images)

    monkeypatch.setattr(Image, "alpha_composite", counted)
    opaque = photo.convert("RGBA")
    translucent = opaque.copy()
    translucent.putpixel((opaque.width // 2, opaque.height // 2), (0, 0, 0, 128))  # one pixel
    for convert in (
        views,
        separated_input,
        lambda data: fashion_mnist_style(Image.open(io.BytesIO(data)), SEPARATION),
    ):
        composites.clear()
        assert np.array_equal(convert(encode(opaque, "PNG")), convert(encode(photo, "PNG")))
        assert not composites
        convert(encode(translucent, "PNG"))
        assert len(composites) == 1


@pytest.mark.parametrize("image_format", ["PNG RGBA", "PNG P", "JPEG CMYK"])
def test_an_orientation_is_applied_once_however_its_xmp_writes_it(image_format: str) -> None:
    """Found in review: flattening a converted copy again read an XMP orientation that EXIF transposing
    does not remove (`tiff:Orientation="6 "`, with a space) and turned the photo a second time."""
    photo = ImageOps.exif_transpose(Image.open(io.BytesIO(shop_photos("phone")[0]))).convert("RGB")
    photo = photo.crop((0, 0, photo.width, photo.height * 2 // 3))  # landscape: turned, it stands
    mode = image_format.split()[1]
    image = photo.quantize(64) if mode == "P" else photo.convert(mode)
    converted = []
    for written in ('tiff:Orientation="6"', 'tiff:Orientation="6 "'):
        xmp = f"<x:xmpmeta><rdf:RDF><rdf:Description {written}/></rdf:RDF></x:xmpmeta>"
        if image_format.startswith("PNG"):
            info = PngImagePlugin.PngInfo()
            info.add_itxt("XML:com.adobe.xmp", xmp)
            data = encode(image, "PNG", pnginfo=info)
        else:
            data = encode(image, "JPEG", xmp=xmp.encode())
        converted.append((upload_working_image(data, conversion=SEPARATION), views(data)))
    (working, expected), (again, seen) = converted
    assert working.height > working.width, "turned a quarter"
    assert again.size == working.size and np.array_equal(seen, expected)


def test_a_busy_border_is_one_far_from_the_corner_colour_in_at_least_30_percent() -> None:
    plain = np.full((40, 40), 240.0)
    assert not busy_border(plain)
    plain[0, :11] = 100  # one corner among them: the corners' median stays 240, 12 of 160 far (7.5%)
    assert not busy_border(plain)
    plain[0, :] = plain[-1, :] = 100  # all four corners 100: the sides' 76 of 160 are far (47.5%)
    assert busy_border(plain)
    tiny = Image.new("RGB", (6, 5), "white")
    assert separated(np.zeros((5, 6)), tiny, 64) is None  # too small: nothing separated


def test_fashion_mnist_sized_input_passes_through_unchanged() -> None:
    original = TEST_IMAGES[3]
    assert np.array_equal(image_bytes_to_input(encode(Image.fromarray(original), "PNG")), original)


def test_product_photo_comes_back_close_to_the_original() -> None:
    for index in range(0, 100, 10):
        restored = image_bytes_to_input(product_photo(TEST_IMAGES[index], seed=index))
        assert restored.shape == (28, 28) and restored.dtype == np.uint8
        difference = np.abs(restored.astype(int) - TEST_IMAGES[index].astype(int)).mean()
        assert difference < 30, f"image {index}: mean absolute difference {difference:.1f}"


@pytest.mark.parametrize("orientation", sorted(ROTATIONS))
def test_exif_orientation_is_applied(orientation: int) -> None:
    upright = photo_of(7)
    rotation = ROTATIONS[orientation]
    stored = upright.transpose(rotation) if rotation else upright
    exif = Image.Exif()
    exif[0x0112] = orientation
    rotated_bytes = encode(stored, "PNG", exif=exif)
    assert np.array_equal(image_bytes_to_input(rotated_bytes), image_bytes_to_input(encode(upright, "PNG")))


def as_mode(image: Image.Image, mode: str) -> Image.Image:
    if mode == "RGBA":  # transparent background instead of white
        rgba = image.convert("RGBA")
        pixels = np.asarray(rgba).copy()
        pixels[..., 3] = np.where(pixels[..., :3].min(axis=2) > 250, 0, 255)
        return Image.fromarray(pixels, "RGBA")
    if mode == "I;16":
        return Image.fromarray(np.asarray(image.convert("L")).astype(np.uint16) * 257)
    return image.convert(mode)


@pytest.mark.parametrize(
    ("mode", "image_format"),
    [("RGB", "JPEG"), ("RGB", "WEBP"), ("RGB", "BMP"), ("P", "GIF"), ("P", "PNG"), ("L", "PNG"),
     ("LA", "PNG"), ("RGBA", "PNG"), ("RGBA", "WEBP"), ("I;16", "PNG"), ("CMYK", "JPEG")],
)  # fmt: skip
def test_modes_and_formats_give_the_same_input(mode: str, image_format: str) -> None:
    photo = photo_of(11)
    reference = fashion_mnist_style(photo)
    options = {"quality": 95} if image_format in ("JPEG", "WEBP") else {}
    data = encode(as_mode(photo, mode), image_format, **options)
    converted = image_bytes_to_input(data)
    assert np.abs(converted.astype(int) - reference.astype(int)).mean() < 6


def test_gif_uses_the_first_frame() -> None:
    first, second = photo_of(1).convert("P"), Image.new("P", photo_of(1).size, 0)
    buffer = io.BytesIO()
    first.save(buffer, format="GIF", save_all=True, append_images=[second])
    assert np.array_equal(image_bytes_to_input(buffer.getvalue()), fashion_mnist_style(first))


def test_a_multi_picture_jpeg_is_its_first_picture() -> None:
    """Found in review: an MPO (a JPEG with more pictures after it, as some phone cameras write) was a
    415; it is decoded as a JPEG of its first picture."""
    first, second = photo_of(1).convert("RGB"), Image.new("RGB", photo_of(1).size, "white")
    mpo, jpeg = io.BytesIO(), io.BytesIO()
    first.save(mpo, format="MPO", save_all=True, append_images=[second])
    first.save(jpeg, format="JPEG")
    assert Image.open(io.BytesIO(mpo.getvalue())).format == "MPO"
    assert np.array_equal(image_bytes_to_input(mpo.getvalue()), image_bytes_to_input(jpeg.getvalue()))
    assert decoded_pixels(mpo.getvalue()) == decoded_pixels(jpeg.getvalue()) > 0


def test_a_colour_jpeg_is_decoded_as_its_luma_plane_at_reduced_scale() -> None:
    """The conversion is greyscale from the decode on: of a colour JPEG only the luma is decoded, at the
    largest DCT reduction that still covers twice the working size, and it gives the input that
    decoding it in full colour would, under two grey levels apart on average."""
    data = encode(photo_of(4).resize((1600, 1200)), "JPEG", quality=90)
    decoded = decode_image(data)
    assert decoded.mode == "L" and decoded.size == (400, 300)  # 1/4 scale: 1/8 would be under 224
    full_colour = Image.open(io.BytesIO(data)).convert("RGB")
    difference = image_bytes_to_input(data).astype(int) - fashion_mnist_style(full_colour).astype(int)
    assert np.abs(difference).mean() < 2


def test_a_png_of_many_chunks_is_refused_before_they_are_walked() -> None:
    """Found in review: opening a 1.2 MB PNG of 100,000 empty chunks took 0.27 s (and a 10 MB one about
    2 s), with no pixels to decode; now it is refused after counting 1,001 of them."""
    small = io.BytesIO()
    Image.new("L", (8, 8)).save(small, format="PNG")
    png = small.getvalue()
    flood = png[:33] + png_chunk(b"zzZz", b"") * 100_000 + png[33:]  # after the header chunk
    with pytest.raises(ImageError, match="more than 1000 chunks before its image data") as refused:
        image_bytes_to_input(flood)
    assert refused.value.code == "corrupt_image" and decoded_pixels(flood) == 0
    assert image_bytes_to_input(png[:33] + png_chunk(b"zzZz", b"") * 999 + png[33:]).shape == (28, 28)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def bomb_png(width: int, height: int) -> bytes:
    """A few hundred bytes of PNG declaring `width` x `height` pixels: a decompression bomb's opening."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 10_000)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", pixels)
        + png_chunk(b"IEND", b"")
    )


def truncated_jpeg() -> bytes:
    data = encode(photo_of(2).convert("RGB"), "JPEG")
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_file"),
        (b"name,label\nshirt,6\n", "invalid_image"),
        (truncated_jpeg(), "corrupt_image"),
        (encode(Image.new("L", (40, 40)), "TIFF"), "unsupported_format"),
        (bomb_png(60_000, 60_000), "image_too_large"),
        (bomb_png(7_000, 7_000), "image_too_large"),
    ],
    ids=["empty", "csv", "truncated-jpeg", "tiff", "bomb-huge", "bomb-over-limit"],
)
def test_unusable_uploads_are_refused_with_a_code(data: bytes, code: str) -> None:
    with pytest.raises(ImageError) as error:
        decode_image(data)
    assert error.value.code == code and error.value.message


@pytest.mark.parametrize(
    ("mode", "size"),
    [("RGB", (1, 1)), ("RGB", (2, 500)), ("RGB", (500, 2)), ("RGB", (5, 5)), ("L", (300, 200)),
     ("P", (100, 100)), ("LA", (100, 100)), ("CMYK", (100, 100)), ("I;16", (80, 100)), ("F", (60, 50))],
)  # fmt: skip
def test_degenerate_images_still_become_28x28_inputs(mode: str, size: tuple[int, int]) -> None:
    """Slivers, single pixels, one-colour and noise images: always a 28x28 uint8 image, never an error."""
    rng = np.random.default_rng(sum(size))
    shape = (*size[::-1], 3)
    for pixels in (np.zeros(shape, np.uint8), rng.integers(0, 256, shape, np.uint8)):
        if mode == "I;16":
            image = Image.fromarray(pixels[..., 0].astype(np.uint16) * 257)
        elif mode == "F":
            image = Image.fromarray(pixels[..., 0].astype(np.float32))
        else:
            image = Image.fromarray(pixels).convert(mode)
        converted = fashion_mnist_style(image)
        assert converted.shape == (28, 28) and converted.dtype == np.uint8


@pytest.mark.parametrize(
    "conversion",
    [
        Conversion(subsample=True, sharpen=False),
        Conversion(sharpen=True),
        Conversion(subsample=True, sharpen=True),
    ],
    ids=["subsample", "sharpen", "subsample+sharpen"],
)
def test_the_papers_conversion_steps_make_28x28_inputs_and_sharpen_adds_edge_contrast(
    conversion: Conversion,
) -> None:
    """The benchmark's variants (the Fashion-MNIST paper's resize by subsampling, its sharpening) run on
    a product photo and on slivers; sharpening steepens the item's edges."""
    for size in ((500, 2), (3, 3), (300, 200)):
        sliver = fashion_mnist_style(Image.new("RGB", size, "navy"), conversion)
        assert sliver.shape == (28, 28) and sliver.dtype == np.uint8
    photo = photo_of(7)
    converted = fashion_mnist_style(photo, conversion).astype(float)
    plain = fashion_mnist_style(photo, Conversion(subsample=conversion.subsample, sharpen=False)).astype(
        float
    )
    assert converted.shape == (28, 28)
    if conversion.sharpen:
        steepness = [np.abs(np.diff(image, axis=1)).mean() for image in (plain, converted)]
        assert steepness[1] > steepness[0] * 1.05, steepness


@pytest.mark.parametrize("make", [exif_negative_rational_jpeg, malformed_exif_webp])
def test_malformed_exif_is_refused_as_corrupt_not_raised(make: Callable[[], bytes]) -> None:
    """EXIF that cannot be read, or rewritten while applying the orientation, once escaped as a 500."""
    with pytest.raises(ImageError) as error:
        image_bytes_to_input(make())
    assert error.value.code == "corrupt_image" and "EXIF" in error.value.message


@pytest.mark.filterwarnings("ignore:.*EXIF|.*Tag data|.*tag:UserWarning")
def test_thousands_of_corrupted_files_give_an_image_or_an_image_error() -> None:
    """Seeded mutations (flipped, overwritten, cut, repeated bytes) of valid JPEG, PNG, WebP, GIF and BMP
    files with EXIF: each becomes a 28x28 input or an ImageError with a code, never another exception."""
    outcomes: Counter[str] = Counter()
    for name, data in mutations(3000, seed=0):
        try:
            converted = image_bytes_to_input(data)
        except ImageError as error:
            outcomes[error.code] += 1
        except Exception as error:
            pytest.fail(f"{name}: {type(error).__name__}: {error}")
        else:
            assert converted.shape == (28, 28), name
            outcomes["ok"] += 1
    assert outcomes["ok"] > 300 and outcomes["corrupt_image"] > 300 and outcomes["invalid_image"] > 300


def test_formats_decoded_in_full_have_a_lower_pixel_cap_than_jpeg() -> None:
    """A 6000x6000 white WebP is 38 bytes and once cost 205 MB to decode; JPEG decodes at reduced scale,
    so the same size passes as a JPEG."""
    with pytest.raises(ImageError) as error:
        image_bytes_to_input(white_webp(6000))
    assert error.value.code == "image_too_large" and "WEBP images are decoded in full" in error.value.message
    assert image_bytes_to_input(encode(Image.new("L", (6000, 6000), 255), "JPEG")).shape == (28, 28)
    assert image_bytes_to_input(encode(Image.new("L", (4000, 3000), 255), "PNG")).shape == (28, 28)


@pytest.mark.parametrize(("make", "name"), [(heic_header, "HEIC"), (svg_logo, "SVG")])
def test_formats_people_send_but_cannot_be_read_are_named_in_a_415(
    make: Callable[[], bytes], name: str
) -> None:
    with pytest.raises(ImageError) as error:
        image_bytes_to_input(make())
    assert error.value.code == "unsupported_format" and error.value.message.startswith(f"{name} images")


def test_a_jpeg_header_claiming_more_pixels_than_its_bytes_hold_is_corrupt() -> None:
    """Before: a 675-byte file said to be 4000x3000 was decoded, padded with grey, and classified."""
    with pytest.raises(ImageError) as error:
        image_bytes_to_input(lying_jpeg((4000, 3000)))
    assert error.value.code == "corrupt_image" and "claims 4000x3000 pixels" in error.value.message
