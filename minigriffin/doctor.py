"""`minigriffin doctor`: what this installation can run, for a bug report or a first look at a new machine.

Versions, Numba's threading layer and thread count (found by running a tiny scan), each scan backend with the
reason it cannot run here, and whether CuPy imports and sees a GPU. Exit status 1 when Numba is unusable.
"""

import importlib.metadata
import os
import platform
import sys

import numpy as np

import minigriffin
from minigriffin.scan import backend_names, linear_scan, unavailable_reason


def doctor():
    """Print versions, Numba's threading layer and thread count, the scan backends, and whether CuPy/a GPU work."""
    def version(dist):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    print(f"minigriffin   {minigriffin.__version__}  ({minigriffin.__file__})")
    print(f"python        {platform.python_version()}  ({sys.executable})")
    print(f"platform      {platform.platform()}")
    print(f"numpy         {np.__version__}")
    for dist in ("numba", "matplotlib", "tqdm"):
        print(f"{dist:<13} {version(dist)}")
    ok = True
    try:
        import numba

        # The threading layer is only chosen when a parallel function first runs, so run a tiny scan.
        linear_scan(np.zeros((1, 2, 1)), np.zeros((1, 2, 1)), backend="numba")
        print(f"numba threads {numba.get_num_threads()} of {numba.config.NUMBA_NUM_THREADS} "
              f"(set NUMBA_NUM_THREADS to change)")
        print(f"numba layer   {numba.threading_layer()} (set NUMBA_THREADING_LAYER to change); "
              f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}")
    except Exception as exc:  # report, never hide: doctor exists to show what is broken
        ok = False
        print(f"numba         NOT USABLE: {type(exc).__name__}: {exc}")
    print("scan backends:")
    for name in backend_names():
        reason = unavailable_reason(name)
        print(f"  {name:<10} {'available' if reason is None else 'unavailable: ' + reason}")
    print(f"cupy          {cupy_status()}")
    from minigriffin.accelerate import accelerators, reference_only
    state = "OFF (MINIGRIFFIN_REFERENCE=1: the NumPy definitions only)" if reference_only() else \
        "on (MINIGRIFFIN_REFERENCE=1 turns them off)"
    print(f"accelerators: {state}")
    for key, found in accelerators().items():
        for accelerator in found:
            print(f"  {key.removeprefix('minigriffin.'):<32} <- {accelerator.name.removeprefix('minigriffin.')}")
    for dist in ("pytest", "hypothesis", "torch", "jax", "flax", "recurrentgemma"):
        print(f"{dist:<13} {version(dist)}  (tests only)")
    return 0 if ok else 1


def cupy_status():
    """One line: whether CuPy imports and whether it can reach a CUDA device."""
    try:
        import cupy
    except ImportError:
        return 'not installed (GPU is optional: pip install "minigriffin[gpu]" for CUDA 12, "[gpu13]" for CUDA 13)'
    except Exception as exc:  # a broken install (wrong CUDA flavour) raises other errors at import
        return f"installed but fails to import: {type(exc).__name__}: {exc}"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
        if n == 0:
            return f"cupy {cupy.__version__} installed, but no CUDA device is visible"
        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        return f"cupy {cupy.__version__}, {n} CUDA device(s), device 0: {name}"
    except Exception as exc:
        return f"cupy {cupy.__version__} installed, but no usable GPU: {type(exc).__name__}: {exc}"
