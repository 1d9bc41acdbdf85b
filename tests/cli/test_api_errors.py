"""The ValueErrors of the public API: timesteps outside {1..T}, wrong types/shapes/dtypes, unknown choices."""

from __future__ import annotations

import pytest
import torch

from ddpm.core.bound import (
    ElboTerms,
    bound_estimate,
    discretized_gaussian_log_likelihood,
    elbo_monte_carlo,
    elbo_terms,
    normal_kl,
)
from ddpm.core.diffusion import GaussianDiffusion
from ddpm.core.losses import Objective, training_loss
from ddpm.core.schedules import make_betas
from ddpm.core.variance import ReverseVariance

T = 10
B = 3


@pytest.fixture(scope="module")
def diffusion():
    return GaussianDiffusion(make_betas("linear", T, rescale=False))


@pytest.fixture
def x():
    return torch.zeros(B, 1, 2, 2)


def zero_model(xt, t):
    return torch.zeros_like(xt)


def call(diffusion, method, x, t, variance="beta"):
    """Call a public method with valid tensors except t."""
    if method == "q_sample":
        return diffusion.q_sample(x, t, torch.zeros_like(x))
    if method == "q_mean_variance":
        return diffusion.q_mean_variance(x, t)
    if method == "q_posterior_mean_variance":
        return diffusion.q_posterior_mean_variance(x, x, t)
    if method == "predict_x0_from_eps":
        return diffusion.predict_x0_from_eps(x, t, x)
    if method == "p_mean_variance":
        return diffusion.p_mean_variance(x, x, t, variance)
    if method == "p_sample":
        return diffusion.p_sample(x, x, t, torch.zeros_like(x), variance)
    raise AssertionError(method)


METHODS = [
    "q_sample", "q_mean_variance", "q_posterior_mean_variance", "predict_x0_from_eps", "p_mean_variance", "p_sample",
]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bad", [0, T + 1, -1, 10_000])
def test_t_outside_range_raises(diffusion, x, method, bad):
    t = torch.tensor([1, bad, T])
    with pytest.raises(ValueError,
                       match=rf"t must lie in \{{1, \.\.\., T = {T}\}} \(paper convention\), got t = {bad}"):
        call(diffusion, method, x, t)


@pytest.mark.parametrize("method", METHODS)
def test_boundaries_accepted(diffusion, x, method):
    call(diffusion, method, x, torch.tensor([1, T, 1]))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("t", "message"),
    [
        (torch.tensor([1.0, 2.0, 3.0]), r"t must have dtype torch\.int64"),
        (torch.tensor([1, 2, 3], dtype=torch.int32), r"t must have dtype torch\.int64"),
        (torch.tensor([True, True, True]), r"t must have dtype torch\.int64"),
        (torch.tensor([1, 2]), r"t must have shape \[B\] = \[3\], got \(2,\)"),
        (torch.tensor([[1], [2], [3]]), r"t must have shape \[B\] = \[3\], got \(3, 1\)"),
        (torch.tensor(2), r"t must have shape \[B\] = \[3\], got \(\)"),
        (2, r"t must be an int64 tensor of shape \[B\]"),
        ([1, 2, 3], r"t must be an int64 tensor of shape \[B\]"),
    ],
)
def test_t_wrong_type_or_shape_raises(diffusion, x, method, t, message):
    with pytest.raises(ValueError, match=message):
        call(diffusion, method, x, t)


