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
from minigriffin.scan import BackendUnavailable, cuda, linear_scan, linear_scan_backward
from minigriffin import xp
from minigriffin.scan.cuda import cupy_backend, planner
from minigriffin.testing import RTOL, assert_within, backward_error_scales, forward_error_scale, scan_cases

GPU_REASON = scan_registry.unavailable_reason("cupy")      # None when the cupy backend can run here
needs_gpu = pytest.mark.skipif(GPU_REASON is not None, reason=f"no usable GPU for the cupy backend: {GPU_REASON}")
cupy = cupy_backend.cupy if GPU_REASON is None else None
EXAMPLES = settings(max_examples=40)


def to_gpu(case):
    return (cupy.asarray(case.x), cupy.asarray(case.a), None if case.h0 is None else cupy.asarray(case.h0))


# --- On a GPU ------------------------------------------------------------------------------------------------

@pytest.mark.gpu
@needs_gpu
def test_all_kernels_compile_with_nvrtc():
    device = cupy.cuda.Device().id
    for name in cuda.KERNEL_NAMES:
        cupy_backend._function(device, name)


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
       block=st.sampled_from([32, 64, planner.BLOCK]))
def test_both_strategies_equal_reference(case, strategy, chunk_len, block):
    """Each strategy forced, whatever the device's size would pick, with chunks that need not divide T."""
    x, a, h0 = to_gpu(case)
    B, T, D = x.shape
    h0 = cupy.zeros((B, D), x.dtype) if h0 is None else h0
    out = cupy.empty_like(x)
    device = x.device.id
    planner.run_scan(x, a, h0, case.reverse, out, launch=cupy_backend.launcher(device),
                     capacity=cupy_backend.capacity(device), strategy=strategy, chunk_len=chunk_len, block=block)
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


@pytest.mark.gpu
@needs_gpu
def test_host_array_among_device_arrays_is_named():
    """A NumPy array passed with CuPy ones is refused, by name, before any kernel runs: forward, backward and
    the backend primitive itself (which also checks `out`)."""
    rng = np.random.default_rng(3)
    x_host = rng.standard_normal((2, 9, 5)).astype(np.float32)
    a_host = rng.uniform(0, 1, (2, 9, 5)).astype(np.float32)
    h0_host = np.zeros((2, 5), np.float32)
    x, a, h0 = cupy.asarray(x_host), cupy.asarray(a_host), cupy.asarray(h0_host)
    on = f"cuda:{x.device.id}"
    with pytest.raises(TypeError, match=rf"h0 is a NumPy array \(host memory\) but x is on {on}: move it with "
                                        rf"cupy.asarray"):
        linear_scan(x, a, h0_host, backend="cupy")
    with pytest.raises(TypeError, match=rf"a is a NumPy array \(host memory\) but x is on {on}"):
        linear_scan(x, a_host, backend="cupy")
    with pytest.raises(TypeError, match=rf"a is on {on} but x is a NumPy array \(host memory\)"):
        linear_scan(x_host, a, backend="cupy")
    h, _ = linear_scan(x, a, h0, backend="cupy")
    dh = cupy.ones_like(x)
    with pytest.raises(TypeError, match=rf"a is a NumPy array \(host memory\) but dh is on {on}"):
        linear_scan_backward(dh, None, a_host, h, h0, backend="cupy")
    with pytest.raises(TypeError, match=rf"a is on {on} but h is a NumPy array \(host memory\)"):
        linear_scan_backward(dh, None, a, h.get(), h0, backend="cupy")
    with pytest.raises(TypeError, match=rf"h0 is a NumPy array \(host memory\) but h is on {on}"):
        linear_scan_backward(dh, None, a, h, h0_host, backend="cupy")
    out = cupy.zeros_like(x)
    for args, culprit in (((x, a, h0, False, np.empty_like(x_host)), "out"), ((x, a, h0_host, False, out), "h0")):
        with pytest.raises(TypeError, match=rf"{culprit} is a NumPy array \(host memory\) but x is on {on}"):
            cupy_backend.scan(*args)
    assert not out.any()                       # refused before any launch: the buffer was never written


