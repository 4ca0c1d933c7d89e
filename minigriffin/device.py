"""Choosing where to train: the array module for a device name, or a clear error saying why it cannot be used.

    xp = device_namespace("gpu")        # cupy, or DeviceUnavailable naming why not (CuPy missing, no GPU, driver)
    params = tree.to_device(params, xp) # then every array of a tree goes there (minigriffin.tree)

The GPU counts as usable exactly when the cupy scan backend can run (minigriffin.scan.unavailable_reason),
so `--device gpu` fails at once, naming the cause, rather than at the first scan.
"""

import importlib

import numpy as np

from minigriffin.scan import unavailable_reason

DEVICES = ("cpu", "gpu")


class DeviceUnavailable(RuntimeError):
    """The device asked for cannot be used here; the message says why and what to install."""


def device_namespace(device):
    """The array module for a device name: "cpu" -> numpy, "gpu" -> cupy (checked usable, else a clear error)."""
    if device == "cpu":
        return np
    if device == "gpu":
        reason = unavailable_reason("cupy")        # CuPy missing or broken, no device, driver too old
        if reason is not None:
            raise DeviceUnavailable(f"--device gpu is not usable here: {reason}")
        return importlib.import_module("cupy")
    raise ValueError(f"unknown device {device!r}; choose one of {list(DEVICES)}")


def default_workers():
    """Data-parallel workers for a CPU training step (minigriffin.fast.parallel): one per Numba thread
    (NUMBA_NUM_THREADS; by default one per core)."""
    import numba
    return numba.get_num_threads()
