"""Numba CPU linear scan: sequential over time within a job, parallel over batch rows, channel blocks or
chunks of time.

A job walks a stretch of the sequence for one batch row and a contiguous block of channels, carrying its
running state in a small local array (so the loop never reads back what it just wrote) and handling each
step's block with one contiguous, vectorised inner loop. How the work is split into jobs was measured, not
guessed (docs/benchmarks.md), and follows one rule: every thread should stream long contiguous runs of
memory, because hardware prefetchers follow a thread walking whole rows far better than one that reads a
short piece of each row and skips the rest.

1. B >= threads: one job per batch row, whole rows.
2. Otherwise, when rows are wide enough to cut into blocks of at least MIN_BLOCK_BYTES (8 KiB) and those
   blocks feed every thread: one job per (row, channel block).
3. Otherwise (B = 1 and D = 256 float32, say: 1 KiB rows) the channels cannot feed two threads without
   halving every row, which measured *slower* than one thread. There we split **time** instead: each
   thread gets one long contiguous stretch of the sequence, and a chunked scan (three phases, below) stitches
   the stretches together. Two threads streaming separate halves of the arrays measured about 2x the
   bandwidth of one (docs/benchmarks.md), which is what pays for the chunked scan's extra reads; at
   (1, 16384, 256) forward + backward ran 1.25x faster than on one thread.

The chunked scan (case 3), for p parts per row. A stretch of steps maps a state s to A s + X, where A is
the product of its multipliers and X what the stretch produces from a zero state (docs/scan.md section 5).
  phase 1, parallel: part 0 scans the *head* of the sequence from h0, writing h (it knows its starting
    state). The rest is cut into p equal stretches; parts 1..p-1 meanwhile reduce stretches 0..p-2, one
    each, to their (A, X) pairs, reading x and a but writing nothing. The last stretch is not reduced:
    its (A, X) would only give the final state, which its own rescan produces anyway.
  phase 2, serial and tiny: the state entering each stretch, carry_{k+1} = X_k + A_k carry_k.
  phase 3, parallel: part k rescans stretch k from its true entering state, writing h.
The head is shorter than a stretch, sized so that scanning it takes as long as reducing one stretch
(HEAD_WEIGHT). Stretches 0..p-2 are read twice (reduce, rescan); the head and the last stretch once.
(An earlier version reduced the whole rest, the last stretch included, in p(p-1) sub-chunks: at
(1, 16384, 256) dropping that wasted reduction made the forward 8% and the backward 5% faster.)
Phase 3 redoes the exact sequential recurrence, so only the carries differ from the plain loop, by
rounding: the product A_k is formed in another order than the loop applies the same multipliers (the
tests bound this; docs/scan.md).

Reverse scans (the backward's) walk memory backwards, which defeats the prefetchers (measured 3x slower at
B = 1), so they go through time in tiles: touch a tile's rows in ascending order, which pulls them into the
cache, then run the recurrence backwards over the cached tile (see _run_reverse). A reverse *reduction* needs no
tile: the stretch's X is sum_t x_t * (a_t0 ... a_{t-1}), accumulated walking forwards.

Fusing the backward's product. `linear_scan_backward` needs da_t = g_t * h_{t-1}, where g is the gradient
scan's output; g_t is exactly the state that scan carries into its next step. `scan_times_state` computes,
while the scan streams past, prod_t = (state entering step t) * q_t, which saves re-reading g in a
separate pass (8 array passes for forward + backward instead of 9).

No `fastmath`: it lets LLVM drop NaN/inf semantics and reassociate. Within a job every step is the same
multiply-then-add as `reference`; cases 1 and 2 match it bit for bit, case 3 to rounding.
Compilation happens on the first call (never at import) and is cached on disk (`cache=True`;
set NUMBA_CACHE_DIR if the package folder is read-only).
"""

import types

import numba
import numpy as np
from numba import njit, prange

