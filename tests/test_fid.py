"""ddpm.fid: the mapped FID Inception reproduces the TorchScript model, FID/KID behave, caches are keyed right.

Inception costs ~0.2-0.5 s per image on a 2-core CPU, so every test here pushes at most a few images through
it; the FID/KID tests (8 images a side) are marked slow. The mapped weights are built once per session in a
temporary cache dir (never in the user's ~/.cache).
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import numpy as np
import pytest
import tolerances
import torch
from numpy.testing import assert_allclose

from ddpm import fid
from ddpm.data import load_images
from ddpm.fid import FidResult, FidWeightsError, ReferenceSet, fid_kid

FEATURES = tolerances.INCEPTION_FEATURES.kwargs()
FID_SELF = tolerances.FID_SELF.kwargs()


def test_our_test_helpers_are_imported_not_an_installed_tests_package():
    """torch-fidelity installs a top-level `tests` package; our helpers must come from this folder."""
    assert Path(tolerances.__file__).resolve().parent == Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def fid_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ddpm-cache")


@pytest.fixture(scope="session")
def torchscript():
    return fid.load_torchscript_inception()


@pytest.fixture(scope="session")
def extractor(fid_cache):
    return fid.inception_feature_extractor(fid_cache)


def torchscript_features(model, images_uint8: torch.Tensor) -> torch.Tensor:
    """The reference pipeline: TF1-style bilinear resize to 299 (torch-fidelity's), (k - 128) / 128, TorchScript."""
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    x = images_uint8.to(torch.float32)
    if x.shape[-2:] != (299, 299):
        x = interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
    with torch.no_grad():
        return model((x - 128.0) / 128.0)  # [B, 2048]


def extractor_features(model, images_uint8: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        (features,) = model(images_uint8)
    return features  # [B, 2048]


# ------------------------------------------------------------------------------------------------------------
# The weights: pinned source, mapping table, file cache


def test_source_sha256_is_pinned_and_checked(monkeypatch):
    digest = hashlib.sha256(fid.fid_inception_source_path().read_bytes()).hexdigest()
    assert digest == fid.FID_INCEPTION_SHA256
    monkeypatch.setattr(fid, "FID_INCEPTION_SHA256", "f" * 64)
    with pytest.raises(FidWeightsError, match="sha256"):
        fid.load_torchscript_inception()


def test_mapping_table_covers_94_layers_one_to_one(torchscript):
    pairs = fid.layer_name_pairs()
    assert len(pairs) == 94
    assert len({a for a, _ in pairs}) == 94 and len({b for _, b in pairs}) == 94
    source = torchscript.state_dict()
    assert len(source) == 4 * 94, "the TorchScript model holds (weight, beta, mean, var) per layer and nothing else"
    mapped = fid.map_fid_inception_state_dict(source)
    for ours, theirs in pairs:
        assert torch.equal(mapped[f"{ours}.conv.weight"], source[f"{theirs}.weight"]), ours
        assert torch.equal(mapped[f"{ours}.bn.weight"], torch.ones_like(source[f"{theirs}.beta"])), ours
    assert torch.isnan(mapped["fc.weight"]).all() and torch.isnan(mapped["fc.bias"]).all(), "no classifier: NaN"
    missing = dict(source)
    del missing["net.layers.mixed_5.tower.conv_1.mean"]
    with pytest.raises(FidWeightsError, match="mixed_5.tower.conv_1.mean"):
        fid.map_fid_inception_state_dict(missing)
    extra = dict(source, **{"net.layers.extra.weight": torch.zeros(1)})
    with pytest.raises(FidWeightsError, match="unmapped"):
        fid.map_fid_inception_state_dict(extra)


def test_mapped_weights_file_is_cached_by_source_hash(fid_cache, monkeypatch, tmp_path):
    path = fid.inception_weights_path(fid_cache)
    assert path.parent == fid_cache and fid.FID_INCEPTION_SHA256[:16] in path.name
    assert fid.inception_weights_path(fid_cache) == path and path.stat().st_size > 80e6
    assert not [p for p in fid_cache.iterdir() if p.name.endswith(".tmp")], "no temporary file left behind"
    monkeypatch.setenv(fid.CACHE_ENV, str(tmp_path / "from-env"))
    assert fid.cache_dir() == tmp_path / "from-env"
    assert fid.cache_dir(fid_cache) == fid_cache, "an explicit argument beats the environment"
    monkeypatch.delenv(fid.CACHE_ENV)
    assert fid.cache_dir() == Path.home() / ".cache" / "ddpm-verified"


# ------------------------------------------------------------------------------------------------------------
# Features: torch-fidelity + mapped weights == TorchScript FID Inception


def test_features_match_the_torchscript_model(extractor, torchscript, seed_base):
    g = torch.Generator().manual_seed(seed_base + 11)
    at_299 = torch.randint(0, 256, (2, 3, 299, 299), generator=g, dtype=torch.uint8)
    mnist_like = torch.randint(0, 256, (2, 1, 28, 28), generator=g, dtype=torch.uint8).expand(-1, 3, -1, -1)
    for images in (at_299, mnist_like):
        ours, reference = extractor_features(extractor, images), torchscript_features(torchscript, images)
        assert ours.shape == reference.shape == (2, 2048)
        assert float(reference.abs().max()) > 0.5, "features are not trivially small"
        assert_allclose(ours.numpy(), reference.numpy(), **FEATURES, err_msg="mapped torch-fidelity vs TorchScript")


def test_a_wrong_mapping_is_detected(extractor, torchscript, seed_base):
    """The comparison above has teeth: swapped layers or a wrong batch-norm epsilon break it by orders of magnitude."""
    g = torch.Generator().manual_seed(seed_base + 12)
    image = torch.randint(0, 256, (1, 3, 299, 299), generator=g, dtype=torch.uint8)
    reference = torchscript_features(torchscript, image).numpy()
    atol = tolerances.INCEPTION_FEATURES.atol

    swapped = fid.map_fid_inception_state_dict(torchscript.state_dict())
    for key in [k for k in swapped if k.startswith("Mixed_6c.")]:
        twin = "Mixed_6d." + key[len("Mixed_6c.") :]  # same shapes: a strict load accepts the swap
        swapped[key], swapped[twin] = swapped[twin], swapped[key]
    model = copy.deepcopy(extractor)
    model.load_state_dict(swapped)
    assert np.abs(extractor_features(model, image).numpy() - reference).max() > 1000 * atol, "swap not detected"

    model = copy.deepcopy(extractor)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eps = 1e-5  # PyTorch's default instead of TF's 1e-3
    assert np.abs(extractor_features(model, image).numpy() - reference).max() > 1000 * atol, "eps not detected"


# ------------------------------------------------------------------------------------------------------------
# Reference sets and cache keys


def test_reference_cache_name_depends_on_n_split_seed_data_and_weights():
    base = ReferenceSet("digits", "test", 100, seed=0)
    name = base.cache_name()
    assert "digits" in name and "test" in name and "n100" in name and fid.FID_INCEPTION_SHA256[:12] in name
    others = [
        ReferenceSet("digits", "test", 101, seed=0).cache_name(),
        ReferenceSet("digits", "train", 100, seed=0).cache_name(),
        ReferenceSet("digits", "test", 100, seed=1).cache_name(),
        base.cache_name(weights_sha256="0" * 64),
    ]
    assert len({name, *others}) == 5, "N, split, subset seed and weights must all change the key"
    assert ReferenceSet("digits", "test").cache_name() == ReferenceSet("digits", "test", 297, seed=5).cache_name()
    assert fid.reference_cache_name("digits", "test", 100) == name


def test_reference_subset_is_seeded_and_sorted():
    everything = load_images("digits", "test")
    a, b = ReferenceSet("digits", "test", 50, seed=3).load(), ReferenceSet("digits", "test", 50, seed=3).load()
    c = ReferenceSet("digits", "test", 50, seed=4).load()
    assert a.shape == (50, 1, 8, 8) and torch.equal(a, b) and not torch.equal(a, c)
    index = torch.randperm(297, generator=torch.Generator().manual_seed(3))[:50].sort().values
    assert torch.equal(a, everything[index])
    assert torch.equal(ReferenceSet("digits", "test").load(), everything)
    with pytest.raises(ValueError, match="reference num"):
        ReferenceSet("digits", "test", 298).size()


def test_fid_kid_argument_errors(fid_cache):
    eight = torch.zeros(8, 1, 28, 28, dtype=torch.uint8)
    with pytest.raises(ValueError, match="equal N"):
        fid_kid(eight, torch.zeros(9, 1, 28, 28, dtype=torch.uint8), cache=fid_cache)
    with pytest.raises(ValueError, match="kid_subset_size"):
        fid_kid(eight, eight, kid_subset_size=9, cache=fid_cache)
    with pytest.raises(ValueError, match="uint8"):
        fid_kid(eight.float(), eight, cache=fid_cache)
    with pytest.raises(ValueError, match=r"1 or 3"):
        fid_kid(torch.zeros(8, 2, 28, 28, dtype=torch.uint8), eight, cache=fid_cache)
    with pytest.raises(ValueError, match="device"):
        fid_kid(eight, eight, device="tpu", cache=fid_cache)


# ------------------------------------------------------------------------------------------------------------
# FID and KID end to end (8 images a side)


@pytest.mark.slow
def test_fid_kid_noise_vs_mnist_self_and_cache(fid_cache, monkeypatch, seed_base):
    """Three runs at N = 8 (each costs ~15 s on CPU, mostly torch-fidelity's 2048 x 2048 eigvals)."""
    n = 8
    reference = ReferenceSet("mnist", "test", n, seed=seed_base)
    g = torch.Generator().manual_seed(seed_base + 13)
    rgb_noise = torch.randint(0, 256, (n, 3, 28, 28), generator=g, dtype=torch.uint8)
    train = load_images("mnist", "train")
    other_digits = train[torch.randperm(train.shape[0], generator=g)[:n]]

    on_noise = fid_kid(rgb_noise, reference, cache=fid_cache, device="cpu")
    assert isinstance(on_noise, FidResult)
    assert (on_noise.num_generated, on_noise.num_reference) == (n, n)
    assert on_noise.weights_sha256 == fid.FID_INCEPTION_SHA256 and "inception-v3-compat" in on_noise.feature_extractor
    cache_files = set((fid_cache / "fidelity_cache").glob("*"))
    assert {p.name.split("-inception-v3-compat-")[0] for p in cache_files} == {reference.cache_name()}
    assert len(cache_files) == 2, "reference features and FID statistics are cached under the keyed name"

    # From now on the reference must come from the cache: loading its images would be a bug.
    def refuse(self):
        raise AssertionError("reference images were loaded although their statistics are cached")

    monkeypatch.setattr(ReferenceSet, "load", refuse)
    on_digits = fid_kid(other_digits, reference, cache=fid_cache, device="cpu")
    # The same images as a plain tensor: computed afresh and not cached.
    itself = reference_images(seed_base, n)
    on_itself = fid_kid(itself, itself.clone(), cache=fid_cache, device="cpu")
    assert set((fid_cache / "fidelity_cache").glob("*")) == cache_files, "a tensor reference is not cached"

    assert_allclose(on_itself.fid, 0.0, **FID_SELF, err_msg="FID of a set against itself")
    assert on_digits.fid > 10 * tolerances.FID_SELF.atol, "different digits are not identical"
    assert on_noise.fid > 2 * on_digits.fid, "uniform noise must be much further from MNIST than other MNIST digits"
    assert on_noise.kid_mean > 10 * abs(on_digits.kid_mean) and on_noise.kid_mean > 0.1
    assert on_noise.kid_std >= 0 and np.isfinite([on_noise.fid, on_noise.kid_mean, on_digits.fid]).all()


def reference_images(seed: int, n: int) -> torch.Tensor:
    """The same subset ReferenceSet('mnist', 'test', n, seed) holds, rebuilt here from the documented rule."""
    test = load_images("mnist", "test")
    return test[torch.randperm(test.shape[0], generator=torch.Generator().manual_seed(seed))[:n].sort().values]


def test_torch_fidelity_is_called_offline_on_cpu_without_inception_score(fid_cache, monkeypatch):
    """The arguments handed to torch-fidelity (stubbed: no Inception run), for a tensor and a cached reference."""
    import torch_fidelity

    calls = []

    def fake_calculate_metrics(**kwargs):
        calls.append(kwargs)
        return {
            torch_fidelity.KEY_METRIC_FID: 1.5,
            torch_fidelity.KEY_METRIC_KID_MEAN: 0.25,
            torch_fidelity.KEY_METRIC_KID_STD: 0.125,
        }

    monkeypatch.setattr(torch_fidelity, "calculate_metrics", fake_calculate_metrics)
    gray = torch.randint(0, 256, (5, 1, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    rgb = torch.randint(0, 256, (4, 3, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    result = fid_kid(gray, rgb, allow_unequal_n=True, cache=fid_cache, device="cpu", kid_seed=7)
    assert result == FidResult(1.5, 0.25, 0.125, 5, 4, result.feature_extractor, fid.FID_INCEPTION_SHA256)
    kwargs = calls[-1]
    assert kwargs["cuda"] is False and kwargs["save_cpu_ram"] is True
    assert kwargs["fid"] and kwargs["kid"] and not kwargs["isc"] and not kwargs["prc"]
    assert kwargs["feature_extractor"] == "inception-v3-compat"
    assert Path(kwargs["feature_extractor_weights_path"]) == fid.inception_weights_path(fid_cache)
    assert Path(kwargs["cache_root"]).parent == fid_cache and kwargs["input2_cache_name"] is None
    assert kwargs["kid_subset_size"] == 4 and kwargs["rng_seed"] == 7 and kwargs["verbose"] is False
    first = kwargs["input1"][0]
    assert first.shape == (3, 8, 8) and first.dtype == torch.uint8 and torch.equal(first, gray[0].expand(3, -1, -1))
    assert len(kwargs["input1"]) == 5 and len(kwargs["input2"]) == 4 and torch.equal(kwargs["input2"][3], rgb[3])

    reference = ReferenceSet("digits", "test", 5, seed=2)
    fid_kid(gray, reference, cache=fid_cache, device="cpu", verbose=True)
    kwargs = calls[-1]
    assert kwargs["input2_cache_name"] == reference.cache_name() and kwargs["verbose"] is True
    assert torch.equal(kwargs["input2"][0], reference.load()[0].expand(3, -1, -1))


def test_cuda_convolutions_are_full_float32_inside_and_restored_after():
    conv = torch.backends.cudnn.conv
    before = conv.fp32_precision
    with fid.ieee_float32_convolutions():
        assert conv.fp32_precision == "ieee"
    assert conv.fp32_precision == before
    with pytest.raises(KeyError), fid.ieee_float32_convolutions():
        raise KeyError("restored on errors too")
    assert conv.fp32_precision == before


@pytest.mark.gpu
def test_features_on_cuda_match_the_torchscript_model_on_cpu(extractor, torchscript, seed_base):
    g = torch.Generator().manual_seed(seed_base + 15)
    images = torch.randint(0, 256, (4, 1, 28, 28), generator=g, dtype=torch.uint8).expand(-1, 3, -1, -1)
    model = copy.deepcopy(extractor).cuda()
    with fid.ieee_float32_convolutions(), torch.no_grad():
        (ours,) = model(images.cuda())
    reference = torchscript_features(torchscript, images)
    assert_allclose(ours.cpu().numpy(), reference.numpy(), **FEATURES, err_msg="CUDA features vs CPU TorchScript")
