"""(g) Maximum likelihood is minimum KL(P_data || P_theta); the VAE bound log p(x) = ELBO + KL.

The seed tutorial opens with two arguments that DDPM inherits:

1. theta* = argmax_theta prod_i P_theta(x^i) = argmax sum_i log P_theta(x^i)
          ~ argmax E_{x ~ P_data}[log P_theta(x)] = argmin KL(P_data || P_theta),
   because E_data[log P_theta] = -KL(P_data || P_theta) - H(P_data) and H(P_data) does not depend on
   theta. Here both sides are computed in closed form for P_data = N(m, s^2), P_theta = N(mu, v), and
   the maximiser is found by solving the gradient equations: (mu, v) = (m, s^2), where the KL is 0. The
   "~" step is shown on n = 3 samples: the sample log-likelihood is maximised by the sample mean and the
   (biased) sample variance, the moments of the empirical distribution.
2. For any q(z|x): log p(x) = ELBO(q) + KL(q(z|x) || p(z|x)) >= ELBO(q), with
   ELBO(q) = E_q[log p(x, z) - log q(z|x)]. Shown exactly for the linear-Gaussian model
   z ~ N(0, 1), x | z ~ N(w z + b, v) and q(z|x) = N(m_q, v_q): the marginal p(x) and the posterior
   p(z|x) by completing the square in z and a Gaussian integral, the ELBO as an expectation under q.

Exports (symbols: DATA_MEAN m, DATA_VAR s^2, MODEL_MEAN mu, MODEL_VAR v; X, W, B, NOISE_VAR v_x, Q_MEAN m_q,
Q_VAR v_q):
    Each export is the derived expression; *_PAPER are the paper's forms the steps compare them with.
    GENERAL_EXPECTED_LOG_LIKELIHOOD, GENERAL_KL, GENERAL_ENTROPY   the integrals for any positive densities
    EXPECTED_LOG_LIKELIHOOD   E_{N(m, s^2)}[log N(x; mu, v)]
    DATA_ENTROPY              H(N(m, s^2)) = 1/2 log(2 pi e s^2)
    VAE_LOG_MARGINAL          log p(x) = log N(x; b, w^2 + v_x)
    VAE_POSTERIOR_MEAN, VAE_POSTERIOR_VAR   p(z|x) = N(w (x - b)/(w^2 + v_x), v_x/(w^2 + v_x))
    VAE_ELBO                  E_q[log p(x, z) - log q(z)]
    VAE_POSTERIOR_KL          KL(q(z|x) || p(z|x))
Numeric (float64, broadcasting, evaluated at 50 digits):
    expected_log_likelihood(data_mean, data_var, model_mean, model_var)
    vae_log_marginal(x, w, b, noise_var)
    vae_elbo(x, w, b, noise_var, q_mean, q_var)
    vae_posterior_kl(x, w, b, noise_var, q_mean, q_var)
    vae_posterior_mean(x, w, b, noise_var), vae_posterior_var(w, noise_var)
"""

from __future__ import annotations

import functools

import sympy as sp

from derivations.chain import Check, Derivation, Step
from derivations.gaussian_kl import MEAN_1, MEAN_2, NORMAL_KL, VAR_1, VAR_2, normal_expectation
from derivations.numeric import float64_function
from derivations.symbols import normal_log_density

# Part 1: data and model distributions.
DATA_MEAN = sp.Symbol("m", real=True)
DATA_VAR = sp.Symbol("s^2", positive=True)
MODEL_MEAN = sp.Symbol(r"\mu_\theta", real=True)
MODEL_VAR = sp.Symbol(r"v_\theta", positive=True)
_x = sp.Symbol("x", real=True)

# Part 2: the linear-Gaussian latent-variable model and the variational distribution.
X = sp.Symbol("x", real=True)
Z = sp.Symbol("z", real=True)
W = sp.Symbol("w", real=True)
B = sp.Symbol("b", real=True)
NOISE_VAR = sp.Symbol("v_x", positive=True)
Q_MEAN = sp.Symbol("m_q", real=True)
Q_VAR = sp.Symbol("v_q", positive=True)


