"""The Numba kernels of the CPU linear scan; minigriffin/scan/numba_cpu.py decides which one runs, on what.

Every kernel walks a stretch of time for one batch row and a block of channels, carrying its running state in
a small local array (so the loop never reads back what it just wrote) and handling each step's block with one
contiguous, vectorised inner loop:

  scan_body      cases 1 and 2 of numba_cpu: one job per (batch row, channel block), each walking all steps.
  chunked_body   case 3: the chunked scan over time (docs/scan.md section 5), for p parts per row. A stretch of
                 steps maps a state s to A s + X, where A is the product of its multipliers and X what the
                 stretch produces from a zero state.
    phase 1, parallel: part 0 scans the *head* of the sequence from h0, writing h (it knows its starting
      state). The rest is cut into p equal stretches; parts 1..p-1 meanwhile reduce stretches 0..p-2, one
      each, to their (A, X) pairs, reading x and a but writing nothing. The last stretch is not reduced:
      its (A, X) would only give the final state, which its own rescan produces anyway.
    phase 2, serial and tiny: the state entering each stretch, carry_{k+1} = X_k + A_k carry_k.
    phase 3, parallel: part k rescans stretch k from its true entering state, writing h.
  Stretches 0..p-2 are read twice (reduce, rescan); the head and the last stretch once. Phase 3 redoes the
  exact sequential recurrence, so only the carries differ from the plain loop, by rounding: the product A_k
  is formed in another order than the loop applies the same multipliers (the tests bound this).

Reverse scans (the backward's) would walk memory backwards, which defeats the hardware prefetchers, so they
go through time in tiles: touch a tile's rows in ascending order, which pulls them into the cache, then run
the recurrence backwards over the cached tile (_run_reverse). A reverse *reduction* needs no tile: the
stretch's X is sum_t x_t * (a_t0 ... a_{t-1}), accumulated walking forwards.

With fuse=True a kernel also writes prod_t = (state entering step t) * q_t as the scan streams past: the
backward's da = g * h_prev without a separate pass over g (numba_cpu.scan_times_state).

No `fastmath`: it lets LLVM drop NaN/inf semantics and reassociate. Within a job every step is the same
multiply-then-add as `reference`. Each kernel is compiled twice, multithreaded and single-threaded
(`variant`), on the first call (never at import), and cached on disk (`cache=True`; set NUMBA_CACHE_DIR if
the package folder is read-only).
"""

import types

import numpy as np
from numba import njit, prange

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

    Walking memory backwards row by row defeats the hardware prefetchers, so time is taken in tiles of
    `tile` rows, last tile first. Each tile is first *touched* in ascending order (one load per 64-byte line
    of x and a, one store per line of out), which the prefetchers stream into the cache; the recurrence then
    runs backwards over the tile, hitting the cache (faster than copying the tile into local buffers:
    docs/scan.md). out is touched with a store (of a value overwritten moments later): a load from freshly
    allocated memory maps the kernel's shared zero page, and the real write would then fault a second time.
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

def scan_body(x, a, h0, out, q, prod, fuse, n_steps, reverse, block, tile):  # pragma: no cover
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


def chunked_body(x, a, h0, out, q, prod, fuse, n_steps, reverse, parts, head, tile):  # pragma: no cover
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


def variant(body, suffix, **options):
    """njit(body) under its own name, so that each compiled variant gets its own on-disk cache entry.

    Numba names a cache entry after the Python function (module, qualified name, line) and the argument
    types, not the compile options. Two dispatchers of one function, one with parallel=True and one
    without, would therefore share an entry, and whichever compiled first would be loaded by the other: the
    "parallel" kernel could run on one thread (docs/benchmarks.md, "A cache bug"). A copy of the function
    with a distinct __qualname__ gets its own entry. Also used by minigriffin/fast/fused.py.
    """
    clone = types.FunctionType(body.__code__, body.__globals__, body.__name__ + suffix, body.__defaults__,
                               body.__closure__)
    clone.__qualname__ = body.__qualname__ + suffix
    clone.__doc__ = body.__doc__
    return njit(cache=True, nogil=True, **options)(clone)


# Each kernel is compiled twice: multithreaded, and single-threaded for small inputs, where starting the
# thread team costs more than the work (and on a busy machine a parallel region waits for a free core).
scan_parallel = variant(scan_body, "_parallel", parallel=True)
scan_serial = variant(scan_body, "_serial")
chunked_parallel = variant(chunked_body, "_parallel", parallel=True)
chunked_serial = variant(chunked_body, "_serial")
