"""(t) The decoder's interior bin: the exact error of "density times bin width", its expansion, sign and mean.

The discretised decoder of Ho et al. (2020), eq. 13, gives an interior bin of half-width h around x (h = 1/255 for
data scaled to [-1, 1]) the probability P = Phi((x + h - mu)/sigma) - Phi((x - h - mu)/sigma), and L_0 = -log P.
Reports often quote L_0 ~ -log N(x; mu, sigma^2) - log 2h (the density at the bin's centre times its width). With
delta = (x - mu)/sigma and eta = h/sigma this module derives, for every x, every mu, every sigma > 0 and h > 0 (so
for any decoder mean and any fixed or learned per-pixel sigma):

1. the exact split -log P = -log N(x; mu, sigma^2) - log 2h + E(delta, eta), with
   E = -log[(Phi(delta + eta) - Phi(delta - eta)) / (2 eta phi(delta))], even in delta;
2. its expansion as eta -> 0 at fixed delta, from the Taylor series of the bin integral of phi:
   E = -eta^2 (delta^2 - 1)/6 + eta^4 (delta^4 + 4 delta^2 - 2)/180 + O(eta^6) (not uniform in delta: the
   expansion parameter is eta (1 + |delta|));
3. its sign: E > 0 (the approximation understates the cost) for |delta| <= 1 and every eta > 0; E < 0 (it
   overstates the cost) for |delta| > 1 and every eta up to the positive root of log cosh(delta eta) = eta^2 / 2;
4. its mean under delta ~ N(0, s^2), term by term to order eta^4: -eta^2 (s^2 - 1)/6 + eta^4 (3 s^4 + 4 s^2 - 2)/180;
   a calibrated decoder (s = 1) loses the eta^2 term: eta^4 / 36.

Exports (symbols DELTA delta, ETA eta, SPREAD s):
    BIN_PROBABILITY            Phi(delta + eta) - Phi(delta - eta)
    INTERIOR_BIN_ERROR         E(delta, eta), exact
    LEADING_TERM, NEXT_TERM    -eta^2 (delta^2 - 1)/6 and eta^4 (delta^4 + 4 delta^2 - 2)/180
    EXPECTED_ERROR_SERIES      E_{delta ~ N(0, s^2)}[LEADING_TERM + NEXT_TERM]
Numeric (float64, broadcasting, evaluated at 50 digits):
    interior_bin_error(delta, eta)            the exact E, through erfc of |delta| (no cancellation in the tails)
    interior_bin_error_leading(delta, eta)    LEADING_TERM
    interior_bin_error_two_terms(delta, eta)  LEADING_TERM + NEXT_TERM
    expected_interior_bin_error_series(s, eta)  EXPECTED_ERROR_SERIES
"""

from __future__ import annotations

import functools

import sympy as sp

from derivations.chain import Check, Derivation, Step
from derivations.gaussian_kl import normal_expectation
from derivations.labels import named_step
from derivations.numeric import float64_function
from derivations.symbols import normal_log_density

DELTA = sp.Symbol(r"\delta", real=True)
ETA = sp.Symbol(r"\eta", positive=True)
SPREAD = sp.Symbol("s", positive=True)
_DELTA_NONNEG = sp.Symbol(r"\delta", nonnegative=True)
_x, _mu, _y = sp.Symbol("x", real=True), sp.Symbol(r"\mu", real=True), sp.Symbol("y", real=True)
_sigma, _h = sp.Symbol(r"\sigma", positive=True), sp.Symbol("h", positive=True)
_s = sp.Symbol("s", real=True)  # the offset from the bin's centre, standardised: u = delta + s
_z = sp.Symbol("z", real=True)
TAYLOR_ORDER = 6  # the integrand is expanded to s^5 and E to eta^5: the first omitted term is O(eta^6)


