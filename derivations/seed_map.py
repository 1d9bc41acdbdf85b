"""The map of the seed tutorial's chain: each link, in the tutorial's order, with the lettered results that prove it.

The tutorial (Ho et al. 2020 explained step by step) argues from maximum likelihood through the ELBO to the two
algorithms, and asks two questions on the way: why Algorithm 1 adds the noise in one step, and why Algorithm 2 adds
sigma_t z. `SEED_CHAIN` lists those links; each names the derivations that prove it and says in what generality:
`general` is True when the link is proved in the generality the tutorial states it (every T, any dimension, any model
or data, as the link needs), False when only a stated special case is proved, and `scope` says which.
`BEYOND_THE_SEED` lists the results the tutorial does not reach (samplers, variances and parameterisations used in
practice). `reports/derivations.md` opens with this map; `tests/derivations/test_seed_map.py` checks that every
letter named exists and every derivation is placed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Link:
    """One step of the tutorial's argument, the derivations that prove it, and in what generality."""

    claim: str
    results: tuple[str, ...]  # derivation keys, strongest first
    scope: str
    general: bool


SEED_CHAIN: tuple[Link, ...] = (
    Link(
        "Maximum likelihood: argmax_theta prod_i P_theta(x^i) ~ argmax E_data[log P_theta] = "
        "argmin KL(P_data || P_theta)",
        ("g",),
        "E_data[log P_theta] = -KL(P_data || P_theta) - H(P_data) for any positive densities; the step from the "
        "sample to the expectation is the law of large numbers (a theorem assumed); the maximiser worked out for a "
        "Gaussian model",
        True,
    ),
    Link(
        "KL >= 0, zero only when the two laws agree (so the minimum KL is the data law)",
        ("q", "c", "m"),
        "(q): any positive densities (Gibbs' inequality; its integrals are written over the line, and no step uses "
        "the dimension); (c) scalar and diagonal Gaussians, (m) full-covariance Gaussians in two dimensions",
        True,
    ),
    Link(
        "VAE bound: log P(x) = ELBO(q) + KL(q(z|x) || P(z|x)) >= ELBO(q), q any distribution",
        ("q", "g"),
        "(q): any joint p(x, z) > 0 and any normalised q(z|x) > 0; (g) the linear-Gaussian model in closed form",
        True,
    ),
    Link(
        "DDPM bound: log p(x_0) >= E_q[log p_theta(x_{0:T}) / q(x_{1:T}|x_0)], the gap the KL of the two "
        "posteriors over x_{1:T}",
        ("q", "f", "m"),
        "(q): every T and arbitrary reverse kernels (not Gaussian, not linear); (f) and (m): every term and the gap "
        "in closed form for T = 2 with a linear-Gaussian reverse chain",
        True,
    ),
    Link(
        "First question, why Algorithm 1 adds the noise in one step: q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, "
        "(1 - alpha_bar_t) I)",
        ("a",),
        "every t (induction on t), as random variables and as densities; per coordinate, which is every dimension "
        "for the isotropic forward noise",
        True,
    ),
    Link(
        "The ELBO rewritten: Bayes' rule for t >= 2, the marginals telescope, = E log p_theta(x_0|x_1) - "
        "KL(q(x_T|x_0) || p(x_T)) - sum_t E KL(q(x_{t-1}|x_t,x_0) || p_theta(x_{t-1}|x_t))",
        ("f", "q"),
        "the pointwise rewrite for every T (induction on T; (q) repeats it for arbitrary kernels); that the "
        "expectation over q(x_{1:T}|x_0) of each term is its expectation over the pair (x_{t-1}, x_t) is checked on "
        "a 3-state chain with T = 3 only (for every T it is the sum rule, normalised kernels summed out, not derived)",
        False,
    ),
    Link(
        "The posterior q(x_{t-1} | x_t, x_0) = N(mu_tilde_t(x_t, x_0), beta_tilde_t) (Bayes' rule, completing the "
        "square)",
        ("b",),
        "every t >= 2, per coordinate (the point mass at x_0 at t = 1)",
        True,
    ),
    Link(
        "The KL between two Gaussians (the tutorial's matrix formula)",
        ("c", "m"),
        "(c): scalar and diagonal covariances in any dimension; (m): full covariances, integrated in two "
        "dimensions only",
        False,
    ),
    Link(
        "The mean to predict: mu_theta = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_theta) / sqrt(alpha_t), "
        "Algorithm 2's line 4",
        ("d",),
        "every t (and every stride, (i); the x_0 and v forms, (o))",
        True,
    ),
    Link(
        "L_{t-1} = lambda_t ||eps - eps_theta||^2 + C_t; Algorithm 1's loss keeps the squared error (L_simple)",
        ("e",),
        "every t >= 2 and both fixed variances; t = 1 through the decoder L_0",
        True,
    ),
    Link(
        "What Algorithm 1 learns: L_simple is minimised by eps*(x_t, t) = E[eps | x_t]",
        ("r",),
        "any data law, any dimension, every t (the weighted sum over t too)",
        True,
    ),
    Link(
        "Second question, why Algorithm 2 adds sigma_t z (and z = 0 at t = 1)",
        ("u", "l"),
        "(u): for any data the KL-optimal Gaussian reverse kernel has variance beta_tilde_t + c_0^2 E Var(x_0 | x_t) "
        ">= beta_tilde_t > 0, so the mean alone is not the reverse step; (l): the variance recursion without the "
        "noise, for Gaussian data N(0, s^2)",
        True,
    ),
    Link(
        "The choice of sigma_t^2: beta_t or beta_tilde_t",
        ("j", "h", "u"),
        "(j): for any data the optimum lies in [beta_tilde_t, beta_t / alpha_t], and at most beta_t for data of "
        "per-coordinate variance at most 1; (h): the optimum exactly for Gaussian data; (u): mean and variance "
        "optimised jointly, and sigma_1 from the decoder's own cost",
        True,
    ),
    Link(
        "The decoder L_0 on the 8-bit grid",
        ("t", "n"),
        "(t): an interior bin's cost as density times width plus an exact error, for every mean and sigma; (n): the "
        "open edge bins",
        True,
    ),
)