@pytest.mark.gpu
@needs_gpu
def test_arrays_on_another_gpu_are_named():
    """CuPy arrays on two GPUs: refused by name; the scan runs once all are on one device and it is current."""
    if cupy.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two CUDA devices")
    rng = np.random.default_rng(4)
    x_host = rng.standard_normal((2, 9, 5)).astype(np.float32)
    a_host = rng.uniform(0, 1, (2, 9, 5)).astype(np.float32)
    with cupy.cuda.Device(0):
        x0, a0 = cupy.asarray(x_host), cupy.asarray(a_host)
    with cupy.cuda.Device(1):
        x1, a1, h01 = cupy.asarray(x_host), cupy.asarray(a_host), cupy.zeros((2, 5), np.float32)
        out1 = cupy.zeros_like(x1)
    with cupy.cuda.Device(0):
        with pytest.raises(ValueError, match="a is on cuda:1 but x is on cuda:0"):
            linear_scan(x0, a1, backend="cupy")
        with pytest.raises(ValueError, match="h0 is on cuda:1 but x is on cuda:0"):
            linear_scan(x0, a0, h01, backend="cupy")
        with pytest.raises(ValueError, match="a is on cuda:1 but dh is on cuda:0"):
            linear_scan_backward(cupy.ones_like(x0), None, a1, x0, backend="cupy")
        with pytest.raises(ValueError, match="out is on cuda:1 but x is on cuda:0"):
            cupy_backend.scan(x0, a0, cupy.zeros((2, 5), np.float32), False, out1)
        # x on cuda:1 while cuda:0 is current: linear_scan's own buffers land on cuda:0 (CuPy allocates on the
        # current device), and the backend says so instead of launching on cuda:1 with cuda:0 pointers.
        # (out, or h0 if a later CuPy's empty_like follows its prototype's device: CuPy issue #3457)
        with pytest.raises(ValueError, match="(out|h0) is on cuda:0 but x is on cuda:1.*current device"):
            linear_scan(x1, a1, backend="cupy")
    with x1.device:
        assert not out1.any()
        h, _ = linear_scan(x1, a1, backend="cupy")
    assert h.device.id == 1
    np.testing.assert_array_equal(h.get(), linear_scan(x_host, a_host, backend="reference")[0])


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
    cupy_backend.unavailable_reason.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    cupy_backend.unavailable_reason.cache_clear()


@pytest.mark.parametrize("fake,expected", [
    (dict(status=35), "driver is missing or too old"),                  # cudaErrorInsufficientDriver
    (dict(status=100), "no CUDA device found"),                         # cudaErrorNoDevice
    (dict(status=999), "CUDA failed to start"),
    (dict(count=0), "no CUDA device found"),
    (dict(driver=11080, runtime=12040), "driver is too old: it supports CUDA 11.8, this CuPy needs CUDA 12.4"),
    (None, "cannot be imported (ImportError: libcudart.so"),
])
def test_unavailable_reasons(fresh_reason, fake, expected):
    fresh_reason.setattr(cupy_backend, "cupy", None if fake is None else fake_cupy(**fake))
    fresh_reason.setattr(cupy_backend, "_IMPORT_ERROR", "ImportError: libcudart.so.12: cannot open shared object")
    reason = cupy_backend.unavailable_reason()
    assert expected in reason
    # Through the registry (pretending the cupy package is installed): the same cause, as BackendUnavailable.
    find_spec = importlib.util.find_spec
    fresh_reason.setattr(importlib.util, "find_spec",
                         lambda name, *args: object() if name == "cupy" else find_spec(name, *args))
    with pytest.raises(BackendUnavailable, match="cannot run here") as excinfo:
        linear_scan(np.zeros((1, 2, 3)), np.zeros((1, 2, 3)), backend="cupy")
    assert reason in str(excinfo.value)


