"""(q) The variational bound in full generality: the discrete-chain oracle, and the library's bound.

The discrete oracle `discrete_chain_bound` is checked against computations that share none of its code: the
marginal of x_0 by a product of the reverse matrices, and the ELBO in (f)'s decomposed form (L_T, L_{t-1} through
q's Bayes posteriors, L_0). The library's bound (`ddpm.core.bound.elbo_terms` and the kernels it calls) is checked on
a non-linear eps-model against -log p_theta(x_0) and the posterior KL, both by nested Gauss-Hermite quadrature.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from scipy import special

from ddpm.core import kernels
from ddpm.core.bound import elbo_terms
from ddpm.core.diffusion import GaussianDiffusion
from ddpm.core.variance import ReverseVariance
from derivations import variational_bound as vb
from derivations.chain import Check
from testkit import tolerances

pytestmark = pytest.mark.symbolic

F64 = tolerances.FLOAT64.kwargs()
def test_derivation_shape():
    d = vb.derivation()
    assert d.key == "q" and d.module == "derivations.variational_bound"
    assert all(s.check is not Check.RATIONAL or s.reason for s in d.all_steps())
    assert "every" in d.summary and "any" in d.summary


def test_gibbs_gap_against_numpy():
    r = np.array([1e-3, 0.25, 0.999, 1.0, 1.001, 3.0, 50.0])
    assert_allclose(vb.gibbs_gap(r), r - 1 - np.log(r), **F64)
    gap = vb.gibbs_gap(r)
    assert np.all(gap[r != 1.0] > 0) and gap[r == 1.0] == 0.0


# --- discrete chains ---------------------------------------------------------------------------------


def _random_chain(rng: np.random.Generator, K: int, T: int):
    forward = [rng.dirichlet(np.ones(K), size=K) for _ in range(T)]
    reverse = [rng.dirichlet(np.ones(K), size=K) for _ in range(T)]
    return forward, rng.dirichlet(np.ones(K)), reverse


def _kl(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum(a * np.log(a / b)))


def _independent(x0: int, forward, prior, reverse) -> tuple[float, float]:
    """(log p_theta(x_0) by matrix products, ELBO = -(L_T + sum L_{t-1} + L_0) through q's Bayes posteriors)."""
    T = len(forward)
    marginal = prior
    for t in range(T, 0, -1):
        marginal = marginal @ reverse[t - 1]  # p(x_{t-1}) = sum_{x_t} p(x_t) p(x_{t-1} | x_t)
    q_marg = [np.eye(len(prior))[x0]]  # q(x_t | x_0), t = 0..T
    for t in range(1, T + 1):
        q_marg.append(q_marg[-1] @ forward[t - 1])
    bound = _kl(q_marg[T], prior)
    for t in range(2, T + 1):
        # q(x_{t-1} = i | x_t = j, x_0) = q(x_t = j | x_{t-1} = i) q(x_{t-1} = i | x_0) / q(x_t = j | x_0)
        post = (forward[t - 1] * q_marg[t - 1][:, None] / q_marg[t][None, :]).T  # [j, i]
        bound += sum(q_marg[t][j] * _kl(post[j], reverse[t - 1][j]) for j in range(len(prior)))
    bound -= float(np.dot(q_marg[1], np.log(reverse[0][:, x0])))
    return float(np.log(marginal[x0])), -bound


@pytest.mark.parametrize("T", [1, 2, 3, 4, 5])
def test_discrete_chain_identity(T, seed_base):
    rng = np.random.default_rng(seed_base + 700 + T)
    for K in (2, 3):
        forward, prior, reverse = _random_chain(rng, K, T)
        x0 = int(rng.integers(K))
        out = vb.discrete_chain_bound(x0, forward, prior, reverse)
        assert_allclose(out.log_likelihood, out.elbo + out.kl, **F64)
        assert out.kl > 0 and out.elbo < out.log_likelihood
        log_p, elbo_decomposed = _independent(x0, forward, prior, reverse)
        assert_allclose(out.log_likelihood, log_p, **F64)
        assert_allclose(out.elbo, elbo_decomposed, **F64)


def test_discrete_chain_bound_is_tight_at_the_posterior(seed_base):
    """A reverse chain made of q's own posteriors given x_0 (and prior q(x_T | x_0)) has p_theta(x_{1:T} | x_0) = q."""
    rng = np.random.default_rng(seed_base + 710)
    K, T, x0 = 3, 3, 1
    forward, _, _ = _random_chain(rng, K, T)
    q_marg = [np.eye(K)[x0]]
    for t in range(1, T + 1):
        q_marg.append(q_marg[-1] @ forward[t - 1])
    reverse = [(forward[t - 1] * q_marg[t - 1][:, None] / q_marg[t][None, :]).T for t in range(2, T + 1)]
    decoder = np.full((K, K), 1e-3)  # p(x_0 | x_1): x_0 is the observed state; the others need positive mass
    decoder[:, x0] = 1 - (K - 1) * 1e-3
    out = vb.discrete_chain_bound(x0, forward, q_marg[T], [decoder, *reverse])
    assert abs(out.kl) < 1e-14
    assert_allclose(out.elbo, out.log_likelihood, **F64)
    shifted = vb.discrete_chain_bound(x0, forward, np.roll(q_marg[T], 1), [decoder, *reverse])
    assert shifted.kl > 1e-3, "a wrong prior makes the posterior differ from q, so the bound is not tight"


# --- the library's bound on a non-linear model ---------------------------------------------------------

X0_BIN = 160  # an interior bin of the 8-bit grid
X0 = X0_BIN / 127.5 - 1.0
HALF_BIN = 1.0 / 255.0


def tanh_eps_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A non-linear eps-model: eps_theta(x, t) = 0.8 tanh(1.5 x + 0.3 t) - 0.2 (x_t [n, 1], t [n])."""
    return 0.8 * torch.tanh(1.5 * x + 0.3 * t.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))) - 0.2


class _Recorder:
    """The model, recording every (x_t, t) the library calls it with."""

    def __init__(self) -> None:
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls.append((x.clone(), t.clone()))
        return tanh_eps_model(x, t)


def _library_expected_bound(betas: np.ndarray, n: int) -> float:
    """E_q of the library's bound: L_T, then each L_{t-1} (t >= 2) and L_0 from the kernels `elbo_terms` calls,
    averaged over x_t ~ q(x_t | x_0) by n-point Gauss-Hermite quadrature."""
    d = GaussianDiffusion(betas)
    alpha_bar = np.cumprod(1 - betas)
    nodes, weights = np.polynomial.hermite_e.hermegauss(n)
    weights = weights / np.sqrt(2 * np.pi)
    choice = ReverseVariance.from_value("beta")
    x0 = torch.full((n, 1), X0, dtype=torch.float64)
    total = float(kernels.prior_term(d, x0[:1])[0])
    noise = torch.tensor(nodes, dtype=torch.float64)[:, None]
    for t in range(1, len(betas) + 1):
        xt = np.sqrt(alpha_bar[t - 1]) * x0 + np.sqrt(1 - alpha_bar[t - 1]) * noise
        tt = torch.full((n,), t, dtype=torch.int64)
        eps = tanh_eps_model(xt, tt)
        if t == 1:
            values = kernels.decoder_terms(d, choice, kernels.pixel_index(x0), xt, tt, eps, False)
        else:
            rows = kernels.BoundRows(x0, xt, tt, noise)
            values = kernels.kl_terms(d, choice, rows, kernels.NetworkOutput(eps), clip_x0=False)
        total += float(np.dot(weights, values.numpy()))
    return total


def _log_normal(x, mean, var):
    return -0.5 * np.log(2 * np.pi * var) - (x - mean) ** 2 / (2 * var)


class _Model:
    """The reverse chain of the tanh model written out here: N(mu_t(x_t), beta_t) steps and the discretised decoder."""

    def __init__(self, betas: np.ndarray) -> None:
        self.betas, self.alphas = betas, 1 - betas
        self.alpha_bar = np.cumprod(self.alphas)

    def mean(self, x: np.ndarray, t: int) -> np.ndarray:
        """mu_theta(x_t, t) = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_theta) / sqrt(alpha_t) (eq. 11)."""
        eps = tanh_eps_model(torch.as_tensor(x)[:, None], torch.full((x.size,), t))[:, 0].numpy()
        b = self.betas[t - 1]
        return (x - b / np.sqrt(1 - self.alpha_bar[t - 1]) * eps) / np.sqrt(self.alphas[t - 1])

    def log_decoder(self, x1: np.ndarray) -> np.ndarray:
        """log of the N(mu_theta(x_1, 1), beta_1) mass on x_0's bin, on the side of the mean that keeps precision."""
        s = np.sqrt(self.betas[0])
        m = self.mean(x1, 1)
        lo, hi = (X0 - HALF_BIN - m) / s, (X0 + HALF_BIN - m) / s
        flip = lo > 0
        lo, hi = np.where(flip, -hi, lo), np.where(flip, -lo, hi)
        return special.log_ndtr(hi) + np.log1p(-np.exp(special.log_ndtr(lo) - special.log_ndtr(hi)))