def std_normal_cdf(z: sp.Expr) -> sp.Expr:
    """Phi(z) = (1 + erf(z / sqrt 2)) / 2."""
    return (1 + sp.erf(z / sp.sqrt(2))) / 2


def std_normal_pdf(z: sp.Expr) -> sp.Expr:
    """phi(z) = exp(-z^2/2) / sqrt(2 pi)."""
    return sp.exp(-z**2 / 2) / sp.sqrt(2 * sp.pi)


BIN_PROBABILITY = std_normal_cdf(DELTA + ETA) - std_normal_cdf(DELTA - ETA)
_RATIO = BIN_PROBABILITY / (2 * ETA * std_normal_pdf(DELTA))  # R = P / (2 eta phi(delta))
INTERIOR_BIN_ERROR = -sp.log(_RATIO)
LEADING_TERM = -ETA**2 * (DELTA**2 - 1) / 6
NEXT_TERM = ETA**4 * (DELTA**4 + 4 * DELTA**2 - 2) / 180

# The same probability through erfc at |delta| (P is even in delta, and erfc keeps the tails' relative precision).
_TAIL_PROBABILITY = (sp.erfc((_DELTA_NONNEG - ETA) / sp.sqrt(2)) - sp.erfc((_DELTA_NONNEG + ETA) / sp.sqrt(2))) / 2
_ERROR_TAIL_FORM = -sp.log(_TAIL_PROBABILITY / (2 * ETA * std_normal_pdf(_DELTA_NONNEG)))

# Undetermined positive bin probability (any P > 0: the integrand is positive on an interval of positive length).
_P_ANY = sp.Function("P", positive=True)(DELTA, ETA)

# The Taylor series of phi(delta + s) / phi(delta) = exp(-delta s - s^2 / 2): the Hermite polynomials He_n(delta).
_HERMITE = (1, DELTA, DELTA**2 - 1, DELTA**3 - 3 * DELTA, DELTA**4 - 6 * DELTA**2 + 3, DELTA**5 - 10 * DELTA**3
            + 15 * DELTA)
_HERMITE_SERIES = sp.Add(*(_HERMITE[n] * (-_s) ** n / sp.factorial(n) for n in range(TAYLOR_ORDER)))
_A2 = (DELTA**2 - 1) / 6  # R = 1 + A2 eta^2 + A4 eta^4 + O(eta^6)
_A4 = (DELTA**4 - 6 * DELTA**2 + 3) / 120

# Sign: F(eta) = P - 2 eta phi(delta) has E > 0 exactly when F < 0; D(z) = z^2/2 - log cosh z >= 0.
_F = BIN_PROBABILITY - 2 * ETA * std_normal_pdf(DELTA)
_D = _z**2 / 2 - sp.log(sp.cosh(_z))
_EXPONENT = -ETA**2 / 2 + sp.log(sp.cosh(DELTA * ETA))  # F'(eta) = 2 phi(delta) (exp(exponent) - 1)

EXPECTED_ERROR_SERIES = sp.expand(normal_expectation(LEADING_TERM + NEXT_TERM, DELTA, 0, SPREAD**2))

interior_bin_error = float64_function(
    _ERROR_TAIL_FORM.subs(_DELTA_NONNEG, sp.Abs(DELTA)), (DELTA, ETA), "interior_bin_error"
)
interior_bin_error_leading = float64_function(LEADING_TERM, (DELTA, ETA), "interior_bin_error_leading")
interior_bin_error_two_terms = float64_function(LEADING_TERM + NEXT_TERM, (DELTA, ETA), "interior_bin_error_two_terms")
expected_interior_bin_error_series = float64_function(
    EXPECTED_ERROR_SERIES, (SPREAD, ETA), "expected_interior_bin_error_series"
)


