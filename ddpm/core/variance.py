"""The reverse-process variance sigma_t^2 as one value: `ReverseVariance`, parsed once from its name.

`ReverseVariance.from_value("beta_tilde")` is the one parser (the CLI and the configuration call it, and so do the
public entry points that accept a name); everything below them passes the member. `learned_output` is the one check
every consumer of the learned variance makes. May import torch and `ddpm.core.choices` only.
"""

from __future__ import annotations

from typing import Literal, overload

import torch

from ddpm.core.choices import Choice

Tensor = torch.Tensor


class ReverseVariance(Choice):
    """The reverse-process variance sigma_t^2: Ho et al.'s fixed beta_t or beta_tilde_t, the KL-optimal one, or learned.

    OPTIMAL is Analytic-DPM's sigma*_t^2 = beta_tilde_t + beta_t^2 / (alpha_t (1 - alpha_bar_t)) (1 - Gamma_t) with
    Gamma_t = E||eps_theta(x_t, t)||^2 / d (derivation (j)); it depends on the trained network, so its table exists
    only on a diffusion made by `GaussianDiffusion.with_optimal_variance(gamma)`.
    LEARNED is Nichol & Dhariwal's per-dimension Sigma_theta = exp(frac log beta_t + (1 - frac) log beta_tilde_t),
    frac = (v + 1) / 2, v the network's second output (derivation (k)); beta_tilde_1 = 0 is replaced by beta_tilde_2
    at t = 1 as in improved-diffusion. It has no table: `ddpm.core.reverse.ReverseStep` makes it from v.
    """

    BETA = "beta"
    BETA_TILDE = "beta_tilde"
    OPTIMAL = "optimal"
    LEARNED = "learned"

    @classmethod
    def tabled(cls) -> tuple[ReverseVariance, ...]:
        """The choices with a table [T + 1] (every one but "learned")."""
        return tuple(choice for choice in cls if not choice.is_learned)

    @property
    def is_learned(self) -> bool:
        """True for the per-dimension variance the network outputs (no table; it needs the model's v)."""
        return self is ReverseVariance.LEARNED

    @classmethod
    def label(cls) -> str:
        return "reverse variance"


@overload
def learned_output(choice: Literal[ReverseVariance.LEARNED], v: Tensor | None, dtype: torch.dtype) -> Tensor: ...


@overload
def learned_output(choice: ReverseVariance, v: Tensor | None, dtype: torch.dtype) -> Tensor | None: ...


def learned_output(choice: ReverseVariance, v: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """The model's variance output v in `dtype` when `choice` is "learned" (ValueError if the model has none), else
    None: the one check every consumer of the learned variance makes."""
    if not choice.is_learned:
        return None
    if v is None:
        raise ValueError("the 'learned' reverse variance needs a model that outputs it "
                         "(ModelConfig.learn_variance = True: 2C output channels)")
    return v.to(dtype)


__all__ = ["ReverseVariance", "learned_output"]
