"""The U-Net eps_theta(x_t, t) (ddpm/training/model.py) and its configs (ddpm/training/config.py).

Shapes for every supported image size, the time embedding of the paper's t, input checks, determinism,
gradient flow through every input channel of every layer (so a dropped skip or an ignored t shows),
layout invariance (channels_last), and parameter/FLOP counts checked against hand-derived values.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from ddpm.training.config import PRESETS, ModelConfig, count_parameters, forward_flops_per_image, get_preset
from ddpm.training.model import UNet, build_unet, timestep_embedding
from testkit import tolerances

T = 1000
# A fast config that still has every kind of layer: two levels, attention at level 1 and in the middle,
# dropout, a space-to-depth stem. Used where the preset does not matter.
FULL = ModelConfig(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(1,),
                   middle_attention=True, dropout=0.1, norm_groups=4, attention_heads=2)


def make_model(config: ModelConfig, channels: int, size, seed: int, randomise_output: bool = True) -> UNet:
    """A model with seeded weights; the zero-initialised output conv is randomised so outputs depend on x and t."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_unet(config, channels, size, T)
        if randomise_output:
            torch.nn.init.normal_(model.output_conv.weight, std=0.1)
            torch.nn.init.normal_(model.output_conv.bias, std=0.1)
    return model.eval()


def batch(channels: int, size, batch_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    height, width = (size, size) if isinstance(size, int) else size
    x = torch.randn(batch_size, channels, height, width, generator=g)  # [B, C, H, W]
    t = torch.randint(1, T + 1, (batch_size,), generator=g)  # [B] in {1..T}
    return x, t


# ---------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [8, 28, 32])
def test_output_shape_matches_input(preset, channels, size):
    config = get_preset(preset).model
    if preset == "gpu" and size != 28:
        config = config.replace(base_channels=32)  # same structure, cheaper
    model = make_model(config, channels, size, seed=0)
    x, t = batch(channels, size, 2, seed=1)
    with torch.inference_mode():
        y = model(x, t)
    want = (x.shape[0], 2 * channels, *x.shape[2:]) if config.learn_variance else tuple(x.shape)
    assert y.shape == want, f"eps_theta (and v with learn_variance) must be {want}, got {tuple(y.shape)}"
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("size", [7, 28, (28, 20), 9])
def test_odd_sizes_go_down_and_back_up(size):
    # Four levels: 28 -> 14 -> 7 -> 4 and back up 4 -> 7 -> 14 -> 28 (upsampling to the skip's size).
    config = ModelConfig(base_channels=8, channel_mults=(1, 1, 2, 2), num_res_blocks=1, norm_groups=4)
    model = make_model(config, 1, size, seed=0)
    x, t = batch(1, size, 2, seed=1)
    with torch.inference_mode():
        assert model(x, t).shape == x.shape


def test_untrained_model_predicts_zero_noise():
    # The output convolution is zero-initialised: eps_theta = 0 until the first step.
    model = make_model(FULL, 1, 8, seed=0, randomise_output=False)
    x, t = batch(1, 8, 4, seed=1)
    with torch.inference_mode():
        assert torch.count_nonzero(model(x, t)) == 0


# ------------------------------------------------------------------------------------------ time input


def test_timestep_embedding_matches_formula_with_the_papers_t():
    # Oracle in float64 NumPy: [cos(t w_i), sin(t w_i)], w_i = 10000^(-i/k), with t the paper's 1..T.
    dim = 16
    t = np.array([1, 2, 500, T])
    k = dim // 2
    w = 10_000.0 ** (-np.arange(k) / k)
    expected = np.concatenate([np.cos(t[:, None] * w), np.sin(t[:, None] * w)], axis=1)
    got = timestep_embedding(torch.from_numpy(t), dim).numpy()
    assert_allclose(got, expected, **tolerances.FLOAT32.kwargs(),
                    err_msg="timestep_embedding(t) != [cos(t w), sin(t w)] at the paper's t")


def test_timestep_embedding_separates_every_t():
    emb = timestep_embedding(torch.arange(1, T + 1), 32).double()  # [T, 32]
    distances = torch.cdist(emb, emb)
    distances.fill_diagonal_(float("inf"))
    assert distances.min() > 1e-3, "two timesteps in 1..T share (almost) the same embedding"


def test_output_depends_on_t():
    model = make_model(FULL, 1, 8, seed=0)
    x, _ = batch(1, 8, 1, seed=1)
    outputs = []
    with torch.inference_mode():
        for t in (1, 2, T // 2, T):
            outputs.append(model(x, torch.tensor([t])))
    for i in range(len(outputs)):
        for j in range(i + 1, len(outputs)):
            assert not torch.allclose(outputs[i], outputs[j], **tolerances.FLOAT32.kwargs()), (
                f"eps_theta gives the same output for two different timesteps (pair {i}, {j})")


@pytest.mark.parametrize("t", [1, T])
def test_accepts_boundary_timesteps(t):
    model = make_model(FULL, 1, 8, seed=0)
    x, _ = batch(1, 8, 3, seed=1)
    with torch.inference_mode():
        assert model(x, torch.full((3,), t, dtype=torch.int64)).shape == x.shape


@pytest.mark.parametrize(
    ("t", "match"),
    [
        (torch.tensor([[1, 2, 3]]), r"t must have shape \[B\]"),
        (torch.tensor([1, 2]), r"t must have shape \[B\]"),
        (torch.tensor([1.0, 2.0, 3.0]), "int64"),
        (torch.tensor([1, 2, 3], dtype=torch.int32), "int64"),
        (torch.tensor([0, 2, 3]), r"\{1\.\.1000\}"),
        (torch.tensor([1, 2, T + 1]), r"\{1\.\.1000\}"),
        (torch.tensor([1, -5, 3]), r"\{1\.\.1000\}"),
    ],
)
def test_rejects_bad_t(t, match):
    model = make_model(FULL, 1, 8, seed=0)
    x, _ = batch(1, 8, 3, seed=1)
    with pytest.raises(ValueError, match=match):
        model(x, t)


@pytest.mark.parametrize("t", [torch.tensor([[1]]), torch.tensor([1.0])])
def test_timestep_embedding_rejects_bad_t(t):
    with pytest.raises(ValueError, match="t must"):
        timestep_embedding(t, 8)


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((2, 3, 8, 8), r"\[B, 1, 8, 8\]"),  # wrong channel count
        ((2, 1, 9, 8), r"\[B, 1, 8, 8\]"),  # wrong height
        ((2, 1, 8, 16), r"\[B, 1, 8, 8\]"),  # wrong width
        ((1, 8, 8), r"\[B, 1, 8, 8\]"),  # missing batch dimension
    ],
)
def test_rejects_wrong_image_shape(shape, match):
    model = make_model(FULL, 1, 8, seed=0)
    with pytest.raises(ValueError, match=match):
        model(torch.zeros(shape), torch.ones(shape[0] if len(shape) == 4 else 1, dtype=torch.int64))


