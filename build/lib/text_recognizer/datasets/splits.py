"""Seeded, stratified sampling: validation hold-outs and subsets that keep the class balance."""

import torch


def stratified_sample(labels: torch.Tensor, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose `count` indices whose class proportions match `labels`; return (chosen, rest), both sorted.

    Each class gets its proportional share, rounded by largest remainder so shares sum to `count`.
    """
    total = labels.numel()
    if not 0 < count < total:
        raise ValueError(f"cannot take {count} of {total} items: need 0 < count < {total}")
    generator = torch.Generator().manual_seed(seed)
    classes, class_counts = torch.unique(labels, return_counts=True)
    exact = class_counts.double() * count / total
    shares = exact.floor().long()
    shortfall = count - int(shares.sum())
    shares[torch.argsort(exact - shares, descending=True, stable=True)[:shortfall]] += 1
    chosen = []
    for label, share in zip(classes.tolist(), shares.tolist(), strict=True):
        members = torch.nonzero(labels == label).flatten()
        chosen.append(members[torch.randperm(members.numel(), generator=generator)[:share]])
    chosen_indices = torch.cat(chosen).sort().values
    mask = torch.ones(total, dtype=torch.bool)
    mask[chosen_indices] = False
    return chosen_indices, torch.nonzero(mask).flatten()
