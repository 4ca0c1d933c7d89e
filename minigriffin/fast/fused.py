"""Fused CPU kernels (Numba) for the elementwise chains of a training step: the same formulas, fewer passes.

After the matmuls, a step's time goes to chains of elementwise NumPy operations, each of which reads and
writes a whole (B, T, F) array: GeLU's backward is ten such passes, the RG-LRU's backward about twenty.
The readable NumPy versions in layers.py and rglru.py remain the definition (and the code CuPy arrays run);
for NumPy arrays, these kernels compute the same expressions in one pass over memory. The one thing they
leave to NumPy is tanh: NumPy's is vectorised (SIMD), while a tanh inside a Numba loop is a scalar libm call,
several times slower (docs/benchmarks.md). So GeLU's forward is a Numba pass for the polynomial, NumPy's tanh
in place, and a Numba pass for the rest: 3 passes, not 8.

Rules for every kernel here:
  - no `fastmath`: each multiply and add is IEEE, as in NumPy (the order may differ, so float64 results agree
    with the NumPy code to ~1e-16 relative, not bit for bit; tests/test_accelerate.py checks float32 and float64);
  - constants are passed in the array's dtype, so float32 arithmetic stays float32 (a Python float literal
    would make Numba compute in float64, unlike NumPy, which casts Python scalars to the array's dtype);
  - inputs are 2-D C-contiguous (rows, channels) views of the (B, T, ...) activations;
  - each kernel has a serial and a multithreaded build. Inside a data-parallel worker (minigriffin.fast.parallel,
    one Numba thread) the serial one runs, so two Python threads never launch parallel regions at once
    (Numba's fallback "workqueue" threading layer does not allow that).

The functions at the end take and return exactly what the reference functions they stand for do
(layers.gelu_tanh_forward, layers.gelu_tanh_backward, layers.gated_gelu_forward, layers.gated_gelu_backward,
rglru.rglru_gates_backward); minigriffin/fast/__init__.py registers them, for NumPy float arrays only.
MINIGRIFFIN_REFERENCE=1 turns them off with every other accelerator. Numba is imported and the kernels
compiled (or loaded from Numba's cache) on first use, never at import.
"""

import functools

import numpy as np

from minigriffin.layers import GELU_C
from minigriffin.layers import GeluCache
from minigriffin.rglru import C as RGLRU_C
from minigriffin.rglru import MAX_SQRT_GRADIENT

PARALLEL_MIN_ELEMENTS = 1 << 16          # below this, starting the thread team costs more than the work


def numpy_floats(*arrays):
    """Whether the fused kernels can take these arrays: plain NumPy float arrays (CuPy arrays run the reference)."""
    return all(type(arr) is np.ndarray and arr.dtype in (np.float32, np.float64) for arr in arrays)


def _rows(arr):
    """(rows, channels) C-contiguous view of a (..., C) array (a copy only if it is not contiguous)."""
    return np.ascontiguousarray(arr).reshape(-1, arr.shape[-1])


prange = range   # numba.prange once the kernels are built (_kernels); the bodies below read as plain Python


@functools.cache
def _kernels():
    """Every kernel body compiled twice, serial and multithreaded (imports Numba; compiles or loads its cache)."""
    global prange
    import numba
    prange = numba.prange                            # must be set before the first compilation
    bodies = {"gelu_inner": _gelu_inner_body, "gelu_outer": _gelu_outer_body, "gelu_backward": _gelu_backward_body,
              "gate_outer": _gate_outer_body, "gate_backward": _gate_backward_body,
              "rglru_backward": _rglru_backward_body}
    from minigriffin.scan.numba_kernels import variant   # a renamed copy per build: its own on-disk cache entry
    return {name: (variant(body, "_serial"), variant(body, "_parallel", parallel=True))
            for name, body in bodies.items()}


def _pick(name, size):
    """The multithreaded build for big inputs when Numba may use more than one thread, else the serial one."""
    import numba
    serial, parallel = _kernels()[name]
    return parallel if size >= PARALLEL_MIN_ELEMENTS and numba.get_num_threads() > 1 else serial


def _c(arr, value):
    return arr.dtype.type(value)