def _kl(m1, v1, m2, v2) -> sp.Expr:
    return NORMAL_KL.subs({MEAN_1: m1, VAR_1: v1, MEAN_2: m2, VAR_2: v2}, simultaneous=True)


# --- part 1 --------------------------------------------------------------------------------------
# Any family: p_data(x) > 0 and p_theta(x) > 0 as undetermined positive functions, theta a parameter of p_theta.
THETA = sp.Symbol(r"\theta", real=True)
P_DATA = sp.Function(r"p_{\mathrm{data}}", positive=True)(_x)
P_THETA = sp.Function(r"p_\theta", positive=True)(_x, THETA)
_LINE = (_x, -sp.oo, sp.oo)
GENERAL_EXPECTED_LOG_LIKELIHOOD = sp.Integral(P_DATA * sp.log(P_THETA), _LINE)
GENERAL_KL = sp.Integral(P_DATA * sp.log(P_DATA / P_THETA), _LINE)
GENERAL_ENTROPY = -sp.Integral(P_DATA * sp.log(P_DATA), _LINE)


def merge_integrals(expr: sp.Expr) -> sp.Integral:
    """A linear combination of integrals over the line as one integral of the combined integrand (linearity)."""
    total = sp.Integer(0)
    for term in sp.Add.make_args(sp.expand(expr)):
        coefficient, integral = term.as_independent(sp.Integral)
        if not isinstance(integral, sp.Integral) or integral.limits != (_LINE,):
            raise ValueError(f"merge_integrals takes integrals over the line, got {term}")
        total += coefficient * integral.function
    return sp.Integral(total, _LINE)


# The Gaussian instance, each export the derived expression (the paper's forms are only compared with):
# E_{N(m, s^2)}[log N(x; mu, v)] and H(N(m, s^2)) as Gaussian expectations (derivation (c)'s moments).
EXPECTED_LOG_LIKELIHOOD = sp.expand(
    normal_expectation(normal_log_density(_x, MODEL_MEAN, MODEL_VAR), _x, DATA_MEAN, DATA_VAR)
)
DATA_ENTROPY = sp.expand(-normal_expectation(normal_log_density(_x, DATA_MEAN, DATA_VAR), _x, DATA_MEAN, DATA_VAR))
EXPECTED_LOG_LIKELIHOOD_PAPER = -sp.log(2 * sp.pi * MODEL_VAR) / 2 - (
    (DATA_MEAN - MODEL_MEAN) ** 2 + DATA_VAR
) / (2 * MODEL_VAR)
DATA_ENTROPY_PAPER = sp.log(2 * sp.pi * sp.E * DATA_VAR) / 2
DATA_MODEL_KL = _kl(DATA_MEAN, DATA_VAR, MODEL_MEAN, MODEL_VAR)

# --- part 2 --------------------------------------------------------------------------------------
_LOG_JOINT = normal_log_density(Z, 0, 1) + normal_log_density(X, W * Z + B, NOISE_VAR)
_log_joint_poly = sp.Poly(sp.expand(_LOG_JOINT), Z)
# log p(x, z) = -A z^2 / 2 + B_z z + C: read the coefficients off the polynomial in z.
_PRECISION = sp.factor(-2 * _log_joint_poly.coeff_monomial(Z**2))  # A
_LINEAR = sp.factor(_log_joint_poly.coeff_monomial(Z))  # B_z
_CONSTANT = _log_joint_poly.coeff_monomial(1)  # C
_A = sp.Symbol("A", positive=True)
_Bz = sp.Symbol("B_z", real=True)
_GAUSSIAN_INTEGRAL_CLOSED = sp.sqrt(2 * sp.pi / _A) * sp.exp(_Bz**2 / (2 * _A))

# Derived: log p(x) = C + log of the Gaussian integral; p(z|x) = N(B_z / A, 1 / A) (the completed square).
VAE_LOG_MARGINAL = sp.expand_log(
    _CONSTANT + sp.log(_GAUSSIAN_INTEGRAL_CLOSED.subs({_A: _PRECISION, _Bz: _LINEAR})), force=True
)
VAE_POSTERIOR_MEAN = sp.factor(_LINEAR / _PRECISION)
VAE_POSTERIOR_VAR = sp.factor(1 / _PRECISION)
VAE_LOG_MARGINAL_PAPER = normal_log_density(X, B, W**2 + NOISE_VAR)
VAE_POSTERIOR_MEAN_PAPER = W * (X - B) / (W**2 + NOISE_VAR)
VAE_POSTERIOR_VAR_PAPER = NOISE_VAR / (W**2 + NOISE_VAR)

