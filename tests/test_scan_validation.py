"""Bad input to the scan gets a clear error that names the problem; backends that cannot run say how to install."""

import importlib.util

import numpy as np
import pytest

import minigriffin.scan as scan_module
from minigriffin.scan import BackendUnavailable, available_backends, linear_scan, linear_scan_backward

BACKENDS = available_backends()


def _inputs(B=2, T=5, D=3, dtype=np.float64):
    rng = np.random.default_rng(0)
    return rng.standard_normal((B, T, D)).astype(dtype), rng.uniform(size=(B, T, D)).astype(dtype)


def test_mismatched_shapes_name_both_shapes():
    x, _ = _inputs()
    with pytest.raises(ValueError, match=r"x and a must have the same shape.*x\(2, 5, 3\).*a\(2, 4, 3\)"):
        linear_scan(x, np.ones((2, 4, 3)))


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float16, np.complex128, bool])
def test_non_float_dtypes_are_rejected(dtype):
    x, a = _inputs()
    with pytest.raises(TypeError, match="must be float32 or float64"):
        linear_scan(x.astype(dtype), a)
    with pytest.raises(TypeError, match="must be float32 or float64"):
        linear_scan(x, a.astype(dtype))


def test_mixed_float_dtypes_are_not_upcast():
    x, a = _inputs()
    with pytest.raises(TypeError, match="same dtype.*float32 and float64"):
        linear_scan(x.astype(np.float32), a)


@pytest.mark.parametrize("shape", [(5,), (5, 3), (1, 2, 5, 3)])
def test_wrong_ndim_is_rejected(shape):
    with pytest.raises(ValueError, match=r"must have shape \(B, T, D\), got ndim=%d" % len(shape)):
        linear_scan(np.zeros(shape), np.zeros(shape))


def test_empty_sequence_is_rejected():
    with pytest.raises(ValueError, match="empty sequence"):
        linear_scan(np.zeros((2, 0, 3)), np.zeros((2, 0, 3)))


def test_h0_shape_and_dtype():
    x, a = _inputs()
    with pytest.raises(ValueError, match=r"h0 must have shape \(B, D\)=\(2, 3\), got \(3, 2\)"):
        linear_scan(x, a, np.zeros((3, 2)))
    with pytest.raises(TypeError, match="h0 must have the dtype of x"):
        linear_scan(x, a, np.zeros((2, 3), np.float32))


def test_non_contiguous_input_is_rejected_with_the_fix():
    x, a = _inputs(T=6)
    with pytest.raises(ValueError, match="x must be C-contiguous.*ascontiguousarray"):
        linear_scan(x[:, ::2], a[:, ::2])


def test_lists_are_not_arrays():
    with pytest.raises(TypeError, match="x must be an array, got list"):
        linear_scan([[[1.0]]], np.ones((1, 1, 1)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["a", "x", "h0"])
def test_non_finite_inputs_are_named(backend, bad, where):
    x, a = _inputs()
    h0 = np.zeros((2, 3))
    {"a": a, "x": x, "h0": h0}[where][(1, 3, 2) if where != "h0" else (1, 2)] = bad
    index = "[1, 3, 2]" if where != "h0" else "[1, 2]"
    with pytest.raises(ValueError, match=rf"{where} contains 1 non-finite value\(s\).*{where}\{index}"):
        linear_scan(x, a, h0, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_in_a_at_a_reset_is_still_caught(backend):
    """NaN where a would reset the state (t = 0, h0 = None) must not slip through the cheap final-state check."""
    x, a = _inputs()
    a[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"a contains 1 non-finite"):
        linear_scan(x, a, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_in_upstream_gradient_is_named(backend):
    x, a = _inputs()
    h, _ = linear_scan(x, a, backend=backend)
    dh = np.ones_like(x)
    dh[0, 2, 1] = np.nan
    with pytest.raises(ValueError, match=r"dh contains 1 non-finite value\(s\).*dh\[0, 2, 1\]"):
        linear_scan_backward(dh, None, a, h, backend=backend)


def test_overflow_with_finite_inputs_is_reported():
    x = np.ones((1, 300, 1))
    a = np.full((1, 300, 1), 1e300)
    with pytest.raises(FloatingPointError, match="overflowed"):
        linear_scan(x, a, backend="reference")


def test_backward_checks_shapes():
    x, a = _inputs()
    h, _ = linear_scan(x, a)
    with pytest.raises(ValueError, match=r"dh and a must have the same shape"):
        linear_scan_backward(np.ones((2, 4, 3)), None, a, h)
    with pytest.raises(ValueError, match=r"dh_last must be \(2, 3\) float64"):
        linear_scan_backward(np.ones_like(x), np.ones((3,)), a, h)


def test_out_buffer_is_checked():
    x, a = _inputs()
    with pytest.raises(ValueError, match=r"out must be a C-contiguous float64 array of shape \(2, 5, 3\)"):
        linear_scan(x, a, out=np.empty((2, 5, 3), np.float32))
    with pytest.raises(ValueError, match="must not overlap the inputs"):
        linear_scan(x, a, out=x)


def test_unknown_backend_lists_the_choices():
    x, a = _inputs()
    with pytest.raises(ValueError, match=r"unknown scan backend 'fast'.*'reference', 'blelloch', 'numba'"):
        linear_scan(x, a, backend="fast")


def test_missing_numba_is_an_error_not_a_silent_fallback(monkeypatch):
    """If numba is missing, 'auto' must raise with the install command, not quietly run the slow reference."""
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(scan_module.importlib.util, "find_spec",
                        lambda name, *args: None if name == "numba" else real_find_spec(name, *args))
    assert "numba" not in available_backends()
    x, a = _inputs()
    for backend in ("auto", "numba"):
        with pytest.raises(BackendUnavailable, match="pip install numba"):
            linear_scan(x, a, backend=backend)
    linear_scan(x, a, backend="reference")   # asking for the reference explicitly still works
