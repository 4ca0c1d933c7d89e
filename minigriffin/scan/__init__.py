"""The linear scan h_t = a_t * h_{t-1} + x_t behind one interface, with interchangeable backends.

    linear_scan(x, a, h0=None, *, reverse=False, backend="auto") -> (h, h_last)
    linear_scan_backward(dh, dh_last, a, h, h0=None, *, reverse=False, backend="auto") -> (dx, da, dh0)

Shapes: x, a, h, dh: (B, T, D); h0, h_last, dh_last: (B, D). The argument order and the return value
follow recurrentgemma's `linear_scan`. This is the core of the RG-LRU (Griffin paper, eq. 4:
h_t = a_t ⊙ h_{t-1} + sqrt(1 - a_t²) ⊙ (i_t ⊙ x_t), where everything but the recurrence is elementwise).

Backends are modules exporting one primitive, `scan(x, a, h0, reverse, out)`, loaded lazily by name from a
registry (`backend_names()`, `unavailable_reason(name)`, `available_backends()`); the backward is written
once, here, on top of that primitive, so every backend gets its backward for free. Two optional hooks let
a backend speed up the backward's one elementwise product da_t = g_t * h_prev without writing a backward of
its own: `scan_times_state(x, a, h0, reverse, out, q, prod)`, a scan that also writes prod = (state entering
each step) * q as it streams past (numba: it saves a pass over g), or else `multiply(p, q, out)`; without
either the array library's multiply is used.
See docs/scan.md for the derivation and notebooks for the walk-through.

Notebook: notebooks/01_linear_scan.ipynb
"""

import importlib
import importlib.util

import numpy as np

from minigriffin.xp import array_namespace, check_same_device, is_device_array

# name -> (module path, the Python module it needs, how to install that module)
_REGISTRY = {
    "reference": ("minigriffin.scan.reference", "numpy", "pip install numpy"),
    "blelloch": ("minigriffin.scan.blelloch", "numpy", "pip install numpy"),
    "numba": ("minigriffin.scan.numba_cpu", "numba", "pip install numba"),
    "cupy": ("minigriffin.scan.cupy_gpu", "cupy",
             'pip install "minigriffin[gpu]" (CUDA 12) or "minigriffin[gpu13]" (CUDA 13)'),
}
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class BackendUnavailable(RuntimeError):
    """A scan backend was asked for but cannot run here; the message says how to install it."""


def backend_names():
    """Every scan backend's name, in registry order, whether or not it can run here."""
    return list(_REGISTRY)


def unavailable_reason(name):
    """Why backend `name` cannot run here (the message says how to install what it needs), or None when it can.

    Does not import the backend, except cupy's once its package is installed: it asks the driver (once per
    process, cached) whether a usable GPU is there.
    """
    module, needs, install = _REGISTRY[name]
    if module is None:
        return (f"scan backend {name!r} is not implemented in this version of minigriffin "
                f"(it will need: {install})")
    if importlib.util.find_spec(needs) is None:
        return f"scan backend {name!r} needs the {needs!r} package, which is not installed: {install}"
    if name == "cupy":
        reason = importlib.import_module(module).unavailable_reason()   # no device, driver too old, ...
        if reason is not None:
            return f"scan backend {name!r} cannot run here: {reason}"
    return None


def available_backends():
    """Names of the scan backends that can run on this machine, in registry order."""
    return [name for name in _REGISTRY if unavailable_reason(name) is None]


