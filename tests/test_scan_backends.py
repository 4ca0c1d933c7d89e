"""Every available scan backend equals the NumPy reference, forward and backward (Hypothesis).

Tolerances: tests/strategies.py RTOL, relative to each element's error scale (the same computation on
absolute values, floored at the smallest normal number for underflow): float64 1e-12, float32 2e-6 (da: twice
that). scan_cases draws a = 0, a = 1 exactly and a = 1 - 1e-k, and x, h0 of ordinary size, near the dtype's
largest finite values or down to the smallest subnormal, so every backend meets them forward and backward.
"""

import contextlib
import importlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigriffin.scan import available_backends, linear_scan, linear_scan_backward
from minigriffin.testing import RTOL, assert_within, backward_error_scales, forward_error_scale, scan_cases

BACKENDS = [name for name in available_backends() if name != "reference"]
if "numba" in BACKENDS:
    # Hypothesis's arrays are below the size where numba switches to its multithreaded kernel, so test that
    # kernel too by lowering the switch point to zero.
    BACKENDS.append("numba-parallel")


@contextlib.contextmanager
def numba_settings(**values):
    """Temporarily set module-level knobs of minigriffin.scan.numba_cpu (e.g. TIME_PARTS)."""
    module = importlib.import_module("minigriffin.scan.numba_cpu")
    saved = {key: getattr(module, key) for key in values}
    for key, value in values.items():
        setattr(module, key, value)
    try:
        yield
    finally:
        for key, value in saved.items():
            setattr(module, key, value)


@contextlib.contextmanager
def backend_named(name):
    """The registry name for a test backend; "numba-parallel" forces numba's multithreaded kernel."""
    if name != "numba-parallel":
        yield name
        return
    module = importlib.import_module("minigriffin.scan.numba_cpu")
    saved = module.PARALLEL_MIN_ELEMENTS
    module.PARALLEL_MIN_ELEMENTS = 0
    try:
        yield "numba"
    finally:
        module.PARALLEL_MIN_ELEMENTS = saved


def test_cpu_backends_are_available():
    """numba is a core dependency, so a normal install must offer it; a missing one is a broken install."""
    assert {"reference", "blelloch", "numba"} <= set(available_backends())


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=scan_cases())
def test_forward_equals_reference(backend, case):
    h_ref, last_ref = linear_scan(case.x, case.a, case.h0, reverse=case.reverse, backend="reference")
    with backend_named(backend) as name:
        h, last = linear_scan(case.x, case.a, case.h0, reverse=case.reverse, backend=name)
    assert h.dtype == case.x.dtype and h.shape == case.x.shape and last.shape == (case.x.shape[0], case.x.shape[2])
    scale, last_scale = forward_error_scale(case)
    rtol = RTOL[case.x.dtype]
    assert_within(h, h_ref, scale, rtol, f"{backend} h ({case.x.dtype})")
    assert_within(last, last_ref, last_scale, rtol, f"{backend} h_last ({case.x.dtype})")


@pytest.mark.parametrize("backend", BACKENDS)
@given(case=scan_cases(), with_dh_last=st.booleans())
def test_backward_equals_reference(backend, case, with_dh_last):
    rng = np.random.default_rng(case.x.size)
    dh = rng.standard_normal(case.x.shape).astype(case.x.dtype)                       # (B, T, D)
    dh_last = rng.standard_normal(case.x[:, 0].shape).astype(case.x.dtype) if with_dh_last else None
    h_ref, _ = linear_scan(case.x, case.a, case.h0, reverse=case.reverse, backend="reference")
    ref = linear_scan_backward(dh, dh_last, case.a, h_ref, case.h0, reverse=case.reverse, backend="reference")
    with backend_named(backend) as name:
        h, _ = linear_scan(case.x, case.a, case.h0, reverse=case.reverse, backend=name)
        got = linear_scan_backward(dh, dh_last, case.a, h, case.h0, reverse=case.reverse, backend=name)
    scales = backward_error_scales(case, dh, dh_last)
    rtol = RTOL[case.x.dtype]
    for name, g, r, s in zip(("dx", "da", "dh0"), got, ref, scales):
        if r is None:
            assert g is None, f"{backend} returned {name} although h0 was None"
            continue
        # da = g * h_prev mixes two rounded quantities, so its bound is the sum of both relative bounds.
        assert_within(g, r, s, 2 * rtol if name == "da" else rtol, f"{backend} {name} ({case.x.dtype})")


@pytest.mark.skipif("numba" not in BACKENDS, reason="numba is not installed")
@given(case=scan_cases(), parts=st.integers(2, 6), parallel=st.booleans(), with_dh_last=st.booleans())
def test_numba_chunked_equals_reference(case, parts, parallel, with_dh_last):
    """numba's chunked scan over time (the B = 1 path), forced at any size, forward and backward.

    parts 2-6 cut T into a head and 2-6 stretches, so Hypothesis's T (1-300, with T = 1, odd T and
    T = 1-9 drawn on purpose) covers T smaller than the stretch count (empty stretches and heads), and
    h0, reverse, exact zeros, a = 1 and a = 1 - 1e-k, huge and subnormal magnitudes come from scan_cases. The carries between stretches are formed
    in another order than the loop's, so this path matches the reference to rounding, not bit for bit.
    """
    rng = np.random.default_rng(case.x.size)
    dh = rng.standard_normal(case.x.shape).astype(case.x.dtype)                       # (B, T, D)
    dh_last = rng.standard_normal(case.x[:, 0].shape).astype(case.x.dtype) if with_dh_last else None
    h_ref, last_ref = linear_scan(case.x, case.a, case.h0, reverse=case.reverse, backend="reference")
    ref = linear_scan_backward(dh, dh_last, case.a, h_ref, case.h0, reverse=case.reverse, backend="reference")
    with numba_settings(TIME_PARTS=parts, PARALLEL_MIN_ELEMENTS=0 if parallel else 1 << 62):
        h, last = linear_scan(case.x, case.a, case.h0, reverse=case.reverse, backend="numba")
        got = linear_scan_backward(dh, dh_last, case.a, h, case.h0, reverse=case.reverse, backend="numba")
    rtol = RTOL[case.x.dtype]
    scale, last_scale = forward_error_scale(case)
    assert_within(h, h_ref, scale, rtol, f"chunked h ({case.x.dtype}, parts={parts})")
    assert_within(last, last_ref, last_scale, rtol, f"chunked h_last ({case.x.dtype}, parts={parts})")
    for name, g, r, s in zip(("dx", "da", "dh0"), got, ref, backward_error_scales(case, dh, dh_last)):
        if r is None:
            assert g is None
            continue
        assert_within(g, r, s, 2 * rtol if name == "da" else rtol, f"chunked {name} ({case.x.dtype}, parts={parts})")
