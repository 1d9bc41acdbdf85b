"""ddpm.images.fid: the mapped FID Inception reproduces the TorchScript model, FID/KID behave, caches are keyed right.

Inception costs ~0.2-0.5 s per image on a 2-core CPU, so every test here pushes at most a few images through
it; the FID/KID tests (8 images a side) are marked slow. The mapped weights are built once per session in a
temporary cache dir (never in the user's ~/.cache).
"""

from __future__ import annotations

import copy
import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from ddpm.images import fid
from ddpm.images.data import load_images
from ddpm.images.fid import FidResult, FidWeightsError, KidSettings, ReferenceSet, fid_kid
from testkit import tolerances

FEATURES = tolerances.INCEPTION_FEATURES.kwargs()
FID_SELF = tolerances.FID_SELF.kwargs()


def test_our_test_helpers_are_imported_not_an_installed_tests_package():
    """torch-fidelity installs a top-level `tests` package; our helpers must come from this checkout's tests/testkit."""
    assert Path(tolerances.__file__).resolve().parent == Path(__file__).resolve().parents[1] / "testkit"


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


def float32_error_vs_float64(features: torch.Tensor, exact: torch.Tensor) -> float:
    """Largest |float32 feature - float64 feature| over max |float64 feature|."""
    return float((features.double() - exact).abs().max() / exact.abs().max())


ROUNDING_FACTOR = 4.0  # bounds the ratio of two maxima (over 2 x 2048 features) of float32 errors of one size


