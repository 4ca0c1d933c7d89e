"""The Complex-Gated Linear Recurrent Unit, CG-LRU (Griffin Appendix B; recurrentgemma jax/layers.py, RGLRU with
only_real=False), forward and backward.

    x~_t = x_t[:E/2] + i x_t[E/2:]              the real input's two halves read as E/2 complex numbers
    r_t = sigmoid(BD_a(x_t))                    recurrence gate, E -> E/2 (block-diagonal, as eq. 1)
    i_t = sigmoid(BD_x(x_t))                    input gate, E -> E/2 (as eq. 2)
    log |a_t| = -8 r_t softplus(a_param)        |a_t| = sigmoid(Lambda)^(c r_t), Lambda = -a_param, c = 8
    arg a_t = r_t a_imag_param                  a~ = sigmoid(Lambda) e^(i theta), theta = a_imag_param; the
                                                phase has no factor 8 in recurrentgemma (the paper: a~^(c r_t))
    h~_t = a_t h~_{t-1} + sqrt(1 - |a_t|^2) (i_t x~_t)
    y_t = [Re h~_t ; Im h~_t]                   (B, T, E) again: real parts first (complex_to_merged)

At a document start (segment_pos == 0) the state is dropped (a_t = 0) and the input is not rescaled
(multiplier 1); |a_t|^2 is exp(2 log |a_t|), and the derivative of the sqrt is capped at 1000, all as in the
real unit (minigriffin/rglru.py, whose sigmoid, softplus and constants this module shares). The recurrence is
the complex linear scan of minigriffin.scan; its adjoint is derived in docs/backprop.md, "The complex scan's
adjoint", and the rest of the backward in the section after it ("CG-LRU"). Complex gradients follow one
convention throughout: for a real loss L and complex z, dz = dL/dRe z + i dL/dIm z.

The state crosses the module boundary as recurrentgemma's cache does, a real (B, E) array [Re h ; Im h]; h0 may
also be given as the complex (B, E/2) state itself (its gradient then comes back complex too).
"""

from typing import NamedTuple

import numpy as np

from minigriffin.rglru import C, MAX_SQRT_GRADIENT, BlockDiagonalCache, init_a_param, sigmoid, softplus
from minigriffin.scan import linear_scan, linear_scan_backward
from minigriffin.xp import array_namespace

A_IMAG_MAX_RAD = 0.1   # recurrentgemma rnn_imag_param_init(max_rad=0.1): a_imag_param ~ U(0, 0.1 pi)


# ---------------------------------------------------------------------------- complex <-> real pairs
def complex_dtype(real_dtype):
    """complex64 for float32, complex128 for float64 (the scan accumulates in the model's precision)."""
    return np.result_type(real_dtype, np.complex64)


def merged_to_complex(v):
    """Real (..., E), real parts in the first half -> complex (..., E/2) (recurrentgemma merged_to_complex)."""
    xp = array_namespace(v)
    n = v.shape[-1] // 2
    z = xp.empty(v.shape[:-1] + (n,), dtype=complex_dtype(v.dtype))    # (..., E/2)
    z.real = v[..., :n]                                                 # exact: no 1j * x rounding
    z.imag = v[..., n:]
    return z


def complex_to_merged(z):
    """Complex (..., E/2) -> real (..., E) = [Re z ; Im z] (recurrentgemma complex_to_merged)."""
    xp = array_namespace(z)
    return xp.concatenate([z.real, z.imag], axis=-1)                    # (..., E)


