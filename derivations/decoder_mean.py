"""(n) The decoder's mean at an edge bin: why L_simple's target at t = 1 is not the bound's, and what it costs.

The decoder of Ho et al. (eq. 13) discretises N(mu_theta(x_1, 1), sigma_1^2) into 256 bins of half-width
h = 1/255 centred on the grid x = k / 127.5 - 1; the edge bins are open: k = 0 takes (-inf, -1 + h], k = 255 takes
[1 - h, inf). L_0 = -log p_theta(x_0 | x_1) is the bound's term at t = 1 (derivation (f)).

- Interior bin k (a pixel whose bin the model is certain of): d L_0 / d mu vanishes at the bin's centre mu = x
  (the two Gaussian densities at the bin edges are equal there).
- Edge bin k = 0: L_0(mu) = -log Phi((-1 + h - mu) / sigma_1), and d L_0 / d mu = phi(z) / (sigma_1 Phi(z)) > 0 for
  every mu: L_0 keeps falling as mu moves out past the edge (to 0 as mu -> -inf); no finite stationary point.
- At t = 1 (alpha_bar_1 = alpha_1 = 1 - beta_1) the eps-parameterised mean of derivation (d) is
  mu = (x_1 - sqrt(beta_1) eps_theta) / sqrt(alpha_1), the x_0 it predicts; L_simple's minimiser
  eps_theta = E[eps | x_1] makes it E[x_0 | x_1]. For a pixel whose x_0 = -1 is certain given x_1 that is mu = -1,
  the edge bin's centre, where L_0 = -log Phi(h / sigma_1): 0.427 nats = 0.616 bits at sigma_1 = sqrt(beta_1) = 0.01
  (linear schedule), 0.510 bits at the learned variance's floor sqrt(beta_tilde_2). There
  d L_0 / d eps_theta = -sqrt(beta_1 / alpha_1) d L_0 / d mu < 0: training eps_theta on L_0 at t = 1 moves it.
  MNIST has 81% of its pixels at 0 and 0.7% at 255 (measured on both splits), so with L_simple's target at t = 1
  about half a bit per dimension of L_0 comes from the open edge bins alone. `ddpm.core.losses`' decoder_trains_mean
  trains the t = 1 mean on L_0 instead.
The right edge bin k = 255 is the mirror image (mu -> -mu).
"""

from __future__ import annotations

import functools

import sympy as sp

from derivations import eps_parameterisation
from derivations.chain import Check, Derivation, Step
from derivations.labels import named_step
from derivations.numeric import float64_function
from derivations.symbols import AT_T1, alpha_bar_prev, beta_t, eps, eps_theta, x_0, x_t

mu = sp.Symbol(r"\mu", real=True)  # the decoder's mean mu_theta(x_1, 1)
sigma_1 = sp.Symbol(r"\sigma_1", positive=True)
h = sp.Symbol("h", positive=True)  # the half-width of a bin, 1/255 on the 8-bit grid
c = sp.Symbol("x", real=True)  # an interior bin's centre
z = sp.Symbol("z", real=True)
P = sp.Symbol(r"\Phi(z)", positive=True)  # the value of a normal CDF at a finite point: in (0, 1)
HALF_BIN = sp.Rational(1, 255)
AT_1 = AT_T1 + ((x_t, sp.Symbol("x_1", real=True)),)  # report only: the t = 1 statements read x_1, beta_1


def normal_cdf(u: sp.Expr) -> sp.Expr:
    """Phi(u), the standard normal CDF."""
    return (1 + sp.erf(u / sp.sqrt(2))) / 2


def normal_pdf(u: sp.Expr) -> sp.Expr:
    """phi(u), the standard normal density."""
    return sp.exp(-(u**2) / 2) / sp.sqrt(2 * sp.pi)