def test_rejects_integer_images():
    model = make_model(FULL, 1, 8, seed=0)
    with pytest.raises(ValueError, match="floating"):
        model(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.ones(2, dtype=torch.int64))


# ------------------------------------------------------------------------------ determinism and layout


def test_deterministic_given_weights():
    model = make_model(FULL, 3, 8, seed=0)
    twin = build_unet(FULL, 3, 8, T).eval()
    twin.load_state_dict(model.state_dict())
    x, t = batch(3, 8, 4, seed=1)
    with torch.inference_mode():
        first, again, from_twin = model(x, t), model(x, t), twin(x, t)
    assert torch.equal(first, again), "two calls with the same weights and inputs differ"
    assert torch.equal(first, from_twin), "a model loaded from the same state_dict gives another output"


def test_images_in_a_batch_do_not_interact():
    # GroupNorm normalises per image; a batch-statistics layer would make eps_theta(x_i) depend on x_j.
    model = make_model(FULL, 1, 8, seed=0)
    x, t = batch(1, 8, 5, seed=1)
    with torch.inference_mode():
        whole = model(x, t)
        parts = torch.cat([model(x[i:i + 1], t[i:i + 1]) for i in range(5)])
    assert_allclose(parts.numpy(), whole.numpy(), **tolerances.FLOAT32.kwargs(),
                    err_msg="eps_theta(x_i, t_i) changes with the other images of the batch")


def test_channels_last_matches_contiguous():
    model = make_model(FULL, 3, 8, seed=0)
    x, t = batch(3, 8, 4, seed=1)
    with torch.inference_mode():
        expected = model(x, t)
        model_cl = model.to(memory_format=torch.channels_last)
        got = model_cl(x.to(memory_format=torch.channels_last), t)
    assert_allclose(got.contiguous().numpy(), expected.numpy(), **tolerances.FLOAT32.kwargs(),
                    err_msg="channels_last layout changes eps_theta")


