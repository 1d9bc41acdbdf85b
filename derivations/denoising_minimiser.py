"""(r) L_simple is minimised by eps*(x_t, t) = E[eps | x_t], for any data; its minimum is E Var(eps | x_t).

Derivations (j), (l) and (n) and the tests' exact denoisers use that the best noise predictor is the conditional
mean of the noise. Here it is derived for an arbitrary data law. The pair (x_t, eps) has some joint law q_t(x_t, eps)
(for DDPM q_t(x, e) = p_data((x - b e)/a) N(e; 0, 1) / a with a = sqrt(alpha_bar_t), b = sqrt(1 - alpha_bar_t), and
p_data anything); it is an undetermined positive function, and the conditional expectation is the linear operator

    E[h | x_t] = int h q_t(x_t, e) de / int q_t(x_t, e) de,     E[1 | x_t] = 1,   E[g(x_t) h | x_t] = g(x_t) E[h | x_t].

Every integral is split by linearity (`split_integrals`: a sum under the integral becomes a sum of integrals, and
factors free of the integration variable come out), and SymPy closes the rest. Results, per dimension:

    E[(eps - f)^2 | x_t] = Var(eps | x_t) + (f - eps*(x_t))^2           for any f = f(x_t),
    E (eps - eps_theta(x_t))^2 = E Var(eps | x_t) + E (eps_theta - eps*)^2: eps* is the unique minimiser (up to
        q_t-null sets), the minimum is E Var(eps | x_t) = E eps^2 - E eps*^2 = 1 - Gamma_t, Gamma_t = E eps*^2,
    E (eps - eps* - g(x_t))^2 = E (eps - eps*)^2 + E g^2                (the cross term vanishes: tower property),
    E[eps eps*(x_t)] = E eps*^2                                          (the moment (j) assumed: Gamma_t),

and Gamma_t <= 1, since 1 - Gamma_t = E Var(eps | x_t) = E (eps - eps*)^2 >= 0. For vectors, ||.||^2 is the sum over
coordinates and E[. | x_t] is linear, so each coordinate is the scalar problem with x_t in R^D as the conditioning
point (checked on D = 2 with a joint density of (x_t, eps_1, eps_2)). L_simple's sum over t with any positive
weights w_t (or a uniform t) is minimised pointwise in t, each t at its own eps*(., t) (checked for every T by the
linearity of finite sums, and by the stationarity and Hessian of T = 3). For Gaussian data N(m, s^2) the minimum
per dimension is a^2 s^2 / (a^2 s^2 + b^2) (linear regression of eps on x_t, Gaussian conditioning assumed).

Exports (x_t, eps from derivations.symbols; the statements are made in JOINT q_t(x_t, eps), PREDICTOR
eps_theta(x_t), PERTURBATION g(x_t) and EPS_STAR = E[eps | x_t], module-level names outside __all__):
    CONDITIONAL_RISK     E[(eps - eps_theta)^2 | x_t], split into moments of q_t(x_t, .)
    RISK_EXCESS          E (eps - eps_theta)^2 - E (eps_theta - eps*)^2 over the joint law (= E Var(eps | x_t))
    PERTURBATION_COST    E (eps - eps* - g)^2 - E (eps - eps*)^2 (= E g^2)
    CROSS_MOMENT         E[eps eps*(x_t)] (= E eps*^2, Gamma_t)
    MINIMUM_GAUSSIAN     the minimum per dimension for x_0 ~ N(m, s^2), in alpha_bar_t and S2 = s^2
    GAMMA_GAUSSIAN       Gamma_t = E eps*^2 per dimension for x_0 ~ N(m, s^2)
    conditional, expectation, expectation_x, split_integrals   the operators the steps are built with
Numeric (float64, broadcasting, 50-digit evaluation):
    minimum_gaussian(alpha_bar, s2), gamma_gaussian(alpha_bar, s2)
"""

from __future__ import annotations

import functools

import sympy as sp

from derivations.chain import Check, Derivation, Step
from derivations.labels import named_step
from derivations.numeric import float64_function
from derivations.symbols import alpha_bar, eps, eps_theta, linear_covariance, x_t

_LINE_EPS = (eps, -sp.oo, sp.oo)
_LINE_X = (x_t, -sp.oo, sp.oo)


