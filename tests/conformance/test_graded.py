"""The graded adapters (ddpm/conformance/graded.py) carry exactly the error they claim, of size delta.

Each error is measured from the adapter's own operations and compared with what the reference does: the noise
term sigma_t z of one step is out(z) - out(0) (Algorithm 2's step is affine in z), the loss is a ratio. The
cancelling error's claim, that the chain's output law is unchanged, is checked by feeding the per-step variances
measured from `reverse_step` into the chain-law recursion.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ddpm.conformance.adapters.reference import ReferenceAdapter
from ddpm.conformance.cases import Context, Status, SuiteConfig, chain_law
from ddpm.conformance.graded import ErrorKind, GradedAdapter, cancelling_factor, chain_variance, graded_adapter
from ddpm.conformance.protocol import NotOffered, check_adapter
from ddpm.conformance.runner import run_adapter

T = 50
REL = 1e-12  # float64 arithmetic on both sides (a few dozen roundings of O(1) values)


def _noise_term(adapter, t: int, variance: str) -> torch.Tensor:
    """sigma_t z of one step at z = 1 (x_t, eps fixed): out(z) - out(0)."""
    shape = (3, 1, 2, 2)
    xt = torch.linspace(-1.5, 1.5, 12, dtype=torch.float64).reshape(shape)
    eps = torch.linspace(1.0, -1.0, 12, dtype=torch.float64).reshape(shape)
    z = torch.ones(shape, dtype=torch.float64)
    return adapter.reverse_step(eps, xt, t, z, variance) - adapter.reverse_step(eps, xt, t, 0 * z, variance)


def _measured_factors(adapter, variance: str) -> list[float]:
    """sigma_t^2 of the adapter over the reference's at t = T..1 (1 at t = 1, where Algorithm 2 adds no noise)."""
    reference = ReferenceAdapter("linear", T)
    factors = []
    for t in range(T, 0, -1):
        if t == 1:
            factors.append(1.0)
            continue
        ratio = (_noise_term(adapter, t, variance) / _noise_term(reference, t, variance)) ** 2
        assert torch.allclose(ratio, ratio.flatten()[0], rtol=REL, atol=0.0)
        factors.append(float(ratio.flatten()[0]))
    return factors


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_noise_error_scales_every_steps_noise_by_one_plus_delta(variance):
    factors = _measured_factors(GradedAdapter(ErrorKind.NOISE, 0.07, T), variance)
    np.testing.assert_allclose(factors[:-1], 1.07**2, rtol=REL)


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
@pytest.mark.parametrize("delta", [0.3, 2.0])
def test_cancelling_error_leaves_the_chain_law_unchanged(variance, delta):
    """First half x (1 + delta), second half x c < 1, and the law of the chain's output is the reference's."""
    adapter = GradedAdapter(ErrorKind.CANCELLING, delta, T)
    factors = _measured_factors(adapter, variance)
    np.testing.assert_allclose(factors[: T // 2], 1.0 + delta, rtol=REL)
    c = factors[T // 2]
    assert 0.0 < c < 1.0
    np.testing.assert_allclose(factors[T // 2:-1], c, rtol=REL)
    reference = ReferenceAdapter("linear", T)
    unchanged = chain_variance(reference, variance, [1.0] * T)
    np.testing.assert_allclose(chain_variance(reference, variance, factors), unchanged, rtol=REL)
    uncancelled = [1.0 + delta] * (T // 2) + [1.0] * (T - T // 2)  # without c the chain's law would move
    assert chain_variance(reference, variance, uncancelled) > unchanged * (1.0 + 1e-4 * delta)
    # The recursion matches the law the chain case predicts for the adapter's own chain (factors all 1).
    ctx = Context(check_adapter(reference), SuiteConfig())
    assert chain_law(ctx, adapter.chain(variance))[1] == pytest.approx(unchanged, rel=REL)


def test_cancelling_factor_refuses_a_delta_it_cannot_cancel():
    adapter = GradedAdapter(ErrorKind.CANCELLING, 0.0, T)
    assert cancelling_factor(adapter, "beta", 0.0) == 1.0
    with pytest.raises(ValueError, match="cannot be cancelled"):
        GradedAdapter(ErrorKind.CANCELLING, 1000.0, T)


def test_loss_error_scales_the_loss():
    graded, reference = GradedAdapter(ErrorKind.LOSS, 0.04, T), ReferenceAdapter("linear", T)
    generator = torch.Generator().manual_seed(3)
    x0, noise = (torch.randn((5, 1, 2, 2), generator=generator, dtype=torch.float64) for _ in range(2))
    t = torch.tensor([1, 10, 25, 40, 50])

    def model(x, tt):
        return 0.5 * x

    ratio = graded.training_loss(model, x0, t, noise) / reference.training_loss(model, x0, t, noise)
    np.testing.assert_allclose(ratio.numpy(), 1.04, rtol=REL)


@pytest.mark.parametrize("kind", list(ErrorKind))
def test_delta_zero_is_the_reference(kind):
    factors = _measured_factors(GradedAdapter(kind, 0.0, T), "beta_tilde")
    assert factors == [1.0] * T


def test_each_kind_offers_the_operations_its_error_touches():
    noise, loss = GradedAdapter(ErrorKind.NOISE, 0.1, T), GradedAdapter(ErrorKind.LOSS, 0.1, T)
    assert [c.variance for c in noise.chains()] == ["beta", "beta_tilde"] and loss.chains() == []
    with pytest.raises(NotOffered):
        noise.training_loss(lambda x, t: x, torch.zeros(1, 1, 2, 2), torch.ones(1, dtype=torch.int64),
                            torch.zeros(1, 1, 2, 2))
    run = run_adapter(graded_adapter("noise", 0.1, T), SuiteConfig(chain_samples=200), progress=False)
    statuses = {r.case: r.status for r in run.results}
    assert statuses["reverse_step[beta]"] is Status.FAIL and statuses["loss_at_eps_star"] is Status.NOT_APPLICABLE
    assert statuses["ddim[eta=0, S=50]"] is Status.NOT_APPLICABLE


@pytest.mark.parametrize("delta", [-1.0, -2.0, float("nan")])
def test_bad_delta_is_refused(delta):
    with pytest.raises(ValueError, match="delta must be > -1"):
        GradedAdapter(ErrorKind.NOISE, delta, T)


def test_chain_law_refuses_factors_of_the_wrong_length():
    reference = ReferenceAdapter("linear", T)
    with pytest.raises(ValueError, match="one entry per visited timestep"):
        chain_variance(reference, "beta", [1.0] * (T - 1))
