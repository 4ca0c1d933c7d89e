"""The linear scan h_t = a_t * h_{t-1} + x_t behind one interface, with interchangeable backends.

    linear_scan(x, a, h0=None, *, reverse=False, backend="auto") -> (h, h_last)
    linear_scan_backward(dh, dh_last, a, h, h0=None, *, reverse=False, backend="auto") -> (dx, da, dh0)

Shapes: x, a, h, dh: (B, T, D); h0, h_last, dh_last: (B, D). The argument order and the return value
follow recurrentgemma's `linear_scan`. This is the core of the RG-LRU (Griffin paper, eq. 4:
h_t = a_t ⊙ h_{t-1} + sqrt(1 - a_t²) ⊙ (i_t ⊙ x_t), where everything but the recurrence is elementwise).
Real (float32, float64) and complex (complex64, complex128) scans take the same calls on every backend; the
complex one is the CG-LRU's (Griffin Appendix B, minigriffin/cglru.py).

Backends are modules exporting one primitive, `scan(x, a, h0, reverse, out)`, loaded lazily by name from a
registry (registry.py: `backend_names()`, `unavailable_reason(name)`, `available_backends()`): the plain NumPy
loop (reference.py, the definition), Blelloch's parallel scan (blelloch.py), Numba on the CPU (numba_cpu.py)
and CUDA through CuPy (the cuda/ subpackage). `register_backend(name, scan)` adds one of your own (and
`unregister_backend(name)` removes it); minigriffin.testing.check_scan_backend tests it against the reference
(docs/testing-kernels.md). The backward is written once, here, on top of that primitive, so every backend,
registered ones included, gets its backward for free. Two optional hooks let a backend speed up the
backward's one elementwise product da_t = g_t * h_prev without writing a backward of its own:
`scan_times_state(x, a, h0, reverse, out, q, prod)`, a scan that also writes prod = (state entering each
step) * q as it streams past (numba: it saves a pass over g), or else `multiply(p, q, out)`; without
either the array library's multiply is used. See docs/scan.md for the derivation.

Notebook: notebooks/01_linear_scan.ipynb
"""

import importlib.util  # noqa: F401  (the registry's find_spec; tests patch it as scan.importlib.util)

import numpy as np

from minigriffin.accelerate import reference_only
from minigriffin.scan.registry import BUILTIN_BACKENDS as _REGISTRY  # noqa: F401  (tests add shims to it)
from minigriffin.scan.registry import (  # noqa: F401  (re-exported: the public registry)
    BackendUnavailable,
    available_backends,
    backend_names,
    load_backend,
    register_backend,
    unavailable_reason,
    unregister_backend,
)
from minigriffin.xp import array_namespace, check_same_device, is_device_array

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_COMPLEX_DTYPES = (np.dtype(np.complex64), np.dtype(np.complex128))


def linear_scan(x, a, h0=None, *, reverse=False, backend="auto", out=None):
    """h_t = a_t * h_{t-1} + x_t along axis 1 (Griffin eq. 4's recurrence; recurrentgemma `linear_scan`).

    x, a: (B, T, D) float32 or float64, C-contiguous, same dtype; or both complex64 or complex128 (a complex
    scan: the CG-LRU's, Griffin Appendix B). h0: (B, D) of that dtype, or None (zeros).
    reverse=True runs from t = T-1 down to 0: h_t = a_t * h_{t+1} + x_t, with h0 standing for h_T.
    backend: "auto" (numba on CPU, cupy for CuPy arrays), or a name from available_backends().
    out: optional (B, T, D) C-contiguous buffer for h (reusing one avoids paging in fresh memory each call);
    it must not overlap x or a.
    Returns h: (B, T, D), h_last: (B, D) (the state after the last step: h[:, -1], or h[:, 0] if reverse).
    Accumulates in the input dtype. Raises ValueError naming the input if any of them holds NaN or inf.
    """
    impl = _load(_resolve(backend, x))
    _check_inputs(x, a, h0)
    xp = array_namespace(x, a, h0)
    B, T, D = x.shape
    h0_or_zeros = xp.zeros((B, D), dtype=x.dtype) if h0 is None else h0   # (B, D)
    h = _output_buffer(out, x, (x, a), "out")                              # (B, T, D)
    with np.errstate(invalid="ignore", over="ignore"):   # non-finite results get a clear error below
        impl.scan(x, a, h0_or_zeros, reverse, h)
    h_last = (h[:, 0] if reverse else h[:, -1]).copy()                    # (B, D)
    _raise_if_not_finite(h_last, (("a", a), ("x", x), ("h0", h0)))
    return h, h_last


