"""(k) Learned variances: the learned-range interpolation, its bound term, and the hybrid objective's stop-gradient.

Nichol & Dhariwal (2021), "Improved Denoising Diffusion Probabilistic Models", eq. (15) and the hybrid
objective L_hybrid = L_simple + lambda L_vlb (lambda = 0.001). The network outputs v per dimension,
nominally in [-1, 1]; improved-diffusion maps it to frac = (v + 1) / 2 and interpolates the two fixed
variances of derivation (h) in log space:

    log Sigma_theta = frac log beta_t + (1 - frac) log beta_tilde_t,
    Sigma_theta     = beta_t^frac beta_tilde_t^(1 - frac)   (beta_tilde_t at v = -1, beta_t at v = 1).

The bound term with this variance is derivation (c)'s KL; its v-gradient vanishes exactly where
Sigma_theta = beta_tilde_t + (mu_tilde - mu_theta)^2, the pointwise form of derivation (j)'s optimum, and
it is convex in v. In L_vlb the mean gets the gradient (mu_theta - mu_tilde) / Sigma_theta; the
stop-gradient on mu_theta inside L_vlb removes it, so the mean is trained by L_simple alone and the
variance by lambda L_vlb alone. At t = 1, beta_tilde_1 = 0 (log beta_tilde_1 = -oo) and the interpolation
collapses to 0 for every v < 1; improved-diffusion uses beta_tilde_2 in place of beta_tilde_1 there.

Exports (in v, symbols.beta_t, symbols.alpha_bar_prev and MEAN_GAP):
    v                     the network's variance output (real)
    MEAN_GAP              Delta_t = mu_tilde_t - mu_theta per dimension (real)
    SIGMA_LEARNED_RANGE   Sigma_theta(v, beta_t, alpha_bar_{t-1})
    LEARNED_KL            KL(N(mu_tilde, beta_tilde_t) || N(mu_theta, Sigma_theta)) per dimension
Numeric (float64, broadcasting, 50-digit evaluation):
    sigma2_learned_range(v, beta_t, alpha_bar_prev), learned_kl(v, beta_t, alpha_bar_prev, Delta)
"""

from __future__ import annotations

import functools

import sympy as sp

from derivations import eps_parameterisation, loss_weights, optimal_variance, posterior
from derivations.chain import Check, Derivation, Step
from derivations.gaussian_kl import MEAN_1, MEAN_2, NORMAL_KL, VAR_1, VAR_2
from derivations.labels import named_step
from derivations.numeric import float64_function
from derivations.optimal_variance import beta_tilde, mu_theta, mu_tilde
from derivations.symbols import alpha_bar_prev, alpha_bar_t, alpha_t, beta_t, eps, eps_theta, sigma2

v = sp.Symbol("v", real=True)  # the network's variance output, nominally in [-1, 1]
MEAN_GAP = sp.Symbol(r"\Delta_t", real=True)  # mu_tilde_t - mu_theta per dimension
Sigma = sp.Symbol(r"\Sigma_\theta", positive=True)  # a reverse variance, before it is tied to v
lam = sp.Symbol(r"\lambda", positive=True)  # the hybrid objective's weight on L_vlb
eps_sg = sp.Symbol(r"\mathrm{sg}(\epsilon_\theta)", real=True)  # eps_theta behind a stop-gradient
log_sigma = sp.Symbol(r"s_\theta", real=True)  # the log-variance log Sigma_theta as one symbol
w = sp.Symbol("w", positive=True)  # v = 1 - 2 w, i.e. v < 1
beta_1, beta_2 = sp.symbols(r"\beta_1 \beta_2", positive=True)  # the schedule's first two steps

# --- The interpolation (eq. 15), with beta_tilde_t as a positive symbol ----------------------------
FRAC = (v + 1) / 2
LOG_SIGMA = FRAC * sp.log(beta_t) + (1 - FRAC) * sp.log(beta_tilde)
SIGMA_GENERIC = sp.simplify(sp.exp(LOG_SIGMA))  # beta_t^frac beta_tilde^(1 - frac)
D_LOG_SIGMA_D_V = sp.diff(LOG_SIGMA, v)
SIGMA_LEARNED_RANGE = SIGMA_GENERIC.subs(beta_tilde, posterior.VARIANCE)

