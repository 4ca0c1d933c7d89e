"""The attention proper with a fused masked softmax (Numba), and O(T) memory for long sequences.

attention.attention_core_forward / attention_core_backward (the definition) score each query block against the
keys it can see with one matmul, build a (B, Tq, Tk) mask, take the softmax in about eight NumPy passes over
the (B, Tq, H, Tk) block, and keep every block's probabilities for the backward: B*H*T*(Q + W) numbers, which
for global attention is O(T^2) (6 layers at T = 8,192 and batch 1 hold 3 GB in float32). The versions here
run the same matmuls (OpenBLAS), and around them:

  forward, per query block:   one Numba pass: logits * scale - rowmax where key s is visible to query t
                              (same document, s <= t, t - s <= W, from where each document starts: no mask
                              array), MIN_LOGITS_VALUE elsewhere; NumPy's exp in place (NumPy's is vectorised,
                              a Numba exp is a scalar libm call here: no SVML); row sums l; o = (e v) / l.
                              Kept: lse = rowmax + log(l), (B, T, H), and, while a call's exponentials e fit in
                              KEEP_MAX_BYTES, e itself and 1 / l (as the definition keeps its probabilities).
  backward, per query block:  p = e / l from what was kept, or else recomputed as flash attention does (Dao et
                              al. 2022): the logits again (one more matmul), one Numba pass logits * scale - lse
                              where visible, NumPy's exp; dp = do v^T; one Numba pass: dlogits =
                              p (dp - sum_s dp p) scale.

So a block costs 3 elementwise passes each way instead of ~10, and past KEEP_MAX_BYTES memory stays O(T)
beyond the block being worked on. Results equal the definition's up to rounding (tests/test_fast_attention.py:
float64 to 1e-12, float32 to 2e-5 of each output's scale), with packed documents, windows and carried keys.
Document ids must never decrease along a row (each document one run of keys; document_ids makes them so):
applies_forward sends anything else to the definition. Registered in minigriffin/fast/__init__.py for NumPy
float arrays; MINIGRIFFIN_REFERENCE=1 runs the definition (set it before a forward, not between a forward and
its backward: the backward must get what its own forward saved). Kernels follow fast/fused.py's rules: no
fastmath, constants in the array's dtype, a serial and a multithreaded build (a data-parallel worker runs the
serial one).
"""

import functools
from typing import NamedTuple

import numpy as np

from minigriffin.attention import MIN_LOGITS_VALUE, query_blocks
from minigriffin.fast.fused import PARALLEL_MIN_ELEMENTS


class SoftmaxStats(NamedTuple):
    """What the fast forward keeps for the backward, in place of the probabilities."""
    lse: np.ndarray           # (B, T, H): log of each row's softmax denominator, including its max (log-sum-exp)
    first: np.ndarray         # (B, N+T): where each key's document starts, to rebuild the mask in the backward
    kept: tuple = None        # per query block (B, Tq*H, Tk): exp(logits - rowmax), when small enough to keep
    inv_total: object = None  # (B, T, H): 1 / each row's sum of kept, when kept


KEEP_MAX_BYTES = 64 << 20   # keep a call's exponentials (as the definition keeps its probabilities) up to this,
                            # recompute them in the backward above it (docs/benchmarks.md: sequence length)
prange = range   # numba.prange once the kernels are built (_kernels)


@functools.cache
def _kernels():
    global prange
    import numba
    prange = numba.prange                            # must be set before the first compilation
    from minigriffin.scan.numba_kernels import variant   # a renamed copy per build: its own on-disk cache entry
    bodies = {"shift": _shift_body, "dlogits": _dlogits_body}
    return {name: (variant(body, "_serial"), variant(body, "_parallel", parallel=True))
            for name, body in bodies.items()}


def _pick(name, size):
    import numba
    serial, parallel = _kernels()[name]
    return parallel if size >= PARALLEL_MIN_ELEMENTS and numba.get_num_threads() > 1 else serial


