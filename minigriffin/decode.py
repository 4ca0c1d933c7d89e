"""The fused single-token decode step (T = 1) on NumPy arrays: a few Numba kernels per residual block.

`minigriffin.inference.forward_chunk` runs these kernels (decode_step) when it is given one token
per row and NumPy arrays; chunks of T > 1 and CuPy arrays take the plain array code there, which stays the reference. The
computation is the same, operation for operation, as that reference (and so as `model.model_forward`):

    recurrent block   one kernel: RMSNorm, linear_y + GeLU, linear_x, the K Conv1D taps with their document
                      mask, the RG-LRU gates and state update, linear_out, residual, RMSNorm, gated MLP, residual
    attention block   one kernel (_attention_block_rows): RMSNorm, q/k/v projections and RoPE, writing the
                      step's key and value straight into the slot reserved for them in the preallocated
                      cache (kvcache.kv_reserve); one pass over the keys for the scaled, masked logits,
                      minus their max, exp; one pass over the values for the sums and o = p V;
                      proj_final, residual, RMSNorm, gated MLP, residual. (A batch of one with long
                      contexts runs the attention in between as attention_core_split instead.)
    head              RMSNorm, tied projection, soft-cap

Why it is faster (docs/benchmarks.md, "Decode-step cost"): the plain path spends a decode step in hundreds of
NumPy calls on (B, 1, 256) arrays, a few microseconds of dispatch each, and in OpenBLAS calls on a single row.
Here a block is one compiled call. Matrix-vector products are written as y += x_i * W^T[i, :] over
the rows of the transposed weight, a loop LLVM vectorises without `fastmath` (the dot-product form would need
reassociation); with B > 1 the rows of the batch share each pass over a weight row. The transposed copies are
made once per state lineage (`DecodePlan`, carried by the ModelState), so params must not be modified in
place while a state made from them is still being continued (training and then decoding with a fresh
`init_state` is fine). Rows of the batch are independent in a decode step, so with B > 1 and
MINIGRIFFIN_DECODE_THREADS > 1 the batch is split into one group of rows per Python thread, each taking its
rows through every block (the kernels release the GIL); every attention block's cache slot is reserved
before they start, so the threads meet once, at the end of the step (run_rows, _groups). A batch of one
instead splits attention over at least 2 x SPLIT_MIN_KEYS keys between Numba threads
(attention_core_split). The default is one thread.

No `fastmath`, except "reassoc" and "contract" in one function, `_dot` (the logits' dot products, which LLVM
vectorises only when it may reorder the sum; NaN and inf semantics are kept). Every other multiply and add
is the reference's, in the model dtype (constants are cast to it, as NumPy does with Python scalars). Sums
run in another order than OpenBLAS's, and exp is `_exp` (within 2 ulp), so float64 results agree with the
plain path to ~1e-15 relative, not bit for bit; tests/test_decode.py checks token-by-token decoding against
model_forward at rtol 1e-12 (float64) and 1e-5 (float32). Kernels use `error_model="numpy"` (a division by
zero gives inf or NaN, as in NumPy): Numba's default tests every divisor, and that branch, like a libm exp
call, keeps LLVM from vectorising a loop (docs/conventions.md).
"""

import os
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import numba
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from minigriffin.attention import MIN_LOGITS_VALUE
from minigriffin.config import RECURRENT
from minigriffin.head import embedding_forward, embedding_scale
from minigriffin.kvcache import kv_reserve
from minigriffin.layers import GELU_C as _GELU_C, RMSNORM_EPS   # decode.GELU_C is an index into cs
from minigriffin.rglru import C as RGLRU_C
from minigriffin.rglru import softplus
from minigriffin.rope import MAX_WAVELENGTH
from minigriffin.state import ModelState, RecurrentState
from minigriffin.xp import array_namespace

# Indices into the constants vector `cs` (one per dtype): scalars typed as the model dtype, so that float32
# arithmetic stays float32 inside the kernels (a Python float literal would be float64 in Numba).
(ONE, HALF, GELU_A, GELU_C, EPS, WIDTH, NEG_C, TWO, ZERO, CAP, ATTN_SCALE, MIN_LOGIT,
 EXP_P0, EXP_P1, EXP_P2, EXP_Q0, EXP_Q1, EXP_Q2, EXP_Q3, LN2_HI, LN2_LO, LOG2E, EXP_LIMIT) = range(23)

# _exp's rational approximation of exp on [-ln2/2, ln2/2] (Cephes' exp, Moshier 1984):
# exp(r) = 1 + 2 r P(r^2) / (Q(r^2) - r P(r^2)), and ln 2 split in two so that k * LN2_HI is exact.
_EXP_P = (1.26177193074810590878e-4, 3.02994407707441961300e-2, 9.99999999999999999910e-1)
_EXP_Q = (3.00198505138664455042e-6, 2.52448340349684104192e-3, 2.27265548208155028766e-1, 2.0)
_LN2_HI, _LN2_LO = 6.93145751953125e-1, 1.42860682030941723212e-6
# |x| beyond which exp(x) is inf or 0 in the dtype, whatever the polynomial says (kept small enough that
# 2^(k/2) stays a normal number: 2^80 in float32, 2^539 in float64).
_EXP_LIMIT = {np.dtype(np.float32): 110.0, np.dtype(np.float64): 746.0}