_u = sp.Symbol("u", real=True)  # the integration variable of E[. | x_t], so that eps* can sit inside an eps-integral


def split_integrals(expr: sp.Expr) -> sp.Expr:
    """Linearity of the integral, innermost integrals first: the integrand is expanded, each term becomes its own
    integral, and the term's factors free of the integration variable are taken out of it (a multiple integral
    as an iterated one, innermost variable first, so that every result has one canonical form). An integral over the
    dummy u of `conditional` whose integrand has no eps is renamed to one over eps (the name of a bound variable
    does not matter), so that equal moments of the joint law compare equal."""

    def canonical(integral: sp.Integral) -> sp.Expr:
        if list(integral.variables) == [_u] and eps not in integral.function.free_symbols:
            return integral.xreplace({_u: eps})
        return integral

    def split_one(integrand: sp.Expr, limit: tuple) -> sp.Expr:
        total = sp.Integer(0)
        for term in sp.Add.make_args(sp.expand(integrand)):
            outside: list[sp.Expr] = []
            inside: list[sp.Expr] = []
            for factor in sp.Mul.make_args(term):
                (inside if limit[0] in factor.free_symbols else outside).append(factor)
            if inside:
                total += sp.Mul(*outside) * canonical(sp.Integral(sp.Mul(*inside), limit))
            elif term != 0:
                raise ValueError(f"split_integrals: a term free of {limit[0]} integrated over the line: {term}")
        return total

    def split(integral: sp.Integral) -> sp.Expr:
        current = integral.function
        for limit in integral.limits:  # an iterated integral, innermost limit first
            current = split_one(current, limit)
        return current

    return expr.replace(lambda node: isinstance(node, sp.Integral), split)


# --- the joint law of (x_t, eps) and the conditional expectation ---------------------------------------------------
JOINT = sp.Function("q_t", positive=True)(x_t, eps)  # any joint density of (x_t, eps_i)
PREDICTOR = sp.Function(r"\epsilon_\theta", real=True)(x_t)  # any predictor: a function of x_t alone
PERTURBATION = sp.Function("g", real=True)(x_t)
_h = sp.Function("h", real=True)(x_t, eps)  # any function of (x_t, eps)
MARGINAL = sp.Integral(JOINT, _LINE_EPS)  # q_t(x_t)


def conditional(h: sp.Expr) -> sp.Expr:
    """E[h | x_t] = int h q_t(x_t, u) du / int q_t(x_t, u) du, h a function of (x_t, eps) (eps integrated as u)."""
    line = (_u, -sp.oo, sp.oo)
    return sp.Integral(h.subs(eps, _u) * JOINT.subs(eps, _u), line) / sp.Integral(JOINT.subs(eps, _u), line)


def expectation_x(h: sp.Expr) -> sp.Expr:
    """E[h(x_t)] = int h q_t(x_t) dx_t."""
    return sp.Integral(MARGINAL * h, _LINE_X)


def expectation(h: sp.Expr) -> sp.Expr:
    """E[h(x_t, eps)] over the joint law: int int h q_t(x_t, e) de dx_t."""
    return sp.Integral(sp.Integral(h * JOINT, _LINE_EPS), _LINE_X)


EPS_STAR = conditional(eps)
_SECOND = conditional(eps**2)
CONDITIONAL_VARIANCE = _SECOND - EPS_STAR**2  # Var(eps | x_t) = E[eps^2 | x_t] - E[eps | x_t]^2
CONDITIONAL_RISK = split_integrals(conditional((eps - PREDICTOR) ** 2))
CONDITIONAL_RESIDUAL_SQUARE = split_integrals(conditional((eps - EPS_STAR) ** 2))

RISK = expectation((eps - PREDICTOR) ** 2)  # L(eps_theta) at one t, per dimension
RISK_EXCESS = split_integrals(RISK - expectation_x((PREDICTOR - EPS_STAR) ** 2))
EXPECTED_VARIANCE = split_integrals(expectation_x(CONDITIONAL_VARIANCE))  # E Var(eps | x_t)
RISK_AT_OPTIMUM = split_integrals(RISK.subs(PREDICTOR, EPS_STAR))
CROSS_TERM = split_integrals(expectation((eps - EPS_STAR) * PERTURBATION))
PERTURBATION_COST = split_integrals(RISK.subs(PREDICTOR, EPS_STAR + PERTURBATION) - RISK.subs(PREDICTOR, EPS_STAR))
CROSS_MOMENT = split_integrals(expectation(eps * EPS_STAR))  # E[eps eps*]
GAMMA = split_integrals(expectation_x(EPS_STAR**2))  # Gamma_t = E eps*^2 per dimension