MIN_BLOCK_BYTES = 8192   # shortest run of a row one job streams; shorter blocks measured slower, not faster
TILE_BYTES = 65536       # reverse scans take tiles of this much of each array (32-128 KiB tried; 64 KiB was best)
PARALLEL_MIN_ELEMENTS = 1 << 16   # below this many elements the single-threaded kernels are used
CHUNK_MIN_BYTES = 1 << 18         # time-chunk only when each part gets at least this much of each array
# Cost of scanning a step over reducing one, by (reverse, fused product): measured single-threaded at
# (1, 16384, 256) float32 (thread CPU time, best of 25, three runs: 1.2-1.4, 2.4-2.6, 2.1-2.2, 3.6-3.9).
HEAD_WEIGHT = {(False, False): 1.4, (False, True): 2.6, (True, False): 2.1, (True, True): 3.7}
TIME_PARTS = None        # parts per row for time chunking; None = decide from the thread count (tests set it)

_jit = njit(cache=True, nogil=True)


# ---------------------------------------------------------------------------------------------------------
# Building blocks, each for one batch row b and channels [d0, d1) over times [t0, t1).
# `state` (d1 - d0,) holds the running h and is updated in place. With fuse=True they also write
# prod[b, t] = (state entering step t) * q[b, t]. x, a, out, q, prod: C-contiguous (B, >=t1, D).

@_jit
def _run_forward(x, a, out, q, prod, fuse, b, d0, d1, t0, t1, state):  # pragma: no cover - compiled by Numba
    """out[b, t] = a[b, t] * out[b, t-1] + x[b, t] for t0 <= t < t1, starting from `state`."""
    n = d1 - d0
    for t in range(t0, t1):
        x_row = x[b, t, d0:d1]                           # (n,) contiguous views of this step's block
        a_row = a[b, t, d0:d1]
        out_row = out[b, t, d0:d1]
        if fuse:
            q_row = q[b, t, d0:d1]
            prod_row = prod[b, t, d0:d1]
            for j in range(n):
                prod_row[j] = state[j] * q_row[j]
                h = a_row[j] * state[j] + x_row[j]
                state[j] = h
                out_row[j] = h
        else:
            for j in range(n):
                h = a_row[j] * state[j] + x_row[j]
                state[j] = h
                out_row[j] = h


