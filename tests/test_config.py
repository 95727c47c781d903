"""Config validation: every mistake is caught before work starts and names its key and the choices."""

import re
from pathlib import Path

import pytest
import torch

from text_recognizer.datasets.versions import DataVersion
from training.cli import main
from training.config import CONFIGS_DIR, ConfigError, RunConfig, load_config
from training.runtime import DeviceError, select_device

MINIMAL = "name: t\nnetwork:\n  name: cnn\n"


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(MINIMAL)
    return path


@pytest.mark.parametrize("path", sorted(CONFIGS_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path: Path) -> None:
    assert isinstance(load_config(path), RunConfig)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("trainer.epcohs=3", "trainer.epcohs: unknown key; valid keys here: epochs, batch_size"),
        ("bogus=1", "bogus: unknown key; valid keys here: name, seed, device"),
        ("trainer.epochs=three", "trainer.epochs: Input should be a valid integer"),
        ("trainer.epochs=0", "trainer.epochs: Input should be greater than 0"),
        ("optimizer.name=adm", "optimizer.name: Input should be 'sgd', 'adam' or 'adamw' (got 'adm')"),
        ("network.name=vgg", "network.name: Input should be 'mlp', 'cnn' or 'resnet'"),
        ("device=tpu", "device: Input should be 'auto', 'cpu' or 'cuda'"),
        ("scheduler.name=linear", "scheduler.name: Input should be 'none', 'cosine', 'onecycle' or 'step'"),
        ("network.args.depth=3", "network.args.depth: unknown argument for network 'cnn'; valid: channels,"),
        ("network.args.channels=wide", "network.args.channels: Input should be a valid tuple (got 'wide')"),
        ("network.args.dropout=[1]", "network.args.dropout: Input should be a valid number"),
    ],
)
def test_invalid_values_name_the_key_and_choices(config_file: Path, override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(config_file, [override])
    assert expected in str(error.value)


def test_overrides_are_typed_and_nested(config_file: Path) -> None:
    config = load_config(
        config_file, ["trainer.epochs=3", "optimizer.lr=0.01", "network.args.channels=[8, 16]", "device=cpu"]
    )
    assert config.trainer.epochs == 3 and config.optimizer.lr == 0.01
    assert config.network.args == {"channels": [8, 16]} and config.device == "cpu"


@pytest.mark.parametrize(
    ("content", "message"),
    [("name: [unclosed", "is not valid YAML"), ("- a list", "must hold a mapping")],
)
def test_malformed_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_missing_file_lists_shipped_configs(tmp_path: Path) -> None:
    names = (
        "compact",
        "default",
        "photos-distilled",
        "photos-jpeg-ft",
        "photos-jpeg",
        "photos-phone-c96",
        "photos-phone-x5",
        "photos-phone",
        "photos",
        "smoke",
        "tiny",
    )
    shipped = ", ".join(f"{name}.yaml" for name in names)
    with pytest.raises(ConfigError, match=re.escape(f"not found; shipped configs: {shipped}")):
        load_config(tmp_path / "nope.yaml")


def test_a_config_extends_another_and_states_only_what_it_changes(tmp_path: Path) -> None:
    photos = load_config(CONFIGS_DIR / "photos.yaml")
    compact = load_config(CONFIGS_DIR / "compact.yaml")
    assert photos.name == "photos" and DataVersion.read(photos.data.version).has_shop_photos
    assert photos.network == compact.network and photos.augmentation == compact.augmentation
    assert photos.trainer.label_smoothing == compact.trainer.label_smoothing == 0.1  # a section merges
    assert photos.data.version != compact.data.version  # ... and a key set in it wins
    (tmp_path / "a.yaml").write_text("extends: b.yaml\nname: a\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\nname: b\n")
    with pytest.raises(ConfigError, match=r"'extends' makes a cycle through a\.yaml"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: missing.yaml\n")
    with pytest.raises(ConfigError, match=r"missing\.yaml not found"):
        load_config(tmp_path / "c.yaml")


def test_override_without_equals_sign(config_file: Path) -> None:
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_config(config_file, ["trainer.epochs"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_request_without_cuda_is_a_clear_error() -> None:
    with pytest.raises(DeviceError, match="'cuda' was requested but CUDA is not available"):
        select_device("cuda")
    assert select_device("auto") == torch.device("cpu")


def test_cli_reports_config_errors_without_traceback(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(config_file), "optimizer.name=adm"]) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith("error: invalid configuration:") and "Traceback" not in stderr