BEYOND_THE_SEED: tuple[tuple[str, str], ...] = (
    ("s", "the score view: Tweedie's formula, Algorithm 2 in score form, L_simple as denoising score matching"),
    ("i", "strided sampling and DDIM"),
    ("k", "learned variances (Nichol & Dhariwal)"),
    ("o", "the eps, x_0 and v parameterisations, zero terminal SNR"),
    ("p", "the data posterior of Gaussian and mixture data (the conformance suite's calibration laws)"),
)


def render_map(titles: dict[str, str]) -> str:
    """The map as Markdown: one row per link, the results as links to their sections (`titles`: key -> title)."""

    def refs(keys: tuple[str, ...]) -> str:
        return ", ".join(f"[({k})](#{_anchor(k, titles[k])})" for k in keys)

    lines = [
        "## Map: the seed tutorial's chain",
        "",
        "Each step of the tutorial's argument, in its order, with the results below that prove it. *General* means "
        "proved in the generality the tutorial states it; *special case* means only the case named is proved.",
        "",
        "| # | the tutorial's step | proved by | generality | |",
        "|---|---|---|---|---|",
    ]
    for number, link in enumerate(SEED_CHAIN, start=1):
        status = "general" if link.general else "**special case**"
        lines.append(f"| {number} | {link.claim} | {refs(link.results)} | {link.scope} | {status} |")
    lines += ["", "Beyond the tutorial: " + "; ".join(f"{refs((k,))} {what}" for k, what in BEYOND_THE_SEED) + ".",
              ""]
    return "\n".join(lines)


def _anchor(key: str, title: str) -> str:
    """GitHub's anchor of the heading `## (key) title`: lower case, punctuation dropped, spaces to hyphens."""
    text = f"({key}) {title}".lower()
    kept = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return kept.replace(" ", "-")


__all__ = ["BEYOND_THE_SEED", "Link", "SEED_CHAIN", "render_map"]