@_jit
def _run_reverse(x, a, out, q, prod, fuse, b, d0, d1, t0, t1, state, tile):  # pragma: no cover
    """out[b, t] = a[b, t] * out[b, t+1] + x[b, t] for t = t1-1 down to t0, starting from `state`.

    Walking memory backwards row by row defeats the hardware prefetchers (3x slower than forwards at
    B = 1), so time is taken in tiles of `tile` rows, last tile first. Each tile is first *touched* in
    ascending order (one load per 64-byte line of x and a, one store per line of out), which the
    prefetchers stream into the cache; the recurrence then runs backwards over the tile, hitting the cache.
    Touching beat copying the tile into local buffers (1.3-1.4 against 1.5-1.8 floors alone; 2.1 against
    3.1-3.8 with the product). out is touched with a store (of a value overwritten moments later): a load
    from freshly allocated memory maps the kernel's shared zero page, and the real write then faults a
    second time, which made the allocating backward 1.5x slower.
    The fused product goes in a last ascending pass over the tile, where out is still in the cache.
    """
    n = d1 - d0
    line = max(1, 64 // x.itemsize)                     # elements per 64-byte cache line
    entering = np.empty(n, dtype=x.dtype)               # (n,) the state entering the tile's last row
    touched = np.zeros(1, dtype=x.dtype)                # stores the touch loads, so they are not optimised away
    t_end = t1
    while t_end > t0:
        t_start = max(t0, t_end - tile)
        rows = t_end - t_start
        acc = touched[0]
        for t in range(t_start, t_end):
            x_row = x[b, t, d0:d1]
            a_row = a[b, t, d0:d1]
            out_row = out[b, t, d0:d1]
            for j in range(0, n, line):
                acc += x_row[j] + a_row[j]
                out_row[j] = 0                           # a store, not a load: see the docstring
        touched[0] = acc
        for j in range(n):
            entering[j] = state[j]
        for t in range(t_end - 1, t_start - 1, -1):
            x_row = x[b, t, d0:d1]
            a_row = a[b, t, d0:d1]
            out_row = out[b, t, d0:d1]
            for j in range(n):
                h = a_row[j] * state[j] + x_row[j]
                state[j] = h
                out_row[j] = h
        if fuse:                                         # step t was entered with out[t+1]
            for t in range(t_start, t_end):
                q_row = q[b, t, d0:d1]
                prod_row = prod[b, t, d0:d1]
                next_row = out[b, t + 1, d0:d1] if t + 1 < t_end else entering
                for j in range(n):
                    prod_row[j] = next_row[j] * q_row[j]
        t_end = t_start


@_jit
def _reduce(x, a, reverse, b, t0, t1, mult, local):  # pragma: no cover - compiled by Numba
    """The stretch t0 <= t < t1 of row b as the map s -> mult * s + local (all channels); writes nothing else.

    mult = product of a[b, t0:t1]; local = the stretch's result from a zero state. Reverse stretches are
    still read in ascending order: local = sum_t x_t * (a_t0 ... a_{t-1}), with the running product in mult.
    """
    D = x.shape[2]
    for j in range(D):
        mult[j] = 1
        local[j] = 0
    for t in range(t0, t1):
        x_row = x[b, t]
        a_row = a[b, t]
        if reverse:
            for j in range(D):
                local[j] += mult[j] * x_row[j]
                mult[j] *= a_row[j]
        else:
            for j in range(D):
                local[j] = a_row[j] * local[j] + x_row[j]
                mult[j] *= a_row[j]


# ---------------------------------------------------------------------------------------------------------
# Kernels.

def _scan_body(x, a, h0, out, q, prod, fuse, n_steps, reverse, block, tile):  # pragma: no cover
    """Cases 1 and 2: one job per (batch row, channel block), each walking all n_steps steps."""
    B = x.shape[0]
    D = x.shape[2]
    n_blocks = (D + block - 1) // block
    for job in prange(B * n_blocks):
        b = job // n_blocks
        d0 = (job % n_blocks) * block
        d1 = min(D, d0 + block)
        state = h0[b, d0:d1].copy()                      # (n,) running h for this block
        if reverse:
            _run_reverse(x, a, out, q, prod, fuse, b, d0, d1, 0, n_steps, state, tile)
        else:
            _run_forward(x, a, out, q, prod, fuse, b, d0, d1, 0, n_steps, state)


def _chunked_body(x, a, h0, out, q, prod, fuse, n_steps, reverse, parts, head, tile):  # pragma: no cover
    """Case 3: the three-phase chunked scan over time, whole rows, `parts` jobs per batch row.

    Positions are counted in scan order (s = 0 is t = 0 forwards, t = n_steps - 1 in reverse). The head is
    positions [0, head); the rest is cut into `parts` equal stretches, stretch k being positions
    [bounds[k], bounds[k+1]). Part k scans stretch k in phase 3; only stretches 0..parts-2 are reduced
    in phase 1 (by parts 1..parts-1, one each), because the last one's (A, X) would only give the final
    state, which its own rescan produces anyway.
    """
    B = x.shape[0]
    D = x.shape[2]
    rest = n_steps - head
    bounds = np.empty(parts + 1, dtype=np.int64)        # (parts+1,) stretch k: positions [bounds[k], bounds[k+1])
    for k in range(parts + 1):
        bounds[k] = head + (rest * k) // parts
    mults = np.empty((B, parts - 1, D), dtype=x.dtype)      # (B, parts-1, D) A_k: product of a over stretch k
    locals_ = np.empty((B, parts - 1, D), dtype=x.dtype)    # (B, parts-1, D) X_k: stretch k's result from zero
    carries = np.empty((B, parts, D), dtype=x.dtype)        # (B, parts, D) state entering stretch k

    # Phase 1: part 0 scans the head from h0; part k >= 1 reduces stretch k - 1.
    for job in prange(B * parts):
        b = job // parts
        part = job % parts
        if part == 0:
            state = h0[b].copy()                         # (D,)
            if reverse:
                _run_reverse(x, a, out, q, prod, fuse, b, 0, D, n_steps - head, n_steps, state, tile)
            else:
                _run_forward(x, a, out, q, prod, fuse, b, 0, D, 0, head, state)
            carries[b, 0] = state
        else:
            k = part - 1
            s0 = bounds[k]
            s1 = bounds[k + 1]
            t0, t1 = (n_steps - s1, n_steps - s0) if reverse else (s0, s1)
            _reduce(x, a, reverse, b, t0, t1, mults[b, k], locals_[b, k])

    # Phase 2: carry_{k+1} = X_k + A_k carry_k. A zero carry is passed through untouched, so that a product
    # A_k that overflowed to inf (|a| > 1 over a long stretch) cannot turn a zero state into inf * 0 = NaN.
    for b in range(B):
        for k in range(parts - 1):
            for j in range(D):
                c = carries[b, k, j]
                carries[b, k + 1, j] = locals_[b, k, j] + mults[b, k, j] * c if c != 0 else locals_[b, k, j]

    # Phase 3: part k rescans stretch k from its true entering state.
    for job in prange(B * parts):
        b = job // parts
        part = job % parts
        s0 = bounds[part]
        s1 = bounds[part + 1]
        state = carries[b, part].copy()                  # (D,)
        if reverse:
            _run_reverse(x, a, out, q, prod, fuse, b, 0, D, n_steps - s1, n_steps - s0, state, tile)
        else:
            _run_forward(x, a, out, q, prod, fuse, b, 0, D, s0, s1, state)


def _variant(body, suffix, **options):
    """njit(body) under its own name, so that each compiled variant gets its own on-disk cache entry.

    Numba names a cache entry after the Python function (module, qualified name, line) and the argument
    types, not the compile options. Two dispatchers of one function, one with parallel=True and one
    without, therefore share an entry, and whichever compiles first is loaded by the other: we measured
    the "parallel" kernel running on one thread (its calling thread's CPU time equal to the wall time)
    after the tests had compiled the serial one. A copy of the function with a distinct __qualname__
    gets its own entry.
    """
    clone = types.FunctionType(body.__code__, body.__globals__, body.__name__ + suffix, body.__defaults__,
                               body.__closure__)
    clone.__qualname__ = body.__qualname__ + suffix
    clone.__doc__ = body.__doc__
    return njit(cache=True, nogil=True, **options)(clone)


# Each kernel is compiled twice: multithreaded, and single-threaded for small inputs, where starting the
# thread team costs more than the work (and on a busy machine a parallel region waits for a free core).
_scan_parallel = _variant(_scan_body, "_parallel", parallel=True)
_scan_serial = _variant(_scan_body, "_serial")
_chunked_parallel = _variant(_chunked_body, "_parallel", parallel=True)
_chunked_serial = _variant(_chunked_body, "_serial")


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
    # One Numba thread (e.g. inside a data-parallel worker, minigriffin/parallel.py) runs the serial build:
    # two Python threads must never launch parallel regions at once (the workqueue layer forbids it).
    parallel = x.size >= PARALLEL_MIN_ELEMENTS and threads > 1
    block = _block_size(B, D, x.itemsize, threads)
    parts = _time_parts(B, T, D, x.itemsize, threads, block, parallel)
    args = (_as_c_rows(x, "x"), _as_c_rows(a, "a"), np.ascontiguousarray(h0), _as_c_rows(out, "out"),
            _as_c_rows(q, "q"), _as_c_rows(prod, "prod"), fuse, T, bool(reverse))
    if parts > 1:
        tile = max(4, TILE_BYTES // (D * x.itemsize))      # rows per reverse tile
        kernel = _chunked_parallel if parallel else _chunked_serial
        kernel(*args, parts, _head_steps(T, parts, reverse, fuse), tile)
    else:
        tile = max(4, TILE_BYTES // (block * x.itemsize))
        kernel = _scan_parallel if parallel else _scan_serial
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
