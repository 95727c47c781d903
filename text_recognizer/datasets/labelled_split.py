"""A labelled split: uint8 images, labels and, where they are mixed, the domain each image comes from."""

from dataclasses import dataclass

import torch

FASHION_MNIST_DOMAIN = "fashion_mnist"


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8 (N, 28, 28)
    labels: torch.Tensor  # int64 (N,); -1 for an image of no class the model knows
    domains: tuple[str, ...] = ()  # where each image comes from; empty: all Fashion-MNIST
    # Each image's separated view (`image_bytes_to_views`), the image itself where it has none; None: no
    # image has one (Fashion-MNIST's 28x28 images never do).
    separated: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.labels.numel()

    def domain_names(self) -> tuple[str, ...]:
        return self.domains or (FASHION_MNIST_DOMAIN,) * len(self)

    def subset(self, indices: torch.Tensor) -> "Split":
        domains = tuple(self.domains[i] for i in indices.tolist()) if self.domains else ()
        separated = None if self.separated is None else self.separated[indices]
        return Split(self.images[indices], self.labels[indices], domains, separated)

    def by_domain(self) -> dict[str, "Split"]:
        """The split cut by domain, in order of first appearance (evaluation reports each apart)."""
        names = self.domain_names()
        return {
            domain: self.subset(torch.tensor([i for i, d in enumerate(names) if d == domain]))
            for domain in dict.fromkeys(names)
        }

    def separated_views(self) -> torch.Tensor:
        return self.images if self.separated is None else self.separated

    def __add__(self, other: "Split") -> "Split":
        none = self.separated is None and other.separated is None
        return Split(
            torch.cat([self.images, other.images]),
            torch.cat([self.labels, other.labels]),
            self.domain_names() + other.domain_names(),
            None if none else torch.cat([self.separated_views(), other.separated_views()]),
        )