# E eps^2 = 1: the eps-marginal of the joint law is N(0, 1) (eps is drawn so); swapping the order of integration,
# int int e^2 q_t(x, e) de dx = int e^2 N(e; 0, 1) de.
_STANDARD_NORMAL = sp.exp(-eps**2 / 2) / sp.sqrt(2 * sp.pi)
NOISE_SECOND_MOMENT = sp.Integral(eps**2 * _STANDARD_NORMAL, _LINE_EPS)
_E_EPS2 = split_integrals(expectation(eps**2))  # int int e^2 q_t de dx
MINIMUM_IN_GAMMA = RISK_AT_OPTIMUM.subs(_E_EPS2, NOISE_SECOND_MOMENT.doit())

# --- the pointwise minimisation ------------------------------------------------------------------------------------
_v, _e_star = sp.Symbol("V", nonnegative=True), sp.Symbol(r"\epsilon^*", real=True)
_POINTWISE = _v + (eps_theta - _e_star) ** 2  # E[(eps - f)^2 | x_t] at one x_t, f = eps_theta there
(_POINTWISE_ARGMIN,) = sp.solve(sp.diff(_POINTWISE, eps_theta), eps_theta)

# --- D = 2 ---------------------------------------------------------------------------------------------------------
_e1, _e2 = sp.symbols(r"\epsilon_1 \epsilon_2", real=True)
_f1, _f2 = (sp.Function(rf"\epsilon_{{\theta,{i}}}", real=True)(x_t) for i in (1, 2))
_JOINT2 = sp.Function("q_t", positive=True)(x_t, _e1, _e2)
_LIMITS2 = ((_e1, -sp.oo, sp.oo), (_e2, -sp.oo, sp.oo))


def _conditional2(h: sp.Expr) -> sp.Expr:
    return sp.Integral(h * _JOINT2, *_LIMITS2) / sp.Integral(_JOINT2, *_LIMITS2)


VECTOR_RISK_D2 = split_integrals(_conditional2((_e1 - _f1) ** 2 + (_e2 - _f2) ** 2))
_VECTOR_CLOSED = sum(
    (_conditional2(e**2) - _conditional2(e) ** 2) + (f - _conditional2(e)) ** 2 for e, f in ((_e1, _f1), (_e2, _f2))
)

# --- weighted sum over t -------------------------------------------------------------------------------------------
_t, _T = sp.symbols("t T", integer=True, positive=True)
_w = sp.Function("w", positive=True)  # any positive weights w_t
_min_t = sp.Function(r"L^{*}", nonnegative=True)  # E Var(eps | x_t) at step t
_gap_t = sp.Function(r"\Delta", nonnegative=True)  # E (eps_theta(., t) - eps*(., t))^2 at step t
WEIGHTED_EXCESS = sp.Sum(_w(_t) * (_min_t(_t) + _gap_t(_t)), (_t, 1, _T)) - sp.Sum(_w(_t) * _min_t(_t), (_t, 1, _T))
_ws = sp.symbols("w_1:4", positive=True)
_vs = sp.symbols("V_1:4", nonnegative=True)
_fs = tuple(sp.Symbol(rf"f_{i}", real=True) for i in (1, 2, 3))
_stars = tuple(sp.Symbol(rf"\epsilon^*_{i}", real=True) for i in (1, 2, 3))
_WEIGHTED_T3 = sum(w * (v + (f - s) ** 2) for w, v, f, s in zip(_ws, _vs, _fs, _stars, strict=True))
_WEIGHTED_ARGMIN = sp.solve([sp.diff(_WEIGHTED_T3, f) for f in _fs], _fs, dict=True)[0]
_WEIGHTED_HESSIAN = sp.hessian(_WEIGHTED_T3, _fs)
_ys = sp.symbols("y_1:4", real=True)
_y = sp.Symbol("y")  # a vector (c_1, c_2, c_3) is checked as the polynomial c_1 + c_2 y + c_3 y^2