def _constants(cfg):
    values = [1.0, 0.5, 0.044715 * _GELU_C, _GELU_C, RMSNORM_EPS, float(cfg.width), -RGLRU_C, 2.0, 0.0,
              float(cfg.logits_soft_cap), cfg.head_dim ** -0.5, MIN_LOGITS_VALUE,
              *_EXP_P, *_EXP_Q, _LN2_HI, _LN2_LO, 1.0 / np.log(2.0), _EXP_LIMIT[np.dtype(cfg.dtype)]]
    return np.array(values, dtype=cfg.dtype)


# ------------------------------------------------------------------------------------------- row helpers
# Each helper works on rows [r0, r1) of C-contiguous 2-D arrays and writes into a fresh scratch array whose
# row 0 is row r0 (so a thread's group of rows never touches another group's memory).

@njit(cache=True, error_model="numpy")
def _rmsnorm(x, r0, r1, scale, cs):  # pragma: no cover - compiled by Numba
    """x[r0:r1] * rsqrt(mean(x^2) + eps) * (1 + scale) -> (r1 - r0, D), as layers.rmsnorm_forward."""
    D = x.shape[1]
    out = np.empty((r1 - r0, D), x.dtype)
    for b in range(r1 - r0):
        s = cs[ZERO]
        for i in range(D):
            s += x[r0 + b, i] * x[r0 + b, i]
        inv_rms = cs[ONE] / np.sqrt(s / cs[WIDTH] + cs[EPS])
        for i in range(D):
            out[b, i] = (x[r0 + b, i] * inv_rms) * (cs[ONE] + scale[i])
    return out


@njit(cache=True, error_model="numpy")
def _matvec(x, w_t, out, out_col):  # pragma: no cover - compiled by Numba
    """out[:, out_col:out_col + n_out] = x @ w_t for x: (nb, n_in), w_t: (n_in, n_out) (the weight transposed).

    Each output accumulates x[b, i] * w_t[i, j] in the order i = 0, 1, ...; the inner loop runs along
    contiguous rows of w_t and of out, so it vectorises without reassociating anything. Four rows of w_t
    per pass over out (the same additions, in the same order: measured 1.6x faster at B = 8 than one row,
    bit for bit the same result), and every row of the batch uses them while they are in L1."""
    nb, n_in = x.shape
    n_out = w_t.shape[1]
    for b in range(nb):
        for j in range(n_out):
            out[b, out_col + j] = 0
    n4 = n_in - n_in % 4
    for i in range(0, n4, 4):
        w0 = w_t[i]
        w1 = w_t[i + 1]
        w2 = w_t[i + 2]
        w3 = w_t[i + 3]
        for b in range(nb):
            x0 = x[b, i]
            x1 = x[b, i + 1]
            x2 = x[b, i + 2]
            x3 = x[b, i + 3]
            o = out[b, out_col:out_col + n_out]
            for j in range(n_out):
                acc = o[j]
                acc = acc + x0 * w0[j]
                acc = acc + x1 * w1[j]
                acc = acc + x2 * w2[j]
                acc = acc + x3 * w3[j]
                o[j] = acc
    for i in range(n4, n_in):
        for b in range(nb):
            xi = x[b, i]
            for j in range(n_out):
                out[b, out_col + j] += xi * w_t[i, j]


@njit(cache=True, error_model="numpy")
def _linear(x, w_t, bias):  # pragma: no cover - compiled by Numba
    """x @ w_t + bias: (nb, n_in) -> (nb, n_out); the sum first, then the bias, as layers.linear_forward."""
    out = np.empty((x.shape[0], w_t.shape[1]), x.dtype)
    _matvec(x, w_t, out, 0)
    for b in range(x.shape[0]):
        for j in range(w_t.shape[1]):
            out[b, j] += bias[j]
    return out


@njit(cache=True, error_model="numpy")
def _block_diagonal(x, w, bias):  # pragma: no cover - compiled by Numba
    """rglru.block_diagonal_forward for one token: w: (H, E/H, E/H), bias: (H, E/H); x: (nb, E) -> (nb, E)."""
    nb = x.shape[0]
    H, blk = w.shape[0], w.shape[1]
    out = np.empty_like(x)
    xh = np.empty((nb, blk), x.dtype)
    for h in range(H):
        for b in range(nb):
            for i in range(blk):
                xh[b, i] = x[b, h * blk + i]
        _matvec(xh, w[h], out, h * blk)
        for b in range(nb):
            for j in range(blk):
                out[b, h * blk + j] += bias[h, j]
    return out


@intrinsic
def _pow2(typingctx, k):
    """2.0 ** k for a float k holding an integer whose 2^k is a normal number, made from its bits: the
    exponent field k + bias (127 for float32, 1023 for float64) and a zero mantissa. An LLVM integer add,
    shift and bitcast, which vectorise (ldexp is a libm call, which does not)."""
    if not isinstance(k, types.Float):
        return None
    mantissa_bits, bias = (23, 127) if k.bitwidth == 32 else (52, 1023)

    def codegen(context, builder, signature, args):
        int_type = ir.IntType(k.bitwidth)
        exponent = builder.add(builder.fptosi(args[0], int_type), ir.Constant(int_type, bias))
        return builder.bitcast(builder.shl(exponent, ir.Constant(int_type, mantissa_bits)),
                               context.get_value_type(k))
    return k(k), codegen


