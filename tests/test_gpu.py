"""The cupy scan backend on a GPU, and its error messages where there is none.

Tests marked `gpu` need CuPy and a usable CUDA device and skip, with the reason, otherwise (run
`pytest -m gpu -ra` on a GPU machine). The others run everywhere: asking for backend="cupy" without a
usable GPU must raise BackendUnavailable naming the cause, and each cause gets its own message (checked
with a stand-in for CuPy's runtime module). The kernels themselves are also tested without a GPU, through
the host shim: tests/test_cuda_kernels.py.
"""

import importlib.util
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minigriffin.scan as scan_registry
from minigriffin import kernels
from minigriffin.scan import BackendUnavailable, linear_scan, linear_scan_backward
from minigriffin.scan import cupy_gpu
from strategies import RTOL, assert_within, backward_error_scales, forward_error_scale, scan_cases

GPU_REASON = scan_registry._unavailable_reason("cupy")      # None when the cupy backend can run here
needs_gpu = pytest.mark.skipif(GPU_REASON is not None, reason=f"no usable GPU for the cupy backend: {GPU_REASON}")
cupy = cupy_gpu.cupy if GPU_REASON is None else None
EXAMPLES = settings(max_examples=40)


def to_gpu(case):
    return (cupy.asarray(case.x), cupy.asarray(case.a), None if case.h0 is None else cupy.asarray(case.h0))


# --- On a GPU ------------------------------------------------------------------------------------------------

@pytest.mark.gpu
@needs_gpu
def test_all_kernels_compile_with_nvrtc():
    device = cupy.cuda.Device().id
    for name in kernels.KERNEL_NAMES:
        cupy_gpu._function(device, name)


@pytest.mark.gpu
@needs_gpu
@EXAMPLES
@given(case=scan_cases())
def test_forward_equals_reference(case):
    x, a, h0 = to_gpu(case)
    h, last = linear_scan(x, a, h0, reverse=case.reverse, backend="cupy")
    assert isinstance(h, cupy.ndarray) and isinstance(last, cupy.ndarray)
    h_ref, last_ref = linear_scan(case.x, case.a, case.h0, reverse=case.reverse, backend="reference")
    scale, last_scale = forward_error_scale(case)
    rtol = RTOL[case.x.dtype]
    assert_within(h.get(), h_ref, scale, rtol, f"cupy h ({case.x.dtype})")
    assert_within(last.get(), last_ref, last_scale, rtol, f"cupy h_last ({case.x.dtype})")


@pytest.mark.gpu
@needs_gpu
@EXAMPLES
@given(case=scan_cases(), strategy=st.sampled_from(["channels", "chunked"]), chunk_len=st.integers(1, 40),
       block=st.sampled_from([32, 64, kernels.BLOCK]))
def test_both_strategies_equal_reference(case, strategy, chunk_len, block):
    """Each strategy forced, whatever the device's size would pick, with chunks that need not divide T."""
    x, a, h0 = to_gpu(case)
    B, T, D = x.shape
    h0 = cupy.zeros((B, D), x.dtype) if h0 is None else h0
    out = cupy.empty_like(x)
    device = x.device.id
    kernels.run_scan(x, a, h0, case.reverse, out, launch=cupy_gpu.launcher(device),
                     capacity=cupy_gpu.capacity(device), strategy=strategy, chunk_len=chunk_len, block=block)
    h_ref, _ = linear_scan(case.x, case.a, case.h0, reverse=case.reverse, backend="reference")
    if strategy == "channels":
        # Compiled with --fmad=false: the reference's multiply-then-add, so bit for bit (as on the host shim).
        np.testing.assert_array_equal(out.get(), h_ref)
    scale, _ = forward_error_scale(case)
    assert_within(out.get(), h_ref, scale, RTOL[case.x.dtype], f"cupy {strategy} L={chunk_len} ({case.x.dtype})")


@pytest.mark.gpu
@needs_gpu
@EXAMPLES
@given(case=scan_cases(), with_dh_last=st.booleans())
def test_backward_equals_reference(case, with_dh_last):
    """The generic backward passes time-slice views of CuPy arrays to the kernels."""
    rng = np.random.default_rng(case.x.size)
    dh = rng.standard_normal(case.x.shape).astype(case.x.dtype)                       # (B, T, D)
    dh_last = rng.standard_normal(case.x[:, 0].shape).astype(case.x.dtype) if with_dh_last else None
    h_ref, _ = linear_scan(case.x, case.a, case.h0, reverse=case.reverse, backend="reference")
    ref = linear_scan_backward(dh, dh_last, case.a, h_ref, case.h0, reverse=case.reverse, backend="reference")
    x, a, h0 = to_gpu(case)
    h, _ = linear_scan(x, a, h0, reverse=case.reverse, backend="cupy")
    got = linear_scan_backward(cupy.asarray(dh), None if dh_last is None else cupy.asarray(dh_last), a, h, h0,
                               reverse=case.reverse, backend="cupy")
    scales = backward_error_scales(case, dh, dh_last)
    rtol = RTOL[case.x.dtype]
    for what, g, r, s in zip(("dx", "da", "dh0"), got, ref, scales):
        if r is None:
            assert g is None, f"cupy returned {what} although h0 was None"
            continue
        assert isinstance(g, cupy.ndarray)
        assert_within(g.get(), r, s, 2 * rtol if what == "da" else rtol, f"cupy {what} ({case.x.dtype})")