def test_usable_gpu_has_no_reason(fresh_reason):
    fresh_reason.setattr(cupy_backend, "cupy", fake_cupy())
    assert cupy_backend.unavailable_reason() is None


# --- Device checks without a GPU: stand-ins with the attributes the check reads of a cupy.ndarray ------------

class FakeDevice:
    """A stand-in for cupy.cuda.Device: an id, and a context manager (the backend runs `with x.device:`)."""

    def __init__(self, device_id):
        self.id = device_id

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class FakeDeviceArray:
    """A stand-in for a cupy.ndarray on GPU `device_id`: .device (a Device with .id), and what the scan's
    shape and dtype checks read. Its type's module is cupy's, which is how minigriffin.xp.is_device_array
    tells CuPy arrays from NumPy ones (so cupy is never imported to ask)."""

    __module__ = "cupy._fake"

    def __init__(self, device_id, shape=(2, 5, 3), dtype=np.float32):
        self.device = FakeDevice(device_id)
        self.shape, self.ndim, self.dtype = tuple(shape), len(shape), np.dtype(dtype)
        self.flags = types.SimpleNamespace(c_contiguous=True)
        self.strides = tuple(int(np.prod(shape[i + 1:])) * self.dtype.itemsize for i in range(len(shape)))

    def __getitem__(self, index):                # time slices, as the backward passes them: same device
        return FakeDeviceArray(self.device.id, np.empty(self.shape, np.bool_)[index].shape, self.dtype)


def gpu(device_id, shape=(2, 5, 3)):
    return FakeDeviceArray(device_id, shape)


def host(shape=(2, 5, 3)):
    return np.zeros(shape, np.float32)


@pytest.mark.parametrize("named", [
    [("x", gpu(0)), ("a", gpu(0)), ("out", gpu(0)), ("h0", gpu(0, (2, 3)))],
    [("x", gpu(1)), ("a", gpu(1)), ("out", gpu(1)), ("h0", None)],
    [("x", host()), ("a", host()), ("out", host()), ("h0", host((2, 3)))],
])
def test_same_device_passes(named):
    xp.check_same_device(*named)
    xp.check_same_device(*named, current=3)


@pytest.mark.parametrize("named,error,message", [
    ([("x", gpu(0)), ("a", gpu(1))], ValueError, "a is on cuda:1 but x is on cuda:0"),
    ([("x", gpu(0)), ("a", gpu(0)), ("out", gpu(0)), ("h0", host((2, 3)))], TypeError,
     "h0 is a NumPy array (host memory) but x is on cuda:0: move it with cupy.asarray"),
    ([("x", gpu(2)), ("a", gpu(2)), ("out", host())], TypeError,
     "out is a NumPy array (host memory) but x is on cuda:2: move it with cupy.asarray"),
    ([("x", host()), ("a", host()), ("out", gpu(0))], TypeError,
     "out is on cuda:0 but x is a NumPy array (host memory)"),
    ([("dh", gpu(0)), ("a", [1.0])], TypeError, "a is a list, neither a NumPy nor a CuPy array"),
])
def test_device_mismatch_names_the_argument_and_both_devices(named, error, message):
    with pytest.raises(error) as excinfo:
        xp.check_same_device(*named)
    assert message in str(excinfo.value)


def test_device_mismatch_on_the_current_device_explains_where_it_came_from():
    """linear_scan allocates out (and h0 = None's zeros) with CuPy, which puts new arrays on the current device,
    not on x's: when that is where the stray array is, the message says so and how to fix it."""
    with pytest.raises(ValueError) as excinfo:
        xp.check_same_device(("x", gpu(1)), ("a", gpu(1)), ("out", gpu(0)), current=0)
    message = str(excinfo.value)
    assert "out is on cuda:1" not in message and "out is on cuda:0 but x is on cuda:1" in message
    assert "cuda:0 is the current device" in message and "with x.device:" in message
    with pytest.raises(ValueError) as excinfo:                      # not the current device: no such hint
        xp.check_same_device(("x", gpu(1)), ("a", gpu(2)), current=0)
    assert "current device" not in str(excinfo.value)