@njit(cache=True, error_model="numpy")
def _exp(x, cs):  # pragma: no cover - compiled by Numba
    """exp(x) in x's dtype, within 2 ulp of the correctly rounded result (tests/test_decode.py checks every
    dtype's range, subnormals, inf, -inf and NaN against np.exp).

    Numba's np.exp is a call into libm for each element (3-6 ns), and a loop with a call in it is not
    vectorised; this is plain arithmetic that LLVM vectorises (about 1 ns an element in float32). Range
    reduction: x = k ln2 + r with k = round(x / ln2), |r| <= ln2 / 2; exp(r) from a rational function
    (Cephes); then exp(x) = exp(r) 2^(k/2) 2^(k - k/2), two factors so that each stays a normal number when
    exp(x) is subnormal or overflows. x is clamped to +-EXP_LIMIT first (NaN to the limit too) so that k
    fits its exponent field; r comes from the clamped x, so exp(inf) = inf, exp(-inf) = 0, and a NaN is
    passed through at the end."""
    limit = cs[EXP_LIMIT]
    xc = x
    if not xc < limit:                                   # also NaN, which is restored below
        xc = limit
    if xc < -limit:
        xc = -limit
    k = np.floor(xc * cs[LOG2E] + cs[HALF])              # round(x / ln 2)
    r = (xc - k * cs[LN2_HI]) - k * cs[LN2_LO]           # |r| <= ln2 / 2, k * LN2_HI exact
    rr = r * r
    rp = r * ((cs[EXP_P0] * rr + cs[EXP_P1]) * rr + cs[EXP_P2])
    q = ((cs[EXP_Q0] * rr + cs[EXP_Q1]) * rr + cs[EXP_Q2]) * rr + cs[EXP_Q3]
    exp_r = cs[ONE] + cs[TWO] * (rp / (q - rp))
    k_half = np.floor(k * cs[HALF])
    y = (exp_r * _pow2(k_half)) * _pow2(k - k_half)
    return y if x == x else x


@njit(cache=True, error_model="numpy")
def _one_plus_tanh(u, cs):  # pragma: no cover - compiled by Numba
    """1 + tanh(u), written 2 / (1 + exp(-2u)), with the vectorising _exp. Numba's tanh is a scalar libm call
    (26 ns), and GeLU and the gates only ever use 1 + tanh: this form has the reference's accuracy (both err
    by about an ulp of 1), not bit for bit its rounding."""
    return cs[TWO] / (cs[ONE] + _exp(-(cs[TWO] * u), cs))


@njit(cache=True, error_model="numpy")
def _gelu(x, cs):  # pragma: no cover - compiled by Numba
    """layers.gelu_tanh_forward elementwise: 0.5 x (1 + tanh(c (x + 0.044715 x^3))), same operations but 1 + tanh."""
    u = x * x
    u = u * cs[GELU_A]
    u = u + cs[GELU_C]
    u = u * x
    return (_one_plus_tanh(u, cs) * x) * cs[HALF]


@njit(cache=True, error_model="numpy")
def _sigmoid(x, cs):  # pragma: no cover - compiled by Numba
    """rglru.sigmoid: 0.5 (1 + tanh(x / 2))."""
    return cs[HALF] * _one_plus_tanh(cs[HALF] * x, cs)


@njit(cache=True, error_model="numpy")
def _mlp_residual(residual, cscale, w_up, b_up, w_down_t, b_down, cs, x_out, r0):  # pragma: no cover
    """x_out[r0 + b] = residual[b] + mlp(rmsnorm(residual[b])) (blocks.residual_block_forward's second half)."""
    nb, D = residual.shape
    F = w_up.shape[2]
    normed = _rmsnorm(residual, 0, nb, cscale, cs)
    gate = np.empty((nb, F), residual.dtype)
    up = np.empty((nb, F), residual.dtype)
    _matvec(normed, w_up[0], gate, 0)
    _matvec(normed, w_up[1], up, 0)
    for b in range(nb):
        for j in range(F):
            up[b, j] = _gelu(gate[b, j] + b_up[0, j], cs) * (up[b, j] + b_up[1, j])   # hidden = gelu(up0) * up1
    down = _linear(up, w_down_t, b_down)
    for b in range(nb):
        for i in range(D):
            x_out[r0 + b, i] = residual[b, i] + down[b, i]