def _load(name):
    """Import and return the backend module `name`, or raise BackendUnavailable with the install command."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown scan backend {name!r}; choose one of {['auto', *_REGISTRY]}")
    reason = unavailable_reason(name)
    if reason is not None:
        raise BackendUnavailable(reason)
    return importlib.import_module(_REGISTRY[name][0])


def _resolve(backend, x):
    """'auto' means the fastest backend for where x lives: cupy for CuPy arrays, numba on the CPU.

    It never falls back to a slower backend: if the fast one is missing, the error says how to install it.
    """
    if backend != "auto":
        return backend
    if array_namespace(x) is not np:
        return "cupy"
    return "numba"


def _check_inputs(x, a, h0, names=("x", "a", "h0")):
    """Validate shapes and dtypes at the public boundary; error messages name the offending arrays."""
    nx, na, nh = names
    for name, arr in ((nx, x), (na, a)):
        if not hasattr(arr, "shape") or not hasattr(arr, "dtype"):
            raise TypeError(f"{name} must be an array, got {type(arr).__name__}")
        if arr.ndim != 3:
            raise ValueError(f"{name} must have shape (B, T, D), got ndim={arr.ndim} shape={tuple(arr.shape)}")
        if arr.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{name} must be float32 or float64, got {arr.dtype}")
        if not arr.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray); shape={tuple(arr.shape)} "
                             f"strides={arr.strides}")
    if x.shape != a.shape:
        raise ValueError(f"{nx} and {na} must have the same shape (B, T, D), got {nx}{tuple(x.shape)} "
                         f"and {na}{tuple(a.shape)}")
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


def linear_scan(x, a, h0=None, *, reverse=False, backend="auto", out=None):
    """h_t = a_t * h_{t-1} + x_t along axis 1 (Griffin eq. 4's recurrence; recurrentgemma `linear_scan`).

    x, a: (B, T, D) float32 or float64, C-contiguous, same dtype. h0: (B, D) or None (zeros).
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
    Derivation (docs/scan.md), for reverse=False:  with g_t = dL/dx_t the total gradient reaching h_t,
        g_t = dh_t + a_{t+1} g_{t+1}    (g_{T-1} = dh_{T-1} + dh_last)
    which is a *reverse* scan of dh with `a` shifted left by one step; then
        dx_t = g_t,   da_t = g_t * h_{t-1} (h_{-1} = h0 or 0),   dh0 = a_0 * g_0.
    The scan runs through the same backend primitive as the forward, so every backend gets this for free.
    out: optional pair of (B, T, D) buffers (dx, da), as for linear_scan.
    """
    impl = _load(_resolve(backend, dh))
    _check_inputs(dh, a, None, names=("dh", "a", "h0"))
    _check_inputs(h, a, h0, names=("h", "a", "h0"))
    xp = array_namespace(dh, a, h, h0, dh_last)
    B, T, D = dh.shape
    if dh_last is not None and (dh_last.shape != (B, D) or dh_last.dtype != dh.dtype):
        raise ValueError(f"dh_last must be ({B}, {D}) {dh.dtype}, got {tuple(dh_last.shape)} {dh_last.dtype}")
    # The time index where the forward ended (h_last came from there) and where it started.
    end, start = (0, T - 1) if reverse else (T - 1, 0)
    dx_out, da_out = (None, None) if out is None else out
    g = _output_buffer(dx_out, dh, (dh, a, h), "out[0] (dx)")        # (B, T, D) g = dL/dx
    da = _output_buffer(da_out, dh, (dh, a, h, g), "out[1] (da)")    # (B, T, D)
    g[:, end] = dh[:, end] if dh_last is None else dh[:, end] + dh_last
    if T > 1:
        # Scan the remaining T-1 steps the other way, starting from g_end; each step's multiplier is the
        # forward multiplier one step later in the forward's order. Views, no copies. Along the way,
        # forward h_t = a_t * h_prev + x_t gives da_t = g_t * h_prev: the g that the gradient scan carries
        # *into* a step, times the forward state of that step, is da of the step after it.
        if reverse:   # forward went T-1 -> 0, so the gradient flows 0 -> T-1 with a_{t-1}; h_prev is h_{t+1}
            scan_args = (dh[:, 1:], a[:, :-1], g[:, 0], False, g[:, 1:])
            entering, h_of_step, da_next = g[:, :-1], h[:, 1:], da[:, :-1]
        else:         # forward went 0 -> T-1, so the gradient flows T-1 -> 0 with a_{t+1}; h_prev is h_{t-1}
            scan_args = (dh[:, :-1], a[:, 1:], g[:, T - 1], True, g[:, :-1])
            entering, h_of_step, da_next = g[:, 1:], h[:, :-1], da[:, 1:]
        with np.errstate(invalid="ignore", over="ignore"):    # non-finite results get a clear error below
            if hasattr(impl, "scan_times_state"):      # one pass: the product is formed as the scan streams
                impl.scan_times_state(*scan_args, h_of_step, da_next)
            else:
                impl.scan(*scan_args)
                multiply = getattr(impl, "multiply", None) or (lambda p, q, out: xp.multiply(p, q, out=out))
                multiply(entering, h_of_step, da_next)
    _raise_if_not_finite(g[:, start], (("dh", dh), ("dh_last", dh_last), ("a", a)))
    if h0 is None:
        da[:, start] = 0
        dh0 = None
    else:
        da[:, start] = g[:, start] * h0
        dh0 = a[:, start] * g[:, start]                    # (B, D)
    return g, da, dh0