def linear_scan_backward(dh, dh_last, a, h, h0=None, *, reverse=False, backend="auto", out=None):
    """Gradients of linear_scan: given dL/dh (B, T, D) and dL/dh_last (B, D) or None, return (dx, da, dh0).

    a, h: the forward's multipliers and output; h0: the forward's h0 (None gives dh0 = None).
    out: optional pair of (B, T, D) buffers (dx, da), as for linear_scan. backend: as for linear_scan.
    Derivation (docs/scan.md, section 2), for reverse=False. With g_t the total gradient reaching h_t
    (directly as dh_t, and through h_{t+1} = a_{t+1} h_t + x_{t+1}):
        g_t  = dh_t + a_{t+1} g_{t+1},   g_{T-1} = dh_{T-1} + dh_last    (a reverse scan of dh, a shifted by one)
        dx_t = g_t
        da_t = g_t * h_{t-1}                                             (h_{-1} = h0, or 0 without one)
        dh0  = a_0 * g_0
    reverse=True swaps "next" and "previous" (the forward ran from t = T-1 down to 0).
    Complex scans: with a real loss and gradients written dL/dz = dL/dRe z + i dL/dIm z, every multiplier
    above is conjugated (g_t = dh_t + conj(a_{t+1}) g_{t+1}, da_t = g_t conj(h_{t-1}), dh0 = conj(a_0) g_0).
    That is the real adjoint run on conj(dh), conj(dh_last), then conjugated (docs/backprop.md, "The complex
    scan's adjoint"), which is how it is computed: one extra copy (conj(dh)), the same primitive.
    The scan runs through the forward's backend primitive, so every backend gets this backward for free.
    """
    impl = _load(_resolve(backend, dh))
    _check_backward_inputs(dh, dh_last, a, h, h0)
    g, da = _backward_outputs(out, dh, a, h)                 # (B, T, D) each
    xp = array_namespace(dh)
    named = (("dh", dh), ("dh_last", dh_last), ("a", a))     # the caller's arrays, for error messages
    conjugate = dh.dtype in _COMPLEX_DTYPES                  # complex: the real adjoint of the conjugates
    if conjugate:
        dh = xp.conj(dh)                                     # (B, T, D) conj(dh)
        dh_last = None if dh_last is None else xp.conj(dh_last)
    T = dh.shape[1]
    first, last = (T - 1, 0) if reverse else (0, T - 1)     # the forward's first and last step
    at_t, at_next = _step_pairs(reverse)                     # at_t(v)[:, i] = v_t, at_next(v)[:, i] = v_{t+1}

    g[:, last] = dh[:, last] if dh_last is None else dh[:, last] + dh_last    # g_{T-1} = dh_{T-1} + dh_last
    _scan_then_multiply(impl, x=at_t(dh), a=at_next(a), h0=g[:, last], reverse=not reverse,
                        out=at_t(g),                         # g_t = dh_t + a_{t+1} g_{t+1}, t = T-2 .. 0
                        p=at_next(g), q=at_t(h), prod=at_next(da))           # da_{t+1} = g_{t+1} * h_t
    _raise_if_not_finite(g[:, first], named)
    da[:, first] = 0 if h0 is None else g[:, first] * h0                     # da_0 = g_0 * h0
    dh0 = None if h0 is None else a[:, first] * g[:, first]                  # dh0 = a_0 * g_0
    dx = g                                                                   # dx_t = g_t
    if conjugate:                                                            # undo the conjugation, in place
        xp.conjugate(dx, out=dx)
        xp.conjugate(da, out=da)
        dh0 = None if dh0 is None else xp.conjugate(dh0, out=dh0)
    return dx, da, dh0