# ---------------------------------------------------------------------------------------------- GeLU
def _gelu_inner_body(x, u, k1, c):  # pragma: no cover - compiled by Numba
    """u = c (x + 0.044715 x^3), written as (x^2 * 0.044715 c + c) * x as layers.gelu_tanh_forward does."""
    for r in prange(x.shape[0]):
        for j in range(x.shape[1]):
            v = x[r, j]
            u[r, j] = (v * v * k1 + c) * v


def _gelu_outer_body(x, t, out, half, one):  # pragma: no cover - compiled by Numba
    """out = 0.5 x (1 + t)."""
    for r in prange(x.shape[0]):
        for j in range(x.shape[1]):
            out[r, j] = (t[r, j] + one) * x[r, j] * half


def _gelu_backward_body(dy, x, t, grad, half, one, k3, c):  # pragma: no cover - compiled by Numba
    """grad = dy * 0.5 ((1 + t) + x (1 - t^2) c (1 + 3 * 0.044715 x^2))   (docs/backprop.md, GeLU)."""
    for r in prange(x.shape[0]):
        for j in range(x.shape[1]):
            v = x[r, j]
            tv = t[r, j]
            du_dx = v * v * k3 + c
            grad[r, j] = ((tv + one) + v * (one - tv * tv) * du_dx) * half * dy[r, j]




def gelu_tanh_forward(x):
    """layers.gelu_tanh_forward in 3 passes: (out, GeluCache(x, tanh_u)); x: (..., F)."""
    x2 = _rows(x)
    tanh_u = np.empty_like(x2)
    _pick("gelu_inner", x2.size)(x2, tanh_u, _c(x2, 0.044715 * GELU_C), _c(x2, GELU_C))
    np.tanh(tanh_u, out=tanh_u)                                  # NumPy's SIMD tanh, in place
    out = np.empty_like(x2)
    _pick("gelu_outer", x2.size)(x2, tanh_u, out, _c(x2, 0.5), _c(x2, 1.0))
    return out.reshape(x.shape), GeluCache(x, tanh_u.reshape(x.shape))


def gelu_tanh_backward(dy, cache):
    """layers.gelu_tanh_backward in one pass: dx, (..., F)."""
    x, tanh_u = cache
    x2 = _rows(x)
    grad = np.empty_like(x2)
    _pick("gelu_backward", x2.size)(_rows(dy), x2, _rows(tanh_u), grad, _c(x2, 0.5), _c(x2, 1.0),
                                    _c(x2, 3 * 0.044715 * GELU_C), _c(x2, GELU_C))
    return grad.reshape(x.shape)


# -------------------------------------------------------------------------------------- gated MLP gate
def _gate_outer_body(x, t, up1, gate, hidden, half, one):  # pragma: no cover - compiled by Numba
    """gate = 0.5 x (1 + t) = gelu(branch 0); hidden = gate * branch 1."""
    for r in prange(x.shape[0]):
        for j in range(x.shape[1]):
            g = (t[r, j] + one) * x[r, j] * half
            gate[r, j] = g
            hidden[r, j] = g * up1[r, j]


def _gate_backward_body(dhidden, up0, up1, t, gate, dup0, dup1, half, one, k3, c):  # pragma: no cover
    """dup1 = dhidden * gate; dup0 = gelu'(up0) * dhidden * up1 (hidden = gelu(up0) * up1)."""
    for r in prange(up0.shape[0]):
        for j in range(up0.shape[1]):
            dh = dhidden[r, j]
            dup1[r, j] = dh * gate[r, j]
            v = up0[r, j]
            tv = t[r, j]
            du_dx = v * v * k3 + c
            dup0[r, j] = ((tv + one) + v * (one - tv * tv) * du_dx) * half * (dh * up1[r, j])




def gated_gelu_forward(up):
    """layers.gated_gelu_forward in 3 passes: up (2, ..., F) -> gate = gelu(up[0]), hidden = gate * up[1],
    GeluCache(up[0], tanh_u)."""
    up0, up1 = _rows(up[0]), _rows(up[1])
    tanh_u = np.empty_like(up0)
    _pick("gelu_inner", up0.size)(up0, tanh_u, _c(up0, 0.044715 * GELU_C), _c(up0, GELU_C))
    np.tanh(tanh_u, out=tanh_u)
    gate, hidden = np.empty_like(up0), np.empty_like(up0)
    _pick("gate_outer", up0.size)(up0, tanh_u, up1, gate, hidden, _c(up0, 0.5), _c(up0, 1.0))
    shape = up.shape[1:]
    return gate.reshape(shape), hidden.reshape(shape), GeluCache(up[0], tanh_u.reshape(shape))


