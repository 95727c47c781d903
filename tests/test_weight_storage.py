"""int8 weight storage: what is stored, how close it stays, and what it leaves alone."""

import pytest
import torch

from text_recognizer.models.weight_storage import SCALE_SUFFIX, dequantized, quantized


def test_each_output_channel_is_stored_within_half_a_step_of_its_weights() -> None:
    torch.manual_seed(0)
    weight = torch.randn(8, 4, 3, 3) * torch.logspace(-3, 0, 8)[:, None, None, None]  # scales differ
    weight[5] = 0  # a channel of zeros stays zeros
    state = {"conv.weight": weight, "bn.num_batches_tracked": torch.tensor(7), "bn.bias": torch.randn(8)}
    stored = quantized(state)
    assert stored["conv.weight"].dtype == torch.int8 and stored["conv.weight"].abs().max() == 127
    scale = stored["conv.weight" + SCALE_SUFFIX]
    assert scale.shape == (8,)
    restored = dequantized(stored)
    error = (restored["conv.weight"] - weight).abs().flatten(1).amax(dim=1)
    assert torch.all(error <= scale / 2 * (1 + 1e-6))  # per channel, not one scale for the tensor
    assert torch.equal(restored["conv.weight"][5], torch.zeros(4, 3, 3))
    for key in ("bn.num_batches_tracked", "bn.bias"):  # buffers and 1-d parameters are kept as they are
        assert torch.equal(stored[key], state[key]) and torch.equal(restored[key], state[key])
    assert set(restored) == set(state)
    assert torch.equal(quantized(restored)["conv.weight"], stored["conv.weight"])  # stored again: the same


def test_weights_that_cannot_be_stored_or_restored_are_named() -> None:
    with pytest.raises(ValueError, match=r"weight 'fc\.weight' holds NaN or infinity"):
        quantized({"fc.weight": torch.tensor([[1.0, float("nan")]])})
    stored = quantized({"fc.weight": torch.randn(3, 5)})
    del stored["fc.weight" + SCALE_SUFFIX]
    missing = r"int8 weight 'fc\.weight' has no per-channel scales of shape \(3,\)"
    with pytest.raises(ValueError, match=missing):
        dequantized(stored)
    stray = {"fc.bias": torch.randn(3), "fc.bias" + SCALE_SUFFIX: torch.ones(3)}
    assert "fc.bias" + SCALE_SUFFIX in dequantized(stray)  # not int8: left for load_state_dict to refuse
    # A file that says int8 and holds float32 weights (found in review: it loaded as float32).
    with pytest.raises(ValueError, match=r"weight 'fc\.weight' is torch\.float32 in a state stored as int8"):
        dequantized({"fc.weight": torch.randn(3, 5), "fc.bias": torch.randn(3)})