def float64_and_float32_features(fid_cache, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(the float64 network's features, torch-fidelity's plain float32 CPU features, the latter's error against the
    former as in `float32_error_vs_float64`) on uint8 [B, 1, H, W] `images`; the plain error must stay under 1e-4."""
    exact_net = fid.inception_feature_extractor(fid_cache).double()
    exact_net.feature_extractor_internal_dtype = torch.float64  # torch-fidelity's forward casts its input to this
    with torch.no_grad():
        (exact,) = exact_net(images.expand(-1, 3, -1, -1))
    exact = exact.double()  # the extractor returns float32; the float64 run rounds once at the end
    assert next(exact_net.parameters()).dtype == torch.float64
    plain = extractor_features(fid.inception_feature_extractor(fid_cache), images.expand(-1, 3, -1, -1))
    plain_error = float32_error_vs_float64(plain, exact)
    assert plain_error < 1e-4, f"torch-fidelity's float32 forward is {plain_error:.2g} from float64"
    return exact, plain, plain_error


def test_fast_features_are_torch_fidelitys_up_to_float32_rounding(fid_cache, seed_base):
    """`InceptionFeatures` (channels-last, batched, inference mode) against torch-fidelity's plain forward.

    The float64 evaluation of the same network (its weights and internal dtype set to float64) is the exact value. A
    channels-last float32 evaluation only sums in another order, so its rounding error must be of the size of the
    plain float32 forward's: the tolerance is ROUNDING_FACTOR times the plain path's own error on these images
    (a maximum over 2 x 2048 features of two errors of the same distribution; the factor bounds the ratio of two
    such maxima). bfloat16 autocast, the ~2.3x faster option that was rejected, leaves it far behind.
    """
    rounding_factor = ROUNDING_FACTOR
    g = torch.Generator().manual_seed(seed_base + 16)
    images = torch.randint(0, 256, (2, 1, 28, 28), generator=g, dtype=torch.uint8)
    exact, plain, plain_error = float64_and_float32_features(fid_cache, images)
    fast = fid.inception_features(fid_cache, "cpu")(images)
    assert float32_error_vs_float64(fast, exact) <= rounding_factor * max(plain_error, 2.0**-24), \
        "the fast extractor leaves float64 by more than float32 rounding"
    assert_allclose(fast.numpy(), plain.numpy(), rtol=0.0,
                    atol=2 * rounding_factor * max(plain_error, 2.0**-24) * float(exact.abs().max()),
                    err_msg="fast vs plain torch-fidelity features")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rejected = fid.inception_features(fid_cache, "cpu")(images)
    assert float32_error_vs_float64(rejected, exact) > 100 * rounding_factor * plain_error, "bfloat16 must fail"


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
        fid_kid(eight, eight, kid=KidSettings(subset_size=9), cache=fid_cache)
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
    cache_files = set((fid_cache / "features").glob("*"))
    assert cache_files == {fid_cache / "features" / f"{reference.cache_name()}.npy"}, "features cached by the key"
    assert np.load(next(iter(cache_files))).shape == (n, 2048)

    # From now on the reference must come from the cache: loading its images would be a bug.
    def refuse(self):
        raise AssertionError("reference images were loaded although their features are cached")

    monkeypatch.setattr(ReferenceSet, "load", refuse)
    on_digits = fid_kid(other_digits, reference, cache=fid_cache, device="cpu")
    # The same images as a plain tensor: computed afresh and not cached.
    itself = reference_images(seed_base, n)
    on_itself = fid_kid(itself, itself.clone(), cache=fid_cache, device="cpu")
    assert set((fid_cache / "features").glob("*")) == cache_files, "a tensor reference is not cached"

    assert_allclose(on_itself.fid, 0.0, **FID_SELF, err_msg="FID of a set against itself")
    assert on_digits.fid > 10 * tolerances.FID_SELF.atol, "different digits are not identical"
    assert on_noise.fid > 2 * on_digits.fid, "uniform noise must be much further from MNIST than other MNIST digits"
    assert on_noise.kid_mean > 10 * abs(on_digits.kid_mean) and on_noise.kid_mean > 0.1
    assert on_noise.kid_std >= 0 and np.isfinite([on_noise.fid, on_noise.kid_mean, on_digits.fid]).all()


@pytest.mark.slow
def test_fid_kid_equal_torch_fidelitys_own_pipeline(fid_cache, seed_base):
    """The values do not move: `fid_kid` against torch-fidelity's calculate_metrics (its DataLoader, its plain
    forward, the same weights) on the same 10 + 10 MNIST images. FID is quoted to 2 decimals, KID with its standard
    error: each may move by a small fraction of that (tolerances.FID_QUOTED, KID_OF_STDERR)."""
    import torch_fidelity

    n = 10
    g = torch.Generator().manual_seed(seed_base + 17)
    train = load_images("mnist", "train")
    generated = train[torch.randperm(train.shape[0], generator=g)[:n]]
    reference = reference_images(seed_base, n)
    ours = fid_kid(generated, reference, kid=KidSettings(subset_size=5, seed=3), cache=fid_cache, device="cpu")
    theirs = torch_fidelity.calculate_metrics(
        input1=fid.RgbDataset(generated), input2=fid.RgbDataset(reference), fid=True, kid=True, isc=False, prc=False,
        feature_extractor=fid.FEATURE_EXTRACTOR,
        feature_extractor_weights_path=str(fid.inception_weights_path(fid_cache)),
        kid_subsets=fid.DEFAULT_KID_SUBSETS, kid_subset_size=5, rng_seed=3, batch_size=32, cuda=False,
        save_cpu_ram=True, cache=False, verbose=False)
    assert abs(ours.fid - theirs[torch_fidelity.KEY_METRIC_FID]) <= tolerances.FID_QUOTED, "FID moved"
    assert math.isfinite(ours.kid_stderr) and ours.kid_stderr > 0
    assert abs(ours.kid_mean - theirs[torch_fidelity.KEY_METRIC_KID_MEAN]) <= tolerances.KID_OF_STDERR * ours.kid_stderr
    assert abs(ours.kid_std - theirs[torch_fidelity.KEY_METRIC_KID_STD]) <= tolerances.KID_OF_STDERR * ours.kid_stderr


def reference_images(seed: int, n: int) -> torch.Tensor:
    """The same subset ReferenceSet('mnist', 'test', n, seed) holds, rebuilt here from the documented rule."""
    test = load_images("mnist", "test")
    return test[torch.randperm(test.shape[0], generator=torch.Generator().manual_seed(seed))[:n].sort().values]


class RecordingNetwork(torch.nn.Module):
    """Stands in for torch-fidelity's Inception: records its inputs, returns (features,) = (mean pixel, ...)."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[torch.Tensor] = []

    def forward(self, x):
        self.inputs.append(x.clone())
        assert torch.is_inference_mode_enabled(), "features are extracted in inference mode"
        base = x.float().mean(dim=(1, 2, 3))  # [b]
        return (base[:, None] * torch.linspace(0.5, 1.5, 2048)[None, :],)  # [b, 2048]


