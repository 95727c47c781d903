"""Plain `nn.Module`s, built from input shape, class count and their own keyword arguments only."""

import inspect
from typing import Any

from torch import nn

from text_recognizer.networks.cnn import CNN
from text_recognizer.networks.mlp import MLP
from text_recognizer.networks.resnet import ResNet

NETWORKS: dict[str, type[nn.Module]] = {"mlp": MLP, "cnn": CNN, "resnet": ResNet}

# Supplied by the data, not by configuration.
DATA_ARGUMENTS = ("input_shape", "num_classes")


def network_arguments(name: str) -> dict[str, inspect.Parameter]:
    """The configurable keyword arguments of a network, with their annotations and defaults."""
    parameters = inspect.signature(NETWORKS[name]).parameters
    return {key: value for key, value in parameters.items() if key not in DATA_ARGUMENTS}


def build_network(name: str, input_shape: tuple[int, int, int], num_classes: int, **kwargs: Any) -> nn.Module:
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; valid choices: {', '.join(NETWORKS)}")
    return NETWORKS[name](input_shape=input_shape, num_classes=num_classes, **kwargs)


def count_parameters(network: nn.Module) -> int:
    return sum(parameter.numel() for parameter in network.parameters())