# --- Gaussian data -------------------------------------------------------------------------------------------------
_s2 = sp.Symbol("s^2", positive=True)
_m = sp.Symbol("m", real=True)
_z, _k = sp.Symbol("z_0", real=True), sp.Symbol("k", real=True)
_a, _b = sp.sqrt(alpha_bar), sp.sqrt(1 - alpha_bar)
# x_0 = m + s z_0 with z_0 ~ N(0, 1) independent of eps; the centred x_t - a m is linear in (z_0, eps).
_XT_CENTRED = _a * sp.sqrt(_s2) * _z + _b * eps
(_K,) = sp.solve(sp.Eq(linear_covariance(eps - _k * _XT_CENTRED, _XT_CENTRED, (_z, eps)), 0), _k)
MINIMUM_GAUSSIAN = sp.factor(linear_covariance(eps - _K * _XT_CENTRED, eps - _K * _XT_CENTRED, (_z, eps)))
GAMMA_GAUSSIAN = sp.factor(linear_covariance(_K * _XT_CENTRED, _K * _XT_CENTRED, (_z, eps)))
S2 = _s2

minimum_gaussian = float64_function(MINIMUM_GAUSSIAN, (alpha_bar, _s2), "minimum_gaussian")
gamma_gaussian = float64_function(GAMMA_GAUSSIAN, (alpha_bar, _s2), "gamma_gaussian")

_E = r"\mathbb{E}"
_STAR = r"\epsilon^*(x_t)"


