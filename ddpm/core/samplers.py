"""Samplers of p_theta(x_0): Algorithm 2 of Ho et al. (2020) (ancestral) and DDIM (Song et al. 2021, eq. 12).

Both are stateless functions of (eps_model, diffusion, shape, generator, ...) that run under torch.no_grad(),
draw every random number from the injected torch.Generator (on the generator's device, then moved, so a CPU
generator reproduces a CUDA run draw for draw), and return a `SampleResult`. Their loops do no validation and
no host sync. Algorithm 2's step, single or strided, is `ddpm.core.reverse.ReverseStep` (the one implementation,
shared with `GaussianDiffusion.p_sample`, the bound and the losses), its constants cast to the working dtype once
per call; the noise buffer is refilled in place.

Speed (`nox -s bench`): on CPU a step costs the network call and well under 1% more. `compile=True` runs
the network through `torch.compile(dynamic=False)`: on the 2-core CPU Algorithm 2 with the `small` network then
ran 1.2-1.3x faster at batch 32 after a 25-35 s compile (per batch shape; two runs of `nox -s bench`), the samples
differing from eager ones by at most 3e-4 after the 1000 steps (float32 rounding, accumulated).

Random draw order (documented because tests rely on it): x_T first (one torch.randn of `shape`), then one
z ~ N(0, I) of `shape` per step that uses one, in the order of the steps. Algorithm 2 draws z at t = T..2 and
none at t = 1 (z = 0). DDIM draws z only when eta > 0, at every step except the last (whose sigma is 0).
With num_steps = T and eta = 1, DDIM therefore consumes exactly the draws of Algorithm 2, and the two agree
(to rounding) for sigma_t^2 = beta_tilde_t: DDIM's sigma_t^2 is then beta_tilde_t and its mean is
mu_tilde_t(x0_hat, x_t).

No clipping unless `clip_x0=True` (Algorithm 2 as written). With clipping, DDIM re-derives eps from the
clamped x0_hat before the update (as improved-diffusion does), so (x0_hat, eps_hat) stay consistent with x_t.

Dtypes: x_t is kept in `dtype` (the network's input); half dtypes do the step arithmetic in float32 and draw
noise in float32 (see `ddpm.core.diffusion`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from ddpm.core.choices import Choice
from ddpm.core.diffusion import GaussianDiffusion, check_generator, standard_normal
from ddpm.core.forward import compute_dtype, eps_from_x0, x0_from_eps
from ddpm.core.kernels import EpsModel, model_output
from ddpm.core.reverse import ReverseStep, single_step_tables, stride_coefficients, stride_tables
from ddpm.core.variance import ReverseVariance
from ddpm.runtime.devices import canonical_device

Tensor = torch.Tensor


@dataclass(frozen=True)
class SampleResult:
    """x_0 [shape] and the requested snapshots {t: x_t} (in the order the sampler visited them, t descending)."""

    x0: Tensor
    trajectory: Mapping[int, Tensor] = field(default_factory=dict)


def _check_shape(shape: object) -> tuple[int, ...]:
    if not isinstance(shape, (tuple, list, torch.Size)) or len(shape) < 1:
        raise ValueError(f"shape must be a non-empty tuple of positive ints [B, ...], got {shape!r}")
    out = []
    for n in shape:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"shape must be a non-empty tuple of positive ints [B, ...], got {shape!r}")
        out.append(int(n))
    return tuple(out)


def _check_dtype(dtype: object) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    return dtype


def _snapshot_steps(trajectory_steps: Iterable[int] | None, visited: Iterable[int]) -> frozenset[int]:
    """The requested snapshot timesteps; ValueError unless each is an int the sampler visits (x_T .. x_0)."""
    if trajectory_steps is None:
        return frozenset()
    visited = sorted(set(visited), reverse=True)
    allowed = set(visited)
    steps = set()
    for t in trajectory_steps:
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
            raise ValueError(f"trajectory_steps must be integers, got {t!r}")
        if int(t) not in allowed:
            shown: Sequence[int | str] = visited if len(visited) <= 12 else [*visited[:6], "...", *visited[-6:]]
            raise ValueError(f"trajectory step t = {t} is not visited by this sampler; visited t: {shown}")
        steps.add(int(t))
    return frozenset(steps)


def _setup(
    diffusion: GaussianDiffusion, shape: object, generator: object, device: torch.device | str | None, dtype: object
) -> tuple[GaussianDiffusion, tuple[int, ...], torch.device, torch.dtype]:
    check_generator(generator)
    if not isinstance(diffusion, GaussianDiffusion):
        raise ValueError(f"diffusion must be a GaussianDiffusion, got {type(diffusion).__name__}")
    shape = _check_shape(shape)
    dtype = _check_dtype(dtype)
    device = canonical_device(diffusion.device if device is None else device)  # "cuda" is the diffusion's cuda:0
    if device != canonical_device(diffusion.device):
        diffusion = diffusion.to(device)
    return diffusion, shape, device, dtype


def _step_timesteps(values: list[int], batch: int, device: torch.device) -> Tensor:
    """[S, B] int64, row i = values[i] repeated (rows are contiguous views handed to the network)."""
    return torch.tensor(values, dtype=torch.int64, device=device)[:, None].expand(len(values), batch).contiguous()


def _initial(
    start: tuple[int, Tensor] | None, visited: Sequence[int], shape: tuple[int, ...], generator: torch.Generator,
    draw_dtype: torch.dtype, device: torch.device, dtype: torch.dtype,
) -> tuple[int, Tensor]:
    """(index into `visited` of the first step, x there): x_T ~ N(0, I) drawn first, or the given (t, x_t) of `start`
    (t a visited timestep, x_t of `shape`), which draws nothing."""
    if start is None:
        return 0, standard_normal(shape, generator, draw_dtype, device).to(dtype)  # [B, ...], x_T
    if not isinstance(start, tuple) or len(start) != 2:
        raise ValueError(f"start must be a tuple (t, x_t), got {type(start).__name__}")
    t, x = start
    if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or int(t) not in visited:
        shown: Sequence[int | str] = visited if len(visited) <= 12 else [*visited[:6], "...", *visited[-6:]]
        raise ValueError(f"start t = {t!r} is not a timestep this sampler visits; visited t: {list(shown)}")
    if not isinstance(x, Tensor) or tuple(x.shape) != shape or not x.dtype.is_floating_point:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"start x_t must be a floating tensor of shape {shape}, got {got}")
    return list(visited).index(int(t)), x.to(device=device, dtype=dtype)


class _Noise:
    """A reusable z buffer of `shape`, refilled in place from the generator (on its device) and moved if needed."""

    def __init__(
        self, shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype, device: torch.device
    ) -> None:
        self.generator = generator
        self.source = torch.empty(shape, dtype=dtype, device=generator.device)  # [B, ...]
        same = canonical_device(generator.device) == canonical_device(device)
        self.target = self.source if same else torch.empty(shape, dtype=dtype, device=device)

    def draw(self) -> Tensor:
        self.source.normal_(generator=self.generator)  # same stream as torch.randn(shape, generator=...)
        if self.target is not self.source:
            self.target.copy_(self.source)
        return self.target

    @property
    def last(self) -> Tensor:
        return self.target


@torch.no_grad()
def ancestral_sample(
    eps_model: EpsModel,
    diffusion: GaussianDiffusion,
    shape: tuple[int, ...],
    generator: torch.Generator,
    variance: str | ReverseVariance = "beta",
    clip_x0: bool = False,
    *,
    progress: bool = True,
    trajectory_steps: Iterable[int] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    compile: bool = False,
    start: tuple[int, Tensor] | None = None,
) -> SampleResult:
    """x_0 ~ p_theta(x_0) by Algorithm 2: x_T ~ N(0, I), x_{t-1} = mu_theta(x_t, t) + sigma_t z for t = T..1.

    z ~ N(0, I) for t > 1 and z = 0 at t = 1. `start = (t, x_t)` resumes the chain at t in 1..T from the given
    x_t [shape] instead of drawing x_T: the steps t..1 run with the draws they would take (x_0 ~ p_theta(x_0 | x_t)).

    sigma_t^2 is beta_t ("beta"), beta_tilde_t ("beta_tilde"), the "optimal" table of a diffusion made by
    `with_optimal_variance`, or "learned" per dimension from a 2C-output model's v. `trajectory_steps` (ints in
    0..T) returns those x_t (x_T is the initial noise, x_0 the result) for a denoising strip. `device` defaults to the
    diffusion's; a tqdm progress bar shows the steps unless `progress=False`. `compile=True` calls
    `torch.compile(eps_model, dynamic=False)` instead of eps_model (module docstring: compile time vs gain).
    """
    choice = ReverseVariance.from_value(variance)
    diffusion, shape, device, dtype = _setup(diffusion, shape, generator, device, dtype)
    if not isinstance(compile, bool):
        raise ValueError(f"compile must be a bool, got {compile!r}")
    model = torch.compile(eps_model, dynamic=False) if compile else eps_model
    T = diffusion.T
    noise_dtype = compute_dtype(dtype)
    first, x = _initial(start, range(T, 0, -1), shape, generator, noise_dtype, device, dtype)  # x_{T - first}
    snaps = _snapshot_steps(trajectory_steps, range(T - first, -1, -1))
    timesteps = _step_timesteps(list(range(T, 0, -1)), shape[0], device)  # [T, B], row i is t = T - i
    step = ReverseStep(single_step_tables(diffusion, choice, bool(clip_x0), noise_dtype))
    trajectory: dict[int, Tensor] = {}
    if T - first in snaps:
        trajectory[T - first] = x.clone()
    z = _Noise(shape, generator, noise_dtype, device)
    for i in tqdm(range(first, T), desc="Algorithm 2", disable=not progress, leave=False):
        t_value = T - i
        t = timesteps[i]  # [B]
        eps, v = model_output(model, x, t)
        x = step(eps, x, t_value, z.draw() if t_value > 1 else z.last, v)  # z = 0 at t = 1: no draw, not read
        if t_value - 1 in snaps:
            trajectory[t_value - 1] = x.clone()
    return SampleResult(x0=x, trajectory=trajectory)


def _check_stride(diffusion: GaussianDiffusion, t: int, s: int) -> tuple[int, int]:
    for name, value in (("t", t), ("s", s)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an int (paper timestep), got {value!r}")
    if not 0 <= int(s) < int(t) <= diffusion.T:
        raise ValueError(f"a stride needs 0 <= s < t <= T = {diffusion.T}, got t = {t}, s = {s}")
    return int(t), int(s)


@torch.no_grad()
def strided_ancestral_step(
    diffusion: GaussianDiffusion, eps: Tensor, xt: Tensor, t: int, s: int, z: Tensor,
    variance: str | ReverseVariance = "beta", v: Tensor | None = None,
) -> Tensor:
    """x_s ~ N(mu_{t,s}, sigma_{t,s}^2 I): Algorithm 2's step over a stride t -> s < t (derivation (i)).

    mu_{t,s} = sqrt(alpha_bar_s / alpha_bar_t) (x_t - (1 - alpha_bar_t / alpha_bar_s) / sqrt(1 - alpha_bar_t) eps),
    the mean of the strided posterior q(x_s | x_t, x_0) at x0_hat; sigma_{t,s}^2 is the stride's forward variance
    1 - alpha_bar_t / alpha_bar_s ("beta") or its posterior variance beta_tilde_{t,s} ("beta_tilde"), or "learned"
    from the network's v (`ddpm.core.reverse.stride_tables`); z is not used at s = 0 (the last step adds no noise).
    With s = t - 1 this is `GaussianDiffusion.p_sample`.
    """
    choice = _strided_variance(variance, v)
    t, s = _check_stride(diffusion, t, s)
    step = ReverseStep(stride_tables(diffusion, [t], [s], choice, compute_dtype(xt.dtype), xt.device))
    return step(eps, xt, 0, z, v)


def _strided_variance(variance: str | ReverseVariance, v: Tensor | None) -> ReverseVariance:
    """The reverse variance of a strided step; ValueError for "optimal" (its Gamma_t are per single step)."""
    choice = ReverseVariance.from_value(variance)
    if choice is ReverseVariance.OPTIMAL:
        raise ValueError("strided sampling offers the 'beta', 'beta_tilde' and 'learned' variances; the 'optimal' "
                         "one is estimated for single steps t -> t - 1 (use the ancestral sampler)")
    return choice


@torch.no_grad()
def ddim_step(
    diffusion: GaussianDiffusion, eps: Tensor, xt: Tensor, t: int, s: int, eta: float, z: Tensor | None,
    clip_x0: bool = False,
) -> Tensor:
    """x_s = sqrt(alpha_bar_s) x0_hat + sqrt(1 - alpha_bar_s - sigma^2) eps + sigma z: one DDIM step (Song et al.
    eq. 12).

    sigma^2 = eta^2 (1 - alpha_bar_s) / (1 - alpha_bar_t) (1 - alpha_bar_t / alpha_bar_s) (eq. 16); the same
    coefficients and arithmetic as one step of `ddim_sample`. z may be None when eta = 0 or s = 0 (no noise).
    """
    t, s = _check_stride(diffusion, t, s)
    eta = float(eta)
    if not np.isfinite(eta) or eta < 0:
        raise ValueError(f"eta must be a finite number >= 0, got {eta!r}")
    cdtype = compute_dtype(xt.dtype)
    c = stride_coefficients(diffusion, [t], [s], eta)
    def cast(values: np.ndarray) -> Tensor:
        return torch.tensor(values[0], dtype=torch.float64, device=xt.device).to(cdtype)

    xc, e = xt.to(cdtype), eps.to(cdtype)
    if clip_x0:
        tt = torch.full((xt.shape[0],), t, dtype=torch.int64, device=xt.device)
        x0_hat = x0_from_eps(diffusion, xc, tt, e).clamp(-1.0, 1.0)
        eps_hat = eps_from_x0(diffusion, xc, tt, x0_hat)
        new = cast(c.sqrt_a_prev) * x0_hat + cast(c.direction) * eps_hat
    else:
        new = cast(c.coef_x) * xc + cast(c.coef_eps) * e
    if eta > 0 and s > 0:
        if z is None:
            raise ValueError("ddim_step needs z when eta > 0 and s > 0")
        new = new + cast(c.sigma) * z.to(cdtype)
    return new.to(xt.dtype)


def ddim_timesteps(T: int, num_steps: int) -> list[int]:
    """tau_1 < ... < tau_S: S evenly spaced integers from 1 to T (tau_S = T, rounding floor(x + 1/2)); 1..T if S = T."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or not 1 <= num_steps <= T:
        raise ValueError(f"num_steps must be an integer in 1..T = {T}, got {num_steps!r}")
    if num_steps == 1:
        return [T]
    rounded = np.floor(np.linspace(1.0, float(T), int(num_steps)) + 0.5).astype(np.int64)
    taus = sorted(set(int(v) for v in rounded))
    assert len(taus) == num_steps and taus[-1] == T
    return taus