@pytest.fixture
def no_launch(monkeypatch):
    """cupy_backend.scan with a GPU stand-in: every launch is recorded instead of run (none may happen)."""
    launches = []
    monkeypatch.setattr(cupy_backend, "_require_gpu", lambda: None)
    monkeypatch.setattr(cupy_backend, "cupy", types.SimpleNamespace(
        cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDevice=lambda: 0))))
    monkeypatch.setattr(cupy_backend, "capacity", lambda device_id: 1024)
    monkeypatch.setattr(planner, "run_scan", lambda *args, **kwargs: launches.append(args))
    return launches


@pytest.mark.parametrize("args,error,message", [
    ((gpu(0), gpu(1), gpu(0, (2, 3)), False, gpu(0)), ValueError, "a is on cuda:1 but x is on cuda:0"),
    ((gpu(0), gpu(0), host((2, 3)), False, gpu(0)), TypeError,
     "h0 is a NumPy array (host memory) but x is on cuda:0"),
    ((gpu(0), gpu(0), gpu(0, (2, 3)), True, gpu(1)), ValueError, "out is on cuda:1 but x is on cuda:0"),
    ((gpu(1), gpu(1), gpu(1, (2, 3)), False, gpu(0)), ValueError,
     "out is on cuda:0 but x is on cuda:1 (cuda:0 is the current device"),
    ((host(), gpu(0), host((2, 3)), False, host()), TypeError, "a is on cuda:0 but x is a NumPy array"),
])
def test_backend_checks_devices_before_any_launch(no_launch, args, error, message):
    with pytest.raises(error) as excinfo:
        cupy_backend.scan(*args)
    assert message in str(excinfo.value)
    assert no_launch == []


@pytest.mark.parametrize("call,error,message", [
    (lambda: linear_scan(gpu(0), gpu(1), backend="cupy"), ValueError, "a is on cuda:1 but x is on cuda:0"),
    (lambda: linear_scan(gpu(0), gpu(0), host((2, 3)), backend="cupy"), TypeError,
     "h0 is a NumPy array (host memory) but x is on cuda:0"),
    (lambda: linear_scan(host(), gpu(0), backend="cupy"), TypeError, "a is on cuda:0 but x is a NumPy array"),
    (lambda: linear_scan_backward(gpu(0), None, gpu(1), gpu(0), backend="cupy"), ValueError,
     "a is on cuda:1 but dh is on cuda:0"),
    (lambda: linear_scan_backward(gpu(0), None, gpu(0), host(), backend="cupy"), TypeError,
     "a is on cuda:0 but h is a NumPy array (host memory)"),
    (lambda: linear_scan_backward(gpu(1), None, gpu(1), gpu(1), host((2, 3)), backend="cupy"), TypeError,
     "h0 is a NumPy array (host memory) but h is on cuda:1"),
    (lambda: linear_scan_backward(gpu(1), None, gpu(1), gpu(1), gpu(0, (2, 3)), backend="cupy"), ValueError,
     "h0 is on cuda:0 but h is on cuda:1"),
])
def test_public_scan_names_the_callers_arguments(no_launch, monkeypatch, call, error, message):
    """Through linear_scan / linear_scan_backward (the backend loaded regardless of the machine): the error names
    the caller's arguments (dh, h, ...; the backend sees only x, a, h0, out) and comes before any allocation."""
    monkeypatch.setattr(scan_registry, "_load", lambda name: cupy_backend)
    with pytest.raises(error) as excinfo:
        call()
    assert message in str(excinfo.value)
    assert no_launch == []
