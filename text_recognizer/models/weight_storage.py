"""Weights stored as int8: how a network four times the size of a float32 one fits the same file budget.

Each convolution and linear weight is kept as integers in [-127, 127] with one float32 scale per output
channel (symmetric, no zero point). The network still computes in float32, with those integers times
their scales as its weights: what promotion calibrates and evaluates, and what the service runs, is
exactly the stored model. Only the file shrinks. Biases, batch-norm parameters and buffers stay float32
(a few hundred numbers per layer).
"""

import torch

SCALE_SUFFIX = ".int8_scale"
INT8_LIMIT = 127


def quantizable(tensor: torch.Tensor) -> bool:
    """Convolution and linear weights: floating point, one row per output channel."""
    return tensor.is_floating_point() and tensor.dim() >= 2


def quantized(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` with each quantizable weight as int8 and its per-channel scales under `<key>.int8_scale`."""
    stored = {}
    for key, tensor in state.items():
        if not quantizable(tensor):
            stored[key] = tensor
            continue
        if not torch.isfinite(tensor).all():
            raise ValueError(f"weight {key!r} holds NaN or infinity: nothing to store as int8")
        # On the CPU: its division gives the scales that a saved and reloaded model gives again (CUDA's
        # `/ 127` may differ in the last bit), so a reloaded model saves to the same bytes.
        rows = tensor.detach().cpu().float().flatten(1)
        scale = (rows.abs().amax(dim=1) / INT8_LIMIT).clamp_min(torch.finfo(torch.float32).tiny)
        integers = (rows / scale[:, None]).round().clamp(-INT8_LIMIT, INT8_LIMIT).to(torch.int8)
        stored[key] = integers.reshape(tensor.shape)
        stored[key + SCALE_SUFFIX] = scale
    return stored


def dequantized(stored: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The float32 weights of a `quantized` state; ValueError for an integer weight without its scales
    (or scales of the wrong shape), which would otherwise load as weights of -127..127, and for a float
    weight where `quantized` leaves none (a file that says int8 and holds float32)."""
    state = {}
    for key, tensor in stored.items():
        weight = stored.get(key.removesuffix(SCALE_SUFFIX)) if key.endswith(SCALE_SUFFIX) else None
        if weight is not None and weight.dtype == torch.int8:
            continue  # used with its weight; a stray one reaches load_state_dict, which names it
        if quantizable(tensor):
            raise ValueError(f"weight {key!r} is {tensor.dtype} in a state stored as int8")
        if tensor.dtype != torch.int8:
            state[key] = tensor
            continue
        scale = stored.get(key + SCALE_SUFFIX)
        if scale is None or scale.shape != (tensor.shape[0],):
            raise ValueError(f"int8 weight {key!r} has no per-channel scales of shape ({tensor.shape[0]},)")
        state[key] = (tensor.float().flatten(1) * scale.float()[:, None]).reshape(tensor.shape)
    return state
