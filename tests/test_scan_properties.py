"""Algebraic properties of the scan that any correct backend has: chunking, linearity, reversal, resets.

Tolerances are those of tests/strategies.py (relative to each element's error scale; float64 1e-12).
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigriffin.scan import available_backends, linear_scan, linear_scan_backward
from strategies import RTOL, ScanCase, assert_within, forward_error_scale, scan_cases

BACKENDS = available_backends()
f64_cases = scan_cases(dtypes=(np.float64,))
# Linear-combination weights; magnitudes below 1e-100 would push products into subnormals, where float64
# loses relative precision and no relative tolerance can hold (Hypothesis found 5e-324).
coefficients = st.floats(-3, 3).filter(lambda v: v == 0 or abs(v) > 1e-100)


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=f64_cases, split=st.floats(0, 1))
def test_chunking(backend, case, split):
    """Scanning T steps == scanning T1 steps, then the remaining T2 starting from h_last (float64, 1e-12)."""
    x, a, h0, reverse = case
    T = x.shape[1]
    T1 = min(T - 1, int(split * T)) if T > 1 else 0
    h_full, last_full = linear_scan(x, a, h0, reverse=reverse, backend=backend)
    if T1 == 0:
        return
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
    # error scale: |alpha| |x1| + |beta| |x2| pushed through the scan, plus the rounding of the combination
    scale, _ = linear_scan(abs(alpha) * np.abs(x1) + abs(beta) * np.abs(x2), a, reverse=reverse, backend="reference")
    assert_within(alpha * h1 + beta * h2, combined, 4 * scale, RTOL[x1.dtype], "linearity")


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
def test_t_equals_one(backend):
    """A single step (the decoding case) is h = a * h0 + x (float64, exact)."""
    rng = np.random.default_rng(1)
    x, a, h0 = rng.standard_normal((3, 1, 5)), rng.uniform(size=(3, 1, 5)), rng.standard_normal((3, 5))
    for reverse in (False, True):
        h, last = linear_scan(x, a, h0, reverse=reverse, backend=backend)
        np.testing.assert_array_equal(h[:, 0], a[:, 0] * h0 + x[:, 0])   # float64, exact
        np.testing.assert_array_equal(last, h[:, 0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_out_buffer_is_used(backend):
    """out= writes into the caller's buffers and returns them (float64, exact against a fresh call)."""
    rng = np.random.default_rng(2)
    x, a = rng.standard_normal((2, 9, 4)), rng.uniform(size=(2, 9, 4))
    buf = np.empty_like(x)
    h, _ = linear_scan(x, a, backend=backend, out=buf)
    assert h is buf
    np.testing.assert_array_equal(buf, linear_scan(x, a, backend=backend)[0])
    dx_buf, da_buf = np.empty_like(x), np.empty_like(x)
    dh = rng.standard_normal(x.shape)
    dx, da, _ = linear_scan_backward(dh, None, a, h, backend=backend, out=(dx_buf, da_buf))
    assert dx is dx_buf and da is da_buf
    fresh = linear_scan_backward(dh, None, a, h, backend=backend)
    np.testing.assert_array_equal(dx, fresh[0])
    np.testing.assert_array_equal(da, fresh[1])
