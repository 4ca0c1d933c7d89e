"""The scan backends by name: minigriffin's own, and the ones a user or an installed package adds.

    register_backend("mine", my_scan)    # my_scan(x, a, h0, reverse, out): the primitive's contract below
    linear_scan(x, a, backend="mine")    # and linear_scan_backward, the model (scan_backend="mine"), training,
                                         # `minigriffin train --scan_backend=mine`
    unregister_backend("mine")

The primitive's contract (what reference.scan does): write h_t = a_t * h_{t-1} + x_t (reverse=False,
t = 0 .. T-1, h_{-1} = h0) or h_t = a_t * h_{t+1} + x_t (reverse=True, t = T-1 .. 0, h_T = h0) into `out`.
x, a, out: (B, T, D) arrays of one dtype (float32 or float64; complex64 or complex128 for complex scans, which
every built-in backend runs), T >= 1, C-contiguous or time slices of
C-contiguous arrays (linear_scan_backward passes x = dh[:, :-1], a = a[:, 1:] and friends: each batch row is
contiguous, the batch stride may be larger than T*D); h0: (B, D), never None (zeros are passed), possibly such a
slice (g[:, T-1]); reverse: a bool. `out` never overlaps x or a. The return
value is ignored: the result is what the function wrote into `out`. Accumulate in the input dtype.

An installed package can also provide backends through the entry-point group "minigriffin.scan_backends"
(`name = "package.module:function"`), read once per process on first use of the registry; the function is
imported only when the backend is first used. An entry point whose name clashes with a built-in or an
already registered backend is not added, with a warning saying so.
"""

import importlib
import importlib.util
import re
import types
import warnings

# name -> (module path, the Python module it needs, how to install that module)
BUILTIN_BACKENDS = {
    "reference": ("minigriffin.scan.reference", "numpy", "pip install numpy"),
    "blelloch": ("minigriffin.scan.blelloch", "numpy", "pip install numpy"),
    "numba": ("minigriffin.scan.numba_cpu", "numba", "pip install numba"),
    "cupy": ("minigriffin.scan.cuda.cupy_backend", "cupy",
             'pip install "minigriffin[gpu]" (CUDA 12) or "minigriffin[gpu13]" (CUDA 13)'),
}
RESERVED_NAMES = ("auto",)                  # linear_scan's backend="auto" chooses among the others
ENTRY_POINT_GROUP = "minigriffin.scan_backends"
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*\Z")   # safe in --scan_backend=NAME and in a run's config.json
_added = {}                                 # name -> a module-like object with .scan (or an entry point, unloaded)
_entry_points_read = False


class BackendUnavailable(RuntimeError):
    """A scan backend was asked for but cannot run here; the message says how to install it."""


def register_backend(name, scan):
    """Add a scan backend: `scan(x, a, h0, reverse, out)` with the primitive's contract (module docstring).

    From then on `name` works wherever a built-in's does: linear_scan and linear_scan_backward (the backward
    is built on the same primitive), GriffinConfig(scan_backend=name), training and --scan_backend=name.
    Raises ValueError for a name that is reserved ("auto"), malformed (letters, digits, "_", "." and "-",
    starting with a letter), a built-in's or already registered (unregister it first), and TypeError when
    `scan` is not callable or cannot take the five positional arguments.
    """
    _read_entry_points()
    _check_new_name(name)
    if not callable(scan):
        raise TypeError(f"scan backend {name!r}: scan must be callable as scan(x, a, h0, reverse, out), "
                        f"got {type(scan).__name__}")
    _check_signature(name, scan)
    _added[name] = types.SimpleNamespace(scan=scan, __name__=f"<scan backend {name!r}>")


def unregister_backend(name):
    """Remove a backend added by register_backend (or an entry point). Built-ins cannot be removed
    (ValueError); an unknown name is a KeyError naming the registered ones."""
    _read_entry_points()
    if name in BUILTIN_BACKENDS:
        raise ValueError(f"scan backend {name!r} is built into minigriffin and cannot be unregistered")
    if name not in _added:
        raise KeyError(f"no scan backend {name!r} is registered (registered: {sorted(_added) or 'none'})")
    del _added[name]


