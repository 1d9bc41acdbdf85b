"""FID and KID of the evaluation's samples against N test images, with the floor that real images reach.

`ddpm.images.fid.fid_kid`: torch-fidelity's network and metrics with the TF FID Inception, one feature extractor
for the samples, the reference and the floor, against the reference set: N test images, a seeded subset when N is
smaller than the test split (ReferenceSet(dataset, "test", N, seed=0)), its features cached keyed by dataset, split,
N, subset seed, data fingerprint and weights. FID is compared only at equal N, so N larger than the test split is an
error. KID is the mean (and standard deviation) of the unbiased MMD^2 over KID_SUBSETS random subsets of
min(1000, N // 2) images a side (subsets of all N images would all be the same set, with a standard deviation
of 0). The floor is N real training images against the same reference (`ddpm.images.fid.real_vs_real`, cached).
Inception Score is never computed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ddpm.evaluation.errors import EvaluationError
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


__all__ = [
    "FID_SKIPPED",
    "KID_SUBSETS",
    "KID_SUBSET_MAX",
    "SampleQuality",
    "check_fid_weights",
    "kid_subset_size",
    "measure_sample_quality",
]
