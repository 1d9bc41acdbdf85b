"""(m) The KL between Gaussians with full covariance, from its integral (2-D), its sign, and the bound's gap.

Derivation (c) covers scalar and diagonal Gaussians. The gap of the bound, log p_theta(x_0) - ELBO =
KL(q(x_{1:T} | x_0) || p_theta(x_{1:T} | x_0)) (derivation (f)), is a KL between Gaussians whose covariances are
not diagonal: x_1 and x_2 are correlated under both. Here, for 2-D Gaussians p = N(mu_1, S_1), q = N(mu_2, S_2):

- KL(p || q) = E_p[log p(x) - log q(x)] is integrated with x = mu_1 + L z (S_1 = L L^T, L lower triangular,
  z two independent standard normals: derivation (c)'s normal_expectation in z_1 then z_2), and equals the seed's
  matrix formula 1/2 [log |S_2| / |S_1| - d + tr(S_2^-1 S_1) + (mu_2 - mu_1)^T S_2^-1 (mu_2 - mu_1)].
- With S_2 = M M^T, A = M^-1 S_1 M^-T is symmetric positive definite with eigenvalues l_1, l_2 > 0 and
  tr(S_2^-1 S_1) = tr A, |S_1| / |S_2| = |A|; so KL = 1/2 sum_i (l_i - 1 - log l_i) + 1/2 ||M^-1 (mu_2 - mu_1)||^2.
  f(l) = l - 1 - log l has f(1) = 0, f'(l) = 1 - 1/l and f''(l) = 1/l^2 > 0: f >= 0 with equality only at l = 1.
  Hence KL >= 0, and KL = 0 exactly when both eigenvalues are 1 (A = I, i.e. S_1 = S_2) and mu_1 = mu_2.
- The gap for T = 2: q(x_1, x_2 | x_0) and the linear-Gaussian model's posterior p_theta(x_1, x_2 | x_0) (derivation
  (f)'s model) are both 2-D Gaussians; this KL with their means and (non-diagonal) covariances equals derivation
  (f)'s gap, which is therefore >= 0 and 0 exactly when the model's posterior is q(x_{1:2} | x_0).
"""

from __future__ import annotations

import dataclasses
import functools

import sympy as sp

from derivations import elbo, gaussian_kl
from derivations.chain import Check, Derivation, Step
from derivations.domain import logs_split
from derivations.labels import named_step

D = 2
z1, z2 = sp.symbols("z_1 z_2", real=True)
m1 = sp.Matrix(sp.symbols(r"\mu_{1\,1:3}", real=True))
m2 = sp.Matrix(sp.symbols(r"\mu_{2\,1:3}", real=True))
l11, l22, n11, n22 = sp.symbols("l_11 l_22 m_11 m_22", positive=True)
l21, n21 = sp.symbols("l_21 m_21", real=True)
L = sp.Matrix([[l11, 0], [l21, l22]])  # S_1 = L L^T (any 2x2 covariance has such a factor)
M = sp.Matrix([[n11, 0], [n21, n22]])  # S_2 = M M^T
S1 = L * L.T
S2 = M * M.T
x = m1 + L * sp.Matrix([z1, z2])  # x ~ p = N(mu_1, S_1) for z ~ N(0, I)


def _log_normal(x: sp.Matrix, mean: sp.Matrix, cholesky: sp.Matrix) -> sp.Expr:
    """log N(x; mean, C C^T) in 2-D: -log(2 pi) - log|C| - 1/2 ||C^-1 (x - mean)||^2 (|C| = product of its diagonal)."""
    w = cholesky.inv() * (x - mean)
    return -sp.log(2 * sp.pi) - sp.log(cholesky[0, 0]) - sp.log(cholesky[1, 1]) - (w.T * w)[0, 0] / 2


LOG_RATIO = sp.expand(_log_normal(x, m1, L) - _log_normal(x, m2, M))  # a quadratic in z_1, z_2
KL_FROM_INTEGRAL = sp.simplify(
    gaussian_kl.normal_expectation(gaussian_kl.normal_expectation(LOG_RATIO, z2, 0, 1), z1, 0, 1)
)
KL_SEED_FORMULA = gaussian_kl.seed_matrix_kl(m1, S1, m2, S2)

