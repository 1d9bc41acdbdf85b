"""ddpm.core.schedules against independent formulas (50-digit mpmath), the published values, and its ValueErrors."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

from ddpm.core.schedules import Schedule, make_betas, validate_betas
from testkit import tolerances

F64 = tolerances.FLOAT64.kwargs()


def linear_reference(T: int, start: float = 1e-4, end: float = 0.02, rescale: bool = True) -> np.ndarray:
    """beta_t = s + (t - 1) (e - s) / (T - 1), s, e scaled by 1000/T, at 50 digits (T = 1: beta_1 = s)."""
    with mpmath.workdps(50):
        scale = mpmath.mpf(1000) / T if rescale else mpmath.mpf(1)
        s, e = mpmath.mpf(start) * scale, mpmath.mpf(end) * scale
        if T == 1:
            return np.array([float(s)])
        return np.array([float(s + (e - s) * (t - 1) / (T - 1)) for t in range(1, T + 1)])


def cosine_reference(T: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """beta_t = min(1 - alpha_bar(t) / alpha_bar(t - 1), max_beta), alpha_bar = f(t)/f(0), f = cos^2, at 50 digits."""
    with mpmath.workdps(50):
        s_ = mpmath.mpf(s)

        def f(t):
            return mpmath.cos((mpmath.mpf(t) / T + s_) / (1 + s_) * mpmath.pi / 2) ** 2

        return np.array([float(min(1 - f(t) / f(t - 1), mpmath.mpf(max_beta))) for t in range(1, T + 1)])


# --------------------------------------------------------------------------------------------- values
@given(T=st.integers(21, 2000))
@example(T=21)
@example(T=1000)
@example(T=2000)
def test_linear_rescaled_matches_formula(T):
    betas = make_betas("linear", T)
    assert betas.dtype == np.float64 and betas.shape == (T,)
    assert_allclose(betas, linear_reference(T), **F64, err_msg="linear beta_t != s + (t-1)(e-s)/(T-1), scaled 1000/T")


@given(T=st.integers(1, 2000))
@example(T=1)
@example(T=2000)
def test_linear_unscaled_matches_formula(T):
    betas = make_betas("linear", T, rescale=False)
    assert_allclose(betas, linear_reference(T, rescale=False), **F64)


def test_linear_single_step_is_rescaled_start():
    # T = 1: linspace has one point, beta_start * 1000 = 0.1.
    assert_allclose(make_betas("linear", 1), [0.1], **F64)


@given(T=st.integers(1, 300))
@example(T=1)
@example(T=2)
def test_cosine_matches_formula(T):
    betas = make_betas("cosine", T)
    assert betas.dtype == np.float64 and betas.shape == (T,)
    assert_allclose(betas, cosine_reference(T), **F64, err_msg="cosine beta_t != min(1 - abar(t)/abar(t-1), 0.999)")


@pytest.mark.parametrize("T", [1000, 2000, 4000])
def test_cosine_matches_formula_long(T):
    assert_allclose(make_betas("cosine", T), cosine_reference(T), **F64)


@pytest.mark.parametrize("T", [1, 10, 1000])
def test_cosine_options(T):
    assert_allclose(make_betas("cosine", T, s=0.0, max_beta=0.5), cosine_reference(T, s=0.0, max_beta=0.5), **F64)


def test_cosine_last_beta_is_clipped_and_alpha_bar_follows_cos2():
    T = 1000
    betas = make_betas("cosine", T)
    assert betas[-1] == 0.999, "beta_T must be clipped at max_beta = 0.999 (alpha_bar(T) = 0 without it)"
    assert np.all(betas[:-1] < 0.999)
    # Away from the clip, alpha_bar_t = prod (1 - beta_s) reproduces f(t) / f(0).
    t = np.arange(T + 1)
    f = np.cos((t / T + 0.008) / 1.008 * np.pi / 2) ** 2
    alpha_bar = np.concatenate([[1.0], np.cumprod(1.0 - betas)])
    assert_allclose(alpha_bar[:-1], (f / f[0])[:-1], rtol=1e-9, atol=0.0)


def test_published_linear_schedule_unchanged():
    # Ho et al. (2020) / the TF original: np.linspace(1e-4, 0.02, 1000) in float64, bit for bit.
    betas = make_betas("linear", 1000)
    assert_array_equal(betas, np.linspace(1e-4, 0.02, 1000, dtype=np.float64))
    assert betas[0] == 1e-4 and betas[-1] == 0.02
    assert_array_equal(make_betas("linear", 1000, rescale=False), betas)


def test_published_linear_schedule_prior_term_is_about_1e5_bits_per_dim():
    # Ho et al. section 4: with this schedule L_T = KL(q(x_T|x_0) || N(0, I)) ~ 1e-5 bits per dimension.
    alpha_bar_T = float(np.prod(1.0 - make_betas("linear", 1000)))
    x0 = np.linspace(-1, 1, 256)
    kl_bits = 0.5 * (alpha_bar_T * x0**2 - alpha_bar_T - np.log1p(-alpha_bar_T)) / math.log(2)
    assert 1e-6 < kl_bits.mean() < 1e-4, f"mean L_T per dim {kl_bits.mean():.3g} bits, paper says ~1e-5"


def test_published_cosine_schedule_matches_naive_float64_formula():
    # improved-diffusion's betas_for_alpha_bar: 1 - alpha_bar(t2) / alpha_bar(t1) in float64, clipped at 0.999.
    T = 1000

    def alpha_bar(u):
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    naive = np.array([min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), 0.999) for i in range(T)])
    assert_allclose(make_betas("cosine", T), naive, rtol=1e-10, atol=0.0)


@given(T=st.integers(1, 2000), name=st.sampled_from(["cosine", "linear"]))
def test_every_beta_in_open_unit_interval(T, name):
    if name == "linear" and 1 < T <= 20:  # rescaled beta_end = 20 / T >= 1 raises (tested below)
        T = 21
    betas = make_betas(name, T)
    assert np.all(np.isfinite(betas)) and np.all((betas > 0) & (betas < 1))


def test_enum_and_string_names_agree():
    assert_array_equal(make_betas(Schedule.COSINE, 50), make_betas("cosine", 50))


def test_returned_arrays_are_independent_copies():
    a = make_betas("linear", 1000)
    a[0] = 0.5
    assert make_betas("linear", 1000)[0] == 1e-4


# ----------------------------------------------------------------------------------------- ValueErrors
@pytest.mark.parametrize("T", [0, -1, -1000])
def test_T_below_one_raises(T):
    with pytest.raises(ValueError, match=rf"T must be an integer >= 1, got {T}"):
        make_betas("linear", T)


@pytest.mark.parametrize("T", [1.5, 1000.0, "1000", None, True])
def test_T_not_integer_raises(T):
    with pytest.raises(ValueError, match="T must be an integer >= 1"):
        make_betas("cosine", T)


def test_numpy_integer_T_accepted():
    assert_array_equal(make_betas("cosine", np.int64(10)), make_betas("cosine", 10))


@pytest.mark.parametrize("name", ["quadratic", "Linear", "", None])
def test_unknown_name_lists_options(name):
    with pytest.raises(ValueError, match=r"unknown schedule .*options are 'linear', 'cosine'"):
        make_betas(name, 100)


@pytest.mark.parametrize("T", [2, 10, 20])
def test_rescaled_linear_beta_out_of_range_raises(T):
    with pytest.raises(ValueError, match=r"open interval \(0, 1\), got beta_\d+ = "):
        make_betas("linear", T)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"beta_start": 0.0}, r"open interval \(0, 1\), got beta_1 = 0\.0"),
        ({"beta_start": -1e-4, "rescale": False}, r"open interval \(0, 1\), got beta_1 = -0\.0001"),
        ({"beta_end": 1.0, "rescale": False}, r"open interval \(0, 1\), got beta_1000 = 1\.0"),
        ({"beta_end": float("nan")}, r"option beta_end must be finite"),
        ({"beta_start": float("inf")}, r"option beta_start must be finite"),
        ({"beta_start": "1e-4"}, r"option beta_start must be a real number"),
        ({"rescale": "yes"}, r"option rescale must be True or False"),
        ({"rescale": 1}, r"option rescale must be True or False"),
        ({"s": 0.008}, r"unknown option\(s\) s for schedule 'linear'; valid: beta_start, beta_end, rescale"),
    ],
)
def test_linear_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        make_betas("linear", 1000, **options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"s": -0.1}, r"option s must be >= 0"),
        ({"max_beta": 1.0}, r"option max_beta must lie in \(0, 1\)"),
        ({"max_beta": 0.0}, r"option max_beta must lie in \(0, 1\)"),
        ({"max_beta": float("nan")}, r"option max_beta must be finite"),
        ({"beta_end": 0.02}, r"unknown option\(s\) beta_end for schedule 'cosine'; valid: s, max_beta"),
    ],
)
def test_cosine_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        make_betas("cosine", 1000, **options)


@pytest.mark.parametrize(
    ("betas", "message"),
    [
        ([0.1, 1.0], r"open interval \(0, 1\), got beta_2 = 1\.0"),
        ([0.0], r"open interval \(0, 1\), got beta_1 = 0\.0"),
        ([0.1, 0.2, -0.5], r"got beta_3 = -0\.5"),
        ([0.1, float("nan")], r"beta_t must be finite, got beta_2 = nan"),
        ([float("inf")], r"beta_t must be finite, got beta_1 = inf"),
        ([], r"at least one entry"),
        ([[0.1, 0.2]], r"must be 1-D of shape \[T\], got shape \(1, 2\)"),
        (0.1, r"must be 1-D of shape \[T\], got shape \(\)"),
        (["a"], r"must be a 1-D array of real numbers"),
    ],
)
def test_validate_betas_errors(betas, message):
    with pytest.raises(ValueError, match=message):
        validate_betas(betas)


def test_validate_betas_returns_float64_copy():
    source = np.array([0.1, 0.2], dtype=np.float32)
    out = validate_betas(source)
    assert out.dtype == np.float64 and out.shape == (2,)
    out[0] = 0.9
    assert source[0] == np.float32(0.1)
    torch = pytest.importorskip("torch")
    assert_array_equal(validate_betas(torch.tensor([0.25, 0.5])), [0.25, 0.5])
