"""The cases of the conformance suite: each a named check of one operation of an adapter against the oracle.

Exact cases compare an operation at every timestep (t = 1 and t = T included) with the float64 oracle of
`ddpm.conformance.oracle` under its rounding-error tolerance (`exact`; the edge inputs and the search in `edges` and
`search`; the batched steps, whose rows are at different timesteps, in `batched`; DDIM inversion in `inversion`);
statistical cases (`chain[...]`, `loss_at_eps_star`, and `calibration[...]`, a chain's law of x_0 given x_t for
Gaussian and mixture data) drive the implementation with the exact output of the data and test what it produces
against the law the derivations predict, at a family-wise `SuiteConfig.alpha` with Holm's correction.

Every case returns a `CaseResult`: pass, fail (with the worst deviation, where it occurs and the inputs there,
from which the runner builds a reproduction), not applicable (the implementation lacks the operation), or
convention (it passes only under a convention the adapter declared, which is shown with the result).
"""

from ddpm.conformance.cases.context import Context
from ddpm.conformance.cases.plan import chain_cases, planned_cases
from ddpm.conformance.cases.results import CaseResult, Status, SuiteConfig, not_applicable, with_reproduction
from ddpm.conformance.cases.statistical import chain_law

__all__ = ["CaseResult", "Context", "Status", "SuiteConfig", "chain_cases", "chain_law", "not_applicable",
           "planned_cases", "with_reproduction"]
