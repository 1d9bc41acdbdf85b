"""The one place tolerances live: code-vs-oracle comparisons by dtype, and what a reported number may move by."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tolerance:
    """Relative and absolute tolerance for `numpy.testing.assert_allclose`."""

    rtol: float
    atol: float

    def kwargs(self) -> dict[str, float]:
        """As keyword arguments for assert_allclose."""
        return {"rtol": self.rtol, "atol": self.atol}


# float64 code against the float64 oracle: only rounding differences of a few ulps per operation.
FLOAT64 = Tolerance(rtol=1e-10, atol=1e-12)
# float32 working tensors (constants are float64, cast at the point of use).
FLOAT32 = Tolerance(rtol=2e-5, atol=1e-6)
# bfloat16 working tensors (8 bits of mantissa).
BFLOAT16 = Tolerance(rtol=2e-2, atol=2e-2)

BY_DTYPE_NAME = {"float64": FLOAT64, "float32": FLOAT32, "bfloat16": BFLOAT16}

# A published statistic quoted to 4 decimals (e.g. MNIST's mean 0.1307): half a unit in the last place.
PUBLISHED_4_DECIMALS = Tolerance(rtol=0.0, atol=5e-5)
# torch-fidelity's InceptionV3 with the mapped weights vs the TorchScript FID Inception: the same float32 ops in
# another order (observed: 1.4e-6 absolute on features up to ~6, 1.5e-7 relative in norm).
INCEPTION_FEATURES = Tolerance(rtol=1e-5, atol=1e-5)
# FID is quoted to two decimals: a change of implementation (how features are extracted) may move it by at most half
# a unit of the last quoted digit.
FID_QUOTED = 0.005
# KID is quoted with its standard error (`ddpm.images.fid.kid_standard_error`): a change of implementation may move its
# mean (and its spread over subsets) by at most this fraction of that error.
KID_OF_STDERR = 0.01
# FID of a set against itself: the eigenvalue square roots of a rank-deficient covariance product leave ~1e-4;
# FID is quoted to two decimals.
FID_SELF = Tolerance(rtol=0.0, atol=1e-2)
# torchrun with 2 processes vs 1 process, same seed and global batch, weights after a few Adam updates of the tiny
# preset (tests/training/test_distributed.py). The two runs see the same images, t and eps; their gradients differ
# only by float32 summation order (the all-reduce averages two half-batch means instead of one full-batch mean), ~1e-7
# relative. Adam's update g / sqrt(v) passes that on, amplified only for elements whose gradient nearly cancels.
# Over the first updates (lr <= 2e-3) each weight moves by up to ~3e-3; atol 1e-5 is ~1/300 of that movement,
# while a wrong per-process slice of the batch changes the updates themselves (differences of the movement's size).
DISTRIBUTED_WEIGHTS = Tolerance(rtol=1e-4, atol=1e-5)
# diffusers' DDPMScheduler keeps beta_t and alpha_bar_t in float32 and forms beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}
# by cancellation (absolute error ~2e-7, up to 2e-3 relative for beta_t ~ 1e-4), so its float32 Algorithm 2 leaves
# the float64 one by more than float32 rounding: ~3e-5 on samples of scale ~1.6 at T = 1000 with the Gaussian eps*
# (ours: ~2e-6); ~1e-5 relative on the diverging samples of an untrained model. Bugs move samples far more: a t vs
# t - 1 slip or a wrong variance changes sigma_t z by ~1e-2 per step.
DIFFUSERS_FLOAT32_SCHEDULE = Tolerance(rtol=1e-3, atol=1e-3)


def float32_chain_atol(steps: int, scale: float, ulps_per_step: float = 8.0) -> float:
    """Absolute tolerance between two float32 runs of a *contracting* chain of `steps` steps whose values are at most
    `scale`: each step (a handful of multiply-adds) rounds at most `ulps_per_step` units of float32's last place
    (2^-23 relative) differently on two devices or orders, and a contracting chain does not amplify what earlier
    steps left, so the difference stays below steps * ulps_per_step * 2^-23 * scale. (An expanding chain, such as
    Algorithm 2 with a wrong eps_theta whose samples diverge, amplifies rounding with its growth, which this bound
    does not cover: compare those in float64.)"""
    return steps * ulps_per_step * 2.0**-23 * scale
