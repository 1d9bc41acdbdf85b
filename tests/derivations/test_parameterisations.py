"""(o) The eps, x_0 and v parameterisations: results vs Salimans & Ho (2022), reductions, zero terminal SNR, oracles.

The derived conversions and means are compared with forms typed here from the papers, reduced to Algorithm 2 at
s = t - 1, and their float64 oracles are checked against NumPy formulas and against each other (round trips) at random
points, edges included. Every check that accepts a derived result is also run on a deliberately wrong formula.
"""

from __future__ import annotations

import dataclasses
import math

import mpmath
import numpy as np
import pytest
import sympy as sp
from hypothesis import example, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

import derivations
from derivations import eps_parameterisation as ep
from derivations import parameterisations as par
from derivations import strided
from derivations.chain import Check, Step
from derivations.numeric import DIGITS
from derivations.symbols import alpha_bar, alpha_bar_prev, alpha_bar_t, alpha_t, beta_t, eps, x_0, x_t
from testkit import tolerances
from testkit.symbolic import is_zero, step_cases

pytestmark = pytest.mark.symbolic

F64 = tolerances.FLOAT64.kwargs()
a = alpha_bar
S = strided.ALPHA_BAR_S
v = par.V
s2 = par.S2

# Salimans & Ho (2022), sec. 4 and app. D, with their alpha_t = sqrt(abar), sigma_t = sqrt(1 - abar), typed here.
ALPHA, SIGMA = sp.sqrt(a), sp.sqrt(1 - a)
PAPER = {
    "X0_FROM_EPS": (x_t - SIGMA * eps) / ALPHA,
    "EPS_FROM_X0": (x_t - ALPHA * x_0) / SIGMA,
    "X0_FROM_V": ALPHA * x_t - SIGMA * v,
    "EPS_FROM_V": SIGMA * x_t + ALPHA * v,
    "V_FROM_EPS_X0": ALPHA * eps - SIGMA * x_0,
    "V_FROM_EPS": (eps - SIGMA * x_t) / ALPHA,
    "V_FROM_X0": (ALPHA * x_t - x_0) / SIGMA,
}
# The strided posterior mean c_0 x_0 + c_t x_t of Song et al. (2021), and the v form it gives.
C0 = sp.sqrt(S) * (1 - a / S) / (1 - a)
CT = sp.sqrt(a / S) * (1 - S) / (1 - a)
PAPER_MEAN_FROM_X0 = C0 * x_0 + CT * x_t
PAPER_MEAN_FROM_EPS = sp.sqrt(S / a) * (x_t - (1 - a / S) / sp.sqrt(1 - a) * eps)
PAPER_MEAN_FROM_V = sp.sqrt(a / S) * x_t - sp.sqrt(S) * (1 - a / S) / sp.sqrt(1 - a) * v
ONE_STEP = {S: alpha_bar_prev, a: alpha_bar_t}


def _step(description_start: str) -> Step:
    """The step or result of derivation (o) whose description starts with `description_start`."""
    (step,) = [s for s in par.derivation().all_steps() if s.description.startswith(description_start)]
    return step


# --- registration and exports -------------------------------------------------------------------
def test_registered_as_derivation_o():
    assert "parameterisations" in derivations.MODULES
    assert "o  parameterisations" in derivations.__doc__
    (d,) = [d for d in derivations.all_derivations() if d.key == "o"]
    assert d.module == "derivations.parameterisations"
    assert {step.check for step in d.all_steps()} == {Check.DEFINITION, Check.SIMPLIFY}


def test_every_checked_step_is_covered_by_the_generic_step_test():
    d = par.derivation()
    ids = {case.id for case in step_cases()}
    expected = {
        f"o-parameterisations-{i}"
        for i, step in enumerate(d.all_steps(), start=1)
        if step.check is not Check.DEFINITION
    }
    assert len(expected) >= 60 and expected <= ids


@pytest.mark.parametrize("step", [s for s in par.derivation().all_steps() if s.check is Check.SIMPLIFY])
def test_every_step_holds(step):
    assert step.holds_symbolically(), step.description


