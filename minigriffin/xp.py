"""One array namespace for NumPy and CuPy: layers take `xp` from their inputs, never call `np.` on activations.

Moving data between host and device happens here and nowhere else:

    xp = device_namespace("gpu")        # cupy, or DeviceUnavailable naming why not (CuPy missing, no GPU, driver)
    params = to_device(params, xp)      # a tree (nested dicts/lists) of arrays, or one array
    host = to_host(params)              # numpy arrays again (checkpoints are always written from these)

Training on the GPU (`minigriffin train --device gpu`) is therefore the same forward, backward and AdamW code
as on the CPU; only the Trainer's setup and checkpoint I/O call the two functions above.
"""

import importlib

import numpy as np

DEVICES = ("cpu", "gpu")


class DeviceUnavailable(RuntimeError):
    """The device asked for cannot be used here; the message says why and what to install."""


def is_device_array(arr):
    """True for a CuPy array (checked by its type's module, so cupy is never imported just to ask)."""
    return type(arr).__module__.split(".")[0] == "cupy"


def array_namespace(*arrays):
    """numpy for NumPy arrays, cupy for CuPy arrays (without importing cupy unless one is passed).

    Mixing the two is an error: moving data between host and device happens in one place, not in a layer.
    """
    on_gpu = [is_device_array(arr) for arr in arrays if arr is not None]
    if any(on_gpu) and not all(on_gpu):
        raise TypeError("mixed NumPy and CuPy arrays; move everything to one device first")
    return importlib.import_module("cupy") if on_gpu and on_gpu[0] else np


def device_namespace(device):
    """The array module for a device name: "cpu" -> numpy, "gpu" -> cupy (checked usable, else a clear error)."""
    if device == "cpu":
        return np
    if device == "gpu":
        from minigriffin.scan import _unavailable_reason
        reason = _unavailable_reason("cupy")       # CuPy missing or broken, no device, driver too old
        if reason is not None:
            raise DeviceUnavailable(f"--device gpu is not usable here: {reason}")
        return importlib.import_module("cupy")
    raise ValueError(f"unknown device {device!r}; choose one of {list(DEVICES)}")


def to_device(tree, xp):
    """Every array leaf of `tree` (dicts, lists, NamedTuples) as an array of module xp (numpy or cupy).
    Non-array leaves are kept."""
    from minigriffin.params import tree_map          # here, not at the top: scan imports this module
    def move(arr):
        if not hasattr(arr, "dtype"):
            return arr
        if xp is np:
            return to_host(arr)
        return xp.asarray(arr)                                         # host -> device copy (or no-op)
    return tree_map(move, tree)


def to_host(tree):
    """Every array leaf of `tree` as a NumPy array (device -> host copy for CuPy arrays)."""
    from minigriffin.params import tree_map
    def move(arr):
        if is_device_array(arr):
            return arr.get()
        return np.asarray(arr) if hasattr(arr, "dtype") else arr
    return tree_map(move, tree)
