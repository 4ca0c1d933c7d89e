"""The CUDA scan kernels (minigriffin/scan/cuda/scan.cu), checked without a GPU.

1. nvcc compiles the source to PTX for sm_80 and sm_90, warnings as errors, so a syntax or type error
   fails CI (skipped, visibly, where nvcc is absent).
2. g++ compiles the same source for the CPU through minigriffin/scan/cuda/host_shim.h, which runs every
   thread of a launch in turn; the Hypothesis properties of tests/test_scan_backends.py then compare both
   strategies (one thread per channel; chunk-local scan + carry scan + fix-up) with the reference scan,
   forward and backward, through the public linear_scan / linear_scan_backward and the launch logic the
   CuPy backend uses (minigriffin.scan.cuda.planner.run_scan). What the shim cannot show is listed in
   docs/gpu.md.
"""

import ctypes
import re
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minigriffin.scan as scan_registry
from minigriffin.scan import cuda, linear_scan, linear_scan_backward
from minigriffin.scan.cuda import planner
from minigriffin.scan.cuda.cupy_backend import NVRTC_OPTIONS
from minigriffin.testing import RTOL, assert_within, backward_error_scales, forward_error_scale, scan_cases

NVCC = shutil.which("nvcc")
GXX = shutil.which("g++")
EXAMPLES = settings(max_examples=40)   # per test and strategy; the whole file runs in seconds
SHIM_CAPACITY = 64                     # a small "device", so that strategy "auto" chunks Hypothesis-sized scans
STRATEGIES = ("channels", "chunked", "auto")
# Threads per block: small blocks give launches of many blocks (Hypothesis shapes have at most 132 channels),
# and sizes that divide nothing leave partial last blocks.
BLOCKS = st.sampled_from([1, 7, 32, planner.BLOCK])


# --- 1. The source compiles for the GPU -------------------------------------------------------------------

@pytest.mark.skipif(NVCC is None, reason="nvcc not found on PATH: the CUDA source was not compiled for the GPU")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_source_compiles_to_ptx(arch, tmp_path):
    ptx = tmp_path / f"scan_{arch}.ptx"
    result = subprocess.run([NVCC, "-ptx", f"-arch={arch}", *NVRTC_OPTIONS, "-Werror", "all-warnings",
                             str(cuda.SCAN_SOURCE), "-o", str(ptx)], capture_output=True, text=True)
    assert result.returncode == 0, f"nvcc failed for {arch}:\n{result.stderr}"
    entries = set(re.findall(r"\.entry\s+(\w+)\(", ptx.read_text()))
    assert entries == set(cuda.KERNEL_NAMES), f"PTX entry points {sorted(entries)}"


def test_source_includes_nothing():
    """NVRTC (what CuPy compiles with) has no standard headers, and nvcc silently includes cuda_runtime.h,
    so the nvcc test above would not catch a dependency on a header. The source must need none."""
    assert not re.search(r"^\s*#\s*include", cuda.read_source(), re.MULTILINE)


# --- 2. The host shim: the same source on the CPU ----------------------------------------------------------

class HostShim:
    """ctypes front end of the host-shim library: launch(name, grid, block, args) like a CuPy RawKernel."""

    _CODES = {np.dtype(np.float32): "f", np.dtype(np.float64): "d"}

    def __init__(self, path):
        self.lib = ctypes.CDLL(str(path))
        for name in cuda.KERNEL_NAMES:
            getattr(self.lib, f"host_{name}").restype = ctypes.c_int
            getattr(self.lib, f"host_signature_{name}").restype = ctypes.c_char_p

    def set_order(self, order):
        """Visit each launch's threads ascending (0), descending (1) or in a scrambled order (2)."""
        self.lib.host_shim_set_order(ctypes.c_int(order))

    def signature(self, name):
        return getattr(self.lib, f"host_signature_{name}")().decode()

    def launch(self, name, grid, block, args):
        codes, holders = [], []
        for i, arg in enumerate(args):
            if isinstance(arg, np.ndarray) and arg.dtype in self._CODES:
                codes.append(self._CODES[arg.dtype])
                holders.append(ctypes.c_void_p(arg.ctypes.data))   # the view's first element, as CuPy passes it
            elif type(arg) is np.int32:
                codes.append("i")
                holders.append(ctypes.c_int32(int(arg)))
            elif type(arg) is np.int64:
                codes.append("q")
                holders.append(ctypes.c_int64(int(arg)))
            else:   # CuPy would pass a Python int as a 64-bit value without complaint
                raise TypeError(f"{name} argument {i}: {type(arg).__name__} is not an exact kernel argument type "
                                f"(float32/float64 array, np.int32, np.int64)")
        params = (ctypes.c_void_p * len(holders))(*(ctypes.addressof(h) for h in holders))
        rc = getattr(self.lib, f"host_{name}")(ctypes.c_uint(grid), ctypes.c_uint(block), params,
                                               "".join(codes).encode())
        if rc != 0:
            raise TypeError(f"{name}: arguments {''.join(codes)!r} do not match the kernel's signature "
                            f"{self.signature(name)!r}")


