"""Evaluation of a trained checkpoint: the bound in bits/dim, Algorithm-2 samples, FID/KID, the optimal-variance
estimate, sample generation from the command line, and the run's report.

May import `ddpm.training` (checkpoints, presets), `ddpm.images`, `ddpm.core` and `ddpm.runtime`.
"""