def _definition_steps() -> tuple[Step, ...]:
    density = sp.exp(normal_log_density(_y, _mu, _sigma**2))
    return (
        Step(
            "Definition: the decoder's cost of an interior bin (Ho et al. eq. 13): minus the log of the Gaussian "
            "N(mu, sigma^2) integrated over the bin [x - h, x + h] around the pixel value x.",
            sp.Symbol("L_0"),
            -sp.log(sp.Integral(density, (_y, _x - _h, _x + _h))),
            Check.DEFINITION,
            lhs_latex=r"L_0^{\mathrm{bin}}",
        ),
        Step(
            "Definitions: the standardised distance of x from the decoder's mean, and the standardised half-width.",
            sp.Tuple(DELTA, ETA),
            sp.Tuple((_x - _mu) / _sigma, _h / _sigma),
            Check.DEFINITION,
        ),
        Step(
            "Definition: the error E of density times width, -log P = -log N(x; mu, sigma^2) - log 2h + E (as "
            "the next steps show), E = -log of the bin probability over 2 eta phi(delta).",
            sp.Symbol("E"),
            INTERIOR_BIN_ERROR,
            Check.DEFINITION,
            lhs_latex=r"E(\delta, \eta)",
        ),
    )


def _exact_steps() -> tuple[Step, ...]:
    density = sp.exp(normal_log_density(_y, _mu, _sigma**2))
    standardise = {DELTA: (_x - _mu) / _sigma, ETA: _h / _sigma}
    return (
        named_step(
            "The bin integral, integrated by SymPy: a difference of normal CDFs at the standardised bin edges.",
            r"\int_{x-h}^{x+h} \mathcal{N}(y;\mu,\sigma^2)\,dy",
            sp.integrate(density, (_y, _x - _h, _x + _h)),
            BIN_PROBABILITY.subs(standardise, simultaneous=True),
        ),
        named_step(
            "Density times width in the standardised variables: N(x; mu, sigma^2) 2h = 2 eta phi(delta) (the 1/sigma "
            "of the density and the sigma of h = eta sigma cancel).",
            r"-\log \mathcal{N}(x;\mu,\sigma^2) - \log 2h",
            -normal_log_density(_x, _mu, _sigma**2) - sp.log(2 * _h),
            -sp.log(2 * ETA * std_normal_pdf(DELTA)).subs(standardise, simultaneous=True),
        ),
        Step(
            "So, for any positive bin probability P (the integrand is positive on an interval of positive length), "
            "-log P = (density times width) + E: the split is exact, for every x, mu, sigma > 0 and h > 0.",
            -sp.log(_P_ANY),
            -sp.log(2 * ETA * std_normal_pdf(DELTA)) - sp.log(_P_ANY / (2 * ETA * std_normal_pdf(DELTA))),
            lhs_latex=r"-\log P(\delta, \eta)",
        ),
        Step(
            "P is even in delta (erf is odd): a bin at -delta from the mean is as likely as one at +delta, so E is "
            "even in delta too.",
            BIN_PROBABILITY.subs(DELTA, -DELTA),
            BIN_PROBABILITY,
            lhs_latex=r"P(-\delta, \eta)",
        ),
        Step(
            "For delta >= 0 the same P through erfc = 1 - erf, the form the numeric export evaluates at |delta| (no "
            "cancellation of two CDF values near 1 in the tails).",
            BIN_PROBABILITY.subs(DELTA, _DELTA_NONNEG),
            _TAIL_PROBABILITY,
            Check.RATIONAL,
            domains=((_DELTA_NONNEG, (sp.Integer(0), sp.Integer(6))), (ETA, (sp.Rational(1, 100), sp.Integer(2)))),
            lhs_latex=r"P(\delta, \eta)\big|_{\delta \geq 0}",
            reason="SymPy's simplify does not rewrite erfc as 1 - erf to cancel the two forms",
        ),
    )


