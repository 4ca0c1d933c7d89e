"""Algebraic properties of the scan that any correct backend has: chunking, linearity, reversal, resets.

Tolerances are those of tests/strategies.py (relative to each element's error scale; float64 1e-12), except
where a closed form allows exact or one-rounding comparisons (stated beside each assert).
"""

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigriffin.scan import available_backends, linear_scan, linear_scan_backward
from minigriffin.testing import RTOL, ScanCase, assert_within, forward_error_scale, scan_cases

BACKENDS = available_backends()
f64_cases = scan_cases(dtypes=(np.float64,))
f64_cases_T2 = scan_cases(dtypes=(np.float64,), min_T=2)     # T >= 2: two non-empty chunks
# Linear-combination weights; magnitudes below 1e-100 would push products into subnormals, where float64
# loses relative precision and no relative tolerance can hold (Hypothesis found 5e-324).
coefficients = st.floats(-3, 3).filter(lambda v: v == 0 or abs(v) > 1e-100)


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=f64_cases_T2, split=st.floats(0, 1))
def test_chunking(backend, case, split):
    """Scanning T steps == scanning T1 steps, then the remaining T2 starting from h_last (float64, 1e-12).
    T >= 2 and 1 <= T1 <= T - 1, so both chunks are non-empty and every example asserts."""
    x, a, h0, reverse = case
    T = x.shape[1]
    T1 = 1 + min(T - 2, int(split * (T - 1)))                 # split 0 -> T1 = 1, split 1 -> T1 = T - 1
    assert 1 <= T1 < T, (T, T1)
    h_full, last_full = linear_scan(x, a, h0, reverse=reverse, backend=backend)
    # In reverse the scan starts at the end, so the first chunk is the tail of the sequence.
    first, second = (slice(T - T1, T), slice(0, T - T1)) if reverse else (slice(0, T1), slice(T1, T))
    h1, last1 = linear_scan(x[:, first].copy(), a[:, first].copy(), h0, reverse=reverse, backend=backend)
    h2, last2 = linear_scan(x[:, second].copy(), a[:, second].copy(), last1, reverse=reverse, backend=backend)
    scale, last_scale = forward_error_scale(case)
    assert_within(np.concatenate([h2, h1] if reverse else [h1, h2], axis=1), h_full, scale, RTOL[x.dtype], "chunked h")
    assert_within(last2, last_full, last_scale, RTOL[x.dtype], "chunked h_last")


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=f64_cases, alpha=coefficients, beta=coefficients)
def test_linearity_in_x(backend, case, alpha, beta):
    """scan(alpha x1 + beta x2) == alpha scan(x1) + beta scan(x2) for fixed a, h0 = 0 (float64, 1e-12)."""
    x1, a, _, reverse = case
    x2 = np.random.default_rng(x1.size).uniform(-10, 10, x1.shape)
    combined, _ = linear_scan(alpha * x1 + beta * x2, a, reverse=reverse, backend=backend)
    h1, _ = linear_scan(x1, a, reverse=reverse, backend=backend)
    h2, _ = linear_scan(x2, a, reverse=reverse, backend=backend)
    # error scale: |alpha| |x1| + |beta| |x2| pushed through the scan, plus the rounding of the combination,
    # floored at the smallest normal number as in strategies.forward_error_scale (subnormal x1 after alpha *)
    tiny = np.finfo(x1.dtype).tiny
    scale, _ = linear_scan(abs(alpha) * np.abs(x1) + abs(beta) * np.abs(x2) + tiny, a, reverse=reverse,
                           backend="reference")
    assert_within(alpha * h1 + beta * h2, combined, 4 * (scale + tiny), RTOL[x1.dtype], "linearity")   # float64


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=f64_cases)
def test_reverse_is_flipped_forward(backend, case):
    """reverse=True equals flipping time, scanning forward and flipping back (float64, 1e-12)."""
    x, a, h0, _ = case
    h_rev, last_rev = linear_scan(x, a, h0, reverse=True, backend=backend)
    h_flip, last_flip = linear_scan(x[:, ::-1].copy(), a[:, ::-1].copy(), h0, backend=backend)
    scale, _ = forward_error_scale(ScanCase(x, a, h0, True))
    assert_within(h_rev, h_flip[:, ::-1], scale, RTOL[x.dtype], "reverse vs flip")
    assert_within(last_rev, last_flip, np.abs(last_flip) + scale[:, 0], RTOL[x.dtype], "reverse h_last")


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_multiplier_resets_state(backend):
    """a_t = 0 is a document start: h_t = x_t exactly, whatever came before (float64, exact)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 50, 7))
    a = rng.uniform(0.5, 1.0, (2, 50, 7))
    a[:, [0, 17, 33]] = 0.0
    h, _ = linear_scan(x, a, rng.standard_normal((2, 7)), backend=backend)
    np.testing.assert_array_equal(h[:, [0, 17, 33]], x[:, [0, 17, 33]])   # float64, exact
    # and nothing before a reset influences anything after it
    x2 = x.copy()
    x2[:, :17] += 100.0
    h2, _ = linear_scan(x2, a, backend=backend)
    np.testing.assert_array_equal(h2[:, 17:], h[:, 17:])                 # float64, exact


@pytest.mark.parametrize("backend", BACKENDS)
def test_long_memory_gradient_survives(backend):
    """With a = 1 - 1e-6 the gradient of the last output reaches t = 0 almost undamped (float64, 1e-12)."""
    T = 4000
    a = np.full((1, T, 3), 1.0 - 1e-6)
    h, _ = linear_scan(np.ones((1, T, 3)), a, backend=backend)
    dh = np.zeros((1, T, 3))
    dh[:, -1] = 1.0
    dx, da, _ = linear_scan_backward(dh, None, a, h, backend=backend)
    np.testing.assert_allclose(dx[0, :, 0], (1.0 - 1e-6) ** np.arange(T - 1, -1, -1), rtol=1e-12, atol=0)  # float64
    # da_t = g_t * h_{t-1}, and h_{t-1} = sum_{s<t} a^s
    h_prev = np.concatenate([[0.0], h[0, :-1, 0]])
    np.testing.assert_allclose(da[0, :, 0], dx[0, :, 0] * h_prev, rtol=1e-12, atol=0)                   # float64


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_t_equals_one(backend, dtype):
    """A single step (the decoding case), forward and backward, against the closed form:
        h = a h0 + x;   g = dh + dh_last;   dx = g,   da = g h0 (0 without h0),   dh0 = a g.
    Each closed-form value takes at most two roundings, so the bound is eps = 2u (float32 1.2e-7, float64
    2.2e-16) times the same expression on absolute values: exact up to the order of two operations (or a
    fused multiply-add), while a missing or misplaced term is O(1)."""
    rng = np.random.default_rng(1)
    x, a = rng.standard_normal((3, 1, 5)).astype(dtype), rng.uniform(size=(3, 1, 5)).astype(dtype)
    h0_drawn, dh = rng.standard_normal((3, 5)).astype(dtype), rng.standard_normal((3, 1, 5)).astype(dtype)
    dh_last_drawn = rng.standard_normal((3, 5)).astype(dtype)
    eps = np.finfo(dtype).eps
    for reverse, with_h0, with_dh_last in itertools.product((False, True), repeat=3):
        h0 = h0_drawn if with_h0 else None
        dh_last = dh_last_drawn if with_dh_last else None
        what = f"{backend} {np.dtype(dtype)} reverse={reverse} h0={with_h0} dh_last={with_dh_last}"
        h0_or_0 = h0_drawn if with_h0 else np.zeros_like(h0_drawn)
        h, last = linear_scan(x, a, h0, reverse=reverse, backend=backend)
        assert h.dtype == dtype and h.shape == x.shape
        assert_within(h[:, 0], a[:, 0] * h0_or_0 + x[:, 0], a[:, 0] * np.abs(h0_or_0) + np.abs(x[:, 0]), eps,
                      f"{what}: h")                                # float32/float64, eps * scale
        np.testing.assert_array_equal(last, h[:, 0])               # float32/float64, exact: a copy

        dx, da, dh0 = linear_scan_backward(dh, dh_last, a, h, h0, reverse=reverse, backend=backend)
        g = dh[:, 0] + (0 if dh_last is None else dh_last)         # (B, D) the closed form
        g_abs = np.abs(dh[:, 0]) + (0 if dh_last is None else np.abs(dh_last))
        assert dx.dtype == da.dtype == dtype and dx.shape == da.shape == x.shape
        assert_within(dx[:, 0], g, g_abs, eps, f"{what}: dx")    # float32/float64, eps * (|dh| + |dh_last|)
        assert_within(da[:, 0], g * h0_or_0, g_abs * np.abs(h0_or_0), eps,
                      f"{what}: da")                               # float32/float64, eps * scale (0 without h0)
        if with_h0:
            assert dh0.dtype == dtype
            assert_within(dh0, a[:, 0] * g, a[:, 0] * g_abs, eps, f"{what}: dh0")   # float32/float64, eps * scale
        else:
            assert dh0 is None
            np.testing.assert_array_equal(da, 0)                   # float32/float64, exact: no h0, no da


@pytest.mark.parametrize("backend", BACKENDS)
def test_out_buffer_is_used(backend):
    """out= writes into the caller's buffers and returns them (float64, exact against a fresh call)."""
    rng = np.random.default_rng(2)
    x, a = rng.standard_normal((2, 9, 4)), rng.uniform(size=(2, 9, 4))
    buf = np.empty_like(x)
    h, _ = linear_scan(x, a, backend=backend, out=buf)
    assert h is buf
    np.testing.assert_array_equal(buf, linear_scan(x, a, backend=backend)[0])   # float64, exact
    dx_buf, da_buf = np.empty_like(x), np.empty_like(x)
    dh = rng.standard_normal(x.shape)
    dx, da, _ = linear_scan_backward(dh, None, a, h, backend=backend, out=(dx_buf, da_buf))
    assert dx is dx_buf and da is da_buf
    fresh = linear_scan_backward(dh, None, a, h, backend=backend)
    np.testing.assert_array_equal(dx, fresh[0])                                 # float64, exact
    np.testing.assert_array_equal(da, fresh[1])                                 # float64, exact
