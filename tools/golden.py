"""The golden record: what the library computes on a fixed tiny problem, as hashes of the exact bytes.

A refactoring that leaves behaviour unchanged leaves this record unchanged bit for bit. It holds, for two tiny
runs on sklearn's digits (the `tiny` preset with Algorithm 1's L_simple and a learned-variance variant with the
hybrid objective, GOLDEN_STEPS updates each from seed 0): the weights (raw and EMA) and the training log's losses;
Algorithm 2's samples under every reverse variance the model offers, the strided and DDIM samplers' samples; the
exact bound under every variance and a Monte Carlo bound; and a small conformance run of the reference adapter.

    python tools/golden.py --write tests/golden/tiny_runs.json   # record (before a refactoring)
    python tools/golden.py --check tests/golden/tiny_runs.json   # compare (exit 1 naming what changed)

Everything runs on the CPU with one torch thread, so the bytes depend on the torch build and the CPU's vector
instructions only; the record keeps both (`machine`), and `tests/methods/test_golden.py` compares bitwise where
they match.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

GOLDEN_STEPS = 30
SAMPLES = 6


def machine() -> dict[str, str]:
    """What the bytes depend on besides the code: the torch build and the CPU instructions it dispatches to."""
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def tensor_digest(value) -> dict:
    """sha256 of a tensor's (or array's) bytes, with its shape, dtype and sum (the sum only to say how far off)."""
    array = (value.detach().cpu().contiguous().numpy() if isinstance(value, torch.Tensor)
             else np.ascontiguousarray(value))
    return {"sha256": hashlib.sha256(array.tobytes()).hexdigest(), "shape": list(array.shape),
            "dtype": str(array.dtype), "sum": float(np.asarray(array, dtype=np.float64).sum())}


def _state_digest(state: dict) -> dict:
    return {name: tensor_digest(tensor)["sha256"] for name, tensor in sorted(state.items())}


def _variants():
    from ddpm.training.config import get_preset

    tiny = get_preset("tiny")
    learned = tiny.replace(model=tiny.model.replace(learn_variance=True),
                           training=tiny.training.replace(objective="hybrid"),
                           evaluation=tiny.evaluation.replace(variance="learned"))
    return {"tiny": tiny, "tiny_learned": learned}


def _train(preset, folder: Path) -> Path:
    from ddpm.training.trainer import TrainOptions, train

    run = folder / "run"
    train("digits", run, preset, options=TrainOptions(seed=0, max_steps=GOLDEN_STEPS), device="cpu", progress=False,
          command=["golden"])
    return run


def _training_record(run: Path, checkpoint) -> dict:
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text(encoding="utf-8").splitlines()]
    return {"losses": [entry["loss"] for entry in log], "steps": [entry["step"] for entry in log],
            "model_state": _state_digest(checkpoint.model_state), "ema_state": _state_digest(checkpoint.ema_state)}


def _sampling_record(model, diffusion, shape, variances) -> dict:
    from ddpm.core.samplers import ancestral_sample, ddim_sample, strided_sample

    out = {}
    for index, variance in enumerate(variances):
        generator = torch.Generator().manual_seed(100 + index)
        result = ancestral_sample(model, diffusion, shape, generator, variance=variance, progress=False,
                                  trajectory_steps=(diffusion.T, diffusion.T // 2, 1))
        out[f"ancestral_{variance}"] = tensor_digest(result.x0)
        out[f"ancestral_{variance}_trajectory"] = {str(t): tensor_digest(x)["sha256"]
                                                   for t, x in result.trajectory.items()}
        strided = strided_sample(model, diffusion, shape, torch.Generator().manual_seed(200 + index), num_steps=17,
                                 variance=variance, progress=False)
        out[f"strided_{variance}"] = tensor_digest(strided.x0)
    for index, eta in enumerate((0.0, 1.0)):
        ddim = ddim_sample(model, diffusion, shape, torch.Generator().manual_seed(300 + index), num_steps=10,
                           eta=eta, progress=False)
        out[f"ddim_eta{eta}"] = tensor_digest(ddim.x0)
    return out


def _bound_record(model, diffusion, test_images, variances) -> dict:
    from ddpm.core.bound import elbo_monte_carlo
    from ddpm.evaluation.bounds import BoundSettings, exact_bounds
    from ddpm.images.data import to_model_range

    exact = exact_bounds(model, diffusion, test_images, BoundSettings(exact_images=3, seed=0, batch_size=64), variances)
    out = {f"exact_{name}": {"bits_per_dim": bound.bits_per_dim, "stderr": bound.stderr,
                             "per_term": tensor_digest(bound.per_term_bits_per_dim)}
           for name, bound in exact.items()}
    x0 = to_model_range(test_images[:8])
    for variance in variances:
        mc = elbo_monte_carlo(model, diffusion, x0, torch.Generator().manual_seed(400), draws_per_image=2,
                              variance=variance, batch_size=16)
        out[f"monte_carlo_{variance}"] = {"estimate": mc.bits_per_dim, "stderr": mc.stderr}
    return out


def _run_record(preset, folder: Path) -> dict:
    from ddpm.images.data import load_images
    from ddpm.training.checkpoint import build_eps_model, diffusion_from, load_checkpoint

    run = _train(preset, folder)
    checkpoint = load_checkpoint(run / "checkpoint.pt")
    model = build_eps_model(checkpoint)
    diffusion = diffusion_from(checkpoint)
    info = checkpoint.dataset_info
    variances = ("beta", "beta_tilde") + (("learned",) if preset.model.learn_variance else ())
    shape = (SAMPLES, info.channels, info.height, info.width)
    return {"training": _training_record(run, checkpoint),
            "sampling": _sampling_record(model, diffusion, shape, variances),
            "bound": _bound_record(model, diffusion, load_images("digits", "test"), variances)}


def _conformance_record() -> dict:
    from ddpm.conformance.cases import SuiteConfig
    from ddpm.conformance.runner import json_ready, run_suite

    config = SuiteConfig(chain_samples=400, loss_batches=8, loss_batch=50, strided_steps=20, ddim_steps=10)
    runs, _ = run_suite(["reference"], config, progress=False)
    out = {}
    for run in runs:
        for result in run.results:
            fields = {name: json_ready(getattr(result, name))
                      for name in ("criterion", "ratio", "deviation", "where", "t", "p_value")}
            fields["status"] = result.status.value
            out[f"{run.description.name}/{result.case}"] = fields
    return out


def record() -> dict:
    """The golden record of the current code (see the module docstring); about a minute on one core."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as folder:
            runs = {name: _run_record(preset, Path(folder) / name) for name, preset in _variants().items()}
        return {"machine": machine(), "steps": GOLDEN_STEPS, "runs": runs, "conformance": _conformance_record()}
    finally:
        torch.set_num_threads(previous)


def differences(expected, actual, where: str = "") -> list[str]:
    """Every leaf where `actual` differs from `expected` ('runs/tiny/bound/exact_beta/bits_per_dim: a != b')."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = []
        for key in sorted(set(expected) | set(actual)):
            if key not in actual or key not in expected:
                out.append(f"{where}/{key}: only in {'the record' if key in expected else 'this run'}")
            else:
                out.extend(differences(expected[key], actual[key], f"{where}/{key}"))
        return out
    return [] if expected == actual else [f"{where}: {expected!r} != {actual!r}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write or check the golden record of the tiny runs.")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", type=Path, metavar="JSON")
    action.add_argument("--check", type=Path, metavar="JSON")
    args = parser.parse_args(argv)
    current = json.loads(json.dumps(record()))  # the JSON round trip the stored record went through
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        print(f"wrote {args.write}")
        return 0
    stored = json.loads(args.check.read_text(encoding="utf-8"))
    found = differences(stored, current)
    for line in found[:40]:
        print(line)
    print(f"{len(found)} differences from {args.check}" if found else f"identical to {args.check}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
