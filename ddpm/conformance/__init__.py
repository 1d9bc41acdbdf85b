"""A conformance suite any DDPM implementation can be run against: the derivations as the oracle.

- `protocol`: the `Adapter` protocol (the few operations an implementation exposes, in its own timestep
  convention), `VarianceKind`, `Convention`, `ScheduleSpec`, `Chain`, `NotOffered`.
- `oracle`: the float64 oracle forms and the rounding-error tolerance model.
- `cases`: the named cases (exact and statistical) and their `CaseResult`.
- `runner`: `load_adapters("package.module:factory")`, `run_suite`.
- `report`: conformance.md and conformance.json.
- `adapters/`: the reference (this project) and diffusers / lucidrains adapters (the `conformance` extra).
- `graded`: the reference with one error of a given size delta (noise, a variance error that cancels in the
  chains' output law, the loss), for measuring what the statistical cases detect (`ddpm.studies.conformance_power`).

`python -m ddpm conform` runs it (exit 0 all conformant, 1 a case failed, 2 bad input).

May import `ddpm.core` (the reference adapter) and `ddpm.runtime`; never training, evaluation or the studies.
"""
