"""RoPE (minigriffin.rope): gradients, rotation properties, packed documents, dtypes and input errors.

The comparison with recurrentgemma's own `_apply_rope` lives in tests/test_oracle_attention.py.
"""

import numpy as np
import pytest

from minigriffin.gradcheck import assert_grads_close
from minigriffin.rope import rope_backward, rope_forward


def _inputs(rng, B=2, T=11, N=3, Dh=16, dtype=np.float64):
    x = rng.standard_normal((B, T, N, Dh)).astype(dtype)
    segment_pos = np.stack([np.arange(T), np.r_[np.arange(4), np.arange(T - 4)]][:B])   # row 1: two documents
    return x, segment_pos


def _rope_complex(x, pos, max_wavelength=10_000):
    """Independent formulation: pair j of the first half is the complex number x1_j + i x2_j, times e^{i theta_j}."""
    Dh = x.shape[-1]
    R = Dh // 2
    theta = pos[:, :, None, None] / max_wavelength ** (np.arange(R // 2) * 2 / R)   # (B, T, 1, R/2)
    z = (x[..., : R // 2] + 1j * x[..., R // 2 : R]) * np.exp(1j * theta)            # (B, T, N, R/2)
    return np.concatenate([z.real, z.imag, x[..., R:]], axis=-1)                    # (B, T, N, Dh)


@pytest.mark.parametrize("Dh", [4, 8, 16, 128])
def test_rope_matches_complex_rotation(Dh):
    x, pos = _inputs(np.random.default_rng(Dh), Dh=Dh)
    pos = pos * 37                                    # larger angles too
    y, _ = rope_forward(x, pos)
    np.testing.assert_allclose(y, _rope_complex(x, pos), rtol=0, atol=1e-13)   # float64, atol 1e-13 (|x| ~ 1)


@pytest.mark.parametrize("Dh", [4, 16, 32])
def test_rope_backward_matches_finite_differences(Dh):
    rng = np.random.default_rng(Dh)
    x, pos = _inputs(rng, Dh=Dh)
    y, cache = rope_forward(x, pos)
    dy = rng.standard_normal(y.shape)
    dx = rope_backward(dy, cache)
    # RoPE is linear in x, so central differences have no truncation error: a large step (1e-2) keeps the
    # roundoff near 1e-14 and the check can be tight.
    assert_grads_close(lambda x: rope_forward(x, pos)[0], {"x": x}, {"x": dx}, dy,
                       rtol=1e-8, atol=1e-11, eps=1e-2, max_elements=80)   # float64, rtol 1e-8, atol 1e-11


def test_rope_backward_is_the_adjoint():
    rng = np.random.default_rng(1)
    x, pos = _inputs(rng)
    y, cache = rope_forward(x, pos)
    dy = rng.standard_normal(y.shape)
    # <rope(x), dy> == <x, rope_backward(dy)> for any x, dy
    np.testing.assert_allclose(np.sum(y * dy), np.sum(x * rope_backward(dy, cache)), rtol=1e-12)   # float64


def test_rope_preserves_pair_norms():
    x, pos = _inputs(np.random.default_rng(2), Dh=32)
    y, _ = rope_forward(x, pos * 101)
    q = 32 // 4                                       # R/2: pair j is (j, j + R/2)
    norms_x = x[..., :q] ** 2 + x[..., q : 2 * q] ** 2
    norms_y = y[..., :q] ** 2 + y[..., q : 2 * q] ** 2
    np.testing.assert_allclose(norms_y, norms_x, rtol=1e-12, atol=1e-14)   # float64, rtol 1e-12


def test_rope_leaves_second_half_untouched_and_position_zero_is_identity():
    x, pos = _inputs(np.random.default_rng(3), Dh=16)
    y, _ = rope_forward(x, pos)
    np.testing.assert_array_equal(y[..., 8:], x[..., 8:])                  # exact: copied through
    y0, _ = rope_forward(x, np.zeros_like(pos))
    np.testing.assert_array_equal(y0, x)                                   # exact: cos 0 = 1, sin 0 = 0


def test_rope_scores_depend_only_on_position_difference():
    rng = np.random.default_rng(4)
    Dh = 32
    q = rng.standard_normal((1, 1, 1, Dh))
    k = rng.standard_normal((1, 1, 1, Dh))

    def score(m, n):                                  # rotated q at position m . rotated k at position n
        qm, _ = rope_forward(q, np.array([[m]]))
        kn, _ = rope_forward(k, np.array([[n]]))
        return float(np.sum(qm * kn))

    for diff in [0, 1, 5, 17]:
        reference = score(diff, 0)
        for n in [1, 7, 300, 4000]:
            assert score(n + diff, n) == pytest.approx(reference, rel=1e-9, abs=1e-9)   # float64, 1e-9
    assert score(5, 0) != pytest.approx(score(6, 0), rel=1e-6)           # and it does depend on the difference


def test_rope_packed_documents_restart_positions():
    x, _ = _inputs(np.random.default_rng(5), B=1, T=9)
    packed = np.array([[0, 1, 2, 3, 0, 1, 2, 3, 4]])
    y, _ = rope_forward(x, packed)
    y_a, _ = rope_forward(x[:, :4], np.arange(4)[None])
    y_b, _ = rope_forward(x[:, 4:], np.arange(5)[None])
    np.testing.assert_array_equal(y, np.concatenate([y_a, y_b], axis=1))   # exact: elementwise, same angles


def test_rope_keeps_float32():
    x64, pos = _inputs(np.random.default_rng(6))
    x32 = x64.astype(np.float32)
    y32, cache = rope_forward(x32, pos)
    assert y32.dtype == np.float32 and cache.sin.dtype == np.float32
    assert rope_backward(y32, cache).dtype == np.float32
    y64, _ = rope_forward(x64, pos)
    np.testing.assert_allclose(y32, y64, rtol=0, atol=2e-6)              # float32 vs float64, atol 2e-6 (|x| < 5)


@pytest.mark.parametrize("x_shape, pos_shape, pos_dtype, exc, match", [
    ((2, 5, 16), (2, 5), np.int64, ValueError, "must be \\(B, T, N, Dh\\)"),
    ((2, 5, 1, 6), (2, 5), np.int64, ValueError, "multiple of 4"),
    ((2, 5, 1, 8), (2, 4), np.int64, ValueError, "segment_pos shape"),
    ((2, 5, 1, 8), (2, 5), np.float64, TypeError, "integer"),
])
def test_rope_rejects_bad_inputs(x_shape, pos_shape, pos_dtype, exc, match):
    with pytest.raises(exc, match=match):
        rope_forward(np.zeros(x_shape), np.zeros(pos_shape, dtype=pos_dtype))
    with pytest.raises(TypeError, match="floating"):
        rope_forward(np.zeros((1, 2, 1, 8), dtype=np.int64), np.zeros((1, 2), dtype=np.int64))
