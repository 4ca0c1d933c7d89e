"""One array namespace for NumPy and CuPy: layers take `xp` from their inputs, never call `np.` on activations."""

import importlib

import numpy as np


def array_namespace(*arrays):
    """numpy for NumPy arrays, cupy for CuPy arrays (without importing cupy unless one is passed).

    Mixing the two is an error: moving data between host and device happens in one place, not in a layer.
    """
    on_gpu = [type(arr).__module__.split(".")[0] == "cupy" for arr in arrays if arr is not None]
    if any(on_gpu) and not all(on_gpu):
        raise TypeError("mixed NumPy and CuPy arrays; move everything to one device first")
    return importlib.import_module("cupy") if on_gpu and on_gpu[0] else np
