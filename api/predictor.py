"""The served model: loaded once, warmed up, turning uploaded bytes into predictions."""

import base64
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field

from text_recognizer.labels import OUT_OF_SCOPE
from text_recognizer.models import ClassifierModel
from text_recognizer.models.classifier import ArtifactError, load_safely
from text_recognizer.paths import MODEL_CARD_NAME
from text_recognizer.preprocessing import opencv, upload_views
from text_recognizer.promoted import model_file

UNSURE = "unsure"
InferenceBackend = Literal["onnxruntime", "torch"]
CATEGORY_DESCRIPTION = (
    f'one of the ten Fashion-MNIST classes; "{UNSURE}" when the confidence is below the threshold; '
    f'"{OUT_OF_SCOPE}" when the item is not one of the ten (belts, watches, skirts, ...)'
)


class CategoryScore(BaseModel):
    category: str
    confidence: float = Field(ge=0, le=1)


class Prediction(BaseModel):
    category: str = Field(description=CATEGORY_DESCRIPTION)
    outcome: Literal["class", "unsure", "out_of_scope"] = Field(
        description='"class": `category` is one of the ten; "unsure": below the confidence threshold; '
        '"out_of_scope": the item is not one of the ten'
    )
    class_id: int | None = Field(description="index of the predicted class; null unless `outcome` is class")
    confidence: float = Field(ge=0, le=1, description="probability of the most likely class")
    top_k: list[CategoryScore]
    model_version: str
    model_input: str | None = Field(
        None, description="with include_input=true: the 28x28 image the model saw, as a PNG data URL"
    )
    model_input_separated: str | None = Field(
        None,
        description="with include_input=true, where the model also saw the item separated from a busy "
        "background (a phone photo on a bed or a floor) and averaged the two: that 28x28 image",
    )


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_data_url(pixels: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(Image.fromarray(pixels))).decode("ascii")


def artifact_and_card(path: Path, attempts: int = 3) -> tuple[Path, bytes, dict[str, Any]]:
    """The artifact's path and bytes, and the card beside it ({} for a plain file without one), read
    together. For a weights folder the card must be there: a version that promotions pruned while it was
    being read (two promotions in that time) is read again from `CURRENT`, never served without its
    card, which holds the "unsure" threshold and the version."""
    while True:
        model_path = model_file(path)
        card_path = model_path.with_name(MODEL_CARD_NAME)
        promoted = model_path != path
        try:
            data = model_path.read_bytes()
            card = json.loads(card_path.read_text()) if promoted or card_path.exists() else {}
            return model_path, data, card
        except FileNotFoundError:
            attempts -= 1
            if not promoted or attempts == 0:
                raise


