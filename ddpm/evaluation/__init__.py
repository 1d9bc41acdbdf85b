"""Evaluation of a trained checkpoint: the bound in bits/dim, Algorithm-2 samples, FID/KID, the optimal-variance
estimate, sample generation from the command line, and the run's report.

- `evaluate`: the orchestrator `evaluate_checkpoint` (its phases in order) and the metrics.json record.
- `bounds`: the exact and Monte Carlo bound; `sampling`: the evaluation's samples and their files;
  `optimal_variance`: Gamma_t, its file and its phase; `sample_quality`: FID/KID and their floor.
- `run_folder`: the run folder's file names and how an evaluation takes it over; `randomness`: the phase generators;
  `errors`: `EvaluationError`.
- `generate`: images from a checkpoint for `python -m ddpm sample`; `report`: report.md and report.html.

May import `ddpm.training` (checkpoints, presets), `ddpm.images`, `ddpm.core` and `ddpm.runtime`.
"""