EDGE_Z = (-1 + h - mu) / sigma_1  # the upper end of bin k = 0 in standard units
EDGE_COST = -sp.log(normal_cdf(EDGE_Z))  # L_0 of a pixel in bin k = 0
EDGE_COST_DERIVATIVE = sp.diff(EDGE_COST, mu)
EDGE_COST_DERIVATIVE_FORM = normal_pdf(EDGE_Z) / (sigma_1 * normal_cdf(EDGE_Z))
EDGE_DERIVATIVE_SIGN = sp.sign(normal_pdf(z) / (sigma_1 * P))  # with Phi(z) a probability in (0, 1)
EDGE_COST_LIMIT = sp.limit(-sp.log(normal_cdf(z)), z, sp.oo)  # mu -> -inf is z -> inf
INTERIOR_COST = -sp.log(normal_cdf((c + h - mu) / sigma_1) - normal_cdf((c - h - mu) / sigma_1))
INTERIOR_DERIVATIVE_AT_CENTRE = sp.simplify(sp.diff(INTERIOR_COST, mu).subs(mu, c))

# Derivation (d)'s mean at t = 1: alpha_bar_0 = 1, so alpha_bar_1 = alpha_1 = 1 - beta_1.
MEAN_AT_1 = eps_parameterisation.MU_THETA.subs(alpha_bar_prev, 1)
X0_PREDICTED_AT_1 = (x_t - sp.sqrt(beta_t) * eps_theta) / sp.sqrt(1 - beta_t)
# L_simple's minimiser at a pixel whose x_0 is certain given x_1: E[eps | x_1] is the eps of x_1 = sqrt(alpha_1) x_0
# + sqrt(beta_1) eps itself, and the mean is then x_0.
X1 = sp.sqrt(1 - beta_t) * x_0 + sp.sqrt(beta_t) * eps
MEAN_AT_SIMPLE_TARGET = sp.simplify(MEAN_AT_1.subs(x_t, X1).subs(eps_theta, eps))
EDGE_COST_AT_CENTRE = sp.simplify(EDGE_COST.subs(mu, -1))
MEAN_PER_EPS = sp.diff(MEAN_AT_1, eps_theta)
EDGE_EPS_GRADIENT = sp.simplify(EDGE_COST_DERIVATIVE.subs(mu, -1) * MEAN_PER_EPS)
r = sp.Symbol("r", positive=True)  # beta_1 in (0, 1) written 1 / (1 + r): then 1 - beta_1 = r / (1 + r) > 0
EDGE_EPS_GRADIENT_SIGN = sp.sign((normal_pdf(z) / (sigma_1 * P)) * MEAN_PER_EPS.subs(beta_t, 1 / (1 + r)))