# ------------------------------------------------------------------------------------------ recurrent block
@njit(cache=True, nogil=True, error_model="numpy")
def _recurrent_rows(r0, r1, x, reset, doc, h, conv_x, conv_doc,
                    tscale, wy_t, by, wx_t, bx, conv_w, conv_b, ig_w, ig_b, ag_w, ag_b, softplus_a, wo_t, bo,
                    cscale, w_up, b_up, w_down_t, b_down, cs,
                    x_out, h_out, conv_x_out, conv_doc_out):  # pragma: no cover - compiled by Numba
    """One residual block with a recurrent temporal block, for one token of rows [r0, r1).
    x: (B, D); reset: (B,) bool (segment_pos == 0); doc: (B,) document id of the token; h: (B, E);
    conv_x: (B, K-1, E) and conv_doc: (B, K-1) the carried Conv1D inputs, oldest first. Writes rows
    [r0, r1) of x_out (B, D) and of the new state h_out, conv_x_out, conv_doc_out."""
    nb = r1 - r0
    E = h.shape[1]
    K = conv_w.shape[0]
    K1 = K - 1
    normed = _rmsnorm(x, r0, r1, tscale, cs)                             # (nb, D)
    y = _linear(normed, wy_t, by)                                        # (nb, E) then GeLU, below
    u_pre = _linear(normed, wx_t, bx)                                    # (nb, E) Conv1D input
    conv = np.empty((nb, E), x.dtype)                                    # (nb, E) Conv1D output
    for b in range(nb):
        r = r0 + b
        for e in range(E):
            acc = conv_b[e] + conv_w[K1, e] * u_pre[b, e]                # tap s = 0: the token itself
            for s in range(1, K):                                        # tap s: the input s steps back,
                if conv_doc[r, K1 - s] == doc[r]:                        # only inside the same document
                    acc += conv_w[K1 - s, e] * conv_x[r, K1 - s, e]
            conv[b, e] = acc
    gate_x = _block_diagonal(conv, ig_w, ig_b)                           # (nb, E) pre-activations
    gate_a = _block_diagonal(conv, ag_w, ag_b)
    u = np.empty((nb, E), x.dtype)                                       # RG-LRU output times the GeLU branch
    for b in range(nb):
        r = r0 + b
        # A document start drops the state: a = 0 and sqrt(1 - a^2) = 1 there, written as a multiplication
        # by keep = 0 rather than a branch or a select, either of which stopped LLVM vectorising the loop
        # (138 and 118 against 21 us for 8 rows of 256, measured). Exact whenever log a is a number, since
        # exp(log a) is then finite; a NaN log a (a NaN gate, or softplus(a_param) = inf times r = 0) gives
        # NaN here where the reference's where() would give 0 at a reset. Row views keep the indexing 1-D.
        keep = cs[ZERO] if reset[r] else cs[ONE]
        h_row, h_new_row, u_row = h[r], h_out[r], u[b]                  # (E,) each
        conv_row, gx_row, ga_row, y_row = conv[b], gate_x[b], gate_a[b], y[b]
        for e in range(E):
            gx = _sigmoid(gx_row[e], cs)                                 # i_t
            ga = _sigmoid(ga_row[e], cs)                                 # r_t
            log_a = (cs[NEG_C] * ga) * softplus_a[e]
            a = _exp(log_a, cs) * keep
            multiplier = np.sqrt(cs[ONE] - _exp(cs[TWO] * log_a, cs) * keep)   # sqrt(1 - a^2), a^2 = exp(2 log a)
            h_new = a * h_row[e] + (conv_row[e] * gx) * multiplier
            h_new_row[e] = h_new
            u_row[e] = h_new * _gelu(y_row[e], cs)
    mixed = _linear(u, wo_t, bo)                                         # (nb, D)
    for b in range(nb):
        r = r0 + b
        for i in range(mixed.shape[1]):
            mixed[b, i] = x[r, i] + mixed[b, i]                          # the residual
        for k in range(K1 - 1):                                          # shift the carried Conv1D inputs
            conv_doc_out[r, k] = conv_doc[r, k + 1]
            for e in range(E):
                conv_x_out[r, k, e] = conv_x[r, k + 1, e]
        if K1 > 0:
            conv_doc_out[r, K1 - 1] = doc[r]
            for e in range(E):
                conv_x_out[r, K1 - 1, e] = u_pre[b, e]
    _mlp_residual(mixed, cscale, w_up, b_up, w_down_t, b_down, cs, x_out, r0)


# ------------------------------------------------------------------------------------------ attention block
@njit(cache=True, nogil=True, error_model="numpy")
def _attention_in_rows(r0, r1, x, sin, cos, tscale, wq_t, wk_t, wv_t, cs, q_out, k_out, v_out):  # pragma: no cover
    """RMSNorm, q/k/v projections (no biases) and RoPE for rows [r0, r1). sin, cos: (B, R/2) in the model
    dtype (rope.rope_forward's; R = 0, shape (B, 0), for a NoPE model: nothing is rotated); writes
    q_out: (B, H, Dh), k_out, v_out: (B, Dh)."""
    H, Dh = q_out.shape[1], q_out.shape[2]
    half = sin.shape[1]                                                  # R/2: RoPE rotates the first R = Dh/2
    normed = _rmsnorm(x, r0, r1, tscale, cs)
    nb = r1 - r0
    qk = np.empty((nb, (H + 1) * Dh), x.dtype)                           # H query heads, then the key head
    v = np.empty((nb, Dh), x.dtype)
    _matvec(normed, wq_t, qk, 0)
    _matvec(normed, wk_t, qk, H * Dh)
    _matvec(normed, wv_t, v, 0)
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


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _dot(x, y, zero):  # pragma: no cover - compiled by Numba
    """sum_j x[j] * y[j] for contiguous 1-D x, y, accumulated in their dtype from `zero`.

    The one place in the decode kernels that lets LLVM reorder a sum ("reassoc", and "contract" for fused
    multiply-adds): a dot product along a contiguous row needs that to be vectorised. No "nnan"/"ninf", so
    NaN and inf still propagate (docs/conventions.md, "Functions"). The order differs from the reference's BLAS product,
    which has its own order anyway; the tests compare at rtol 1e-12 in float64."""
    acc = zero
    for j in range(x.shape[0]):
        acc += x[j] * y[j]
    return acc


