"""The Real-Gated Linear Recurrent Unit (Griffin §2.4, eqs. 1-4; recurrentgemma layers.RGLRU), forward and backward.

    r_t = sigmoid(BD_a(x_t))                    recurrence gate (eq. 1); BD = block-diagonal linear
    i_t = sigmoid(BD_x(x_t))                    input gate (eq. 2)
    log a_t = -8 r_t softplus(a_param)          a_t = a^(8 r_t) with a = sigmoid(-a_param)  (eq. 3, c = 8)
    h_t = a_t h_{t-1} + sqrt(1 - a_t^2) (i_t x_t)                                            (eq. 4)

At a document start (segment_pos == 0) the state is dropped (a_t = 0) and the input is not rescaled
(multiplier 1). a^2 is computed as exp(2 log a), and the derivative of the sqrt is capped at 1000, both as in
recurrentgemma. The gates read the layer's input (the Conv1D output), never h. The scan runs through
minigriffin.scan.linear_scan; its backward is the reverse scan derived in docs/scan.md. Derivation of the
rest: docs/backprop.md.

Notebook: notebooks/02_rglru.ipynb
"""

from typing import NamedTuple

import numpy as np

from minigriffin.accelerate import accelerated
from minigriffin.scan import linear_scan, linear_scan_backward
from minigriffin.xp import array_namespace

C = 8.0                      # the fixed scalar c of eq. 3
MAX_SQRT_GRADIENT = 1000.0   # recurrentgemma's _MAX_SQRT_GRADIENT


def sigmoid(x):
    """1 / (1 + exp(-x)), written with tanh so no exp overflows for large |x|."""
    xp = array_namespace(x)
    return 0.5 * (1.0 + xp.tanh(0.5 * x))


def softplus(x):
    """log(1 + exp(x)), with torch's linear branch above 20."""
    xp = array_namespace(x)
    return xp.where(x > 20.0, x, xp.log1p(xp.exp(xp.minimum(x, 20.0))))


# ---------------------------------------------------------------------------- block-diagonal linear
class BlockDiagonalCache(NamedTuple):
    x_blocks: object   # (H, B*T, E/H)
    w: object          # (H, E/H, E/H)


def block_diagonal_forward(x, p):
    """y[..., h, j] = sum_i x[..., h, i] w[h, i, j] + b[h, j]. x: (B, T, E); p: {"w": (H, E/H, E/H), "b": (H, E/H)}."""
    xp = array_namespace(x)
    H, blk, _ = p["w"].shape
    B, T, E = x.shape
    x_blocks = x.reshape(B * T, H, blk).transpose(1, 0, 2)              # (H, B*T, E/H) head-major split
    y = xp.matmul(x_blocks, p["w"]) + p["b"][:, None, :]                # (H, B*T, E/H): one matmul per block
    return y.transpose(1, 0, 2).reshape(B, T, E), BlockDiagonalCache(x_blocks, p["w"])


def block_diagonal_backward(dy, cache):
    xp = array_namespace(dy)
    x_blocks, w = cache
    H, N, blk = x_blocks.shape
    B, T, E = dy.shape
    dy_blocks = dy.reshape(N, H, blk).transpose(1, 0, 2)                # (H, B*T, E/H)
    dx = xp.matmul(dy_blocks, w.transpose(0, 2, 1))                     # forward was y = x_blocks @ w
    dw = xp.matmul(x_blocks.transpose(0, 2, 1), dy_blocks)              # (H, E/H, E/H)
    return dx.transpose(1, 0, 2).reshape(B, T, E), {"w": dw, "b": dy_blocks.sum(axis=1)}


# ------------------------------------------------------------------------------------------- RG-LRU
class RGLRUCache(NamedTuple):
    x: object                 # (B, T, E) layer input (the Conv1D output)
    reset: object             # (B, T, 1) bool, segment_pos == 0
    gate_x_cache: BlockDiagonalCache
    gate_a_cache: BlockDiagonalCache
    gate_x: object            # (B, T, E) i_t
    gate_a: object            # (B, T, E) r_t
    a: object                 # (B, T, E) a_t before the reset (needed for dlog_a)
    a_square: object          # (B, T, E) exp(2 log a_t)
    multiplier: object        # (B, T, E) sqrt(1 - a^2), 1 at resets
    a_scan: object            # (B, T, E) a_t with resets zeroed: the scan's multipliers
    h: object                 # (B, T, E) scan output
    h0: object                # (B, E) or None
    softplus_a_param: object  # (E,)
    a_param: object           # (E,)
    backend: str


def init_a_param(rng, width, dtype, min_rad=0.9, max_rad=0.999, eps=1e-8):
    """RG-LRU a_param "uniformly on a ring": a = sigmoid(-a_param) in [min_rad, max_rad] with a^2 uniform."""
    a_square = rng.uniform(min_rad**2 + eps, max_rad**2 + eps, size=width)   # (E,)
    a = np.sqrt(a_square)
    return np.log(1.0 / a - 1.0).astype(dtype)                              # inverse of a = sigmoid(-p)