def _expansion_steps() -> tuple[Step, ...]:
    integrand = std_normal_pdf(DELTA + _s) / std_normal_pdf(DELTA)
    taylor = sp.series(sp.exp(-DELTA * _s - _s**2 / 2), _s, 0, TAYLOR_ORDER).removeO()
    integrated = sp.integrate(taylor, (_s, -ETA, ETA)) / (2 * ETA)
    log_series = sp.series(-sp.log(1 + _A2 * ETA**2 + _A4 * ETA**4), ETA, 0, TAYLOR_ORDER).removeO()
    return (
        Step(
            "Expansion: with u = delta + s, P = int_{-eta}^{eta} phi(delta + s) ds, and phi(delta + s) / phi(delta) "
            "= exp(-delta s - s^2/2), so R = P / (2 eta phi(delta)) is the mean of that exponential over the bin.",
            integrand,
            sp.exp(-DELTA * _s - _s**2 / 2),
            lhs_latex=r"\varphi(\delta + s) / \varphi(\delta)",
        ),
        named_step(
            "Its Taylor polynomial in s to s^5 (SymPy's series): the Hermite polynomials He_n(delta) (-s)^n / n!; "
            "the remainder is O(s^6) on the bin.",
            r"\left[e^{-\delta s - s^2/2}\right]_{s^{\leq 5}}",
            taylor,
            _HERMITE_SERIES,
        ),
        named_step(
            "Integrated term by term over [-eta, eta] and divided by 2 eta, the odd powers vanish: "
            "R = 1 + eta^2 (delta^2 - 1)/6 + eta^4 He_4(delta)/120 + O(eta^6).",
            r"\frac{1}{2\eta}\int_{-\eta}^{\eta} \left[e^{-\delta s - s^2/2}\right]_{s^{\leq 5}} ds",
            integrated,
            1 + _A2 * ETA**2 + _A4 * ETA**4,
        ),
        named_step(
            "Cross-check on the exact ratio: SymPy's series of P / (2 eta phi(delta)) in eta agrees to O(eta^6).",
            r"\left[P / (2\eta\varphi(\delta))\right]_{\eta^{\leq 5}}",
            sp.series(_RATIO, ETA, 0, TAYLOR_ORDER).removeO(),
            1 + _A2 * ETA**2 + _A4 * ETA**4,
        ),
        named_step(
            "E = -log R: the series of -log(1 + a eta^2 + b eta^4) is -a eta^2 + (a^2/2 - b) eta^4 + O(eta^6) ...",
            r"\left[-\log(1 + a\eta^2 + b\eta^4)\right]_{\eta^{\leq 5}}",
            log_series,
            -_A2 * ETA**2 + (_A2**2 / 2 - _A4) * ETA**4,
        ),
        Step(
            "... which is the leading term -eta^2 (delta^2 - 1)/6 and the next, eta^4 (delta^4 + 4 delta^2 - 2)/180.",
            -_A2 * ETA**2 + (_A2**2 / 2 - _A4) * ETA**4,
            LEADING_TERM + NEXT_TERM,
            lhs_latex=r"-a\eta^2 + (a^2/2 - b)\eta^4",
        ),
    )


