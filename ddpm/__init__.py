"""ddpm-verified: DDPM (Ho et al. 2020) in PyTorch, tested against the SymPy derivations in `derivations/`.

Packages, bottom layer first (CONTRIBUTING.md, "Layout and layers"): `runtime` (files, provenance, devices), `core`
(the mathematics), `images` (datasets, FID/KID), `training` (presets, the U-Net, Algorithm 1), `evaluation` (the
bound, samples and report of a checkpoint), `conformance` (the suite for any implementation), `studies` (bench,
studies, the GPU check); `cli` is `python -m ddpm`.
"""

__version__ = "0.1.0"
