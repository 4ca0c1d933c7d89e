"""Decode kernels of a recurrent residual block and of the head (one token per row), compiled by Numba.

recurrent_rows is one whole residual block: RMSNorm, linear_y + GeLU, linear_x, the K Conv1D taps with their
document mask, the RG-LRU gates and state update, linear_out, residual, RMSNorm, gated MLP, residual; the
same operations, in the same order, as blocks.residual_block_forward with a state.
"""

import numpy as np
from numba import njit

from minigriffin.fast.decode_math import (CAP, NEG_C, ONE, TWO, ZERO, block_diagonal, exp, gelu, linear, matvec,
                                          mlp_residual, rmsnorm, sigmoid)

@njit(cache=True, nogil=True, error_model="numpy")
def recurrent_rows(r0, r1, x, reset, doc, h, conv_x, conv_doc,
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
    normed = rmsnorm(x, r0, r1, tscale, cs)                             # (nb, D)
    y = linear(normed, wy_t, by)                                        # (nb, E) then GeLU, below
    u_pre = linear(normed, wx_t, bx)                                    # (nb, E) Conv1D input
    conv = np.empty((nb, E), x.dtype)                                    # (nb, E) Conv1D output
    for b in range(nb):
        r = r0 + b
        for e in range(E):
            acc = conv_b[e] + conv_w[K1, e] * u_pre[b, e]                # tap s = 0: the token itself
            for s in range(1, K):                                        # tap s: the input s steps back,
                if conv_doc[r, K1 - s] == doc[r]:                        # only inside the same document
                    acc += conv_w[K1 - s, e] * conv_x[r, K1 - s, e]
            conv[b, e] = acc
    gate_x = block_diagonal(conv, ig_w, ig_b)                           # (nb, E) pre-activations
    gate_a = block_diagonal(conv, ag_w, ag_b)
    u = np.empty((nb, E), x.dtype)                                       # RG-LRU output times the GeLU branch
    for b in range(nb):
        r = r0 + b
        # A document start drops the state: a = 0 and sqrt(1 - a^2) = 1 there, written as a multiplication
        # by keep = 0 rather than a branch or a select, either of which stopped LLVM vectorising the loop
        # (docs/benchmarks.md, "Decode kernels"). Exact whenever log a is a number, since
        # exp(log a) is then finite; a NaN log a (a NaN gate, or softplus(a_param) = inf times r = 0) gives
        # NaN here where the reference's where() would give 0 at a reset. Row views keep the indexing 1-D.
        keep = cs[ZERO] if reset[r] else cs[ONE]
        h_row, h_new_row, u_row = h[r], h_out[r], u[b]                  # (E,) each
        conv_row, gx_row, ga_row, y_row = conv[b], gate_x[b], gate_a[b], y[b]
        for e in range(E):
            gx = sigmoid(gx_row[e], cs)                                 # i_t
            ga = sigmoid(ga_row[e], cs)                                 # r_t
            log_a = (cs[NEG_C] * ga) * softplus_a[e]
            a = exp(log_a, cs) * keep
            multiplier = np.sqrt(cs[ONE] - exp(cs[TWO] * log_a, cs) * keep)   # sqrt(1 - a^2), a^2 = exp(2 log a)
            h_new = a * h_row[e] + (conv_row[e] * gx) * multiplier
            h_new_row[e] = h_new
            u_row[e] = h_new * gelu(y_row[e], cs)
    mixed = linear(u, wo_t, bo)                                         # (nb, D)
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
    mlp_residual(mixed, cscale, w_up, b_up, w_down_t, b_down, cs, x_out, r0)


# ------------------------------------------------------------------------------------------ attention block
@njit(cache=True, nogil=True, error_model="numpy")
def head_rows(r0, r1, x, final_scale, table_t, cs, logits):  # pragma: no cover - compiled by Numba
    """Final RMSNorm, tied head x @ table^T, soft-cap c tanh(logits / c) (c = 0: none). logits: (B, V)."""
    normed = rmsnorm(x, r0, r1, final_scale, cs)
    V = table_t.shape[1]
    out = np.empty((r1 - r0, V), x.dtype)
    matvec(normed, table_t, out, 0)
    for b in range(r1 - r0):
        for j in range(V):
            val = out[b, j]
            if cs[CAP] != cs[ZERO]:
                val = cs[CAP] * np.tanh(val / cs[CAP])
            logits[r0 + b, j] = val
