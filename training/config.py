"""Training configuration: YAML files and `key=value` overrides, validated into typed objects up front.

Every mistake (an unknown key, a wrong type, an unknown network or optimizer) is reported before any
work starts, naming the key and the valid choices.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    create_model,
    model_validator,
)

from text_recognizer.datasets.shop_photos import DOMAINS
from text_recognizer.datasets.versions import OFFICIAL_VERSION
from text_recognizer.networks import NETWORKS, network_arguments

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"


class ConfigError(ValueError):
    """The configuration is invalid; the message names each offending key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(Strict):
    dataset: Literal["fashion_mnist"] = "fashion_mnist"
    version: str = Field(OFFICIAL_VERSION, description="data version, recorded in data/versions/<name>.dvc")
    version_hash: str | None = Field(
        None, pattern="^[0-9a-f]{64}$", description="refuse to train unless the version has this sha256"
    )
    val_size: PositiveInt = 5000
    train_size: PositiveInt | None = Field(None, description="stratified subset of the training split")
    split_seed: int = Field(0, description="seeds the validation hold-out, apart from the training seed")
    mirror: str | None = Field(None, description="local or alternative mirror; env FASHION_MNIST_MIRROR too")
    oversample: dict[Literal[DOMAINS], PositiveInt] = Field(  # type: ignore[valid-type]
        default_factory=dict,
        description="repeat a photo domain's training photos, e.g. {phone: 3}; a version with shop photos",
    )


class NetworkConfig(Strict):
    name: Literal[tuple(NETWORKS)]  # type: ignore[valid-type]
    args: dict[str, Any] = Field(default_factory=dict)
    init_from: Path | None = Field(
        None,
        description="fine-tune: start from this model's weights (a run's best.pt or a promoted model.pt)",
    )

    @model_validator(mode="after")
    def check_args(self) -> "NetworkConfig":
        """Validate `args` against the network constructor's own signature and type hints."""
        parameters = network_arguments(self.name)
        valid = ", ".join(parameters)
        problems = [
            f"network.args.{key}: unknown argument for network {self.name!r}; valid: {valid}"
            for key in sorted(set(self.args) - set(parameters))
        ]
        fields: dict[str, Any] = {
            key: (parameter.annotation, parameter.default)
            for key, parameter in parameters.items()
            if key in self.args
        }
        try:
            create_model(f"{self.name}_args", **fields).model_validate(self.args)
        except ValidationError as error:
            problems += [
                f"network.args.{'.'.join(map(str, p['loc']))}: {p['msg']} (got {p['input']!r})"
                for p in error.errors()
            ]
        if problems:
            raise ValueError("\n".join(problems))
        return self


class OptimizerConfig(Strict):
    name: Literal["sgd", "adam", "adamw"] = "adamw"
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 0.0
    momentum: NonNegativeFloat = Field(0.9, description="sgd only")


class SchedulerConfig(Strict):
    name: Literal["none", "cosine", "onecycle", "step"] = "none"
    step_epochs: PositiveInt = Field(10, description="step: epochs between decays")
    gamma: PositiveFloat = Field(0.1, description="step: decay factor")
    warmup_fraction: float = Field(0.25, gt=0, lt=1, description="onecycle: share of steps warming up")


class AugmentationConfig(Strict):
    """Training-time augmentation of each batch (never applied to validation or test images)."""

    crop_padding: int = Field(0, ge=0, le=8, description="random crop after zero-padding by this many pixels")
    horizontal_flip: bool = False
    affine_probability: float = Field(0.0, ge=0, le=1, description="rotation and scaling, per image")
    rotation_degrees: float = Field(10.0, ge=0, le=180, description="affine: largest rotation either way")
    scale: tuple[float, float] = Field((0.8, 1.0), description="affine: scale factor range")
    erasing_probability: float = Field(0.0, ge=0, le=1, description="random erasing, per image")
    jpeg_probability: float = Field(0.0, ge=0, le=1, description="JPEG re-encoding, per image")
    jpeg_quality: tuple[int, int] = Field((70, 95), description="JPEG quality range, both ends included")

    @model_validator(mode="after")
    def check_ranges(self) -> "AugmentationConfig":
        low, high = self.jpeg_quality
        if not 1 <= low <= high <= 95:
            raise ValueError(f"jpeg_quality must be [low, high], 1 <= low <= high <= 95: got {low}, {high}")
        smallest, largest = self.scale
        if not 0 < smallest <= largest <= 2:
            raise ValueError(f"scale must be [low, high], 0 < low <= high <= 2: got {smallest}, {largest}")
        return self


