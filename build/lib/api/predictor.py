"""The served model: loaded once, warmed up, turning uploaded bytes into predictions."""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from text_recognizer.models import ClassifierModel
from text_recognizer.preprocessing import image_bytes_to_input

MODEL_CARD_NAME = "model_card.json"


class CategoryScore(BaseModel):
    category: str
    confidence: float = Field(ge=0, le=1)


class Prediction(BaseModel):
    category: str
    class_id: int
    confidence: float = Field(ge=0, le=1)
    top_k: list[CategoryScore]
    model_version: str


@dataclass
class Predictor:
    model: ClassifierModel
    card: dict[str, Any]
    version: str
    ready: bool = False

    @classmethod
    def load(cls, model_path: Path) -> "Predictor":
        """Load the artifact and its model card (beside it); the version is the card's, else a hash."""
        model = ClassifierModel.load(model_path)
        card_path = model_path.with_name(MODEL_CARD_NAME)
        card = json.loads(card_path.read_text()) if card_path.exists() else {}
        version = card.get("version") or hashlib.sha256(model_path.read_bytes()).hexdigest()[:12]
        return cls(model=model, card=card, version=version)

    def warm_up(self) -> None:
        """One real prediction before the service calls itself ready."""
        self.predict_arrays([np.zeros(self.model.input_shape[1:], dtype=np.uint8)], top_k=1)
        self.ready = True

    def predict_arrays(self, images: list[np.ndarray], top_k: int) -> list[Prediction]:
        predictions = self.model.predict(np.stack(images))
        k = min(top_k, len(self.model.class_names))
        scores, indices = predictions.probabilities.topk(k, dim=1)
        return [
            Prediction(
                category=category,
                class_id=int(class_id),
                confidence=float(confidence),
                top_k=[
                    CategoryScore(category=self.model.class_names[int(i)], confidence=float(s))
                    for s, i in zip(row_scores, row_indices, strict=True)
                ],
                model_version=self.version,
            )
            for category, class_id, confidence, row_scores, row_indices in zip(
                predictions.categories,
                predictions.class_ids.tolist(),
                predictions.confidences.tolist(),
                scores,
                indices,
                strict=True,
            )
        ]

    def predict_bytes(self, data: bytes, top_k: int, max_pixels: int) -> Prediction:
        """Raises `ImageError` for an upload that is not a usable image."""
        return self.predict_arrays([image_bytes_to_input(data, max_pixels)], top_k)[0]

    def metadata(self) -> dict[str, Any]:
        metadata = self.model.metadata
        return {
            "name": self.card.get("name", metadata.get("run_name")),
            "version": self.version,
            "network": {"name": self.model.network_name, "args": self.model.network_args},
            "parameters": self.model.parameter_count,
            "classes": list(self.model.class_names),
            "input": {
                "accepts": "one image file: JPEG, PNG, WebP, BMP or GIF (first frame), any size and mode",
                "model_input": {"shape": list(self.model.input_shape), "dtype": "uint8"},
                "preprocessing": "EXIF orientation, alpha onto white, grayscale, trim border, longest edge "
                "to 28, centre on 28x28, negate light backgrounds (as Fashion-MNIST was made)",
            },
            "metrics": metadata.get("metrics", {}),
            "data_checksums": metadata.get("data", {}).get("checksums", {}),
        }