@pytest.mark.parametrize(
    ("name", "symbols"),
    [
        ("X0_FROM_EPS", {x_t, eps, a}),
        ("EPS_FROM_X0", {x_t, x_0, a}),
        ("X0_FROM_V", {x_t, v, a}),
        ("EPS_FROM_V", {x_t, v, a}),
        ("V_FROM_EPS_X0", {eps, x_0, a}),
        ("V_FROM_EPS", {x_t, eps, a}),
        ("V_FROM_X0", {x_t, x_0, a}),
        ("MEAN_FROM_EPS", {x_t, eps, a, S}),
        ("MEAN_FROM_X0", {x_t, x_0, a, S}),
        ("MEAN_FROM_V", {x_t, v, a, S}),
        ("ONE_STEP_MEAN_FROM_V", {x_t, v, beta_t, alpha_bar_prev}),
        ("DDIM_MEAN_FROM_X0", {x_t, x_0, a, S, strided.sigma2_ddim}),
        ("DDIM_MEAN_FROM_V", {x_t, v, a, S, strided.sigma2_ddim}),
        ("SNR", {a}),
        ("LOSS_WEIGHT_X0", {a}),
        ("LOSS_WEIGHT_V", {a}),
        ("VAR_EPS_GAUSSIAN", {a, s2}),
        ("VAR_X0_GAUSSIAN", {a, s2}),
        ("VAR_V_GAUSSIAN", {a, s2}),
    ],
)
def test_exported_expression_symbols(name, symbols):
    assert getattr(par, name).free_symbols == symbols, f"{name} is not an expression in {symbols}"
    assert name in par.__all__ and name in par.__doc__


# --- results equal the papers -------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PAPER))
def test_conversions_equal_salimans_ho(name):
    assert is_zero(getattr(par, name) - PAPER[name]), name


@pytest.mark.parametrize(
    ("derived", "paper", "name"),
    [
        (par.MEAN_FROM_X0, PAPER_MEAN_FROM_X0, "x_0-mean = strided posterior mean"),
        (par.MEAN_FROM_EPS, PAPER_MEAN_FROM_EPS, "eps-mean = Song et al.'s strided eps-mean"),
        (par.MEAN_FROM_V, PAPER_MEAN_FROM_V, "v-mean"),
        (par.MEAN_FROM_EPS, strided.STRIDED_EPS_MEAN, "eps-mean = derivation (i)'s"),
        (par.DDIM_MEAN_FROM_X0, strided.Q_SIGMA_MEAN, "DDIM x_0 form = eq. (7)'s mean"),
    ],
)
def test_means_equal_paper(derived, paper, name):
    assert is_zero(derived - paper), name


def test_the_three_means_agree_when_the_predictions_do():
    # x_t, x_0, eps, v all from one (x_0, eps): every parameterisation gives the strided posterior mean.
    xt = sp.sqrt(a) * x_0 + sp.sqrt(1 - a) * eps
    v_true = PAPER["V_FROM_EPS_X0"]
    target = PAPER_MEAN_FROM_X0.subs(x_t, xt)
    assert is_zero(par.MEAN_FROM_EPS.subs(x_t, xt) - target)
    assert is_zero(par.MEAN_FROM_V.subs({x_t: xt, v: v_true}, simultaneous=True) - target)


@pytest.mark.parametrize(
    ("expr", "one_step", "name"),
    [
        (par.MEAN_FROM_EPS, ep.PAPER_EPS_MEAN, "eps form -> Algorithm 2, line 4"),
        (
            par.MEAN_FROM_X0,
            sp.sqrt(alpha_bar_prev) * beta_t / (1 - alpha_bar_t) * x_0
            + sp.sqrt(alpha_t) * (1 - alpha_bar_prev) / (1 - alpha_bar_t) * x_t,
            "x_0 form -> Ho et al. eq. (7)",
        ),
        (par.MEAN_FROM_V, par.ONE_STEP_MEAN_FROM_V, "v form -> its one-step export"),
    ],
)
def test_reduces_to_one_step(expr, one_step, name):
    assert is_zero(expr.subs(ONE_STEP, simultaneous=True) - one_step), name


