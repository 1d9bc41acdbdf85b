"""The Gaussian diffusion of Ho et al. (2020): q(x_t | x_0), q(x_{t-1} | x_t, x_0) and p_theta(x_{t-1} | x_t).

Conventions (part of the README; each is tested):

- Timesteps are the paper's: t in {1, ..., T}, given as int64 tensors of shape [B] on the diffusion's device.
  alpha_bar_0 = 1. Every schedule table is a float64 tensor of length T + 1 indexed by t itself, so
  `table[t]` is the value at step t; index 0 holds alpha_bar_0 = 1 (and the quantities that follow from it
  alone: sqrt(alpha_bar_0) = 1, 1 - alpha_bar_0 = 0) and NaN for quantities undefined at t = 0.
- Precision: the tables are built once in float64 from log alpha_bar_t = sum_{s<=t} log1p(-beta_s)
  (compensated summation), with 1 - alpha_bar_t = -expm1(log alpha_bar_t), so tiny betas (1e-8) keep full
  relative precision. At use, the entries for the batch's t are gathered in float64 and cast to the working
  dtype: x.dtype for float32/float64 inputs; float32 for bfloat16/float16 inputs, whose results are rounded
  back to the input dtype once at the end. Outputs always have the input dtype.
- Reverse variance at t = 1: sigma_1^2 = beta_1 for the tabled choices "beta", "beta_tilde" and "optimal" (the
  learned one spans [beta_tilde_2, beta_1] at v in [-1, 1], as in improved-diffusion). beta_tilde_1 = 0
  (alpha_bar_0 = 1), which would make the decoder p_theta(x_0 | x_1) a point mass and L_0 infinite.
  TF/improved-diffusion substitute beta_tilde_2 and lucidrains/diffusers clamp the variance at 1e-20; we use
  beta_1, the forward variance of that step, for both. Sampling is unaffected: Algorithm 2 sets z = 0 at t = 1.
  The posterior q(x_0 | x_1, x_0) itself keeps its exact variance beta_tilde_1 = 0.
- Clipping: off by default everywhere (Algorithm 2 as written). `clip_x0=True` predicts
  x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t), clamps it to [-1, 1] and uses the posterior
  mean mu_tilde(x0_hat, x_t); this divides by sqrt(alpha_bar_t) and overflows when alpha_bar_t underflows
  (e.g. the cosine schedule near t = T with many steps).
- Validation: public methods check shapes, dtypes, devices and that every t lies in {1..T} (ValueError); the
  range check costs one device-to-host sync. They are the checked front of the unchecked kernels in
  `ddpm.core.forward` (q) and `ddpm.core.reverse` (p_theta and Algorithm 2's step), which the samplers, the bound
  and the losses call directly after checking their own inputs with `check_x` / `check_like` / `check_t`, so their
  loops stay on the device and `torch.compile` traces them without breaks.
"""

from __future__ import annotations

import copy

import numpy as np
import numpy.typing as npt
import torch

from ddpm.core.forward import compute_dtype, forward_sample, gather, posterior_mean, x0_from_eps
from ddpm.core.reverse import ReverseStep, single_step_tables
from ddpm.core.schedules import validate_betas
from ddpm.core.variance import ReverseVariance

Tensor = torch.Tensor


def _compensated_cumsum(values: np.ndarray) -> np.ndarray:
    """[0, v_1, v_1 + v_2, ...] with Neumaier summation (error ~ 1 ulp of the result, not T ulps)."""
    out = np.empty(values.shape[0] + 1, dtype=np.float64)  # [T + 1]
    out[0] = 0.0
    total, compensation = 0.0, 0.0
    for i, value in enumerate(values.tolist(), start=1):
        new = total + value
        if abs(total) >= abs(value):
            compensation += (total - new) + value
        else:
            compensation += (value - new) + total
        total = new
        out[i] = total + compensation
    return out


