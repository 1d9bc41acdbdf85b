"""Error messages name what was wrong (each assertion here was added for a mutant that reworded or broke one:
reports/mutants/mutants.md). A user reads these lines instead of a traceback, so their content is behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ddpm.core.diffusion import GaussianDiffusion
from ddpm.core.losses import training_loss_at
from ddpm.core.pixels import to_model_range
from ddpm.core.samplers import ancestral_sample, strided_ancestral_step


def _diffusion(T: int = 20) -> GaussianDiffusion:
    return GaussianDiffusion(np.linspace(1e-3, 0.2, T))


def test_p_sample_names_xt():
    x, t = torch.zeros(2, 1, 2, 2), torch.tensor([1, 2])
    with pytest.raises(ValueError, match=r"^xt must be a torch\.Tensor"):
        _diffusion().p_sample(x, x.numpy(), t, x, "beta")


def test_training_loss_names_the_noise_it_got():
    x0, t = torch.zeros(2, 1, 2, 2), torch.tensor([1, 2])
    with pytest.raises(ValueError,
                       match=r"noise must be a torch\.float32 tensor .*got \(torch\.float64, \(2, 1, 2, 2\), 'cpu'\)"):
        training_loss_at(lambda xt, t: xt, _diffusion(), x0, t, x0.double())


def test_to_model_range_names_the_dtype_it_got():
    with pytest.raises(ValueError, match=r"to_model_range expects a uint8 tensor, got torch\.float32"):
        to_model_range(torch.zeros(2))


def test_unvisited_snapshot_lists_the_visited_steps_abbreviated():
    T = 20
    with pytest.raises(ValueError, match=r"visited t: \[20, 19, 18, 17, 16, 15, '\.\.\.', 5, 4, 3, 2, 1, 0\]"):
        ancestral_sample(lambda xt, t: xt, _diffusion(T), (1, 1), torch.Generator(), progress=False,
                         trajectory_steps=[25])


def test_stride_names_the_argument_that_is_not_an_int():
    x = torch.zeros(1, 1)
    with pytest.raises(ValueError, match=r"^t must be an int \(paper timestep\), got 2\.0"):
        strided_ancestral_step(_diffusion(), x, x, 2.0, 1, x, "beta")


def test_a_model_returning_no_tensor_is_named():
    from ddpm.core.kernels import model_output

    with pytest.raises(ValueError, match=r"eps_model\(x_t, t\) must return a tensor of shape \(2, 1\) .*got NoneType"):
        model_output(lambda xt, t: None, torch.zeros(2, 1), torch.tensor([1, 2]))