def test_algorithm_2_with_each_prediction():
    # Algorithm 2's mean, eps_hat computed from a v or an x_0 prediction, is that prediction's mean.
    eps_from_v = PAPER["EPS_FROM_V"].subs(a, alpha_bar_t)
    eps_from_x0 = PAPER["EPS_FROM_X0"].subs(a, alpha_bar_t)
    assert is_zero(ep.PAPER_EPS_MEAN.subs(eps, eps_from_v) - par.MEAN_FROM_V.subs(ONE_STEP, simultaneous=True))
    assert is_zero(ep.PAPER_EPS_MEAN.subs(eps, eps_from_x0) - par.MEAN_FROM_X0.subs(ONE_STEP, simultaneous=True))


def test_ddim_v_form_is_a_rotation_at_eta_0():
    # sigma = 0, abar = cos^2 phi: x_s = cos(phi_s - phi_t) x_t + sin(phi_s - phi_t) v (Salimans & Ho, app. D).
    phi_t, phi_s = sp.symbols("phi_t phi_s", positive=True)
    angles = {a: sp.cos(phi_t) ** 2, S: sp.cos(phi_s) ** 2}
    deterministic = par.DDIM_MEAN_FROM_V.subs(strided.sigma2_ddim, 0).subs(angles)
    # on 0 < phi < pi/2 the square roots are cos and sin themselves
    deterministic = deterministic.subs({sp.sqrt(sp.cos(phi_t) ** 2): sp.cos(phi_t), sp.sqrt(sp.cos(phi_s) ** 2):
                                        sp.cos(phi_s), sp.sqrt(1 - sp.cos(phi_t) ** 2): sp.sin(phi_t),
                                        sp.sqrt(1 - sp.cos(phi_s) ** 2): sp.sin(phi_s)})
    expected = sp.cos(phi_s - phi_t) * x_t + sp.sin(phi_s - phi_t) * v
    assert sp.simplify(sp.expand_trig(deterministic - expected)) == 0


# --- zero terminal SNR --------------------------------------------------------------------------
def test_v_form_at_zero_terminal_snr():
    assert par.X0_FROM_V.subs(a, 0) == -v
    assert par.EPS_FROM_V.subs(a, 0) == x_t
    assert is_zero(par.MEAN_FROM_V.subs(a, 0) + sp.sqrt(S) * v)
    assert is_zero(sp.limit(par.MEAN_FROM_V, a, 0, "+") + sp.sqrt(S) * v)
    assert is_zero(par.ONE_STEP_MEAN_FROM_V.subs(beta_t, 1) + sp.sqrt(alpha_bar_prev) * v)
    assert is_zero(par.MEAN_FROM_X0.subs(a, 0) - sp.sqrt(S) * x_0)


def test_eps_form_at_zero_terminal_snr():
    assert sp.limit(par.X0_FROM_EPS.subs(x_t, eps + 1), a, 0, "+") == sp.oo, "x0_hat diverges for x_t != eps"
    assert sp.limit(par.X0_FROM_EPS.subs(x_t, eps - 1), a, 0, "+") == -sp.oo
    assert sp.limit(par.MEAN_FROM_EPS.coeff(x_t), a, 0, "+") == sp.oo
    u = sp.Symbol("u", positive=True)  # alpha_T = 1 - beta_T -> 0 from above
    assert sp.limit(ep.EPS_MEAN_COEF_XT.subs(beta_t, 1 - u), u, 0, "+") == sp.oo, "Algorithm 2 divides by sqrt(alpha_T)"


def test_numeric_at_zero_terminal_snr():
    assert par.x0_from_v(0.3, 0.7, 0.0) == -0.7
    assert par.eps_from_v(0.3, 0.7, 0.0) == 0.3
    assert_allclose(par.mean_from_v(0.3, 0.7, 0.0, 0.5), -math.sqrt(0.5) * 0.7, **F64)
    assert_allclose(par.mean_from_x0(0.3, 0.7, 0.0, 0.5), math.sqrt(0.5) * 0.7, **F64)
    assert_allclose(par.ddim_mean_from_v(0.3, 0.7, 0.0, 0.5, 0.1), -math.sqrt(0.5) * 0.7 + math.sqrt(0.4) * 0.3, **F64)
    for function, args in [(par.mean_from_eps, (0.3, 0.7, 0.0, 0.5)), (par.x0_from_eps, (0.3, 0.7, 0.0))]:
        with pytest.raises(ZeroDivisionError):
            function(*args)
    # approaching abar_t = 0 the eps-mean's x_t coefficient sqrt(abar_s / abar_t) blows up; the v-mean's vanishes
    assert abs(par.mean_from_eps(1.0, 0.0, 1e-20, 0.5)) > 1e9
    assert abs(par.mean_from_v(1.0, 0.0, 1e-20, 0.5)) < 1e-9