def _variance_tables(choice: ReverseVariance, s2: np.ndarray, d: np.ndarray, betas_t: np.ndarray,
                     alphas_t: np.ndarray, one_minus_alpha_bar_t: np.ndarray) -> dict[str, np.ndarray]:
    """The float64 tables [T + 1] every consumer of the reverse variance `choice` reads (the one place they are made).

    s2 = sigma_t^2 and d = log(beta_tilde_t / sigma_t^2), both indexed by t. Returns sigma2_, sigma_,
    loss_weight_ (lambda_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha_bar_t)), Ho et al. eq. 12) and
    kl_variance_term_ (C_t per dimension = KL between the variances alone, 0.5 (r - 1 - log r) with r = beta_tilde_t /
    sigma_t^2, as 0.5 (expm1(d) - d); NaN at t = 0, 1: t = 1 is the decoder's term), each suffixed by the name.
    """
    name = choice.value
    kl_const = 0.5 * (np.expm1(d) - d)
    kl_const[:2] = np.nan
    return {
        f"sigma2_{name}": s2,
        f"sigma_{name}": np.sqrt(s2),
        f"loss_weight_{name}": betas_t**2 / (2.0 * s2 * alphas_t * one_minus_alpha_bar_t),
        f"kl_variance_term_{name}": kl_const,
    }


