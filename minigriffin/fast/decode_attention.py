"""Decode kernels of an attention residual block (one token per row), compiled by Numba.

attention_block_rows: RMSNorm, q/k/v projections and RoPE, writing the step's key and value straight into the
cache slot reserved for them (kvcache.kv_reserve); one pass over the keys for the scaled, masked logits,
minus their max, exp; one pass over the values for the sums and o = p V; proj_final, residual, RMSNorm,
gated MLP, residual. A batch of one with a long context runs the middle part as attention_core_split, over
runs of keys in Numba threads.
"""

import numba
import numpy as np
from numba import njit, prange

from minigriffin.fast.decode_math import ATTN_SCALE, ZERO, dot, exp, exp_in_place, linear, matvec, mlp_residual, rmsnorm

@njit(cache=True, nogil=True, error_model="numpy")
def attention_in_rows(r0, r1, x, sin, cos, tscale, wq_t, wk_t, wv_t, cs, q_out, k_out, v_out):  # pragma: no cover
    """RMSNorm, q/k/v projections (no biases) and RoPE for rows [r0, r1). sin, cos: (B, R/2) in the model
    dtype (rope.rope_forward's; R = 0, shape (B, 0), for a NoPE model: nothing is rotated); writes
    q_out: (B, H, Dh), k_out, v_out: (B, Dh)."""
    H, Dh = q_out.shape[1], q_out.shape[2]
    half = sin.shape[1]                                                  # R/2: RoPE rotates the first R = Dh/2
    normed = rmsnorm(x, r0, r1, tscale, cs)
    nb = r1 - r0
    qk = np.empty((nb, (H + 1) * Dh), x.dtype)                           # H query heads, then the key head
    v = np.empty((nb, Dh), x.dtype)
    matvec(normed, wq_t, qk, 0)
    matvec(normed, wk_t, qk, H * Dh)
    matvec(normed, wv_t, v, 0)
    rot = np.empty(Dh, x.dtype)
    for b in range(nb):
        r = r0 + b
        for n in range(H + 1):
            base = n * Dh
            for j in range(half):
                x1 = qk[b, base + j]
                x2 = qk[b, base + half + j]
                rot[j] = x1 * cos[r, j] - x2 * sin[r, j]
                rot[half + j] = x2 * cos[r, j] + x1 * sin[r, j]
            for j in range(2 * half, Dh):
                rot[j] = qk[b, base + j]
            if n < H:
                for j in range(Dh):
                    q_out[r, n, j] = rot[j]
            else:
                for j in range(Dh):
                    k_out[r, j] = rot[j]
        for j in range(Dh):
            v_out[r, j] = v[b, j]


@njit(cache=True, nogil=True, error_model="numpy")
def scaled_logits(r0, r1, q, keys, doc, start, k0, k1, query_doc, cs, logits, m):  # pragma: no cover
    """Scaled, masked logits for rows [r0, r1) over the cache entries k0 <= s < k1 (start <= k0).

    q: (B, H, Dh); keys: (B, C, Dh) and doc: (B, C) the cache buffers (C-contiguous, so that each key row is
    a contiguous vector: a view of the entries [start, stop) would skip the rest of each buffer row, and
    Numba cannot vectorise a strided array's inner loop). Writes
    logits[b - r0, s - start, h] = scale * k_s.q_h, -inf where masked, and m[b - r0, h] the max over the
    visible keys (-inf where none is). Key s is visible iff doc[b, s] == query_doc[b] (every cached key is
    inside the window by construction; the query's own key always is). In the reference a masked logit is
    MIN_LOGITS_VALUE, whose exp(MIN - max) is exactly 0; exp(-inf - max) is exactly 0 too. One pass over the
    keys, which beats OpenBLAS's (M, Dh) x (Dh, H) product here (docs/benchmarks.md, "Decode kernels")."""
    H = q.shape[1]
    neg_inf = -np.inf
    top = np.empty(H, logits.dtype)      # the running max, local: m's rows can share a cache line with
    for b in range(r0, r1):              # another thread's (attention_core_split), and writing them per key
        i = b - r0                       # made the two threads fight over it
        qd = query_doc[b]
        for h in range(H):
            top[h] = neg_inf
        for s in range(k0, k1):
            if doc[b, s] == qd:
                for h in range(H):
                    val = dot(keys[b, s], q[b, h], cs[ZERO]) * cs[ATTN_SCALE]
                    logits[i, s - start, h] = val
                    if val > top[h]:
                        top[h] = val
            else:
                for h in range(H):
                    logits[i, s - start, h] = neg_inf
        for h in range(H):
            m[i, h] = top[h]