@njit(cache=True, nogil=True, error_model="numpy")
def _scaled_logits(r0, r1, q, keys, doc, start, k0, k1, query_doc, cs, logits, m):  # pragma: no cover
    """Scaled, masked logits for rows [r0, r1) over the cache entries k0 <= s < k1 (start <= k0).

    q: (B, H, Dh); keys: (B, C, Dh) and doc: (B, C) the cache buffers (C-contiguous, so that each key row is
    a contiguous vector: a view of the entries [start, stop) would skip the rest of each buffer row, and
    Numba cannot vectorise a strided array's inner loop; that ran 3.7x slower, measured). Writes
    logits[b - r0, s - start, h] = scale * k_s.q_h, -inf where masked, and m[b - r0, h] the max over the
    visible keys (-inf where none is). Key s is visible iff doc[b, s] == query_doc[b] (every cached key is
    inside the window by construction; the query's own key always is). In the reference a masked logit is
    MIN_LOGITS_VALUE, whose exp(MIN - max) is exactly 0; exp(-inf - max) is exactly 0 too. One pass over the
    keys; it beat OpenBLAS's (M, Dh) x (Dh, H) product (0.28 against 0.38 ms at 16k keys), whose calls from
    two threads at once also ran slower than one after the other."""
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
                    val = _dot(keys[b, s], q[b, h], cs[ZERO]) * cs[ATTN_SCALE]
                    logits[i, s - start, h] = val
                    if val > top[h]:
                        top[h] = val
            else:
                for h in range(H):
                    logits[i, s - start, h] = neg_inf
        for h in range(H):
            m[i, h] = top[h]


@njit(cache=True, nogil=True, error_model="numpy")
def _subtract_max(logits, m, s0, s1, cs):  # pragma: no cover - compiled by Numba
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
def _attend_rows(r0, r1, p, values, start, k0, k1, cs, total, o, normalise):  # pragma: no cover
    """Softmax sums and weighted values for rows [r0, r1) over the cache entries k0 <= s < k1. p: (rows,
    stop - start, H) the unnormalised exp(logit - max), 0 where masked, indexed by s - start; values:
    (B, C, Dh) the cache buffer (as _scaled_logits). Writes total[b - r0, h] = sum_s p[s, h] and o[b]
    (o: (B, H * Dh)) = sum_s p[s, h] v[s], divided by total[h] at the end if `normalise` (the softmax;
    the reference divides each weight first, so the two agree to rounding). One pass over the values."""
    H = p.shape[2]
    Dh = values.shape[2]
    sums = np.empty(H, p.dtype)          # local, as _scaled_logits' max: total's rows may share a cache line
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
        # its rows: _matvec's order (s = k0, k0 + 1, ..., four keys per pass over o[h]), each value row used
        # by all H heads while it is in L1. A masked key adds 0 * v = 0, exactly as in the reference's p @ V.
        _matvec(p[i, k0 - start:k1 - start].T, values[b, k0:k1], o[b].reshape((H, Dh)), 0)
        if normalise:
            for h in range(H):
                for j in range(Dh):
                    o[b, h * Dh + j] = o[b, h * Dh + j] / total[i, h]


# A batch of one at long contexts: the keys cut into n_parts runs, one per thread (Numba parallel regions).
# One global max is taken between the two regions, so every run's exp(l - max) is already the softmax
# numerator and the runs' sums simply add (no flash-decoding rescale).

