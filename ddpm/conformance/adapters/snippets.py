"""Tensor literals for the standalone reproduction snippets of the third-party adapters (`reproduction()`): one
owner of the default inputs and of the literal format, shared by the diffusers, lucidrains and MONAI adapters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# Values for a snippet input the failing case did not record (same length as the recorded ones).
DEFAULT_INPUTS = {
    "x0": [-1.0, -0.25, 0.5, 1.0],
    "xt": [0.8, -1.2, 0.1, 0.4],
    "eps": [0.3, -0.7, 1.1, -0.2],
    "x0_pred": [-0.9, -0.3, 0.4, 0.9],
    "v_pred": [0.5, -0.6, 1.2, -0.1],
    "noise": [0.3, -0.7, 1.1, -0.2],
    "z": [-0.5, 1.5, 0.2, -1.0],
    "v": [0.1, 0.2, 0.3, 0.4],
}


def snippet_tensors(inputs: Mapping[str, Any], names: Sequence[str]) -> str:
    """Lines `name = torch.tensor([...]).reshape(1, 1, 1, -1)` for a reproduction snippet.

    Values come from `inputs` (a flat list or a float each); a name absent there gets a default of the same
    length as the given ones.
    """
    given = {k: list(np.ravel(np.asarray(v, dtype=np.float64))) for k, v in inputs.items()}
    n = len(next(iter(given.values()))) if given else len(DEFAULT_INPUTS["x0"])
    lines = []
    for name in names:
        default = DEFAULT_INPUTS[name]
        values = given.get(name, [default[i % len(default)] for i in range(n)])
        lines.append(f"{name} = torch.tensor({[float(x) for x in values]!r}).reshape(1, 1, 1, -1)")
    return "\n".join(lines)
