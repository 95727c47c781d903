"""The training loop: epochs, validation, early stopping, best and last checkpoints, resume, summary.

Model selection and early stopping look at the validation split only; the test split is evaluated once,
on the best checkpoint, after training.
"""

import hashlib
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from text_recognizer.atomic import write_json_atomically, write_text_atomically
from text_recognizer.datasets.fashion_mnist import INPUT_SHAPE, DatasetSplits, load_fashion_mnist
from text_recognizer.datasets.versions import resolve_version
from text_recognizer.models.classifier import ClassifierModel, EpochMetrics, load_safely, save_atomically
from text_recognizer.progress import progress
from training.augmentation import augment
from training.config import (
    AugmentationConfig,
    ConfigError,
    NetworkConfig,
    RunConfig,
    SchedulerConfig,
    check_resume_overrides,
    load_config,
)
from training.distillation import distillation_targets, load_teacher
from training.distributed import SINGLE_PROCESS, Distributed
from training.environment import environment
from training.model_files import named_model
from training.run_directory import RunDirectory
from training.runtime import configure_threads, select_device, set_seeds
from training.tracking import Tracker


class DivergenceError(RuntimeError):
    """A training or validation loss stopped being a finite number: the run cannot go on as configured."""


@dataclass
class Progress:
    """Where training stands: the best epoch so far by validation loss, and epochs since it improved."""

    best_epoch: int = 0
    best_val_loss: float = math.inf
    best_val_accuracy: float = 0.0
    epochs_without_improvement: int = 0

    def update(self, epoch: int, val_loss: float, val_accuracy: float, min_delta: float) -> bool:
        if val_loss < self.best_val_loss - min_delta:
            self.best_epoch, self.best_val_loss, self.best_val_accuracy = epoch, val_loss, val_accuracy
            self.epochs_without_improvement = 0
            return True
        self.epochs_without_improvement += 1
        return False

    def exhausted(self, patience: int | None) -> bool:
        return patience is not None and self.epochs_without_improvement >= patience