@torch.no_grad()
def ddim_sample(
    eps_model: EpsModel,
    diffusion: GaussianDiffusion,
    shape: tuple[int, ...],
    generator: torch.Generator,
    num_steps: int,
    eta: float = 0.0,
    clip_x0: bool = False,
    *,
    progress: bool = True,
    trajectory_steps: Iterable[int] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    start: tuple[int, Tensor] | None = None,
) -> SampleResult:
    """x_0 by DDIM (Song et al. 2021, eq. 12) over tau_S = T > ... > tau_1 >= 1, then x_0 (alpha_bar_0 = 1).

    x_{tau_{i-1}} = sqrt(a') x0_hat + sqrt(1 - a' - sigma^2) eps_theta + sigma z with a = alpha_bar_{tau_i},
    a' = alpha_bar_{tau_{i-1}}, x0_hat = (x - sqrt(1 - a) eps_theta) / sqrt(a) and
    sigma^2 = eta^2 (1 - a') / (1 - a) (1 - a / a'). eta = 0 is deterministic given x_T; eta = 1 with
    num_steps = T is Algorithm 2 with sigma_t^2 = beta_tilde_t. `trajectory_steps` must be visited timesteps
    (the taus, or 0). `start = (tau, x_tau)` resumes at a visited tau from the given x_tau [shape] instead of drawing
    x_T: the steps from tau on run with the draws they would take.
    """
    diffusion, shape, device, dtype = _setup(diffusion, shape, generator, device, dtype)
    T = diffusion.T
    taus = ddim_timesteps(T, num_steps)
    eta = float(eta)
    if not np.isfinite(eta) or eta < 0:
        raise ValueError(f"eta must be a finite number >= 0, got {eta!r}")
    cdtype = compute_dtype(dtype)

    # Per-step float64 coefficients, step i going from t = taus_desc[i] to prev = prevs[i].
    taus_desc = taus[::-1]
    first, x = _initial(start, taus_desc, shape, generator, cdtype, device, dtype)  # x at taus_desc[first]
    snaps = _snapshot_steps(trajectory_steps, [*taus_desc[first:], 0])
    prevs = taus_desc[1:] + [0]
    coefs = stride_coefficients(diffusion, taus_desc, prevs, eta)
    def as_tensor(values: np.ndarray) -> Tensor:
        return torch.tensor(values, dtype=torch.float64, device=device).to(cdtype)  # [S]

    coef_x, coef_eps, sigma = as_tensor(coefs.coef_x), as_tensor(coefs.coef_eps), as_tensor(coefs.sigma)
    sqrt_a_prev_t, direction_t = as_tensor(coefs.sqrt_a_prev), as_tensor(coefs.direction)
    draws = eta > 0

    timesteps = _step_timesteps(taus_desc, shape[0], device)  # [S, B]
    trajectory: dict[int, Tensor] = {}
    if taus_desc[first] in snaps:
        trajectory[taus_desc[first]] = x.clone()
    z = _Noise(shape, generator, cdtype, device) if draws else None
    for i in tqdm(range(first, len(taus_desc)), desc="DDIM", disable=not progress, leave=False):
        t = timesteps[i]  # [B]
        eps = model_output(eps_model, x, t)[0].to(cdtype)
        xc = x.to(cdtype)
        if clip_x0:
            x0_hat = x0_from_eps(diffusion, xc, t, eps).clamp(-1.0, 1.0)
            eps_hat = eps_from_x0(diffusion, xc, t, x0_hat)
            new = sqrt_a_prev_t[i] * x0_hat + direction_t[i] * eps_hat
        else:
            new = coef_x[i] * xc + coef_eps[i] * eps
        if z is not None and prevs[i] > 0:
            new = new + sigma[i] * z.draw()
        x = new.to(dtype)
        if prevs[i] in snaps:
            trajectory[prevs[i]] = x.clone()
    return SampleResult(x0=x, trajectory=trajectory)


