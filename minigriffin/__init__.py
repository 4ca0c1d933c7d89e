"""minigriffin: Hawk and Griffin (De, Smith et al. 2024, arXiv 2402.19427) in NumPy with hand-written backprop.

Notation used in shape comments throughout the package (also in docs/conventions.md):

    B   batch size                    T   sequence length (time)
    D   model width / channels        E   RG-LRU width (lru_width)
    H   attention heads               Dh  head dimension (D // H)
    W   local attention window        V   vocabulary size
    F   MLP expanded width (3 * D)    L   number of residual blocks

Importing the package does no work: backends (Numba, CuPy) load lazily on first use. It registers the
accelerators of minigriffin/fast/ with the reference functions they stand for (minigriffin/accelerate.py).

It also sets OMP_WAIT_POLICY=PASSIVE unless the environment already sets it: Numba's OpenMP threads otherwise
spin after every parallel region, taking the cores from OpenBLAS's threads in the matmul that follows. On a
batch of one 8,192-token row that made a Griffin training step 2.7x and an MQA step 2.2x slower on two
cores; batches of 8 are unaffected (docs/benchmarks.md, "Spinning OpenMP threads").
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # read when the OpenMP runtime loads: before any Numba

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
