"""The complex linear scan (complex64, complex128; the CG-LRU's, Griffin Appendix B) on every backend.

1. Hypothesis: every available backend (numba's multithreaded and time-chunked paths forced too), and the CUDA
   kernels through the host shim (g++; tests/test_cuda_kernels.py explains the shim), equal the reference forward
   and backward. Cases are minigriffin.testing.scan_cases made complex: the imaginary parts of x and h0 drawn in
   the same magnitude regime, a = |a| e^(i theta) with |a| from the real case's regimes (0, 1, 1 - 1e-k) and
   theta = 0 on half the elements. Tolerance: the real scan's table (minigriffin.testing.RTOL) relative to each
   element's error scale, the real scan of |x| with |a| floored at the smallest normal number: complex128 1e-12,
   complex64 2e-6 (da 2x that). Seen over 300 cases (blelloch, numba, numba time-chunked): 1.0e-15 and 2.4e-7.
2. float64 finite differences of linear_scan_backward on complex inputs, perturbing the real and imaginary parts
   separately (through float64 views of the complex arrays), every backend (rtol 1e-8, atol 1e-11).
3. Validation: mixed real and complex inputs get a clear error; NaN in a complex input is named.
4. On a GPU (marker `gpu`): the cupy backend on complex CuPy arrays. Skipped here without one.
"""

import contextlib
import importlib
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigriffin.gradcheck import assert_grads_close
from minigriffin.scan import (available_backends, cuda, linear_scan, linear_scan_backward, register_backend,
                              unavailable_reason, unregister_backend)
from minigriffin.scan.cuda import planner
from minigriffin.testing import RTOL as REAL_RTOL
from minigriffin.testing import ScanCase, backward_error_scales, forward_error_scale, scan_cases

RTOL = {np.dtype(np.complex64): REAL_RTOL[np.dtype(np.float32)],       # 2e-6, as float32
        np.dtype(np.complex128): REAL_RTOL[np.dtype(np.float64)]}     # 1e-12, as float64
EXAMPLES = settings(max_examples=40)
CPU_BACKENDS = [name for name in available_backends() if name not in ("reference", "cupy")]
NUMBA_VARIANTS = {"numba-parallel": {"PARALLEL_MIN_ELEMENTS": 0}, "numba-chunked": {"TIME_PARTS": 3},
                  "numba-chunked-parallel": {"TIME_PARTS": 4, "PARALLEL_MIN_ELEMENTS": 0}}
if "numba" in CPU_BACKENDS:
    CPU_BACKENDS += list(NUMBA_VARIANTS)
SHIM_STRATEGIES = ("channels", "chunked", "auto")
GXX = shutil.which("g++")


def as_complex(re, im, dtype):
    """re + i im with both parts exact (no 1j * im rounding)."""
    z = np.empty(re.shape, dtype)
    z.real, z.imag = re, im
    return z


@st.composite
def complex_cases(draw, max_T=300):
    """A ScanCase of complex64 / complex128 arrays (module docstring, 1)."""
    case = draw(scan_cases(max_T=max_T))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dtype = np.result_type(case.x.dtype, np.complex64)
    # "huge" cases are sized for real products; a complex |g h| can be 2x larger, so halve both parts
    shrink = 0.5 if np.abs(case.x).max() > 1e20 else 1.0
    x = as_complex(case.x * shrink, rng.permuted(case.x, axis=1) * shrink, dtype)        # (B, T, D)
    theta = np.where(rng.random(case.a.shape) < 0.5, 0.0, rng.uniform(-np.pi, np.pi, case.a.shape))
    a = (case.a.astype(np.float64) * np.exp(1j * theta)).astype(dtype)                   # (B, T, D) |a| <= 1
    h0 = None if case.h0 is None else as_complex(case.h0 * shrink, -case.h0[::-1] * shrink, dtype)
    return ScanCase(x, a, h0, case.reverse)


def error_scales(case, dh=None, dh_last=None):
    """(forward scales) and, with dh, (backward scales): the real computation on absolute values."""
    abs_case = ScanCase(np.abs(case.x), np.abs(case.a), None if case.h0 is None else np.abs(case.h0), case.reverse)
    forward = forward_error_scale(abs_case)
    if dh is None:
        return forward
    return backward_error_scales(abs_case, np.abs(dh), None if dh_last is None else np.abs(dh_last), forward[0])