# --- numeric oracles vs NumPy -------------------------------------------------------------------
POINTS = [0.5, 1e-4, 0.9999, 0.02, 0.98]


def np_mean_from_x0(xt, x0, abt, abs_):
    beta = (abs_ - abt) / abs_
    return np.sqrt(abs_) * beta / (1 - abt) * x0 + np.sqrt(abt / abs_) * (1 - abs_) / (1 - abt) * xt


@pytest.mark.parametrize("abar", POINTS)
def test_conversions_match_numpy(abar):
    xt, x0, e, vv = 0.7, -0.4, 1.3, -0.2
    sa, sb = np.sqrt(abar), np.sqrt(1 - abar)
    for function, args, reference, scale in [
        (par.x0_from_eps, (xt, e), (xt - sb * e) / sa, 1 / sa),
        (par.eps_from_x0, (xt, x0), (xt - sa * x0) / sb, 1 / sb),
        (par.x0_from_v, (xt, vv), sa * xt - sb * vv, 1.0),
        (par.eps_from_v, (xt, vv), sa * vv + sb * xt, 1.0),
        (par.v_from_eps_x0, (e, x0), sa * e - sb * x0, 1.0),
        (par.v_from_eps, (xt, e), (e - sb * xt) / sa, 1 / sa),
        (par.v_from_x0, (xt, x0), (sa * xt - x0) / sb, 1 / sb),
    ]:
        # NumPy's form cancels where the two terms nearly agree: allow its rounding relative to the terms' size
        assert_allclose(function(*args, abar), reference, rtol=1e-10, atol=1e-14 * scale, err_msg=function.__name__)


@pytest.mark.parametrize(("abt", "abs_"), [(0.5, 0.9), (1e-4, 0.999), (0.98, 0.99), (0.3, 1.0), (0.0, 0.7)])
def test_means_match_numpy(abt, abs_):
    xt, x0 = 0.7, -0.4
    sa, sb = np.sqrt(abt), np.sqrt(1 - abt)
    vv = 0.25
    assert_allclose(par.mean_from_x0(xt, x0, abt, abs_), np_mean_from_x0(xt, x0, abt, abs_), **F64)
    assert_allclose(par.mean_from_v(xt, vv, abt, abs_), np_mean_from_x0(xt, sa * xt - sb * vv, abt, abs_), **F64)
    if abt > 0:
        e = 1.1
        assert_allclose(par.mean_from_eps(xt, e, abt, abs_), np_mean_from_x0(xt, (xt - sb * e) / sa, abt, abs_),
                        rtol=1e-10, atol=1e-14 / sa)
    for sigma2 in (0.0, 0.5 * (1 - abs_)):
        root = np.sqrt(1 - abs_ - sigma2)
        ddim_x0 = np.sqrt(abs_) * x0 + root * (xt - sa * x0) / sb
        ddim_v = np.sqrt(abs_) * (sa * xt - sb * vv) + root * (sa * vv + sb * xt)
        assert_allclose(par.ddim_mean_from_x0(xt, x0, abt, abs_, sigma2), ddim_x0, **F64)
        assert_allclose(par.ddim_mean_from_v(xt, vv, abt, abs_, sigma2), ddim_v, **F64)


def test_numeric_oracles_broadcast():
    abar = np.array([0.0, 0.3, 1.0])  # [3]
    got = par.x0_from_v(np.array([0.1, 0.2, 0.3]), 0.5, abar)
    assert got.shape == (3,)
    assert_allclose(got, np.sqrt(abar) * np.array([0.1, 0.2, 0.3]) - np.sqrt(1 - abar) * 0.5, **F64)


# --- round trips at 50 digits -------------------------------------------------------------------
def _forward(x0: float, e: float, abar: float) -> tuple[mpmath.mpf, mpmath.mpf]:
    """x_t and v from (x_0, eps) at 50 digits, so that the oracles' round trips see no float64 rounding."""
    with mpmath.workdps(DIGITS):
        ab, x0m, em = mpmath.mpf(abar), mpmath.mpf(x0), mpmath.mpf(e)
        return mpmath.sqrt(ab) * x0m + mpmath.sqrt(1 - ab) * em, mpmath.sqrt(ab) * em - mpmath.sqrt(1 - ab) * x0m