def test_features_are_batched_gray_repeated_and_one_extractor_serves_a_process(fid_cache, monkeypatch):
    networks = []

    def fake_extractor(weights):
        networks.append(RecordingNetwork())
        return networks[-1]

    monkeypatch.setattr(fid, "_new_extractor", fake_extractor)
    monkeypatch.setattr(fid, "_EXTRACTORS", {})
    gray = torch.randint(0, 256, (5, 1, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    extractor = fid.inception_features(fid_cache, "cpu", batch_size=2)
    assert fid.inception_features(fid_cache, "cpu", batch_size=2) is extractor and len(networks) == 1
    features = extractor(gray)
    inputs = networks[0].inputs
    assert [x.shape[0] for x in inputs] == [2, 2, 1], "batches of batch_size, the last one smaller"
    assert all(x.dtype == torch.uint8 and x.shape[1:] == (3, 8, 8) for x in inputs)
    assert torch.equal(torch.cat(inputs), gray.expand(-1, 3, -1, -1)), "gray images repeated to 3 channels, in order"
    assert features.shape == (5, 2048) and features.dtype == torch.float32

    rgb = torch.randint(0, 256, (4, 3, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    result = fid_kid(gray, rgb, allow_unequal_n=True, cache=fid_cache, device="cpu", kid=KidSettings(seed=7),
                     batch_size=2)
    f_gray, f_rgb = extractor(gray), extractor(rgb)
    assert result.fid == fid.fid_from_features(f_gray, f_rgb)
    assert (result.kid_mean, result.kid_std) == fid.kid_from_features(f_gray, f_rgb, fid.DEFAULT_KID_SUBSETS, 4, 7)
    assert (result.num_generated, result.num_reference) == (5, 4) and len(networks) == 1


def test_metrics_are_torch_fidelitys_functions_of_the_features():
    """FID and KID from features equal torch-fidelity's own statistics, Frechet distance and KID on them."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric

    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(40, 2048, generator=g), torch.randn(30, 2048, generator=g) + 0.1
    expected = fid_statistics_to_metric(fid_features_to_statistics(a), fid_features_to_statistics(b), False)
    assert fid.fid_from_features(a, b) == expected["frechet_inception_distance"]
    kid = kid_features_to_metric(a, b, kid_subsets=20, kid_subset_size=10, rng_seed=3, verbose=False)
    assert fid.kid_from_features(a, b, 20, 10, 3) == (kid["kernel_inception_distance_mean"],
                                                      kid["kernel_inception_distance_std"])


def test_cached_inception_images_counts_the_cached_passes(fid_cache, tmp_path):
    cache = tmp_path / "cache"
    assert fid.cached_inception_images("digits", 6, cache) == 0
    test = ReferenceSet("digits", "test", 6, seed=0)
    path = fid._features_path(test, cache)  # private: the file name is what is being counted
    path.parent.mkdir(parents=True)
    np.save(path, np.zeros((6, 2048), dtype=np.float32))
    assert fid.cached_inception_images("digits", 6, cache) == 6
    train = ReferenceSet("digits", "train", 6, seed=fid.REAL_VS_REAL_SEED)
    (cache / f"real-vs-real-{train.cache_name()}-vs-{test.cache_name()}-kid100x3-s0.json").write_text("{}")
    assert fid.cached_inception_images("digits", 6, cache) == 12
    assert fid.cached_inception_images("digits", 7, cache) == 0, "another N is another cache entry"


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
def test_features_on_cuda_are_float32_rounding_of_the_float64_network(fid_cache, seed_base):
    """The production extractor on CUDA against the float64 network on the CPU.

    What differs from the CPU features is only how float32 convolutions are summed: `InceptionFeatures` turns TF32
    off on CUDA (`ieee_float32_convolutions`), so cuDNN computes the same float32 operations in its own order and
    algorithms. The CUDA features' error against float64 must therefore be of the size of the plain CPU float32
    forward's own error on the same images (ROUNDING_FACTOR times it, as for the channels-last path): a bound derived
    from float32 rounding, not one calibrated by comparing the CPU with itself. TF32 (10 mantissa bits instead of 23)
    would leave it far behind, and the test shows that it does.
    """
    try:  # a lent GPU machine has no FID weights (87 MB, more than travels with the checkout)
        fid.fid_inception_source_path()
    except FidWeightsError as error:
        pytest.skip(f"no FID Inception weights on this machine: {error}")
    g = torch.Generator().manual_seed(seed_base + 15)
    images = torch.randint(0, 256, (4, 1, 28, 28), generator=g, dtype=torch.uint8)
    exact, _, plain_error = float64_and_float32_features(fid_cache, images)
    allowed = ROUNDING_FACTOR * max(plain_error, 2.0**-24)
    cuda = fid.inception_features(fid_cache, "cuda")(images)
    assert float32_error_vs_float64(cuda, exact) <= allowed, "CUDA features leave float64 by more than float32 rounding"
    conv = torch.backends.cudnn.conv
    saved = conv.fp32_precision
    network = fid.inception_feature_extractor(fid_cache).cuda()
    try:
        conv.fp32_precision = "tf32"
        with torch.no_grad():
            (tf32,) = network(images.expand(-1, 3, -1, -1).cuda())
    finally:
        conv.fp32_precision = saved
    assert float32_error_vs_float64(tf32.cpu(), exact) > 10 * allowed, "TF32 convolutions must fail this bound"