# --- The bound term with a learned variance -----------------------------------------------------
KL_MEANS = NORMAL_KL.subs({MEAN_1: mu_tilde, VAR_1: beta_tilde, MEAN_2: mu_theta, VAR_2: Sigma}, simultaneous=True)
KL_GAP = KL_MEANS.subs(mu_tilde, mu_theta + MEAN_GAP)  # a function of the mean difference alone
# In the log-variance, as improved-diffusion's normal_kl takes it: no log of a power left to split.
KL_LOG_VARIANCE = sp.expand_log(KL_GAP.subs(Sigma, sp.exp(log_sigma)))
KL_V = KL_LOG_VARIANCE.subs(log_sigma, LOG_SIGMA)
LEARNED_KL = KL_V.subs(beta_tilde, posterior.VARIANCE)
D_KL_D_SIGMA = sp.diff(KL_GAP, Sigma)
D_KL_D_V = sp.diff(KL_V, v)
(V_STAR,) = sp.solve(sp.Eq(D_KL_D_V, 0), v)
D2_KL_D_V2 = sp.diff(KL_V, v, 2)

# --- The hybrid objective, per dimension, with the eps-parameterised means of derivation (d) ------
L_SIMPLE = (eps - eps_theta) ** 2
L_VLB_EPS = NORMAL_KL.subs(
    {MEAN_1: eps_parameterisation.EPS_MEAN, VAR_1: beta_tilde, MEAN_2: eps_parameterisation.MU_THETA, VAR_2: Sigma},
    simultaneous=True,
)
D_L_VLB_D_EPS_THETA = sp.diff(L_VLB_EPS, eps_theta)
# L_vlb's pull on eps_theta over L_simple's; eps and eps_theta cancel (sympy.cancel).
GRADIENT_RATIO = sp.factor(sp.cancel(D_L_VLB_D_EPS_THETA / sp.diff(L_SIMPLE, eps_theta)))
# L_vlb with the learned-range variance, in the log-variance form, with derivation (d)'s means.
L_VLB_V = KL_V.subs(MEAN_GAP, eps_parameterisation.EPS_MEAN - eps_parameterisation.MU_THETA)
L_HYBRID_SG = L_SIMPLE + lam * L_VLB_V.subs(eps_theta, eps_sg)  # stop-gradient on mu_theta inside L_vlb

# --- t = 1 ---------------------------------------------------------------------------------------
SIGMA_AT_V_BELOW_1 = SIGMA_GENERIC.subs(v, 1 - 2 * w)
BETA_TILDE_2 = posterior.VARIANCE.subs({beta_t: beta_2, alpha_bar_prev: 1 - beta_1}, simultaneous=True)

