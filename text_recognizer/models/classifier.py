"""An image classifier: a network together with its preprocessing, class names and provenance.

The saved artifact is a plain dictionary of tensors and JSON-like values, loaded with
`torch.load(weights_only=True)`: no code is unpickled, and no training code, config or dataset is
needed to predict with it.
"""

import hashlib
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.fx.experimental.optimization import fuse

from text_recognizer.atomic import atomic_path
from text_recognizer.labels import OUT_OF_SCOPE
from text_recognizer.models.onnx_network import (
    ActivationRanges,
    OnnxRuntimeNetwork,
    activation_ranges,
    exported,
    int8_graph,
)
from text_recognizer.models.weight_storage import dequantized, quantized
from text_recognizer.networks import build_network, count_parameters
from text_recognizer.preprocessing import (
    MIN_SEPARATION_SIDE,
    SERVING_CONVERSION,
    Normalization,
    as_image_batch,
    normalize,
)

ARTIFACT_FORMAT = "text_recognizer.classifier/1"
# An artifact that averages each image with its mirror image: code from before that choice, which would
# silently predict without it (against its card's temperature and threshold), refuses this format.
MIRROR_ARTIFACT_FORMAT = "text_recognizer.classifier/2"
# Weights stored as int8 (`weight_storage`), the description naming `weights` and `test_time_flip`: code
# from before would load the integers as float weights, so it refuses this format instead.
INT8_ARTIFACT_FORMAT = "text_recognizer.classifier/3"
# Int8 weights computed in int8 (`compute_int8`), the description naming `computation` and the
# activations' ranges: code from before would compute in float32, against its card's figures.
INT8_COMPUTE_ARTIFACT_FORMAT = "text_recognizer.classifier/4"
# An out-of-scope offset (`out_of_scope_offset`), the description naming every choice (weights,
# computation, mirror image): code from before would answer "out of scope" more often than its card says.
OFFSET_ARTIFACT_FORMAT = "text_recognizer.classifier/5"
# A separated view (`separated_view_side`), the description naming every choice as format 5 does: code
# from before would answer phone photos from one view, against its card's figures.
SEPARATED_VIEW_ARTIFACT_FORMAT = "text_recognizer.classifier/6"
NAMING_FORMATS = (OFFSET_ARTIFACT_FORMAT, SEPARATED_VIEW_ARTIFACT_FORMAT)  # every choice in the description
ARTIFACT_FORMATS = (
    ARTIFACT_FORMAT,
    MIRROR_ARTIFACT_FORMAT,
    INT8_ARTIFACT_FORMAT,
    INT8_COMPUTE_ARTIFACT_FORMAT,
    *NAMING_FORMATS,
)
WEIGHT_PRECISIONS = ("float32", "int8")
COMPUTATIONS = ("float32", "int8")
EVAL_BATCH_SIZE = 1024
WORK_SIDE = SERVING_CONVERSION.work_side


class ArtifactError(ValueError):
    """A file is not a classifier artifact this code can load."""


@dataclass(frozen=True)
class Predictions:
    class_ids: torch.Tensor  # int64 (N,)
    confidences: torch.Tensor  # float (N,), probability of the predicted class
    probabilities: torch.Tensor  # float (N, num_classes)
    categories: list[str]


@dataclass(frozen=True)
class EpochMetrics:
    loss: float
    accuracy: float
    images: int


