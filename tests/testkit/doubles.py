"""Test doubles: stand-ins for eps_theta, and images on the 8-bit grid.

- `ToyEps`: a deterministic, t-dependent eps_theta with no parameters, cheap on any device.
- `TrainableToyEps`: the same map with its slopes and offset as parameters, for gradient tests.
- `TinyEps`: a fixed small network eps_theta for statistical tests: cheap enough to call thousands of times, not
  trivial.
- `grid_data`: images whose pixels are 8-bit grid values k / 127.5 - 1 (what the data map gives).
"""

from __future__ import annotations

import torch

# The slopes w_t of ToyEps at t = 0 and t = T (evenly spaced between): its default, and the steeper ones the bound,
# loss and bench tests use.
SLOPES = (0.2, 1.5)
STEEP_SLOPES = (0.3, 2.0)


def _per_row(values: torch.Tensor, xt: torch.Tensor) -> torch.Tensor:
    """values [B] in xt's dtype, shaped [B, 1, ..., 1] to broadcast against xt [B, ...]."""
    return values.to(xt.dtype).reshape((-1,) + (1,) * (xt.ndim - 1))


class ToyEps:
    """A deterministic, t-dependent stand-in for eps_theta on any device: tanh(w_t x + 0.1), w_t distinct per t
    (evenly spaced from slopes[0] at t = 0 to slopes[1] at t = T)."""

    def __init__(self, T: int, slopes: tuple[float, float] = SLOPES) -> None:
        self.w = torch.linspace(*slopes, T + 1, dtype=torch.float64)

    def __call__(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.tanh(_per_row(self.w.to(xt.device)[t], xt) * xt + 0.1)


class TrainableToyEps(torch.nn.Module):
    """tanh(w_t x + b) with w_t (STEEP_SLOPES, one per t) and b = 0.1 as float64 parameters: differentiable in both."""

    def __init__(self, T: int) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.linspace(*STEEP_SLOPES, T + 1, dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.tensor(0.1, dtype=torch.float64))

    def forward(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.tanh(_per_row(self.w[t], xt) * xt + self.b.to(xt.dtype))


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


def grid_data(shape: tuple[int, ...], seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Images [shape] of i.i.d. uniform 8-bit values k in {0..255} (torch.randint with `seed`) as k / 127.5 - 1."""
    k = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed))
    return (k.double() / 127.5 - 1.0).to(dtype)