@pytest.mark.gpu
@needs_gpu
def test_auto_picks_cupy_for_cupy_arrays():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 9, 5)).astype(np.float32)
    a = rng.uniform(0, 1, (2, 9, 5)).astype(np.float32)
    assert scan_registry._resolve("auto", cupy.asarray(x)) == "cupy"
    assert scan_registry._resolve("auto", x) != "cupy"
    h, _ = linear_scan(cupy.asarray(x), cupy.asarray(a), backend="auto")
    assert isinstance(h, cupy.ndarray)
    np.testing.assert_array_equal(h.get(), linear_scan(x, a, backend="reference")[0])


@pytest.mark.gpu
@needs_gpu
def test_numpy_inputs_round_trip():
    """backend="cupy" asked for explicitly on NumPy arrays: copied to the device and back, NumPy out."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 40, 7))
    a = rng.uniform(0, 1, (3, 40, 7))
    h, last = linear_scan(x, a, backend="cupy")
    assert isinstance(h, np.ndarray) and isinstance(last, np.ndarray)
    np.testing.assert_allclose(h, linear_scan(x, a, backend="reference")[0], rtol=1e-12, atol=1e-12)


# --- Without a GPU -------------------------------------------------------------------------------------------

def test_cupy_without_gpu_names_the_cause():
    """Here the cupy backend cannot run: asking for it says why (and how to fix it)."""
    if GPU_REASON is None:
        pytest.skip("a GPU is usable here; the error path is covered by test_unavailable_reasons")
    x = np.zeros((1, 4, 3), np.float32)
    with pytest.raises(BackendUnavailable) as excinfo:
        linear_scan(x, x, backend="cupy")
    message = str(excinfo.value)
    assert message == GPU_REASON
    if importlib.util.find_spec("cupy") is None:
        assert "not installed" in message and 'pip install "minigriffin[gpu]"' in message
    else:
        assert any(cause in message for cause in ("no usable GPU", "driver is too old", "cannot be imported"))
    assert "cupy" not in scan_registry.available_backends()


class FakeCUDARuntimeError(RuntimeError):
    def __init__(self, status, text):
        super().__init__(text)
        self.status = status


def fake_cupy(count=1, status=None, driver=12040, runtime=12040):
    """A stand-in for the part of CuPy that unavailable_reason asks (cupy.cuda.runtime)."""
    def get_device_count():
        if status is not None:
            raise FakeCUDARuntimeError(status, f"cudaError {status}")
        return count
    runtime_module = types.SimpleNamespace(CUDARuntimeError=FakeCUDARuntimeError, getDeviceCount=get_device_count,
                                           driverGetVersion=lambda: driver, runtimeGetVersion=lambda: runtime)
    return types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime_module))


@pytest.fixture
def fresh_reason(monkeypatch):
    """unavailable_reason is cached per process: clear it around a test that swaps CuPy out."""
    cupy_gpu.unavailable_reason.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    cupy_gpu.unavailable_reason.cache_clear()


@pytest.mark.parametrize("fake,expected", [
    (dict(status=35), "driver is missing or too old"),                  # cudaErrorInsufficientDriver
    (dict(status=100), "no CUDA device found"),                         # cudaErrorNoDevice
    (dict(status=999), "CUDA failed to start"),
    (dict(count=0), "no CUDA device found"),
    (dict(driver=11080, runtime=12040), "driver is too old: it supports CUDA 11.8, this CuPy needs CUDA 12.4"),
    (None, "cannot be imported (ImportError: libcudart.so"),
])
def test_unavailable_reasons(fresh_reason, fake, expected):
    fresh_reason.setattr(cupy_gpu, "cupy", None if fake is None else fake_cupy(**fake))
    fresh_reason.setattr(cupy_gpu, "_IMPORT_ERROR", "ImportError: libcudart.so.12: cannot open shared object")
    reason = cupy_gpu.unavailable_reason()
    assert expected in reason
    # Through the registry (pretending the cupy package is installed): the same cause, as BackendUnavailable.
    find_spec = importlib.util.find_spec
    fresh_reason.setattr(importlib.util, "find_spec",
                         lambda name, *args: object() if name == "cupy" else find_spec(name, *args))
    with pytest.raises(BackendUnavailable, match="cannot run here") as excinfo:
        linear_scan(np.zeros((1, 2, 3)), np.zeros((1, 2, 3)), backend="cupy")
    assert reason in str(excinfo.value)


def test_usable_gpu_has_no_reason(fresh_reason):
    fresh_reason.setattr(cupy_gpu, "cupy", fake_cupy())
    assert cupy_gpu.unavailable_reason() is None
