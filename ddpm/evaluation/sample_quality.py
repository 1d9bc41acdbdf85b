"""FID and KID of the evaluation's samples against N test images, with the floor that real images reach.

`ddpm.images.fid.fid_kid`: torch-fidelity's network and metrics with the TF FID Inception, one feature extractor
for the samples, the reference and the floor, against the reference set: N test images, a seeded subset when N is
smaller than the test split (ReferenceSet(dataset, "test", N, seed=0)), its features cached keyed by dataset, split,
N, subset seed, data fingerprint and weights. FID is compared only at equal N, so N larger than the test split is an
error. KID is the mean (and standard deviation) of the unbiased MMD^2 over KID_SUBSETS random subsets of
min(1000, N // 2) images a side (subsets of all N images would all be the same set, with a standard deviation
of 0). The floor is N real training images against the same reference (`ddpm.images.fid.real_vs_real`, cached).
Inception Score is never computed.

Samples drawn elsewhere (the GPU check returns them as uint8 .npz, since the Inception weights do not travel) are
measured here with `load_sample_file`, `reference_dataset` and `sample_quality_entries`, and `record_sample_quality`
writes the result into the run's metrics.json (`python -m ddpm fid`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ddpm.evaluation.errors import EvaluationError
from ddpm.evaluation.run_folder import METRICS_FILE
from ddpm.images import data
from ddpm.images.fid import (
    REAL_VS_REAL_SEED,
    FidResult,
    FidWeightsError,
    KidSettings,
    ReferenceSet,
    fid_kid,
    inception_weights_path,
    real_vs_real,
    reference_cache_name,
)

Tensor = torch.Tensor

KID_SUBSETS = 100  # KID: mean and standard deviation of the unbiased MMD^2 over this many random subsets ...
KID_SUBSET_MAX = 1000  # ... of min(1000, N // 2) images a side (N // 2, not N: subsets of all N would all be equal)

# The metrics.json entries of FID and KID when they are skipped (evaluate --skip-fid).
FID_SKIPPED = {"fid": None, "kid_mean": None, "kid_std": None, "kid_stderr": None, "kid_subsets": None,
               "kid_subset_size": None, "fid_reference": None, "fid_real_vs_real": None,
               "kid_real_vs_real_mean": None, "kid_real_vs_real_std": None, "real_vs_real": None}


def kid_subset_size(num: int) -> int:
    """Images per KID subset for N samples vs N reference images: min(1000, N // 2), at least 2."""
    return max(2, min(KID_SUBSET_MAX, num // 2))


def check_fid_weights(cache_dir: str | os.PathLike | None) -> None:
    """Before hours of sampling: the FID weights must be there (mapped once, then cached); EvaluationError if not."""
    try:
        inception_weights_path(cache_dir)
    except FidWeightsError as error:
        raise EvaluationError(f"{error} (or pass --skip-fid)") from None


@dataclass(frozen=True)
class SampleQuality:
    """FID/KID of N samples against N test images (`samples`) and of N training images against the same test images
    (`floor`, `floor_cached`: whether it came from the cache), with the KID subset size both used."""

    samples: FidResult
    floor: FidResult
    floor_cached: bool
    kid_subset_size: int

    def metrics(self, dataset: str, dataset_name: str, num_test: int) -> dict:
        """The metrics.json entries (FID_SKIPPED's keys) for a test split of `num_test` images."""
        result, floor = self.samples, self.floor
        return {
            "fid": result.fid,
            "kid_mean": result.kid_mean,
            "kid_std": result.kid_std,
            "kid_stderr": result.kid_stderr,
            "fid_real_vs_real": floor.fid,
            "kid_real_vs_real_mean": floor.kid_mean,
            "kid_real_vs_real_std": floor.kid_std,
            "real_vs_real": {"split": "train", "num_images": floor.num_generated, "subset_seed": REAL_VS_REAL_SEED,
                             "cached": self.floor_cached},
            "kid_subsets": KID_SUBSETS,
            "kid_subset_size": self.kid_subset_size,
            "fid_reference": {
                "dataset": dataset_name,
                "split": "test",
                "num_images": result.num_reference,
                "subset": "whole split" if result.num_reference == num_test else "seeded random subset (seed 0)",
                "cache_name": reference_cache_name(dataset, "test", result.num_generated, 0),
                "feature_extractor": result.feature_extractor,
                "weights_sha256": result.weights_sha256,
            },
        }


def measure_sample_quality(images: Tensor, dataset: str, seed: int, *, device: str,
                           cache: str | os.PathLike | None, progress: bool,
                           say: Callable[[str], None]) -> SampleQuality:
    """FID and KID of uint8 `images` [N, C, H, W] against N test images of `dataset`, then the floor at the same N;
    KID subsets drawn with `seed`."""
    n = int(images.shape[0])
    say(f"FID/KID: {n} samples vs {n} test images")
    reference = ReferenceSet(dataset, "test", n, seed=0)
    subset = kid_subset_size(n)
    kid = KidSettings(subsets=KID_SUBSETS, subset_size=subset, seed=seed)
    result = fid_kid(images, reference, kid=kid, device=device, cache=cache, verbose=progress)
    say(f"FID/KID floor: {n} training images vs the same {n} test images (cached after the first run)")
    floor, cached = real_vs_real(dataset, n, kid=kid, device=device, cache=cache, verbose=progress)
    return SampleQuality(samples=result, floor=floor, floor_cached=cached, kid_subset_size=subset)


def sample_quality_entries(images: Tensor, dataset: str, seed: int, *, device: str,
                           cache: str | os.PathLike | None, progress: bool,
                           say: Callable[[str], None]) -> dict:
    """`measure_sample_quality` of uint8 `images` against `dataset`'s test split, as metrics.json entries
    (`SampleQuality.metrics`): what `python -m ddpm fid` and the GPU check's report record."""
    quality = measure_sample_quality(images, dataset, seed, device=device, cache=cache, progress=progress, say=say)
    info = data.dataset_info(dataset)
    return quality.metrics(dataset, info.name, info.num("test"))


REFERENCE_DATASETS = ("mnist", "digits")  # what `reference_dataset` accepts, as DATASET-test


def reference_dataset(reference: str) -> str:
    """The dataset of a FID reference named DATASET-test (mnist-test, digits-test); EvaluationError otherwise.

    Only test splits: N samples are compared with N test images, as `evaluate` does."""
    dataset, _, split = str(reference).rpartition("-")
    if split != "test" or dataset not in REFERENCE_DATASETS:
        options = ", ".join(f"{name}-test" for name in REFERENCE_DATASETS)
        raise EvaluationError(f"unknown FID reference {reference!r}; use {options}")
    return dataset


def load_sample_file(path: str | os.PathLike, dataset: str) -> Tensor:
    """uint8 [N, C, H, W] images from an .npz with the key "images" (what `evaluate` and `sample --npz` write), checked
    against the image shape of `dataset` and its test split's size; EvaluationError with one line otherwise."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "images" not in archive.files:
                raise EvaluationError(f"{str(path)!r} has no array 'images' (it holds {', '.join(archive.files)})")
            images = archive["images"]
    except (OSError, ValueError) as error:  # missing, unreadable, not an .npz, or an object array
        raise EvaluationError(f"cannot read samples from {str(path)!r}: {error}") from None
    info = data.dataset_info(dataset)
    expected = (info.channels, info.height, info.width)
    if images.dtype != np.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise EvaluationError(f"{str(path)!r} holds {images.dtype} {list(images.shape)}; FID against {dataset} needs "
                              f"uint8 [N, {', '.join(map(str, expected))}]")
    num_test = info.num("test")
    if not 2 <= images.shape[0] <= num_test:
        raise EvaluationError(f"{str(path)!r} holds {images.shape[0]} images; FID compares N samples with N test "
                              f"images, so N must lie in 2..{num_test}")
    return torch.from_numpy(images)


def record_sample_quality(run_dir: str | os.PathLike, entries: Mapping[str, object], command: str) -> Path | None:
    """Write FID/KID `entries` (FID_SKIPPED's keys) into run_dir/metrics.json, with "fid_skipped" false and
    "fid_command"; the previous metrics.json is kept as metrics.previous-<time>.json (its new path is returned).
    EvaluationError when run_dir holds no finished evaluation or the samples' count differs from its own."""
    from ddpm.runtime.files import keep_previous_file, write_json_atomic

    path = Path(run_dir) / METRICS_FILE
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EvaluationError(f"cannot read the evaluation {str(path)!r}: {error}") from None
    reference = entries.get("fid_reference")
    num = reference.get("num_images") if isinstance(reference, Mapping) else None
    if metrics.get("fid_num_samples") != num:
        raise EvaluationError(f"{str(path)!r} describes {metrics.get('fid_num_samples')} samples, the FID was "
                              f"measured on {num}")
    metrics.update(entries)
    metrics.update(fid_skipped=False, fid_command=command)
    previous = keep_previous_file(path)
    write_json_atomic(path, metrics)
    return previous


__all__ = [
    "FID_SKIPPED",
    "REFERENCE_DATASETS",
    "KID_SUBSETS",
    "KID_SUBSET_MAX",
    "SampleQuality",
    "check_fid_weights",
    "kid_subset_size",
    "load_sample_file",
    "measure_sample_quality",
    "record_sample_quality",
    "reference_dataset",
    "sample_quality_entries",
]