@dataclass
class Predictor:
    model: ClassifierModel
    card: dict[str, Any]
    version: str
    unsure_below: float | None = None
    ready: bool = False

    @classmethod
    def load(
        cls,
        model_path: Path,
        use_confidence_threshold: bool = True,
        backend: InferenceBackend = "onnxruntime",
    ) -> "Predictor":
        """Load the artifact (a file, or a weights folder's promoted version) and its model card (beside
        it, refused unless it names these very weights); the version is the card's, else a hash.

        The card's confidence threshold (chosen on the validation split at promotion) turns predictions
        below it into "unsure", unless `use_confidence_threshold` is off. `backend`: the forward pass by
        ONNX Runtime ("onnxruntime") or by the batch-norm-folded PyTorch network ("torch"; not for a
        model computed in int8).
        """
        model_path, data, card = artifact_and_card(model_path)
        model = ClassifierModel.from_artifact(load_safely(model_path, data))
        if model.computation == "int8":  # its int8 graph was built as it loaded
            if backend != "onnxruntime":
                raise ArtifactError(f"{model_path} computes in int8, which only the onnxruntime backend runs")
        elif backend == "onnxruntime":
            model.serve_with_onnx_runtime()
        else:
            model.fold_batch_norm()
        weights_sha256 = hashlib.sha256(data).hexdigest()
        if card and card.get("sha256") != weights_sha256:  # e.g. a promotion interrupted half-way
            raise ArtifactError(
                f"{model_path.with_name(MODEL_CARD_NAME)} describes weights with sha256 "
                f"{card.get('sha256')}, but {model_path} has {weights_sha256}: its version and 'unsure' "
                "threshold would be another model's; promote again"
            )
        version = card.get("version") or weights_sha256[:12]
        threshold = card.get("confidence_threshold", {}).get("value") if use_confidence_threshold else None
        return cls(model=model, card=card, version=version, unsure_below=threshold)

    def warm_up(self) -> None:
        """One real prediction before the service calls itself ready; a model that separates busy
        backgrounds needs OpenCV, so its absence stops the service here rather than failing phone photos."""
        if self.model.separated_view_side:
            opencv()
        self.predict_arrays([np.zeros(self.model.input_shape[1:], dtype=np.uint8)], top_k=1)
        self.ready = True

    def model_input(self, data: bytes, max_pixels: int) -> np.ndarray:
        """An upload's views as this model classifies them (`upload_views`); raises `ImageError` for an
        upload that is not a usable image."""
        return self.upload(data, max_pixels)[1]

    def upload(self, data: bytes, max_pixels: int) -> tuple[Image.Image, np.ndarray]:
        """An upload's greyscale working image and its views (`upload_views`)."""
        return upload_views(data, max_pixels, self.model.separated_view_side)

    def predict_arrays(self, images: list[np.ndarray], top_k: int) -> list[Prediction]:
        """One forward pass for uint8 images: each (28, 28), or an upload's views (V, 28, 28)."""
        predictions = self.model.predict_views(
            [image if image.ndim == 3 else image[None] for image in images]
        )
        k = min(top_k, len(self.model.class_names))
        scores, indices = predictions.probabilities.topk(k, dim=1)
        return [
            self.answer(category, class_id, confidence, row_scores, row_indices)
            for category, class_id, confidence, row_scores, row_indices in zip(
                predictions.categories,
                predictions.class_ids.tolist(),
                predictions.confidences.tolist(),
                scores,
                indices,
                strict=True,
            )
        ]

    def answer(
        self, category: str, class_id: int, confidence: float, scores: Any, indices: Any
    ) -> Prediction:
        """One image's answer: the class, "unsure" below the threshold, or out of scope."""
        outcome = self.outcome(category, confidence)
        return Prediction(
            category=UNSURE if outcome == "unsure" else category,
            outcome=outcome,
            class_id=int(class_id) if outcome == "class" else None,
            confidence=float(confidence),
            top_k=[
                CategoryScore(category=self.model.class_names[int(i)], confidence=float(s))
                for s, i in zip(scores, indices, strict=True)
            ],
            model_version=self.version,
        )

    def is_unsure(self, confidence: float) -> bool:
        return self.unsure_below is not None and confidence < self.unsure_below

    def outcome(self, category: str, confidence: float) -> Literal["class", "unsure", "out_of_scope"]:
        if self.is_unsure(confidence):
            return "unsure"
        return "out_of_scope" if category == OUT_OF_SCOPE else "class"

    def predict_bytes(
        self, data: bytes, top_k: int, max_pixels: int, include_input: bool = False
    ) -> Prediction:
        """Raises `ImageError` for an upload that is not a usable image."""
        views = self.model_input(data, max_pixels)
        prediction = self.predict_arrays([views], top_k)[0]
        return self.with_input(prediction, views) if include_input else prediction

    def with_input(self, prediction: Prediction, views: np.ndarray) -> Prediction:
        """`prediction` with the 28x28 images the model saw, as PNG data URLs."""
        prediction.model_input = png_data_url(views[0])
        if len(views) > 1 and self.model.separated_view_side:
            prediction.model_input_separated = png_data_url(views[1])
        return prediction

    def metadata(self) -> dict[str, Any]:
        metadata = self.model.metadata
        return {
            "name": self.card.get("name", metadata.get("run_name")),
            "version": self.version,
            "network": {"name": self.model.network_name, "args": self.model.network_args},
            "parameters": self.model.parameter_count,
            "classes": list(self.model.class_names),
            "input": {
                "accepts": "one image file: JPEG (also multi-picture MPO: the first picture), PNG, WebP, "
                "BMP or GIF (first frame), any size and mode",
                "model_input": {"shape": list(self.model.input_shape), "dtype": "uint8"},
                "preprocessing": "EXIF orientation, alpha onto white, grayscale, reduce to 112 px, trim "
                "border, longest edge to 28, centre on 28x28, negate light backgrounds (as Fashion-MNIST "
                "was made)",
            },
            "output": {"category": CATEGORY_DESCRIPTION},
            "metrics": metadata.get("metrics", {}),
            "domains": self.card.get("domains", {}),
            "confidence_temperature": self.model.temperature,
            "mirror_averaged": self.model.test_time_flip,  # each image averaged with its mirror image
            # where the border is busy, averaged with the item separated by GrabCut at this side; 0: never
            "separated_view_side": self.model.separated_view_side,
            "out_of_scope_offset": self.model.out_of_scope_offset,  # off the out-of-scope logit
            "weights": self.model.weights,  # how model.pt stores them
            "computation": self.model.computation,  # float32, or int8 (ONNX Runtime, activation ranges)
            "unsure_below_confidence": self.unsure_below,
            "data_checksums": metadata.get("data", {}).get("checksums", {}),
        }