def _sign_steps() -> tuple[Step, ...]:
    return (
        Step(
            "Sign: write F(eta) = P - 2 eta phi(delta); then R = 1 + F / (2 eta phi(delta)), so E > 0 exactly when "
            "F < 0 (the approximation understates the cost) and E < 0 exactly when F > 0.",
            _RATIO,
            1 + _F / (2 * ETA * std_normal_pdf(DELTA)),
            lhs_latex=r"R(\delta, \eta)",
        ),
        Step("F starts at zero: an empty bin.", _F.subs(ETA, 0), sp.Integer(0), lhs_latex=r"F(0)"),
        named_step(
            "Its derivative in eta (the fundamental theorem of calculus at both edges) ...",
            r"F'(\eta)",
            sp.diff(_F, ETA),
            std_normal_pdf(DELTA + ETA) + std_normal_pdf(DELTA - ETA) - 2 * std_normal_pdf(DELTA),
        ),
        Step(
            "... where phi(delta + eta) + phi(delta - eta) = 2 phi(delta) exp(-eta^2/2) cosh(delta eta), so "
            "F'(eta) = 2 phi(delta) (exp(-eta^2/2 + log cosh(delta eta)) - 1).",
            std_normal_pdf(DELTA + ETA) + std_normal_pdf(DELTA - ETA),
            2 * std_normal_pdf(DELTA) * sp.exp(-ETA**2 / 2) * (sp.exp(DELTA * ETA) + sp.exp(-DELTA * ETA)) / 2,
            lhs_latex=r"\varphi(\delta + \eta) + \varphi(\delta - \eta)",
        ),
        Step(
            "The exponent splits as -(1 - delta^2) eta^2/2 - D(delta eta), with D(z) = z^2/2 - log cosh z ...",
            _EXPONENT,
            -(1 - DELTA**2) * ETA**2 / 2 - _D.subs(_z, DELTA * ETA),
            lhs_latex=r"-\eta^2/2 + \log\cosh(\delta\eta)",
        ),
        Step("... and D(0) = 0 ...", _D.subs(_z, 0), sp.Integer(0), lhs_latex=r"D(0)"),
        Step("... D'(0) = 0 ...", sp.diff(_D, _z).subs(_z, 0), sp.Integer(0), lhs_latex=r"D'(0)"),
        Step(
            "... and D'' = tanh^2 >= 0, > 0 for z != 0: D(z) > 0 for z != 0. So for |delta| <= 1 the exponent is < 0 "
            "for every eta > 0, F' < 0, F < 0 and E > 0: near the mode (|delta| <= 1) density times width "
            "understates the cost, for every bin width.",
            sp.diff(_D, _z, 2),
            sp.tanh(_z) ** 2,
            lhs_latex=r"D''(z)",
        ),
        named_step(
            "For |delta| > 1 the exponent (zero with zero slope at eta = 0) has second derivative delta^2 - 1 > 0 at "
            "0, and it is convex then concave in eta (its second derivative delta^2 sech^2(delta eta) - 1 "
            "decreases): it is positive up to its one positive root eta*, so there F' > 0, F > 0 and E < 0 for "
            "0 < eta <= eta*: in the tails density times width overstates the cost.",
            r"\partial_\eta^2 \left(-\eta^2/2 + \log\cosh(\delta\eta)\right)\big|_{\eta=0}",
            sp.diff(_EXPONENT, ETA, 2).subs(ETA, 0),
            DELTA**2 - 1,
        ),
    )