def assert_within(actual, expected, scale, rtol, what):
    """|actual - expected| <= rtol * scale elementwise, for complex arrays (the distance in the complex plane)."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, (what, actual.dtype, expected.dtype)
    err = np.abs(actual.astype(np.complex128) - expected.astype(np.complex128))
    bound = rtol * scale.astype(np.float64)
    if not np.all(err <= bound):
        i = np.unravel_index(np.argmax(err - bound), err.shape)
        raise AssertionError(f"{what}: |{actual[i]!r} - {expected[i]!r}| = {err[i]:.3g} > {rtol} * scale "
                             f"{scale[i]:.3g} at {list(i)} ({int(np.sum(err > bound))} elements off)")


@contextlib.contextmanager
def backend_named(name):
    """The registry name for a CPU test backend; the numba variants set numba_cpu's knobs meanwhile."""
    if name not in NUMBA_VARIANTS:
        yield name
        return
    module = importlib.import_module("minigriffin.scan.numba_cpu")
    saved = {key: getattr(module, key) for key in NUMBA_VARIANTS[name]}
    for key, value in NUMBA_VARIANTS[name].items():
        setattr(module, key, value)
    try:
        yield "numba"
    finally:
        for key, value in saved.items():
            setattr(module, key, value)


def check_against_reference(backend, case, with_dh_last, to_device=None):
    """Forward and backward of `backend` against the reference; to_device (e.g. cupy.asarray) moves its inputs."""
    on = (lambda v: v) if to_device is None else (lambda v: None if v is None else to_device(v))   # noqa: E731
    off = (lambda v: v) if to_device is None else (lambda v: None if v is None else v.get())       # noqa: E731
    rng = np.random.default_rng(case.x.size)
    B, T, D = case.x.shape
    dh = as_complex(rng.standard_normal((B, T, D)), rng.standard_normal((B, T, D)), case.x.dtype)
    dh_last = as_complex(rng.standard_normal((B, D)), rng.standard_normal((B, D)), case.x.dtype) if with_dh_last \
        else None
    h_ref, last_ref = linear_scan(case.x, case.a, case.h0, reverse=case.reverse, backend="reference")
    ref = linear_scan_backward(dh, dh_last, case.a, h_ref, case.h0, reverse=case.reverse, backend="reference")
    x, a, h0 = on(case.x), on(case.a), on(case.h0)
    h, last = linear_scan(x, a, h0, reverse=case.reverse, backend=backend)
    got = linear_scan_backward(on(dh), on(dh_last), a, h, h0, reverse=case.reverse, backend=backend)
    h, last, got = off(h), off(last), [off(v) for v in got]
    rtol = RTOL[case.x.dtype]
    scale, last_scale = error_scales(case)
    assert_within(h, h_ref, scale, rtol, f"{backend} h ({case.x.dtype})")
    assert_within(last, last_ref, last_scale, rtol, f"{backend} h_last ({case.x.dtype})")
    for what, g, r, s in zip(("dx", "da", "dh0"), got, ref, error_scales(case, dh, dh_last)):
        if r is None:
            assert g is None, f"{backend} returned {what} although h0 was None"
            continue
        assert_within(g, r, s, 2 * rtol if what == "da" else rtol, f"{backend} {what} ({case.x.dtype})")


# --- 1. Every backend equals the reference ---------------------------------------------------------------------

@pytest.mark.parametrize("backend", CPU_BACKENDS)
@EXAMPLES
@given(case=complex_cases(), with_dh_last=st.booleans())
def test_cpu_backends_equal_reference(backend, case, with_dh_last):
    with backend_named(backend) as name:
        check_against_reference(name, case, with_dh_last)


def _shim_library(folder):
    driver = folder / "driver.cpp"
    driver.write_text('#include "host_shim.h"\n#include "scan.cu"\n'
                      + "".join(f"HOST_SHIM_EXPORT({name})\n" for name in cuda.KERNEL_NAMES))
    library = folder / "libscan_host.so"
    result = subprocess.run([GXX, "-std=c++17", "-O2", "-ffp-contract=off", "-Wall", "-Wextra", "-Werror", "-fPIC",
                             "-shared", f"-I{cuda.KERNEL_DIR}", str(driver), "-o", str(library)],
                            capture_output=True, text=True)
    assert result.returncode == 0, f"g++ failed to build the host shim:\n{result.stderr}"
    return library


