"""ddpm.images.data: MNIST from the pinned wheel file, sklearn digits, a folder of images, pixel ranges, resumable
batches.

Expected values come from the raw files read here independently (gzip + pickle, sklearn, the PNGs we write),
from published MNIST statistics, or from the documented rules (the digits map, the folder split by name hash).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import sys

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal
from PIL import Image

from ddpm.images import data
from ddpm.images.data import (
    DataError,
    MinibatchSampler,
    Split,
    dataset_info,
    load_images,
    to_model_range,
    to_uint8,
)
from testkit import tolerances

PUBLISHED = tolerances.PUBLISHED_4_DECIMALS.kwargs()


# ------------------------------------------------------------------------------------------------------------
# MNIST


@pytest.fixture(scope="module")
def raw_mnist():
    """The pickle's three (images, labels) parts, read here without ddpm.images.data."""
    with gzip.open(data.mnist_path(), "rb") as f:
        return pickle.load(f, encoding="latin1")


def test_mnist_file_is_located_without_importing_the_package():
    path = data.mnist_path()
    assert path.name == "mnist.pkl.gz" and path.parent.name == "data" and path.parent.parent.name == "mnist"
    assert "mnist.lib" not in sys.modules, "mnist.lib must not be imported (it pulls in unrelated code)"


def test_mnist_sha256_is_pinned_and_checked(monkeypatch):
    digest = hashlib.sha256(data.mnist_path().read_bytes()).hexdigest()
    assert digest == data.MNIST_SHA256, "installed mnist.pkl.gz differs from the pinned sha256"
    # A different pin must be refused with a DataError naming both hashes.
    monkeypatch.setattr(data, "MNIST_SHA256", "0" * 64)
    data._mnist_arrays.cache_clear()  # private: its cache must be emptied to reread a changed file
    try:
        with pytest.raises(DataError, match="sha256") as info:
            load_images("mnist", "test")
        assert digest in str(info.value) and "0" * 64 in str(info.value)
    finally:
        data._mnist_arrays.cache_clear()  # private: its cache must be emptied to reread a changed file


@pytest.mark.slow
def test_mnist_shapes_and_dtype():
    train, test = load_images("mnist", "train"), load_images("mnist", "test")
    assert train.shape == (60000, 1, 28, 28) and train.dtype == torch.uint8
    assert test.shape == (10000, 1, 28, 28) and test.dtype == torch.uint8
    info = dataset_info("mnist")
    assert (info.channels, info.height, info.width, info.num_train, info.num_test) == (1, 28, 28, 60000, 10000)
    assert info.num("train") == 60000 and info.num(Split.TEST) == 10000
    assert info.fingerprint == data.MNIST_SHA256


@pytest.mark.slow
def test_mnist_uint8_recovery_is_exact_and_splits_are_the_documented_ones(raw_mnist):
    (train_x, _), (valid_x, _), (test_x, _) = raw_mnist
    train, test = load_images("mnist", "train"), load_images("mnist", "test")
    # The pickle stores pixel/256 in float32: multiplying the uint8 back by 1/256 must give the stored floats.
    recovered = np.concatenate([train_x, valid_x]).astype(np.float64)
    assert_array_equal(train.reshape(60000, 784).numpy() / 256.0, recovered, err_msg="train = 50k train + 10k valid")
    assert_array_equal(test.reshape(10000, 784).numpy() / 256.0, test_x.astype(np.float64), err_msg="test split")
    # Label-free statistic computed from the raw pickle: the mean test pixel on the 0..255 scale.
    assert float(test.double().mean()) == pytest.approx(float(test_x.astype(np.float64).mean() * 256), abs=1e-9)


@pytest.mark.slow
def test_mnist_matches_published_statistics():
    """The classic 60k training set has mean 0.1307 and std 0.3081 on [0, 1] (the ubiquitous normalisation)."""
    train = load_images("mnist", "train").double() / 255.0
    assert_allclose(float(train.mean()), 0.1307, **PUBLISHED, err_msg="MNIST train mean pixel")
    assert_allclose(float(train.std()), 0.3081, **PUBLISHED, err_msg="MNIST train pixel std")


