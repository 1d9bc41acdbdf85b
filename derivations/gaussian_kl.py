"""(c) KL(N(mu_1, sigma_1^2) || N(mu_2, sigma_2^2)) from its integral definition; the diagonal case.

The seed tutorial quotes the closed form of the KL divergence between two Gaussians (the formula after
its eq. 58) and the DDPM loss is built from it (Ho et al. 2020, eq. 5). Here it is derived rather than
quoted: the log-ratio of the two densities is a quadratic in x, so its expectation needs only the first
two moments of N(mu_1, sigma_1^2), and those are computed by SymPy as real integrals over the line.
The d-dimensional statement with diagonal covariances follows because the densities factorise over
coordinates; it is checked against the seed's matrix formula (log-determinants, trace, quadratic form)
for d = 3.

Exports
    MEAN_1, VAR_1, MEAN_2, VAR_2   symbols (mu_1 real, sigma_1^2 > 0, ...)
    NORMAL_KL                      1/2 (log(VAR_2/VAR_1) - 1 + VAR_1/VAR_2 + (MEAN_1 - MEAN_2)^2/VAR_2)
    normal_kl(mean1, var1, mean2, var2)             float64, broadcasts, 50-digit evaluation
    diagonal_normal_kl(mean1, var1, mean2, var2)    1-D arrays -> float64 sum over coordinates
    central_moment(k, var)         E[(x - mean)^k] under N(mean, var), from sp.integrate (cached)
    normal_expectation(expr, x, mean, var)          E[expr] for expr polynomial in x (used by (e), (f), (g))
"""

from __future__ import annotations

import functools

import mpmath
import numpy as np
import sympy as sp

from derivations.chain import Check, Derivation, Step
from derivations.numeric import DIGITS, float64_function
from derivations.symbols import normal_density, normal_log_density

MEAN_1 = sp.Symbol(r"\mu_1", real=True)
VAR_1 = sp.Symbol(r"\sigma_1^2", positive=True)
MEAN_2 = sp.Symbol(r"\mu_2", real=True)
VAR_2 = sp.Symbol(r"\sigma_2^2", positive=True)

_x = sp.Symbol("x", real=True)
_m = sp.Symbol("m", real=True)
_v = sp.Symbol("v", positive=True)


@functools.cache
def _central_moment_in_v(k: int) -> sp.Expr:
    """E[(x - m)^k] under N(m, v): the integral of (x - m)^k N(x; m, v) over the line, by SymPy."""
    return sp.integrate(_x**k * normal_density(_x, 0, _v), (_x, -sp.oo, sp.oo))


def central_moment(k: int, var: sp.Expr) -> sp.Expr:
    """E[(x - mean)^k] for x ~ N(mean, var), integrated by SymPy once for a symbol and substituted."""
    return _central_moment_in_v(k).subs(_v, var)


MAX_DEGREE = 6


def normal_expectation(expr: sp.Expr, x: sp.Symbol, mean: sp.Expr, var: sp.Expr) -> sp.Expr:
    """E[expr] for x ~ N(mean, var), where expr is a polynomial in x (coefficients may be anything).

    Taylor-expand the polynomial about the mean and integrate term by term (linearity):
    E[f(x)] = sum_k f^(k)(mean)/k! E[(x - mean)^k], each central moment a real integral. Exact for
    polynomials; an expression whose derivatives do not vanish by order MAX_DEGREE is rejected.
    """
    total = sp.Integer(0)
    derivative = expr
    for k in range(MAX_DEGREE + 1):
        if derivative == 0:
            return total
        total += derivative.subs(x, mean) / sp.factorial(k) * central_moment(k, var)
        derivative = sp.diff(derivative, x)
    raise ValueError(f"normal_expectation needs a polynomial of degree <= {MAX_DEGREE} in {x}, got {expr}")


def _integral_latex(weight: str) -> str:
    return rf"\int_{{-\infty}}^{{\infty}} {weight}\,\mathcal{{N}}(x;\mu_1,\sigma_1^2)\,dx"


# The log-ratio inside the KL integral, expanded as a polynomial in x.
_LOG_RATIO = sp.expand(normal_log_density(_x, MEAN_1, VAR_1) - normal_log_density(_x, MEAN_2, VAR_2))