def _quadrature(betas: np.ndarray, n: int) -> tuple[float, float]:
    """(-log p_theta(x_0), KL(q(x_{1:T}|x_0) || p_theta(x_{1:T}|x_0))), each by nested n-point Gauss-Hermite."""
    model, T = _Model(betas), len(betas)
    nodes, weights = np.polynomial.hermite_e.hermegauss(n)
    weights = weights / np.sqrt(2 * np.pi)
    # p_theta(x_0) = E_{x_T ~ N(0,1)} E_{x_{T-1} ~ p(.|x_T)} ... P(x_0 | x_1): the reverse chain's own measure.
    x, w = nodes.copy(), weights.copy()
    for t in range(T, 1, -1):
        x = (model.mean(x, t)[:, None] + np.sqrt(betas[t - 1]) * nodes[None, :]).ravel()
        w = (w[:, None] * weights[None, :]).ravel()
    log_p = float(np.log(np.dot(w, np.exp(model.log_decoder(x)))))
    # The KL under q(x_{1:T} | x_0) = prod_t N(x_t; sqrt(alpha_t) x_{t-1}, beta_t), innermost x_T.
    x, w = np.full(1, X0), np.ones(1)
    log_q, log_joint = np.zeros(1), np.zeros(1)
    for t in range(1, T + 1):
        shape = (x.size, n)
        nxt = np.sqrt(model.alphas[t - 1]) * x[:, None] + np.sqrt(betas[t - 1]) * nodes[None, :]
        log_q = (log_q[:, None] + _log_normal(nxt, np.sqrt(model.alphas[t - 1]) * x[:, None], betas[t - 1])).ravel()
        if t == 1:
            step = model.log_decoder(nxt.ravel())
        else:
            step = _log_normal(np.repeat(x, n), model.mean(nxt.ravel(), t), betas[t - 1])
        log_joint = (log_joint[:, None] + step.reshape(shape)).ravel()
        w = (w[:, None] * weights[None, :]).ravel()
        x = nxt.ravel()
    log_joint = log_joint + _log_normal(x, 0.0, 1.0)
    kl = float(np.dot(w, log_q - (log_joint - log_p)))
    return -log_p, kl