@pytest.fixture(scope="session")
def shim(tmp_path_factory):
    """scan.cu + host_shim.h built with g++ into a temporary shared library."""
    if GXX is None:
        pytest.skip("g++ not found on PATH: the CUDA kernels were not run on the CPU")
    folder = tmp_path_factory.mktemp("host_shim")
    driver = folder / "driver.cpp"
    driver.write_text('#include "host_shim.h"\n#include "scan.cu"\n'
                      + "".join(f"HOST_SHIM_EXPORT({name})\n" for name in cuda.KERNEL_NAMES))
    library = folder / "libscan_host.so"
    # -ffp-contract=off: no fused multiply-add, like the --fmad=false the GPU build uses.
    result = subprocess.run([GXX, "-std=c++17", "-O2", "-ffp-contract=off", "-Wall", "-Wextra", "-Werror",
                             "-fPIC", "-shared", f"-I{cuda.KERNEL_DIR}", str(driver), "-o", str(library)],
                            capture_output=True, text=True)
    assert result.returncode == 0, f"g++ failed to build the host shim:\n{result.stderr}"
    host = HostShim(library)
    host.set_order(0)
    return host


def shim_scan(shim, x, a, h0, reverse, out, strategy, chunk_len=None, block=planner.BLOCK):
    """run_scan through the shim: the CuPy backend's launch logic, with the CPU standing in for the GPU."""
    _, plan = planner.run_scan(x, a, h0, reverse, out, launch=shim.launch, capacity=SHIM_CAPACITY,
                               strategy=strategy, chunk_len=chunk_len, block=block)
    return plan


@pytest.fixture(scope="module")
def shim_backends(shim):
    """Registry entries "shim-channels", "shim-chunked", "shim-auto": fake backend modules whose `scan`
    runs the kernels through the shim. Each records the plans it ran; `chunk_len` forces L for "chunked",
    `block` sets the threads per block."""
    modules = {}
    with pytest.MonkeyPatch.context() as mp:
        for strategy in STRATEGIES:
            module = types.ModuleType(f"_minigriffin_test_shim_{strategy}")
            module.chunk_len, module.block, module.plans = None, planner.BLOCK, []

            def scan(x, a, h0, reverse, out, module=module, strategy=strategy):
                module.plans.append(shim_scan(shim, x, a, h0, reverse, out, strategy, module.chunk_len,
                                              module.block))
                return out

            module.scan = scan
            mp.setitem(sys.modules, module.__name__, module)
            mp.setitem(scan_registry._REGISTRY, f"shim-{strategy}", (module.__name__, "numpy", "(test backend)"))
            modules[strategy] = module
        yield modules


def use(shim_backends, strategy, chunk_len, block):
    module = shim_backends[strategy]
    module.chunk_len, module.block, module.plans = chunk_len, block, []
    return f"shim-{strategy}", module