_LOG_Q = normal_log_density(Z, Q_MEAN, Q_VAR)
VAE_ELBO = sp.expand(normal_expectation(_LOG_JOINT - _LOG_Q, Z, Q_MEAN, Q_VAR))  # E_q[log p(x, z) - log q(z)]
VAE_ELBO_PAPER = (
    -sp.log(2 * sp.pi * NOISE_VAR) / 2
    - ((X - B - W * Q_MEAN) ** 2 + W**2 * Q_VAR) / (2 * NOISE_VAR)
    - sp.log(2 * sp.pi) / 2
    - (Q_MEAN**2 + Q_VAR) / 2
    + sp.log(2 * sp.pi * sp.E * Q_VAR) / 2
)
VAE_POSTERIOR_KL = _kl(Q_MEAN, Q_VAR, VAE_POSTERIOR_MEAN, VAE_POSTERIOR_VAR)

expected_log_likelihood = float64_function(
    EXPECTED_LOG_LIKELIHOOD, (DATA_MEAN, DATA_VAR, MODEL_MEAN, MODEL_VAR), "expected_log_likelihood"
)
vae_log_marginal = float64_function(VAE_LOG_MARGINAL, (X, W, B, NOISE_VAR), "vae_log_marginal")
vae_elbo = float64_function(VAE_ELBO, (X, W, B, NOISE_VAR, Q_MEAN, Q_VAR), "vae_elbo")
vae_posterior_kl = float64_function(VAE_POSTERIOR_KL, (X, W, B, NOISE_VAR, Q_MEAN, Q_VAR), "vae_posterior_kl")
vae_posterior_mean = float64_function(VAE_POSTERIOR_MEAN, (X, W, B, NOISE_VAR), "vae_posterior_mean")
vae_posterior_var = float64_function(VAE_POSTERIOR_VAR, (W, NOISE_VAR), "vae_posterior_var")

N_SAMPLES = 3
_samples = sp.symbols("x^1:4", real=True)


