"""`minigriffin check-scan MODULE:FUNCTION`: property-test a scan kernel against the reference, then time it.

    minigriffin check-scan my_kernels:scan                  # a module on the path (the current folder included)
    minigriffin check-scan path/to/my_scan.py:scan --max-examples 300 --dtype float32
    minigriffin check-scan numba                            # a registered backend, by name
    minigriffin check-scan my_kernels:scan --gpu            # CuPy arrays on the GPU

The function must have the scan primitive's contract, scan(x, a, h0, reverse, out) (minigriffin.scan.registry).
It is registered under a temporary name, checked by minigriffin.testing.check_scan_backend (forward and backward
against the reference on Hypothesis's hard cases; the report gives the cases tried per category and the worst
error per dtype, or the shrunk counterexample), then timed against the memory floor exactly as
benchmarks/bench_scan.py does (minigriffin.scan.timing). Exit status: 0 when the kernel agrees with the
reference, 1 when it disagrees (not timed), 2 for bad input (no such module, not callable, no usable GPU).
"""

import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path

from minigriffin.scan import backend_names, register_backend, unregister_backend
from minigriffin.scan.timing import (
    CPU_HEADER,
    GPU_HEADER,
    cpu_table,
    gpu_description,
    gpu_table,
    machine_description,
    parse_shapes,
)

EXIT_DISAGREES = 1


def load_function(target):
    """The callable that 'package.module:function' or 'path/to/file.py:function' names.

    A module is looked up on sys.path with the current folder first (as `python -m` does); a file is imported
    from its path. Raises ValueError (one line) when it cannot be imported or has no such attribute, and
    TypeError when it is not callable.
    """
    module_part, sep, attr = target.rpartition(":")
    if not sep or not module_part or not attr:
        raise ValueError(f"expected MODULE:FUNCTION (e.g. my_kernels:scan or my_scan.py:scan), got {target!r}")
    is_file = module_part.endswith(".py") or os.sep in module_part or "/" in module_part
    if is_file and not Path(module_part).is_file():
        raise ValueError(f"no such file: {module_part}")
    try:
        if is_file:
            module = _import_file(Path(module_part))
        else:
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(module_part)
    except ModuleNotFoundError as exc:
        raise ValueError(f"cannot import {module_part!r}: {exc}") from None
    except Exception as exc:                 # anything the user's module raises while it is imported
        raise ValueError(f"importing {module_part!r} failed: {type(exc).__name__}: {exc}") from None
    function = module
    for part in attr.split("."):
        if not hasattr(function, part):
            raise ValueError(f"{module_part!r} has no attribute {attr!r}")
        function = getattr(function, part)
    if not callable(function):
        raise TypeError(f"{target} is not callable (it is a {type(function).__name__}); it must be a function "
                        f"scan(x, a, h0, reverse, out)")
    return function


def _import_file(path):
    name = f"minigriffin_check_scan_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module               # before running it: dataclasses and Numba's cache look it up
    sys.path.insert(0, str(path.resolve().parent))   # so it can import its neighbours
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def run_check_scan(target, max_examples=100, dtype="both", gpu=False, shapes="8x2048x512,1x16384x256",
                   repeats=7, rounds=5, compare="numba", seed=None, bench=True):
    """The check-scan command; returns its exit status (0 agrees, 1 disagrees) or raises for bad input."""
    if min(max_examples, repeats, rounds) < 1:
        raise ValueError("--max-examples, --repeats and --rounds must be >= 1")
    shape_list = parse_shapes(shapes)                # bad shapes are bad input, found before any work
    others = [b for b in compare.split(",") if b]
    if [b for b in others if b not in backend_names()]:
        raise ValueError(f"--compare {compare!r}: choose built-in or registered scan backends from {backend_names()}")
    try:
        from minigriffin.testing import ScanBackendMismatch, check_scan_backend
    except ImportError as exc:
        raise SystemExit(str(exc)) from None
    device = "gpu" if gpu else "cpu"
    if gpu:
        from minigriffin.device import device_namespace
        device_namespace("gpu")                      # DeviceUnavailable: one line, naming why
    if ":" in target:
        function = load_function(target)
        name = _backend_name(target)
        register_backend(name, function)
    elif target in backend_names():
        name, function = target, None
    else:
        raise ValueError(f"{target!r} is neither MODULE:FUNCTION nor a scan backend ({', '.join(backend_names())})")
    try:
        try:
            report = check_scan_backend(name, max_examples=max_examples, dtype=dtype, device=device, seed=seed)
        except ScanBackendMismatch as exc:
            exc.report.backend = target if function is not None else name
            print(exc.report, flush=True)
            print(f"\n{target}: FAILED, it disagrees with the reference (exit status 1; not timed)")
            return EXIT_DISAGREES
        report.backend = target if function is not None else name
        print(report, flush=True)
        if bench:
            _bench(name, target, device, shape_list, repeats, rounds, [b for b in others if b != name])
        print(f"\n{target}: OK, it agrees with the reference")
        return 0
    finally:
        if function is not None:
            unregister_backend(name)


def _backend_name(target):
    """A registry name for MODULE:FUNCTION: 'my_scan.py:scan' and 'pkg.my_scan:scan' -> 'my_scan.scan'."""
    module_part, _, attr = target.rpartition(":")
    stem = Path(module_part).stem if module_part.endswith(".py") else module_part.rsplit(".", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{Path(stem).name}.{attr}")
    name = name if name[0].isalpha() else f"kernel-{name}"
    return name if name not in backend_names() else f"{name}-candidate"


def _bench(name, target, device, shapes, repeats, rounds, others):
    """Time the kernel against the memory floor as benchmarks/bench_scan.py does, with the backends `compare`
    alongside on the CPU."""
    print(f"\ntiming {target} (as scan backend {name!r}) against the memory floor, as benchmarks/bench_scan.py "
          f"does (float32):")
    if device == "gpu":
        print(gpu_description(repeats) + "\n")
        print(GPU_HEADER)
        verdicts = []
        for shape in shapes:
            row, verdict = gpu_table(shape, repeats, backend=name)
            print(row, flush=True)
            verdicts.append(verdict)
        print("\n" + "\n".join(verdicts))
        return
    print(f"machine: {machine_description()}")
    print(f"each time is the best of {repeats} calls; each ratio is to the floor of its own round, the median "
          f"over {rounds} rounds (lowest-highest); ms are medians\n")
    print(CPU_HEADER)
    for shape in shapes:
        rows, _ = cpu_table(shape, [name, *others], repeats, rounds)
        print("\n".join(rows), flush=True)