@functools.cache
def derivation() -> Derivation:
    """The conditional bias-variance split, the minimiser and its minimum, the tower property, D = 2, the sum over
    t, and the Gaussian instance."""
    steps = (
        Step(
            "Model: (x_t, eps) has a joint law q_t(x_t, eps) (per coordinate eps_i; for DDPM the density "
            "p_data((x_t - b eps)/a) N(eps; 0, 1)/a, a = sqrt(alpha_bar_t), b = sqrt(1 - alpha_bar_t), for any data "
            "density p_data; for data on finitely many points the integral over eps is the sum over the atoms of "
            "eps given x_t, the same linear operator). Conditional expectations are ratios of integrals over eps.",
            sp.Symbol("E[h | x_t]"),
            conditional(_h),
            Check.DEFINITION,
            lhs_latex=rf"{_E}[h \mid x_t]",
        ),
        Step(
            "Assumption: the eps-marginal of the joint law is N(0, 1) (eps is drawn so, independently of x_0): a model "
            "assumption, used only for E eps^2 = 1 below.",
            sp.Integral(JOINT, _LINE_X),
            _STANDARD_NORMAL,
            Check.DEFINITION,
            lhs_latex=r"\int q_t(x_t, \epsilon)\,dx_t",
        ),
        Step("The operator keeps constants: E[1 | x_t] = 1.", conditional(sp.Integer(1)), 1,
             lhs_latex=rf"{_E}[1 \mid x_t]"),
        Step(
            "A factor that is a function of x_t alone comes out: E[g(x_t) h | x_t] = g(x_t) E[h | x_t].",
            conditional(PERTURBATION * _h),
            PERTURBATION * conditional(_h),
            lhs_latex=rf"{_E}[g(x_t)\, h \mid x_t]",
        ),
        named_step(
            "Conditional bias-variance split, for any predictor value f = eps_theta(x_t): expand the square under "
            "the integral (linearity), and E[1 | x_t] = 1 turns f^2 int q_t de / int q_t de into f^2.",
            rf"{_E}[(\epsilon - \epsilon_\theta(x_t))^2 \mid x_t]",
            CONDITIONAL_RISK,
            split_integrals(CONDITIONAL_VARIANCE + (PREDICTOR - EPS_STAR) ** 2),
        ),
        named_step(
            "The conditional variance is the conditional mean square of the residual eps - eps*, hence >= 0.",
            rf"{_E}[(\epsilon - {_STAR})^2 \mid x_t]",
            CONDITIONAL_RESIDUAL_SQUARE,
            split_integrals(CONDITIONAL_VARIANCE),
        ),
        Step(
            "Pointwise in x_t the conditional risk V + (f - eps*)^2 is stationary only at f = eps* ...",
            _POINTWISE_ARGMIN,
            _e_star,
            lhs_latex=r"\arg\min_f\, [V + (f - \epsilon^*)^2]",
        ),
        Step(
            "... and exceeds its value there by (f - eps*)^2, zero only at f = eps*: the unique minimiser.",
            _POINTWISE - _POINTWISE.subs(eps_theta, _e_star),
            (eps_theta - _e_star) ** 2,
            lhs_latex=r"R(f) - R(\epsilon^*)",
        ),
        named_step(
            "Vectors, D = 2 (a joint density of (x_t, eps_1, eps_2), x_t of any dimension as the conditioning "
            "point): ||eps - f||^2 is the sum over coordinates and E[. | x_t] is linear, so the conditional risk is "
            "the sum of the per-coordinate splits; the same holds coordinate by coordinate for any D.",
            rf"{_E}[\|\epsilon - \epsilon_\theta(x_t)\|^2 \mid x_t]",
            VECTOR_RISK_D2,
            _VECTOR_CLOSED,
        ),
        named_step(
            "Averaging over x_t (the tower property: int int . q_t de dx_t = int q_t(x_t) E[. | x_t] dx_t): the "
            "risk of any predictor less its mean squared distance to eps* is the same for every predictor ...",
            rf"{_E}(\epsilon - \epsilon_\theta(x_t))^2 - {_E}(\epsilon_\theta(x_t) - {_STAR})^2",
            RISK_EXCESS,
            EXPECTED_VARIANCE,
        ),
        named_step(
            "... namely E Var(eps | x_t), the risk of eps* itself: eps* minimises L_simple's term at t, uniquely up "
            "to q_t-null sets, and the minimum is E Var(eps | x_t).",
            rf"{_E}(\epsilon - {_STAR})^2",
            RISK_AT_OPTIMUM,
            EXPECTED_VARIANCE,
        ),
        named_step(
            "The cross term of a perturbed predictor eps* + g(x_t) vanishes: E[(eps - eps*) g(x_t)] = "
            "E[g(x_t) (E[eps | x_t] - eps*)] = 0 (tower property) ...",
            rf"{_E}[(\epsilon - {_STAR})\, g(x_t)]",
            CROSS_TERM,
            0,
        ),
        named_step(
            "... so the perturbation costs exactly E g(x_t)^2 more.",
            rf"{_E}(\epsilon - {_STAR} - g(x_t))^2 - {_E}(\epsilon - {_STAR})^2",
            PERTURBATION_COST,
            split_integrals(expectation_x(PERTURBATION**2)),
        ),
        Step(
            "E eps^2 = 1: the order of integration swapped, the eps-marginal is N(0, 1) (integrated by SymPy).",
            NOISE_SECOND_MOMENT.doit(),
            1,
            lhs_latex=r"\int \epsilon^2 \mathcal{N}(\epsilon; 0, 1)\,d\epsilon",
        ),
        Step(
            "The weighted sum over t, any T, any positive weights w_t, each eps_theta(., t) a free function of x_t: "
            "by the above L_t = L*_t + Delta_t with Delta_t = E (eps_theta(., t) - eps*(., t))^2 >= 0, so the excess "
            "over the sum of the minima is sum_t w_t Delta_t, zero only when every Delta_t is: minimised pointwise "
            "in t.",
            WEIGHTED_EXCESS,
            sp.Sum(_w(_t) * _gap_t(_t), (_t, 1, _T)),
            lhs_latex=r"\sum_t w_t L_t(\epsilon_\theta) - \sum_t w_t L_t^*",
        ),
        Step(
            "T = 3 with the conditional risks at one x_t: the stationary point of sum_t w_t (V_t + (f_t - eps*_t)^2) "
            "is f_t = eps*_t for every t (the three values checked at once as the coefficients of 1, y, y^2) ...",
            sum(_WEIGHTED_ARGMIN[f] * _y**i for i, f in enumerate(_fs)),
            sum(star * _y**i for i, star in enumerate(_stars)),
            lhs_latex=r"\arg\min_{f_1, f_2, f_3} \sum_t w_t [V_t + (f_t - \epsilon^*_t)^2]",
        ),
        Step(
            "... and the Hessian is diagonal with entries 2 w_t > 0 (its quadratic form in a vector y, checked as "
            "such): a minimum, the t's decoupled.",
            sp.expand((sp.Matrix([_ys]) * _WEIGHTED_HESSIAN * sp.Matrix(_ys))[0, 0]),
            sum(2 * w * y**2 for w, y in zip(_ws, _ys, strict=True)),
            lhs_latex=r"y^\top \nabla^2_f \sum_t w_t [V_t + (f_t - \epsilon^*_t)^2]\, y",
        ),
        Step(
            "Theorem assumed (Gaussian conditioning), for Gaussian data x_0 = m + s z_0, z_0 ~ N(0, 1): (eps, x_t) "
            "is jointly Gaussian, so E[eps | x_t] = "
            "k (x_t - a m) with k making the residual uncorrelated with x_t (Gaussian conditioning, a theorem "
            "assumed here); solved from Cov(eps - k (x_t - a m), x_t) = 0.",
            sp.Symbol("k"),
            _K,
            Check.DEFINITION,
            lhs_latex=r"k",
        ),
    )
    results = (
        named_step(
            "Gamma_t, the moment (j) assumed: E[eps eps*(x_t)] = E eps*(x_t)^2 (tower property).",
            rf"{_E}[\epsilon\, {_STAR}]",
            CROSS_MOMENT,
            GAMMA,
        ),
        named_step(
            "The minimum of L_simple's term at t per dimension is 1 - Gamma_t, Gamma_t = E eps*^2 = E||eps*||^2/d; "
            "being E Var(eps | x_t) >= 0, it gives Gamma_t <= 1.",
            rf"\min {_E}(\epsilon - \epsilon_\theta)^2 = {_E}(\epsilon - {_STAR})^2",
            MINIMUM_IN_GAMMA,
            1 - GAMMA,
        ),
        named_step(
            "Gaussian data N(m, s^2): the minimum per dimension E (eps - k (x_t - a m))^2.",
            r"\min_{\mathcal{N}(m, s^2)}",
            MINIMUM_GAUSSIAN,
            alpha_bar * _s2 / (alpha_bar * _s2 + 1 - alpha_bar),
        ),
        named_step(
            "... which is 1 - Gamma_t with Gamma_t = E (k (x_t - a m))^2.",
            r"\Gamma_t^{\mathcal{N}(m, s^2)}",
            GAMMA_GAUSSIAN,
            1 - MINIMUM_GAUSSIAN,
        ),
    )
    return Derivation(
        key="r",
        title="The minimiser of L_simple is E[eps | x_t]; its minimum is E Var(eps | x_t)",
        module="derivations.denoising_minimiser",
        summary=(
            "For any data law, with the joint law of (x_t, eps) an undetermined positive function and the "
            "conditional expectation the ratio of integrals over eps (a linear operator with E[1 | x_t] = 1 that "
            "takes out functions of x_t), the conditional risk of any predictor splits as E[(eps - f)^2 | x_t] = "
            "Var(eps | x_t) + (f - E[eps | x_t])^2. Averaged over x_t this makes eps* = E[eps | x_t] the unique "
            "minimiser of L_simple's term at each t (up to q_t-null sets), with minimum E Var(eps | x_t) = "
            "1 - Gamma_t, Gamma_t = E eps*^2 <= 1; a perturbed predictor eps* + g(x_t) costs exactly E g^2 more, "
            "the cross term vanishing by the tower property, which also gives E[eps eps*] = E eps*^2, the moment "
            "derivation (j) assumed. All of this holds for every data law, per dimension; for vectors it is summed "
            "over coordinates (checked on D = 2, any D by linearity). L_simple's sum over t with any positive "
            "weights is minimised pointwise in t, for every T. For Gaussian data N(m, s^2) the minimum per "
            "dimension is alpha_bar_t s^2 / (alpha_bar_t s^2 + 1 - alpha_bar_t)."
        ),
        steps=steps,
        results=results,
    )


__all__ = [
    "S2",
    "CONDITIONAL_RISK",
    "RISK_EXCESS",
    "PERTURBATION_COST",
    "CROSS_MOMENT",
    "MINIMUM_GAUSSIAN",
    "GAMMA_GAUSSIAN",
    "conditional",
    "expectation",
    "expectation_x",
    "split_integrals",
    "minimum_gaussian",
    "gamma_gaussian",
    "derivation",
]
