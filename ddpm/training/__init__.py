"""Training: the presets (`config`), the U-Net eps_theta (`model`), Algorithm 1 as a resumable run (`trainer`), the
update rules (warmup, EMA), checkpoints, and the session budget that sizes a run to its evaluation.

May import `ddpm.core`, `ddpm.images` and `ddpm.runtime`; never evaluation, the conformance suite or the studies.
"""
