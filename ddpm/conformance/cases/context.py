"""One adapter with what every case needs (`Context`), the suite's input draws and the running worst deviation of
an exact case (`Worst`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ddpm.conformance import oracle
from ddpm.conformance.cases.results import CaseResult, Status, SuiteConfig
from ddpm.conformance.protocol import Adapter, Convention, Prediction, VarianceKind, prediction_of

Tensor = torch.Tensor
OUTPUT_NAMES = {Prediction.EPS: "eps", Prediction.X0: "x0_pred", Prediction.V: "v_pred"}
IMAGE = (1, 2, 2)  # [C, H, W] of the tensors fed to adapters: small, but shaped like images


class Context:
    """One adapter with what every case needs: its tables in float64, timestep maps, a seeded NumPy generator."""

    def __init__(self, adapter: Adapter, config: SuiteConfig) -> None:
        self.adapter = adapter
        self.config = config
        self.u = oracle.unit_roundoff(adapter.dtype)
        self.alpha_bars = np.asarray(adapter.alpha_bars(), dtype=np.float64).reshape(-1)  # [T], index paper t - 1
        self.T = self.alpha_bars.shape[0]
        self.betas = np.asarray(adapter.betas(), dtype=np.float64).reshape(-1)  # [T], index paper t - 1
        self.base = int(adapter.timestep_base)
        self.prediction = prediction_of(adapter)
        self.output_name = OUTPUT_NAMES[self.prediction]  # the network output's name in a failure's inputs

    def inference_steps(self, default: int) -> int:
        """S of a strided or DDIM case: the adapter's `num_inference_steps` if it declares one, else `default` (the
        suite's), capped at T."""
        return min(int(getattr(self.adapter, "num_inference_steps", default)), self.T)

    def rng(self, case: str) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, *case.encode()])

    def to_adapter(self, paper_t: int) -> int:
        return paper_t - 1 + self.base

    def to_paper(self, adapter_t: int) -> int:
        return int(adapter_t) - self.base + 1

    def step(self, paper_t: int) -> dict:
        """The oracle's intermediates of the one step t -> t - 1 (beta_t from the adapter's betas table)."""
        return oracle.stride_intermediates(self.alpha_bar(paper_t), self.alpha_bar(paper_t - 1),
                                           self.betas[paper_t - 1])

    def alpha_bar(self, paper_t: int) -> float:
        """alpha_bar at the paper's t (1 at t = 0)."""
        return 1.0 if paper_t == 0 else float(self.alpha_bars[paper_t - 1])

    def tensor(self, values: np.ndarray) -> Tensor:
        return torch.tensor(values, dtype=torch.float64).to(self.adapter.dtype)

    def exact(self, values: np.ndarray) -> np.ndarray:
        """The values as the adapter sees them (rounded to its dtype), back in float64."""
        return self.tensor(values).to(torch.float64).numpy()

    def where(self, paper_t: int, index: tuple) -> str:
        return f"t = {self.to_adapter(paper_t)} in its convention (paper t = {paper_t}), element {list(index)}"

    def notes(self, *kinds: Convention) -> tuple[str, ...]:
        return tuple(f"{c.value}: {self.adapter.conventions[c]}" for c in kinds if c in self.adapter.conventions)


def to_numpy(x: object) -> np.ndarray:
    return (x.detach().to(torch.float64).cpu().numpy() if isinstance(x, Tensor)
            else np.asarray(x, dtype=np.float64))


