"""Every network is a plain module: any input shape and class count in, logits of the right shape out."""

import pytest
import torch

from text_recognizer.networks import NETWORKS, build_network, count_parameters


@pytest.mark.parametrize("name", sorted(NETWORKS))
@pytest.mark.parametrize(("input_shape", "num_classes"), [((1, 28, 28), 10), ((3, 32, 32), 7)])
def test_output_shape(name: str, input_shape: tuple[int, int, int], num_classes: int) -> None:
    network = build_network(name, input_shape, num_classes).eval()
    with torch.no_grad():
        logits = network(torch.randn(4, *input_shape))
    assert logits.shape == (4, num_classes)
    assert torch.isfinite(logits).all()


def test_arguments_change_the_architecture() -> None:
    small = build_network("resnet", (1, 28, 28), 10, channels=(8, 16), blocks_per_stage=1)
    large = build_network("resnet", (1, 28, 28), 10, channels=(32, 64, 128), blocks_per_stage=2)
    assert count_parameters(small) < count_parameters(large)


def test_unknown_network_names_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown network 'vgg'; valid choices: mlp, cnn, resnet"):
        build_network("vgg", (1, 28, 28), 10)