@functools.cache
def derivation() -> Derivation:
    """Definitions, the exact split, the expansion in eta, its sign and its mean under delta ~ N(0, s^2)."""
    two_terms = LEADING_TERM + NEXT_TERM
    steps = _definition_steps() + _exact_steps() + _expansion_steps() + _sign_steps() + (
        named_step(
            "The mean under delta ~ N(0, s^2) (the decoder's residuals s standard deviations wide), term by term "
            "through the Gaussian moments E[delta^2] = s^2, E[delta^4] = 3 s^4 (the remainder's coefficients are "
            "polynomials in delta, so each has a finite mean).",
            r"\mathbb{E}_{\delta\sim\mathcal{N}(0,s^2)}[\text{leading} + \text{next}]",
            EXPECTED_ERROR_SERIES,
            -ETA**2 * (SPREAD**2 - 1) / 6 + ETA**4 * (3 * SPREAD**4 + 4 * SPREAD**2 - 2) / 180,
        ),
    )
    results = (
        Step(
            "The exact split of an interior bin's cost, for every x, mu, sigma > 0 and h > 0 (any decoder mean, any "
            "fixed or per-pixel learned sigma): L_0 = -log N(x; mu, sigma^2) - log 2h + E(delta, eta).",
            -sp.log(BIN_PROBABILITY),
            -sp.log(2 * ETA * std_normal_pdf(DELTA)) + INTERIOR_BIN_ERROR,
            Check.RATIONAL,
            domains=((DELTA, (sp.Integer(-4), sp.Integer(4))), (ETA, (sp.Rational(1, 100), sp.Integer(2)))),
            lhs_latex=r"-\log\left[\Phi(\delta + \eta) - \Phi(\delta - \eta)\right]",
            reason="SymPy does not know that Phi(delta + eta) - Phi(delta - eta) > 0, so it does not split the "
                   "logarithm of the quotient",
        ),
        named_step(
            "Its expansion at fixed delta as eta -> 0 (SymPy's series of the exact E): "
            "E = -eta^2 (delta^2 - 1)/6 + eta^4 (delta^4 + 4 delta^2 - 2)/180 + O(eta^6).",
            r"\left[E(\delta, \eta)\right]_{\eta^{\leq 5}}",
            sp.series(INTERIOR_BIN_ERROR, ETA, 0, TAYLOR_ORDER).removeO(),
            two_terms,
        ),
        Step(
            "A calibrated decoder (delta ~ N(0, 1)) loses the eta^2 term: the mean error is eta^4 / 36 + O(eta^6).",
            EXPECTED_ERROR_SERIES.subs(SPREAD, 1),
            ETA**4 / 36,
            lhs_latex=r"\mathbb{E}_{\delta\sim\mathcal{N}(0,1)}[E(\delta,\eta)]",
        ),
    )
    return Derivation(
        key="t",
        title="The decoder's interior bin: density times width and its exact error",
        module="derivations.interior_bin",
        summary=(
            "An interior bin of half-width h around x under the decoder N(mu, sigma^2) has probability "
            "Phi(delta + eta) - Phi(delta - eta), delta = (x - mu)/sigma, eta = h/sigma (SymPy's integral of the "
            "density over the bin). For every x, mu, sigma > 0 and h > 0 its cost splits exactly into the density "
            "times width, -log N(x; mu, sigma^2) - log 2h, plus E = -log[(Phi(delta + eta) - Phi(delta - eta)) / "
            "(2 eta phi(delta))], which is even in delta. Writing the bin probability as the mean of "
            "phi(delta + s)/phi(delta) = exp(-delta s - s^2/2) over |s| <= eta and integrating its Taylor polynomial "
            "(the Hermite polynomials) term by term gives, at fixed delta as eta -> 0, E = -eta^2 (delta^2 - 1)/6 + "
            "eta^4 (delta^4 + 4 delta^2 - 2)/180 + O(eta^6), confirmed by SymPy's series of the exact E. The sign "
            "is exact beyond the expansion: with F = P - 2 eta phi(delta), F' = 2 phi(delta) (exp(-eta^2/2) "
            "cosh(delta eta) - 1) and log cosh z <= z^2/2, so E > 0 (density times width understates the cost) for "
            "|delta| <= 1 and every eta, and E < 0 (it overstates it) for |delta| > 1 and eta up to the root of "
            "log cosh(delta eta) = eta^2/2. Under delta ~ N(0, s^2) the two terms average to "
            "-eta^2 (s^2 - 1)/6 + eta^4 (3 s^4 + 4 s^2 - 2)/180 (term by term), eta^4/36 for a calibrated decoder."
        ),
        steps=steps,
        results=results,
    )


__all__ = [
    "DELTA",
    "ETA",
    "SPREAD",
    "BIN_PROBABILITY",
    "INTERIOR_BIN_ERROR",
    "LEADING_TERM",
    "NEXT_TERM",
    "EXPECTED_ERROR_SERIES",
    "std_normal_cdf",
    "std_normal_pdf",
    "interior_bin_error",
    "interior_bin_error_leading",
    "interior_bin_error_two_terms",
    "expected_interior_bin_error_series",
    "derivation",
]