# ------------------------------------------------------------------------------------------------------------
# Pixel ranges


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_model_range_round_trip_is_exact_for_all_256_levels(dtype):
    k = torch.arange(256, dtype=torch.int64).to(torch.uint8)
    x = to_model_range(k, dtype)
    assert x.dtype == dtype
    assert float(x[0]) == -1.0 and float(x[-1]) == 1.0
    assert bool((x[1:] > x[:-1]).all()), "the map must be strictly increasing"
    assert_array_equal(to_uint8(x).numpy(), k.numpy(), err_msg="to_uint8(to_model_range(k)) == k")


def test_model_range_is_k_over_127_5_minus_1():
    k = np.arange(256)
    assert_array_equal(to_model_range(torch.from_numpy(k.astype(np.uint8)), torch.float64).numpy(), k / 127.5 - 1.0)


def test_to_uint8_rounds_to_nearest_level_and_clamps():
    levels = torch.arange(256, dtype=torch.float64) / 127.5 - 1.0
    step = 1.0 / 127.5
    # Anything within 0.49 of a level (in level units) maps to that level.
    for shift in (-0.49, -0.2, 0.2, 0.49):
        assert_array_equal(to_uint8(levels + shift * step).numpy(), np.arange(256), err_msg=f"shift {shift}")
    assert to_uint8(torch.tensor([-3.0, -1.001, 1.001, 7.0])).tolist() == [0, 0, 255, 255]


def test_pixel_range_errors():
    with pytest.raises(ValueError, match="NaN"):
        to_uint8(torch.tensor([0.0, float("nan")]))
    with pytest.raises(ValueError, match="uint8"):
        to_model_range(torch.zeros(3))
    with pytest.raises(ValueError, match="floating"):
        to_uint8(torch.zeros(3, dtype=torch.uint8))


# ------------------------------------------------------------------------------------------------------------
# sklearn digits


def test_digits_shapes_values_and_split():
    from sklearn.datasets import load_digits

    raw = load_digits().images  # [1797, 8, 8], values 0..16
    train, test = load_images("digits", "train"), load_images("digits", "test")
    assert train.shape == (1500, 1, 8, 8) and test.shape == (297, 1, 8, 8) and train.dtype == torch.uint8
    both = torch.cat([train, test])[:, 0].numpy().astype(np.float64)
    # Each value is the nearest 8-bit level to 255 v / 16 (half a level at most; the tie v = 8 goes up to 128).
    assert np.abs(both - 255.0 * raw / 16.0).max() <= 0.5
    assert_array_equal(both[raw == 8], 128.0, err_msg="the tie v = 8 (127.5) rounds up")
    assert both[raw == 0].max() == 0 and both[raw == 16].min() == 255
    info = dataset_info("digits")
    assert (info.num_train, info.num_test, info.channels, info.height, info.width) == (1500, 297, 1, 8, 8)


def test_digits_map_is_monotone_and_one_to_one():
    levels = data.digits_to_uint8(np.arange(17)).astype(int)
    assert levels[0] == 0 and levels[-1] == 255 and (np.diff(levels) > 0).all()
    with pytest.raises(DataError):
        data.digits_to_uint8(np.array([17]))


# ------------------------------------------------------------------------------------------------------------
# A folder of images


def _write(path, array, mode=None, **save):
    Image.fromarray(array, mode=mode).save(path, **save)


def _gray_images(rng, n, h=7, w=5):
    return {f"img{i:02d}.png": rng.integers(0, 256, (h, w), dtype=np.uint8) for i in range(n)}