# Nodes per dimension (measured): more nodes (T = 2: 160 -> 320; T = 3: 160 -> 200) move -log p_theta(x_0) and the KL
# by < 5e-11 each, alike (the error in log p_theta(x_0) enters both), and leave bound - (-log p) - KL < 1e-12: inside
# the float64 tolerance, so the comparison measures the library, not the quadrature. (T = 3 with 120 nodes is not
# converged: its residual is 3e-11 against a KL of 0.13.)
@pytest.mark.parametrize(("betas", "n"), [((0.1, 0.4), 160), ((0.1, 0.3, 0.5), 160)])
def test_library_bound_of_a_nonlinear_model_is_above_minus_log_likelihood_by_the_posterior_kl(betas, n):
    betas = np.array(betas)
    bound = _library_expected_bound(betas, n)
    minus_log_p, kl = _quadrature(betas, n)
    assert kl > 1e-2, "the tanh model's posterior differs from q: the bound is strict"
    assert bound > minus_log_p
    assert_allclose(bound - minus_log_p, kl, **F64)


def test_library_front_evaluates_the_kernels_at_its_draws(seed_base):
    """`elbo_terms` (the public front) gives, at the x_t it drew, the per-x_t terms averaged above."""
    betas = np.array([0.1, 0.3, 0.5])
    d = GaussianDiffusion(betas)
    recorder = _Recorder()
    x0 = torch.full((4, 1), X0, dtype=torch.float64)
    terms = elbo_terms(recorder, d, x0, torch.Generator().manual_seed(seed_base + 720), "beta", batch_size=64)
    (xt, t), = recorder.calls  # one chunk: the T * B pairs, t-major
    model = _Model(betas)
    x = xt[:, 0].numpy()
    alpha_bar, b = model.alpha_bar, betas
    decoder = -model.log_decoder(x[t.numpy() == 1])
    assert_allclose(terms.decoder.numpy(), decoder, **F64)
    for step in (2, 3):
        xs = x[t.numpy() == step]
        # KL(N(mu_tilde, beta_tilde) || N(mu_theta, beta_t)) with q's posterior written out (eq. 7)
        ab, ab_prev = alpha_bar[step - 1], alpha_bar[step - 2]
        mu_tilde = (np.sqrt(ab_prev) * b[step - 1] * X0 + np.sqrt(1 - b[step - 1]) * (1 - ab_prev) * xs) / (1 - ab)
        var_tilde = (1 - ab_prev) / (1 - ab) * b[step - 1]
        mu = model.mean(xs, step)
        kl = 0.5 * (np.log(b[step - 1] / var_tilde) - 1 + var_tilde / b[step - 1] + (mu_tilde - mu) ** 2 / b[step - 1])
        assert_allclose(terms.kl[:, step - 2].numpy(), kl, **F64)