def gated_gelu_backward(dhidden, up, gate, gelu_cache):
    """layers.gated_gelu_backward in one pass: dup (2, ..., F), the gradients of both branches."""
    tanh_u = gelu_cache.tanh_u
    dup = np.empty(up.shape, up.dtype)                           # (2, ..., F)
    up0 = _rows(up[0])
    _pick("gate_backward", up0.size)(_rows(dhidden), up0, _rows(up[1]), _rows(tanh_u), _rows(gate),
                                     dup[0].reshape(up0.shape), dup[1].reshape(up0.shape), _c(up0, 0.5),
                                     _c(up0, 1.0), _c(up0, 3 * 0.044715 * GELU_C), _c(up0, GELU_C))
    return dup


# ------------------------------------------------------------------------------------ RG-LRU backward
def _rglru_backward_body(dnx, da_scan, reset, x, gate_x, gate_a, a, a_square, multiplier, softplus_a,
                         dx, dpre_x, dpre_a, da_param_rows, one, two, four, min_4z, neg_c):  # pragma: no cover
    """Everything rglru_backward does between the scan's backward and the gates' block-diagonal backward,
    per element, in the same order of operations (see rglru.py for each line's derivation).
    da_param_rows[r] gets row r's sum over channels of -C gate_a dlog_a, per channel: (rows, E) -> summed later."""
    for r in prange(x.shape[0]):
        is_reset = reset[r]
        for j in range(x.shape[1]):
            g_nx = dnx[r, j]
            xv = x[r, j]
            gx = gate_x[r, j]
            ga = gate_a[r, j]
            a_sq = a_square[r, j]
            if is_reset:                                         # a_scan = 0 and multiplier = 1 at a reset
                da = a_sq * 0
                dmultiplier = da
            else:
                da = da_scan[r, j]
                dmultiplier = g_nx * (xv * gx)                   # normalized_x = (x * gate_x) * multiplier
            dgated_x = g_nx * multiplier[r, j]
            z = one - a_sq
            dz = dmultiplier / np.sqrt(max(four * z, min_4z))    # sqrt's derivative capped (SqrtBoundDerivative)
            dlog_a = a[r, j] * da - two * a_sq * dz
            dgate_a = neg_c * softplus_a[j] * dlog_a
            da_param_rows[r, j] = neg_c * ga * dlog_a
            dx[r, j] = dgated_x * gx
            dpre_x[r, j] = dgated_x * xv * gx * (one - gx)       # sigmoid' = gate (1 - gate)
            dpre_a[r, j] = dgate_a * ga * (one - ga)




def rglru_gates_backward(dnormalized_x, da_scan, c):
    """rglru.rglru_gates_backward in one pass: (dx from the gated input, dpre_x, dpre_a, dsoftplus = the
    gradient of softplus(a_param)). dnormalized_x, da_scan: (B, T, E); c: the RGLRUCache."""
    reset, max_sqrt_gradient, C = c.reset, MAX_SQRT_GRADIENT, RGLRU_C
    x = _rows(c.x)
    rows, E = x.shape
    dx, dpre_x, dpre_a, da_param_rows = (np.empty_like(x) for _ in range(4))
    _pick("rglru_backward", x.size)(_rows(dnormalized_x), _rows(da_scan), np.ascontiguousarray(reset).reshape(-1),
                                    x, _rows(c.gate_x), _rows(c.gate_a), _rows(c.a), _rows(c.a_square),
                                    _rows(c.multiplier), np.ascontiguousarray(c.softplus_a_param), dx, dpre_x,
                                    dpre_a, da_param_rows, _c(x, 1.0), _c(x, 2.0), _c(x, 4.0),
                                    _c(x, 1.0 / max_sqrt_gradient**2), _c(x, -C))
    shape = c.x.shape
    return dx.reshape(shape), dpre_x.reshape(shape), dpre_a.reshape(shape), da_param_rows.sum(axis=0)
