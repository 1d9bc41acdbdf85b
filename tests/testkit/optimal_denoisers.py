"""Closed-form optimal denoisers eps*(x_t, t) = E[eps | x_t] for data laws known exactly (tests only).

Setting (Ho et al. eq. 4). x_0 ~ p_data on R^D, eps ~ N(0, I) independent of x_0, and
x_t = a x_0 + b eps with a = sqrt(alpha_bar_t), b = sqrt(1 - alpha_bar_t).

Why E[eps | x_t] is the optimum of L_simple. For any function f of x_t, write eps - f = (eps - eps*) + (eps* - f).
The cross term vanishes, E[(eps - eps*) . (eps* - f)(x_t)] = E[(E[eps | x_t] - eps*) . (eps* - f)] = 0 (tower
rule), so E||eps - f(x_t)||^2 = E||eps - eps*||^2 + E||eps* - f(x_t)||^2: eps* is the unique minimiser, the
minimum is E tr Cov(eps | x_t), and a perturbed denoiser f = eps* + g pays exactly E||g(x_t)||^2 more.

(a) Gaussian data N(m, s^2 I) (`GaussianData`). Per coordinate (eps, x_t) is jointly Gaussian with
    E eps = 0,  E x_t = a m,  Var x_t = a^2 s^2 + b^2 =: v,  Cov(eps, x_t) = b.
    Gaussian conditioning gives eps | x_t ~ N(b (x_t - a m) / v, 1 - b^2 / v), hence
        eps*(x_t) = b (x_t - a m) / (a^2 s^2 + b^2),
        Var(eps | x_t) = 1 - b^2 / (a^2 s^2 + b^2) = a^2 s^2 / (a^2 s^2 + b^2)      (per dimension),
    i.e. 1 - (1 - alpha_bar) / (alpha_bar s^2 + 1 - alpha_bar): the minimum of L_simple at step t per dimension.
    The residual eps - eps* is Gaussian and uncorrelated with x_t, hence independent of it: (eps - eps*)^2 /
    Var(eps | x_t) is chi-square with one degree of freedom for every coordinate and draw.

(b) Gaussian mixture sum_k w_k N(mu_k, s_k^2 I), s_k >= 0; s_k = 0 for every k is a finite set of points
    (`GaussianMixture`). Given the component J = k, case (a) applies with m = mu_k, s = s_k:
        x_t | J = k ~ N(a mu_k, v_k I),   v_k = a^2 s_k^2 + b^2,   E[eps | x_t, J = k] = b (x_t - a mu_k) / v_k.
    Bayes' rule gives the posterior weights as a softmax of Gaussian log-likelihoods,
        r_k(x_t) = P(J = k | x_t) = softmax_k(log w_k - ||x_t - a mu_k||^2 / (2 v_k) - (D / 2) log v_k),
    and the tower rule eps* = sum_k r_k(x_t) b (x_t - a mu_k) / v_k. For points (v_k = b^2) this is
    (x_t - a E[x_0 | x_t]) / b with E[x_0 | x_t] = sum_k r_k mu_k.
    Cross-check (Tweedie): the marginal density of x_t is p_t = sum_k w_k N(a mu_k, v_k I), and
    -b grad log p_t(x_t) = sum_k r_k b (x_t - a mu_k) / v_k = eps*. tests/methods/test_exact_oracle.py compares
    eps* with -b grad log p_t computed by 50-digit numerical differentiation, and (1-D) with E[eps | x_t] computed
    by 30-digit quadrature of eps p(eps) p(x_t | eps) over eps; SymPy completes the square of case (a).

(c) Discretised Gaussian data (`DiscretisedGaussian`): x_0 = the 8-bit grid value k / 127.5 - 1 of the bin
    of a N(m, s^2) draw (256 bins of width 2/255, the edge bins open to -inf / +inf, as in the decoder of
    ddpm.core.bound), i.i.d. over dimensions. P(k) is a difference of normal CDFs; the exact negative
    log-likelihood of an image is -sum_d log P(k_d) and the entropy H = -sum_k P(k) log P(k) per dimension.
    `expected_bound` gives E over x_0 and x_{1:T} of the bound L_T + sum_{t>=2} L_{t-1} + L_0 (Ho et al. eq. 5)
    for eps* of the *continuous* law N(m, s^2) (its docstring derives every term); E[bound] - H >= 0 is the
    gap reported by test_exact_oracle.py.

All arithmetic is float64. alpha_bar_t is rebuilt here from the betas (`alpha_bars`), independently of ddpm.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from scipy import special, stats

Tensor = torch.Tensor
NUM_BINS = 256
GRID = np.arange(NUM_BINS) / 127.5 - 1.0  # [256] bin centres k / 127.5 - 1
# Bin edges: bin k is [(2k - 1)/255 - 1, (2k + 1)/255 - 1], the first and last opened to -inf / +inf.
LOWER = np.concatenate([[-np.inf], (2.0 * np.arange(1, NUM_BINS) - 1.0) / 255.0 - 1.0])  # [256]
UPPER = np.concatenate([(2.0 * np.arange(0, NUM_BINS - 1) + 1.0) / 255.0 - 1.0, [np.inf]])  # [256]


def alpha_bars(betas: np.ndarray) -> np.ndarray:
    """alpha_bar_t = prod_{s<=t} (1 - beta_s) as float64 [T + 1] indexed by t, alpha_bar_0 = 1."""
    return np.concatenate([[1.0], np.cumprod(1.0 - np.asarray(betas, dtype=np.float64))])


# ----------------------------------------------------------------------------------------------- data laws
@dataclass(frozen=True)
class GaussianData:
    """x_0 ~ N(m, s^2 I) (case (a) of the module docstring)."""

    mean: float
    std: float

    def eps_star(self, xt: Tensor, alpha_bar: Tensor) -> Tensor:
        """E[eps | x_t] = b (x_t - a m) / (a^2 s^2 + b^2); xt [B, D], alpha_bar [B], float64."""
        ab = alpha_bar[:, None]  # [B, 1]
        a, b = ab.sqrt(), (1.0 - ab).sqrt()
        return b * (xt - a * self.mean) / (ab * self.std**2 + 1.0 - ab)  # [B, D]

    def eps_conditional_variance(self, alpha_bar):
        """Var(eps | x_t) per dimension = 1 - (1 - ab) / (ab s^2 + 1 - ab): the minimum of L_simple at step t."""
        return 1.0 - (1.0 - alpha_bar) / (alpha_bar * self.std**2 + 1.0 - alpha_bar)

    def log_marginal(self, xt: Tensor, alpha_bar: Tensor) -> Tensor:
        """log q_t(x_t) = sum_d log N(x_{t,d}; a m, a^2 s^2 + b^2); xt [B, D], alpha_bar [B], float64 -> [B]."""
        ab = alpha_bar[:, None]  # [B, 1]
        v = ab * self.std**2 + 1.0 - ab  # [B, 1]
        log_density = -0.5 * torch.log(2.0 * math.pi * v) - (xt - ab.sqrt() * self.mean) ** 2 / (2.0 * v)  # [B, D]
        return log_density.sum(dim=1)

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        """x_0 draws of `shape`, float64."""
        return self.mean + self.std * rng.standard_normal(shape)


@dataclass(frozen=True)
class GaussianMixture:
    """x_0 ~ sum_k w_k N(mu_k, s_k^2 I) (case (b)); weights [K], means [K, D], stds [K] (0 for points)."""

    weights: tuple[float, ...]
    means: tuple[tuple[float, ...], ...]
    stds: tuple[float, ...]

    def __post_init__(self) -> None:
        K = len(self.weights)
        if len(self.means) != K or len(self.stds) != K or abs(sum(self.weights) - 1.0) > 1e-12:
            raise ValueError("GaussianMixture needs K weights summing to 1, K means and K stds")

    @property
    def dim(self) -> int:
        """D, the dimension of x_0."""
        return len(self.means[0])

    def _tables(self, device) -> tuple[Tensor, Tensor, Tensor]:
        f64 = torch.float64
        w = torch.tensor(self.weights, dtype=f64, device=device)  # [K]
        mu = torch.tensor(self.means, dtype=f64, device=device)  # [K, D]
        s = torch.tensor(self.stds, dtype=f64, device=device)  # [K]
        return w, mu, s

    def responsibilities(self, xt: Tensor, alpha_bar: Tensor) -> Tensor:
        """r_k(x_t) = P(J = k | x_t), softmax of log w_k + log N(x_t; a mu_k, v_k I); [B, K]."""
        w, mu, s = self._tables(xt.device)
        ab = alpha_bar[:, None]  # [B, 1]
        v = ab * s[None, :] ** 2 + (1.0 - ab)  # [B, K]
        # ||x_t - a mu_k||^2 = ||x_t||^2 - 2 a x_t . mu_k + a^2 ||mu_k||^2, without a [B, K, D] temporary.
        a = ab.sqrt()
        d2 = (xt**2).sum(dim=1, keepdim=True) - 2.0 * a * (xt @ mu.T) + ab * (mu**2).sum(dim=1)[None, :]  # [B, K]
        loglik = -d2.clamp_min(0.0) / (2.0 * v) - 0.5 * self.dim * torch.log(v)  # [B, K]
        return torch.softmax(torch.log(w)[None, :] + loglik, dim=1)

    def eps_star(self, xt: Tensor, alpha_bar: Tensor) -> Tensor:
        """E[eps | x_t] = sum_k r_k b (x_t - a mu_k) / v_k; xt [B, D], alpha_bar [B], float64."""
        w, mu, s = self._tables(xt.device)
        ab = alpha_bar[:, None]  # [B, 1]
        a, b = ab.sqrt(), (1.0 - ab).sqrt()
        v = ab * s[None, :] ** 2 + (1.0 - ab)  # [B, K]
        q = self.responsibilities(xt, alpha_bar) / v  # [B, K], r_k / v_k
        return b * (xt * q.sum(dim=1, keepdim=True) - a * (q @ mu))  # [B, D]

    def log_marginal(self, xt: Tensor, alpha_bar: Tensor) -> Tensor:
        """log q_t(x_t) = log sum_k w_k N(x_t; a mu_k, v_k I), v_k = a^2 s_k^2 + b^2, by logsumexp over k; written from
        the mixture density (the difference x_t - a mu_k formed directly); xt [B, D], alpha_bar [B], float64 -> [B]."""
        w, mu, s = self._tables(xt.device)
        ab = alpha_bar[:, None]  # [B, 1]
        v = ab * s[None, :] ** 2 + (1.0 - ab)  # [B, K]
        d2 = ((xt[:, None, :] - ab.sqrt()[:, :, None] * mu[None, :, :]) ** 2).sum(dim=2)  # [B, K]
        log_component = -d2 / (2.0 * v) - 0.5 * self.dim * torch.log(2.0 * math.pi * v)  # [B, K]
        return torch.logsumexp(torch.log(w)[None, :] + log_component, dim=1)

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(x_0 [n, D] float64, component index [n])."""
        k = rng.choice(len(self.weights), size=n, p=np.asarray(self.weights))
        mu, s = np.asarray(self.means, dtype=np.float64), np.asarray(self.stds, dtype=np.float64)
        return mu[k] + s[k, None] * rng.standard_normal((n, self.dim)), k

    def marginal_cdf(self, x: np.ndarray, dim: int) -> np.ndarray:
        """CDF of coordinate `dim` of x_0 (a 1-D mixture; a point contributes a step)."""
        x = np.asarray(x, dtype=np.float64)
        out = np.zeros_like(x)
        for w, mu, s in zip(self.weights, self.means, self.stds, strict=True):
            out += w * (stats.norm.cdf(x, mu[dim], s) if s > 0 else (x >= mu[dim]).astype(np.float64))
        return out

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean [D] and per-coordinate variance [D] of x_0."""
        w = np.asarray(self.weights)
        mu, s = np.asarray(self.means, dtype=np.float64), np.asarray(self.stds, dtype=np.float64)
        mean = w @ mu
        second = w @ (mu**2 + s[:, None] ** 2)
        return mean, second - mean**2


class EpsStar:
    """eps_model(x_t [B, ...], t [B]) -> eps*(x_t, t) for a law above and a schedule (the ddpm eps_model protocol).

    Computed in float64 on x_t's device, returned in x_t's dtype; alpha_bar_t from `alpha_bars(betas)`.
    `perturb(eps, x_t, t)` (optional) is added to eps*, for the "worse than optimal" comparisons.
    """

    def __init__(self, law, betas: np.ndarray, perturb=None) -> None:
        self.law = law
        self.alpha_bar = torch.tensor(alpha_bars(betas), dtype=torch.float64)  # [T + 1]
        self.perturb = perturb

    def __call__(self, xt: Tensor, t: Tensor) -> Tensor:
        x = xt.to(torch.float64).reshape(xt.shape[0], -1)  # [B, D]
        ab = self.alpha_bar.to(xt.device)[t]  # [B]
        eps = self.law.eps_star(x, ab)
        if self.perturb is not None:
            eps = eps + self.perturb(eps, x, ab)
        return eps.reshape(xt.shape).to(xt.dtype)


# ------------------------------------------------------------------------------------ discretised Gaussian
def discretised_normal_log_prob(k: np.ndarray, mean, std) -> np.ndarray:
    """log P(bin k | N(mean, std^2)) over the 256 bins (edge bins open), float64, via scipy's log_ndtr.

    Written independently of ddpm.core.bound: log(Phi(hi) - Phi(lo)) = log Phi(hi) + log1p(-exp(log Phi(lo) -
    log Phi(hi))) after mirroring bins right of the mean so that both CDF values are <= 1/2.
    """
    k = np.asarray(k)
    a = (LOWER[k] - mean) / std
    b = (UPPER[k] - mean) / std
    right = a > 0
    lo, hi = np.where(right, -b, a), np.where(right, -a, b)
    log_hi = special.log_ndtr(hi)
    return log_hi + np.log1p(-np.exp(special.log_ndtr(lo) - log_hi))


@dataclass(frozen=True)
class DiscretisedGaussian:
    """x_0 = the grid value of the bin of a N(m, s^2) draw, i.i.d. per dimension (case (c))."""

    mean: float
    std: float

    @property
    def continuous(self) -> GaussianData:
        """The underlying continuous law N(m, s^2), whose eps* the bound is evaluated with."""
        return GaussianData(self.mean, self.std)

    def probabilities(self) -> np.ndarray:
        """P(k) for k = 0..255, float64 [256], summing to 1."""
        return np.exp(discretised_normal_log_prob(np.arange(NUM_BINS), self.mean, self.std))

    def entropy_nats(self) -> float:
        """H = -sum_k P(k) log P(k) per dimension: E[-log p_data(x_0)] / D, the best any model can do."""
        logp = discretised_normal_log_prob(np.arange(NUM_BINS), self.mean, self.std)
        return float(-(np.exp(logp) * logp).sum())

    def sample_indices(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        """Bin indices k of `shape`, drawn as bins of continuous N(m, s^2) draws."""
        x = self.mean + self.std * rng.standard_normal(shape)
        return np.clip(np.round((x + 1.0) * 127.5), 0, NUM_BINS - 1).astype(np.int64)

    def nll_nats(self, k: np.ndarray) -> np.ndarray:
        """-log p_data(x_0) per image (summed over every axis but the first), nats."""
        logp = discretised_normal_log_prob(k, self.mean, self.std)
        return -logp.reshape(k.shape[0], -1).sum(axis=1)

    def expected_bound(self, betas: np.ndarray, variance: str, quadrature_nodes: int = 96) -> BoundTerms:
        """E over x_0 ~ this law and x_{1:T} ~ q of each term of the bound with eps* of N(m, s^2), nats per dim.

        With a = sqrt(alpha_bar_t), b = sqrt(1 - alpha_bar_t), v = a^2 s^2 + b^2, kappa = b / v (so eps* =
        kappa (x_t - a m)) and mu_2 = E[(x_0 - m)^2] under the discretised law (exact sum over the bins):

        - L_T = KL(N(a_T x_0, b_T^2) || N(0, 1)) = (b_T^2 + a_T^2 x_0^2 - 1 - log b_T^2) / 2, averaged over x_0
          with E[x_0^2] = sum_k P(k) x_k^2.
        - L_{t-1}, t >= 2 (eq. 12): lambda_t E(eps - eps*)^2 + C_t with lambda_t = beta_t^2 / (2 sigma_t^2 alpha_t
          b^2) and C_t = (r - 1 - log r) / 2, r = beta_tilde_t / sigma_t^2. Here eps - eps* =
          (1 - kappa b) eps - kappa a (x_0 - m) with eps independent of x_0, so
          E(eps - eps*)^2 = (1 - kappa b)^2 + kappa^2 a^2 mu_2. (For continuous data mu_2 = s^2 and this is the
          conditional variance a^2 s^2 / v of case (a).)
        - L_0 = -log P(bin of x_0 | N(mu(x_1), sigma_1^2)), mu(x_1) = (x_1 - beta_1 / b_1 eps*(x_1)) / sqrt(alpha_1)
          (Algorithm 2 line 4), sigma_1^2 = beta_1 for both variance choices (ddpm's t = 1 convention):
          averaged over the 256 bins with weights P(k) and over x_1 = a_1 x_k + b_1 z by Gauss-Hermite
          quadrature in z (`quadrature_nodes` nodes; the integrand is smooth in z).
        """
        betas = np.asarray(betas, dtype=np.float64)
        ab = alpha_bars(betas)
        a2, b2 = ab[1:], 1.0 - ab[1:]  # [T], index t - 1
        alphas = 1.0 - betas
        beta_tilde = (1.0 - ab[:-1]) / b2 * betas  # [T], 0 at t = 1
        if variance == "beta":
            sigma2 = betas.copy()
        elif variance == "beta_tilde":
            sigma2 = np.concatenate([betas[:1], beta_tilde[1:]])
        else:
            raise ValueError(f"unknown variance {variance!r}; options are 'beta', 'beta_tilde'")
        P = self.probabilities()
        m, s = self.mean, self.std
        mu2 = float(P @ (GRID - m) ** 2)
        ex2 = float(P @ GRID**2)

        prior = 0.5 * (b2[-1] + a2[-1] * ex2 - 1.0 - math.log(b2[-1]))

        kappa = np.sqrt(b2) / (a2 * s * s + b2)  # [T]
        mse = (1.0 - kappa * np.sqrt(b2)) ** 2 + kappa**2 * a2 * mu2  # E(eps - eps*)^2, [T]
        lam = betas**2 / (2.0 * sigma2 * alphas * b2)
        r = beta_tilde[1:] / sigma2[1:]
        kl = lam[1:] * mse[1:] + 0.5 * (r - 1.0 - np.log(r))  # [T - 1], t = 2..T

        z, w = np.polynomial.hermite_e.hermegauss(quadrature_nodes)  # probabilists' Hermite: weight e^{-z^2/2}
        w = w / w.sum()
        x1 = math.sqrt(a2[0]) * GRID[:, None] + math.sqrt(b2[0]) * z[None, :]  # [256, n]
        eps = kappa[0] * (x1 - math.sqrt(a2[0]) * m)
        mean1 = (x1 - betas[0] / math.sqrt(b2[0]) * eps) / math.sqrt(alphas[0])
        logp = discretised_normal_log_prob(np.arange(NUM_BINS)[:, None], mean1, math.sqrt(sigma2[0]))  # [256, n]
        decoder = float(-(P @ (logp @ w)))
        return BoundTerms(prior=float(prior), kl=kl, decoder=decoder)


@dataclass(frozen=True)
class BoundTerms:
    """Expected bound terms in nats per dimension: prior L_T, kl [T - 1] (L_{t-1}, t = 2..T), decoder L_0."""

    prior: float
    kl: np.ndarray
    decoder: float

    def total(self) -> float:
        """L_T + sum_t L_{t-1} + L_0, nats per dimension."""
        return self.prior + float(self.kl.sum()) + self.decoder


def gaussian_reverse_gap(betas: np.ndarray, data: GaussianData, variance: str) -> tuple[np.ndarray, float]:
    """For continuous N(m, s^2) data: E KL(q(x_{t-1} | x_t) || p_theta(x_{t-1} | x_t)) per dim for t = 2..T, and L_T.

    With eps* the model's mean is the true reverse mean E[x_{t-1} | x_t] = mu_tilde(E[x_0 | x_t], x_t) (the
    posterior mean is linear in x_0), and the true reverse variance is beta_tilde_t + c_t^2 Var(x_0 | x_t) with
    c_t = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) and Var(x_0 | x_t) = s^2 b^2 / v; so each step costs
    only the variance mismatch (rho - 1 - log rho) / 2, rho = true variance / sigma_t^2. The second value is
    KL(q(x_T) || N(0, 1)) per dim, q(x_T) = N(a_T m, v_T). These are the parts of the continuous-data gap
    (the discretised data add a decoder part; see test_exact_oracle.py).
    """
    betas = np.asarray(betas, dtype=np.float64)
    ab = alpha_bars(betas)
    a2, b2 = ab[1:], 1.0 - ab[1:]
    s2 = data.std**2
    beta_tilde = (1.0 - ab[:-1]) / b2 * betas
    sigma2 = betas if variance == "beta" else np.concatenate([betas[:1], beta_tilde[1:]])
    c = np.sqrt(ab[:-1]) * betas / b2
    true_var = beta_tilde + c**2 * s2 * b2 / (a2 * s2 + b2)
    rho = (true_var / sigma2)[1:]
    vT = a2[-1] * s2 + b2[-1]
    prior = 0.5 * (vT + a2[-1] * data.mean**2 - 1.0 - math.log(vT))
    return 0.5 * (rho - 1.0 - np.log(rho)), float(prior)


def algorithm2_gaussian_law(betas: np.ndarray, data: GaussianData, variance: str, start: int | None = None,
                            initial: tuple[float, float] = (0.0, 1.0),
                            noise_scales: Mapping[int, float] | None = None) -> tuple[float, float]:
    """The exact law N(mean, var) of Algorithm 2's output x_0 when eps_theta = eps* of N(m, s^2) data, per dim.

    By default from x_T ~ N(0, 1); from x_start ~ N(*initial) when `start` is given (a point mass at x for initial =
    (x, 0)), and with the noise sigma_t z of step t scaled by noise_scales[t] where given.

    eps*(x_t) = kappa_t (x_t - a_t m) is affine (case (a)), so Algorithm 2 line 4,
        x_{t-1} = (x_t - beta_t / b_t eps*(x_t)) / sqrt(alpha_t) + sigma_t z = A_t x_t + B_t + sigma_t z,
        A_t = (1 - beta_t kappa_t / b_t) / sqrt(alpha_t),   B_t = beta_t kappa_t a_t m / (b_t sqrt(alpha_t)),
    maps N(mu, v) to N(A_t mu + B_t, A_t^2 v + sigma_t^2) (z independent; z = 0 at t = 1). Starting from
    x_T ~ N(0, 1) this recursion gives the output law exactly. It differs from N(m, s^2) only by the
    discretisation of the reverse process (fixed sigma_t^2 instead of the true reverse variance), an error that
    vanishes as T grows; test_exact_oracle.py prints it.
    """
    betas = np.asarray(betas, dtype=np.float64)
    ab = alpha_bars(betas)
    T = betas.shape[0]
    mean, var = initial
    for t in range(T if start is None else start, 0, -1):
        beta, abt = betas[t - 1], ab[t]
        a, b = math.sqrt(abt), math.sqrt(1.0 - abt)
        kappa = b / (abt * data.std**2 + 1.0 - abt)
        A = (1.0 - beta * kappa / b) / math.sqrt(1.0 - beta)
        B = beta * kappa * a * data.mean / (b * math.sqrt(1.0 - beta))
        if t == 1:
            sigma2 = 0.0
        elif variance == "beta":
            sigma2 = beta
        elif variance == "beta_tilde":
            sigma2 = (1.0 - ab[t - 1]) / (1.0 - abt) * beta
        else:
            raise ValueError(f"unknown variance {variance!r}; options are 'beta', 'beta_tilde'")
        sigma2 *= 1.0 if noise_scales is None else noise_scales[t] ** 2
        mean, var = A * mean + B, A * A * var + sigma2
    return mean, var


__all__ = [
    "BoundTerms",
    "DiscretisedGaussian",
    "EpsStar",
    "GRID",
    "GaussianData",
    "GaussianMixture",
    "algorithm2_gaussian_law",
    "alpha_bars",
    "discretised_normal_log_prob",
    "gaussian_reverse_gap",
]