values = st.floats(min_value=-3.0, max_value=3.0, allow_nan=False)


@settings(max_examples=40, deadline=None)
@given(x0=values, e=values, abar=st.floats(min_value=0.0, max_value=1.0))
@example(x0=0.9, e=-1.2, abar=0.0)  # zero terminal SNR
@example(x0=0.9, e=-1.2, abar=1.0)  # t = 0, no noise
@example(x0=0.9, e=-1.2, abar=1e-300)
def test_v_round_trips_for_every_abar(x0, e, abar):
    xt, vv = _forward(x0, e, abar)
    assert_allclose(par.v_from_eps_x0(e, x0, abar), float(vv), **F64)
    assert_allclose(par.x0_from_v(xt, vv, abar), x0, **F64)
    assert_allclose(par.eps_from_v(xt, vv, abar), e, **F64)


@settings(max_examples=40, deadline=None)
@given(x0=values, e=values, abar=st.floats(min_value=1e-12, max_value=1.0 - 1e-12))
@example(x0=0.9, e=-1.2, abar=1e-12)
@example(x0=0.9, e=-1.2, abar=1.0 - 1e-12)
def test_eps_x0_round_trips(x0, e, abar):
    xt, vv = _forward(x0, e, abar)
    assert_allclose(par.x0_from_eps(xt, e, abar), x0, **F64)
    assert_allclose(par.eps_from_x0(xt, x0, abar), e, **F64)
    assert_allclose(par.v_from_eps(xt, e, abar), float(vv), **F64)
    assert_allclose(par.v_from_x0(xt, x0, abar), float(vv), **F64)


@settings(max_examples=40, deadline=None)
@given(x0=values, e=values, e_hat=values, abar=st.floats(min_value=1e-6, max_value=1.0 - 1e-6))
@example(x0=0.9, e=-1.2, e_hat=-1.2, abar=0.5)  # a perfect prediction
def test_errors_are_scaled_eps_errors(x0, e, e_hat, abar):
    xt, vv = _forward(x0, e, abar)
    x0_hat, v_hat = par.x0_from_eps(xt, e_hat, abar), par.v_from_eps(xt, e_hat, abar)
    tiny = 4e-16 * (abs(x0) + abs(x0_hat) + abs(float(vv)) + abs(v_hat))  # rounding of the two float64 values
    assert_allclose(x0 - x0_hat, -math.sqrt((1 - abar) / abar) * (e - e_hat), rtol=1e-9, atol=tiny)
    assert_allclose(float(vv) - v_hat, (e - e_hat) / math.sqrt(abar), rtol=1e-9, atol=tiny)
    # the weights that turn the squared errors into the eps loss
    snr = par.snr(abar)
    assert_allclose(snr * (1 - abar) / abar, 1.0, **F64)
    assert_allclose(snr / (snr + 1), abar, **F64)


# --- loss minima --------------------------------------------------------------------------------
def conditional_variance(weights_z0: float, weights_eps: float, abar: float, s: float) -> float:
    """Var(y | x_t) for y = weights_z0 z_0 + weights_eps eps and x_t = sqrt(abar) s z_0 + sqrt(1 - abar) eps, by
    Gaussian conditioning: Var(y) - Cov(y, x_t)^2 / Var(x_t)."""
    xt = np.array([np.sqrt(abar) * s, np.sqrt(1 - abar)])
    y = np.array([weights_z0, weights_eps])
    return float(y @ y - (y @ xt) ** 2 / (xt @ xt))


@settings(max_examples=40, deadline=None)
@given(abar=st.floats(min_value=0.0, max_value=1.0), s=st.floats(min_value=1e-3, max_value=10.0))
@example(abar=0.0, s=0.25)
@example(abar=1.0, s=0.25)
def test_loss_minima_are_the_conditional_variances(abar, s):
    sa, sb = math.sqrt(abar), math.sqrt(1 - abar)
    targets = {"eps": (0.0, 1.0), "x0": (s, 0.0), "v": (-sb * s, sa)}  # y in (z_0, eps); x_0 = m + s z_0
    for prediction, (w_z0, w_eps) in targets.items():
        reference = conditional_variance(w_z0, w_eps, abar, s)
        assert_allclose(par.loss_minimum(prediction, abar, s), reference, rtol=1e-9, atol=1e-13 * (1 + s * s))