@pytest.mark.parametrize("strategy", STRATEGIES)
@EXAMPLES
@given(case=scan_cases(), chunk_len=st.integers(1, 40), block=BLOCKS)
def test_forward_equals_reference(shim_backends, strategy, case, chunk_len, block):
    name, module = use(shim_backends, strategy, chunk_len, block)
    h_ref, last_ref = linear_scan(case.x, case.a, case.h0, reverse=case.reverse, backend="reference")
    h, last = linear_scan(case.x, case.a, case.h0, reverse=case.reverse, backend=name)
    (plan,) = module.plans
    T = case.x.shape[1]
    if strategy == "chunked":
        assert plan == planner.Plan("chunked", min(chunk_len, T), -(-T // min(chunk_len, T)))
    if plan.strategy == "channels":
        # One thread walks each channel with the reference's multiply-then-add (no FMA): bit for bit.
        np.testing.assert_array_equal(h, h_ref)
    scale, last_scale = forward_error_scale(case)
    rtol = RTOL[case.x.dtype]
    assert_within(h, h_ref, scale, rtol, f"{strategy} h ({case.x.dtype}, {plan})")
    assert_within(last, last_ref, last_scale, rtol, f"{strategy} h_last ({case.x.dtype}, {plan})")


@pytest.mark.parametrize("strategy", STRATEGIES)
@EXAMPLES
@given(case=scan_cases(), chunk_len=st.integers(1, 40), block=BLOCKS, with_dh_last=st.booleans())
def test_backward_equals_reference(shim_backends, strategy, case, chunk_len, block, with_dh_last):
    """The generic backward hands the kernels time-slice views (dh[:, :-1], a[:, 1:] into g[:, :-1])."""
    name, module = use(shim_backends, strategy, chunk_len, block)
    rng = np.random.default_rng(case.x.size)
    dh = rng.standard_normal(case.x.shape).astype(case.x.dtype)                       # (B, T, D)
    dh_last = rng.standard_normal(case.x[:, 0].shape).astype(case.x.dtype) if with_dh_last else None
    h_ref, _ = linear_scan(case.x, case.a, case.h0, reverse=case.reverse, backend="reference")
    ref = linear_scan_backward(dh, dh_last, case.a, h_ref, case.h0, reverse=case.reverse, backend="reference")
    h, _ = linear_scan(case.x, case.a, case.h0, reverse=case.reverse, backend=name)
    got = linear_scan_backward(dh, dh_last, case.a, h, case.h0, reverse=case.reverse, backend=name)
    scales = backward_error_scales(case, dh, dh_last)
    rtol = RTOL[case.x.dtype]
    for what, g, r, s in zip(("dx", "da", "dh0"), got, ref, scales):
        if r is None:
            assert g is None, f"{strategy} returned {what} although h0 was None"
            continue
        assert_within(g, r, s, 2 * rtol if what == "da" else rtol, f"{strategy} {what} ({case.x.dtype})")


def view_index(layout):
    """Where `embedded` puts the values inside its parent."""
    return (slice(None), slice(1, -1), slice(None, None, 2) if layout == "channel_stride" else slice(None))


def embedded(arr, fill, layout):
    """A view of `arr`'s values inside a larger parent filled with `fill`, and the parent.

    "time_slice": parent (B, T+2, D), view [:, 1:-1] (what the backward passes: read and written in place);
    "channel_stride": parent (B, T+2, 2D), view [:, 1:-1, ::2] (not addressable: copied by run_scan).
    """
    B, T, D = arr.shape
    parent = np.full((B, T + 2, 2 * D if layout == "channel_stride" else D), fill, dtype=arr.dtype)
    view = parent[view_index(layout)]
    view[...] = arr
    return view, parent


@pytest.mark.parametrize("layout", ["time_slice", "channel_stride"])
@pytest.mark.parametrize("strategy", ["channels", "chunked"])
@EXAMPLES
@given(case=scan_cases(max_T=120), chunk_len=st.integers(1, 20), block=BLOCKS)
def test_views_are_read_and_written_in_place(shim, strategy, layout, case, chunk_len, block):
    """Inputs padded with NaN (a read outside the view poisons the result); out padded with a sentinel
    (a write outside the view changes it); h0 a strided row of a (B, 3, D) array."""
    B, T, D = case.x.shape
    x, _ = embedded(case.x, np.nan, layout)
    a, _ = embedded(case.a, np.nan, layout)
    h0_values = np.zeros((B, D), case.x.dtype) if case.h0 is None else case.h0
    h0 = np.full((B, 3, D), np.nan, dtype=case.x.dtype)[:, 1]
    h0[...] = h0_values
    out, out_parent = embedded(np.zeros_like(case.x), 12345.0, layout)
    outside = out_parent.copy()
    outside[view_index(layout)] = 0
    shim_scan(shim, x, a, h0, case.reverse, out, strategy, chunk_len, block)
    h_ref, _ = linear_scan(case.x, case.a, case.h0, reverse=case.reverse, backend="reference")
    scale, _ = forward_error_scale(case)
    assert_within(out, h_ref, scale, RTOL[case.x.dtype], f"{strategy} {layout}")
    written = out_parent.copy()
    written[view_index(layout)] = 0
    np.testing.assert_array_equal(written, outside, err_msg="the kernels wrote outside `out`")


@pytest.mark.parametrize("strategy,chunk_len", [("channels", None), ("chunked", 7), ("chunked", 1)])
@pytest.mark.parametrize("reverse", [False, True])
def test_threads_are_independent(shim, strategy, chunk_len, reverse):
    """Every thread of a launch may run in any order on a GPU: visiting them ascending, descending and
    scrambled must give bit-identical results (a dependence between threads would show here)."""
    rng = np.random.default_rng(0)
    B, T, D = 3, 50, 11
    x = rng.standard_normal((B, T, D))
    a = rng.uniform(0, 1, (B, T, D))
    h0 = rng.standard_normal((B, D))
    results = []
    try:
        for order in (0, 1, 2):
            shim.set_order(order)
            out = np.empty_like(x)
            shim_scan(shim, x, a, h0, reverse, out, strategy, chunk_len, block=32)   # several blocks
            results.append(out)
    finally:
        shim.set_order(0)
    for out in results[1:]:
        np.testing.assert_array_equal(out, results[0])
    h_ref, _ = linear_scan(x, a, h0, reverse=reverse, backend="reference")
    np.testing.assert_allclose(results[0], h_ref, rtol=1e-12, atol=1e-12)


def test_launch_arguments_are_checked(shim):
    """The shim refuses what CuPy would silently misread: a Python int, a wrong count, a wrong dtype."""
    x = np.zeros((1, 2, 3), np.float32)
    h0 = np.zeros((1, 3), np.float32)
    good = [x, x, h0, x.copy(), np.int32(1), np.int32(2), np.int32(3), np.int32(0),
            *(np.int64(s) for s in (6, 3, 6, 3, 6, 3, 3))]
    shim.launch("scan_channels_f32", 1, 256, good)
    assert shim.signature("scan_channels_f32") == "ffffiiiiqqqqqqq"
    with pytest.raises(TypeError, match="not an exact kernel argument type"):
        shim.launch("scan_channels_f32", 1, 256, good[:4] + [1] + good[5:])
    with pytest.raises(TypeError, match="do not match the kernel's signature"):
        shim.launch("scan_channels_f32", 1, 256, good[:-1])
    with pytest.raises(TypeError, match="do not match the kernel's signature"):
        shim.launch("scan_channels_f64", 1, 256, good)
    with pytest.raises(TypeError, match="do not match the kernel's signature"):
        shim.launch("scan_channels_f32", 1, 256, good[:4] + [np.int64(1)] + good[5:])


# --- 3. Strategy choice --------------------------------------------------------------------------------

def test_choose_plan():
    capacity = 132 * 2048                                  # an H100/H200: SMs x resident threads per SM
    assert planner.choose_plan(128, 4096, 4096, capacity).strategy == "channels"      # channels fill it
    assert planner.choose_plan(8, 4096, 4096, capacity) == planner.Plan("chunked", 456, 9)    # 32k channels
    assert planner.choose_plan(1, 100, 16, capacity).strategy == "channels"           # too short to split
    plan = planner.choose_plan(1, 100_000, 16, capacity)                               # few channels, long
    assert plan.strategy == "chunked" and plan.chunk_len >= planner.MIN_CHUNK
    assert plan.n_chunks == -(-100_000 // plan.chunk_len) and 16 * plan.n_chunks <= 2 * capacity
    assert planner.choose_plan(2, 10, 3, capacity, "chunked", chunk_len=4) == planner.Plan("chunked", 4, 3)
    assert planner.choose_plan(2, 10, 3, capacity, "chunked", chunk_len=99) == planner.Plan("chunked", 10, 1)
    assert planner.choose_plan(2, 1, 3, capacity, "chunked", chunk_len=5) == planner.Plan("chunked", 1, 1)
    with pytest.raises(ValueError, match="unknown strategy"):
        planner.choose_plan(1, 1, 1, capacity, "warp")