# --- Helpers: backend dispatch, validation, buffers ---------------------------------------------------------

def _load(name):
    """The backend module (or registered backend) `name`: minigriffin.scan.registry.load_backend."""
    return load_backend(name)


def _resolve(backend, x):
    """'auto' means the fastest backend for where x lives: cupy for CuPy arrays, numba on the CPU, or the
    NumPy reference on the CPU under MINIGRIFFIN_REFERENCE=1 (minigriffin.accelerate: every accelerator off).

    It never falls back to a slower backend: if the fast one is missing, the error says how to install it.
    """
    if backend != "auto":
        return backend
    if array_namespace(x) is not np:
        return "cupy"
    return "reference" if reference_only() else "numba"


def _step_pairs(reverse):
    """View makers that pair each step t with the next one, t+1, in the order the forward ran.

    Returns (at_t, at_next): for a (B, T, D) array v, at_t(v)[:, i] is v_t and at_next(v)[:, i] is v_{t+1},
    over the T-1 such pairs. Views, no copies. The forward runs t = 0 .. T-1, so v_t is v[:, :-1]; with
    reverse=True it runs T-1 .. 0, so the step after v[:, i+1] is v[:, i].
    """
    if reverse:
        return (lambda v: v[:, 1:]), (lambda v: v[:, :-1])
    return (lambda v: v[:, :-1]), (lambda v: v[:, 1:])


def _scan_then_multiply(impl, x, a, h0, reverse, out, p, q, prod):
    """impl's scan of x with multipliers a from h0 into out, then prod = p * q; nothing when x has no steps.

    p must be the state entering each step of this scan (out shifted by one step, h0 at the start). That is
    what lets a backend with the optional hook `scan_times_state` form the product as the scan streams
    past, in one pass; otherwise the backend's `multiply(p, q, out)` or the array library's multiply runs
    after the scan.
    """
    if x.shape[1] == 0:
        return
    with np.errstate(invalid="ignore", over="ignore"):       # non-finite results get a clear error later
        if hasattr(impl, "scan_times_state"):
            impl.scan_times_state(x, a, h0, reverse, out, q, prod)
            return
        impl.scan(x, a, h0, reverse, out)
        multiply = getattr(impl, "multiply", None)
        if multiply is None:
            array_namespace(p, q, prod).multiply(p, q, out=prod)
        else:
            multiply(p, q, prod)


def _check_inputs(x, a, h0, names=("x", "a", "h0")):
    """Validate shapes and dtypes at the public boundary; error messages name the offending arrays."""
    nx, na, nh = names
    for name, arr in ((nx, x), (na, a)):
        if not hasattr(arr, "shape") or not hasattr(arr, "dtype"):
            raise TypeError(f"{name} must be an array, got {type(arr).__name__}")
        if arr.ndim != 3:
            raise ValueError(f"{name} must have shape (B, T, D), got ndim={arr.ndim} shape={tuple(arr.shape)}")
        if arr.dtype not in _FLOAT_DTYPES + _COMPLEX_DTYPES:
            raise TypeError(f"{name} must be float32 or float64 (complex64 or complex128 for a complex scan), "
                            f"got {arr.dtype}")
        if not arr.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray); shape={tuple(arr.shape)} "
                             f"strides={arr.strides}")
    if x.shape != a.shape:
        raise ValueError(f"{nx} and {na} must have the same shape (B, T, D), got {nx}{tuple(x.shape)} "
                         f"and {na}{tuple(a.shape)}")
    if (x.dtype in _COMPLEX_DTYPES) != (a.dtype in _COMPLEX_DTYPES):
        raise TypeError(f"{nx} and {na} mix real and complex ({x.dtype} and {a.dtype}): both must be float32 or "
                        f"float64 (a real scan) or both complex64 or complex128 (a complex scan); convert one "
                        f"explicitly (no silent upcast)")
    if x.dtype != a.dtype:
        raise TypeError(f"{nx} and {na} must have the same dtype (no silent upcast), got {x.dtype} and {a.dtype}")
    B, T, D = x.shape
    if T == 0:
        raise ValueError(f"cannot scan an empty sequence: {nx} has shape {tuple(x.shape)} with T=0")
    if h0 is not None:
        if not hasattr(h0, "shape") or h0.shape != (B, D):
            raise ValueError(f"{nh} must have shape (B, D)={(B, D)}, got {tuple(getattr(h0, 'shape', ()))}")
        if h0.dtype != x.dtype:
            raise TypeError(f"{nh} must have the dtype of {nx} ({x.dtype}), got {h0.dtype}")
    # CuPy arrays: a and h0 on x's GPU, named here with the caller's names (the backend sees x, a, h0, out).
    if any(is_device_array(arr) for arr in (x, a, h0) if arr is not None):
        check_same_device((nx, x), (na, a), (nh, h0))


