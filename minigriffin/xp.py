"""One array namespace for NumPy and CuPy: layers take `xp` from their inputs, never call `np.` on activations.

    xp = array_namespace(x, w)          # numpy, or cupy for CuPy arrays; mixing the two is an error
    check_same_device(("x", x), ("a", a))   # all on the host, or all on x's GPU; the error names the argument

Training on the GPU (`minigriffin train --device gpu`) is therefore the same forward, backward and AdamW code
as on the CPU. Choosing the device is `minigriffin.device.device_namespace`; moving a tree of arrays there
and back is `minigriffin.tree.to_device` and `to_host`, which only the Trainer's setup and checkpoint I/O call.
"""

import importlib

import numpy as np


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


def location_of(arr):
    """Where arr's memory is: "host" for a NumPy array, "cuda:N" for a CuPy array (its .device.id), else None.

    Reads nothing else, so stand-ins with a .device.id test it without CuPy. (NumPy 2 arrays have a
    .device too, the string "cpu": hence the NumPy test first.)
    """
    if isinstance(arr, np.ndarray):
        return "host"
    device_id = getattr(getattr(arr, "device", None), "id", None)
    return f"cuda:{int(device_id)}" if isinstance(device_id, (int, np.integer)) else None


def _placed(name, location, arr):
    if location == "host":
        return f"{name} is a NumPy array (host memory)"
    if location is None:
        return f"{name} is a {type(arr).__name__}, neither a NumPy nor a CuPy array"
    return f"{name} is on {location}"


def check_same_device(*named, current=None):
    """Raise unless every array is where the first one is (entries that are None are skipped).

    named: (name, array) pairs; the first is the reference (x). A NumPy array among CuPy arrays, or a CuPy
    array among NumPy ones, raises TypeError (the type array_namespace raises for mixed arrays); CuPy
    arrays on different GPUs raise ValueError. The message names the argument and both places, e.g.
    "a is on cuda:1 but x is on cuda:0". current: the id of the current CUDA device, if known: a stray
    array on it gets a hint, since CuPy puts new arrays there, not on x's device (cupy.empty_like included).
    Pure: reads only isinstance(arr, np.ndarray) and arr.device.id.
    """
    (ref_name, ref), *others = named
    ref_at = location_of(ref)
    for name, arr in others:
        if arr is None:
            continue
        at = location_of(arr)
        if at == ref_at and at is not None:
            continue
        problem = f"{_placed(name, at, arr)}{',' if at is None else ''} but {_placed(ref_name, ref_at, ref)}"
        if at is None or ref_at is None:
            raise TypeError(f"{problem}: pass NumPy arrays, or CuPy arrays on one device")
        if at == "host":
            raise TypeError(f"{problem}: move it with cupy.asarray (under `with {ref_name}.device:`)")
        if ref_at == "host":
            raise TypeError(f"{problem}: pass every array on the GPU (cupy.asarray) or every one on the host "
                            f"({name}.get())")
        fix = f"copy it there with `with {ref_name}.device: {name} = cupy.copy({name})`"
        if current is not None and at == f"cuda:{int(current)}":
            fix = f"call linear_scan under `with {ref_name}.device:`, or {fix}"
            problem += (f" ({at} is the current device, where CuPy allocates new arrays, such as the output and "
                        f"the zero h0 that linear_scan creates)")
        raise ValueError(f"{problem}: {fix}")