@torch.no_grad()
def strided_sample(
    eps_model: EpsModel,
    diffusion: GaussianDiffusion,
    shape: tuple[int, ...],
    generator: torch.Generator,
    num_steps: int,
    variance: str | ReverseVariance = "beta",
    *,
    progress: bool = True,
    trajectory_steps: Iterable[int] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> SampleResult:
    """x_0 by Algorithm 2 over S <= T visited steps tau_S = T > ... > tau_1 >= 1, then x_0 (derivation (i)).

    Each step is `strided_ancestral_step`: x_s = sqrt(alpha_bar_s / alpha_bar_t) (x_t - (1 - alpha_bar_t / alpha_bar_s)
    / sqrt(1 - alpha_bar_t) eps) + sigma_{t,s} z, with sigma_{t,s}^2 = 1 - alpha_bar_t / alpha_bar_s ("beta") or
    beta_tilde_{t,s} ("beta_tilde") or learned from v, and no noise on the last step to x_0. The taus are
    `ddim_timesteps(T, S)`;
    with S = T this is Algorithm 2 (`ancestral_sample`), draw for draw. No clipping.
    """
    choice = _strided_variance(variance, None)
    diffusion, shape, device, dtype = _setup(diffusion, shape, generator, device, dtype)
    T = diffusion.T
    taus_desc = ddim_timesteps(T, num_steps)[::-1]
    prevs = taus_desc[1:] + [0]
    snaps = _snapshot_steps(trajectory_steps, [*taus_desc, 0])
    cdtype = compute_dtype(dtype)
    step = ReverseStep(stride_tables(diffusion, taus_desc, prevs, choice, cdtype, device))
    timesteps = _step_timesteps(taus_desc, shape[0], device)  # [S, B]
    trajectory: dict[int, Tensor] = {}
    x = standard_normal(shape, generator, cdtype, device).to(dtype)  # [B, ...], x_T
    if T in snaps:
        trajectory[T] = x.clone()
    z = _Noise(shape, generator, cdtype, device)
    for i in tqdm(range(len(taus_desc)), desc="strided Algorithm 2", disable=not progress, leave=False):
        eps, v = model_output(eps_model, x, timesteps[i])
        x = step(eps, x, i, z.draw() if prevs[i] > 0 else z.last, v)  # no noise on the last step to x_0
        if prevs[i] in snaps:
            trajectory[prevs[i]] = x.clone()
    return SampleResult(x0=x, trajectory=trajectory)


class Sampler(Choice):
    """The samplers `sample` dispatches to: Algorithm 2 (all T steps), DDIM (S steps, eta), strided Algorithm 2."""

    ANCESTRAL = "ancestral"
    DDIM = "ddim"
    STRIDED = "strided"


def network_evaluations(sampler: str | Sampler, T: int, num_steps: int | None) -> int:
    """eps_theta calls per image: T for Algorithm 2, S for DDIM and strided sampling (ValueError without S)."""
    choice = Sampler.from_value(sampler)
    if choice is Sampler.ANCESTRAL:
        return T
    if num_steps is None:
        raise ValueError(f"the {choice.value} sampler needs a number of steps in 1..T = {T}")
    return int(num_steps)


def check_sampler_options(sampler: str | Sampler, T: int, num_steps: int | None, eta: float | None,
                          variance_given: bool = False) -> tuple[Sampler, int | None, float | None]:
    """(sampler, num_steps, eta) after the checks every caller needs; ValueError naming a bad combination.

    num_steps: required in 1..T for ddim and strided, must be None (or T) for ancestral; eta: ddim only (default
    0), finite and >= 0; a reverse variance applies to ancestral and strided only (DDIM's noise is eta's).
    """
    choice = Sampler.from_value(sampler)
    if choice is Sampler.ANCESTRAL:
        if num_steps is not None and num_steps != T:
            raise ValueError(f"steps apply to the ddim and strided samplers; ancestral takes all T = {T} steps")
        if eta is not None:
            raise ValueError("eta applies to the ddim sampler only (Algorithm 2's noise is sigma_t z)")
        return choice, None, None
    if num_steps is None:
        raise ValueError(f"the {choice.value} sampler needs a number of steps in 1..T = {T}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or not 1 <= num_steps <= T:
        raise ValueError(f"steps must be an integer in 1..T = {T}, got {num_steps!r}")
    if choice is Sampler.STRIDED:
        if eta is not None:
            raise ValueError("eta applies to the ddim sampler only (strided Algorithm 2's noise is sigma_{t,s} z)")
        return choice, int(num_steps), None
    if variance_given:
        raise ValueError("a reverse variance applies to the ancestral and strided samplers; DDIM's noise is set by eta")
    eta = 0.0 if eta is None else float(eta)
    if not np.isfinite(eta) or eta < 0:
        raise ValueError(f"eta must be a finite number >= 0, got {eta!r}")
    return choice, int(num_steps), eta


__all__ = [
    "SampleResult",
    "Sampler",
    "ancestral_sample",
    "check_sampler_options",
    "ddim_sample",
    "ddim_step",
    "ddim_timesteps",
    "network_evaluations",
    "strided_ancestral_step",
    "strided_sample",
]