def rglru_forward(x, p, segment_pos, *, h0=None, backend="auto"):
    """RG-LRU over a sequence (Griffin eqs. 1-4). x: (B, T, E); segment_pos: (B, T);
    p: {"a_param": (E,), "input_gate": {"w", "b"}, "a_gate": {"w", "b"}}; h0: (B, E) or None.
    Returns y: (B, T, E), h_last: (B, E), cache. The scan accumulates in the input dtype, which is float32
    or float64 (recurrentgemma accumulates in float32 even for bfloat16 activations; we have no bfloat16)."""
    xp = array_namespace(x)
    reset = (segment_pos == 0)[..., None]                               # (B, T, 1)
    pre_x, gate_x_cache = block_diagonal_forward(x, p["input_gate"])    # (B, T, E)
    pre_a, gate_a_cache = block_diagonal_forward(x, p["a_gate"])        # (B, T, E)
    gate_x = sigmoid(pre_x)                                             # i_t
    gate_a = sigmoid(pre_a)                                             # r_t
    softplus_a_param = softplus(p["a_param"])                           # (E,)
    log_a = -C * gate_a * softplus_a_param                              # (B, T, E)
    a = xp.exp(log_a)
    a_square = xp.exp(2.0 * log_a)                                      # not a * a: as recurrentgemma
    multiplier = xp.where(reset, 1.0, xp.sqrt(1.0 - a_square))          # (B, T, E)
    normalized_x = x * gate_x * multiplier                              # the scan's input
    a_scan = xp.where(reset, 0.0, a)                                    # a reset drops the state
    h, h_last = linear_scan(xp.ascontiguousarray(normalized_x), xp.ascontiguousarray(a_scan), h0,
                            backend=backend)
    cache = RGLRUCache(x, reset, gate_x_cache, gate_a_cache, gate_x, gate_a, a, a_square, multiplier,
                       a_scan, h, h0, softplus_a_param, p["a_param"], backend)
    return h, h_last, cache


def rglru_backward(dy, dh_last, cache):
    """dy: (B, T, E), dh_last: (B, E) or None -> dx: (B, T, E), dh0: (B, E) or None, grads (keys of p)."""
    xp = array_namespace(dy)
    c = cache
    # forward was h = scan(normalized_x, a_scan, h0)
    dnormalized_x, da_scan, dh0 = linear_scan_backward(xp.ascontiguousarray(dy), dh_last, c.a_scan, c.h, c.h0,
                                                       backend=c.backend)
    # d softplus / dx = sigmoid(x), and 1 on softplus's linear branch above 20 (as torch)
    sigmoid_a_param = xp.where(c.a_param > 20.0, 1.0, sigmoid(c.a_param))
    dx, dpre_x, dpre_a, dsoftplus = rglru_gates_backward(dnormalized_x, da_scan, c)
    da_param = dsoftplus * sigmoid_a_param                              # softplus_a_param = softplus(a_param)
    dx_from_x_gate, input_gate_grads = block_diagonal_backward(dpre_x, c.gate_x_cache)
    dx_from_a_gate, a_gate_grads = block_diagonal_backward(dpre_a, c.gate_a_cache)
    dx = dx + dx_from_x_gate + dx_from_a_gate
    return dx, dh0, {"a_param": da_param, "input_gate": input_gate_grads, "a_gate": a_gate_grads}


@accelerated
def rglru_gates_backward(dnormalized_x, da_scan, c):
    """From the scan's gradients to the gates' pre-activations: (dx via the gated input, dpre_x, dpre_a,
    dsoftplus, the gradient of softplus(a_param)). Each line undoes one line of rglru_forward.
    (minigriffin/fast/fused.py runs these lines in one pass over memory for NumPy arrays.)"""
    xp = array_namespace(dnormalized_x)
    da = xp.where(c.reset, 0.0, da_scan)                                # a_scan = where(reset, 0, a)
    gated_x = c.x * c.gate_x
    # normalized_x = gated_x * multiplier
    dmultiplier = xp.where(c.reset, 0.0, dnormalized_x * gated_x)       # multiplier = 1 at resets
    dgated_x = dnormalized_x * c.multiplier
    # multiplier = sqrt(z), z = 1 - a^2, with d sqrt/dz capped at MAX_SQRT_GRADIENT (SqrtBoundDerivative)
    z = 1.0 - c.a_square
    dz = dmultiplier / xp.sqrt(xp.maximum(4.0 * z, 1.0 / MAX_SQRT_GRADIENT**2))
    # a = exp(log_a), a_square = exp(2 log_a), z = 1 - a_square
    dlog_a = c.a * da - 2.0 * c.a_square * dz
    # log_a = -C * gate_a * softplus(a_param)
    dgate_a = -C * c.softplus_a_param * dlog_a
    E = c.x.shape[-1]
    dsoftplus = (-C * c.gate_a * dlog_a).reshape(-1, E).sum(axis=0)
    # gated_x = x * gate_x
    dgate_x = dgated_x * c.x
    dx = dgated_x * c.gate_x
    # gate = sigmoid(pre): dpre = dgate * gate * (1 - gate)
    dpre_x = dgate_x * c.gate_x * (1.0 - c.gate_x)
    dpre_a = dgate_a * c.gate_a * (1.0 - c.gate_a)
    return dx, dpre_x, dpre_a, dsoftplus