# The sign: A = M^-1 S_1 M^-T, its trace and determinant, and the eigenvalue form.
A = sp.simplify(M.inv() * S1 * M.inv().T)
lam1, lam2 = sp.symbols(r"\lambda_1 \lambda_2", positive=True)
lam = sp.Symbol(r"\lambda", positive=True)
F = lam - 1 - sp.log(lam)
SHIFT = M.inv() * (m2 - m1)
KL_EIGEN_FORM = (F.subs(lam, lam1) + F.subs(lam, lam2)) / 2 + (SHIFT.T * SHIFT)[0, 0] / 2

# The gap of derivation (f) at T = 2 as a 2-D Gaussian KL: the two joint laws of (x_1, x_2) given x_0.
_x1, _x2 = elbo.xs[1], elbo.xs[2]


def _joint_from_chain(first_mean, first_var, second_coef, second_shift, second_var):
    """Mean and covariance of (x_1, x_2) for x_1 ~ N(first_mean, first_var), x_2 | x_1 ~ N(a x_1 + b, v)."""
    mean = sp.Matrix([first_mean, second_coef * first_mean + second_shift])
    cov = sp.Matrix([[first_var, second_coef * first_var],
                     [second_coef * first_var, second_coef**2 * first_var + second_var]])
    return mean, cov


def _linear_in(expr: sp.Expr, var: sp.Symbol) -> tuple[sp.Expr, sp.Expr]:
    expr = sp.expand(expr)
    return expr.coeff(var), expr.subs(var, 0)


@functools.cache
def gap_as_full_kl() -> tuple[sp.Expr, sp.Expr, sp.Matrix, sp.Matrix, sp.Matrix, sp.Matrix]:
    """(the 2-D Gaussian KL of the two joint laws, derivation (f)'s gap, q's mean, q's cov, p's mean, p's cov)."""
    q_mean, q_cov = _joint_from_chain(*elbo.marginal(1), sp.sqrt(elbo.ALPHAS[1]), 0, 1 - elbo.ALPHAS[1])
    parts = elbo.t2_model()
    post_x1_mean, post_x1_var = parts["post_x1"]
    post_x2_mean, post_x2_var = parts["post_x2"]  # linear in x_1
    a, b = _linear_in(post_x2_mean, _x1)
    p_mean, p_cov = _joint_from_chain(post_x1_mean, post_x1_var, a, b, post_x2_var)
    kl = _matrix_kl(q_mean, q_cov, p_mean, p_cov)
    return kl, parts["gap"], q_mean, q_cov, p_mean, p_cov


def _matrix_kl(mean1: sp.Matrix, cov1: sp.Matrix, mean2: sp.Matrix, cov2: sp.Matrix) -> sp.Expr:
    """The derived 2-D KL (KL_FROM_INTEGRAL) at given means and covariances, via their Cholesky factors."""
    c1, c2 = cov1.cholesky(hermitian=False), cov2.cholesky(hermitian=False)
    subs = {l11: c1[0, 0], l21: c1[1, 0], l22: c1[1, 1], n11: c2[0, 0], n21: c2[1, 0], n22: c2[1, 1]}
    subs.update({m1[i]: mean1[i] for i in range(D)})
    subs.update({m2[i]: mean2[i] for i in range(D)})
    return KL_FROM_INTEGRAL.subs(subs, simultaneous=True)


