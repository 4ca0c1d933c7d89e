"""The GPU linear scan: CUDA kernels, the plan that launches them, and the CuPy backend that runs it.

    scan.cu           the kernels: one thread per channel, or chunks of time in three launches (docs/gpu.md)
    planner.py        one backend call scan(x, a, h0, reverse, out) -> which kernels, sizes, strides, scratch
    cupy_backend.py   the scan backend registered as "cupy": compiles scan.cu with NVRTC, launches the plan
    host_shim.h       compiles scan.cu as plain C++, so tests run the kernels on a CPU (tests/test_cuda_kernels.py)

The package attaches to the reference at one point, the backend registry of minigriffin.scan: the
backward pass and everything above it are the same code for every backend. The planner is kept free of
CuPy so that the CPU tests drive exactly the launches a GPU would get, through the host shim.

This module names the kernel sources (installed with the package, pyproject.toml's package-data) and
imports neither CuPy nor a compiler.
"""

from pathlib import Path

KERNEL_DIR = Path(__file__).resolve().parent
SCAN_SOURCE = KERNEL_DIR / "scan.cu"
HOST_SHIM = KERNEL_DIR / "host_shim.h"
KERNEL_NAMES = tuple(f"scan_{kind}_{suffix}" for suffix in ("f32", "f64", "c64", "c128")
                     for kind in ("channels", "chunk_local", "chunk_carry", "chunk_fixup"))


def read_source():
    """The CUDA source of the scan kernels (for cupy.RawModule(code=...))."""
    return SCAN_SOURCE.read_text()
