"""Scalar helpers of the decode kernels (minigriffin/fast/decode.py), compiled by Numba: RMSNorm, matrix-vector
products, the block-diagonal gates, GeLU, sigmoid, the gated MLP with its residual, and a vectorising exp.

Each helper works on rows [r0, r1) of C-contiguous 2-D arrays and writes into a fresh scratch array whose row 0
is row r0, so a thread's group of rows never touches another group's memory. Scalars come in the vector `cs`
of constants typed as the model dtype (a Python float literal would be float64 inside Numba).
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from minigriffin.attention import MIN_LOGITS_VALUE
from minigriffin.layers import GELU_C as GELU_CONSTANT
from minigriffin.layers import RMSNORM_EPS
from minigriffin.rglru import C as RGLRU_C

# Indices into the constants vector `cs` (one per dtype): scalars typed as the model dtype, so that float32
# arithmetic stays float32 inside the kernels (a Python float literal would be float64 in Numba).
(ONE, HALF, GELU_A, GELU_C, EPS, WIDTH, NEG_C, TWO, ZERO, CAP, ATTN_SCALE, MIN_LOGIT,
 EXP_P0, EXP_P1, EXP_P2, EXP_Q0, EXP_Q1, EXP_Q2, EXP_Q3, LN2_HI, LN2_LO, LOG2E, EXP_LIMIT) = range(23)

# exp's rational approximation of exp on [-ln2/2, ln2/2] (Cephes' exp, Moshier 1984):
# exp(r) = 1 + 2 r P(r^2) / (Q(r^2) - r P(r^2)), and ln 2 split in two so that k * LN2_HI is exact.
_EXP_P = (1.26177193074810590878e-4, 3.02994407707441961300e-2, 9.99999999999999999910e-1)
_EXP_Q = (3.00198505138664455042e-6, 2.52448340349684104192e-3, 2.27265548208155028766e-1, 2.0)
_LN2_HI, _LN2_LO = 6.93145751953125e-1, 1.42860682030941723212e-6
# |x| beyond which exp(x) is inf or 0 in the dtype, whatever the polynomial says (kept small enough that
# 2^(k/2) stays a normal number: 2^80 in float32, 2^539 in float64).
_EXP_LIMIT = {np.dtype(np.float32): 110.0, np.dtype(np.float64): 746.0}


def constants(cfg):
    values = [1.0, 0.5, 0.044715 * GELU_CONSTANT, GELU_CONSTANT, RMSNORM_EPS, float(cfg.width), -RGLRU_C, 2.0, 0.0,
              float(cfg.logits_soft_cap), cfg.head_dim ** -0.5, MIN_LOGITS_VALUE,
              *_EXP_P, *_EXP_Q, _LN2_HI, _LN2_LO, 1.0 / np.log(2.0), _EXP_LIMIT[np.dtype(cfg.dtype)]]
    return np.array(values, dtype=cfg.dtype)



@njit(cache=True, error_model="numpy")
def rmsnorm(x, r0, r1, scale, cs):  # pragma: no cover - compiled by Numba
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
def matvec(x, w_t, out, out_col):  # pragma: no cover - compiled by Numba
    """out[:, out_col:out_col + n_out] = x @ w_t for x: (nb, n_in), w_t: (n_in, n_out) (the weight transposed).

    Each output accumulates x[b, i] * w_t[i, j] in the order i = 0, 1, ...; the inner loop runs along
    contiguous rows of w_t and of out, so it vectorises without reassociating anything. Four rows of w_t
    per pass over out (the same additions, in the same order, so bit for bit the same result as one row at a
    time), and every row of the batch uses them while they are in L1."""
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
def linear(x, w_t, bias):  # pragma: no cover - compiled by Numba
    """x @ w_t + bias: (nb, n_in) -> (nb, n_out); the sum first, then the bias, as layers.linear_forward."""
    out = np.empty((x.shape[0], w_t.shape[1]), x.dtype)
    matvec(x, w_t, out, 0)
    for b in range(x.shape[0]):
        for j in range(w_t.shape[1]):
            out[b, j] += bias[j]
    return out


@njit(cache=True, error_model="numpy")
def block_diagonal(x, w, bias):  # pragma: no cover - compiled by Numba
    """rglru.block_diagonal_forward for one token: w: (H, E/H, E/H), bias: (H, E/H); x: (nb, E) -> (nb, E)."""
    nb = x.shape[0]
    H, blk = w.shape[0], w.shape[1]
    out = np.empty_like(x)
    xh = np.empty((nb, blk), x.dtype)
    for h in range(H):
        for b in range(nb):
            for i in range(blk):
                xh[b, i] = x[b, h * blk + i]
        matvec(xh, w[h], out, h * blk)
        for b in range(nb):
            for j in range(blk):
                out[b, h * blk + j] += bias[h, j]
    return out


@intrinsic
def pow2(typingctx, k):
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
def exp(x, cs):  # pragma: no cover - compiled by Numba
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
    y = (exp_r * pow2(k_half)) * pow2(k - k_half)
    return y if x == x else x


@njit(cache=True, error_model="numpy")
def one_plus_tanh(u, cs):  # pragma: no cover - compiled by Numba
    """1 + tanh(u), written 2 / (1 + exp(-2u)), with the vectorising exp. Numba's tanh is a scalar libm call
    (26 ns), and GeLU and the gates only ever use 1 + tanh: this form has the reference's accuracy (both err
    by about an ulp of 1), not bit for bit its rounding."""
    return cs[TWO] / (cs[ONE] + exp(-(cs[TWO] * u), cs))


@njit(cache=True, error_model="numpy")
def gelu(x, cs):  # pragma: no cover - compiled by Numba
    """layers.gelu_tanh_forward elementwise: 0.5 x (1 + tanh(c (x + 0.044715 x^3))), same operations but 1 + tanh."""
    u = x * x
    u = u * cs[GELU_A]
    u = u + cs[GELU_C]
    u = u * x
    return (one_plus_tanh(u, cs) * x) * cs[HALF]


@njit(cache=True, error_model="numpy")
def sigmoid(x, cs):  # pragma: no cover - compiled by Numba
    """rglru.sigmoid: 0.5 (1 + tanh(x / 2))."""
    return cs[HALF] * one_plus_tanh(cs[HALF] * x, cs)


@njit(cache=True, error_model="numpy")
def mlp_residual(residual, cscale, w_up, b_up, w_down_t, b_down, cs, x_out, r0):  # pragma: no cover
    """x_out[r0 + b] = residual[b] + mlp(rmsnorm(residual[b])) (blocks.residual_block_forward's second half)."""
    nb, D = residual.shape
    F = w_up.shape[2]
    normed = rmsnorm(residual, 0, nb, cscale, cs)
    gate = np.empty((nb, F), residual.dtype)
    up = np.empty((nb, F), residual.dtype)
    matvec(normed, w_up[0], gate, 0)
    matvec(normed, w_up[1], up, 0)
    for b in range(nb):
        for j in range(F):
            up[b, j] = gelu(gate[b, j] + b_up[0, j], cs) * (up[b, j] + b_up[1, j])   # hidden = gelu(up0) * up1
    down = linear(up, w_down_t, b_down)
    for b in range(nb):
        for i in range(D):
            x_out[r0 + b, i] = residual[b, i] + down[b, i]


# ------------------------------------------------------------------------------------------ recurrent block

@njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
def dot(x, y, zero):  # pragma: no cover - compiled by Numba
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
def exp_in_place(a, cs):  # pragma: no cover - compiled by Numba
    """a = exp(a) elementwise with decode.exp, for a C-contiguous array of any shape (vectorised)."""
    flat = a.reshape(-1)
    for k in range(flat.shape[0]):
        flat[k] = exp(flat[k], cs)