def expected_test_names(names):
    """The documented rule, restated: the max(1, N // 10) names with the smallest sha256(name)."""
    ranked = sorted(names, key=lambda n: (hashlib.sha256(n.encode()).hexdigest(), n))
    return sorted(ranked[: max(1, len(names) // 10)])


def test_folder_grayscale_loads_exactly_with_hash_split(tmp_path, seed_base):
    rng = np.random.default_rng(seed_base + 1)
    images = _gray_images(rng, 23)
    for name, array in images.items():
        _write(tmp_path / name, array)
    (tmp_path / "notes.txt").write_text("not an image")
    train, test = load_images(str(tmp_path), "train"), load_images(tmp_path, "test")
    test_names = expected_test_names(list(images))
    train_names = sorted(set(images) - set(test_names))
    assert len(test_names) == 2 and test.shape == (2, 1, 7, 5) and train.shape == (21, 1, 7, 5)
    assert_array_equal(test[:, 0].numpy(), np.stack([images[n] for n in test_names]))
    assert_array_equal(train[:, 0].numpy(), np.stack([images[n] for n in train_names]))
    info = dataset_info(str(tmp_path))
    assert (info.channels, info.height, info.width, info.num_train, info.num_test) == (1, 7, 5, 21, 2)


def test_folder_with_any_colour_image_gives_rgb(tmp_path, seed_base):
    rng = np.random.default_rng(seed_base + 2)
    gray = rng.integers(0, 256, (6, 4), dtype=np.uint8)
    rgb = rng.integers(0, 256, (6, 4, 3), dtype=np.uint8)
    rgba = rng.integers(0, 256, (6, 4, 4), dtype=np.uint8)
    palette = Image.new("P", (4, 6))
    palette.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    palette.putdata([0, 1] * 12)
    _write(tmp_path / "a_gray.png", gray)
    _write(tmp_path / "b_rgb.png", rgb)
    _write(tmp_path / "c_rgba.png", rgba)
    palette.save(tmp_path / "d_palette.png")
    _write(tmp_path / "e_photo.JPG", rgb, quality=95)
    by_name = _load_by_name(tmp_path)
    assert len(by_name) == 5
    assert all(image.shape == (3, 6, 4) and image.dtype == torch.uint8 for image in by_name.values())
    assert_array_equal(by_name["a_gray.png"].numpy(), np.stack([gray] * 3), err_msg="gray replicated to RGB")
    assert_array_equal(by_name["b_rgb.png"].permute(1, 2, 0).numpy(), rgb)
    assert_array_equal(by_name["c_rgba.png"].permute(1, 2, 0).numpy(), rgba[:, :, :3], err_msg="alpha dropped")
    colours = by_name["d_palette.png"].permute(1, 2, 0).reshape(-1, 3).tolist()
    assert colours == [[10, 20, 30], [200, 100, 50]] * 12, "palette expanded through its colours"


def _load_by_name(folder):
    """Both splits of a folder keyed by file name (train and test are each in name order)."""
    names = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    test_names = expected_test_names(names)
    train_names = [n for n in names if n not in test_names]
    return {
        **dict(zip(train_names, load_images(folder, "train"), strict=False)),
        **dict(zip(test_names, load_images(folder, "test"), strict=False)),
    }


def test_folder_fingerprint_changes_with_content(tmp_path, seed_base):
    rng = np.random.default_rng(seed_base + 3)
    for name, array in _gray_images(rng, 3).items():
        _write(tmp_path / name, array)
    before = dataset_info(tmp_path).fingerprint
    assert dataset_info(tmp_path).fingerprint == before
    _write(tmp_path / "img01.png", np.zeros((7, 5), dtype=np.uint8))
    assert dataset_info(tmp_path).fingerprint != before


def _one_line(error: DataError) -> str:
    message = str(error)
    assert "\n" not in message, "DataError messages are one line"
    return message


def test_folder_errors(tmp_path, seed_base):
    rng = np.random.default_rng(seed_base + 4)
    missing = tmp_path / "missing"
    with pytest.raises(DataError, match="does not exist") as info:
        load_images(missing, "train")
    assert str(missing) in _one_line(info.value)

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match="no PNG or JPEG") as info:
        load_images(empty, "train")
    _one_line(info.value)

    single = tmp_path / "single"
    single.mkdir()
    _write(single / "only.png", rng.integers(0, 256, (4, 4), dtype=np.uint8))
    with pytest.raises(DataError, match="only 1 image"):
        load_images(single, "train")

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    _write(mixed / "a.png", rng.integers(0, 256, (7, 5), dtype=np.uint8))
    _write(mixed / "b.png", rng.integers(0, 256, (7, 5), dtype=np.uint8))
    _write(mixed / "c.png", rng.integers(0, 256, (9, 8), dtype=np.uint8))
    with pytest.raises(DataError, match="differ in size") as info:
        load_images(mixed, "train")
    message = _one_line(info.value)
    assert "a.png is 5x7" in message and "c.png is 8x9" in message

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    _write(corrupt / "good.png", rng.integers(0, 256, (4, 4), dtype=np.uint8))
    (corrupt / "bad.png").write_bytes(b"this is not a PNG file at all")
    with pytest.raises(DataError, match="cannot read image") as info:
        load_images(corrupt, "test")
    assert "bad.png" in _one_line(info.value)

    truncated = tmp_path / "truncated"
    truncated.mkdir()
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(buffer, format="PNG")
    for name in ("x.png", "y.png"):  # both truncated: whichever split is loaded hits one
        (truncated / name).write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    for split in ("train", "test"):
        with pytest.raises(DataError, match="cannot read image") as info:
            load_images(truncated, split)
        assert "x.png" in _one_line(info.value) or "y.png" in str(info.value)

    deep = tmp_path / "sixteen_bit"
    deep.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 65536, (4, 4), dtype=np.uint16)).save(deep / name)
    with pytest.raises(DataError, match="unsupported pixel mode"):
        load_images(deep, "train")

    a_file = tmp_path / "file.png"
    _write(a_file, rng.integers(0, 256, (4, 4), dtype=np.uint8))
    with pytest.raises(DataError, match="not a folder"):
        load_images(a_file, "train")