class DistillationConfig(Strict):
    """Train towards each label mixed with trained teacher models' averaged predictions (off without
    teachers): one network learns part of what an ensemble knows, at one network's serving cost."""

    teachers: tuple[Path, ...] = Field((), description="model files: runs' best.pt or promoted model.pt")
    weight: float = Field(
        0.5, gt=0, le=0.5, description="the teachers' share of each target; the label keeps the majority"
    )
    temperature: PositiveFloat = Field(2.0, description="softens the teachers' probabilities")


class TrackingConfig(Strict):
    """Mirror the run into MLflow (`MLFLOW_TRACKING_URI`, else a local store under mlruns/)."""

    enabled: bool = True
    experiment: str = "fashion-mnist"


class TrainerConfig(Strict):
    epochs: PositiveInt = 10
    batch_size: PositiveInt = 128
    patience: PositiveInt | None = Field(None, description="early stopping: epochs without val-loss gain")
    min_delta: NonNegativeFloat = 0.0
    label_smoothing: float = Field(0.0, ge=0, lt=1)


class RunConfig(Strict):
    name: str = "run"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: PositiveInt | Literal["auto"] = Field("auto", description="CPU threads; auto = usable cores")
    runs_dir: Path = Path("runs")
    data: DataConfig = DataConfig()
    network: NetworkConfig
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    augmentation: AugmentationConfig = AugmentationConfig()
    distillation: DistillationConfig = DistillationConfig()
    trainer: TrainerConfig = TrainerConfig()
    tracking: TrackingConfig = TrackingConfig()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Set a dotted `key=value` in the raw mapping; the value is parsed as YAML (`3`, `0.1`, `[32, 64]`)."""
    key, separator, value = override.partition("=")
    if not separator or not key:
        raise ConfigError(f"override {override!r} is not of the form key=value (e.g. trainer.epochs=3)")
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {override!r}: {part!r} is not a section")
        node = child
    node[leaf] = yaml.safe_load(value)


def describe(error: ValidationError) -> str:
    """One line per problem, each naming its key; unknown keys list the valid ones."""
    lines = []
    for problem in error.errors():
        key = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        if problem["type"] == "extra_forbidden":
            valid = valid_keys(problem["loc"][:-1])
            lines.append(f"  {key}: unknown key; valid keys here: {', '.join(valid)}")
        elif problem["type"] == "value_error":  # raised by our validators, which name their keys
            lines.extend(f"  {line}" for line in problem["msg"].removeprefix("Value error, ").splitlines())
        else:
            lines.append(f"  {key}: {problem['msg']} (got {problem.get('input')!r})")
    return "invalid configuration:\n" + "\n".join(lines)


def valid_keys(location: tuple[Any, ...]) -> list[str]:
    model: Any = RunConfig
    for part in location:
        annotation = model.model_fields[part].annotation
        model = annotation
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`base` with `changes` applied section by section (a mapping merges, anything else replaces)."""
    result = dict(base)
    for key, value in changes.items():
        both_sections = isinstance(value, dict) and isinstance(result.get(key), dict)
        result[key] = merged(result[key], value) if both_sections else value
    return result


def read_raw(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file as a mapping, with `extends: other.yaml` (beside it) resolved: the file's keys are
    applied over the one it extends, so a config states only what it changes."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        available = ", ".join(sorted(p.name for p in CONFIGS_DIR.glob("*.yaml")))
        raise ConfigError(f"config file {path} not found; shipped configs: {available}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to values")
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    parent_path = (path.parent / str(parent)).resolve()
    if parent_path in seen:
        raise ConfigError(f"{path}: 'extends' makes a cycle through {parent_path.name}")
    return merged(read_raw(parent_path, (*seen, path.resolve())), raw)


def config_file(path: Path) -> Path:
    """`path`, or the shipped config it names (`smoke`, `compact.yaml`): an installed package's configs
    are out of reach by path."""
    if path.exists() or path.parent != Path("."):
        return path
    shipped = CONFIGS_DIR / (path.name if path.suffix else f"{path.name}.yaml")
    return shipped if shipped.exists() else path


# What `--resume` may change: where the run continues (a run trained on a GPU machine finishing on a
# CPU one), never what it learns, which stays as recorded in its config.yaml.
RESUME_KEYS = ("device", "num_threads")


def check_resume_overrides(overrides: Sequence[str]) -> None:
    """Refuse, naming them, the overrides of keys that would change what a resumed run learns."""
    refused = [key for key, _, _ in (o.partition("=") for o in overrides) if key not in RESUME_KEYS]
    if refused:
        raise ConfigError(
            "--resume continues a run with its recorded config; it may only change "
            f"{' and '.join(RESUME_KEYS)} (e.g. device=cpu), not {', '.join(refused)}"
        )


def load_config(path: Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a YAML config (a path, or a shipped config's name), apply overrides, validate. Raises
    ConfigError with every problem named."""
    raw = read_raw(config_file(path))
    for override in overrides:
        apply_override(raw, override)
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(describe(error)) from None