@njit(cache=True, nogil=True, error_model="numpy")
def subtract_max(logits, m, s0, s1, cs):  # pragma: no cover - compiled by Numba
    """logits[i, s, h] -= m[i, h] for s0 <= s < s1; a row and head with no visible key (m = -inf) is left
    as it is (all -inf, and exp(-inf) = 0), where subtracting would give NaN."""
    H = logits.shape[2]
    shift = np.empty(H, logits.dtype)
    for i in range(logits.shape[0]):
        for h in range(H):
            shift[h] = m[i, h] if m[i, h] != -np.inf else cs[ZERO]
        for s in range(s0, s1):
            for h in range(H):
                logits[i, s, h] = logits[i, s, h] - shift[h]


@njit(cache=True, nogil=True, error_model="numpy")
def attend_rows(r0, r1, p, values, start, k0, k1, cs, total, o, normalise):  # pragma: no cover
    """Softmax sums and weighted values for rows [r0, r1) over the cache entries k0 <= s < k1. p: (rows,
    stop - start, H) the unnormalised exp(logit - max), 0 where masked, indexed by s - start; values:
    (B, C, Dh) the cache buffer (as scaled_logits). Writes total[b - r0, h] = sum_s p[s, h] and o[b]
    (o: (B, H * Dh)) = sum_s p[s, h] v[s], divided by total[h] at the end if `normalise` (the softmax;
    the reference divides each weight first, so the two agree to rounding). One pass over the values."""
    H = p.shape[2]
    Dh = values.shape[2]
    sums = np.empty(H, p.dtype)          # local, as scaled_logits' max: total's rows may share a cache line
    for b in range(r0, r1):              # with another thread's
        i = b - r0
        for h in range(H):
            sums[h] = cs[ZERO]
        for s in range(k0, k1):
            for h in range(H):
                sums[h] += p[i, s - start, h]
        for h in range(H):
            total[i, h] = sums[h]
        # o[h] = sum_s p[s, h] v[s] is a matrix-vector product with the keys as its inputs and the heads as
        # its rows: matvec's order (s = k0, k0 + 1, ..., four keys per pass over o[h]), each value row used
        # by all H heads while it is in L1. A masked key adds 0 * v = 0, exactly as in the reference's p @ V.
        matvec(p[i, k0 - start:k1 - start].T, values[b, k0:k1], o[b].reshape((H, Dh)), 0)
        if normalise:
            for h in range(H):
                for j in range(Dh):
                    o[b, h * Dh + j] = o[b, h * Dh + j] / total[i, h]


# A batch of one at long contexts: the keys cut into n_parts runs, one per thread (Numba parallel regions).
# One global max is taken between the two regions, so every run's exp(l - max) is already the softmax
# numerator and the runs' sums simply add (no flash-decoding rescale).