class ClassifierModel:
    def __init__(
        self,
        network_name: str,
        network_args: dict[str, Any],
        input_shape: tuple[int, int, int],
        class_names: tuple[str, ...],
        normalization: Normalization,
        metadata: dict[str, Any] | None = None,
        temperature: float = 1.0,
        test_time_flip: bool = False,
        weights: str = "float32",
        activation_ranges: ActivationRanges | None = None,
        int8_graph_sha256: str | None = None,
        out_of_scope_offset: float = 0.0,
        separated_view_side: int = 0,
    ) -> None:
        self.network_name = network_name
        self.network_args = dict(network_args)
        self.input_shape = input_shape
        self.class_names = tuple(class_names)
        self.normalization = normalization
        self.metadata: dict[str, Any] = dict(metadata or {})
        # Divides the network's logits; fitted on the validation split at promotion so that confidences
        # are calibrated (label smoothing, for one, makes a network underconfident). 1.0 while training.
        self.temperature = temperature
        # Average the logits of each image and its mirror image (one forward pass of both): chosen at
        # promotion when it lowers the validation loss, for a network trained with flipped images.
        self.test_time_flip = test_time_flip
        # Subtracted from the out-of-scope logit (after the temperature): where the item is one of the ten
        # or out of scope, how readily it is called out of scope. Chosen on the validation split at
        # promotion (`training.calibration.choose_out_of_scope_offset`); 0 while training.
        if out_of_scope_offset and OUT_OF_SCOPE not in class_names:
            raise ValueError(f"an out-of-scope offset needs an {OUT_OF_SCOPE!r} class")
        if not (math.isfinite(out_of_scope_offset) and out_of_scope_offset >= 0):
            raise ValueError(
                f"the out-of-scope offset must be a finite number >= 0, got {out_of_scope_offset}"
            )
        self.out_of_scope_offset = float(out_of_scope_offset)
        # Where a photo's border is busy, also classify it with the item separated from its background by
        # GrabCut at this side, and average the two views' logits (`upload_views`); 0: one view.
        # Chosen on the validation split at promotion (`training.calibration.calibrate`).
        if separated_view_side != 0 or type(separated_view_side) is not int:  # False and 0.0 too
            checked_side(separated_view_side)
        self.separated_view_side = separated_view_side
        if weights not in WEIGHT_PRECISIONS:
            raise ValueError(f"weights must be one of {', '.join(WEIGHT_PRECISIONS)}, got {weights!r}")
        # How the artifact stores the weights (`store_int8`).
        self.weights = weights
        # With int8 weights, each activation's range in the exported graph: then the model computes in
        # int8 by ONNX Runtime (`compute_int8`), and in float32 without them.
        if activation_ranges is not None and weights != "int8":
            raise ValueError("computing in int8 needs int8 weights")
        if (activation_ranges is None) is not (int8_graph_sha256 is None):
            raise ValueError("computing in int8 needs both the activation ranges and the graph's sha256")
        self.activation_ranges = activation_ranges
        # The int8 graph's sha256 when it was built at promotion: a rebuild by other versions of ONNX
        # Runtime, onnx or torch, which would compute otherwise than the card says, is refused.
        self.int8_graph_sha256 = int8_graph_sha256
        self.network: nn.Module = build_network(network_name, input_shape, len(class_names), **network_args)
        # Channels-last convolutions: 10-25% faster per training batch on CPU, measured side by side.
        self.network.to(memory_format=torch.channels_last)
        self.inference_network: nn.Module | None = None

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @property
    def parameter_count(self) -> int:
        return count_parameters(self.network)

    @property
    def computation(self) -> str:
        return "float32" if self.activation_ranges is None else "int8"

    def to(self, device: torch.device | str) -> "ClassifierModel":
        self.network.to(device)
        return self

    def store_int8(self) -> None:
        """From now on, store the weights as int8 (`weight_storage`), and predict with exactly those: the
        network's weights become their dequantized values, so nothing evaluated differs from the file."""
        state = self.network.state_dict()
        self.network.load_state_dict(dequantized(quantized(state)))
        self.weights = "int8"
        self.inference_network = None  # it would keep the float32 weights

    def compute_int8(self, images: torch.Tensor, batch_size: int = 200) -> None:
        """From now on, compute in int8 (`onnx_network.int8_graph`, after `store_int8`), with each
        activation's range measured on `images` and their mirror images (whether or not the model
        averages with them: the ranges then serve either choice). Use training images: a range fitted on
        validation or test images would let those images choose the model."""
        if self.weights != "int8":
            raise ValueError("computing in int8 needs int8 weights: store_int8 first")
        batches = (
            torch.cat([inputs, inputs.flip(-1)]).cpu().contiguous().numpy()
            for inputs in map(self.network_input, as_image_batch(images).split(batch_size))
        )
        graph = self.float_graph()
        ranges = activation_ranges(graph, batches)
        int8 = self.built_int8_graph(graph, ranges)
        self.activation_ranges, self.int8_graph_sha256 = ranges, hashlib.sha256(int8).hexdigest()
        self.inference_network = OnnxRuntimeNetwork(int8, torch.get_num_threads())

    def float_graph(self) -> bytes:
        """The batch-norm-folded network (a CPU copy) exported to ONNX: what ONNX Runtime runs for
        float32, and what `int8_graph` quantizes."""
        self.network.eval()
        return exported(fuse(self.network).cpu(), self.input_shape)

    def fold_batch_norm(self) -> None:
        """Predict with a copy whose batch-norm layers are folded into the preceding convolutions
        (torch.fx): the same outputs to float rounding, fewer operations per forward pass (see
        benchmarks/inference.py). The weights stay as they are; training again drops the copy."""
        self.network.eval()
        self.inference_network = fuse(self.network).to(memory_format=torch.channels_last)

    def serve_with_onnx_runtime(self) -> None:
        """Predict by ONNX Runtime on the CPU: the int8 graph for a model computed in int8 (its only
        computation), else the folded float32 network."""
        graph = self.float_graph()
        if self.activation_ranges is not None and self.int8_graph_sha256 is not None:
            graph = self.built_int8_graph(graph, self.activation_ranges)
            digest = hashlib.sha256(graph).hexdigest()
            if digest != self.int8_graph_sha256:
                raise ArtifactError(
                    f"the int8 graph built here (sha256 {digest[:12]}) is not the one this model was "
                    f"promoted with ({self.int8_graph_sha256[:12]}): it would compute otherwise than its "
                    "card says; install the versions of onnxruntime, onnx and torch in Pipfile.lock"
                )
        self.inference_network = OnnxRuntimeNetwork(graph, torch.get_num_threads())

    def built_int8_graph(self, graph: bytes, ranges: ActivationRanges) -> bytes:
        """`graph` (from `float_graph`) computed in int8 with `ranges`; ArtifactError when it cannot be."""
        try:
            return int8_graph(graph, ranges, self.input_shape)
        except (ValueError, RuntimeError) as error:
            raise ArtifactError(f"cannot build the int8 graph: {error}") from error

    def network_input(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """uint8 images of the model's input size to normalized float tensors on the model's device."""
        batch = as_image_batch(images)
        if tuple(batch.shape[1:]) != self.input_shape:
            raise ValueError(f"expected images of shape {self.input_shape}, got {tuple(batch.shape[1:])}")
        batch = batch.to(self.device).contiguous(memory_format=torch.channels_last)
        return normalize(batch, self.normalization)

    def logits(
        self,
        images: torch.Tensor | np.ndarray,
        batch_size: int = EVAL_BATCH_SIZE,
        separated: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The network's logits (averaged with the mirror image's under `test_time_flip`, and with
        `separated`'s under `separated_view_side`: each image's separated view, or the image itself where
        it has none) divided by the temperature, less the out-of-scope offset: what every probability
        comes from."""
        merged = self.network_logits(images, batch_size)
        if self.separated_view_side and separated is not None:
            merged = (merged + self.network_logits(separated, batch_size)) / 2
        return self.calibrated(merged)

    @torch.inference_mode()
    def network_logits(
        self, images: torch.Tensor | np.ndarray, batch_size: int = EVAL_BATCH_SIZE
    ) -> torch.Tensor:
        """The network's logits, each averaged with its mirror image's under `test_time_flip`."""
        if self.network.training:  # eval() walks every module: 0.1-0.4 ms, a third of one prediction
            self.network.eval()
        if self.activation_ranges is not None and not isinstance(self.inference_network, OnnxRuntimeNetwork):
            self.serve_with_onnx_runtime()  # int8 is computed there only, whatever ran before
        network = self.network if self.inference_network is None else self.inference_network
        chunks = [
            self.merged(network(self.views(self.network_input(chunk))).float())
            for chunk in as_image_batch(images).split(batch_size)
        ]
        return torch.cat(chunks).cpu()

    def calibrated(self, logits: torch.Tensor) -> torch.Tensor:
        """The network's (merged) logits divided by the temperature, less the out-of-scope offset."""
        logits = logits / self.temperature
        if self.out_of_scope_offset:
            logits[:, self.class_names.index(OUT_OF_SCOPE)] -= self.out_of_scope_offset
        return logits

    def views(self, inputs: torch.Tensor) -> torch.Tensor:
        """One forward pass's batch for network inputs: followed by their mirror images under
        `test_time_flip`."""
        return torch.cat([inputs, inputs.flip(-1)]) if self.test_time_flip else inputs

    def merged(self, logits: torch.Tensor) -> torch.Tensor:
        """The logits of `views` back to one row per image: each averaged with its mirror image's."""
        if not self.test_time_flip:
            return logits
        half = len(logits) // 2
        return (logits[:half] + logits[half:]) / 2

    def predict(self, images: torch.Tensor | np.ndarray) -> Predictions:
        """Classify uint8 images shaped (H, W), (N, H, W) or (N, 1, H, W)."""
        return self.predictions(self.logits(images))

    def predict_views(self, uploads: Sequence[np.ndarray]) -> Predictions:
        """Classify uploads, each as its uint8 views (V, H, W) from `image_bytes_to_views`, in one forward
        pass: each upload's logits averaged over its views (over the first alone unless
        `separated_view_side`), as `logits` averages an image and its separated view."""
        if not self.separated_view_side:
            uploads = [views[:1] for views in uploads]
        counts = torch.tensor([len(views) for views in uploads])
        merged = self.network_logits(np.concatenate(uploads))
        owners = torch.repeat_interleave(torch.arange(len(uploads)), counts)
        summed = torch.zeros(len(uploads), merged.shape[1]).index_add_(0, owners, merged)
        return self.predictions(self.calibrated(summed / counts[:, None]))

    def predictions(self, logits: torch.Tensor) -> Predictions:
        probabilities = torch.softmax(logits, dim=1)
        confidences, class_ids = probabilities.max(dim=1)
        categories = [self.class_names[index] for index in class_ids.tolist()]
        return Predictions(class_ids, confidences, probabilities, categories)

    def evaluate(
        self, images: torch.Tensor, labels: torch.Tensor, batch_size: int = EVAL_BATCH_SIZE
    ) -> dict[str, float]:
        """Mean cross-entropy and accuracy on labelled images."""
        logits = self.logits(images, batch_size)
        labels = labels.cpu()
        loss = nn.functional.cross_entropy(logits, labels).item()
        accuracy = (logits.argmax(dim=1) == labels).double().mean().item()
        return {"loss": loss, "accuracy": accuracy}

    def fit_epoch(
        self,
        batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        label_smoothing: float = 0.0,
        network: nn.Module | None = None,
    ) -> EpochMetrics:
        """One pass over `batches` of (uint8 images, labels); the scheduler steps once per batch. Labels
        are class indices, or per-class target distributions whose largest class is the label
        (distillation), against which accuracy is counted.

        `network` runs the passes instead of `self.network` when it wraps it (DistributedDataParallel
        synchronising gradients across processes); the weights are the same tensors.
        """
        if self.activation_ranges is not None:
            raise ValueError("a model computed in int8 is not trained further: train its float32 run")
        self.inference_network = None  # it would keep the old weights
        network = network or self.network
        network.train()
        total_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        seen = 0
        for images, labels in batches:
            labels = labels.to(self.device)
            logits = network(self.network_input(images))
            loss = nn.functional.cross_entropy(logits, labels, label_smoothing=label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            classes = labels if labels.ndim == 1 else labels.argmax(dim=1)
            total_loss += loss.detach().double() * len(labels)
            correct += (logits.detach().argmax(dim=1) == classes).sum()
            seen += len(labels)
        return EpochMetrics(total_loss.item() / seen, correct.item() / seen, seen)

    def artifact(self) -> dict[str, Any]:
        """Weights plus a JSON description of everything else needed to rebuild this model.

        Keeping the description as one canonical JSON string makes saved bytes depend on content only
        (pickle memoizes by object identity), so identical models give identical files.
        """
        description = {
            "network": {"name": self.network_name, "args": self.network_args},
            "input_shape": list(self.input_shape),
            "class_names": list(self.class_names),
            "normalization": self.normalization.to_dict(),
            "metadata": self.metadata,
            "temperature": self.temperature,
        }
        state = {key: value.cpu() for key, value in self.network.state_dict().items()}
        if self.activation_ranges is not None:
            description["activation_ranges"] = self.activation_ranges
            description["int8_graph_sha256"] = self.int8_graph_sha256
        if self.weights == "int8":
            state = quantized(state)
        if self.out_of_scope_offset or self.separated_view_side:
            description.update(
                weights=self.weights,
                computation=self.computation,
                test_time_flip=self.test_time_flip,
                out_of_scope_offset=self.out_of_scope_offset,
            )
            artifact_format = OFFSET_ARTIFACT_FORMAT
            if self.separated_view_side:
                description["separated_view_side"] = self.separated_view_side
                artifact_format = SEPARATED_VIEW_ARTIFACT_FORMAT
        elif self.activation_ranges is not None:
            description.update(weights="int8", test_time_flip=self.test_time_flip, computation="int8")
            artifact_format = INT8_COMPUTE_ARTIFACT_FORMAT
        elif self.weights == "int8":
            description.update(weights="int8", test_time_flip=self.test_time_flip)
            artifact_format = INT8_ARTIFACT_FORMAT
        elif self.test_time_flip:  # only then: the bytes of every other artifact stay as they were
            description["test_time_flip"] = True
            artifact_format = MIRROR_ARTIFACT_FORMAT
        else:
            artifact_format = ARTIFACT_FORMAT
        return {
            "format": artifact_format,
            "description": json.dumps(description, sort_keys=True),
            "state_dict": state,
        }

    def artifact_bytes(self) -> bytes:
        """The artifact as `save` writes it (for its size before anything is written)."""
        buffer = io.BytesIO()
        torch.save(self.artifact(), buffer)
        return buffer.getvalue()

    def save(self, path: Path) -> None:
        """Write the artifact atomically: an interrupted save never leaves a corrupt file."""
        save_atomically(self.artifact(), path)

    @classmethod
    def from_artifact(cls, artifact: dict[str, Any]) -> "ClassifierModel":
        if artifact.get("format") not in ARTIFACT_FORMATS:
            raise ArtifactError(
                f"unknown artifact format {artifact.get('format')!r}, "
                f"need one of {', '.join(ARTIFACT_FORMATS)}"
            )
        try:
            description = json.loads(artifact["description"])
            named = artifact["format"] in NAMING_FORMATS  # the description names every choice
            test_time_flip = (
                description["test_time_flip"] if named else description.get("test_time_flip", False)
            )
            weights = description["weights"] if named else description.get("weights", "float32")
            computation = description["computation"] if named else description.get("computation", "float32")
            offset = checked_offset(description["out_of_scope_offset"], artifact["format"]) if named else 0.0
            separated_view = artifact["format"] == SEPARATED_VIEW_ARTIFACT_FORMAT
            if not separated_view and "separated_view_side" in description:
                raise ValueError(f"format {artifact['format']!r} does not go with a separated_view_side")
            side = checked_side(description["separated_view_side"]) if separated_view else 0
            if computation not in COMPUTATIONS:
                raise ValueError(f"computation {computation!r} is not one of {', '.join(COMPUTATIONS)}")
            if not isinstance(test_time_flip, bool):
                raise ValueError(f"test_time_flip must be true or false, got {test_time_flip!r}")
            if not named:
                check_format_choices(artifact["format"], weights, computation, test_time_flip)
            int8 = computation == "int8"
            ranges = checked_ranges(description["activation_ranges"]) if int8 else None
            graph_sha256 = checked_sha256(description["int8_graph_sha256"]) if int8 else None
            model = cls(
                network_name=description["network"]["name"],
                network_args=description["network"]["args"],
                input_shape=tuple(description["input_shape"]),
                class_names=tuple(description["class_names"]),
                normalization=Normalization(**description["normalization"]),
                metadata=description["metadata"],
                temperature=description.get("temperature", 1.0),  # artifacts from before calibration
                test_time_flip=test_time_flip,
                weights=weights,
                activation_ranges=ranges,
                int8_graph_sha256=graph_sha256,
                out_of_scope_offset=offset,
                separated_view_side=side,
            )
            state = artifact["state_dict"]
            model.network.load_state_dict(dequantized(state) if weights == "int8" else state)
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise ArtifactError(f"incomplete or malformed artifact: {error!r}") from error
        if model.activation_ranges is not None:
            model.serve_with_onnx_runtime()  # now: a graph that cannot be built is refused at load
        return model

    @classmethod
    def load(cls, path: Path, device: torch.device | str = "cpu") -> "ClassifierModel":
        return cls.from_artifact(load_safely(path)).to(device)


def check_format_choices(artifact_format: str, weights: str, computation: str, test_time_flip: bool) -> None:
    """Formats 1 to 4 say by their name alone what the description may leave out: refuse a mismatch."""
    if (weights == "int8") is not (artifact_format in (INT8_ARTIFACT_FORMAT, INT8_COMPUTE_ARTIFACT_FORMAT)):
        raise ValueError(f"format {artifact_format!r} does not go with weights {weights!r}")
    if (computation == "int8") is not (artifact_format == INT8_COMPUTE_ARTIFACT_FORMAT):
        raise ValueError(f"format {artifact_format!r} does not go with computation {computation!r}")
    if weights != "int8" and test_time_flip is not (artifact_format == MIRROR_ARTIFACT_FORMAT):
        raise ValueError(
            f"format {artifact_format!r} does not go with test_time_flip {test_time_flip!r} "
            "(saved by code from before the format named it? load and save it again)"
        )


def checked_offset(offset: Any, artifact_format: str) -> float:
    """Format 5 is written only for an offset (one of 0 would be saved again as another format); format 6
    for a separated view, with or without one."""
    any_number = artifact_format == SEPARATED_VIEW_ARTIFACT_FORMAT
    if isinstance(offset, bool) or not isinstance(offset, int | float) or (offset == 0 and not any_number):
        raise ValueError(
            f"out_of_scope_offset must be a number{'' if any_number else ' other than 0'}, got {offset!r}"
        )
    return float(offset)


def checked_side(side: Any) -> int:
    """A separated view's side: a whole number from `MIN_SEPARATION_SIDE` to the working size (a smaller
    one separates nothing, a larger one is the working size). Format 6 is written only for one."""
    if isinstance(side, bool) or not isinstance(side, int) or not MIN_SEPARATION_SIDE <= side <= WORK_SIDE:
        limits = f"from {MIN_SEPARATION_SIDE} to {WORK_SIDE}"
        raise ValueError(f"separated_view_side must be a whole number {limits}, got {side!r}")
    return side


def checked_ranges(ranges: Any) -> ActivationRanges:
    """An artifact's activation ranges, or ValueError naming what is wrong with them."""
    if not isinstance(ranges, dict) or not ranges:
        raise ValueError("activation_ranges must map tensor names to [lowest, highest]")
    for name, bounds in ranges.items():
        floats = isinstance(bounds, list) and len(bounds) == 2 and all(type(b) is float for b in bounds)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow in float32 is what is checked
            low, high = (np.float32(bound) for bound in bounds) if floats else (np.float32(np.nan),) * 2
            usable = isinstance(name, str) and np.isfinite([low, high, high - low]).all() and low <= high
        if not usable:
            raise ValueError(f"activation range of {name!r} is {bounds!r}, not [lowest, highest] in float32")
    return ranges


def checked_sha256(digest: Any) -> str:
    if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
        raise ValueError(f"int8_graph_sha256 is {digest!r}, not a sha256 in hex")
    return digest


def save_atomically(payload: dict[str, Any], path: Path) -> None:
    """Atomic, and byte-reproducible: saving to a handle keeps the temporary name out of the archive."""
    with atomic_path(path) as tmp_path, tmp_path.open("wb") as handle:
        torch.save(payload, handle)


def load_safely(path: Path, data: bytes | None = None) -> dict[str, Any]:
    """Load a checkpoint without unpickling arbitrary objects; a clear error for anything else. With
    `data`, those bytes (read from `path`, which names them in errors)."""
    try:
        payload = torch.load(
            io.BytesIO(data) if data is not None else path, map_location="cpu", weights_only=True
        )
    except FileNotFoundError:
        raise
    except Exception as error:
        raise ArtifactError(f"{path} is not a loadable checkpoint: {error}") from error
    if not isinstance(payload, dict):
        raise ArtifactError(f"{path} holds a {type(payload).__name__}, not a checkpoint dictionary")
    return payload
