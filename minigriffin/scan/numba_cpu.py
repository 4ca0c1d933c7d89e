"""Numba CPU linear scan: sequential over time within a job, parallel over batch rows, channel blocks or
chunks of time. The kernels are in numba_kernels.py; this module decides how the work is split into jobs.

The split follows one rule: every thread should stream long contiguous runs of memory, because hardware
prefetchers follow a thread walking whole rows far better than one that reads a short piece of each row and
skips the rest (the measurements behind each threshold: docs/benchmarks.md and docs/scan.md).

1. B >= threads: one job per batch row, whole rows.
2. Otherwise, when rows are wide enough to cut into blocks of at least MIN_BLOCK_BYTES (8 KiB) and those
   blocks feed every thread: one job per (row, channel block).
3. Otherwise (B = 1 and D = 256 float32, say: 1 KiB rows) the channels cannot feed two threads without
   halving every row, which is slower than one thread. There we split **time** instead: each thread gets
   one long contiguous stretch of the sequence, and a chunked scan (numba_kernels.chunked_body) stitches
   the stretches together. Two threads streaming separate halves of the arrays get nearly twice the
   bandwidth of one, which pays for the chunked scan's extra reads. Its head (the stretch scanned while
   the other parts reduce theirs) is sized by HEAD_WEIGHT so that phase 1 ends for every part at once.

Cases 1 and 2 match `reference` bit for bit, case 3 to rounding (docs/scan.md section 5). Complex arrays run
through the same kernels; there even cases 1 and 2 match only to rounding, because NumPy's complex product
rounds differently from the textbook one Numba forms (docs/backprop.md section 10).
`scan_times_state` is the backend interface's optional fused hook: the scan also forms the backward's
da = g * h_prev as it streams past, so forward + backward moves 8 arrays' worth of memory instead of 9.
"""

import numba
import numpy as np

from minigriffin.scan.numba_kernels import chunked_parallel, chunked_serial, scan_parallel, scan_serial

MIN_BLOCK_BYTES = 8192   # shortest run of a row one job streams; shorter blocks are slower, not faster
TILE_BYTES = 65536       # reverse scans take tiles of this much of each array (the best of 32-128 KiB)
PARALLEL_MIN_ELEMENTS = 1 << 16   # below this many elements the single-threaded kernels are used
CHUNK_MIN_BYTES = 1 << 18         # time-chunk only when each part gets at least this much of each array
# Cost of scanning a step over reducing one, by (reverse, fused product), measured single-threaded
# (docs/benchmarks.md).
HEAD_WEIGHT = {(False, False): 1.4, (False, True): 2.6, (True, False): 2.1, (True, True): 3.7}
TIME_PARTS = None        # parts per row for time chunking; None = decide from the thread count (tests set it)


def _block_size(B, D, itemsize, threads):
    """Channels per parallel job in cases 1 and 2 (module docstring)."""
    if B >= threads:
        return D                                             # the batch feeds every thread: whole rows
    min_block = max(1, MIN_BLOCK_BYTES // itemsize)
    per_row = max(1, min(-(-threads // B), D // min_block))  # jobs per row: enough for the threads, not shorter
    return -(-D // per_row)                                  # ceil(D / per_row)


def _time_parts(B, T, D, itemsize, threads, block, parallel):
    """Parts per row for the chunked scan (case 3), or 1 to walk whole sequences (cases 1 and 2)."""
    if TIME_PARTS is not None:
        return TIME_PARTS
    if not parallel:
        return 1
    n_blocks = -(-D // block)
    if B * n_blocks >= threads:
        return 1                                             # batch rows or channel blocks feed the threads
    parts = -(-threads // B)
    if parts < 2 or T * D * itemsize < parts * CHUNK_MIN_BYTES:
        return 1                                             # too short to be worth three phases
    return parts


def _head_steps(n_steps, parts, reverse, fuse):
    """Length of the head (scanned in phase 1 while the others reduce), balancing phase 1's work.

    Scanning a step costs w = HEAD_WEIGHT times reducing one (a reduction reads two arrays; a scan reads
    two and writes one, the fused product adds two more, and reverse tiles add their own overhead). The
    rest is `parts` stretches of L steps and phase 1 reduces one of them per part, so the head of h steps
    takes as long as that reduction when w h = L, with n = h + parts L: h = n / (1 + w parts).
    """
    w = HEAD_WEIGHT[bool(reverse), bool(fuse)]
    return int(n_steps / (1.0 + w * parts))


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


def _launch(x, a, h0, reverse, out, q, prod, fuse):
    B, T, D = x.shape
    threads = numba.get_num_threads()
    # One Numba thread (e.g. inside a data-parallel worker, minigriffin/fast/parallel.py) runs the serial build:
    # two Python threads must never launch parallel regions at once (the workqueue layer forbids it).
    parallel = x.size >= PARALLEL_MIN_ELEMENTS and threads > 1
    block = _block_size(B, D, x.itemsize, threads)
    parts = _time_parts(B, T, D, x.itemsize, threads, block, parallel)
    args = (_as_c_rows(x, "x"), _as_c_rows(a, "a"), np.ascontiguousarray(h0), _as_c_rows(out, "out"),
            _as_c_rows(q, "q"), _as_c_rows(prod, "prod"), fuse, T, bool(reverse))
    if parts > 1:
        tile = max(4, TILE_BYTES // (D * x.itemsize))      # rows per reverse tile
        kernel = chunked_parallel if parallel else chunked_serial
        kernel(*args, parts, _head_steps(T, parts, reverse, fuse), tile)
    else:
        tile = max(4, TILE_BYTES // (block * x.itemsize))
        kernel = scan_parallel if parallel else scan_serial
        kernel(*args, block, tile)
    return out


def scan(x, a, h0, reverse, out):
    """Write the scan of x with multipliers a, starting from h0, into out (same contract as reference.scan)."""
    unused = out[:1, :1, :1]                                 # q and prod are not touched when fuse=False
    return _launch(x, a, h0, reverse, out, unused, unused, False)


def scan_times_state(x, a, h0, reverse, out, q, prod):
    """scan(x, a, h0, reverse, out), and also prod[:, t] = (state entering step t) * q[:, t] on the way.

    The state entering step t is out[:, t-1] (out[:, t+1] in reverse; h0 for the first step). This is the
    optional fused hook of the backend interface: `linear_scan_backward` uses it for da = g * h_prev.
    """
    return _launch(x, a, h0, reverse, out, q, prod, True)
