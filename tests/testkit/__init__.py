"""The test suite's own helpers: one definition each of the doubles, oracles, tolerances and checks the tests share.

Importable as `testkit` because pytest puts tests/ on sys.path (`pythonpath` in pyproject.toml). tests/ itself is
not a package: torch-fidelity installs a top-level `tests` package that would shadow it. Test modules never import
each other (pytest runs with `--import-mode=importlib`); what two test files share lives here or in a conftest.py.

- `tolerances`: every tolerance, by dtype and by what a reported number may move by.
- `strategies`: Hypothesis strategies (valid beta schedules, timesteps).
- `oracles`: the derivations' float64 / 50-digit oracles as the tests call them.
- `diffusion_cases`: GaussianDiffusion's public methods against those oracles (the CPU and the CUDA tests).
- `optimal_denoisers`: data whose optimal denoiser eps* is known in closed form, and its exact laws.
- `stat_checks`: a family of hypothesis tests with one family-wise error rate.
- `symbolic`: identity checks for the SymPy tests, and the generic derivation-step cases.
- `doubles`: small stand-ins for eps_theta and 8-bit grid data.
- `broken_adapters`: the reference conformance adapter with one plausible bug each.
- `shipped_adapters`: the shipped adapters' factories called once per process, and float32 draws for their tests.
- `runs`: the settings of the tiny trained-and-evaluated run (built by a fixture in tests/evaluation/conftest.py).
- `threads`: one torch thread for a block.
- `bad_checkpoints`: files that are not checkpoints (text, empty, zips, pickles that run code) and their errors.
- `paths`: the repository's root.
"""
