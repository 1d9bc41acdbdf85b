"""Small fixed eps_theta models for statistical tests: cheap enough to call thousands of times, not trivial."""

from __future__ import annotations

import torch


class TinyEps(torch.nn.Module):
    """A fixed small eps_theta(x_t, t): W2 tanh(W1 x + e_t) on the flattened pixels, weights from a generator."""

    def __init__(self, T: int, dim: int, generator: torch.Generator, width: int = 16) -> None:
        super().__init__()
        self.inner = torch.nn.Linear(dim, width)
        self.outer = torch.nn.Linear(width, dim)
        self.embedding = torch.nn.Parameter(torch.empty(T + 1, width))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(0.5 * torch.randn(p.shape, generator=generator))

    def forward(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inner(xt.flatten(1)) + self.embedding[t])  # [B, width]
        return self.outer(h).reshape(xt.shape)  # [B, C, H, W]