def _shift_body(logits, first, shift, q0, k0, heads, window, scale, min_logit, given):  # pragma: no cover
    """In place, logits (B, R, Tk) with row r = query t = q0 + r // heads, head r % heads, key k0 + j:
    logits * scale - shift where the key is visible, min_logit elsewhere. Query t sees the keys
    [max(first[b, t], t - window), t] (first: where t's document starts; documents are contiguous).
    given: shift (B, R) holds the subtrahend (backward: lse); else it receives each row's max (forward)."""
    B, R, Tk = logits.shape
    for br in prange(B * R):
        b = br // R
        r = br - b * R
        t = q0 + r // heads
        lo = max(k0, t - window, first[b, t]) - k0        # visible keys: [lo, hi)
        hi = t + 1 - k0
        row = logits[b, r]
        if given:
            m = shift[b, r]
        else:                                             # max of row[lo:hi] * scale = (max of row[lo:hi]) * scale
            m0 = m1 = m2 = m3 = row[hi - 1]               # four independent maxima: no one dependency chain
            j = lo
            while j + 4 <= hi:
                m0 = row[j] if row[j] > m0 else m0
                m1 = row[j + 1] if row[j + 1] > m1 else m1
                m2 = row[j + 2] if row[j + 2] > m2 else m2
                m3 = row[j + 3] if row[j + 3] > m3 else m3
                j += 4
            for jj in range(j, hi):
                m0 = row[jj] if row[jj] > m0 else m0
            m0 = m1 if m1 > m0 else m0
            m2 = m3 if m3 > m2 else m2
            m = (m2 if m2 > m0 else m0) * scale
            shift[b, r] = m
        for j in range(lo):
            row[j] = min_logit
        for j in range(lo, hi):
            row[j] = row[j] * scale - m
        for j in range(hi, Tk):
            row[j] = min_logit


def _dlogits_body(e, dp, inv, factor):  # pragma: no cover - compiled by Numba
    """In place into dp (B, R, Tk): p (dp - sum_s dp p) factor, the softmax's backward times the logits' scale,
    with p = e * inv: e the probabilities (inv = 1, factor = scale) or the unnormalised exponentials
    (inv = 1 / row sum, factor = scale * inv). sum_s dp p is taken here, as the definition takes it, so that a
    query that sees one key gets exactly 0 (dp - dp), not a rounding error (o . do would give that)."""
    B, R, Tk = e.shape
    for br in prange(B * R):
        b = br // R
        r = br - b * R
        row, d = e[b, r], dp[b, r]
        s0 = s1 = s2 = s3 = row[0] * 0                    # four partial sums: no one dependency chain
        j = 0
        while j + 4 <= Tk:
            s0 += row[j] * d[j]
            s1 += row[j + 1] * d[j + 1]
            s2 += row[j + 2] * d[j + 2]
            s3 += row[j + 3] * d[j + 3]
            j += 4
        for jj in range(j, Tk):
            s0 += row[jj] * d[jj]
        delta = ((s0 + s1) + (s2 + s3)) * inv[b, r]
        f = factor[b, r]
        for j in range(Tk):
            d[j] = row[j] * (d[j] - delta) * f


def attention_core_forward(q, k, v, doc, *, window, block_size, carried=0):
    """attention.attention_core_forward for NumPy float arrays: (o (B, T, H, Dh), SoftmaxStats)."""
    B, T, H, Dh = q.shape
    N, dtype = carried, q.dtype.type
    scale, min_logit = dtype(Dh ** -0.5), dtype(MIN_LOGITS_VALUE)
    first = document_starts(doc)                                           # (B, N+T)
    o = np.empty_like(q)                                                   # (B, T, H, Dh)
    lse = np.empty((B, T, H), q.dtype)                                     # (B, T, H)
    blocks = query_blocks(T, window, block_size, N)
    keep = B * H * sum((q1 - q0) * (q1 - k0) for q0, q1, k0 in blocks) * q.itemsize <= KEEP_MAX_BYTES
    kept, inv_total = [], (np.empty((B, T, H), q.dtype) if keep else None)
    for q0, q1, k0 in blocks:
        Tq, Tk = q1 - q0, q1 - k0
        logits = q[:, q0 - N:q1 - N].reshape(B, Tq * H, Dh) @ np.swapaxes(k[:, k0:q1], 1, 2)   # (B, Tq*H, Tk)
        rowmax = np.empty((B, Tq * H), q.dtype)
        _pick("shift", logits.size)(logits, first, rowmax, q0, k0, H, window, scale, min_logit, False)
        np.exp(logits, out=logits)                                         # 0 where masked
        total = logits.sum(axis=-1)                                        # (B, Tq*H)
        o_blk = logits @ v[:, k0:q1]                                       # (B, Tq*H, Dh)
        o_blk /= total[:, :, None]
        o[:, q0 - N:q1 - N] = o_blk.reshape(B, Tq, H, Dh)
        lse[:, q0 - N:q1 - N] = (rowmax + np.log(total)).reshape(B, Tq, H)
        if keep:
            kept.append(logits)
            inv_total[:, q0 - N:q1 - N] = (1 / total).reshape(B, Tq, H)
    return o, SoftmaxStats(lse, first, tuple(kept) if keep else None, inv_total)


