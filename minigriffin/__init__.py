"""minigriffin: Hawk and Griffin (De, Smith et al. 2024, arXiv 2402.19427) in NumPy with hand-written backprop.

Notation used in shape comments throughout the package (also in docs/conventions.md):

    B   batch size                    T   sequence length (time)
    D   model width / channels        E   RG-LRU width (lru_width)
    H   attention heads               Dh  head dimension (D // H)
    W   local attention window        V   vocabulary size
    F   MLP expanded width (3 * D)    L   number of residual blocks

Importing the package does no work: backends (Numba, CuPy) load lazily on first use. It registers the
accelerators of minigriffin/fast/ with the reference functions they stand for (minigriffin/accelerate.py).
"""

from minigriffin.scan import (
    BackendUnavailable,
    available_backends,
    linear_scan,
    linear_scan_backward,
)

import minigriffin.fast  # noqa: E402,F401  (registers the accelerators; compiles nothing)

__version__ = "0.1.0.dev0"

__all__ = [
    "BackendUnavailable",
    "available_backends",
    "linear_scan",
    "linear_scan_backward",
    "__version__",
]
