"""Taking the person out of a photo before the Fashion-MNIST conversion: does it help the shipped model?

On-model catalogue shots carry a head, arms and legs into the 28x28 image (issue 10, point 3). Each
variant paints skin-coloured pixels (YCrCb: Cr 133-173, Cb 77-127, luma above 60, a common skin rule)
with the photo's corner colour, then converts it; "touching the border" paints only skin regions
connected to the image's edge (a head at the top, arms at the sides, legs at the bottom). Skin needs
colour, so every variant but "as served" decodes the photo in colour, as the conversion did when this
was measured ("colour, unpainted" is their baseline; a JPEG's luma alone is decoded now). The shipped
model, unchanged (no retraining on painted photos), is scored on the photo validation split per domain.
A variant that loses here on every domain is not worth a training run.

    python -m benchmarks.person_separation
"""

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from benchmarks.common import print_table, write_result
from benchmarks.preprocessing_speed import colour_working_image
from text_recognizer.datasets.photo_sets import photo_label
from text_recognizer.datasets.shop_photos import DOMAINS, converted_images, labelled_photos
from text_recognizer.models import ClassifierModel
from text_recognizer.preprocessing import fashion_mnist_style, image_bytes_to_input
from text_recognizer.promoted import promoted_model_path


def skin(rgb_image: Image.Image) -> np.ndarray:
    luma, blue, red = np.moveaxis(np.asarray(rgb_image.convert("YCbCr")).astype(int), -1, 0)
    mask: np.ndarray = (red >= 133) & (red <= 173) & (blue >= 77) & (blue <= 127) & (luma > 60)
    return mask


def touching_the_border(mask: np.ndarray) -> np.ndarray:
    """The parts of `mask` 4-connected to the image's edge: grown from the edge within the mask."""
    reached = np.zeros_like(mask)
    reached[[0, -1], :], reached[:, [0, -1]] = mask[[0, -1], :], mask[:, [0, -1]]
    while True:
        grown = reached.copy()
        grown[1:] |= reached[:-1]
        grown[:-1] |= reached[1:]
        grown[:, 1:] |= reached[:, :-1]
        grown[:, :-1] |= reached[:, 1:]
        grown &= mask
        if np.array_equal(grown, reached):
            return reached
        reached = grown


def painted(only_border: bool) -> Callable[[bytes], np.ndarray]:
    def convert(data: bytes) -> np.ndarray:
        image = colour_working_image(data)
        if image.mode != "RGB":
            return fashion_mnist_style(image)
        pixels = np.asarray(image).copy()
        mask = skin(image)
        if only_border:
            mask = touching_the_border(mask)
        corners = np.stack([pixels[0, 0], pixels[0, -1], pixels[-1, 0], pixels[-1, -1]])
        pixels[mask] = np.median(corners, axis=0).astype(np.uint8)
        return fashion_mnist_style(Image.fromarray(pixels))

    return convert


VARIANTS = {
    "as served": image_bytes_to_input,
    "colour, unpainted": lambda data: fashion_mnist_style(colour_working_image(data)),
    "skin painted": painted(only_border=False),
    "skin touching the border painted": painted(only_border=True),
}


def main() -> None:
    torch.set_num_threads(1)
    model = ClassifierModel.load(promoted_model_path())
    directory, photos = labelled_photos(model.class_names, splits=("val",))
    labels = torch.tensor([photo_label(item.target, model.class_names) for item in photos])
    rows = []
    for name, convert in VARIANTS.items():
        pixels = converted_images(directory, (item.photo.image for item in photos), convert)
        images = torch.from_numpy(np.stack([pixels[item.photo.image] for item in photos]))
        correct = model.logits(images).argmax(dim=1) == labels
        row: dict[str, object] = {"conversion": name}
        for domain in DOMAINS:
            in_domain = torch.tensor([item.domain == domain for item in photos])
            row[f"{domain}_accuracy"] = correct[in_domain].double().mean().item()
        rows.append(row)
    print_table("the shipped model on the photo validation split (top-1; out of scope: its own class)", rows)
    write_result("person_separation", rows, model=str(promoted_model_path()), photos=len(photos))


if __name__ == "__main__":
    main()