def test_loss_minima_at_the_ends_and_weighted():
    s = 0.25
    assert par.loss_minimum("eps", 0.0, s) == 0.0, "x_T = eps at abar = 0: eps is known"
    assert_allclose(par.loss_minimum("x0", 0.0, s), s**2, **F64, err_msg="x_0 unknown: its prior variance")
    assert_allclose(par.loss_minimum("v", 0.0, s), s**2, **F64, err_msg="v = -x_0 at abar = 0")
    assert par.loss_minimum("x0", 1.0, s) == 0.0
    assert_allclose(par.loss_minimum("eps", 1.0, s), 1.0, **F64)
    for abar in (1e-3, 0.3, 0.9):
        eps_min = par.loss_minimum("eps", abar, s)
        assert_allclose(par.snr(abar) * par.loss_minimum("x0", abar, s), eps_min, **F64)
        assert_allclose(abar * par.loss_minimum("v", abar, s), eps_min, **F64)
    got = par.loss_minimum("v", np.array([0.1, 0.5]), np.array([0.25, 1.0]))
    assert got.shape == (2,)
    with pytest.raises(ValueError, match="prediction must be one of"):
        par.loss_minimum("score", 0.5, s)


def test_eps_minimum_is_the_suites_gaussian_data_oracle():
    from ddpm.conformance.oracle import GaussianData

    data = GaussianData()
    for abar in (1e-4, 0.1, 0.5, 0.999):
        assert_allclose(par.loss_minimum("eps", abar, data.std), data.loss_minimum(abar), **F64)


# --- mutants are rejected by the same checks ----------------------------------------------------
def _fails(step: Step, **change) -> bool:
    return not dataclasses.replace(step, **change).holds_symbolically()


def test_checks_reject_mutants():
    # v with the sign of its x_0 term flipped (v = sqrt(abar) eps + sqrt(1 - abar) x_0): not the solved x_0
    flipped = sp.solve([sp.Eq(x_t, par.FORWARD), sp.Eq(v, ALPHA * eps + SIGMA * x_0)], [x_0, eps], dict=True)[0]
    assert _fails(_step("So solving the pair"), lhs=flipped[x_0])
    # the v-mean's x_t coefficient inverted (sqrt(abar_s / abar_t), the eps-mean's)
    v_mean = _step("The v-parameterised mean:")
    assert _fails(v_mean, lhs=sp.sqrt(S / a) * x_t + par.MEAN_FROM_V.coeff(v) * v)
    # the v loss weighted by SNR (the x_0 weight) is not the eps loss
    weighted_v = _step("... and the v loss weighted")
    assert _fails(weighted_v, lhs=par.SNR * par.V_ERROR**2)
    # the x_0 error without the square root
    assert _fails(_step("Given x_t, the x_0 error"), rhs=-(1 - a) / a * par.EPS_ERROR)
    # Var(eps | x_t) with 1 - abar for abar in the numerator (the Gamma_t of derivation (j) instead)
    assert _fails(_step("(eps, x_t) is jointly Gaussian"), rhs=(1 - a) / (a * s2 + 1 - a))
    # the v-mean at abar_t = 0 with the wrong sign
    assert _fails(_step("... and a finite mean over any stride"), rhs=sp.sqrt(S) * v)


@pytest.mark.parametrize(
    ("mutant", "name"),
    [
        (lambda xt, vv, ab: math.sqrt(ab) * xt + math.sqrt(1 - ab) * vv, "x0_from_v, sign"),
        (lambda xt, vv, ab: math.sqrt(1 - ab) * xt - math.sqrt(ab) * vv, "x0_from_v, abar and 1 - abar swapped"),
    ],
)
def test_round_trip_rejects_mutant(mutant, name):
    xt, vv = _forward(0.9, -1.2, 0.3)
    assert_allclose(par.x0_from_v(xt, vv, 0.3), 0.9, **F64)
    assert not np.isclose(mutant(float(xt), float(vv), 0.3), 0.9, rtol=1e-6), name