@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _split_logits(q, keys, doc, start, stop, query_doc, cs, logits, maxes, m):  # pragma: no cover
    """Region 1: each run's scaled logits and max (maxes: (n_parts, B, H)), then m: (B, H) the max over all
    runs, subtracted from every logit. logits: (B, stop - start, H)."""
    n_parts = maxes.shape[0]
    B = q.shape[0]
    M = stop - start
    for j in prange(n_parts):
        _scaled_logits(0, B, q, keys, doc, start, start + j * M // n_parts, start + (j + 1) * M // n_parts,
                       query_doc, cs, logits, maxes[j])
    for b in range(B):
        for h in range(m.shape[1]):
            top = maxes[0, b, h]
            for j in range(1, n_parts):
                top = max(top, maxes[j, b, h])
            m[b, h] = top
    for j in prange(n_parts):
        _subtract_max(logits, m, j * M // n_parts, (j + 1) * M // n_parts, cs)


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _split_attend(p, values, start, stop, cs, totals, sums, o):  # pragma: no cover
    """Region 2: each run's sums (totals: (n_parts, B, H), sums: (n_parts, B, H * Dh)), then
    o = sum_j sums_j / sum_j totals_j."""
    n_parts, B, H = totals.shape
    Dh = values.shape[2]
    M = stop - start
    for j in prange(n_parts):
        _attend_rows(0, B, p, values, start, start + j * M // n_parts, start + (j + 1) * M // n_parts, cs,
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
def _attention_out_rows(r0, r1, x, o, wf_t, bf, cscale, w_up, b_up, w_down_t, b_down, cs, x_out):  # pragma: no cover
    """proj_final, residual, RMSNorm, gated MLP, residual for rows [r0, r1). o: (B, D) attention output."""
    nb = r1 - r0
    D = x.shape[1]
    o_rows = np.empty((nb, D), x.dtype)
    for b in range(nb):
        for i in range(D):
            o_rows[b, i] = o[r0 + b, i]
    mixed = _linear(o_rows, wf_t, bf)
    for b in range(nb):
        for i in range(D):
            mixed[b, i] = x[r0 + b, i] + mixed[b, i]
    _mlp_residual(mixed, cscale, w_up, b_up, w_down_t, b_down, cs, x_out, r0)


# ----------------------------------------------------------------------------------------------------- head
@njit(cache=True, nogil=True, error_model="numpy")
def _head_rows(r0, r1, x, final_scale, table_t, cs, logits):  # pragma: no cover - compiled by Numba
    """Final RMSNorm, tied head x @ table^T, soft-cap c tanh(logits / c) (c = 0: none). logits: (B, V)."""
    normed = _rmsnorm(x, r0, r1, final_scale, cs)
    V = table_t.shape[1]
    out = np.empty((r1 - r0, V), x.dtype)
    _matvec(normed, table_t, out, 0)
    for b in range(r1 - r0):
        for j in range(V):
            val = out[b, j]
            if cs[CAP] != cs[ZERO]:
                val = cs[CAP] * np.tanh(val / cs[CAP])
            logits[r0 + b, j] = val


# -------------------------------------------------------------------------------------------- weights plan
class DecodePlan(NamedTuple):
    """The params rearranged for the kernels: C-contiguous, torch-layout weights (out, in) transposed to
    (in, out), softplus(a_param) precomputed. `sources` are the arrays it was made from (checked by identity)."""
    sources: tuple
    blocks: tuple      # one tuple of arrays per residual block, in the kernels' argument order
    final_scale: object
    table_t: object    # (D, V)
    constants: object  # cs


def _c(arr):
    return np.ascontiguousarray(arr)


def _sources(params):
    """Every params leaf, in a fixed order: a plan is reused only while all of them are the same objects."""
    out = [params["embedder"]["input_embedding"], params["final_norm"]["scale"]]

    def walk(tree):
        if isinstance(tree, dict):
            for key in sorted(tree):
                walk(tree[key])
        else:
            out.append(tree)
    walk(params["blocks"])
    return tuple(out)


def plan_matches(plan, params):
    if plan is None:
        return False
    sources = _sources(params)
    return len(sources) == len(plan.sources) and all(a is b for a, b in zip(sources, plan.sources))


def make_plan(params, cfg):
    """DecodePlan for params (a transposed copy of the dense weights: about the size of the model)."""
    blocks = []
    for kind, p in zip(cfg.block_types, params["blocks"]):
        mlp = p["mlp_block"]
        F = mlp["ffw_up"]["w"].shape[2]
        mlp_args = (_c(p["channel_pre_norm"]["scale"]), _c(mlp["ffw_up"]["w"]), _c(mlp["ffw_up"]["b"].reshape(2, F)),
                    _c(mlp["ffw_down"]["weight"].T), _c(mlp["ffw_down"]["bias"]))
        if kind == RECURRENT:
            r = p["recurrent_block"]
            blocks.append((_c(p["temporal_pre_norm"]["scale"]),
                           _c(r["linear_y"]["weight"].T), _c(r["linear_y"]["bias"]),
                           _c(r["linear_x"]["weight"].T), _c(r["linear_x"]["bias"]),
                           _c(r["conv_1d"]["w"]), _c(r["conv_1d"]["b"]),
                           _c(r["rg_lru"]["input_gate"]["w"]), _c(r["rg_lru"]["input_gate"]["b"]),
                           _c(r["rg_lru"]["a_gate"]["w"]), _c(r["rg_lru"]["a_gate"]["b"]),
                           _c(softplus(r["rg_lru"]["a_param"])),
                           _c(r["linear_out"]["weight"].T), _c(r["linear_out"]["bias"])) + mlp_args)
        else:
            a = p["attention_block"]
            blocks.append(((_c(p["temporal_pre_norm"]["scale"]), _c(a["proj_q"]["weight"].T),
                            _c(a["proj_k"]["weight"].T), _c(a["proj_v"]["weight"].T)),
                           (_c(a["proj_final"]["weight"].T), _c(a["proj_final"]["bias"])) + mlp_args))
    return DecodePlan(_sources(params), tuple(blocks), _c(params["final_norm"]["scale"]),
                      _c(params["embedder"]["input_embedding"].T), _constants(cfg))


def decode_threads():
    """Threads a decode step may use: MINIGRIFFIN_DECODE_THREADS (default 1), an int >= 1."""
    raw = os.environ.get("MINIGRIFFIN_DECODE_THREADS", "1")
    try:
        wanted = int(raw)
    except ValueError:
        raise ValueError(f"MINIGRIFFIN_DECODE_THREADS must be an integer >= 1, got {raw!r}") from None
    if wanted < 1:
        raise ValueError(f"MINIGRIFFIN_DECODE_THREADS must be an integer >= 1, got {raw!r}")
    return wanted


def _groups(B):
    """Row groups for a decode step: one per decode thread (at most B); 1 means everything on this thread.

    Rows of the batch are independent in a decode step, so with B > 1 each thread can take a group of rows
    through all the blocks (run_rows), and the threads meet once, at the end: every attention block's cache
    slot for the step is reserved before they start (kvcache.kv_reserve), so each group writes its own
    rows' keys and values. Once per step matters: with a parallel region per kernel call (13 a step), each
    region waited for a descheduled thread whenever another process held a core, and steps took 10-30x
    longer on our shared VM. A batch of one uses the other threads inside long attention blocks instead
    (attention_core_split). Serial by default, because even one wait per step costs a scheduler quantum on
    a busy machine."""
    return max(1, min(B, decode_threads()))


_POOLS = {}


def run_rows(n_groups, B, work):
    """Run work(r0, r1) for n_groups row groups of a batch of B, the first on this thread and the others on
    pool threads, and wait for all. work must release the GIL to gain anything (nogil kernels, BLAS, NumPy)."""
    bounds = [(g * B // n_groups, (g + 1) * B // n_groups) for g in range(n_groups)]
    if n_groups == 1:
        work(0, B)
        return
    if n_groups not in _POOLS:
        _POOLS[n_groups] = ThreadPoolExecutor(n_groups - 1, thread_name_prefix="minigriffin-decode")
    futures = [_POOLS[n_groups].submit(work, r0, r1) for r0, r1 in bounds[1:]]
    work(*bounds[0])
    for future in futures:
        future.result()


def rope_sin_cos(positions, half, dtype):
    """sin, cos: (B, R/2) for positions (B,), computed exactly as rope.rope_forward (float64, then cast)."""
    R = 2 * half
    freq = np.arange(half, dtype=np.float64)
    inv_freq = 1.0 / MAX_WAVELENGTH ** (2.0 * freq / R)
    theta = positions[:, None].astype(np.float64) * inv_freq               # (B, R/2)
    return np.ascontiguousarray(np.sin(theta).astype(dtype)), np.ascontiguousarray(np.cos(theta).astype(dtype))


@njit(cache=True, nogil=True, error_model="numpy")
def _exp_in_place(a, cs):  # pragma: no cover - compiled by Numba
    """a = exp(a) elementwise with decode._exp, for a C-contiguous array of any shape (vectorised)."""
    flat = a.reshape(-1)
    for k in range(flat.shape[0]):
        flat[k] = _exp(flat[k], cs)


@njit(cache=True, nogil=True, error_model="numpy")
def attention_core_rows(r0, r1, q, keys, values, doc, start, stop, query_doc, cs, o):  # pragma: no cover
    """Softmax attention of q: (B, H, Dh) over the cache entries [start, stop) of keys, values: (B, C, Dh) and
    their document ids doc: (B, C) (the C-contiguous cache buffers, each read once), for batch rows [r0, r1),
    writing o[r0:r1] of o: (B, H * Dh): the logits pass, minus the max, exp, the values pass. Rows run
    independently, so row groups can run in threads (run_rows); compiled, releasing the GIL; a decode step
    calls it inside _attention_block_rows. The exponentials are _exp's, vectorised: a libm exp per element
    in a Numba loop cost ~20 ns each, a third of a long-context step, which is why they were NumPy's np.exp
    in place between the kernels until _exp existed (as fast as np.exp here: 106 against 107 us for
    8 x 1k x 4)."""
    H = q.shape[1]
    m = np.empty((r1 - r0, H), q.dtype)                                    # (rows, H) max over visible keys
    total = np.empty((r1 - r0, H), q.dtype)                                # (rows, H) softmax denominators
    logits = np.empty((r1 - r0, stop - start, H), q.dtype)                 # (rows, M, H)
    _scaled_logits(r0, r1, q, keys, doc, start, start, stop, query_doc, cs, logits, m)
    _subtract_max(logits, m, 0, stop - start, cs)
    _exp_in_place(logits, cs)                                              # unnormalised p, 0 where masked
    _attend_rows(r0, r1, logits, values, start, start, stop, cs, total, o, True)


@njit(cache=True, nogil=True, error_model="numpy")
def _attention_block_rows(r0, r1, x, sin, cos, tscale, wq_t, wk_t, wv_t, cs, q, k_out, v_out,
                          keys, values, doc, start, stop, query_doc, o,
                          wf_t, bf, cscale, w_up, b_up, w_down_t, b_down, x_out):  # pragma: no cover
    """A whole attention residual block for rows [r0, r1) in one call: _attention_in_rows,
    attention_core_rows, _attention_out_rows. One call instead of five per block and row group: with two
    row groups, each Python-level call waits for the GIL while the other thread holds it, and fusing them
    made MQA batch-8 steps 6-9% faster (median of five runs: 3.70 against 4.07 ms at 256 keys, 5.46
    against 5.82 at 1k)."""
    _attention_in_rows(r0, r1, x, sin, cos, tscale, wq_t, wk_t, wv_t, cs, q, k_out, v_out)
    attention_core_rows(r0, r1, q, keys, values, doc, start, stop, query_doc, cs, o)
    _attention_out_rows(r0, r1, x, o, wf_t, bf, cscale, w_up, b_up, w_down_t, b_down, cs, x_out)


# Keys per thread below which attention_core_split is not worth its two parallel regions. Measured with
# 256 (MQA, batch 1, ms per step, one thread against two): 1k keys 2.9 against 2.1-2.9, 4k keys 4.5 against
# 3.0-3.8; with the thread pool it replaced (a Python hand-off and a NumPy combine) 4k keys were slower split.
SPLIT_MIN_KEYS = 256


def split_parts(n_keys):
    """Runs of keys for attention_core_split with a batch of one: one per decode thread (at most Numba's
    thread count), each of at least SPLIT_MIN_KEYS keys; 1 means do not split."""
    return max(1, min(decode_threads(), numba.get_num_threads(), n_keys // SPLIT_MIN_KEYS))


def attention_core_split(q, keys, values, doc, start, stop, query_doc, cs, o, n_parts):
    """attention_core_rows for every row, with the entries [start, stop) cut into n_parts runs taken by
    n_parts Numba threads: how a batch of one uses a second core at long contexts. Two parallel regions, one
    for the logits (and the max over all runs, which every run then subtracts) and one for the runs' sums
    sum_s p_s and sum_s p_s v_s, which add up because every run used the same max; the exp on this
    thread between them. Call it from one Python thread at a time (Numba's workqueue layer forbids concurrent
    parallel regions); decode_step does, for B = 1 only. Numba's OpenMP threads spin for a while
    after each region, so other busy threads of the same process lose that core meanwhile (batch-8 steps
    taking turns with batch-1 steps ran 2x slower, measured): one more reason the default is one thread."""
    B, H, Dh = q.shape
    maxes = np.empty((n_parts, B, H), q.dtype)                             # (n_parts, B, H) each run's max
    m = np.empty((B, H), q.dtype)                                          # (B, H) the max over all runs
    totals = np.empty((n_parts, B, H), q.dtype)                            # (n_parts, B, H)
    sums = np.empty((n_parts, B, H * Dh), q.dtype)                         # (n_parts, B, H * Dh)
    logits = np.empty((B, stop - start, H), q.dtype)                       # (B, M, H)
    _split_logits(q, keys, doc, start, stop, query_doc, cs, logits, maxes, m)
    _exp_in_place(logits, cs)
    _split_attend(logits, values, start, stop, cs, totals, sums, o)


def applies(params, tokens, segment_pos):
    """Whether decode_step can run a forward_chunk call: one token per row, everything in NumPy arrays."""
    return (tokens.shape[1] == 1 and array_namespace(params["embedder"]["input_embedding"]) is np
            and array_namespace(tokens, segment_pos) is np)


def decode_step(params, tokens, segment_pos, cfg, state):
    """inference.forward_chunk for T = 1 on NumPy arrays (see `applies`): the kernels above, the same
    computation as model.model_forward with a state. Returns logits (B, 1, V) and the new ModelState."""
    plan = state.plan if plan_matches(state.plan, params) else make_plan(params, cfg)
    cs = plan.constants
    table = params["embedder"]["input_embedding"]                          # (V, D)
    scale = embedding_scale(cfg.width) if cfg.embeddings_scale_by_sqrt_dim else None
    x, _ = embedding_forward(tokens, table, scale)                         # (B, 1, D)
    x = np.ascontiguousarray(x[:, 0])                                      # (B, D)
    positions = segment_pos[:, 0]                                          # (B,)
    reset = np.ascontiguousarray(positions == 0)                           # (B,) a document starts here
    doc = state.doc + reset                                                # (B,) int64 its document id
    B = x.shape[0]
    n_groups = _groups(B)
    sin = cos = None
    new_blocks = []
    # `work` lists the kernels of the step in order, each taking a group of rows [r0, r1). Every attention
    # block's cache slot for this token is reserved here, before any kernel runs, so row groups can run the
    # whole list in their own threads and meet once, at the end.
    work = []
    for kind, plan_block, block_state in zip(cfg.block_types, plan.blocks, state.blocks):
        x_out = np.empty_like(x)                                           # (B, D)
        if kind == RECURRENT:
            new = RecurrentState(np.empty_like(block_state.h), np.empty_like(block_state.conv_x),
                                 np.empty_like(block_state.conv_doc))
            args = (x, reset, doc, _c(block_state.h), _c(block_state.conv_x),
                    _c(block_state.conv_doc)) + plan_block + (cs, x_out) + tuple(new)
            work.append(lambda r0, r1, args=args: _recurrent_rows(r0, r1, *args))
        else:
            if sin is None:                                                # (B, Dh/4) each, shared by all blocks
                half = cfg.head_dim // 4 if cfg.use_rope else 0              # NoPE: rotate nothing
                sin, cos = rope_sin_cos(positions, half, x.dtype)
            H, Dh = cfg.num_heads, cfg.head_dim
            keys, _, docs, new, _ = kv_reserve(block_state, 1, cfg.window)   # (B, N+1, ...)
            buf = new.buffer                                               # the views end at buf.head
            stop = buf.head
            start = stop - keys.shape[1]
            docs[:, -1] = doc                                              # the last entry is this token's slot
            q = np.empty((B, H, Dh), x.dtype)
            o = np.empty((B, H * Dh), x.dtype)                             # (B, D)
            args_in = (x, sin, cos) + plan_block[0] + (cs, q, buf.keys[:, stop - 1], buf.values[:, stop - 1])
            cache = (buf.keys, buf.values, buf.doc, start, stop, doc)      # kernels take whole buffers
            n_parts = split_parts(stop - start) if n_groups == 1 else 1   # a batch of one: split keys
            if n_parts > 1:                                                # three calls, the middle one parallel
                core = (q,) + cache + (cs, o, n_parts)
                out = (x, o) + plan_block[1] + (cs, x_out)
                work.append(lambda r0, r1, a=args_in: _attention_in_rows(r0, r1, *a))
                work.append(lambda r0, r1, a=core: attention_core_split(*a))
                work.append(lambda r0, r1, a=out: _attention_out_rows(r0, r1, *a))
            else:                                                          # one call per row group
                whole = args_in + cache + (o,) + plan_block[1] + (x_out,)
                work.append(lambda r0, r1, a=whole: _attention_block_rows(r0, r1, *a))
        new_blocks.append(new)
        x = x_out
    logits = np.empty((B, plan.table_t.shape[1]), x.dtype)                 # (B, V)
    head_args = (x, plan.final_scale, plan.table_t, cs, logits)
    work.append(lambda r0, r1: _head_rows(r0, r1, *head_args))
    run_rows(n_groups, B, lambda r0, r1: [step(r0, r1) for step in work])
    logits = logits[:, None]                                               # (B, 1, V)
    return logits, ModelState(tuple(new_blocks), doc, state.num_tokens + 1, plan)


__all__ = ["applies", "decode_step", "DecodePlan", "make_plan", "plan_matches", "rope_sin_cos", "attention_core_rows", "attention_core_split",
           "split_parts", "run_rows", "decode_threads"]

