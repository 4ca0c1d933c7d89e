"""The scan backend registered as "cupy": the CUDA kernels of scan.cu on CuPy arrays.

`scan(x, a, h0, reverse, out)` is the one primitive every scan backend exports (minigriffin.scan); the
backward pass is the shared `linear_scan_backward`, which calls it on time slices. This module does the
CuPy side only: it compiles scan.cu with NVRTC through `cupy.RawModule` on the first call (never at
import), once per device and process (CuPy also caches the binary on disk, ~/.cupy/kernel_cache or
CUPY_CACHE_DIR), and gives `planner.run_scan` a launcher for that device. Which kernels run, with which
sizes, strides and scratch buffers, is the planner's decision, the same code the CPU tests drive through
the host shim (docs/gpu.md). The kernels are compiled with --fmad=false, so each step is the reference's
multiply-then-add, not an FMA.

A RawKernel takes bare pointers, so a host array or another GPU's array would reach the kernel unnoticed.
Every call therefore first checks that a, h0 and out are where x is (`minigriffin.xp.check_same_device`):
all NumPy, or all CuPy on x's GPU; the error names the argument and both places, before anything is
launched. The public linear_scan / linear_scan_backward run the same check on the caller's arrays first,
so that the message names dh, h and the rest rather than the backend's x, a, h0, out.

NumPy inputs (backend="cupy" asked for explicitly on host arrays) are copied to the device and the result
copied back, which is slow; backend="auto" only picks this backend for CuPy arrays.

`unavailable_reason()` says why the backend cannot run here (CuPy unusable, no device, driver too old);
the registry asks it before loading the backend. What has been checked on a GPU and what only on a CPU
(nvcc compiles scan.cu; the host shim runs it): docs/gpu.md, "Status".
"""

import functools

import numpy as np

from minigriffin.scan import BackendUnavailable
from minigriffin.scan.cuda import planner, read_source
from minigriffin.xp import check_same_device

INSTALL = 'pip install "minigriffin[gpu]" (CUDA 12) or "minigriffin[gpu13]" (CUDA 13)'
NVRTC_OPTIONS = ("--fmad=false",)

try:
    import cupy
except Exception as err:  # ImportError, or a CuPy wheel that cannot load its CUDA libraries
    cupy = None
    _IMPORT_ERROR = f"{type(err).__name__}: {err}"
else:
    _IMPORT_ERROR = None

# cudaError_t values that name a cause (CUDA runtime API).
_INSUFFICIENT_DRIVER = 35
_NO_DEVICE = 100


def _cuda_version(v):
    return f"{v // 1000}.{v % 1000 // 10}"


@functools.cache
def unavailable_reason():
    """Why this backend cannot run here (CuPy unusable, no device, driver too old), or None. Asked once."""
    if cupy is None:
        return (f"CuPy is installed but cannot be imported ({_IMPORT_ERROR}); install the wheel that "
                f"matches your CUDA: {INSTALL}")
    runtime = cupy.cuda.runtime
    try:
        count = runtime.getDeviceCount()
    except runtime.CUDARuntimeError as err:
        status = getattr(err, "status", None)
        if status == _INSUFFICIENT_DRIVER:
            return (f"no usable GPU: the NVIDIA driver is missing or too old for this CuPy's CUDA ({err}); "
                    f"install or update the driver, or the CuPy wheel for your driver's CUDA: {INSTALL}")
        if status == _NO_DEVICE:
            return f"no usable GPU: no CUDA device found ({err}); check CUDA_VISIBLE_DEVICES"
        return f"no usable GPU: CUDA failed to start ({err})"
    if count == 0:
        return "no usable GPU: no CUDA device found; check CUDA_VISIBLE_DEVICES"
    driver, built = runtime.driverGetVersion(), runtime.runtimeGetVersion()
    if driver // 1000 < built // 1000:
        return (f"the NVIDIA driver is too old: it supports CUDA {_cuda_version(driver)}, this CuPy needs "
                f"CUDA {_cuda_version(built)}; update the driver or install the CuPy wheel for CUDA "
                f"{driver // 1000}: {INSTALL}")
    return None


def _require_gpu():
    reason = unavailable_reason()
    if reason is not None:
        raise BackendUnavailable(f"scan backend 'cupy' cannot run here: {reason}")


@functools.cache
def _module(device_id):
    """The compiled scan.cu for one device (compiled by NVRTC when the first function is fetched)."""
    return cupy.RawModule(code=read_source(), options=NVRTC_OPTIONS)


@functools.cache
def _function(device_id, name):
    try:
        return _module(device_id).get_function(name)
    except cupy.cuda.driver.CUDADriverError as err:
        if "PTX" in str(err) or "NO_BINARY" in str(err):   # e.g. CUDA_ERROR_UNSUPPORTED_PTX_VERSION
            raise BackendUnavailable(f"scan backend 'cupy' cannot load its kernels: the NVIDIA driver is too "
                                     f"old for the code NVRTC produced ({err}); update the driver or install "
                                     f"the CuPy wheel for your driver's CUDA: {INSTALL}") from err
        raise


@functools.cache
def capacity(device_id):
    """Threads the device keeps resident: SMs x threads per SM (the strategy choice's yardstick)."""
    attrs = cupy.cuda.Device(device_id).attributes
    return attrs["MultiProcessorCount"] * attrs["MaxThreadsPerMultiProcessor"]


def launcher(device_id):
    """launch(name, grid, block, args) for planner.run_scan: runs a scan.cu kernel on device `device_id`."""
    def launch(name, grid, block, args):
        _function(device_id, name)((grid,), (block,), args)
    return launch


def scan(x, a, h0, reverse, out):
    """Write the scan of x with multipliers a, starting from h0, into out (same contract as reference.scan).

    a, h0 and out must be where x is (NumPy arrays, or CuPy arrays on x's GPU): checked before anything runs.
    """
    _require_gpu()
    check_same_device(("x", x), ("a", a), ("out", out), ("h0", h0), current=cupy.cuda.runtime.getDevice())
    if isinstance(x, np.ndarray):        # explicit backend="cupy" on host arrays: round trip through the GPU
        h = cupy.empty(out.shape, dtype=out.dtype)
        scan(*(cupy.asarray(np.ascontiguousarray(arr)) for arr in (x, a, h0)), reverse, h)
        out[...] = h.get()
        return out
    device_id = x.device.id
    with x.device:
        planner.run_scan(x, a, h0, bool(reverse), out, launch=launcher(device_id), capacity=capacity(device_id))
    return out
