"""Graded broken adapters: the reference adapter with one error whose size is a parameter delta.

They measure what the statistical cases can see (`ddpm.studies.conformance_power` runs them over seeds and a grid
of delta) and pin the cases' thresholds (tests/conformance/test_power.py). At delta = 0 each is the reference. Three
kinds of error (`ErrorKind`):

- NOISE: every step's noise sigma_t z multiplied by 1 + delta (its variance by (1 + delta)^2), at every timestep.
- CANCELLING: sigma_t^2 multiplied by 1 + delta on the first half of the visited timesteps (t > T // 2) and by a
  factor c on the second half, c chosen from the chain-law recursion (`ddpm.conformance.cases.chain_law`) so that
  the law of each full chain's output under the suite's Gaussian data is exactly the reference's
  (`cancelling_factor`). No test of the chain's output alone can see it; a case that checks single steps can.
- LOSS: the training loss multiplied by 1 + delta.

Each offers the operations its error touches and no other optional one: NOISE and CANCELLING their Algorithm 2
chains (one per fixed variance, each step through the adapter's own `reverse_step`), LOSS its `training_loss`.
The strided and DDIM steps are not offered (the error is defined on the one-step sampler).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence

import torch

from ddpm.conformance.adapters.reference import ReferenceAdapter
from ddpm.conformance.cases import Context, SuiteConfig, chain_law
from ddpm.conformance.oracle import GaussianData
from ddpm.conformance.protocol import Adapter, Chain, ChainKind, NotOffered, VarianceKind, check_adapter

Tensor = torch.Tensor
T_DEFAULT = 50  # small enough that a suite run of the statistical cases takes a fraction of a second


class ErrorKind(enum.Enum):
    """The error a graded adapter carries (module docstring)."""

    NOISE = "noise"  # sigma_t z -> (1 + delta) sigma_t z at every step
    CANCELLING = "cancelling"  # sigma_t^2 x (1 + delta) for t > T // 2, x c below: the chain's final law unchanged
    LOSS = "loss"  # the training loss x (1 + delta)


class GradedAdapter(ReferenceAdapter):
    variances = {"beta": VarianceKind.BETA, "beta_tilde": VarianceKind.BETA_TILDE}  # the fixed ones its errors touch
    """The reference (linear schedule, paper timesteps, float64) with an error of `kind` and size `delta`.

    `data` is the Gaussian data under which a CANCELLING error leaves the chains' output law unchanged (the suite's
    default `SuiteConfig().data`); ValueError if no non-negative c does that at this delta.
    """

    family = "graded"

    def __init__(self, kind: ErrorKind | str, delta: float, T: int = T_DEFAULT,
                 data: GaussianData | None = None) -> None:
        super().__init__("linear", T)
        self.kind = ErrorKind(kind)
        self.delta = float(delta)
        if not self.delta > -1.0:
            raise ValueError(f"delta must be > -1 (1 + delta scales the error), got {delta!r}")
        self.name = f"graded: {self.kind.value} error, delta = {self.delta:g} (linear, T={T})"
        self.options = {"kind": self.kind.value, "delta": self.delta}
        self.data = data if data is not None else SuiteConfig().data
        self.second_half: dict[str, float] = {}  # variance option -> c (CANCELLING)
        if self.kind is ErrorKind.CANCELLING:
            self.second_half = {option: cancelling_factor(self, option, self.delta) for option in self.variances}

    # ---------------------------------------------------------------------------------------- the error
    def variance_factor(self, t: int, variance: str) -> float:
        """What this adapter multiplies the claimed sigma_t^2 by at paper timestep t (1 for LOSS)."""
        if self.kind is ErrorKind.NOISE:
            return (1.0 + self.delta) ** 2
        if self.kind is ErrorKind.CANCELLING:
            return 1.0 + self.delta if t > self.diffusion.T // 2 else self.second_half.get(variance, 1.0)
        return 1.0

    def reverse_step(self, eps: Tensor, xt: Tensor, t: int, z: Tensor, variance: str,
                     v: Tensor | None = None) -> Tensor:
        """Algorithm 2's step with sigma_t z scaled by sqrt(variance_factor(t)) (sigma_t z is linear in z)."""
        return super().reverse_step(eps, xt, t, z * self.variance_factor(t, variance) ** 0.5, variance, v)

    def training_loss(self, eps_model, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        if self.kind is not ErrorKind.LOSS:
            raise NotOffered("this graded adapter carries a sampling error; its loss is not offered")
        return (1.0 + self.delta) * super().training_loss(eps_model, x0, t, noise)

    def chains(self) -> list[Chain]:
        if self.kind is ErrorKind.LOSS:
            return []
        return [self.chain(option) for option in self.variances]

    def chain(self, variance: str) -> Chain:
        """Algorithm 2 from x_T ~ N(0, I) to x_0, every step through this adapter's `reverse_step`; it resumes from a
        given x_t (the calibration case)."""
        T = self.diffusion.T

        def steps(eps_model: Callable[[Tensor, Tensor], Tensor], x: Tensor, start: int,
                  generator: torch.Generator) -> Tensor:
            if not 1 <= int(start) <= T:
                raise ValueError(f"start = {start} is not a visited timestep (1..{T})")
            for t in range(int(start), 0, -1):
                tt = torch.full((x.shape[0],), t, dtype=torch.int64)
                z = torch.randn(x.shape, generator=generator, dtype=self.dtype) if t > 1 else torch.zeros_like(x)
                x = self.reverse_step(eps_model(x, tt), x, t, z, variance)
            return x

        def run(eps_model: Callable[[Tensor, Tensor], Tensor], shape: tuple[int, ...],
                generator: torch.Generator) -> Tensor:
            return steps(eps_model, torch.randn(shape, generator=generator, dtype=self.dtype), T, generator)

        return Chain(f"algorithm_2(variance={variance!r})", ChainKind.ANCESTRAL, list(range(T, 0, -1)), run,
                     variance=variance, resume=lambda eps_model, x, start, generator: steps(
                         eps_model, x.to(self.dtype), start, generator))

    # ----------------------------------------------------------------------------------- not offered
    def strided_timesteps(self, num_steps: int) -> list[int]:
        raise NotOffered("graded adapters offer the one-step sampler only")

    def strided_step(self, *args, **kwargs) -> Tensor:
        raise NotOffered("graded adapters offer the one-step sampler only")

    def ddim_timesteps(self, num_steps: int) -> list[int]:
        raise NotOffered("graded adapters offer the one-step sampler only")

    def ddim_step(self, *args, **kwargs) -> Tensor:
        raise NotOffered("graded adapters offer the one-step sampler only")


def chain_variance(adapter: ReferenceAdapter, variance: str, factors: Sequence[float],
                   data: GaussianData | None = None) -> float:
    """The variance per dimension of the output of Algorithm 2 (`variance` option, every timestep T..1) driven by
    the exact eps* of `data`, when step k's sigma^2 is multiplied by factors[k] (chain_law's recursion)."""
    config = SuiteConfig(data=data if data is not None else SuiteConfig().data)
    T = adapter.diffusion.T
    claimed = Chain("", ChainKind.ANCESTRAL, list(range(T, 0, -1)), lambda *args: torch.empty(0), variance=variance)
    return chain_law(Context(check_adapter(adapter), config), claimed, factors)[1]


def cancelling_factor(adapter: GradedAdapter, variance: str, delta: float) -> float:
    """c such that sigma_t^2 x (1 + delta) for t > T // 2 and x c for t <= T // 2 leaves the chain's output variance
    unchanged: that variance is affine in each half's factor, so c = 1 - delta S_1 / S_2 with S_i the variance the
    half contributes at factor 1. ValueError when c would be negative."""
    T = adapter.diffusion.T
    first = [1.0 if t > T // 2 else 0.0 for t in range(T, 0, -1)]  # factors over the visited t = T..1
    second = [1.0 - f for f in first]
    none = chain_variance(adapter, variance, [0.0] * T, adapter.data)
    s_1 = chain_variance(adapter, variance, first, adapter.data) - none
    s_2 = chain_variance(adapter, variance, second, adapter.data) - none
    c = 1.0 - delta * s_1 / s_2
    if c < 0.0:
        raise ValueError(f"delta = {delta:g} cannot be cancelled on the second half for variance {variance!r}: "
                         f"delta must be <= {s_2 / s_1:.4g}")
    return c


def graded_adapter(kind: ErrorKind | str, delta: float, T: int = T_DEFAULT) -> Adapter:
    """The graded adapter of `kind` at `delta` (the suite's default data), checked against the protocol."""
    return check_adapter(GradedAdapter(kind, delta, T))


def factory(kind: str = "noise", delta: float = 0.0, T: int = T_DEFAULT) -> list[GradedAdapter]:
    """One graded adapter, as an adapter spec's factory (`ddpm.conformance.graded:factory`)."""
    return [GradedAdapter(kind, delta, T)]


__all__ = ["ErrorKind", "GradedAdapter", "T_DEFAULT", "cancelling_factor", "chain_variance", "factory",
           "graded_adapter"]
