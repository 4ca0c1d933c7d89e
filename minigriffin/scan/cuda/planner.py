"""The launch planner of the GPU scan: one backend call becomes kernel launches of scan.cu.

`run_scan(x, a, h0, reverse, out, launch, capacity)` decides which strategy runs (`choose_plan`: one
thread per channel, or chunks of time in three kernels; docs/gpu.md), with which sizes and strides in
elements, and which scratch buffers, and hands each launch to a `launch(name, grid, block, args)`
callable. On the GPU that callable runs a CuPy RawModule function (cupy_backend.py); in the tests it
is the host shim, which runs the same scan.cu on the CPU (tests/test_cuda_kernels.py). Because the
planner imports no CuPy, the CPU tests check exactly what would reach the GPU: argument types, the
strides of time-slice views, chunk sizes that do not divide T.

Layouts: inputs with unit stride on D are read in place, whatever their batch and time strides (the
backward's views such as a[:, 1:]); anything else is copied to a contiguous array first, because a
kernel sees only a data pointer. Every scalar argument is an exact np.int32 or np.int64.
"""

from typing import NamedTuple

import numpy as np

from minigriffin.xp import array_namespace

BLOCK = 256       # threads per block (one-dimensional grids); run_scan takes another for tests
# Strategy threshold, a first guess not tuned on a GPU (docs/gpu.md):
MIN_CHUNK = 64    # the chunked strategy never makes chunks shorter than this many steps
_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64",
           np.dtype(np.complex64): "c64", np.dtype(np.complex128): "c128"}   # scan.cu's scan_complex<R>
_INT32_MAX = 2**31 - 1


class Plan(NamedTuple):
    strategy: str     # "channels": one thread per (b, d); "chunked": three kernels over (b, chunk, d)
    chunk_len: int    # L, steps per chunk (T for "channels")
    n_chunks: int     # C = ceil(T / L) (1 for "channels")


