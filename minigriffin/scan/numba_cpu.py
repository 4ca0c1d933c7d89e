"""Numba CPU linear scan: sequential over time, parallel over (batch row, channel block).

Each parallel job owns one batch row b and one contiguous block of channels [d0, d1) and walks the whole
sequence, carrying its running state in a small local array (so the loop never reads back what it just
wrote) and writing each step's block of h with one contiguous, vectorised inner loop.

How the work is split was measured, not guessed (docs/benchmarks.md): a job should stream long contiguous
runs of memory, because hardware prefetchers follow a thread walking whole rows far better than one that
reads a short piece of each row and skips the rest. So rows are split into channel blocks only when the
batch alone cannot feed every thread, and never into blocks shorter than MIN_BLOCK_BYTES. With B = 1 and a
wide model the channels are shared between threads; with a narrow one (D = 256 float32 is 1 KiB a row) one
thread walking whole rows was faster on our 2-core test machine than two threads each taking half.

No `fastmath`: it lets LLVM drop NaN/inf semantics and reassociate. This backend does the same
multiply-then-add per step as `reference`, and matches it bit for bit in our tests.
Compilation happens on the first call (never at import) and is cached on disk (`cache=True`;
set NUMBA_CACHE_DIR if the package folder is read-only).
"""

import numba
import numpy as np
from numba import njit, prange

MIN_BLOCK_BYTES = 8192   # shortest run of a row one job streams; shorter blocks measured slower, not faster
TILE_BYTES = 65536       # reverse scans stage this much of each input per tile (4 KiB - 512 KiB tried; 64 KiB was best)


def _scan_body(x, a, h0, out, n_steps, reverse, block, tile):  # pragma: no cover - compiled by Numba
    """out[b, t] = a[b, t] * out[b, t -/+ 1] + x[b, t] for t < n_steps. x, a, out: C-contiguous (B, >=n_steps, D)."""
    B = x.shape[0]
    D = x.shape[2]
    n_blocks = (D + block - 1) // block
    for job in prange(B * n_blocks):
        b = job // n_blocks
        d0 = (job % n_blocks) * block
        d1 = min(D, d0 + block)
        n = d1 - d0
        state = h0[b, d0:d1].copy()                          # (n,) running h for this block
        if not reverse:
            for t in range(n_steps):
                x_row = x[b, t, d0:d1]                       # (n,) contiguous views of this step's block
                a_row = a[b, t, d0:d1]
                out_row = out[b, t, d0:d1]
                for j in range(n):
                    h = a_row[j] * state[j] + x_row[j]
                    state[j] = h
                    out_row[j] = h
        else:
            # Walking memory backwards row by row defeats the prefetchers (measured 3x slower at B=1),
            # so go through time in tiles: copy a tile of rows in ascending order into a local buffer,
            # run the recurrence backwards there, then write the tile out in ascending order.
            x_tile = np.empty((tile, n), dtype=x.dtype)      # (tile, n) inputs, then results in place
            a_tile = np.empty((tile, n), dtype=x.dtype)      # (tile, n)
            t_end = n_steps
            while t_end > 0:
                t_start = max(0, t_end - tile)
                rows = t_end - t_start
                for i in range(rows):
                    x_row = x[b, t_start + i, d0:d1]
                    a_row = a[b, t_start + i, d0:d1]
                    for j in range(n):
                        x_tile[i, j] = x_row[j]
                        a_tile[i, j] = a_row[j]
                for i in range(rows - 1, -1, -1):
                    for j in range(n):
                        h = a_tile[i, j] * state[j] + x_tile[i, j]
                        state[j] = h
                        x_tile[i, j] = h
                for i in range(rows):
                    out_row = out[b, t_start + i, d0:d1]
                    for j in range(n):
                        out_row[j] = x_tile[i, j]
                t_end = t_start


def _multiply_body(p, q, out, n_steps):  # pragma: no cover - compiled by Numba
    """out[b, t] = p[b, t] * q[b, t] for t < n_steps, in parallel over (b, t). All C-contiguous (B, >=n_steps, D)."""
    B = p.shape[0]
    D = p.shape[2]
    for job in prange(B * n_steps):
        b = job // n_steps
        t = job % n_steps
        p_row = p[b, t]
        q_row = q[b, t]
        out_row = out[b, t]
        for j in range(D):
            out_row[j] = p_row[j] * q_row[j]


# Each kernel is compiled twice: multithreaded, and single-threaded for small inputs, where starting the
# thread team costs more than the work (and on a busy machine a parallel region waits for a free core).
_scan_parallel = njit(parallel=True, cache=True, nogil=True)(_scan_body)
_scan_serial = njit(cache=True, nogil=True)(_scan_body)
_multiply_parallel = njit(parallel=True, cache=True, nogil=True)(_multiply_body)
_multiply_serial = njit(cache=True, nogil=True)(_multiply_body)
PARALLEL_MIN_ELEMENTS = 1 << 16   # below this many elements the serial kernel is used


def _block_size(B, D, itemsize):
    """Channels per parallel job (see the module docstring for why blocks are long)."""
    threads = numba.get_num_threads()
    if B >= threads:
        return D                                             # the batch feeds every thread: whole rows
    min_block = max(1, MIN_BLOCK_BYTES // itemsize)
    per_row = max(1, min(-(-threads // B), D // min_block))  # jobs per row: enough for the threads, not shorter
    return -(-D // per_row)                                  # ceil(D / per_row)


def _as_c_rows(arr, name):
    """A C-contiguous (B, T', D) array starting where `arr` starts, for a time-slice view such as a[:, 1:].

    The backward pass hands us views like dh[:, :-1] and a[:, 1:] of C-contiguous (B, T, D) arrays: every
    row is contiguous, only the batch stride is T*D rather than (T-1)*D. Typed as a generic strided array,
    Numba cannot prove the inner loop is contiguous and does not vectorise it, so we re-describe the same
    memory as a C-contiguous array with the parent's row count; the kernel touches only t < n_steps.
    """
    if arr.flags.c_contiguous:
        return arr
    B, T, D = arr.shape
    item = arr.itemsize
    row_stride, step_stride, chan_stride = arr.strides
    if chan_stride != item or step_stride != D * item or row_stride % step_stride or row_stride < T * step_stride:
        raise ValueError(f"numba scan: {name} must be C-contiguous or a time slice of a C-contiguous "
                         f"(B, T, D) array, got strides {arr.strides} for shape {arr.shape}")
    parent_T = row_stride // step_stride
    return np.lib.stride_tricks.as_strided(arr, shape=(B, parent_T, D), strides=arr.strides, writeable=True)


def scan(x, a, h0, reverse, out):
    """Write the scan of x with multipliers a, starting from h0, into out (same contract as reference.scan)."""
    B, T, D = x.shape
    block = _block_size(B, D, x.itemsize)
    tile = max(4, TILE_BYTES // (block * x.itemsize))       # rows per reverse tile
    kernel = _scan_parallel if x.size >= PARALLEL_MIN_ELEMENTS else _scan_serial
    kernel(_as_c_rows(x, "x"), _as_c_rows(a, "a"), np.ascontiguousarray(h0), _as_c_rows(out, "out"),
           T, bool(reverse), block, tile)
    return out


def multiply(p, q, out):
    """out = p * q for (B, T, D) time slices, multithreaded (the backward's da = g * h_prev; NumPy's is serial)."""
    kernel = _multiply_parallel if p.size >= PARALLEL_MIN_ELEMENTS else _multiply_serial
    kernel(_as_c_rows(p, "p"), _as_c_rows(q, "q"), _as_c_rows(out, "out"), p.shape[1])
    return out