def test_x_wrong_type_dtype_shape(diffusion, x):
    t = torch.tensor([1, 2, 3])
    with pytest.raises(ValueError, match=r"x0 must be a torch\.Tensor"):
        diffusion.q_sample(x.numpy(), t, x)
    with pytest.raises(ValueError, match=r"x0 must have a floating dtype, got torch\.int64"):
        diffusion.q_sample(x.long(), t, x.long())
    with pytest.raises(ValueError, match=r"at least 1-D"):
        diffusion.q_mean_variance(torch.tensor(0.0), t)
    with pytest.raises(ValueError, match=r"noise must have the shape of x0 \(3, 1, 2, 2\), got \(3, 1, 2, 3\)"):
        diffusion.q_sample(x, t, torch.zeros(3, 1, 2, 3))
    with pytest.raises(ValueError, match=r"noise must have the dtype of x0 \(torch\.float32\), got torch\.float64"):
        diffusion.q_sample(x, t, x.double())
    with pytest.raises(ValueError, match=r"xt must have the shape of x0"):
        diffusion.q_posterior_mean_variance(x, x[:2], t)
    with pytest.raises(ValueError, match=r"eps must have the shape of xt"):
        diffusion.p_mean_variance(x[:, :, :1], x, t, "beta")
    with pytest.raises(ValueError, match=r"noise must have the shape of xt"):
        diffusion.p_sample(x, x, t, x[:1], "beta")
    with pytest.raises(ValueError, match=r"^eps must have the shape of xt"):
        diffusion.predict_x0_from_eps(x, t, x[:1])


@pytest.mark.parametrize("variance", ["large", "small", "fixedlarge", "", None, 1])
def test_unknown_variance_raises(diffusion, x, variance):
    t = torch.tensor([1, 2, 3])
    with pytest.raises(ValueError, match=r"unknown reverse variance .*options are 'beta', 'beta_tilde'"):
        diffusion.p_mean_variance(x, x, t, variance)
    with pytest.raises(ValueError, match=r"unknown reverse variance"):
        diffusion.p_sample(x, x, t, x, variance)
    with pytest.raises(ValueError, match=r"unknown reverse variance"):
        ReverseVariance.from_value(variance)


