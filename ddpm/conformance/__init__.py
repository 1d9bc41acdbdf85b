"""A conformance suite any DDPM implementation can be run against: the derivations as the oracle.

- `protocol`: the `Adapter` protocol (the few operations an implementation exposes, in its own timestep
  convention, with what its network predicts: eps, x_0 or v), `VarianceKind`, `Convention`, `ScheduleSpec`,
  `Chain`, `NotOffered`, `RejectedConfiguration`.
- `oracle`: the float64 oracle forms and the rounding-error tolerance model; the suite's data and their exact
  outputs (eps*, x_0*, v*).
- `cases/`: the named cases and their `CaseResult`: exact (every timestep), edges (boundary timesteps and edge
  inputs, and a seeded Hypothesis search), statistical (full chains, the loss at the exact output).
- `runner`: `load_adapters("package.module:factory")`, `run_suite` (in worker processes with `jobs`).
- `report`: conformance.md and conformance.json (summary by family, findings grouped by root cause).
- `pytest_plugin` and `test_conformance`: the suite as pytest tests (`pytest --pyargs ddpm.conformance --adapter
  SPEC`).
- `adapters/`: the reference (this project) and the third-party adapters (the `conformance` extra).
- `graded`: the reference with one error of a given size delta (noise, a variance error that cancels in the
  chains' output law, the loss), for measuring what the statistical cases detect (`ddpm.studies.conformance_power`).

`python -m ddpm conform` runs it (exit 0 all conformant, 1 a case failed, 2 bad input).

May import `ddpm.core` (the reference adapter) and `ddpm.runtime`; never training, evaluation or the studies.
"""