def choose_plan(B, T, D, capacity, strategy="auto", chunk_len=None):
    """Pick the strategy for a (B, T, D) scan on a device that keeps `capacity` threads resident.

    "auto": one thread per channel when the B * D channels alone fill the device or the sequence is too
    short to split; otherwise cut time into enough chunks (of at least MIN_CHUNK steps) to fill it.
    "channels" / "chunked" force a strategy (tests); chunk_len forces L for "chunked".
    """
    channels = B * D
    if strategy == "channels":
        return Plan("channels", T, 1)
    if strategy == "chunked":
        if chunk_len is None:
            n = max(1, min(T, -(-capacity // channels)))
            chunk_len = -(-T // n)
        chunk_len = max(1, min(int(chunk_len), T))
        return Plan("chunked", chunk_len, -(-T // chunk_len))
    if strategy != "auto":
        raise ValueError(f"unknown strategy {strategy!r}; choose 'auto', 'channels' or 'chunked'")
    n = min(T // MIN_CHUNK, -(-capacity // channels))    # chunks worth having
    if channels >= capacity or n < 2:
        return Plan("channels", T, 1)
    chunk_len = -(-T // n)
    return Plan("chunked", chunk_len, -(-T // chunk_len))


def _element_strides(arr):
    """Strides in elements, or None if some stride is not a whole number of elements."""
    item = arr.itemsize
    if any(s % item for s in arr.strides):
        return None
    return tuple(s // item for s in arr.strides)


def _readable(arr, xp):
    """(array, its (batch, time) strides in elements) for an input the kernels read.

    Any (B, T, D) layout with unit stride on D is read in place (time slices like a[:, 1:] among them);
    anything else is copied to a C-contiguous array first (RawKernel would ignore its strides).
    """
    strides = _element_strides(arr)
    if strides is None or (arr.shape[2] > 1 and strides[2] != 1):
        arr = xp.ascontiguousarray(arr)
        strides = _element_strides(arr)
    return arr, strides[0], strides[1]


def _writable_in_place(arr):
    """(batch, time) strides in elements if the kernels can write `arr` in place, else None.

    Needs unit stride on D and positive strides that keep every (b, t, d) at its own address: each
    time step past the previous one's D elements, each batch row past the previous row's last step.
    Time slices of C-contiguous arrays, such as g[:, :-1], pass.
    """
    B, T, D = arr.shape
    strides = _element_strides(arr)
    if strides is None:
        return None
    sb, st, sd = strides
    if D > 1 and sd != 1:
        return None
    if T > 1 and st < D:
        return None
    if B > 1 and sb < (T - 1) * (st if T > 1 else 0) + D:
        return None
    return sb, st


def _grid(n_threads, block):
    grid = -(-n_threads // block)
    if grid > _INT32_MAX:
        raise ValueError(f"scan too large for one launch: {n_threads} threads")
    return grid


def run_scan(x, a, h0, reverse, out, launch, capacity, strategy="auto", chunk_len=None, block=BLOCK):
    """Write the scan of x with multipliers a, starting from h0, into out, through `launch`.

    x, a, out: (B, T, D) of one dtype (real or complex), views with any strides allowed (those the kernels cannot
    address are copied; an out they cannot write in place gets a scratch buffer copied back at the end);
    h0: (B, D). launch(name, grid, block, args) runs kernel `name` of scan.cu on a one-dimensional grid;
    args holds arrays of x's kind and exact np.int32 / np.int64 scalars, in the kernel's parameter order.
    capacity: threads the device keeps resident (SMs x threads per SM), for choose_plan.
    strategy, chunk_len: see choose_plan; block: threads per block (tests use small ones for many blocks).
    Returns (out, plan).
    """
    xp = array_namespace(x, a, h0, out)
    suffix = _SUFFIX.get(np.dtype(x.dtype))
    if suffix is None:
        raise TypeError(f"the GPU scan supports float32, float64, complex64 and complex128, got {x.dtype}")
    B, T, D = x.shape
    for name, arr, shape in (("a", a, (B, T, D)), ("out", out, (B, T, D)), ("h0", h0, (B, D))):
        if arr.dtype != x.dtype or tuple(arr.shape) != shape:
            raise ValueError(f"{name} must be {x.dtype} with shape {shape}, got {arr.dtype} {tuple(arr.shape)}")
    for n, what in ((B, "B"), (T, "T"), (D, "D")):
        if n > _INT32_MAX:
            raise ValueError(f"{what}={n} does not fit the kernels' int32 sizes")
    plan = choose_plan(B, T, D, capacity, strategy, chunk_len)
    if x.size == 0:
        return out, plan                                   # nothing to launch (a grid of 0 is an error)

    x, x_sb, x_st = _readable(x, xp)
    a, a_sb, a_st = _readable(a, xp)
    h0, h0_sb, _ = _readable(h0[:, None, :], xp)          # (B, 1, D): the same rules, one step
    h0 = h0[:, 0, :]
    in_place = _writable_in_place(out)
    target = out if in_place is not None else xp.empty((B, T, D), dtype=x.dtype)
    o_sb, o_st = in_place if in_place is not None else (T * D, D)

    i32, i64 = np.int32, np.int64
    sizes = (i32(B), i32(T), i32(D))
    strides = (i64(x_sb), i64(x_st), i64(a_sb), i64(a_st), i64(o_sb), i64(o_st), i64(h0_sb))
    if plan.strategy == "channels":
        launch(f"scan_channels_{suffix}", _grid(B * D, block), block,
               (x, a, h0, target, *sizes, i32(reverse), *strides))
    else:
        L, C = plan.chunk_len, plan.n_chunks
        work = xp.empty((3, B, C, D), dtype=x.dtype)         # chunk products, chunk end states, carries
        chunk_prod, chunk_end, carry = work[0], work[1], work[2]
        chunking = (i32(L), i32(C), i32(reverse))
        launch(f"scan_chunk_local_{suffix}", _grid(B * C * D, block), block,
               (x, a, h0, target, chunk_prod, chunk_end, *sizes, *chunking, *strides))
        launch(f"scan_chunk_carry_{suffix}", _grid(B * D, block), block,
               (chunk_prod, chunk_end, carry, i32(B), i32(D), i32(C), i32(reverse)))
        launch(f"scan_chunk_fixup_{suffix}", _grid(B * C * D, block), block,
               (a, carry, target, *sizes, *chunking, i64(a_sb), i64(a_st), i64(o_sb), i64(o_st)))
    if target is not out:
        out[...] = target
    return out, plan