def test_enum_members_accepted(diffusion, x):
    t = torch.tensor([1, 2, 3])
    a = diffusion.p_mean_variance(x + 0.3, x, t, ReverseVariance.BETA_TILDE)
    b = diffusion.p_mean_variance(x + 0.3, x, t, "beta_tilde")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_bad_betas_raise():
    with pytest.raises(ValueError, match=r"open interval \(0, 1\)"):
        GaussianDiffusion([0.1, 1.0])
    with pytest.raises(ValueError, match=r"must be finite"):
        GaussianDiffusion(torch.tensor([0.1, float("nan")]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device")
def test_device_mismatch_raises(diffusion, x):  # pragma: no cover - GPU machines only
    with pytest.raises(ValueError, match=r"use diffusion\.to\(device\)"):
        diffusion.q_sample(x.cuda(), torch.tensor([1, 2, 3]).cuda(), x.cuda())


def test_meta_device_mismatch_raises(diffusion):
    x = torch.zeros(B, 2, device="meta")
    with pytest.raises(ValueError, match=r"x0 is on meta but the diffusion's tables are on cpu"):
        diffusion.q_sample(x, torch.tensor([1, 2, 3]), x)


@pytest.mark.parametrize("objective", ["l2", "SIMPLE", "kl", None])
def test_unknown_objective_raises(diffusion, objective):
    x0 = torch.zeros(B, 1, 2, 2)
    with pytest.raises(ValueError, match=r"unknown objective .*options are 'simple', 'vlb', 'hybrid'"):
        training_loss(zero_model, diffusion, x0, torch.Generator(), objective)
    with pytest.raises(ValueError, match=r"unknown objective"):
        Objective.from_value(objective)


def test_generator_required(diffusion):
    x0 = torch.zeros(B, 1, 2, 2)
    with pytest.raises(ValueError, match=r"generator must be a torch\.Generator, got int"):
        training_loss(zero_model, diffusion, x0, 0)
    with pytest.raises(ValueError, match=r"generator must be a torch\.Generator, got NoneType"):
        elbo_terms(zero_model, diffusion, x0, None)


def test_elbo_argument_errors(diffusion):
    g = torch.Generator()
    x0 = torch.full((B, 1, 2, 2), -1.0)  # on the grid (k = 0); 0.0 is not (k = 127.5)
    with pytest.raises(ValueError, match=r"x0 must lie on the 8-bit grid k / 127\.5 - 1 .* got value 0\.0"):
        elbo_terms(zero_model, diffusion, x0 + 1.0, g)
    with pytest.raises(ValueError, match=r"8-bit grid .* got value 2\.0"):
        elbo_terms(zero_model, diffusion, x0 + 3.0, g)
    with pytest.raises(ValueError, match=r"batch_size must be an integer >= 1, got 0"):
        elbo_terms(zero_model, diffusion, x0, g, batch_size=0)
    with pytest.raises(ValueError, match=r"at least one data dimension"):
        elbo_terms(zero_model, diffusion, torch.zeros(B), g)
    with pytest.raises(ValueError, match=r"unknown reverse variance 'small'"):
        elbo_terms(zero_model, diffusion, x0, g, variance="small")
    with pytest.raises(ValueError, match=r"eps_model\(x_t, t\) must return a tensor of shape \(30, 1, 2, 2\) "
                                         r"\(eps\) or \(30, 2, 2, 2\) \(eps and the variance output v\), got \(3, 4\)"):
        elbo_terms(lambda xt, t: torch.zeros(3, 4), diffusion, x0, g)
    with pytest.raises(ValueError, match=r"draws_per_image must be an integer >= 1, got 0"):
        elbo_monte_carlo(zero_model, diffusion, x0, g, draws_per_image=0)


@pytest.mark.parametrize(
    ("proposal", "message"),
    [
        (torch.full((T - 1,), 1.0 / (T - 1)), r"shape \[T\] = \[10\], got shape \(9,\)"),
        (torch.tensor([0.0] + [1.0 / (T - 1)] * (T - 1)), r"finite and > 0 for every t"),
        (torch.full((T,), 0.2), r"must sum to 1, got 2\.0"),
        ([float("nan")] * T, r"finite and > 0"),
    ],
)
def test_bad_proposal_raises(diffusion, proposal, message):
    x0 = torch.full((B, 1, 2, 2), -1.0)
    with pytest.raises(ValueError, match=message):
        elbo_monte_carlo(zero_model, diffusion, x0, torch.Generator(), proposal=proposal)
    with pytest.raises(ValueError, match=message):
        bound_estimate(zero_model, diffusion, x0, torch.tensor([1, 2, 3]), x0, proposal=proposal)


def test_bound_estimate_checks_t(diffusion):
    x0 = torch.full((B, 1, 2, 2), -1.0)
    with pytest.raises(ValueError, match=r"got t = 0"):
        bound_estimate(zero_model, diffusion, x0, torch.tensor([0, 1, 2]), x0)


def test_likelihood_function_errors():
    x0 = torch.full((2, 3), 1.0)
    with pytest.raises(ValueError, match=r"var2 must be > 0"):
        normal_kl(0.0, 1.0, 0.0, torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match=r"var1 must be >= 0"):
        normal_kl(0.0, -1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match=r"variances must be finite"):
        normal_kl(0.0, float("inf"), 0.0, 1.0)
    with pytest.raises(ValueError, match=r"variance must be positive and finite"):
        discretized_gaussian_log_likelihood(x0, x0, 0.0)
    with pytest.raises(ValueError, match=r"8-bit grid"):
        discretized_gaussian_log_likelihood(x0 - 0.003, x0, 1.0)  # 0.38 of a bin off the grid
    with pytest.raises(ValueError, match=r"must broadcast to x0"):
        discretized_gaussian_log_likelihood(x0, torch.zeros(5), 1.0)
    with pytest.raises(ValueError, match=r"ElboTerms needs prior \[B\], kl \[B, T-1\], decoder \[B\]"):
        ElboTerms(prior=torch.zeros(2), kl=torch.zeros(3, 4), decoder=torch.zeros(2), num_dims=1)
    with pytest.raises(ValueError, match=r"num_dims must be >= 1"):
        ElboTerms(prior=torch.zeros(2), kl=torch.zeros(2, 4), decoder=torch.zeros(2), num_dims=0)