@functools.cache
def derivation() -> Derivation:
    """From the KL integral of two 2-D Gaussians to its sign and to derivation (f)'s gap."""
    kl_gap, gap, q_mean, q_cov, p_mean, p_cov = gap_as_full_kl()
    kl_is_seed = named_step(
        "The full-covariance Gaussian KL, derived from its integral (2-D), is the seed's matrix formula (its "
        "log |S_2| / |S_1| split into logs of the Cholesky factors' diagonal entries: exact, they are positive).",
        r"D_{\mathrm{KL}}\left(\mathcal{N}(\mu_1, S_1) \,\|\, \mathcal{N}(\mu_2, S_2)\right)",
        KL_FROM_INTEGRAL,
        logs_split(KL_SEED_FORMULA),
    )
    gap_domains = tuple((s, (sp.Rational(1, 10), sp.Rational(2))) for s in elbo.u[:2]) + tuple(
        (s, (sp.Rational(1, 5), sp.Rational(2))) for s in elbo.sigma2s[:2]
    ) + tuple((s, (sp.Rational(-1), sp.Rational(1))) for s in (*elbo.cs[:2], *elbo.ds[:2], elbo.x_0))
    steps = (
        Step(
            "Definition: p = N(mu_1, S_1) with S_1 = L L^T, and x = mu_1 + L z with z_1, z_2 independent standard "
            "normals. Theorems assumed: any covariance has such a lower-triangular factor L (Cholesky), and an affine "
            "map of a standard normal vector is Gaussian, so x is distributed as p.",
            sp.Symbol("x"),
            x,
            Check.DEFINITION,
            lhs_latex=r"x",
        ),
        named_step(
            "log p(x) - log q(x) at x = mu_1 + L z, with q = N(mu_2, M M^T): a quadratic in z_1, z_2 (log|S| = "
            "2 log|L|).",
            r"\log \frac{p(x)}{q(x)}",
            LOG_RATIO,
            _log_normal(x, m1, L) - _log_normal(x, m2, M),
        ),
        dataclasses.replace(
            kl_is_seed,
            description="KL(p || q) = E_z[log p(x) - log q(x)]: derivation (c)'s Gaussian expectation in z_2, then "
            "z_1 (each moment an integral), equals the seed's matrix formula with d = 2 (its log-determinants split "
            "into logs of the positive diagonal entries of L and M).",
        ),
        named_step(
            "A = M^-1 S_1 M^-T is symmetric ...",
            r"A_{12} - A_{21}",
            A[0, 1] - A[1, 0],
            0,
        ),
        named_step(
            "... with a positive leading entry ...",
            r"A_{11}",
            A[0, 0],
            (l11 / n11) ** 2,
        ),
        named_step(
            "... and a positive determinant (Sylvester's criterion: A is positive definite, its eigenvalues are real "
            "and positive) ...",
            r"\det A",
            A.det(),
            (l11 * l22 / (n11 * n22)) ** 2,
        ),
        named_step(
            "... A has the trace of S_2^-1 S_1 ...",
            r"\operatorname{tr} A",
            A.trace(),
            (S2.inv() * S1).trace(),
        ),
        named_step(
            "... and the determinant |S_1| / |S_2|, so tr(S_2^-1 S_1) and log |S_1| / |S_2| are functions of its "
            "eigenvalues.",
            r"\det A",
            A.det(),
            S1.det() / S2.det(),
        ),
        named_step(
            "With eigenvalues lambda_1 + lambda_2 = tr A and lambda_1 lambda_2 = det A (A is symmetric positive "
            "definite, so they are positive), the KL is half a sum of f(lambda_i) = lambda_i - 1 - log lambda_i "
            "plus half the squared norm of M^-1 (mu_2 - mu_1).",
            r"D_{\mathrm{KL}}\big|_{\operatorname{tr} A = \lambda_1 + \lambda_2,\ \det A = \lambda_1 \lambda_2}",
            sp.expand_log(
                (lam1 + lam2 - D - sp.log(lam1 * lam2)) / 2 + (SHIFT.T * SHIFT)[0, 0] / 2, force=True
            ),
            KL_EIGEN_FORM,
        ),
        named_step("f(1) = 0 ...", "f(1)", F.subs(lam, 1), 0),
        named_step("... f'(lambda) = 1 - 1/lambda vanishes only at lambda = 1 ...", r"f'(\lambda)",
                   sp.diff(F, lam), 1 - 1 / lam),
        named_step("... and f''(lambda) = 1/lambda^2 > 0: f >= 0, with equality only at lambda = 1.",
                   r"f''(\lambda)", sp.diff(F, lam, 2), 1 / lam**2),
        named_step(
            "The mean term is ||M^-1 (mu_2 - mu_1)||^2 / 2 >= 0, zero only at mu_1 = mu_2 (M is invertible).",
            r"\frac{1}{2} (\mu_2 - \mu_1)^\top S_2^{-1} (\mu_2 - \mu_1)",
            (SHIFT.T * SHIFT)[0, 0] / 2,
            sp.simplify(((m2 - m1).T * S2.inv() * (m2 - m1))[0, 0] / 2),
        ),
        named_step(
            "Derivation (f)'s T = 2 model: q(x_1, x_2 | x_0) has a non-diagonal covariance (x_2 = sqrt(alpha_2) x_1 "
            "+ noise) ...",
            r"\operatorname{Cov}_q(x_1, x_2 \mid x_0)_{12}",
            q_cov[0, 1],
            sp.sqrt(elbo.ALPHAS[1]) * q_cov[0, 0],
        ),
        named_step(
            "... and so has the model's posterior p_theta(x_1, x_2 | x_0) (x_2 | x_1, x_0 depends on x_1).",
            r"\operatorname{Cov}_{p_\theta}(x_1, x_2 \mid x_0)_{12}",
            p_cov[0, 1],
            _linear_in(elbo.t2_model()["post_x2"][0], _x1)[0] * p_cov[0, 0],
        ),
    )
    results = (
        kl_is_seed,
        named_step(
            "In A = M^-1 S_1 M^-T: half of tr A - 2 - log det A = sum_i f(lambda_i) >= 0, plus a square: the KL is "
            ">= 0, and 0 exactly when lambda_1 = lambda_2 = 1 (A = I: S_1 = S_2) and mu_1 = mu_2 (log det A split "
            "into logs of the positive diagonal entries of L and M).",
            r"D_{\mathrm{KL}}\left(\mathcal{N}(\mu_1, S_1) \,\|\, \mathcal{N}(\mu_2, S_2)\right)",
            KL_FROM_INTEGRAL,
            logs_split((A.trace() - D - sp.log(A.det())) / 2 + (SHIFT.T * SHIFT)[0, 0] / 2),
        ),
        named_step(
            "Derivation (f)'s gap at T = 2 is this KL from q(x_{1:2} | x_0) to the model's posterior: >= 0, and 0 "
            "exactly when p_theta(x_{1:2} | x_0) = q(x_{1:2} | x_0) (equal means and covariances).",
            r"\log p_\theta(x_0) - \mathrm{ELBO}",
            gap,
            kl_gap,
            Check.RATIONAL,
            domains=gap_domains,
            reason="the logs of the two determinants split with expand_log(force=True) (every factor is positive), "
            "but simplify then needs about 70 s on the resulting rational function of u_1, u_2, sigma_1^2, "
            "sigma_2^2, c_1, c_2, d_1, d_2 and x_0 (some 350 operations), too slow for the test suite",
        ),
    )
    return Derivation(
        key="m",
        title="The KL between full-covariance Gaussians, its sign, and the bound's gap",
        module=__name__,
        summary=(
            "Derivation (c) covers scalar and diagonal Gaussians, but the gap of the bound is a KL between joint "
            "laws of (x_1, ..., x_T) whose covariances are not diagonal. For two 2-D Gaussians the KL is "
            "integrated directly: x = mu_1 + L z with S_1 = L L^T turns log p(x) - log q(x) into a quadratic in two "
            "independent standard normals, whose expectation (derivation (c)'s moments) is the seed's matrix "
            "formula. With S_2 = M M^T and A = M^-1 S_1 M^-T (symmetric positive definite, eigenvalues "
            "lambda_1, lambda_2 > 0) the KL is half of sum_i (lambda_i - 1 - log lambda_i) plus half "
            "||M^-1 (mu_2 - mu_1)||^2; f(lambda) = lambda - 1 - log lambda is convex with its only zero at 1, so "
            "the KL is >= 0 and vanishes exactly when S_1 = S_2 and mu_1 = mu_2. Derivation (f)'s T = 2 gap is "
            "this KL from q(x_1, x_2 | x_0) to the linear-Gaussian model's posterior p_theta(x_1, x_2 | x_0), "
            "both with non-diagonal covariance: the bound is tight exactly when the model's posterior is q's."
        ),
        steps=steps,
        results=results,
    )


__all__ = ["KL_EIGEN_FORM", "KL_FROM_INTEGRAL", "KL_SEED_FORMULA", "derivation", "gap_as_full_kl"]