@pytest.fixture(scope="module")
def shim_backends(tmp_path_factory):
    """Backends "complex-shim-<strategy>": scan.cu's kernels on the CPU through the host shim, launched by the
    CuPy backend's planner, with the complex type codes 'F' / 'D'."""
    if GXX is None:
        pytest.skip("g++ not found on PATH: the CUDA kernels were not run on the CPU")
    test_cuda_kernels = pytest.importorskip("test_cuda_kernels")

    class ComplexHostShim(test_cuda_kernels.HostShim):
        _CODES = {**test_cuda_kernels.HostShim._CODES, np.dtype(np.complex64): "F", np.dtype(np.complex128): "D"}

    shim = ComplexHostShim(_shim_library(tmp_path_factory.mktemp("complex_host_shim")))
    shim.set_order(0)
    names = []
    for strategy in SHIM_STRATEGIES:
        def scan(x, a, h0, reverse, out, strategy=strategy):
            planner.run_scan(x, a, h0, reverse, out, launch=shim.launch, capacity=64, strategy=strategy,
                             block=32)
        register_backend(f"complex-shim-{strategy}", scan)
        names.append(f"complex-shim-{strategy}")
    yield shim
    for name in names:
        unregister_backend(name)


@pytest.mark.parametrize("strategy", SHIM_STRATEGIES)
@EXAMPLES
@given(case=complex_cases(), with_dh_last=st.booleans())
def test_cuda_kernels_on_the_host_shim_equal_reference(shim_backends, strategy, case, with_dh_last):
    check_against_reference(f"complex-shim-{strategy}", case, with_dh_last)


def test_shim_kernels_have_complex_signatures(shim_backends):
    assert shim_backends.signature("scan_channels_c64").startswith("FFFF")
    assert shim_backends.signature("scan_chunk_local_c128").startswith("DDDDDD")


# --- 2. Finite differences of the complex backward ---------------------------------------------------------------