def test_dropout_only_in_training_mode():
    model = make_model(FULL, 1, 8, seed=0)
    x, t = batch(1, 8, 2, seed=1)
    with torch.no_grad():
        assert torch.equal(model.eval()(x, t), model(x, t)), "eval mode must be deterministic"
        with torch.random.fork_rng():
            torch.manual_seed(3)
            train_a = model.train()(x, t)
            train_b = model(x, t)
    assert not torch.equal(train_a, train_b), "dropout=0.1 should make two training-mode calls differ"


# ------------------------------------------------------------------------------------------- gradients


def _slices_without_gradient(model: torch.nn.Module) -> list[str]:
    """Names of parameter input slices (a conv/linear weight's input channel; a vector entry) with zero gradient."""
    missing = []
    for name, parameter in model.named_parameters():
        grad = parameter.grad
        if grad is None:
            missing.append(f"{name} (no grad)")
            continue
        if grad.ndim >= 2:  # weight [out, in, ...]: every input channel must receive gradient
            per_input = grad.transpose(0, 1).reshape(grad.shape[1], -1).abs().sum(dim=1)  # [in]
        else:  # bias / norm parameter [C]
            per_input = grad.abs()
        dead = torch.nonzero(per_input == 0).flatten().tolist()
        if dead:
            missing.append(f"{name}[:, {dead[:5]}{'...' if len(dead) > 5 else ''}]")
    return missing


@pytest.mark.parametrize(("config", "channels", "size"), [(FULL, 1, 8), (get_preset("small").model, 1, 28),
                                                          (get_preset("tiny").model, 3, 8)])
def test_gradients_reach_every_input_channel_of_every_parameter(config, channels, size):
    model = make_model(config, channels, size, seed=0, randomise_output=False).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, t = batch(channels, size, 4, seed=1)
    target = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    # Step 1: only the zero-initialised output conv receives gradient; afterwards everything must.
    for step in range(2):
        optimizer.zero_grad()
        loss = (model(x, t) - target).square().mean()
        loss.backward()
        if step == 0:
            optimizer.step()
    missing = _slices_without_gradient(model)
    assert not missing, f"no gradient reaches: {missing}"


# ------------------------------------------------------------------------------------ counts and config

# Hand count for the smallest network: base 2, one level, one block, no attention, 1 group, time width 2,
# one input channel. conv(i, o, k) = i*o*k*k + o, GroupNorm(c) = 2c, Linear(i, o) = i*o + o.
#   time MLP: Linear(2,2) + Linear(2,2)                                   = 6 + 6           = 12
#   input conv(1, 2, 3)                                                   = 18 + 2          = 20
#   down block (2 -> 2): GN 4 + conv 38 + Linear(2,2) 6 + GN 4 + conv 38  =                   90
#   middle: two such blocks                                               =                  180
#   up: two blocks (2 + 2 skip -> 2): GN(4) 8 + conv(4,2,3) 74 + Linear 6 + GN 4 + conv 38
#       + 1x1 skip conv(4,2,1) 10 = 140 each                              =                  280
#   output GN(2) 4 + output conv(2, 1, 3) 19                              =                   23
#   total                                                                 =                  605
# FLOPs per image at 4x4 (2 per multiply-add; the counter ignores elementwise work): per position the
# convs do 18 + 72 + 144 + 2 * (72 + 36 + 8) + 18 = 484 multiply-adds -> 484 * 16 * 2 = 15488, plus the
# seven 2x2 linears (2 in the MLP, 5 block projections) at 8 FLOPs each = 56: total 15544.
MINIMAL = ModelConfig(base_channels=2, channel_mults=(1,), num_res_blocks=1, attention_levels=(),
                      middle_attention=False, norm_groups=1, time_embedding_mult=1)


def test_parameter_count_of_minimal_network_by_hand():
    assert count_parameters(build_unet(MINIMAL, 1, 4, T)) == 605


def test_flop_count_of_minimal_network_by_hand():
    assert forward_flops_per_image(build_unet(MINIMAL, 1, 4, T), 1, 4) == 15544


def _conv(i: int, o: int, k: int) -> int:
    return i * o * k * k + o


