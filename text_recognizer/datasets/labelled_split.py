"""A labelled split: uint8 images, labels and, where they are mixed, the domain each image comes from."""

from dataclasses import dataclass

import torch

FASHION_MNIST_DOMAIN = "fashion_mnist"


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8 (N, 28, 28)
    labels: torch.Tensor  # int64 (N,); -1 for an image of no class the model knows
    domains: tuple[str, ...] = ()  # where each image comes from; empty: all Fashion-MNIST

    def __len__(self) -> int:
        return self.labels.numel()

    def domain_names(self) -> tuple[str, ...]:
        return self.domains or (FASHION_MNIST_DOMAIN,) * len(self)

    def subset(self, indices: torch.Tensor) -> "Split":
        domains = tuple(self.domains[i] for i in indices.tolist()) if self.domains else ()
        return Split(self.images[indices], self.labels[indices], domains)

    def by_domain(self) -> dict[str, "Split"]:
        """The split cut by domain, in order of first appearance (evaluation reports each apart)."""
        names = self.domain_names()
        return {
            domain: self.subset(torch.tensor([i for i, d in enumerate(names) if d == domain]))
            for domain in dict.fromkeys(names)
        }

    def __add__(self, other: "Split") -> "Split":
        return Split(
            torch.cat([self.images, other.images]),
            torch.cat([self.labels, other.labels]),
            self.domain_names() + other.domain_names(),
        )