@pytest.mark.parametrize("backend", [name for name in available_backends() if name != "cupy"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("T", [1, 2, 7, 33])
def test_complex_backward_matches_finite_differences(backend, reverse, with_h0, T):
    """L = sum Re(conj(dh) h) + Re(conj(dh_last) h_last), so dL/dRe + i dL/dIm of each input is what the backward
    returns. A complex128 array's float64 view (..., 2D) interleaves real and imaginary parts and shares its
    memory, so gradcheck perturbs each part on its own; the gradient's view lines up with it. Each real part of
    h is affine in each single real input (no truncation error): step 1e-2, rtol 1e-8, atol 1e-11 (float64)."""
    rng = np.random.default_rng(T)
    B, D = 2, 3
    draw = lambda *shape: as_complex(rng.standard_normal(shape), rng.standard_normal(shape), np.complex128)  # noqa
    x, dh, dh_last = draw(B, T, D), draw(B, T, D), draw(B, D)
    a = rng.uniform(0.0, 1.0, (B, T, D)) * np.exp(1j * rng.uniform(-np.pi, np.pi, (B, T, D)))
    a[:, T // 2, 0] = 0.0                          # a document reset in the middle
    a[:, :, 1] = (1.0 - 1e-6) * np.exp(0.3j)       # a long-memory, rotating channel
    h0 = draw(B, D) if with_h0 else None
    h, _ = linear_scan(x, a, h0, reverse=reverse, backend=backend)
    dx, da, dh0 = linear_scan_backward(dh, dh_last, a, h, h0, reverse=reverse, backend=backend)
    assert dx.dtype == da.dtype == np.complex128 and (dh0 is None) == (not with_h0)
    real = lambda z: z.view(np.float64)            # noqa: E731  (..., 2D) [Re, Im, Re, Im, ...], same memory
    inputs = {"x": real(x), "a": real(a)} | ({"h0": real(h0)} if with_h0 else {})
    grads = {"x": real(dx), "a": real(da)} | ({"h0": real(dh0)} if with_h0 else {})

    def forward(x, a, h0=None):
        h, h_last = linear_scan(x.view(np.complex128), a.view(np.complex128),
                                None if h0 is None else h0.view(np.complex128), reverse=reverse, backend=backend)
        return real(h), real(h_last)

    reports = assert_grads_close(forward, inputs, grads, (real(dh), real(dh_last)), rtol=1e-8, atol=1e-11,
                                 eps=1e-2, max_elements=60)                                       # float64
    assert all(r.checked == min(60, inputs[r.name].size) for r in reports)


def test_real_inputs_as_complex_give_the_real_scan():
    """A complex scan whose inputs have zero imaginary parts is the real scan, forward and backward (float64,
    exact on the reference), so the conjugations of the complex adjoint change nothing there."""
    rng = np.random.default_rng(0)
    x, a, dh = rng.standard_normal((2, 9, 3)), rng.uniform(size=(2, 9, 3)), rng.standard_normal((2, 9, 3))
    h0, dh_last = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    for reverse in (False, True):
        h, last = linear_scan(x, a, h0, reverse=reverse, backend="reference")
        hc, lastc = linear_scan(x + 0j, a + 0j, h0 + 0j, reverse=reverse, backend="reference")
        np.testing.assert_array_equal(hc, h)                                  # float64, exact
        np.testing.assert_array_equal(lastc, last)                            # float64, exact
        real = linear_scan_backward(dh, dh_last, a, h, h0, reverse=reverse, backend="reference")
        cplx = linear_scan_backward(dh + 0j, dh_last + 0j, a + 0j, hc, h0 + 0j, reverse=reverse,
                                    backend="reference")
        for r, c in zip(real, cplx):
            np.testing.assert_array_equal(c, r)                               # float64, exact


# --- 3. Validation -------------------------------------------------------------------------------------------

def test_mixed_real_and_complex_inputs_are_refused():
    rng = np.random.default_rng(0)
    x, a = rng.standard_normal((2, 5, 3)), rng.uniform(size=(2, 5, 3))
    for xs, as_ in ((x + 0j, a), (x, a + 0j)):
        with pytest.raises(TypeError, match=r"x and a mix real and complex .*both complex64 or complex128"):
            linear_scan(xs, as_)
    with pytest.raises(TypeError, match="same dtype.*complex64 and complex128"):
        linear_scan((x + 0j).astype(np.complex64), a + 0j)
    with pytest.raises(TypeError, match=r"h0 must have the dtype of x \(complex128\), got float64"):
        linear_scan(x + 0j, a + 0j, np.zeros((2, 3)))
    h, _ = linear_scan(x + 0j, a + 0j)
    with pytest.raises(TypeError, match="dh and a mix real and complex"):
        linear_scan_backward(np.ones((2, 5, 3)), None, a + 0j, h)
    with pytest.raises(ValueError, match=r"dh_last must be \(2, 3\) complex128"):
        linear_scan_backward(np.ones((2, 5, 3), np.complex128), np.ones((2, 3)), a + 0j, h)


@pytest.mark.parametrize("backend", [name for name in available_backends() if name != "cupy"])
@pytest.mark.parametrize("where", ["a", "x", "h0"])
def test_non_finite_complex_inputs_are_named(backend, where):
    """An infinite or NaN imaginary part alone is caught and named, like a real NaN."""
    rng = np.random.default_rng(0)
    inputs = {"x": rng.standard_normal((2, 5, 3)) + 0j, "a": rng.uniform(size=(2, 5, 3)) + 0j,
              "h0": np.zeros((2, 3), np.complex128)}
    index = (1, 3, 2) if where != "h0" else (1, 2)
    inputs[where][index] = complex(0.5, np.inf)
    with pytest.raises(ValueError, match=rf"{where} contains 1 non-finite value\(s\)"):
        linear_scan(inputs["x"], inputs["a"], inputs["h0"], backend=backend)


def test_non_finite_complex_gradient_is_named():
    x, a = np.ones((1, 4, 2), np.complex128), np.full((1, 4, 2), 0.5 + 0.5j)
    h, _ = linear_scan(x, a)
    dh = np.ones_like(x)
    dh[0, 2, 1] = complex(np.nan, 0.0)
    with pytest.raises(ValueError, match=r"dh contains 1 non-finite value\(s\).*dh\[0, 2, 1\] = \(nan\+0j\)"):
        linear_scan_backward(dh, None, a, h)


# --- 4. On a GPU ----------------------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.skipif(unavailable_reason("cupy") is not None, reason=f"no usable GPU: {unavailable_reason('cupy')}")
@EXAMPLES
@given(case=complex_cases(), with_dh_last=st.booleans())
def test_cupy_on_complex_cupy_arrays(case, with_dh_last):
    """The cupy backend on complex CuPy arrays, forward and backward, then on host arrays (copied through)."""
    cupy = pytest.importorskip("cupy")
    check_against_reference("cupy", case, with_dh_last, to_device=cupy.asarray)
    check_against_reference("cupy", case, with_dh_last)