def backend_names():
    """Every scan backend's name, built-ins first in registry order, then the added ones in the order they
    were registered, whether or not each can run here."""
    _read_entry_points()
    return [*BUILTIN_BACKENDS, *_added]


def unavailable_reason(name):
    """Why backend `name` cannot run here (the message says how to install what it needs), or None when it can.

    Does not import the backend, except cupy's once its package is installed: it asks the driver (once per
    process, cached) whether a usable GPU is there. Added backends are available once registered (an entry
    point's module is imported when the backend is loaded; an import error is raised there).
    """
    _read_entry_points()
    if name in _added:
        return None
    if name not in BUILTIN_BACKENDS:
        raise ValueError(f"unknown scan backend {name!r}; choose one of {['auto', *backend_names()]}")
    module, needs, install = BUILTIN_BACKENDS[name]
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
    """Names of the scan backends that can run on this machine, built-ins first, then the added ones."""
    return [name for name in backend_names() if unavailable_reason(name) is None]


def load_backend(name):
    """The backend `name` as an object with .scan (a module, for built-ins), or BackendUnavailable with the
    install command, or ValueError for an unknown name."""
    reason = unavailable_reason(name)           # ValueError for an unknown name
    if reason is not None:
        raise BackendUnavailable(reason)
    if name in _added:
        backend = _added[name]
        if isinstance(backend, str):            # an entry point, imported on first use
            backend = _added[name] = types.SimpleNamespace(scan=_import_entry_point(name, backend))
        return backend
    return importlib.import_module(BUILTIN_BACKENDS[name][0])


# --- Helpers ----------------------------------------------------------------------------------------------

def _check_new_name(name):
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"scan backend name must be a string of letters, digits, '_', '.' and '-' starting "
                         f"with a letter, got {name!r}")
    if name in RESERVED_NAMES:
        raise ValueError(f"scan backend name {name!r} is reserved (backend={name!r} chooses a built-in)")
    if name in BUILTIN_BACKENDS:
        raise ValueError(f"scan backend {name!r} is a built-in backend; choose another name")
    if name in _added:
        raise ValueError(f"scan backend {name!r} is already registered; unregister_backend({name!r}) first")


def _check_signature(name, scan):
    """TypeError unless scan can be called with five positional arguments (when its signature is known)."""
    import inspect
    try:
        signature = inspect.signature(scan)
    except (TypeError, ValueError):              # some builtins and compiled callables have none to read
        return
    try:
        signature.bind(None, None, None, False, None)
    except TypeError as exc:
        raise TypeError(f"scan backend {name!r}: scan must take (x, a, h0, reverse, out) positionally, but "
                        f"{getattr(scan, '__name__', scan)!r}{signature} cannot: {exc}") from None


def _read_entry_points():
    """Add the backends that installed packages declare (group "minigriffin.scan_backends"), once."""
    global _entry_points_read
    if _entry_points_read:
        return
    _entry_points_read = True
    from importlib.metadata import entry_points
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in RESERVED_NAMES or entry.name in BUILTIN_BACKENDS or entry.name in _added \
                or not _NAME.match(entry.name):
            warnings.warn(f"ignoring the scan backend entry point {entry.name} = {entry.value!r}: the name is "
                          f"reserved, malformed, a built-in's or already registered", stacklevel=3)
            continue
        _added[entry.name] = entry.value


def _import_entry_point(name, value):
    module_name, _, attr = value.partition(":")
    try:
        scan = importlib.import_module(module_name)
        for part in attr.split(".") if attr else ["scan"]:
            scan = getattr(scan, part)
    except (ImportError, AttributeError) as exc:
        raise BackendUnavailable(f"scan backend {name!r} (entry point {value!r}) could not be loaded: "
                                 f"{type(exc).__name__}: {exc}") from exc
    if not callable(scan):
        raise BackendUnavailable(f"scan backend {name!r} (entry point {value!r}) is not callable")
    return scan