class GaussianDiffusion:
    """The forward process q(x_t | x_0) and the fixed-variance reverse process p_theta of Ho et al. (2020).

    `betas` is a 1-D float64 array-like [T] (NumPy or torch), `betas[t - 1] = beta_t`; it is validated by
    `ddpm.core.schedules.validate_betas`. The float64 tables are attributes of length T + 1 indexed by t; see the
    module docstring for the conventions (t = 1 variance, clipping, dtypes).
    """

    # The float64 tables [T + 1] indexed by t, set in __init__ (the per-variance ones, sigma2_<choice> etc., are read
    # by name); optimal_gamma only on a copy made by `with_optimal_variance`.
    T: int
    betas: Tensor
    alphas: Tensor
    log_alphas: Tensor
    alpha_bars: Tensor
    log_alpha_bars: Tensor
    alpha_bars_prev: Tensor
    sqrt_alpha_bars: Tensor
    one_minus_alpha_bars: Tensor
    sqrt_one_minus_alpha_bars: Tensor
    log_one_minus_alpha_bars: Tensor
    sqrt_recip_alpha_bars: Tensor
    sqrt_recipm1_alpha_bars: Tensor
    recip_sqrt_alphas: Tensor
    eps_coefs: Tensor
    posterior_variance: Tensor
    posterior_log_variance: Tensor
    posterior_mean_coef_x0: Tensor
    posterior_mean_coef_xt: Tensor
    mean_gap_coefs: Tensor
    log_betas: Tensor
    learned_log_beta_tildes: Tensor
    optimal_gamma: Tensor

    def __init__(self, betas: npt.ArrayLike) -> None:
        beta = validate_betas(betas)  # [T] float64
        T = int(beta.shape[0])
        self.T = T
        nan = np.nan

        log_alpha = np.log1p(-beta)  # [T], log alpha_t
        log_alpha_bar = _compensated_cumsum(log_alpha)  # [T + 1], log alpha_bar_t, index 0 is 0
        one_minus_alpha_bar = -np.expm1(log_alpha_bar)  # [T + 1]
        one_minus_alpha_bar[0] = 0.0  # +0, not -expm1(0) = -0

        def padded(values: np.ndarray, first: float = nan) -> np.ndarray:
            return np.concatenate([[first], values])  # [T + 1]

        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            betas_t = padded(beta)
            alphas_t = padded(1.0 - beta)
            alpha_bar_prev = padded(np.exp(log_alpha_bar[:-1]))  # alpha_bar_{t-1} at index t
            log_one_minus_alpha_bar = np.log(one_minus_alpha_bar)  # index 0: -inf
            # beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t; exactly 0 at t = 1.
            beta_tilde = padded(one_minus_alpha_bar[:-1] / one_minus_alpha_bar[1:] * beta)
            tables = {
                "betas": betas_t,
                "alphas": alphas_t,
                "log_alphas": padded(log_alpha),
                "alpha_bars": np.exp(log_alpha_bar),
                "log_alpha_bars": log_alpha_bar,
                "alpha_bars_prev": alpha_bar_prev,
                "sqrt_alpha_bars": np.exp(0.5 * log_alpha_bar),
                "one_minus_alpha_bars": one_minus_alpha_bar,
                "sqrt_one_minus_alpha_bars": np.sqrt(one_minus_alpha_bar),
                "log_one_minus_alpha_bars": log_one_minus_alpha_bar,
                # 1 / sqrt(alpha_bar_t) and sqrt(1 / alpha_bar_t - 1), from the log (no subnormal alpha_bar).
                "sqrt_recip_alpha_bars": padded(np.exp(-0.5 * log_alpha_bar[1:])),
                "sqrt_recipm1_alpha_bars": padded(np.sqrt(one_minus_alpha_bar[1:]) * np.exp(-0.5 * log_alpha_bar[1:])),
                # Algorithm 2 line 4: mu = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha_bar_t) eps).
                "recip_sqrt_alphas": padded(np.exp(-0.5 * log_alpha)),
                "eps_coefs": padded(beta / np.sqrt(one_minus_alpha_bar[1:])),
                # q(x_{t-1} | x_t, x_0) = N(coef_x0 x_0 + coef_xt x_t, beta_tilde_t), eq. 6-7.
                "posterior_variance": beta_tilde,
                "posterior_log_variance": np.log(beta_tilde),  # index 1: -inf (beta_tilde_1 = 0)
                "posterior_mean_coef_x0": padded(np.exp(0.5 * log_alpha_bar[:-1]) * beta / one_minus_alpha_bar[1:]),
                "posterior_mean_coef_xt": padded(
                    np.exp(0.5 * log_alpha) * one_minus_alpha_bar[:-1] / one_minus_alpha_bar[1:]
                ),
                # mu_tilde_t - mu_theta = mean_gap_coef_t (eps_theta - eps),
                # mean_gap_coef_t = beta_t / (sqrt(alpha_t) sqrt(1 - alpha_bar_t)).
                "mean_gap_coefs": padded(np.exp(-0.5 * log_alpha) * beta / np.sqrt(one_minus_alpha_bar[1:])),
                # The learned variance's two ends in log space (derivation (k)): log beta_t and log beta_tilde_t with
                # beta_tilde_2 at t = 1 (improved-diffusion's posterior_log_variance_clipped; beta_tilde_1 = 0).
                "log_betas": padded(np.log(beta)),
                "learned_log_beta_tildes": np.log(np.where(np.arange(T + 1) == 1, beta_tilde[min(2, T)], beta_tilde)),
            }
            # sigma_t^2 for both choices; t = 1 uses beta_1 for both (module docstring).
            sigma2 = {
                ReverseVariance.BETA: betas_t.copy(),
                ReverseVariance.BETA_TILDE: np.where(np.arange(T + 1) == 1, betas_t, beta_tilde),
            }
            for choice, s2 in sigma2.items():
                if choice is ReverseVariance.BETA:
                    # log(beta_tilde_t / beta_t) = log(1 - alpha_bar_{t-1}) - log(1 - alpha_bar_t), no cancellation.
                    d = padded(log_one_minus_alpha_bar[:-1] - log_one_minus_alpha_bar[1:])
                else:
                    d = np.zeros(T + 1)
                tables.update(_variance_tables(choice, s2, d, betas_t, alphas_t, padded(one_minus_alpha_bar[1:])))

        for name, values in tables.items():
            setattr(self, name, torch.tensor(values, dtype=torch.float64))

    # ----------------------------------------------------------------------------------------------- devices
    @property
    def device(self) -> torch.device:
        """The device the float64 tables live on."""
        return self.betas.device

    def to(self, device: torch.device | str) -> GaussianDiffusion:
        """A copy with every table on `device` (values unchanged, still float64)."""
        device = torch.device(device)
        other = copy.copy(self)
        for name, value in vars(self).items():
            if isinstance(value, Tensor):
                setattr(other, name, value.to(device))
        return other

    def _variance_table(self, kind: str, variance: str | ReverseVariance) -> Tensor:
        choice = ReverseVariance.from_value(variance)
        if choice.is_learned:
            raise ValueError("the 'learned' reverse variance is per dimension, made from the network's output v: it "
                             "has no table (use a model with ModelConfig.learn_variance and the bound or sampler)")
        table: Tensor | None = getattr(self, f"{kind}_{choice.value}", None)
        if table is None:
            raise ValueError(f"the {choice.value!r} reverse variance needs Gamma_t estimates of the trained network: "
                             "use diffusion.with_optimal_variance(gamma) "
                             "(ddpm.evaluation.optimal_variance.estimate_gamma)")
        return table

    def has_variance(self, variance: str | ReverseVariance) -> bool:
        """True when this diffusion holds the tables of `variance` (always for beta and beta_tilde; never "learned",
        which comes from the model)."""
        return getattr(self, f"sigma2_{ReverseVariance.from_value(variance).value}", None) is not None

    def reverse_variance(self, variance: str | ReverseVariance) -> Tensor:
        """sigma_t^2 as a float64 table [T + 1] (index t; sigma_1^2 = beta_1 for every choice)."""
        return self._variance_table("sigma2", variance)

    def reverse_std(self, variance: str | ReverseVariance) -> Tensor:
        """sigma_t as a float64 table [T + 1] (the square root of `reverse_variance`, made with it)."""
        return self._variance_table("sigma", variance)

    def loss_weights(self, variance: str | ReverseVariance) -> Tensor:
        """lambda_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha_bar_t)) as float64 [T + 1] (Ho et al. eq. 12)."""
        return self._variance_table("loss_weight", variance)

    def kl_variance_terms(self, variance: str | ReverseVariance) -> Tensor:
        """C_t per dimension = KL(N(0, beta_tilde_t) || N(0, sigma_t^2)), float64 [T + 1], NaN at t = 0, 1."""
        return self._variance_table("kl_variance_term", variance)

    def with_optimal_variance(self, gamma: npt.ArrayLike) -> GaussianDiffusion:
        """A copy that also holds the "optimal" reverse variance for Gamma_t = E||eps_theta(x_t, t)||^2 / d.

        sigma*_t^2 = beta_tilde_t + beta_t^2 / (alpha_t (1 - alpha_bar_t)) (1 - Gamma_t) (derivation (j), Bao et al.
        2022 Theorem 1), with Gamma_t first clipped to its bounds [max(0, 1 - alpha_bar_t / (1 - alpha_bar_t)), 1]
        (data in [-1, 1]), so beta_tilde_t <= sigma*_t^2 <= beta_tilde_t + c_t^2, c_t the posterior's x_0
        coefficient. `gamma` is float64 [T] (t = 1..T) or [T + 1] (index t). t = 1 keeps sigma_1^2 = beta_1 (the
        decoder's convention of the fixed choices; Algorithm 2 adds no noise there).
        """
        g = np.asarray(gamma, dtype=np.float64).reshape(-1)
        T = self.T
        if g.shape[0] == T + 1:
            g = g[1:]
        if g.shape[0] != T or not np.all(np.isfinite(g)):
            raise ValueError(f"gamma must hold T = {T} finite values (t = 1..T), got shape {np.shape(gamma)}")
        def table(name: str) -> np.ndarray:
            values: Tensor = getattr(self, name)
            return values.cpu().numpy()  # float64 [T + 1]

        betas_t, alphas_t, ab = table("betas"), table("alphas"), table("alpha_bars")
        one_minus = table("one_minus_alpha_bars")
        lower = np.maximum(0.0, 1.0 - ab[1:] / one_minus[1:])
        clipped = np.concatenate([[np.nan], np.clip(g, lower, 1.0)])  # [T + 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            s2 = table("posterior_variance") + betas_t**2 / (alphas_t * one_minus) * (1.0 - clipped)
            s2[1] = betas_t[1]
            d = table("posterior_log_variance") - np.log(s2)
            tables = _variance_tables(ReverseVariance.OPTIMAL, s2, d, betas_t, alphas_t, one_minus)
        other = copy.copy(self)
        for name, values in tables.items():
            setattr(other, name, torch.tensor(values, dtype=torch.float64, device=self.device))
        other.optimal_gamma = torch.tensor(clipped, dtype=torch.float64, device=self.device)
        return other

    # ------------------------------------------------------------------------------------------- validation
    def check_x(self, name: str, x: object) -> None:
        """ValueError unless `x` is a floating tensor [B, ...] on the tables' device (named `name` in the message)."""
        if not isinstance(x, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor of shape [B, ...], got {type(x).__name__}")
        if not x.is_floating_point():
            raise ValueError(f"{name} must have a floating dtype, got {x.dtype}")
        if x.ndim < 1:
            raise ValueError(f"{name} must have shape [B, ...] (at least 1-D), got a 0-D tensor")
        if x.device != self.device:
            raise ValueError(
                f"{name} is on {x.device} but the diffusion's tables are on {self.device}; use diffusion.to(device)"
            )

    def check_like(self, name: str, y: object, x: Tensor, x_name: str) -> None:
        """`check_x` of `y`, and ValueError unless it has the shape and dtype of `x` (named `x_name`)."""
        self.check_x(name, y)
        assert isinstance(y, Tensor)
        if y.shape != x.shape:
            raise ValueError(f"{name} must have the shape of {x_name} {tuple(x.shape)}, got {tuple(y.shape)}")
        if y.dtype != x.dtype:
            raise ValueError(f"{name} must have the dtype of {x_name} ({x.dtype}), got {y.dtype}")

    def check_t(self, t: object, x: Tensor) -> None:
        """ValueError unless `t` is int64 [B] on the tables' device with every value in 1..T (one host sync)."""
        if not isinstance(t, Tensor):
            raise ValueError(
                f"t must be an int64 tensor of shape [B] with values in 1..{self.T}, got {type(t).__name__}"
            )
        if t.dtype != torch.int64:
            raise ValueError(f"t must have dtype torch.int64 (paper timesteps 1..{self.T}), got {t.dtype}")
        if t.ndim != 1 or t.shape[0] != x.shape[0]:
            raise ValueError(f"t must have shape [B] = [{x.shape[0]}], got {tuple(t.shape)}")
        if t.device != self.device:
            raise ValueError(f"t is on {t.device} but the diffusion's tables are on {self.device}")
        bad = (t < 1) | (t > self.T)
        if bool(bad.any()):  # the one host sync of a public call
            value = int(t[bad][0])
            raise ValueError(f"t must lie in {{1, ..., T = {self.T}}} (paper convention), got t = {value}")

    # ------------------------------------------------------------------------------------------- public
    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t ~ q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I), eq. 4, reparameterised.

        x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise; x0, noise [B, ...], t int64 [B] in 1..T.
        """
        self.check_x("x0", x0)
        self.check_like("noise", noise, x0, "x0")
        self.check_t(t, x0)
        return forward_sample(self, x0, t, noise)

    def q_mean_variance(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I), eq. 4.

        The variance has shape [B, 1, ...].
        """
        self.check_x("x0", x0)
        self.check_t(t, x0)
        dtype = compute_dtype(x0.dtype)
        mean = gather(self.sqrt_alpha_bars, t, x0, dtype) * x0.to(dtype)  # [B, ...]
        variance = gather(self.one_minus_alpha_bars, t, x0, dtype)  # [B, 1, ...]
        return mean.to(x0.dtype), variance.to(x0.dtype)

    def q_posterior_mean_variance(self, x0: Tensor, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of q(x_{t-1} | x_t, x_0) = N(mu_tilde_t(x_t, x_0), beta_tilde_t I), eqs. 6-7.

        mu_tilde_t = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x_0
                     + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t
        and beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t, which is exactly 0 at t = 1 (the
        posterior of x_0 given x_0 is a point mass; the mean is x_0). The variance has shape [B, 1, ...].
        """
        self.check_x("x0", x0)
        self.check_like("xt", xt, x0, "x0")
        self.check_t(t, x0)
        dtype = compute_dtype(xt.dtype)
        mean = posterior_mean(self, x0, xt, t, dtype)  # [B, ...]
        variance = gather(self.posterior_variance, t, xt, dtype)  # [B, 1, ...]
        return mean.to(xt.dtype), variance.to(xt.dtype)

    def predict_x0_from_eps(self, xt: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t), eq. 4 solved for x_0 (no clipping)."""
        self.check_x("xt", xt)
        self.check_like("eps", eps, xt, "xt")
        self.check_t(t, xt)
        return x0_from_eps(self, xt, t, eps).to(xt.dtype)

    def p_mean_variance(
        self, eps: Tensor, xt: Tensor, t: Tensor, variance: str | ReverseVariance, clip_x0: bool = False,
        v: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Mean and variance of p_theta(x_{t-1} | x_t) = N(mu_theta(x_t, t), sigma_t^2 I) given eps = eps_theta(x_t, t).

        mu_theta = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) (eq. 11, Algorithm 2 line 4); with
        `clip_x0=True`, mu_tilde_t(clamp(x0_hat, -1, 1), x_t) instead. sigma_t^2 is beta_t or beta_tilde_t, with
        sigma_1^2 = beta_1 for both (module docstring). The variance has shape [B, 1, ...]; for "learned" it is
        Sigma_theta(v) [B, ...] from the network's variance output v (derivation (k)).
        """
        choice = ReverseVariance.from_value(variance)
        self.check_x("xt", xt)
        self.check_like("eps", eps, xt, "xt")
        self.check_t(t, xt)
        if v is not None:
            self.check_like("v", v, xt, "xt")
        step = ReverseStep(single_step_tables(self, choice, bool(clip_x0), compute_dtype(xt.dtype)))
        mean = step.mean(eps, xt, t)
        if choice.is_learned:
            var = torch.exp(step.log_variance(v, t))  # [B, ...]
        else:
            var = gather(self.reverse_variance(choice), t, xt, step.dtype)  # [B, 1, ...]
        return mean.to(xt.dtype), var.to(xt.dtype)

    def p_sample(
        self,
        eps: Tensor,
        xt: Tensor,
        t: Tensor,
        noise: Tensor,
        variance: str | ReverseVariance,
        clip_x0: bool = False,
        v: Tensor | None = None,
    ) -> Tensor:
        """x_{t-1} ~ p_theta(x_{t-1} | x_t) = N(mu_theta(x_t, t), sigma_t^2 I), Algorithm 2 line 4.

        x_{t-1} = mu_theta(x_t, t) + sigma_t z with z = noise where t > 1 and z = 0 where t = 1; "learned" takes
        sigma per dimension from the network's variance output v [B, ...].
        """
        choice = ReverseVariance.from_value(variance)
        self.check_x("xt", xt)
        self.check_like("eps", eps, xt, "xt")
        self.check_like("noise", noise, xt, "xt")
        self.check_t(t, xt)
        if v is not None:
            self.check_like("v", v, xt, "xt")
        if choice.is_learned and v is None:
            raise ValueError("the 'learned' reverse variance needs the network's variance output v")
        step = ReverseStep(single_step_tables(self, choice, bool(clip_x0), compute_dtype(xt.dtype)))
        return step(eps, xt, t, noise, v)


def standard_normal(
    shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """z ~ N(0, I) of `shape`, drawn on the generator's device (so a CPU generator reproduces CUDA runs) then moved."""
    z = torch.randn(shape, generator=generator, device=generator.device, dtype=dtype)
    return z.to(device)  # no copy when the devices agree


def uniform_timesteps(n: int, T: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """t ~ Uniform{1, ..., T}, int64 [n], drawn on the generator's device then moved (Algorithm 1 line 3)."""
    return torch.randint(1, T + 1, (n,), generator=generator, device=generator.device).to(device)


def check_generator(generator: object) -> torch.Generator:
    """`generator` itself; ValueError unless it is a torch.Generator (randomness is always injected)."""
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return generator


__all__ = [
    "GaussianDiffusion",
    "check_generator",
    "standard_normal",
    "uniform_timesteps",
]