# ---------------------------------------------------------------------------- init
def cglru_init(rng, width, num_heads, dtype="float64", *, min_rad=0.9, max_rad=0.999, w_init_variance_scale=1.0):
    """CG-LRU parameters drawn from the NumPy Generator `rng`, with recurrentgemma's names and initialisers
    (jax/layers.py RGLRU.setup, only_real=False). width E (even), num_heads H (H divides E/2). Returns
    {"a_param": (E/2,), "a_imag_param": (E/2,), "input_gate": {"w": (H, E/H, E/(2H)), "b": (H, E/(2H))},
     "a_gate": {"w", "b"} likewise}.
    a_param: |a| = sigmoid(-a_param) with |a|^2 uniform in [min_rad^2, max_rad^2] (rnn_real_param_init);
    a_imag_param: U(0, 0.1 pi) (rnn_imag_param_init); biases 0. Gate weights N(0, scale / E): flax's
    variance_scaling(fan_in) counts the block axis in the fan-in of an (H, E/H, E/(2H)) kernel, so the fan-in
    is E, not E/H (the torch port's real unit, and minigriffin's, use E/H; the torch port has no CG-LRU).
    """
    E, H = width, num_heads
    if E % 2 or (E // 2) % H:
        raise ValueError(f"CG-LRU width {E} must be even and E/2 = {E // 2} a multiple of num_heads {H}")
    if not min_rad < max_rad:
        raise ValueError(f"min_rad {min_rad} must be below max_rad {max_rad} (recurrentgemma asserts < 0.999)")
    dt = np.dtype(dtype)
    n, blk_in, blk_out = E // 2, E // H, E // (2 * H)
    std = np.sqrt(w_init_variance_scale / E)

    def gate():
        return {"w": (rng.standard_normal((H, blk_in, blk_out)) * std).astype(dt),   # (H, E/H, E/(2H))
                "b": np.zeros((H, blk_out), dtype=dt)}                             # (H, E/(2H))

    return {"a_param": init_a_param(rng, n, dt, min_rad=min_rad, max_rad=max_rad),   # (E/2,)
            "a_imag_param": (np.pi * A_IMAG_MAX_RAD * rng.uniform(size=n)).astype(dt),  # (E/2,)
            "input_gate": gate(), "a_gate": gate()}


# ---------------------------------------------------------------------------- block-diagonal gates, E -> E/2
def gate_linear_forward(x, p):
    """y[..., h, j] = sum_i x[..., h, i] w[h, i, j] + b[h, j], blocks of E/H inputs to E/(2H) outputs
    (recurrentgemma BlockDiagonalLinear with width_output = E/2). x: (B, T, E); p: {"w": (H, E/H, E/(2H)),
    "b": (H, E/(2H))} -> y: (B, T, E/2), cache."""
    xp = array_namespace(x)
    H, blk_in, blk_out = p["w"].shape
    B, T, E = x.shape
    x_blocks = x.reshape(B * T, H, blk_in).transpose(1, 0, 2)           # (H, B*T, E/H) head-major split
    y = xp.matmul(x_blocks, p["w"]) + p["b"][:, None, :]                # (H, B*T, E/(2H))
    return y.transpose(1, 0, 2).reshape(B, T, H * blk_out), BlockDiagonalCache(x_blocks, p["w"])


def gate_linear_backward(dy, cache):
    """dy: (B, T, E/2) -> dx: (B, T, E), {"w": (H, E/H, E/(2H)), "b": (H, E/(2H))}."""
    xp = array_namespace(dy)
    x_blocks, w = cache
    H, N, blk_in = x_blocks.shape
    B, T, _ = dy.shape
    dy_blocks = dy.reshape(N, H, w.shape[2]).transpose(1, 0, 2)         # (H, B*T, E/(2H))
    dx = xp.matmul(dy_blocks, w.transpose(0, 2, 1))                     # forward was y = x_blocks @ w
    dw = xp.matmul(x_blocks.transpose(0, 2, 1), dy_blocks)              # (H, E/H, E/(2H))
    return dx.transpose(1, 0, 2).reshape(B, T, H * blk_in), {"w": dw, "b": dy_blocks.sum(axis=1)}


# ---------------------------------------------------------------------------- CG-LRU
class CGLRUCache(NamedTuple):
    x_complex: object         # (B, T, E/2) complex x~ = x1 + i x2
    reset: object             # (B, T, 1) bool, segment_pos == 0
    gate_x_cache: BlockDiagonalCache
    gate_a_cache: BlockDiagonalCache
    gate_x: object            # (B, T, E/2) i_t
    gate_a: object            # (B, T, E/2) r_t
    a: object                 # (B, T, E/2) complex a_t before the reset
    a_square: object          # (B, T, E/2) |a_t|^2 = exp(2 log |a_t|)
    multiplier: object        # (B, T, E/2) sqrt(1 - |a_t|^2), 1 at resets
    a_scan: object            # (B, T, E/2) complex a_t with resets zeroed: the scan's multipliers
    h: object                 # (B, T, E/2) complex scan output
    h0: object                # (B, E/2) complex, or None
    h0_merged: bool           # h0 came as the real (B, E) pair: dh0 goes back in that form
    softplus_a_param: object  # (E/2,)
    a_param: object           # (E/2,)
    a_imag_param: object      # (E/2,)
    backend: str


def complex_state(h0, B, n, dtype):
    """(h0 as a complex (B, E/2) array or None, whether it came merged). h0: None, the real pair (B, E) in the
    model dtype, or complex (B, E/2) in the matching complex dtype."""
    if h0 is None:
        return None, False
    if h0.shape == (B, 2 * n) and h0.dtype == dtype:
        return merged_to_complex(h0), True
    if h0.shape == (B, n) and h0.dtype == complex_dtype(dtype):
        return h0, False
    raise ValueError(f"CG-LRU h0 must be the real pair [Re h ; Im h] of shape {(B, 2 * n)} {np.dtype(dtype)} or "
                     f"complex {(B, n)} {complex_dtype(dtype)}, got {tuple(h0.shape)} {h0.dtype}")


def cglru_forward(x, p, segment_pos, *, h0=None, backend="auto"):
    """CG-LRU over a sequence (Griffin Appendix B). x: (B, T, E) real; segment_pos: (B, T);
    p: {"a_param": (E/2,), "a_imag_param": (E/2,), "input_gate": {"w", "b"}, "a_gate": {"w", "b"}} (cglru_init);
    h0: (B, E) real [Re h ; Im h], or (B, E/2) complex, or None.
    Returns y: (B, T, E) = [Re h~ ; Im h~], h_last: (B, E) = [Re ; Im] of the last state, cache. The scan runs
    in complex128 for float64 input and complex64 for float32 (recurrentgemma: complex64, see the oracle test)."""
    xp = array_namespace(x)
    B, T, E = x.shape
    if E % 2 or p["a_param"].shape != (E // 2,):
        raise ValueError(f"CG-LRU: x's width E = {E} must be even and twice a_param's {tuple(p['a_param'].shape)}")
    h0_complex, h0_merged = complex_state(h0, B, E // 2, x.dtype)
    reset = (segment_pos == 0)[..., None]                               # (B, T, 1)
    pre_x, gate_x_cache = gate_linear_forward(x, p["input_gate"])       # (B, T, E/2)
    pre_a, gate_a_cache = gate_linear_forward(x, p["a_gate"])           # (B, T, E/2)
    gate_x = sigmoid(pre_x)                                             # i_t
    gate_a = sigmoid(pre_a)                                             # r_t
    softplus_a_param = softplus(p["a_param"])                           # (E/2,)
    log_a = -C * gate_a * softplus_a_param                              # (B, T, E/2) log |a_t|
    phase = p["a_imag_param"] * gate_a                                  # (B, T, E/2) arg a_t: no factor C
    a = xp.exp(log_a + 1j * phase)                                      # (B, T, E/2) complex, as jnp.exp
    a_square = xp.exp(2.0 * log_a)                                      # |a_t|^2, real, as recurrentgemma
    multiplier = xp.where(reset, 1.0, xp.sqrt(1.0 - a_square))          # (B, T, E/2)
    x_complex = merged_to_complex(x)                                    # (B, T, E/2) x~_t
    normalized_x = x_complex * gate_x * multiplier                      # the scan's input
    a_scan = xp.where(reset, 0.0, a)                                    # a reset drops the state
    h, h_last = linear_scan(xp.ascontiguousarray(normalized_x), xp.ascontiguousarray(a_scan), h0_complex,
                            backend=backend)                            # (B, T, E/2), (B, E/2) complex
    cache = CGLRUCache(x_complex, reset, gate_x_cache, gate_a_cache, gate_x, gate_a, a, a_square, multiplier,
                       a_scan, h, h0_complex, h0_merged, softplus_a_param, p["a_param"], p["a_imag_param"],
                       backend)
    return complex_to_merged(h), complex_to_merged(h_last), cache


def cglru_backward(dy, dh_last, cache):
    """dy: (B, T, E), dh_last: (B, E) (the gradient of h_last, [Re ; Im]) or None -> dx: (B, T, E),
    dh0 (in the form h0 was given: (B, E) real, or (B, E/2) complex dL/dRe + i dL/dIm) or None,
    grads (keys of p). Each line undoes one line of cglru_forward (docs/backprop.md, "CG-LRU")."""
    xp = array_namespace(dy)
    c = cache
    # forward was y = [Re h ; Im h], so dh = dL/dRe h + i dL/dIm h
    dh = merged_to_complex(dy)                                          # (B, T, E/2)
    dh_last = None if dh_last is None else merged_to_complex(dh_last)   # (B, E/2)
    # forward was h = scan(normalized_x, a_scan, h0): the complex adjoint
    dnormalized_x, da_scan, dh0 = linear_scan_backward(dh, dh_last, c.a_scan, c.h, c.h0, backend=c.backend)
    da = xp.where(c.reset, 0.0, da_scan)                                # a_scan = where(reset, 0, a)
    # a = exp(w), w = log_a + i phase, holomorphic with da/dw = a: dw = conj(a) da
    dw = xp.conj(c.a) * da                                              # (B, T, E/2) complex
    # normalized_x = gated_x * multiplier, gated_x = x~ * gate_x (recomputed: one product); a real factor s
    # of a complex product gets ds = Re(conj(other factor) * dproduct)
    gated_x = c.x_complex * c.gate_x
    dmultiplier = xp.where(c.reset, 0.0, (xp.conj(gated_x) * dnormalized_x).real)   # multiplier = 1 at resets
    dgated_x = dnormalized_x * c.multiplier
    # multiplier = sqrt(z), z = 1 - |a|^2, with d sqrt/dz capped at MAX_SQRT_GRADIENT (as rglru_backward)
    z = 1.0 - c.a_square
    dz = dmultiplier / xp.sqrt(xp.maximum(4.0 * z, 1.0 / MAX_SQRT_GRADIENT**2))
    # a_square = exp(2 log_a), z = 1 - a_square; and log_a = Re w, phase = Im w
    dlog_a = dw.real - 2.0 * c.a_square * dz
    dphase = dw.imag
    # log_a = -C * gate_a * softplus(a_param);  phase = a_imag_param * gate_a
    n = c.gate_a.shape[-1]
    dgate_a = -C * c.softplus_a_param * dlog_a + c.a_imag_param * dphase
    dsoftplus = (-C * c.gate_a * dlog_a).reshape(-1, n).sum(axis=0)     # (E/2,)
    da_imag_param = (c.gate_a * dphase).reshape(-1, n).sum(axis=0)      # (E/2,)
    # d softplus / dx = sigmoid(x), and 1 on softplus's linear branch above 20 (as rglru_backward)
    da_param = dsoftplus * xp.where(c.a_param > 20.0, 1.0, sigmoid(c.a_param))
    # gated_x = x~ * gate_x
    dgate_x = (xp.conj(c.x_complex) * dgated_x).real
    dx_complex = dgated_x * c.gate_x                                    # (B, T, E/2) complex
    # gate = sigmoid(pre): dpre = dgate * gate * (1 - gate)
    dpre_x = dgate_x * c.gate_x * (1.0 - c.gate_x)
    dpre_a = dgate_a * c.gate_a * (1.0 - c.gate_a)
    dx_from_x_gate, input_gate_grads = gate_linear_backward(dpre_x, c.gate_x_cache)
    dx_from_a_gate, a_gate_grads = gate_linear_backward(dpre_a, c.gate_a_cache)
    # x~ = x[..., :E/2] + i x[..., E/2:]: dx = [Re dx~ ; Im dx~], plus both gates' paths
    dx = complex_to_merged(dx_complex) + dx_from_x_gate + dx_from_a_gate
    if dh0 is not None and c.h0_merged:
        dh0 = complex_to_merged(dh0)                                    # (B, E) as h0 was given
    return dx, dh0, {"a_param": da_param, "a_imag_param": da_imag_param, "input_gate": input_gate_grads,
                     "a_gate": a_gate_grads}