def _resblock(i: int, o: int, time_channels: int) -> int:
    return 2 * i + _conv(i, o, 3) + (time_channels * o + o) + 2 * o + _conv(o, o, 3) + (_conv(i, o, 1) if i != o else 0)


def _attention(c: int) -> int:
    return 2 * c + c * 3 * c + _conv(c, c, 1)  # norm, qkv projection (no bias), output projection


def independent_parameter_count(config: ModelConfig, image_channels: int) -> int:
    """Parameter count from the architecture's description (module docstring), not from the module tree."""
    ch, mults, n = config.base_channels, config.channel_mults, config.num_res_blocks
    tc = config.time_embedding_mult * ch
    pc = image_channels * config.patch_size**2
    total = (ch * tc + tc) + (tc * tc + tc) + _conv(pc, ch, 3)
    widths = [ch]  # skip widths, in order
    c = ch
    for level, m in enumerate(mults):
        for _ in range(n):
            total += _resblock(c, ch * m, tc) + (_attention(ch * m) if level in config.attention_levels else 0)
            c = ch * m
            widths.append(c)
        if level < len(mults) - 1:
            total += _conv(c, c, 3)
            widths.append(c)
    total += 2 * _resblock(c, c, tc) + (_attention(c) if config.middle_attention else 0)
    for level in reversed(range(len(mults))):
        for _ in range(n + 1):
            total += _resblock(c + widths.pop(), ch * mults[level], tc)
            c = ch * mults[level]
            total += _attention(c) if level in config.attention_levels else 0
        if level > 0:
            total += _conv(c, c, 3)
    out_channels = pc * (2 if config.learn_variance else 1)  # [eps, v] with a learned variance
    return total + 2 * c + _conv(c, out_channels, 3)


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("channels", [1, 3])
def test_parameter_count_of_presets(preset, channels):
    config = get_preset(preset).model
    model = build_unet(config, channels, 32, T)
    assert count_parameters(model) == independent_parameter_count(config, channels)


def test_flops_positive_and_about_quadratic_in_width():
    # Convolutions and linears scale as width^2; only the input/output convs, the first time-MLP layer and
    # the attention products scale linearly, so doubling the width multiplies the count by just under 4.
    base = ModelConfig(base_channels=16, channel_mults=(1, 2), num_res_blocks=1, norm_groups=8)
    flops = [forward_flops_per_image(build_unet(base.replace(base_channels=c), 1, 28, T), 1, 28) for c in (16, 32, 64)]
    assert all(f > 0 for f in flops)
    for narrow, wide in zip(flops, flops[1:], strict=False):
        assert 3.5 < wide / narrow <= 4.0, f"FLOPs ratio for doubled width {wide / narrow:.3f} is not ~4"


def test_patch_stem_cuts_flops_by_about_four():
    config = ModelConfig(base_channels=16, channel_mults=(1, 2), num_res_blocks=1, norm_groups=8)
    full = forward_flops_per_image(build_unet(config, 1, 28, T), 1, 28)
    patched = forward_flops_per_image(build_unet(config.replace(patch_size=2), 1, 28, T), 1, 28)
    assert 3.5 < full / patched < 4.5


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"norm_groups": 5}, "norm_groups"),
        ({"attention_levels": (3,)}, "attention_levels"),
        ({"channel_mults": ()}, "channel_mults"),
        ({"num_res_blocks": 0}, "num_res_blocks"),
        ({"dropout": 1.0}, "dropout"),
        ({"base_channels": 7, "norm_groups": 1}, "even"),
        ({"attention_heads": 3}, "attention_heads"),
        ({"patch_size": 0}, "patch_size"),
    ],
)
def test_model_config_rejects_bad_values(changes, match):
    with pytest.raises(ValueError, match=match):
        FULL.replace(**changes)


def test_patch_size_must_divide_image_size():
    with pytest.raises(ValueError, match="patch_size"):
        build_unet(FULL.replace(patch_size=2), 1, 7, T)


def test_unknown_preset_names_the_options():
    with pytest.raises(ValueError, match=r"'huge'.*gpu.*small.*tiny"):
        get_preset("huge")


def test_configs_are_frozen_and_hashable():
    config = get_preset("small").model
    with pytest.raises(AttributeError):
        config.base_channels = 3  # type: ignore[misc]
    assert hash(config) == hash(ModelConfig(**{f: getattr(config, f) for f in config.__dataclass_fields__}))
