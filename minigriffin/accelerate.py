"""The one seam between the NumPy definitions and the code that only makes them faster.

Every computation in minigriffin is defined once, in plain NumPy (layers.py, rglru.py, attention.py, ...).
Some of those functions are slow on a CPU for reasons that have nothing to do with the math (a chain of
elementwise passes over memory, hundreds of tiny calls per decoded token), and minigriffin/fast/ has
compiled versions of them. A reference function marked `@accelerated` looks, at each call, for a faster
version registered for it whose `applies(...)` accepts the arguments (for example: NumPy arrays, not CuPy)
and runs that instead; otherwise it runs its own body. The formula is never branched inside:

    @accelerated                                   # in layers.py: the definition
    def gelu_tanh_forward(x): ...

    @register(layers.gelu_tanh_forward, applies=numpy_float_arrays)   # in fast/fused.py
    def gelu_tanh_forward(x): ...                  # the same formula in fewer passes over memory

MINIGRIFFIN_REFERENCE=1 in the environment turns every accelerator off, and makes the scan's "auto" backend
the NumPy reference on the CPU (minigriffin.scan), so everything runs on the definitions
(tests/test_accelerate.py checks each registered accelerator against its reference).
"""

import functools
import os
from typing import Callable, NamedTuple

_ACCELERATORS = {}        # key of a reference function -> [Accelerator]


class Accelerator(NamedTuple):
    name: str             # "module.function" of the fast version
    applies: Callable     # applies(*args, **kwargs) -> bool
    fast: Callable        # the fast version, same signature and results as the reference


def reference_only():
    """True when MINIGRIFFIN_REFERENCE=1: every accelerator is off and the NumPy definitions run."""
    return os.environ.get("MINIGRIFFIN_REFERENCE", "").lower() in ("1", "true", "yes")


def _key(fn):
    return f"{fn.__module__}.{fn.__qualname__}"


def accelerated(reference):
    """Decorator for a reference function: calls run a registered accelerator that applies, else the body.
    The undecorated function stays reachable as `.reference`."""
    key = _key(reference)
    _ACCELERATORS.setdefault(key, [])

    @functools.wraps(reference)
    def dispatch(*args, **kwargs):
        if not reference_only():
            for accelerator in _ACCELERATORS[key]:
                if accelerator.applies(*args, **kwargs):
                    return accelerator.fast(*args, **kwargs)
        return reference(*args, **kwargs)

    dispatch.reference = reference
    dispatch.accelerator_key = key
    return dispatch


def register(target, *, applies):
    """Decorator for a fast version of `target` (an @accelerated function): run it when applies(...) is true."""
    key = getattr(target, "accelerator_key", None)
    if key is None:
        raise TypeError(f"{_key(target)} is not marked @accelerated, so nothing would ever call a fast version")

    def add(fast):
        name = _key(fast)
        if any(a.name == name for a in _ACCELERATORS[key]):
            raise ValueError(f"{name} is already registered for {key}")
        _ACCELERATORS[key].append(Accelerator(name, applies, fast))
        return fast
    return add


def accelerators():
    """{reference key: [Accelerator]} of everything registered (for tests and `minigriffin doctor`)."""
    return {key: list(found) for key, found in _ACCELERATORS.items()}