# Nichol & Dhariwal's form (eq. 15 with their interpolation weight written frac = (v + 1) / 2).
PAPER_BETA_TILDE = (1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t
PAPER_LOG_SIGMA = FRAC * sp.log(beta_t) + (1 - FRAC) * sp.log(PAPER_BETA_TILDE)
PAPER_SIGMA_GEOMETRIC = beta_t**FRAC * PAPER_BETA_TILDE ** (1 - FRAC)
PAPER_KL = (sp.log(Sigma) - sp.log(beta_tilde) + (beta_tilde + MEAN_GAP**2) / Sigma - 1) / 2
PAPER_KL_LOG_VARIANCE = (log_sigma - sp.log(beta_tilde) + (beta_tilde + MEAN_GAP**2) * sp.exp(-log_sigma) - 1) / 2
PAPER_LEARNED_KL = PAPER_KL_LOG_VARIANCE.subs(
    {log_sigma: PAPER_LOG_SIGMA, beta_tilde: PAPER_BETA_TILDE}, simultaneous=True
)


def _interpolation_steps() -> tuple[Step, ...]:
    """eq. (15): the interpolation, its ends, positivity and monotonicity in v."""
    return (
        Step(
            "Definition: improved-diffusion's map from the network output v (nominally [-1, 1]; not clipped) to the "
            "interpolation weight: frac = (v + 1) / 2.",
            sp.Symbol("frac"),
            FRAC,
            lhs_latex=r"\mathrm{frac}",
            check=Check.DEFINITION,
        ),
        Step(
            "Definition (eq. 15): interpolate the two fixed variances of derivation (h) in log space.",
            sp.Symbol("log_Sigma"),
            LOG_SIGMA,
            lhs_latex=r"\log \Sigma_\theta",
            check=Check.DEFINITION,
        ),
        named_step(
            "Exponentiate (sympy.simplify of exp(log Sigma_theta)): a weighted geometric mean of beta_t and "
            "beta_tilde_t.",
            r"\Sigma_\theta = e^{\log \Sigma_\theta}",
            sp.exp(LOG_SIGMA),
            beta_t**FRAC * beta_tilde ** (1 - FRAC),
        ),
        named_step(
            "... and back: its log is the interpolation (the exp/log round trip is exact for positive bases).",
            r"\log \Sigma_\theta",
            sp.expand_log(sp.log(SIGMA_GENERIC)),
            LOG_SIGMA,
        ),
        named_step(
            "Positive for every real v: a positive base to a real power is positive (SymPy's assumptions "
            "give |Sigma_theta| = Sigma_theta).",
            r"|\Sigma_\theta|",
            sp.Abs(SIGMA_GENERIC),
            SIGMA_GENERIC,
        ),
        named_step(
            "v = 1 (frac = 1) gives the forward variance beta_t ...",
            r"\Sigma_\theta\big|_{v = 1}",
            SIGMA_GENERIC.subs(v, 1),
            beta_t,
        ),
        named_step(
            "... and v = -1 (frac = 0) the posterior variance beta_tilde_t.",
            r"\Sigma_\theta\big|_{v = -1}",
            SIGMA_GENERIC.subs(v, -1),
            beta_tilde,
        ),
        named_step(
            "log Sigma_theta is affine in v with slope (log beta_t - log beta_tilde_t) / 2 ...",
            r"\frac{\partial \log \Sigma_\theta}{\partial v}",
            D_LOG_SIGMA_D_V,
            (sp.log(beta_t) - sp.log(beta_tilde)) / 2,
        ),
        named_step(
            "... which is positive: beta_t - beta_tilde_t = alpha_bar_{t-1} beta_t^2 / (1 - alpha_bar_t) > 0 "
            "(derivation (b)'s beta_tilde_t). So Sigma_theta increases with v and lies in [beta_tilde_t, beta_t] "
            "for v in [-1, 1].",
            r"\beta_t - \tilde{\beta}_t",
            beta_t - posterior.VARIANCE,
            alpha_bar_prev * beta_t**2 / (1 - alpha_bar_t),
        ),
        named_step(
            "Its derivative in v: Sigma_theta (log beta_t - log beta_tilde_t) / 2 > 0.",
            r"\frac{\partial \Sigma_\theta}{\partial v}",
            sp.diff(SIGMA_GENERIC, v),
            SIGMA_GENERIC * (sp.log(beta_t) - sp.log(beta_tilde)) / 2,
        ),
    )


def _bound_term_steps() -> tuple[Step, ...]:
    """The bound term L_{t-1} with Sigma_theta: its stationary point and convexity in v."""
    return (
        named_step(
            "The bound term per dimension with a learned variance: derivation (c)'s KL from "
            "N(mu_tilde_t, beta_tilde_t) to N(mu_theta, Sigma_theta), with mu_tilde_t = mu_theta + Delta_t; it "
            "depends on the means only through Delta_t.",
            r"L_{t-1}",
            KL_GAP,
            PAPER_KL,
        ),
        named_step(
            "In the log-variance s_theta = log Sigma_theta (Sigma_theta = e^{s_theta}), the form improved-diffusion's "
            "normal_kl evaluates; with s_theta = log Sigma_theta(v) of eq. (15) it is linear in v apart from "
            "e^{-s_theta}.",
            r"L_{t-1}\big|_{\Sigma_\theta = e^{s_\theta}}",
            KL_LOG_VARIANCE,
            PAPER_KL_LOG_VARIANCE,
        ),
        named_step(
            "Averaged over q (Delta_t^2 -> M_t) it is derivation (j)'s expected bound term with sigma_t^2 = "
            "Sigma_theta.",
            r"L_{t-1}\big|_{\Delta_t^2 = M_t}",
            KL_GAP.subs(MEAN_GAP, sp.sqrt(optimal_variance.M)),
            optimal_variance.EXPECTED_KL.subs(sigma2, Sigma),
        ),
        named_step(
            "Its derivative in the variance vanishes only at Sigma_theta = beta_tilde_t + Delta_t^2 ...",
            r"\frac{\partial L_{t-1}}{\partial \Sigma_\theta}",
            D_KL_D_SIGMA,
            (Sigma - beta_tilde - MEAN_GAP**2) / (2 * Sigma**2),
        ),
        named_step(
            "... and with Sigma_theta = Sigma_theta(v) the chain rule gives the v-gradient as that times "
            "dSigma_theta/dv > 0, so the v-gradient vanishes exactly where Sigma_theta(v) = beta_tilde_t + "
            "Delta_t^2: the learned variance is trained towards derivation (j)'s optimum.",
            r"\frac{\partial L_{t-1}}{\partial v}",
            D_KL_D_V,
            D_KL_D_SIGMA.subs(Sigma, SIGMA_GENERIC) * sp.diff(SIGMA_GENERIC, v),
        ),
        named_step(
            "Solving for v (sympy.solve): the one stationary point ...",
            r"v^*",
            V_STAR,
            2 * sp.log((beta_tilde + MEAN_GAP**2) / beta_tilde) / sp.log(beta_t / beta_tilde) - 1,
        ),
        named_step(
            "... where indeed log Sigma_theta = log(beta_tilde_t + Delta_t^2) (inside [-1, 1] when "
            "beta_tilde_t + Delta_t^2 <= beta_t).",
            r"\log \Sigma_\theta(v^*)",
            LOG_SIGMA.subs(v, V_STAR),
            sp.log(beta_tilde + MEAN_GAP**2),
        ),
        named_step(
            "The bound term is convex in v (second derivative (log beta_t - log beta_tilde_t)^2 (beta_tilde_t + "
            "Delta_t^2) / (8 Sigma_theta) > 0), so that stationary point is its minimum.",
            r"\frac{\partial^2 L_{t-1}}{\partial v^2}",
            D2_KL_D_V2,
            (sp.log(beta_t) - sp.log(beta_tilde)) ** 2 * (beta_tilde + MEAN_GAP**2) / (8 * SIGMA_GENERIC),
        ),
    )


def _hybrid_steps() -> tuple[Step, ...]:
    """L_hybrid = L_simple + lambda L_vlb with the stop-gradient on mu_theta inside L_vlb."""
    c2 = beta_t**2 / (alpha_t * (1 - alpha_bar_t))  # squared eps coefficient of the means (derivations (d), (j))
    return (
        named_step(
            "In L_vlb the model mean gets the gradient (mu_theta - mu_tilde_t) / Sigma_theta: weight 1 / Sigma_theta, "
            "large where Sigma_theta <= beta_t is small (small t).",
            r"\frac{\partial L_{t-1}}{\partial \mu_\theta}",
            sp.diff(KL_MEANS, mu_theta),
            (mu_theta - mu_tilde) / Sigma,
        ),
        named_step(
            "With derivation (d)'s eps-parameterised means, the gradient on the network's eps_theta is "
            "beta_t^2 / (alpha_t (1 - alpha_bar_t)) (eps_theta - eps) / Sigma_theta ...",
            r"\frac{\partial L_{t-1}}{\partial \epsilon_\theta}",
            D_L_VLB_D_EPS_THETA,
            c2 * (eps_theta - eps) / Sigma,
        ),
        named_step(
            "... which is L_simple's gradient 2 (eps_theta - eps) times derivation (e)'s weight lambda_t at "
            "sigma_t^2 = Sigma_theta: without the stop-gradient, lambda L_vlb adds lambda lambda_t(Sigma_theta) "
            "times L_simple's pull on the mean, re-weighting the mean's training by t.",
            r"\frac{\partial L_{t-1} / \partial \epsilon_\theta}"
            r"{\partial L_{\mathrm{simple}} / \partial \epsilon_\theta}",
            D_L_VLB_D_EPS_THETA / sp.diff(L_SIMPLE, eps_theta),
            loss_weights.LOSS_WEIGHT.subs(sigma2, Sigma),
        ),
        named_step(
            "That weight is unbounded as Sigma_theta -> 0 (its reciprocal tends to 0) ...",
            r"\lim_{\Sigma_\theta \to 0^+} \lambda_t(\Sigma_\theta)^{-1}",
            sp.limit(1 / GRADIENT_RATIO, Sigma, 0, "+"),
            sp.Integer(0),
        ),
        named_step(
            "... and at the learned range's lower end Sigma_theta = beta_tilde_t it is derivation (e)'s "
            "beta_t / (2 alpha_t (1 - alpha_bar_{t-1})), infinite at t = 1.",
            r"\lambda_t(\tilde{\beta}_t)",
            GRADIENT_RATIO.subs(Sigma, posterior.VARIANCE),
            beta_t / (2 * alpha_t * (1 - alpha_bar_prev)),
        ),
        named_step(
            "With the stop-gradient, L_hybrid = L_simple + lambda L_vlb(sg(eps_theta), v): its eps_theta-gradient is "
            "L_simple's alone, so the mean is trained by L_simple only ...",
            r"\frac{\partial L_{\mathrm{hybrid}}}{\partial \epsilon_\theta}",
            sp.diff(L_HYBRID_SG, eps_theta),
            sp.diff(L_SIMPLE, eps_theta),
        ),
        named_step(
            "... while its v-gradient, evaluated at sg(eps_theta) = eps_theta, is lambda times L_vlb's "
            "unchanged (L_simple does not depend on v): the variance is trained by lambda L_vlb only.",
            r"\frac{\partial L_{\mathrm{hybrid}}}{\partial v}\Big|_{\mathrm{sg}(\epsilon_\theta) = \epsilon_\theta}",
            sp.diff(L_HYBRID_SG, v).subs(eps_sg, eps_theta),
            lam * sp.diff(L_VLB_V, v),
        ),
    )


def _t1_steps() -> tuple[Step, ...]:
    """t = 1: beta_tilde_1 = 0 collapses the range; improved-diffusion's substitute beta_tilde_2."""
    return (
        named_step(
            "t = 1: beta_tilde_1 = 0 (derivation (b)), so log beta_tilde_1 = -oo. For every v < 1 (v = 1 - 2w, "
            "w > 0) the interpolation tends to 0 as beta_tilde_t -> 0: a learned-range decoder at t = 1 needs a "
            "substitute for beta_tilde_1.",
            r"\lim_{\tilde{\beta}_t \to 0^+} \Sigma_\theta\big|_{v = 1 - 2w}",
            sp.limit(SIGMA_AT_V_BELOW_1, beta_tilde, 0, "+"),
            sp.Integer(0),
        ),
        named_step(
            "improved-diffusion's substitute, beta_tilde_2 (its posterior_log_variance_clipped), in the first two "
            "betas (alpha_bar_1 = 1 - beta_1): beta_1 beta_2 / (beta_1 + beta_2 - beta_1 beta_2) ...",
            r"\tilde{\beta}_2",
            BETA_TILDE_2,
            beta_1 * beta_2 / (beta_1 + beta_2 - beta_1 * beta_2),
        ),
        named_step(
            "... below beta_1 (the gap is beta_1^2 (1 - beta_2) / (beta_1 + beta_2 - beta_1 beta_2) > 0), so the "
            "range [beta_tilde_2, beta_1] used at t = 1 is not empty.",
            r"\beta_1 - \tilde{\beta}_2",
            beta_1 - BETA_TILDE_2,
            beta_1**2 * (1 - beta_2) / (beta_1 + beta_2 - beta_1 * beta_2),
        ),
    )


@functools.cache
def derivation() -> Derivation:
    """The chain from eq. (15) to the bound term's optimum in v and the hybrid objective's stop-gradient."""
    steps = _interpolation_steps() + _bound_term_steps() + _hybrid_steps() + _t1_steps()
    results = (
        named_step(
            "The learned-range variance (eq. 15) in the geometric form derived above, with derivation (b)'s "
            "beta_tilde_t (the geometric form, not exp(...): the exp/log round trip needs beta_tilde_t > 0, which "
            "SymPy cannot know for an expression in alpha_bar_{t-1}).",
            r"\Sigma_\theta(v)",
            SIGMA_LEARNED_RANGE,
            PAPER_SIGMA_GEOMETRIC,
        ),
        named_step(
            "Its ends: v = 1 gives beta_t ...",
            r"\Sigma_\theta(1)",
            SIGMA_LEARNED_RANGE.subs(v, 1),
            beta_t,
        ),
        named_step(
            "... and v = -1 gives beta_tilde_t.",
            r"\Sigma_\theta(-1)",
            SIGMA_LEARNED_RANGE.subs(v, -1),
            PAPER_BETA_TILDE,
        ),
        named_step(
            "The bound term per dimension with the learned-range variance, in v, the schedule and Delta_t, with "
            "log Sigma_theta the interpolation of eq. (15) (as improved-diffusion evaluates it).",
            r"L_{t-1}(v, \Delta_t)",
            LEARNED_KL,
            PAPER_LEARNED_KL,
        ),
    )
    return Derivation(
        key="k",
        title=(
            "Learned variances: the learned-range interpolation, its bound term, and the hybrid objective's "
            "stop-gradient (Nichol & Dhariwal 2021)"
        ),
        module=__name__,
        summary=(
            "Nichol & Dhariwal let the network output one number v per dimension and set the reverse variance to "
            "Sigma_theta = exp(frac log beta_t + (1 - frac) log beta_tilde_t), frac = (v + 1) / 2 (eq. 15; "
            "improved-diffusion's learned range). This is the geometric interpolation beta_t^frac "
            "beta_tilde_t^(1 - frac): positive for every v, beta_t at v = 1, beta_tilde_t at v = -1, and increasing "
            "in v because log Sigma_theta is affine in v with slope (log beta_t - log beta_tilde_t) / 2 > 0, so "
            "v in [-1, 1] keeps it between derivation (h)'s two fixed choices (the output is not clipped; other "
            "values extrapolate). Its bound term is derivation (c)'s KL from N(mu_tilde_t, beta_tilde_t) to "
            "N(mu_theta, Sigma_theta), a function of the mean difference Delta_t; its v-gradient is its "
            "Sigma-gradient (Sigma_theta - beta_tilde_t - Delta_t^2) / (2 Sigma_theta^2) times dSigma_theta/dv > 0, "
            "so it vanishes exactly where Sigma_theta = beta_tilde_t + Delta_t^2, and the bound term is convex in v: "
            "averaged over q the learned variance is trained towards derivation (j)'s optimum beta_tilde_t + M_t. "
            "The hybrid objective L_simple + lambda L_vlb (lambda = 0.001) would also pull the mean through L_vlb, "
            "with gradient (mu_theta - mu_tilde_t) / Sigma_theta: on eps_theta this is L_simple's gradient times "
            "derivation (e)'s weight lambda_t(Sigma_theta), unbounded as Sigma_theta -> 0 and infinite at t = 1 "
            "for Sigma_theta = beta_tilde_t, which would bring back the per-t weighting that L_simple drops. The "
            "stop-gradient on mu_theta inside L_vlb removes that pull: the mean is trained by L_simple alone, and "
            "the v-gradient of L_hybrid is lambda times that of L_vlb, unchanged. At t = 1, beta_tilde_1 = 0 makes "
            "log beta_tilde_1 = -oo and the interpolation collapses to 0 for every v < 1; improved-diffusion "
            "therefore uses log beta_tilde_2 for the lower end at t = 1 (its posterior_log_variance_clipped), so "
            "its t = 1 range is [beta_tilde_2, beta_1], and its t = 1 bound term is the decoder negative "
            "log-likelihood rather than a KL."
        ),
        steps=steps,
        results=results,
    )


sigma2_learned_range = float64_function(SIGMA_LEARNED_RANGE, (v, beta_t, alpha_bar_prev), "sigma2_learned_range")
learned_kl = float64_function(LEARNED_KL, (v, beta_t, alpha_bar_prev, MEAN_GAP), "learned_kl")

__all__ = [
    "LEARNED_KL",
    "MEAN_GAP",
    "SIGMA_LEARNED_RANGE",
    "derivation",
    "learned_kl",
    "sigma2_learned_range",
    "v",
]