def derived_seed(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def shuffled_batches(
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    seed: int,
    epoch: int,
    augmentation: AugmentationConfig,
    distributed: Distributed = SINGLE_PROCESS,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Full, augmented batches of images and their `labels` (class indices, or a target distribution per
    image when distilling); order and augmentation depend on (seed, epoch) alone, so a resumed run
    sees exactly what an uninterrupted one would. With several processes, every process walks the same
    global batches and keeps its own shard of each (`batch_size` stays the global batch size)."""
    order_generator = torch.Generator().manual_seed(derived_seed(seed, epoch))
    augment_generator = (
        torch.Generator().manual_seed(derived_seed(seed, epoch, distributed.rank))
        if distributed.enabled
        else order_generator
    )
    order = torch.randperm(len(labels), generator=order_generator).to(images.device)
    for start in range(0, len(labels) - batch_size + 1, batch_size):
        indices = distributed.shard(order[start : start + batch_size])
        yield augment(images[indices], augmentation, augment_generator), labels[indices]


def build_optimizer(config: RunConfig, model: ClassifierModel) -> torch.optim.Optimizer:
    settings = config.optimizer
    parameters = model.network.parameters()
    if settings.name == "sgd":
        return torch.optim.SGD(
            parameters, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
        )
    optimizer_class = torch.optim.Adam if settings.name == "adam" else torch.optim.AdamW
    return optimizer_class(parameters, lr=settings.lr, weight_decay=settings.weight_decay)


def build_scheduler(
    settings: SchedulerConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """A per-batch learning-rate schedule spanning the configured number of epochs."""
    total_steps = steps_per_epoch * epochs
    if settings.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    if settings.name == "onecycle":
        max_lr = optimizer.param_groups[0]["lr"]
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=max_lr, total_steps=total_steps, pct_start=settings.warmup_fraction
        )
    if settings.name == "step":
        step_size = settings.step_epochs * steps_per_epoch
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=settings.gamma)
    return None


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def starting_model(
    path: Path, network: NetworkConfig, class_names: tuple[str, ...], input_shape: tuple[int, ...]
) -> tuple[ClassifierModel, str]:
    """The model `network.init_from` names, checked against the config's network and the data's classes,
    with the sha256 of the very bytes it was loaded from."""
    start, sha256 = named_model(path, "network.init_from")
    expected = {
        "network": (network.name, network.args),
        "classes": tuple(class_names),
        "input shape": tuple(input_shape),
    }
    found = {
        "network": (start.network_name, start.network_args),
        "classes": start.class_names,
        "input shape": start.input_shape,
    }
    problems = [
        f"{key}: the config and data give {expected[key]}, {path} has {found[key]}"
        for key in expected
        if expected[key] != found[key]
    ]
    if problems:
        raise ConfigError(f"network.init_from cannot start from {path}: " + "; ".join(problems))
    return start, sha256


class Trainer:
    """Runs one configured training job inside one run directory, from scratch or from `last.pt`."""

    def __init__(
        self,
        config: RunConfig,
        run: RunDirectory,
        distributed: Distributed = SINGLE_PROCESS,
        start_weights: Path | None = None,
    ) -> None:
        """`start_weights`: fine-tune from that model (`network.init_from`), which must fit the config."""
        self.config = config
        self.run = run
        self.dist = distributed
        self.log = run.attach_logger("training", primary=distributed.is_main)
        set_seeds(config.seed)
        self.threads = configure_threads(config.num_threads, distributed.local_world_size)
        self.device = select_device(config.device, distributed.local_rank)
        # Recorded as training starts: a commit made while a long run trains must not claim that run.
        self.environment = environment(self.device, self.threads)
        self.data: DatasetSplits = load_fashion_mnist(
            version=config.data.version,
            version_hash=config.data.version_hash,
            val_size=config.data.val_size,
            train_size=config.data.train_size,
            split_seed=config.data.split_seed,
            mirror=config.data.mirror,
            oversample=dict(config.data.oversample),
        )
        self.steps_per_epoch = len(self.data.train) // config.trainer.batch_size
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"trainer.batch_size {config.trainer.batch_size} exceeds the {len(self.data.train)} "
                "training images"
            )
        self.model = ClassifierModel(
            config.network.name,
            config.network.args,
            self.data.input_shape,
            self.data.class_names,
            self.data.normalization,
            metadata=self.artifact_metadata(),
        ).to(self.device)
        if start_weights is not None:
            self.start_from(start_weights)
        self.train_targets = self.data.train.labels  # or, distilling, a distribution per image
        if config.distillation.teachers:
            self.train_targets, teachers = distillation_targets(self.data, config.distillation, self.device)
            self.model.metadata["distillation"] = teachers
            self.log.info("distilling from %s", ", ".join(str(path) for path in config.distillation.teachers))
        self.optimizer = build_optimizer(config, self.model)
        self.scheduler = build_scheduler(
            config.scheduler, self.optimizer, self.steps_per_epoch, config.trainer.epochs
        )
        self.progress = Progress()
        self.epochs_completed = 0
        self.tracker = Tracker(
            config.tracking.enabled and distributed.is_main, config.tracking.experiment, self.log
        )
        # Gradients are averaged across processes by DDP; the wrapped module shares the model's weights.
        self.training_network: torch.nn.Module = self.model.network
        if distributed.enabled:
            devices = None if self.device.index is None else [self.device.index]
            self.training_network = DistributedDataParallel(self.model.network, device_ids=devices)

    def start_from(self, path: Path) -> None:
        """Take another model's weights and the input normalization they were trained with. Before the
        network is wrapped for DDP, which then gives every process rank 0's copy."""
        start, sha256 = starting_model(
            path, self.config.network, self.data.class_names, self.data.input_shape
        )
        self.model.network.load_state_dict(start.network.state_dict())
        self.model.normalization = start.normalization
        self.model.metadata["init_from"] = {"path": str(path), "sha256": sha256}
        self.log.info("starting from the weights of %s (normalization %s)", path, start.normalization)

    def artifact_metadata(self) -> dict[str, Any]:
        """Provenance stored in every checkpoint; deterministic, so identical runs give identical files."""
        return {
            "run_name": self.config.name,
            "config": self.config.model_dump(mode="json", exclude=self.unrecorded_keys()),
            "data": {
                "dataset": self.config.data.dataset,
                "version": self.data.version,
                "version_hash": self.data.version_hash,
                "checksums": self.data.checksums,
                "train_images": len(self.data.train),
                "val_images": len(self.data.val),
            },
            "metrics": {},
        }

    def unrecorded_keys(self) -> dict[str, Any]:
        """Config keys left out of the checkpoints: where the run is, not what it is, and distillation,
        rotation and scaling, and JPEG re-encoding when off, so that runs without them keep the bytes they
        had before."""
        keys: dict[str, Any] = {"runs_dir": True}
        if not self.config.distillation.teachers:
            keys["distillation"] = True
        augmentation = self.config.augmentation
        unused = set()
        if not augmentation.affine_probability:
            unused |= {"affine_probability", "rotation_degrees", "scale"}
        if not augmentation.jpeg_probability:
            unused |= {"jpeg_probability", "jpeg_quality"}
        if unused:
            keys["augmentation"] = unused
        return keys

    def training_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "model": self.model.artifact(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "epochs_completed": self.epochs_completed,
            "progress": asdict(self.progress),
            "rng": {"torch": torch.get_rng_state()},
        }
        if self.device.type == "cuda":
            state["rng"]["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def restore(self, checkpoint_path: Path) -> None:
        state = load_safely(checkpoint_path)
        saved = ClassifierModel.from_artifact(state["model"])
        teachers, trained_with = self.model.metadata.get("distillation"), saved.metadata.get("distillation")
        if teachers != trained_with:  # the targets would not be the ones the run began on
            raise ConfigError(
                f"cannot resume {self.run.path}: its distillation teachers were {trained_with}, the files "
                f"are now {teachers}; restore them, or start a new run"
            )
        self.model.network.load_state_dict(saved.network.state_dict())
        self.model.metadata = saved.metadata
        self.model.normalization = saved.normalization  # a fine-tuned run's came with its start weights
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.epochs_completed = state["epochs_completed"]
        self.progress = Progress(**state["progress"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        if self.dist.is_main:
            self.run.keep_metrics_through(self.epochs_completed)
        self.log.info(
            "resumed %s after epoch %d (best epoch %d, val loss %.4f)",
            self.run.path,
            self.epochs_completed,
            self.progress.best_epoch,
            self.progress.best_val_loss,
        )

    def fit(self) -> dict[str, Any]:
        config = self.config.trainer
        train, val = self.data.train, self.data.val
        train_images, train_targets = train.images.to(self.device), self.train_targets.to(self.device)
        val_images, val_labels = self.dist.shard(val.images), self.dist.shard(val.labels)  # this process's
        self.log.info(
            "training %s (%s, %d parameters) on %s with %d thread(s): %d train / %d val images, run %s",
            self.config.name,
            self.config.network.name,
            self.model.parameter_count,
            self.device,
            self.threads,
            len(train),
            len(val),
            self.run.path,
        )
        self.tracker.start(
            self.run.path,
            params=self.config.model_dump(mode="json", exclude={"runs_dir"}),
            tags={
                "config": self.config.name,
                "dataset": self.config.data.dataset,
                "data_version": self.data.version,
                "data_version_hash": self.data.version_hash,
                "git_commit": str(self.environment["git_commit"]),
                "run_dir": str(self.run.path),
            },
        )
        for epoch in range(self.epochs_completed + 1, config.epochs + 1):
            if self.progress.exhausted(config.patience):
                self.log.info(
                    "early stop: no val-loss improvement for %d epochs",
                    self.progress.epochs_without_improvement,
                )
                break
            if self.dist.enabled:  # dropout differs per process, and a resumed run repeats it exactly
                torch.manual_seed(derived_seed(self.config.seed, epoch, self.dist.rank))
            started = time.perf_counter()
            batches = shuffled_batches(
                train_images,
                train_targets,
                config.batch_size,
                self.config.seed,
                epoch,
                self.config.augmentation,
                self.dist,
            )
            batches = progress(
                batches,
                desc=f"epoch {epoch}/{config.epochs}",
                total=len(train_targets) // config.batch_size,
                unit="batch",
                shown=self.dist.rank == 0,
            )
            fit = self.model.fit_epoch(
                batches, self.optimizer, self.scheduler, config.label_smoothing, self.training_network
            )
            fit = self.reduced(fit.loss, fit.accuracy, fit.images)
            fit_seconds = time.perf_counter() - started
            shard = self.model.evaluate(val_images, val_labels)
            reduced = self.reduced(shard["loss"], shard["accuracy"], len(val_labels))
            validation = {"loss": reduced.loss, "accuracy": reduced.accuracy}
            if not (math.isfinite(fit.loss) and math.isfinite(validation["loss"])):
                self.diverged(epoch, fit.loss, validation["loss"])
            improved = self.progress.update(
                epoch, validation["loss"], validation["accuracy"], config.min_delta
            )
            self.epochs_completed = epoch
            record = {
                "epoch": epoch,
                "train_loss": fit.loss,
                "train_accuracy": fit.accuracy,
                "val_loss": validation["loss"],
                "val_accuracy": validation["accuracy"],
                "lr": self.optimizer.param_groups[0]["lr"],
                "epoch_seconds": time.perf_counter() - started,
                "images_per_second": fit.images / fit_seconds,
                "best": improved,
            }
            if improved:
                self.model.metadata["metrics"] = {
                    "epoch": epoch,
                    "val_loss": validation["loss"],
                    "val_accuracy": validation["accuracy"],
                }
            if self.dist.is_main:
                self.run.append_metrics(record)
                self.tracker.log_metrics(
                    {k: v for k, v in record.items() if k not in ("epoch", "best")}, step=epoch
                )
                if improved:
                    self.model.save(self.run.best_checkpoint)
                save_atomically(self.training_state(), self.run.last_checkpoint)
            self.log.info(
                "epoch %3d/%d  train loss %.4f acc %.4f  val loss %.4f acc %.4f  lr %.2e  %.1fs  "
                "%.0f img/s%s",
                epoch,
                config.epochs,
                fit.loss,
                fit.accuracy,
                validation["loss"],
                validation["accuracy"],
                record["lr"],
                record["epoch_seconds"],
                record["images_per_second"],
                "  *best" if improved else "",
            )
        return self.finish()

    def diverged(self, epoch: int, train_loss: float, val_loss: float) -> None:
        """Stop before a non-finite epoch is saved: the last checkpoint stays the last finite epoch."""
        if self.dist.is_main:
            self.tracker.finish("FAILED")
        kept = (
            f"epoch {self.epochs_completed} is saved in {self.run.last_checkpoint}; after fixing the "
            "config, start a new run (or --resume this one to retry from there)"
            if self.epochs_completed
            else "no epoch finished, so nothing was saved"
        )
        raise DivergenceError(
            f"training diverged in epoch {epoch}: train loss {train_loss}, validation loss {val_loss} "
            f"(learning rate {self.config.optimizer.lr}: try a lower optimizer.lr); {kept}"
        )

    def reduced(self, loss: float, accuracy: float, count: int) -> EpochMetrics:
        """Means over all processes' shards, weighted by shard size."""
        loss_sum, correct, total = self.dist.sum([loss * count, accuracy * count, count], self.device)
        return EpochMetrics(loss_sum / total, correct / total, int(total))

    def finish(self) -> dict[str, Any]:
        """Rank 0 evaluates the best checkpoint on the test split and writes the summary; all return it."""
        summary = self.summarize() if self.dist.is_main else None
        return self.dist.from_main(summary) or {}

    def summarize(self) -> dict[str, Any]:
        best = ClassifierModel.load(self.run.best_checkpoint, self.device)
        test = best.evaluate(self.data.test.images, self.data.test.labels)
        best.metadata["metrics"].update(test_loss=test["loss"], test_accuracy=test["accuracy"])
        best.save(self.run.best_checkpoint)
        records = self.run.read_metrics()
        summary = {
            "name": self.config.name,
            "run_dir": str(self.run.path),
            "epochs_completed": self.epochs_completed,
            "stopped_early": self.epochs_completed < self.config.trainer.epochs,
            "best_epoch": self.progress.best_epoch,
            "best_val_loss": self.progress.best_val_loss,
            "best_val_accuracy": self.progress.best_val_accuracy,
            "test": test,
            "parameters": best.parameter_count,
            "train_seconds": sum(record["epoch_seconds"] for record in records),
            "best_checkpoint": str(self.run.best_checkpoint),
            "best_checkpoint_sha256": sha256_of(self.run.best_checkpoint),
            "last_checkpoint": str(self.run.last_checkpoint),
            "data": {**best.metadata["data"], "test_images": len(self.data.test)},
            "environment": self.environment,
            "distributed": {"processes": self.dist.world_size, "backend": self.dist.backend},
        }
        write_json_atomically(self.run.summary_path, summary)
        self.tracker.log_metrics(
            {
                "test_loss": test["loss"],
                "test_accuracy": test["accuracy"],
                "best_val_loss": self.progress.best_val_loss,
                "best_epoch": self.progress.best_epoch,
                "parameters": best.parameter_count,
            }
        )
        self.tracker.log_artifacts([self.run.config_path, self.run.metrics_path, self.run.summary_path])
        self.tracker.finish()
        self.log.info(
            "done: best epoch %d (val loss %.4f, val acc %.4f), test accuracy %.4f",
            self.progress.best_epoch,
            self.progress.best_val_loss,
            self.progress.best_val_accuracy,
            test["accuracy"],
        )
        self.log.info("run directory:   %s", self.run.path)
        self.log.info("best checkpoint: %s", self.run.best_checkpoint)
        return summary


def check_divisible(config: RunConfig, distributed: Distributed) -> None:
    if config.trainer.batch_size % distributed.world_size:
        raise ConfigError(
            f"trainer.batch_size {config.trainer.batch_size} (the global batch) must be divisible by the "
            f"{distributed.world_size} training processes"
        )


def with_absolute_paths(config: RunConfig) -> RunConfig:
    """The config with the models it names recorded absolute: the run resumes from any directory."""
    network, distillation = config.network, config.distillation
    if network.init_from is not None:
        network = network.model_copy(update={"init_from": network.init_from.resolve()})
    teachers = tuple(path.resolve() for path in distillation.teachers)
    distillation = distillation.model_copy(update={"teachers": teachers})
    return config.model_copy(update={"network": network, "distillation": distillation})


def start_run(config: RunConfig, run_path: Path | None = None) -> dict[str, Any]:
    """Train `config` in a new run directory (`run_path`, else a timestamped one under `runs_dir`).

    Under torchrun, rank 0 checks the data and creates the directory; every process then trains.
    """
    config = with_absolute_paths(config)
    distributed = Distributed.from_env()
    check_divisible(config, distributed)
    distributed.start(select_device(config.device, distributed.local_rank).type)  # fails before anything
    try:
        outcome: str | Exception | None = None
        if distributed.is_main:
            try:
                version, _ = resolve_version(
                    config.data.version, expected_hash=config.data.version_hash, mirror=config.data.mirror
                )
                if config.network.init_from is not None:  # refused before a run directory is made
                    starting_model(config.network.init_from, config.network, version.class_names, INPUT_SHAPE)
                for teacher in config.distillation.teachers:
                    load_teacher(teacher, version.class_names, INPUT_SHAPE)
                run = (
                    RunDirectory.at(run_path)
                    if run_path
                    else RunDirectory.create(config.runs_dir, config.name)
                )
                write_text_atomically(run.config_path, config.to_yaml())
                outcome = str(run.path)
            except Exception as error:
                outcome = error
        outcome = distributed.from_main(outcome)  # the other processes fail with rank 0's error, not hang
        if isinstance(outcome, Exception):
            raise outcome
        assert outcome is not None
        return Trainer(config, RunDirectory(Path(outcome)), distributed, config.network.init_from).fit()
    finally:
        distributed.stop()


def resume_run(run_path: Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Continue an interrupted run from its last checkpoint, with the config it recorded; `overrides`
    may set only where it continues (`RESUME_KEYS`: `device=cpu` finishes a GPU run on this machine)."""
    check_resume_overrides(overrides)
    run = RunDirectory(run_path)
    if not run.config_path.exists():
        raise ConfigError(f"{run_path} is not a run directory (no config.yaml)")
    config = load_config(run.config_path, overrides)
    distributed = Distributed.from_env()
    check_divisible(config, distributed)
    distributed.start(select_device(config.device, distributed.local_rank).type)
    try:
        resumed = run.last_checkpoint.exists()  # else killed before its first epoch ended: start again
        trainer = Trainer(config, run, distributed, None if resumed else config.network.init_from)
        if resumed:
            trainer.restore(run.last_checkpoint)
        return trainer.fit()
    finally:
        distributed.stop()