def attention_core_backward(do, q, k, v, saved, *, window, block_size, carried=0):
    """attention.attention_core_backward for what attention_core_forward (above) saved: dq (B, T, H, Dh),
    dk, dv (B, N+T, Dh)."""
    B, T, H, Dh = q.shape
    N, dtype = carried, q.dtype.type
    scale, min_logit = dtype(Dh ** -0.5), dtype(MIN_LOGITS_VALUE)
    lse, first, kept, inv_total = saved
    dq = np.empty_like(q)                                                  # (B, T, H, Dh)
    dk = np.zeros_like(k)                                                  # (B, N+T, Dh) summed over blocks
    dv = np.zeros_like(v)                                                  # (B, N+T, Dh) summed over blocks
    for i, (q0, q1, k0) in enumerate(query_blocks(T, window, block_size, N)):
        Tq, Tk = q1 - q0, q1 - k0
        q_blk = q[:, q0 - N:q1 - N].reshape(B, Tq * H, Dh)                 # (B, Tq*H, Dh)
        do_blk = do[:, q0 - N:q1 - N].reshape(B, Tq * H, Dh)               # (B, Tq*H, Dh)
        if kept is None:                                                   # recompute the probabilities
            e = q_blk @ np.swapaxes(k[:, k0:q1], 1, 2)                     # (B, Tq*H, Tk) the logits again
            shift = np.ascontiguousarray(lse[:, q0 - N:q1 - N].reshape(B, Tq * H))
            _pick("shift", e.size)(e, first, shift, q0, k0, H, window, scale, min_logit, True)
            np.exp(e, out=e)                                               # p, 0 where masked
            inv = np.ones((B, Tq * H), q.dtype)
            factor, do_p = np.full((B, Tq * H), scale), do_blk
        else:                                                              # p = e / total
            e, inv = kept[i], np.ascontiguousarray(inv_total[:, q0 - N:q1 - N].reshape(B, Tq * H))
            factor, do_p = inv * scale, do_blk * inv[:, :, None]
        dv[:, k0:q1] += np.swapaxes(e, 1, 2) @ do_p                        # (B, Tk, Dh) p^T do
        dlogits = do_blk @ np.swapaxes(v[:, k0:q1], 1, 2)                  # (B, Tq*H, Tk) dp, then in place:
        _pick("dlogits", e.size)(e, dlogits, inv, factor)                  # p (dp - sum_s dp p) scale
        dq[:, q0 - N:q1 - N] = (dlogits @ k[:, k0:q1]).reshape(B, Tq, H, Dh)
        dk[:, k0:q1] += np.swapaxes(dlogits, 1, 2) @ q_blk                 # (B, Tk, Dh)
    return dq, dk, dv


def document_starts(doc):
    """(B, S) document ids, each document one contiguous run -> (B, S) index of the first key of each one's run."""
    B, S = doc.shape
    new = np.ones((B, S), bool)
    new[:, 1:] = doc[:, 1:] != doc[:, :-1]
    return np.maximum.accumulate(np.where(new, np.arange(S), 0), axis=1)


def applies_forward(q, k, v, doc, **options):
    """NumPy float arrays (CuPy arrays run the definition) and document ids that never decrease along a row,
    so that each document is one run of keys (document_ids makes them so, continued across chunks)."""
    return (all(type(a) is np.ndarray for a in (q, k, v, doc)) and q.dtype in (np.float32, np.float64)
            and bool(np.all(doc[:, 1:] >= doc[:, :-1])))


def applies_backward(do, q, k, v, saved, **options):
    """Whatever the fast forward saved (the definition's per-block probabilities go to the definition)."""
    return isinstance(saved, SoftmaxStats)