@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def split_logits(q, keys, doc, start, stop, query_doc, cs, logits, maxes, m):  # pragma: no cover
    """Region 1: each run's scaled logits and max (maxes: (n_parts, B, H)), then m: (B, H) the max over all
    runs, subtracted from every logit. logits: (B, stop - start, H)."""
    n_parts = maxes.shape[0]
    B = q.shape[0]
    M = stop - start
    for j in prange(n_parts):
        scaled_logits(0, B, q, keys, doc, start, start + j * M // n_parts, start + (j + 1) * M // n_parts,
                       query_doc, cs, logits, maxes[j])
    for b in range(B):
        for h in range(m.shape[1]):
            top = maxes[0, b, h]
            for j in range(1, n_parts):
                top = max(top, maxes[j, b, h])
            m[b, h] = top
    for j in prange(n_parts):
        subtract_max(logits, m, j * M // n_parts, (j + 1) * M // n_parts, cs)


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def split_attend(p, values, start, stop, cs, totals, sums, o):  # pragma: no cover
    """Region 2: each run's sums (totals: (n_parts, B, H), sums: (n_parts, B, H * Dh)), then
    o = sum_j sums_j / sum_j totals_j."""
    n_parts, B, H = totals.shape
    Dh = values.shape[2]
    M = stop - start
    for j in prange(n_parts):
        attend_rows(0, B, p, values, start, start + j * M // n_parts, start + (j + 1) * M // n_parts, cs,
                     totals[j], sums[j], False)
    for b in range(B):
        for h in range(H):
            denominator = totals[0, b, h]
            for j in range(1, n_parts):
                denominator += totals[j, b, h]
            for k in range(h * Dh, (h + 1) * Dh):
                numerator = sums[0, b, k]
                for j in range(1, n_parts):
                    numerator += sums[j, b, k]
                o[b, k] = numerator / denominator


@njit(cache=True, nogil=True, error_model="numpy")
def attention_out_rows(r0, r1, x, o, wf_t, bf, cscale, w_up, b_up, w_down_t, b_down, cs, x_out):  # pragma: no cover
    """proj_final, residual, RMSNorm, gated MLP, residual for rows [r0, r1). o: (B, D) attention output."""
    nb = r1 - r0
    D = x.shape[1]
    o_rows = np.empty((nb, D), x.dtype)
    for b in range(nb):
        for i in range(D):
            o_rows[b, i] = o[r0 + b, i]
    mixed = linear(o_rows, wf_t, bf)
    for b in range(nb):
        for i in range(D):
            mixed[b, i] = x[r0 + b, i] + mixed[b, i]
    mlp_residual(mixed, cscale, w_up, b_up, w_down_t, b_down, cs, x_out, r0)


# ----------------------------------------------------------------------------------------------------- head
@njit(cache=True, nogil=True, error_model="numpy")
def attention_core_rows(r0, r1, q, keys, values, doc, start, stop, query_doc, cs, o):  # pragma: no cover
    """Softmax attention of q: (B, H, Dh) over the cache entries [start, stop) of keys, values: (B, C, Dh) and
    their document ids doc: (B, C) (the C-contiguous cache buffers, each read once), for batch rows [r0, r1),
    writing o[r0:r1] of o: (B, H * Dh): the logits pass, minus the max, exp, the values pass. Rows run
    independently, so row groups can run in threads (run_rows); compiled, releasing the GIL; a decode step
    calls it inside attention_block_rows. The exponentials are exp's, vectorised: a libm exp per element
    in a Numba loop cost ~20 ns each, a third of a long-context step, which is why they were NumPy's np.exp
    in place between the kernels until exp existed (as fast as np.exp here: 106 against 107 us for
    8 x 1k x 4)."""
    H = q.shape[1]
    m = np.empty((r1 - r0, H), q.dtype)                                    # (rows, H) max over visible keys
    total = np.empty((r1 - r0, H), q.dtype)                                # (rows, H) softmax denominators
    logits = np.empty((r1 - r0, stop - start, H), q.dtype)                 # (rows, M, H)
    scaled_logits(r0, r1, q, keys, doc, start, start, stop, query_doc, cs, logits, m)
    subtract_max(logits, m, 0, stop - start, cs)
    exp_in_place(logits, cs)                                              # unnormalised p, 0 where masked
    attend_rows(r0, r1, logits, values, start, start, stop, cs, total, o, True)


@njit(cache=True, nogil=True, error_model="numpy")
def attention_block_rows(r0, r1, x, sin, cos, tscale, wq_t, wk_t, wv_t, cs, q, k_out, v_out,
                          keys, values, doc, start, stop, query_doc, o,
                          wf_t, bf, cscale, w_up, b_up, w_down_t, b_down, x_out):  # pragma: no cover
    """A whole attention residual block for rows [r0, r1) in one call: attention_in_rows,
    attention_core_rows, attention_out_rows. One call instead of five per block and row group: with two
    row groups, each Python-level call waits for the GIL while the other thread holds it."""
    attention_in_rows(r0, r1, x, sin, cos, tscale, wq_t, wk_t, wv_t, cs, q, k_out, v_out)
    attention_core_rows(r0, r1, q, keys, values, doc, start, stop, query_doc, cs, o)
    attention_out_rows(r0, r1, x, o, wf_t, bf, cscale, w_up, b_up, w_down_t, b_down, cs, x_out)


def attention_core_split(q, keys, values, doc, start, stop, query_doc, cs, o, n_parts):
    """attention_core_rows for every row, with the entries [start, stop) cut into n_parts runs taken by
    n_parts Numba threads: how a batch of one uses a second core at long contexts. Two parallel regions, one
    for the logits (and the max over all runs, which every run then subtracts) and one for the runs' sums
    sum_s p_s and sum_s p_s v_s, which add up because every run used the same max; the exp on this
    thread between them. Call it from one Python thread at a time (Numba's workqueue layer forbids concurrent
    parallel regions); decode_step does, for B = 1 only. Numba's OpenMP threads spin for a while
    after each region, so other busy threads of the same process lose that core meanwhile: one more reason
    the default is one thread."""
    B, H, Dh = q.shape
    maxes = np.empty((n_parts, B, H), q.dtype)                             # (n_parts, B, H) each run's max
    m = np.empty((B, H), q.dtype)                                          # (B, H) the max over all runs
    totals = np.empty((n_parts, B, H), q.dtype)                            # (n_parts, B, H)
    sums = np.empty((n_parts, B, H * Dh), q.dtype)                         # (n_parts, B, H * Dh)
    logits = np.empty((B, stop - start, H), q.dtype)                       # (B, M, H)
    split_logits(q, keys, doc, start, stop, query_doc, cs, logits, maxes, m)
    exp_in_place(logits, cs)
    split_attend(logits, values, start, stop, cs, totals, sums, o)