@functools.cache
def derivation() -> Derivation:
    """From the discretised decoder to the edge bin's cost at L_simple's t = 1 target and its gradient there."""
    steps = (
        Step(
            "Definition: the decoder (Ho et al. eq. 13) at an edge pixel x_0 = -1: the mass of the open bin (-inf, "
            "-1 + h] under "
            "N(mu, sigma_1^2), h = 1/255 the half-width of a bin; Phi is the standard normal CDF.",
            sp.Symbol(r"L_0^{\mathrm{edge}}(\mu)"),
            EDGE_COST,
            Check.DEFINITION,
        ),
        named_step(
            "Its derivative in the mean: the normal density over the bin's mass, in units of sigma_1 ...",
            r"\partial L_0^{\mathrm{edge}} / \partial \mu",
            EDGE_COST_DERIVATIVE,
            EDGE_COST_DERIVATIVE_FORM,
        ),
        named_step(
            "... positive for every mu (the density is positive and Phi(z), a probability, is in (0, 1)): L_0 of an "
            "edge pixel falls all the way as the mean moves out past the edge ...",
            r"\operatorname{sign}(\varphi(z) / (\sigma_1 \Phi(z)))",
            EDGE_DERIVATIVE_SIGN,
            1,
        ),
        named_step(
            "... to 0 as mu -> -inf (z = (-1 + h - mu) / sigma_1 -> inf): no finite stationary point.",
            r"\lim_{z \to \infty} -\log \Phi(z)",
            EDGE_COST_LIMIT,
            0,
        ),
        named_step(
            "An interior bin [x - h, x + h]: L_0 is stationary at the bin's centre (the densities at its two edges "
            "are equal there), so for interior pixels L_simple's target below is L_0's stationary point.",
            r"\partial L_0^{\mathrm{interior}} / \partial \mu \big|_{\mu = x}",
            INTERIOR_DERIVATIVE_AT_CENTRE,
            0,
        ),
        named_step(
            "Derivation (d)'s eps-parameterised mean at t = 1 (alpha_bar_0 = 1, so alpha_bar_1 = alpha_1 = 1 - beta_1) "
            "is the x_0 it predicts from x_1.",
            r"\mu_\theta(x_1, 1)",
            MEAN_AT_1,
            X0_PREDICTED_AT_1,
            display=AT_1,
        ),
        named_step(
            "L_simple's minimiser is eps_theta = E[eps | x_1]; for a pixel whose x_0 is certain given x_1 that is "
            "the eps of x_1 = sqrt(alpha_1) x_0 + sqrt(beta_1) eps itself, and the mean is x_0: the bin's centre.",
            r"\mu_\theta(x_1, 1) \big|_{\epsilon_\theta = \epsilon}",
            MEAN_AT_SIMPLE_TARGET,
            x_0,
            display=AT_1,
        ),
    )
    results = (
        named_step(
            "An edge pixel (x_0 = -1) at L_simple's t = 1 target pays L_0 = -log Phi(h / sigma_1): 0.616 bits at "
            "sigma_1 = 0.01 (sigma_1^2 = beta_1 of the linear schedule); 81% of MNIST's pixels are 0.",
            r"L_0^{\mathrm{edge}}(-1)",
            EDGE_COST_AT_CENTRE,
            -sp.log(normal_cdf(h / sigma_1)),
        ),
        named_step(
            "There the bound's gradient in eps_theta is d L_0 / d mu times d mu / d eps_theta = "
            "-sqrt(beta_1 / alpha_1) ...",
            r"\partial L_0^{\mathrm{edge}} / \partial \epsilon_\theta \big|_{\mu = -1}",
            EDGE_EPS_GRADIENT,
            -sp.sqrt(beta_t) / sp.sqrt(1 - beta_t) * EDGE_COST_DERIVATIVE_FORM.subs(mu, -1),
            display=AT_1,
        ),
        named_step(
            "... which is negative (beta_1 in (0, 1) written 1 / (1 + r), r > 0): L_simple's t = 1 optimum is not "
            "the bound's; training the t = 1 mean on L_0 raises eps_theta and lowers the mean below -1.",
            r"\operatorname{sign}(\partial L_0^{\mathrm{edge}} / \partial \epsilon_\theta)",
            EDGE_EPS_GRADIENT_SIGN,
            -1,
        ),
    )
    return Derivation(
        key="n",
        title="The decoder's mean at an edge bin: L_simple's target at t = 1 is not the bound's",
        module=__name__,
        summary=(
            "The discretised decoder's edge bins are open. For an interior bin the bound's decoder term L_0 is "
            "stationary at the bin's centre, which is where L_simple's minimiser E[eps | x_1] puts the t = 1 mean "
            "of a pixel the model is certain of. For the edge bin (-inf, -1 + h] it is not: dL_0/dmu = "
            "phi(z) / (sigma_1 Phi(z)) > 0 for every mean, L_0 falls to 0 as the mean leaves the grid, and at the "
            "centre -1 it is -log Phi(h / sigma_1), 0.616 bits at sigma_1 = 0.01. Since d mu / d eps_theta = "
            "-sqrt(beta_1 / alpha_1), the bound's gradient in eps_theta is negative there: on data with many "
            "saturated pixels (81% of MNIST's are 0) the t = 1 mean should be trained on L_0 itself, which "
            "`ddpm.core.losses`' decoder_trains_mean does."
        ),
        steps=steps,
        results=results,
    )


edge_cost_at_centre = float64_function(EDGE_COST_AT_CENTRE, (h, sigma_1), "edge_cost_at_centre")
edge_cost = float64_function(EDGE_COST, (mu, h, sigma_1), "edge_cost")
edge_eps_gradient = float64_function(EDGE_EPS_GRADIENT, (h, sigma_1, beta_t), "edge_eps_gradient")

__all__ = [
    "EDGE_COST",
    "EDGE_COST_AT_CENTRE",
    "EDGE_COST_DERIVATIVE",
    "EDGE_EPS_GRADIENT",
    "HALF_BIN",
    "INTERIOR_DERIVATIVE_AT_CENTRE",
    "MEAN_AT_1",
    "derivation",
    "edge_cost",
    "edge_cost_at_centre",
    "edge_eps_gradient",
]
