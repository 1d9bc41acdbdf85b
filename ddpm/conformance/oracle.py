"""The float64 oracle of the conformance suite and its rounding-error model (the tolerance of every exact case).

Every operation is a SymPy form over the canonical intermediates an implementation forms from its own tables,
at a step t -> s (s = t - 1 for the one-step operations; the paper's s = 0 is x_0 itself, alpha_bar_0 = 1):

    a_t = alpha_bar_t, a_s = alpha_bar_s, b = beta_t from the adapter's own betas table and al = 1 - b (one step),
    or b = 1 - a_t / a_s and al = a_t / a_s (a stride: its forward variance), m_t = 1 - a_t, m_s = 1 - a_s,

and the inputs x0, xt, noise, eps, z (and v, vel, eta; xs, the sample an inversion step starts from). The forms are
the paper's formulas; `tests/conformance/test_oracle.py` proves each equal to the derived expression of derivations
(a), (b), (d) and (i) (simplify(a - b) == 0), and the inversion forms eq. 12 solved for x_t, so the suite checks
other code against the derivations, not against this file.

Oracle values are computed in float64 from the ADAPTER'S OWN alpha_bar table (cast exactly to float64), so a
float32 table is not penalised for its own rounding here; the `schedule` case checks the tables themselves.

Tolerance of an output f (first-order rounding bound, `ROUNDING_FACTOR` K, unit roundoff u of the adapter's dtype):

    |f_adapter - f_oracle| <= K (u |f| + sum_q |df/dq| dq + eta (1 + sum_q |df/dq|))

over every intermediate and input q (eta: the dtype's underflow unit, its smallest subnormal, which matters only
for values near zero such as inputs of 1e-40 in float32), with dq = u |q| for the data inputs, dq = u |q| (1 + |log q|)
for a_t and a_s (tables built as exp of a sum of logs carry the rounding of the logarithm), and dq = u (absolute) for b,
al, m_t, m_s: an implementation may form beta_t = 1 - a_t / a_{t-1}, alpha_t = 1 - beta_t or 1 - a_t by cancellation
(diffusers does; and beta_T = 0.999 of the cosine schedule rounded to float32 leaves alpha_T = 1 - beta_T with a
relative error of 1e-5), which is exact to u absolutely, not relatively. Where implementations take different routes to
the same mean (Algorithm 2's eps form, or x0_hat through the posterior mean), the bound is the largest over the forms,
so neither route is penalised for its own rounding. Real bugs (a t vs t - 1 slip, a missing square root, a wrong
variance) move outputs by orders of magnitude more than this bound (tests/conformance/test_suite.py).

The statistical cases drive implementations with the exact denoiser of data whose posterior q(x_0 | x_t) is known
(derivation (p)): `GaussianData` and `GaussianMixtureData`, each with its posterior mean, variance, CDF and sampler.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import sympy as sp
import torch
from scipy import special, stats

from ddpm.conformance.protocol import Prediction, VarianceKind

ROUNDING_FACTOR = 8.0  # K: a few roundings per operation on each side

a_t, a_s, al = sp.symbols("a_t a_s al", positive=True)
b, m_t, m_s = sp.symbols("b m_t m_s", nonnegative=True)
x0, xt, noise, eps, z, v = sp.symbols("x0 xt noise eps z v", real=True)
vel = sp.Symbol("vel", real=True)  # a v-prediction (v above is a learned-variance output)
eta = sp.Symbol("eta", nonnegative=True)
xs = sp.Symbol("xs", real=True)  # the input of an inversion step: the sample at the earlier timestep s

INTERMEDIATES = (a_t, a_s, al, b, m_t, m_s)
ABSOLUTE = frozenset({b, al, m_t, m_s})  # perturbed by u absolutely (may be formed by cancellation)
TABLE_VALUES = frozenset({a_t, a_s})  # perturbed by u (1 + |log a|) relatively (tables built as exp(sum log alpha))
INPUTS = (x0, xt, noise, eps, z, v, vel, eta, xs)

# x0_hat = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t): eq. 4 solved for x_0.
X0_HAT = (xt - sp.sqrt(m_t) * eps) / sp.sqrt(a_t)
POSTERIOR_COEF_X0 = sp.sqrt(a_s) * b / m_t  # eq. 7 (over a stride: derivation (i))
POSTERIOR_COEF_XT = sp.sqrt(al) * m_s / m_t
POSTERIOR_VARIANCE = m_s / m_t * b
Q_SAMPLE = sp.sqrt(a_t) * x0 + sp.sqrt(m_t) * noise  # eq. 4, reparameterised
POSTERIOR_MEAN = POSTERIOR_COEF_X0 * x0 + POSTERIOR_COEF_XT * xt
# Algorithm 2 line 4 (over a stride: sqrt(a_s / a_t) (x_t - b / sqrt(m_t) eps)), and the same mean through x0_hat.
MEAN_FORMS = (
    (xt - b / sp.sqrt(m_t) * eps) / sp.sqrt(al),
    POSTERIOR_COEF_X0 * X0_HAT + POSTERIOR_COEF_XT * xt,
)
# Nichol & Dhariwal eq. 15: frac = (v + 1) / 2 between log beta_tilde (frac = 0) and log beta (frac = 1).
_FRAC = (v + 1) / 2
SIGMA = {
    VarianceKind.BETA: sp.sqrt(b),
    VarianceKind.BETA_TILDE: sp.sqrt(POSTERIOR_VARIANCE),
    VarianceKind.LEARNED_RANGE: sp.exp((_FRAC * sp.log(b) + (1 - _FRAC) * sp.log(POSTERIOR_VARIANCE)) / 2),
    VarianceKind.LEARNED_LOG_VARIANCE: sp.exp(v / 2),
    VarianceKind.LEARNED_VARIANCE: sp.sqrt(v),
}
# The parameterisations of derivation (o): what the network output (eps, x0 or vel) gives for x0_hat and eps_hat.
EPS_FROM_X0 = (xt - sp.sqrt(a_t) * x0) / sp.sqrt(m_t)
X0_FROM_V = sp.sqrt(a_t) * xt - sp.sqrt(m_t) * vel
EPS_FROM_V = sp.sqrt(a_t) * vel + sp.sqrt(m_t) * xt
OUTPUT = {Prediction.EPS: eps, Prediction.X0: x0, Prediction.V: vel}  # the symbol the network output stands for
X0_HATS = {Prediction.EPS: X0_HAT, Prediction.X0: x0, Prediction.V: X0_FROM_V}
EPS_HATS = {Prediction.EPS: eps, Prediction.X0: EPS_FROM_X0, Prediction.V: EPS_FROM_V}
# Algorithm 2's mean from each parameterisation, by both routes (eps form, posterior mean of x0_hat). At
# alpha_bar_T = 0 only the x0_hat route is finite (the eps form divides by sqrt(al) = 0): `evaluate` keeps the finite.
MEANS = {
    prediction: (MEAN_FORMS[0].subs(eps, EPS_HATS[prediction]),
                 POSTERIOR_COEF_X0 * X0_HATS[prediction] + POSTERIOR_COEF_XT * xt)
    for prediction in Prediction
}
# DDIM, Song et al. eq. 16 and eq. 12 (and its x_t / eps coefficient form).
DDIM_SIGMA2 = eta**2 * m_s / m_t * b
DDIM_FORMS = (
    sp.sqrt(a_s) * X0_HAT + sp.sqrt(m_s - DDIM_SIGMA2) * eps + sp.sqrt(DDIM_SIGMA2) * z,
    sp.sqrt(a_s / a_t) * xt + (sp.sqrt(m_s - DDIM_SIGMA2) - sp.sqrt(a_s) * sp.sqrt(m_t) / sp.sqrt(a_t)) * eps
    + sp.sqrt(DDIM_SIGMA2) * z,
)
# The coefficient of x_0 in eq. 12 when eps is re-derived from it, eps = (x_t - sqrt(a_t) x_0) / sqrt(m_t): how an
# error in a clipped or thresholded x_0 moves x_s.
DDIM_COEF_X0 = sp.sqrt(a_s) - sp.sqrt(m_s - DDIM_SIGMA2) * sp.sqrt(a_t) / sp.sqrt(m_t)
# d(output)/d(eps) of Algorithm 2's mean and of eq. 12: what an error in an eps converted from an x_0 or v output
# (an implementation's intermediate, rounded on its own) moves the output by.
MEAN_COEF_EPS = sp.diff(MEAN_FORMS[0], eps)
DDIM_COEF_EPS = sp.diff(DDIM_FORMS[1], eps)
X0_HAT_COEF_EPS = sp.diff(X0_HAT, eps)
DDIM_BY_PREDICTION = {
    Prediction.EPS: DDIM_FORMS,
    **{prediction: (sp.sqrt(a_s) * X0_HATS[prediction] + sp.sqrt(m_s - DDIM_SIGMA2) * EPS_HATS[prediction]
                    + sp.sqrt(DDIM_SIGMA2) * z,)
       for prediction in (Prediction.X0, Prediction.V)},
}

# DDIM inversion: eq. 12 at eta = 0 run from s to t > s, x_t = sqrt(a_t) x0_hat + sqrt(1 - a_t) eps_hat, with x0_hat and
# eps_hat read from the sample x_s at the EARLIER timestep and the network output there (inversion knows x_s, not
# x_t): the parameterisations above with the roles of t and s exchanged. At s = 0 (x_0 itself, a_s = 1, m_s = 0) the
# eps and v forms give x0_hat = x_s; the x_0 form has no eps_hat there (it divides by sqrt(m_s) = 0) and `evaluate`
# returns a non-finite value, which the cases do not compare. tests/conformance/test_oracle.py shows each form is
# eq. 12 at eta = 0 solved for x_t (the DDIM step from t back to s returns x_s).
_AT_S = {xt: xs, a_t: a_s, m_t: m_s}
X0_HATS_AT_S = {prediction: form.xreplace(_AT_S) for prediction, form in X0_HATS.items()}
EPS_HATS_AT_S = {prediction: form.xreplace(_AT_S) for prediction, form in EPS_HATS.items()}
INVERSION_FORMS = (  # eps prediction: as written, and its x_s / eps coefficient form
    sp.sqrt(a_t) * X0_HATS_AT_S[Prediction.EPS] + sp.sqrt(m_t) * eps,
    sp.sqrt(a_t / a_s) * xs + (sp.sqrt(m_t) - sp.sqrt(a_t) * sp.sqrt(m_s) / sp.sqrt(a_s)) * eps,
)
INVERSION_BY_PREDICTION = {
    Prediction.EPS: INVERSION_FORMS,
    **{prediction: (sp.sqrt(a_t) * X0_HATS_AT_S[prediction] + sp.sqrt(m_t) * EPS_HATS_AT_S[prediction],)
       for prediction in (Prediction.X0, Prediction.V)},
}


def unit_roundoff(dtype: torch.dtype) -> float:
    """u = machine epsilon / 2 of `dtype` (2^-24 for float32, 2^-53 for float64)."""
    return float(torch.finfo(dtype).eps) / 2.0


def underflow(u: float) -> float:
    """eta, a bound on the absolute error one operation may add near zero with gradual underflow, in the floating type
    whose unit roundoff is u: fl(x op y) = (x op y)(1 + d) + e, |d| <= u, |e| <= eta. The exact bound is half the
    smallest subnormal; eta is the smallest subnormal itself (half of it is not representable in float64)."""
    for dtype in (torch.float64, torch.float32, torch.bfloat16, torch.float16):
        if unit_roundoff(dtype) == u:
            info = torch.finfo(dtype)
            return float(info.tiny) * float(info.eps)
    return 0.0


@functools.cache
def _compiled(form: sp.Expr):
    """(value, [(symbol, |d form / d symbol|)]) as NumPy functions of all symbols."""
    symbols = INTERMEDIATES + INPUTS
    value = sp.lambdify(symbols, form, modules="numpy")
    partials = tuple(
        (symbol, sp.lambdify(symbols, sp.diff(form, symbol), modules="numpy"))
        for symbol in symbols
        if form.has(symbol)
    )
    return value, partials


def stride_intermediates(alpha_bar_t, alpha_bar_s, beta=None) -> dict[sp.Symbol, np.ndarray]:
    """The intermediates at a step t -> s in float64 (a_s = 1 at the paper's s = 0).

    For one step (s = t - 1) pass the adapter's own `beta` = beta_t: b = beta_t and al = 1 - beta_t, as Algorithm 2
    writes them; for a stride, b = 1 - a_t / a_s and al = a_t / a_s come from the alpha_bar table.
    """
    at = np.asarray(alpha_bar_t, dtype=np.float64)
    as_ = np.asarray(alpha_bar_s, dtype=np.float64)
    ratio = at / as_ if beta is None else 1.0 - np.asarray(beta, dtype=np.float64)
    return {a_t: at, a_s: as_, al: ratio, b: 1.0 - ratio if beta is None else np.asarray(beta, dtype=np.float64),
            m_t: 1.0 - at, m_s: 1.0 - as_}


def evaluate(forms: sp.Expr | tuple[sp.Expr, ...], values: Mapping[sp.Symbol, np.ndarray | float],
             u: float) -> tuple[np.ndarray, np.ndarray]:
    """(oracle value, tolerance) of `forms` (one form or several equal ones) at `values` (module docstring).

    Where a form is not finite (the eps form of the mean at alpha_bar_T = 0) the others decide; where none is, the
    value is not finite and the case does not compare there. A quantity that is exactly 0 (alpha_bar_T = 0) carries
    no rounding, so an infinite derivative there adds nothing to the bound.
    """
    forms = forms if isinstance(forms, tuple) else (forms,)
    symbols = INTERMEDIATES + INPUTS
    args = [np.asarray(values.get(s, 0.0), dtype=np.float64) for s in symbols]
    shape = np.broadcast_shapes(*(a.shape for a in args))
    out, bound = np.full(shape, np.nan), np.full(shape, np.nan)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for form in forms:
            f, err = _value_and_bound(form, args, values, u, shape)
            usable = np.isfinite(f) & np.isfinite(err)
            out = np.where(np.isnan(out) & usable, f, out)
            bound = np.where(usable, np.fmax(bound, err), bound)
    return out, ROUNDING_FACTOR * bound


def _value_and_bound(form: sp.Expr, args: list[np.ndarray], values: Mapping[sp.Symbol, np.ndarray | float], u: float,
                     shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """One form's float64 value and first-order rounding bound (before the factor K)."""
    fn, partials = _compiled(form)
    f = np.broadcast_to(np.asarray(fn(*args), dtype=np.float64), shape)
    eta = underflow(u)
    err = u * np.abs(f) + eta
    for symbol, dfn in partials:
        d = np.abs(np.asarray(dfn(*args), dtype=np.float64))
        err = err + np.nan_to_num(d * eta, nan=0.0, posinf=0.0)  # an underflow in the quantity q
        q = np.asarray(values.get(symbol, 0.0), dtype=np.float64)
        dq = np.where(q == 0, 0.0, u) if symbol in ABSOLUTE else u * np.abs(q)
        if symbol in TABLE_VALUES:  # a table may carry the rounding of its logarithm
            dq = dq * (1.0 + np.abs(np.log(np.where(q > 0, q, 1.0))))
        err = err + np.where(dq == 0, 0.0, np.nan_to_num(d * dq, nan=np.inf, posinf=np.inf))
    return f, err


def sigma_form(kind: VarianceKind) -> sp.Expr:
    """sigma (not sigma^2) of a variance kind at a step t -> s >= 1."""
    return SIGMA[kind]


# ------------------------------------------------------------------------------- maps of the x_0 estimate
def clip_x0(x0_hat: np.ndarray, tol: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(clamp(x0_hat, -1, 1), its tolerance): a clamped element is exactly +-1, the others keep `tol`."""
    return np.clip(x0_hat, -1.0, 1.0), np.where(np.abs(x0_hat) > 1, 0.0, tol)


def dynamic_threshold(x0_hat: np.ndarray, tol: np.ndarray, p: float, s_max: float,
                      u: float) -> tuple[np.ndarray, np.ndarray]:
    """Dynamic thresholding of x0_hat [B, ...] (Saharia et al. 2022, as diffusers documents it) and its tolerance.

    Per image b: s_b = clamp(quantile_p(|x0_hat[b]|), 1, s_max), the quantile interpolating linearly between order
    statistics (NumPy's and torch.quantile's default); x_0 = clamp(x0_hat, -s_b, s_b) / s_b. First-order rounding:
    the quantile, a convex combination of two |x0_hat| values, carries at most their largest tolerance plus its own
    rounding (none where the clamp decides s); an element inside [-s, s] carries (tol + |x0_hat| ds / s) / s plus the
    division's rounding; a clamped one is exactly +-1.
    """
    batch = x0_hat.shape[0]
    flat = np.abs(x0_hat).reshape(batch, -1)
    q = np.quantile(flat, p, axis=1)  # [B]
    s = np.clip(q, 1.0, s_max)
    tol_s = np.where((q > 1.0) & (q < s_max),
                     np.max(np.broadcast_to(tol, x0_hat.shape).reshape(batch, -1), axis=1) + ROUNDING_FACTOR * u * q,
                     0.0)
    shape = (batch,) + (1,) * (x0_hat.ndim - 1)
    s, tol_s = s.reshape(shape), tol_s.reshape(shape)
    x0 = np.clip(x0_hat, -s, s) / s
    inside = np.abs(x0_hat) < s
    tol_x0 = np.where(inside, (tol + np.abs(x0_hat) * tol_s / s) / s + ROUNDING_FACTOR * u * np.abs(x0), 0.0)
    return x0, tol_x0


# ---------------------------------------------------------------------------------------------- schedules
def linear_betas(T: int, rescaled: bool) -> np.ndarray:
    """Ho et al.'s linear schedule, beta_t = b_1 + (b_T - b_1) (t - 1) / (T - 1), b_1 = 1e-4 k, b_T = 0.02 k,
    k = 1000 / T when rescaled (improved-diffusion, lucidrains, this project) else 1 (TF original, diffusers)."""
    k = 1000.0 / T if rescaled else 1.0
    if T == 1:
        return np.array([1e-4 * k])
    t = np.arange(1, T + 1, dtype=np.float64)
    return 1e-4 * k + (0.02 * k - 1e-4 * k) * (t - 1) / (T - 1)


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Nichol & Dhariwal eq. 17: beta_t = min(1 - alpha_bar(t) / alpha_bar(t - 1), 0.999),
    f(t) = cos^2((t/T + s)/(1 + s) pi/2)."""
    f = np.cos(_cosine_angles(T, s)) ** 2
    return np.minimum(1.0 - f[1:] / f[:-1], max_beta)


def _cosine_angles(T: int, s: float = 0.008) -> np.ndarray:
    return (np.arange(T + 1, dtype=np.float64) / T + s) / (1 + s) * np.pi / 2  # [T + 1]


def schedule_condition(kind, T: int) -> np.ndarray:
    """sum_x |x d beta_t / d x| over the formula's arguments: how much rounding of them moves beta_t.

    Linear: 0 (beta is its own argument). Cosine: beta_t = 1 - r, r = cos^2(a_t) / cos^2(a_{t-1}), so
    |a_t dr/da_t| + |a_{t-1} dr/da_{t-1}| = 2 r (|a_t tan a_t| + |a_{t-1} tan a_{t-1}|), large near t = T where
    cos(a) is tiny; 0 where the clip at 0.999 decides beta_t.
    """
    if kind.value != "cosine":
        return np.zeros(T)
    a = _cosine_angles(T)
    r = np.cos(a[1:]) ** 2 / np.cos(a[:-1]) ** 2
    cond = 2 * r * (np.abs(a[1:] * np.tan(a[1:])) + np.abs(a[:-1] * np.tan(a[:-1])))
    return np.where(1.0 - r >= 0.999, 0.0, cond)


# ------------------------------------------------------------------------------- exact eps* of Gaussian data
class GaussianData:
    """x_0 ~ N(mean, std^2) independently per dimension: the data whose optimal denoiser is known exactly.

    With a = alpha_bar_t, m, s the data's mean and sd and r = a s^2 + 1 - a (Gaussian conditioning):
    eps*(x_t, t) = E[eps | x_t] = kappa (x_t - sqrt(a) m), kappa = sqrt(1 - a) / r;
    x_0*(x_t, t) = E[x_0 | x_t] = m + g (x_t - sqrt(a) m), g = sqrt(a) s^2 / r (finite at a = 0, where it is m);
    v* = sqrt(a) eps* - sqrt(1 - a) x_0* (derivation (o)). The minimum of E (target - output)^2 per dimension is
    E Var(target | x_t): a s^2 / r for eps, (1 - a) s^2 / r for x_0 and s^2 / r for v.
    The defaults keep |x_0| <= 1 with probability 1 - 6e-5, so x_0-clipping implementations are (nearly) unaffected.
    """

    def __init__(self, mean: float = 0.1, std: float = 0.25) -> None:
        self.mean, self.std = float(mean), float(std)

    def kappa(self, alpha_bar: npt.NDArray[np.float64] | np.float64) -> npt.NDArray[np.float64] | np.float64:
        """eps* = kappa (x_t - sqrt(a_t) m)."""
        return np.sqrt(1.0 - alpha_bar) / (alpha_bar * self.std**2 + 1.0 - alpha_bar)

    def gain(self, alpha_bar: npt.NDArray[np.float64] | np.float64) -> npt.NDArray[np.float64] | np.float64:
        """x_0* = m + gain (x_t - sqrt(a_t) m)."""
        return np.sqrt(alpha_bar) * self.std**2 / (alpha_bar * self.std**2 + 1.0 - alpha_bar)

    def slope(self, alpha_bar: float, prediction: Prediction = Prediction.EPS) -> float:
        """d output* / d x_t of the exact output in that parameterisation."""
        if prediction is Prediction.EPS:
            return float(self.kappa(np.float64(alpha_bar)))
        if prediction is Prediction.X0:
            return float(self.gain(np.float64(alpha_bar)))
        return float(np.sqrt(alpha_bar) * self.kappa(np.float64(alpha_bar))
                     - np.sqrt(1.0 - alpha_bar) * self.gain(np.float64(alpha_bar)))

    def loss_minimum(self, alpha_bar: float, prediction: Prediction = Prediction.EPS) -> float:
        """min over the output of E (target - output(x_t, t))^2 per dimension: E Var(target | x_t)."""
        r = alpha_bar * self.std**2 + 1.0 - alpha_bar
        spread = {Prediction.EPS: alpha_bar, Prediction.X0: 1.0 - alpha_bar, Prediction.V: 1.0}[prediction]
        return spread * self.std**2 / r

    def eps_model(self, alpha_bars: np.ndarray, timestep_base: int):
        """eps*(x, t) for an implementation's table alpha_bars [T] and timestep convention (t int64 [B])."""
        return self.model(alpha_bars, timestep_base, Prediction.EPS)

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        """x_0 draws of `shape` (float64)."""
        return rng.normal(self.mean, self.std, shape)

    def posterior_mean(self, x_t: np.ndarray, alpha_bar: float) -> np.ndarray:
        """E[x_0 | x_t] = m + g (x_t - sqrt(a) m) (derivation (p))."""
        return self.mean + self.gain(np.float64(alpha_bar)) * (np.asarray(x_t) - np.sqrt(alpha_bar) * self.mean)

    def posterior_variance(self, x_t: np.ndarray, alpha_bar: float) -> np.ndarray:
        """Var[x_0 | x_t] = (1 - a) s^2 / (a s^2 + 1 - a), the same at every x_t (derivation (p))."""
        r = alpha_bar * self.std**2 + 1.0 - alpha_bar
        return np.full(np.shape(x_t), (1.0 - alpha_bar) * self.std**2 / r)

    def posterior_cdf(self, x0: np.ndarray, x_t: np.ndarray, alpha_bar: float) -> np.ndarray:
        """P(x_0 <= x0 | x_t)."""
        return stats.norm.cdf(x0, self.posterior_mean(x_t, alpha_bar),
                              np.sqrt(self.posterior_variance(x_t, alpha_bar)))

    def sample_posterior(self, x_t: np.ndarray, alpha_bar: float, rng: np.random.Generator) -> np.ndarray:
        """One draw of q(x_0 | x_t) per element of x_t."""
        return self.posterior_mean(x_t, alpha_bar) + np.sqrt(self.posterior_variance(x_t, alpha_bar)) * \
            rng.standard_normal(np.shape(x_t))

    def model(self, alpha_bars: np.ndarray, timestep_base: int, prediction: Prediction):
        """The exact output (eps*, x_0* or v*) at (x, t) for an implementation's table alpha_bars [T] and timestep
        convention (t int64 [B]), computed in float64 and returned in x's dtype."""
        table = torch.tensor(alpha_bars, dtype=torch.float64)

        def exact_output(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            ab = table[(t.to(torch.int64) - timestep_base).cpu()].to(x.device).reshape((-1,) + (1,) * (x.ndim - 1))
            r = ab * self.std**2 + 1.0 - ab
            centred = x.to(torch.float64) - torch.sqrt(ab) * self.mean
            eps_star = torch.sqrt(1.0 - ab) / r * centred
            x0_star = self.mean + torch.sqrt(ab) * self.std**2 / r * centred
            out = {Prediction.EPS: eps_star, Prediction.X0: x0_star,
                   Prediction.V: torch.sqrt(ab) * eps_star - torch.sqrt(1.0 - ab) * x0_star}[prediction]
            return out.to(x.dtype)

        return exact_output


# ------------------------------------------------------------------------ exact eps* of two-Gaussian-mixture data
class GaussianMixtureData:
    """x_0 ~ w N(mu_1, s^2) + (1 - w) N(mu_2, s^2) independently per dimension: data whose posterior is not Gaussian
    but known exactly (derivation (p)).

    With a = alpha_bar_t, r = a s^2 + 1 - a, g = sqrt(a) s^2 / r and kappa = sqrt(1 - a) / r, q(x_0 | x_t) is
    pi_1 N(m_1, v) + (1 - pi_1) N(m_2, v): m_k = mu_k + g (x_t - sqrt(a) mu_k), v = (1 - a) s^2 / r and
    pi_1 = sigmoid(log(w / (1 - w)) + sqrt(a) (mu_1 - mu_2) (x_t - sqrt(a) (mu_1 + mu_2) / 2) / r). So
    x_0* = pi_1 m_1 + (1 - pi_1) m_2 = m_2 + pi_1 (1 - sqrt(a) g) (mu_1 - mu_2), eps* = kappa (x_t - sqrt(a) mu_2)
    - pi_1 kappa sqrt(a) (mu_1 - mu_2) (the weighted component eps*) and v* = sqrt(a) eps* - sqrt(1 - a) x_0*.
    The defaults (w = 0.3 at -0.5, 0.7 at 0.5, s = 0.15) make the posterior bimodal at mid t and keep |x_0| <= 1
    with probability 1 - 4e-4, so x_0-clipping implementations are nearly unaffected.
    """

    def __init__(self, weight: float = 0.3, means: tuple[float, float] = (-0.5, 0.5), std: float = 0.15) -> None:
        self.weight, self.means, self.std = float(weight), (float(means[0]), float(means[1])), float(std)

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        """x_0 draws of `shape` (float64)."""
        first = rng.random(shape) < self.weight
        return np.where(first, self.means[0], self.means[1]) + self.std * rng.standard_normal(shape)

    def posterior_components(self, x_t: np.ndarray, alpha_bar: float
                             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """(pi_1, m_1, m_2, v) of q(x_0 | x_t) = pi_1 N(m_1, v) + (1 - pi_1) N(m_2, v) (class docstring)."""
        x_t = np.asarray(x_t, dtype=np.float64)
        (mu_1, mu_2), root = self.means, np.sqrt(alpha_bar)
        r = alpha_bar * self.std**2 + 1.0 - alpha_bar
        gain = root * self.std**2 / r
        logit = (np.log(self.weight / (1.0 - self.weight))
                 + root * (mu_1 - mu_2) * (x_t - root * (mu_1 + mu_2) / 2) / r)
        return (special.expit(logit), mu_1 + gain * (x_t - root * mu_1), mu_2 + gain * (x_t - root * mu_2),
                (1.0 - alpha_bar) * self.std**2 / r)

    def posterior_mean(self, x_t: np.ndarray, alpha_bar: float) -> np.ndarray:
        """E[x_0 | x_t] = pi_1 m_1 + (1 - pi_1) m_2."""
        pi_1, m_1, m_2, _ = self.posterior_components(x_t, alpha_bar)
        return m_2 + pi_1 * (m_1 - m_2)

    def posterior_variance(self, x_t: np.ndarray, alpha_bar: float) -> np.ndarray:
        """Var[x_0 | x_t] = v + pi_1 (1 - pi_1) (m_1 - m_2)^2 (a mixture's variance)."""
        pi_1, m_1, m_2, v = self.posterior_components(x_t, alpha_bar)
        return v + pi_1 * (1.0 - pi_1) * (m_1 - m_2) ** 2

    def posterior_cdf(self, x0: np.ndarray, x_t: np.ndarray, alpha_bar: float) -> np.ndarray:
        """P(x_0 <= x0 | x_t) = pi_1 Phi((x0 - m_1) / sqrt(v)) + (1 - pi_1) Phi((x0 - m_2) / sqrt(v))."""
        pi_1, m_1, m_2, v = self.posterior_components(x_t, alpha_bar)
        sd = np.sqrt(v)
        return pi_1 * stats.norm.cdf(x0, m_1, sd) + (1.0 - pi_1) * stats.norm.cdf(x0, m_2, sd)

    def sample_posterior(self, x_t: np.ndarray, alpha_bar: float, rng: np.random.Generator) -> np.ndarray:
        """One draw of q(x_0 | x_t) per element of x_t: the component by its posterior weight, then its Gaussian."""
        pi_1, m_1, m_2, v = self.posterior_components(x_t, alpha_bar)
        first = rng.random(np.shape(pi_1)) < pi_1
        return np.where(first, m_1, m_2) + np.sqrt(v) * rng.standard_normal(np.shape(pi_1))

    def model(self, alpha_bars: np.ndarray, timestep_base: int, prediction: Prediction):
        """The exact output (eps*, x_0* or v*) at (x, t) for an implementation's table alpha_bars [T] and timestep
        convention (t int64 [B]), computed in float64 and returned in x's dtype."""
        table = torch.tensor(alpha_bars, dtype=torch.float64)
        (mu_1, mu_2), log_odds = self.means, float(np.log(self.weight / (1.0 - self.weight)))

        def exact_output(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            ab = table[(t.to(torch.int64) - timestep_base).cpu()].to(x.device).reshape((-1,) + (1,) * (x.ndim - 1))
            root, r = torch.sqrt(ab), ab * self.std**2 + 1.0 - ab
            x64 = x.to(torch.float64)
            pi_1 = torch.sigmoid(log_odds + root * (mu_1 - mu_2) * (x64 - root * (mu_1 + mu_2) / 2) / r)
            gain, kappa = root * self.std**2 / r, torch.sqrt(1.0 - ab) / r
            x0_star = mu_2 + gain * (x64 - root * mu_2) + pi_1 * (1.0 - root * gain) * (mu_1 - mu_2)
            eps_star = kappa * (x64 - root * mu_2) - pi_1 * kappa * root * (mu_1 - mu_2)
            out = {Prediction.EPS: eps_star, Prediction.X0: x0_star,
                   Prediction.V: root * eps_star - torch.sqrt(1.0 - ab) * x0_star}[prediction]
            return out.to(x.dtype)

        return exact_output