# The export is the derived expression: E_1[log N_1 / N_2] integrated through the moments of N_1 (the steps below),
# written through the mean difference Delta = mu_1 - mu_2 (substituting mu_1 = mu_2 + Delta leaves no mu_2: the KL
# depends on the means only through their difference) with its logarithms combined.
_DELTA = sp.Symbol(r"\Delta", real=True)
_KL_DERIVED = normal_expectation(_LOG_RATIO, _x, MEAN_1, VAR_1)
_KL_EXPANDED = sp.expand(_KL_DERIVED.subs(MEAN_1, MEAN_2 + _DELTA))
_LOG_PART = sp.Add(*(term for term in sp.Add.make_args(_KL_EXPANDED) if term.has(sp.log)))
_KL_IN_DELTA = sp.collect(_KL_EXPANDED - _LOG_PART, _DELTA) + sp.logcombine(2 * _LOG_PART, force=True) / 2
NORMAL_KL = _KL_IN_DELTA.subs(_DELTA, MEAN_1 - MEAN_2)
NORMAL_KL_PAPER = sp.Rational(1, 2) * (
    sp.log(VAR_2 / VAR_1) - 1 + VAR_1 / VAR_2 + (MEAN_1 - MEAN_2) ** 2 / VAR_2
)

_KL_LATEX = r"D_{\mathrm{KL}}\left(\mathcal{N}(\mu_1,\sigma_1^2)\,\|\,\mathcal{N}(\mu_2,\sigma_2^2)\right)"

normal_kl = float64_function(NORMAL_KL, (MEAN_1, VAR_1, MEAN_2, VAR_2), "normal_kl")
_normal_kl_mp = sp.lambdify((MEAN_1, VAR_1, MEAN_2, VAR_2), NORMAL_KL, modules="mpmath")


def diagonal_normal_kl(mean1, var1, mean2, var2) -> float:
    """KL(N(mean1, diag var1) || N(mean2, diag var2)) = sum_i normal_kl over coordinates (1-D inputs).

    Each coordinate and the sum are evaluated at 50 digits; only the total is rounded to float64.
    """
    arrays = [np.asarray(a, dtype=np.float64) for a in (mean1, var1, mean2, var2)]
    if any(a.ndim != 1 for a in arrays) or len({a.shape for a in arrays}) != 1:
        shapes = ", ".join(str(a.shape) for a in arrays)
        raise ValueError(f"diagonal_normal_kl takes four 1-D arrays of one length, got shapes {shapes}")
    with mpmath.workdps(DIGITS):
        total = mpmath.mpf(0)
        for m1, v1, m2, v2 in zip(*arrays, strict=True):
            total += _normal_kl_mp(*(mpmath.mpf(float(v)) for v in (m1, v1, m2, v2)))
        return float(total)


# The diagonal multivariate case, d = 3.
DIAGONAL_DIMENSION = 3
_xs = sp.symbols("x_1:4", real=True)
_m1s = sp.symbols(r"\mu_{1\,1:4}", real=True)
_v1s = sp.symbols(r"\sigma^2_{1\,1:4}", positive=True)
_m2s = sp.symbols(r"\mu_{2\,1:4}", real=True)
_v2s = sp.symbols(r"\sigma^2_{2\,1:4}", positive=True)


def seed_matrix_kl(mu_x: sp.Matrix, cov_x: sp.Matrix, mu_y: sp.Matrix, cov_y: sp.Matrix) -> sp.Expr:
    """The seed's formula 1/2[log|S_y|/|S_x| - d + tr(S_y^-1 S_x) + (mu_y - mu_x)^T S_y^-1 (mu_y - mu_x)]."""
    d = mu_x.shape[0]
    diff = mu_y - mu_x
    quadratic = (diff.T * cov_y.inv() * diff)[0, 0]
    return sp.Rational(1, 2) * (sp.log(cov_y.det() / cov_x.det()) - d + (cov_y.inv() * cov_x).trace() + quadratic)