def test_unknown_dataset_and_split_names():
    with pytest.raises(DataError, match="unknown dataset 'cifar10'") as info:
        load_images("cifar10", "train")
    assert "'mnist'" in _one_line(info.value) and "'digits'" in str(info.value) and "folder" in str(info.value)
    with pytest.raises(DataError, match="unknown split 'valid'") as info:
        load_images("digits", "valid")
    assert "'train'" in _one_line(info.value) and "'test'" in str(info.value)
    assert issubclass(DataError, ValueError)


# ------------------------------------------------------------------------------------------------------------
# Minibatch sampler


def _batches(sampler, k):
    return [next(sampler).tolist() for _ in range(k)]


def test_sampler_is_seeded_and_each_pass_is_a_permutation():
    a = MinibatchSampler(10, 4, torch.Generator().manual_seed(5))
    b = MinibatchSampler(10, 4, torch.Generator().manual_seed(5))
    c = MinibatchSampler(10, 4, torch.Generator().manual_seed(6))
    stream_a, stream_b, stream_c = _batches(a, 10), _batches(b, 10), _batches(c, 10)
    assert stream_a == stream_b, "same seed, same batches"
    assert stream_a != stream_c, "another seed, other batches"
    flat = [i for batch in stream_a for i in batch]
    assert all(len(batch) == 4 for batch in stream_a)
    for p in range(4):
        assert sorted(flat[10 * p : 10 * (p + 1)]) == list(range(10)), f"pass {p} is a permutation"
    assert flat[:10] != flat[10:20], "each pass draws a new permutation"
    assert a.epoch == 4 and a.offset == 10


@given(
    num_items=st.integers(1, 40),
    batch_size=st.integers(1, 90),
    before=st.integers(0, 12),
    after=st.integers(1, 12),
)
@example(num_items=10, batch_size=5, before=2, after=3)  # saved exactly at the end of a pass
@example(num_items=10, batch_size=5, before=0, after=3)  # saved before the first batch
def test_sampler_resume_gives_the_uninterrupted_batches(num_items, batch_size, before, after):
    straight = MinibatchSampler(num_items, batch_size, torch.Generator().manual_seed(123))
    expected = _batches(straight, before + after)[before:]

    first = MinibatchSampler(num_items, batch_size, torch.Generator().manual_seed(123))
    _batches(first, before)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)  # as a checkpoint would
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    resumed = MinibatchSampler(num_items, batch_size, torch.Generator().manual_seed(999))
    resumed.load_state_dict(state)
    assert _batches(resumed, after) == expected


def test_sampler_errors():
    sampler = MinibatchSampler(10, 4, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="batch_size"):
        MinibatchSampler(10, 4, torch.Generator()).load_state_dict(
            MinibatchSampler(10, 3, torch.Generator()).state_dict()
        )
    with pytest.raises(ValueError, match="num_items"):
        sampler.load_state_dict(MinibatchSampler(11, 4, torch.Generator()).state_dict())
    with pytest.raises(ValueError, match="batch_size must be an integer"):
        MinibatchSampler(10, 0, torch.Generator())
    with pytest.raises(ValueError, match="generator"):
        MinibatchSampler(10, 2, 0)