@functools.cache
def derivation() -> Derivation:
    """Part 1 (maximum likelihood = minimum KL) then part 2 (the VAE bound), each step checked."""
    m, s2, mu, v = DATA_MEAN, DATA_VAR, MODEL_MEAN, MODEL_VAR
    expected_ll_derived, entropy_derived = EXPECTED_LOG_LIKELIHOOD, DATA_ENTROPY
    gaussian_integral = sp.integrate(sp.exp(-_A * Z**2 / 2 + _Bz * Z), (Z, -sp.oo, sp.oo))
    log_marginal_derived, elbo_derived = VAE_LOG_MARGINAL, VAE_ELBO
    general_sum = merge_integrals(GENERAL_EXPECTED_LOG_LIKELIHOOD + GENERAL_KL + GENERAL_ENTROPY)
    general_gradient = merge_integrals(sp.diff(GENERAL_EXPECTED_LOG_LIKELIHOOD, THETA) + sp.diff(GENERAL_KL, THETA))
    general_steps = (
        Step(
            "Any family: for densities p_data > 0 and p_theta > 0, pointwise log p_theta = log p_data - "
            "log(p_data / p_theta) ...",
            P_DATA * sp.log(P_THETA),
            P_DATA * sp.log(P_DATA) - P_DATA * sp.log(P_DATA / P_THETA),
            lhs_latex=r"p_{\mathrm{data}}(x) \log p_\theta(x)",
        ),
        Step(
            "... so, integrating (linearity of the integral), E_data[log p_theta] + KL(P_data || P_theta) + "
            "H(P_data) is the integral of zero: E_data[log p_theta] = -KL(P_data || P_theta) - H(P_data) for "
            "every model family, not only a Gaussian one.",
            general_sum,
            0,
            lhs_latex=r"\mathbb{E}_{x\sim P_{data}}[\log p_\theta(x)] + D_{\mathrm{KL}}(P_{data}\,\|\,P_\theta)"
                      r" + H(P_{data})",
        ),
        Step(
            "H(P_data) has no theta: the gradients of the expected log-likelihood and of -KL agree (the same "
            "integrand, differentiated under the integral), so their maximisers are the same theta.",
            general_gradient,
            0,
            lhs_latex=r"\partial_\theta \mathbb{E}_{data}[\log p_\theta] + \partial_\theta "
                      r"D_{\mathrm{KL}}(P_{data}\,\|\,P_\theta)",
        ),
        Step(
            "Theorem assumed (the strong law of large numbers) for the step from the sample to the expectation: "
            "for x^i drawn i.i.d. from P_data with E|log p_theta(x)| finite, (1/n) sum_i log p_theta(x^i) -> "
            "E_data[log p_theta] almost surely as n -> oo (for each theta; a maximiser over theta needs uniform "
            "convergence on top, which this derivation does not treat).",
            sp.Symbol("LLN"),
            GENERAL_EXPECTED_LOG_LIKELIHOOD,
            Check.DEFINITION,
            lhs_latex=r"\lim_{n\to\infty} \frac{1}{n}\sum_{i=1}^{n} \log p_\theta(x^i)",
        ),
    )

    # n = 3 samples: maximise the sample log-likelihood by solving its gradient equations.
    sample_ll = sp.Add(*(normal_log_density(xi, mu, v) for xi in _samples))
    (sample_opt,) = sp.solve([sp.diff(sample_ll, mu), sp.diff(sample_ll, v)], [mu, v], dict=True)
    sample_mean = sp.Add(*_samples) / N_SAMPLES
    sample_var = sp.Add(*((xi - sample_mean) ** 2 for xi in _samples)) / N_SAMPLES

    # The population objective: stationary points of E_data[log P_theta].
    (population_opt,) = sp.solve(
        [sp.diff(expected_ll_derived, mu), sp.diff(expected_ll_derived, v)], [mu, v], dict=True
    )
    hessian = sp.hessian(expected_ll_derived, (mu, v)).subs(population_opt)

    log_posterior = normal_log_density(Z, VAE_POSTERIOR_MEAN, VAE_POSTERIOR_VAR)
    steps = general_steps + (
        Step(
            "Maximum likelihood on n = 3 samples: solving d/dmu = d/dv = 0 for sum_i log N(x^i; mu, v) (SymPy's "
            "solve) gives the sample mean ...",
            sample_opt[mu],
            sample_mean,
            lhs_latex=r"\arg\max_{\mu_\theta} \sum_{i=1}^{3} \log \mathcal{N}(x^i;\mu_\theta,v_\theta)",
        ),
        Step(
            "... and the (biased) sample variance: the moments of the empirical distribution, which converge to "
            "those of P_data as n grows, so the sum becomes n E_data[log P_theta].",
            sample_opt[v],
            sample_var,
            lhs_latex=r"\arg\max_{v_\theta} \sum_{i=1}^{3} \log \mathcal{N}(x^i;\mu_\theta,v_\theta)",
        ),
        Step(
            "The Gaussian instance: the expected log-likelihood under P_data = N(m, s^2), integrated through the "
            "first two moments.",
            expected_ll_derived,
            EXPECTED_LOG_LIKELIHOOD_PAPER,
            lhs_latex=r"\mathbb{E}_{x\sim P_{data}}[\log P_\theta(x)]",
        ),
        Step(
            "The entropy of the data distribution, -E_data[log P_data], the same way.",
            entropy_derived,
            DATA_ENTROPY_PAPER,
            lhs_latex=r"H(P_{data}) = -\int P_{data}(x)\log P_{data}(x)\,dx",
        ),
        Step(
            "Adding and subtracting the theta-free entropy: E_data[log P_theta] = -KL(P_data || P_theta) - "
            "H(P_data), with the KL of derivation (c).",
            expected_ll_derived,
            -DATA_MODEL_KL - entropy_derived,
            lhs_latex=r"\mathbb{E}_{x\sim P_{data}}[\log P_\theta(x)]",
        ),
        Step(
            "The only stationary point of the expected log-likelihood (SymPy's solve) has mu = m ...",
            population_opt[mu],
            m,
            lhs_latex=r"\mu_\theta^{*}",
        ),
        Step("... and v = s^2.", population_opt[v], s2, lhs_latex=r"v_\theta^{*}"),
        Step(
            "The Hessian there is diagonal, with entries -1/s^2 ...",
            hessian[0, 0],
            -1 / s2,
            lhs_latex=r"\partial^2_{\mu_\theta}\,\mathbb{E}[\log P_\theta]\big|_{(m, s^2)}",
        ),
        Step(
            "... and -1/(2 s^4) ...",
            hessian[1, 1],
            -1 / (2 * s2**2),
            lhs_latex=r"\partial^2_{v_\theta}\,\mathbb{E}[\log P_\theta]\big|_{(m, s^2)}",
        ),
        Step(
            "... and no cross term: negative definite, so the stationary point is the maximum.",
            hessian[0, 1],
            sp.Integer(0),
            lhs_latex=r"\partial_{\mu_\theta}\partial_{v_\theta}\,\mathbb{E}[\log P_\theta]\big|_{(m, s^2)}",
        ),
        Step(
            "At the maximiser the KL of the data to the model is zero: maximum likelihood is minimum "
            "KL(P_data || P_theta).",
            DATA_MODEL_KL.subs(population_opt),
            sp.Integer(0),
            lhs_latex=r"D_{\mathrm{KL}}(P_{data}\,\|\,P_{\theta^*})",
        ),
        Step(
            "VAE, linear-Gaussian model z ~ N(0, 1), x | z ~ N(w z + b, v_x): log p(x, z) is a quadratic in z; "
            "its z^2 coefficient is -A/2 with precision A ...",
            _PRECISION,
            1 + W**2 / NOISE_VAR,
            lhs_latex=r"A = -2\,[z^2]\log p(x,z)",
        ),
        Step(
            "... and its z coefficient is B_z.",
            _LINEAR,
            W * (X - B) / NOISE_VAR,
            lhs_latex=r"B_z = [z]\log p(x,z)",
        ),
        Step(
            "The Gaussian integral, integrated by SymPy.",
            gaussian_integral,
            _GAUSSIAN_INTEGRAL_CLOSED,
            lhs_latex=r"\int_{-\infty}^{\infty} e^{-A z^2/2 + B_z z}\,dz",
        ),
        Step(
            "So the marginal p(x) = int p(x, z) dz is exp(C) times that integral, C the z-free part of log p(x, z): "
            "x ~ N(b, w^2 + v_x).",
            log_marginal_derived,
            VAE_LOG_MARGINAL_PAPER,
            lhs_latex=r"\log p(x) = \log \int p(x,z)\,dz",
        ),
        Step(
            "The exact posterior p(z|x) = p(x, z)/p(x) is N(B_z/A, 1/A), as an identity in z.",
            _LOG_JOINT - log_marginal_derived,
            log_posterior,
            lhs_latex=r"\log p(z|x) = \log p(x,z) - \log p(x)",
        ),
        Step(
            "Its mean B_z / A is the paper's w (x - b) / (w^2 + v_x) ...",
            VAE_POSTERIOR_MEAN,
            VAE_POSTERIOR_MEAN_PAPER,
            lhs_latex=r"B_z / A",
        ),
        Step(
            "... and its variance 1 / A is v_x / (w^2 + v_x).",
            VAE_POSTERIOR_VAR,
            VAE_POSTERIOR_VAR_PAPER,
            lhs_latex=r"1 / A",
        ),
        Step(
            "The seed's first line: log p(x) = int q(z|x) log p(x) dz for any normalised q (q's zeroth moment).",
            normal_expectation(VAE_LOG_MARGINAL, Z, Q_MEAN, Q_VAR),
            VAE_LOG_MARGINAL,
            lhs_latex=r"\int q(z|x)\log p(x)\,dz",
        ),
        Step(
            "Pointwise in z: log p(x) = log p(x, z)/q(z|x) + log q(z|x)/p(z|x) (multiply and divide by q).",
            VAE_LOG_MARGINAL,
            (_LOG_JOINT - _LOG_Q) + (_LOG_Q - log_posterior),
            lhs_latex=r"\log p(x)",
        ),
        Step(
            "The first term's expectation under q = N(m_q, v_q) is the ELBO, integrated through q's moments.",
            elbo_derived,
            VAE_ELBO_PAPER,
            lhs_latex=r"\mathrm{ELBO}(q) = \int q(z|x)\log\frac{p(x,z)}{q(z|x)}\,dz",
        ),
        Step(
            "The second term's expectation is the KL from q to the exact posterior, computed the same way.",
            normal_expectation(_LOG_Q - log_posterior, Z, Q_MEAN, Q_VAR),
            VAE_POSTERIOR_KL,
            lhs_latex=r"\int q(z|x)\log\frac{q(z|x)}{p(z|x)}\,dz",
        ),
    )
    results = (
        Step(
            "Expected log-likelihood = -KL(P_data || P_theta) - H(P_data), for Gaussian P_data and P_theta.",
            EXPECTED_LOG_LIKELIHOOD,
            -DATA_MODEL_KL - DATA_ENTROPY,
            lhs_latex=r"\mathbb{E}_{x\sim P_{data}}[\log P_\theta(x)]",
        ),
        Step(
            "The VAE identity log p(x) = ELBO(q) + KL(q(z|x) || p(z|x)); the KL is >= 0 (derivation (c)), so "
            "ELBO <= log p(x).",
            log_marginal_derived,
            VAE_ELBO + VAE_POSTERIOR_KL,
            lhs_latex=r"\log p(x)",
        ),
        Step(
            "Equality when q is the exact posterior: the ELBO at q = p(z|x) is log p(x).",
            VAE_ELBO.subs({Q_MEAN: VAE_POSTERIOR_MEAN, Q_VAR: VAE_POSTERIOR_VAR}, simultaneous=True),
            VAE_LOG_MARGINAL,
            lhs_latex=r"\mathrm{ELBO}\big(p(z|x)\big)",
        ),
    )
    return Derivation(
        key="g",
        title="Maximum likelihood, KL(P_data || P_theta) and the VAE bound",
        module="derivations.maximum_likelihood",
        summary=(
            "Maximising the likelihood of samples is, as the sample grows, maximising the expected log-likelihood "
            "under the data distribution; on three samples of a Gaussian model the maximiser is the sample mean "
            "and the biased sample variance, the empirical distribution's moments. For P_data = N(m, s^2) and "
            "P_theta = N(mu, v) the expected log-likelihood, computed as an integral, equals minus "
            "KL(P_data || P_theta) minus the entropy of P_data, which does not depend on theta; its only "
            "stationary point is (m, s^2), a maximum, where the KL vanishes. The second part is the variational "
            "bound the seed builds on: for the linear-Gaussian model z ~ N(0, 1), x | z ~ N(w z + b, v_x), "
            "completing the square in z and a Gaussian integral give the marginal N(b, w^2 + v_x) and the exact "
            "posterior; for any Gaussian q(z|x) the log-marginal splits pointwise into log p(x, z)/q plus "
            "log q/p(z|x), and taking expectations under q gives log p(x) = ELBO(q) + KL(q || p(z|x)), so the "
            "ELBO is a lower bound that is tight exactly when q is the posterior."
        ),
        steps=steps,
        results=results,
    )


__all__ = [
    "DATA_MEAN",
    "DATA_VAR",
    "MODEL_MEAN",
    "MODEL_VAR",
    "X",
    "Z",
    "W",
    "B",
    "NOISE_VAR",
    "Q_MEAN",
    "Q_VAR",
    "EXPECTED_LOG_LIKELIHOOD",
    "DATA_ENTROPY",
    "DATA_MODEL_KL",
    "VAE_LOG_MARGINAL",
    "VAE_POSTERIOR_MEAN",
    "VAE_POSTERIOR_VAR",
    "VAE_ELBO",
    "VAE_POSTERIOR_KL",
    "expected_log_likelihood",
    "vae_log_marginal",
    "vae_elbo",
    "vae_posterior_kl",
    "vae_posterior_mean",
    "vae_posterior_var",
    "derivation",
]