@functools.cache
def derivation() -> Derivation:
    """The steps from the integral definition to the closed form, then to d diagonal dimensions."""
    m1, v1, m2, v2 = MEAN_1, VAR_1, MEAN_2, VAR_2
    kl_derived = normal_expectation(_LOG_RATIO, _x, m1, v1)  # the moments are integrated here, not at import
    n1 = normal_density(_x, m1, v1)
    n2 = normal_density(_x, m2, v2)
    density_1 = sp.Function(r"\mathcal{N}_1")(_x)
    density_2 = sp.Function(r"\mathcal{N}_2")(_x)
    r = sp.Symbol("r", positive=True)
    f = r - 1 - sp.log(r)
    (stationary,) = sp.solve(sp.diff(f, r), r)

    # d = 3: the log-ratio of the product densities, and its expectation under the first product.
    log_ratios = [
        normal_log_density(xi, a, b) - normal_log_density(xi, c, e)
        for xi, a, b, c, e in zip(_xs, _m1s, _v1s, _m2s, _v2s, strict=True)
    ]
    product_log_ratio = sp.log(
        sp.Mul(*(normal_density(xi, a, b) for xi, a, b in zip(_xs, _m1s, _v1s, strict=True)))
        / sp.Mul(*(normal_density(xi, c, e) for xi, c, e in zip(_xs, _m2s, _v2s, strict=True)))
    )
    # E over the product density: the i-th term integrates against N_i, every other coordinate's
    # density integrates to its zeroth moment (= 1, computed).
    coordinate_terms = []
    for i, (xi, a, b) in enumerate(zip(_xs, _m1s, _v1s, strict=True)):
        others = sp.Mul(*(central_moment(0, _v1s[j]) for j in range(DIAGONAL_DIMENSION) if j != i))
        coordinate_terms.append(normal_expectation(log_ratios[i], xi, a, b) * others)
    diagonal_derived = sp.Add(*coordinate_terms)
    diagonal_sum = sp.Add(
        *(
            NORMAL_KL.subs({m1: a, v1: b, m2: c, v2: e}, simultaneous=True)
            for a, b, c, e in zip(_m1s, _v1s, _m2s, _v2s, strict=True)
        )
    )
    seed_form = seed_matrix_kl(sp.Matrix(_m1s), sp.diag(*_v1s), sp.Matrix(_m2s), sp.diag(*_v2s))

    steps = (
        Step(
            "Definition: the two Gaussian densities being compared.",
            sp.Tuple(density_1, density_2),
            sp.Tuple(n1, n2),
            Check.DEFINITION,
        ),
        Step(
            "Definition: the KL divergence is the expectation, under the first Gaussian, of the log-ratio "
            "of the two densities.",
            sp.Symbol("D"),
            sp.Integral(density_1 * sp.log(density_1 / density_2), (_x, -sp.oo, sp.oo)),
            Check.DEFINITION,
            lhs_latex=_KL_LATEX,
        ),
        Step(
            "Take logs of the densities: the log-ratio is a quadratic polynomial in x.",
            sp.log(n1 / n2),
            _LOG_RATIO,
            lhs_latex=r"\log\frac{\mathcal{N}(x;\mu_1,\sigma_1^2)}{\mathcal{N}(x;\mu_2,\sigma_2^2)}",
        ),
        Step(
            "Zeroth central moment, integrated by SymPy over the real line: the density is normalised.",
            central_moment(0, v1),
            sp.Integer(1),
            lhs_latex=_integral_latex("1"),
        ),
        Step(
            "First central moment, integrated by SymPy.",
            central_moment(1, v1),
            sp.Integer(0),
            lhs_latex=_integral_latex(r"(x - \mu_1)"),
        ),
        Step(
            "Second central moment, integrated by SymPy.",
            central_moment(2, v1),
            v1,
            lhs_latex=_integral_latex(r"(x - \mu_1)^2"),
        ),
        Step(
            "Taylor-expand the quadratic log-ratio g(x) about mu_1 and integrate term by term: "
            "E[g] = g(mu_1) + g'(mu_1) E[x - mu_1] + g''(mu_1)/2 E[(x - mu_1)^2].",
            kl_derived,
            _LOG_RATIO.subs(_x, m1) + sp.diff(_LOG_RATIO, _x, 2) / 2 * v1,
            lhs_latex=_KL_LATEX,
        ),
        Step(
            "With mu_1 = mu_2 + Delta no mu_2 is left: the KL depends on the means only through "
            "Delta = mu_1 - mu_2 ...",
            sp.diff(sp.expand(kl_derived.subs(m1, m2 + _DELTA)), m2),
            0,
            lhs_latex=r"\partial_{\mu_2} D_{\mathrm{KL}}\big|_{\mu_1 = \mu_2 + \Delta}",
        ),
        Step(
            "... and collected it is the textbook form (the export NORMAL_KL is the derived expression itself).",
            NORMAL_KL,
            NORMAL_KL_PAPER,
            lhs_latex=_KL_LATEX,
        ),
        Step(
            "Non-negativity: with r = sigma_1^2/sigma_2^2 the KL is f(r)/2 plus a non-negative square term, "
            "where f(r) = r - 1 - log r.",
            NORMAL_KL,
            f.subs(r, v1 / v2) / 2 + (m1 - m2) ** 2 / (2 * v2),
            lhs_latex=_KL_LATEX,
        ),
        Step(
            "Differentiate f (SymPy's diff) ...",
            sp.diff(f, r),
            1 - 1 / r,
            lhs_latex=r"f'(r)",
        ),
        Step(
            "... whose only root (SymPy's solve) is r = 1 ...",
            stationary,
            sp.Integer(1),
            lhs_latex=r"r^{*}",
        ),
        Step(
            "... where f(1) = 0.",
            f.subs(r, stationary),
            sp.Integer(0),
            lhs_latex=r"f(r^{*})",
        ),
        Step(
            "... and f''(r) = 1/r^2 > 0, so f(r) >= 0 with equality only at r = 1: the KL is zero exactly when "
            "the means and the variances agree.",
            sp.diff(f, r, 2),
            1 / r**2,
            lhs_latex=r"f''(r)",
        ),
        Step(
            "d = 3 with diagonal covariances: the log-density of a product is the sum of the coordinate "
            "log-densities, so the log-ratio is a sum of coordinate log-ratios.",
            product_log_ratio,
            sp.Add(*log_ratios),
            lhs_latex=(
                r"\log\frac{\prod_i \mathcal{N}(x_i;\mu_{1i},\sigma^2_{1i})}"
                r"{\prod_i \mathcal{N}(x_i;\mu_{2i},\sigma^2_{2i})}"
            ),
        ),
        Step(
            "Integrating term by term, every other coordinate integrates to its zeroth moment (1): "
            "the KL is the sum of the coordinate KLs.",
            diagonal_derived,
            diagonal_sum,
            lhs_latex=r"D_{\mathrm{KL}}\left(\mathcal{N}(\mu_1,\Sigma_1)\,\|\,\mathcal{N}(\mu_2,\Sigma_2)\right)",
        ),
    )
    results = (
        Step(
            "KL between two scalar Gaussians, derived from its integral definition.",
            NORMAL_KL,
            NORMAL_KL_PAPER,
            lhs_latex=_KL_LATEX,
        ),
        Step(
            "The seed's matrix formula 1/2[log|S_y|/|S_x| - d + tr(S_y^-1 S_x) + (mu_y - mu_x)^T S_y^-1 "
            "(mu_y - mu_x)] for diagonal covariances (d = 3) equals the sum of the coordinate KLs.",
            seed_form,
            diagonal_sum,
            lhs_latex=(
                r"\frac{1}{2}\left[\log\frac{|\Sigma_2|}{|\Sigma_1|} - d + \operatorname{tr}(\Sigma_2^{-1}\Sigma_1)"
                r" + (\mu_2-\mu_1)^{\top}\Sigma_2^{-1}(\mu_2-\mu_1)\right]"
            ),
        ),
    )
    return Derivation(
        key="c",
        title="KL divergence between Gaussians",
        module="derivations.gaussian_kl",
        summary=(
            "The KL divergence between two scalar Gaussians is derived from its definition as the expected "
            "log-ratio of the densities. The log-ratio is a quadratic polynomial in x, so its expectation "
            "under the first Gaussian needs only the zeroth, first and second central moments, which SymPy obtains as "
            "integrals over the real line; collecting terms gives 1/2 (log(sigma_2^2/sigma_1^2) - 1 + "
            "sigma_1^2/sigma_2^2 + (mu_1 - mu_2)^2/sigma_2^2). Writing the variance ratio as r shows the KL is "
            "f(r)/2 with f(r) = r - 1 - log r convex and zero only at r = 1, plus a square, so it is "
            "non-negative and vanishes only when the Gaussians coincide. For diagonal covariances the densities "
            "factorise, the log-ratio is a sum over coordinates and the KL is the sum of the coordinate KLs; for "
            "d = 3 this sum equals the seed's matrix formula with log-determinants, trace and quadratic form."
        ),
        steps=steps,
        results=results,
    )


__all__ = [
    "MEAN_1",
    "VAR_1",
    "MEAN_2",
    "VAR_2",
    "NORMAL_KL",
    "NORMAL_KL_PAPER",
    "DIAGONAL_DIMENSION",
    "normal_kl",
    "diagonal_normal_kl",
    "central_moment",
    "normal_expectation",
    "derivation",
]