def _check_backward_inputs(dh, dh_last, a, h, h0):
    """linear_scan_backward's arguments, checked as _check_inputs does, with the caller's names."""
    _check_inputs(dh, a, None, names=("dh", "a", "h0"))
    _check_inputs(h, a, h0, names=("h", "a", "h0"))
    array_namespace(dh, a, h, h0, dh_last)                   # all NumPy or all CuPy
    B, T, D = dh.shape
    if dh_last is not None and (dh_last.shape != (B, D) or dh_last.dtype != dh.dtype):
        raise ValueError(f"dh_last must be ({B}, {D}) {dh.dtype}, got {tuple(dh_last.shape)} {dh_last.dtype}")


def _output_buffer(out, like, inputs, name):
    """A fresh (B, T, D) array shaped like `like`, or the caller's buffer after checking it."""
    xp = array_namespace(like)
    if out is None:
        return xp.empty_like(like)
    if out.shape != like.shape or out.dtype != like.dtype or not out.flags.c_contiguous:
        raise ValueError(f"{name} must be a C-contiguous {like.dtype} array of shape {tuple(like.shape)}, "
                         f"got {out.dtype} {tuple(out.shape)}")
    if any(xp.may_share_memory(out, arr) for arr in inputs):
        raise ValueError(f"{name} must not overlap the inputs (the scan reads them while writing it)")
    return out


def _backward_outputs(out, dh, a, h):
    """The (dx, da) buffers of linear_scan_backward: the caller's pair `out` after checking it, or fresh ones."""
    dx_out, da_out = (None, None) if out is None else out
    dx = _output_buffer(dx_out, dh, (dh, a, h), "out[0] (dx)")
    da = _output_buffer(da_out, dh, (dh, a, h, dx), "out[1] (da)")
    return dx, da


def _raise_if_not_finite(h_last, named_inputs):
    """Raise a ValueError naming the first non-finite input, if the scan's final state says there is one.

    Any NaN or inf in x, a or h0 reaches the final state of its channel (NaN * 0 is NaN, so even a
    reset a = 0 does not stop it), so checking the (B, D) final state is a cheap test of every input.
    Only when it fails do we pay for the full search that names the culprit.
    named_inputs: (name, array or None) pairs, searched in order.
    """
    xp = array_namespace(h_last)
    if bool(xp.isfinite(h_last).all()):
        return
    for name, arr in named_inputs:
        if arr is None:
            continue
        bad = ~xp.isfinite(arr)
        if bool(bad.any()):
            index = [int(i) for i in xp.argwhere(bad)[0]]
            raise ValueError(f"{name} contains {int(bad.sum())} non-finite value(s) (NaN or inf); "
                             f"the first is {name}{index} = {arr[tuple(index)]}")
    # Finite inputs whose scan still overflowed (|a| > 1 over many steps): report it, never hide it.
    raise FloatingPointError("linear scan overflowed: the inputs are finite but the state is not "
                             "(is |a| > 1? the RG-LRU keeps a in [0, 1])")