@dataclass
class Worst:
    """The running worst deviation / tolerance over the timesteps of one exact case."""

    ratio: float = 0.0
    deviation: float = 0.0
    paper_t: int | None = None
    index: tuple = ()
    part: str = ""
    inputs: dict | None = None
    expected: list | None = None

    def update(self, part: str, out: np.ndarray, expected: np.ndarray, tol: np.ndarray, paper_t: int,
               inputs: dict[str, np.ndarray]) -> None:
        out = np.broadcast_to(out, expected.shape)
        dev = np.abs(out - expected)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(tol > 0, dev / np.where(tol > 0, tol, 1.0), np.where(dev > 0, np.inf, 0.0))
        ratio = np.where(np.isfinite(out), ratio, np.inf)
        ratio = np.where(np.isfinite(expected) & np.isfinite(tol), ratio, 0.0)  # no oracle there: not compared
        k = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        if ratio[k] > self.ratio or self.paper_t is None:
            b = k[0] if ratio.ndim >= 1 else slice(None)  # the image (batch row) of the worst element
            self.ratio, self.deviation = float(ratio[k]), float(dev[k])
            self.paper_t, self.index, self.part = paper_t, tuple(int(i) for i in k), part
            self.inputs = {name: np.asarray(value)[b].reshape(-1).tolist() for name, value in inputs.items()
                           if np.ndim(value) > 0}
            expected = np.asarray(expected)
            self.expected = (expected[b] if expected.ndim else expected).reshape(-1).tolist()


def exact_result(ctx: Context, case: str, worst: Worst, criterion: str, operation: str,
                  conventions: tuple[str, ...] = ()) -> CaseResult:
    where = ctx.where(worst.paper_t, worst.index) if worst.paper_t is not None else ""
    if worst.ratio <= 1.0:
        status = Status.CONVENTION if conventions else Status.PASS
        detail = f"worst deviation {worst.deviation:.3g} = {worst.ratio:.3g} x tolerance ({worst.part}, {where})"
    else:
        status = Status.FAIL
        dev = "non-finite output" if not np.isfinite(worst.ratio) and not np.isfinite(worst.deviation) else (
            f"deviation {worst.deviation:.3g} = {worst.ratio:.3g} x tolerance")
        detail = f"{worst.part}: {dev} at {where}"
    return CaseResult(case, status, criterion, detail, worst.ratio, worst.deviation, where, conventions,
                      operation, None if worst.paper_t is None else ctx.to_adapter(worst.paper_t),
                      worst.inputs, worst.expected)


def rounding_criterion(ctx: Context) -> str:
    return (f"|out - oracle| <= {oracle.ROUNDING_FACTOR:g} (u |f| + sum_q |df/dq| dq), u = {ctx.u:.3g} "
            f"({str(ctx.adapter.dtype).replace('torch.', '')}); oracle at the adapter's own alpha_bar table")


def draw(rng: np.random.Generator, ctx: Context, kind: str) -> np.ndarray:
    shape = (ctx.config.batch, *IMAGE)
    if kind == "x0":
        return ctx.exact(rng.uniform(-1.0, 1.0, shape))
    if kind == "z":  # |z| >= 0.5 so that sigma = (out(z) - out(0)) / z is well conditioned
        return ctx.exact(rng.choice([-1.0, 1.0], shape) * (0.5 + np.abs(rng.standard_normal(shape))))
    scale = 1.5 if kind == "xt" else 1.0
    return ctx.exact(scale * rng.standard_normal(shape))


def draw_output(rng: np.random.Generator, ctx: Context) -> np.ndarray:
    """A network output in the adapter's parameterisation: eps ~ N(0, 1), x_0 ~ U(-1.2, 1.2) (a little beyond the data
    range), v ~ N(0, 1.5^2)."""
    shape = (ctx.config.batch, *IMAGE)
    if ctx.prediction is Prediction.X0:
        return ctx.exact(rng.uniform(-1.2, 1.2, shape))
    scale = 1.5 if ctx.prediction is Prediction.V else 1.0
    return ctx.exact(scale * rng.standard_normal(shape))


def learned_input(rng: np.random.Generator, ctx: Context, kind: VarianceKind) -> np.ndarray | None:
    shape = (ctx.config.batch, *IMAGE)
    if kind is VarianceKind.LEARNED_RANGE:
        return ctx.exact(rng.uniform(-1.0, 1.0, shape))
    log_var = rng.uniform(np.log(1e-4), np.log(0.5), shape)
    if kind is VarianceKind.LEARNED_LOG_VARIANCE:
        return ctx.exact(log_var)
    if kind is VarianceKind.LEARNED_VARIANCE:
        return ctx.exact(np.exp(log_var))
    return None
