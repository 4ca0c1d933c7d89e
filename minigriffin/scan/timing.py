"""Timing scan backends against the memory floor measured in the same run: the code behind
benchmarks/bench_scan.py and `minigriffin check-scan`, kept here so that both time a kernel the same way.

CPU. The floor is one `np.multiply(a, x, out=h)` pass over the same (B, T, D) arrays: it reads two arrays and
writes one, exactly the traffic a perfect forward scan needs. Like the floor, the scans write into
preallocated buffers (`out=`); the "allocating" column repeats forward + backward letting every call allocate
its outputs. Every time is the best of `repeats` runs after a warm-up call (which also compiles Numba
kernels); the measurement runs in `rounds` rounds (floor, bound, then every backend's calls), each ratio is
taken to its own round's floor and reported as the median over rounds with its range. The **bound** row times
two dependency-free passes with exactly the scan's minimal memory traffic, split over the threads as the Numba
backend splits its work: h = a * x (the forward) and g = dh + a, da = g * h (the backward). A scan should not
beat it by more than the run's noise. benchmarks/bench_scan.py's docstring says more.

GPU. The floor is a device-to-device copy of one array (`cupy.copyto`: read one, write one); the forward scan
reads two and writes one, so its bandwidth 3 * nbytes / time is reported as a fraction of the copy's
2 * nbytes / time (target >= 80%). Times are the best of `repeats`, each bracketed by device synchronisation.
"""

import os
import platform
import time

import numba
import numpy as np
from numba import njit, prange

from minigriffin.scan import linear_scan, linear_scan_backward

CPU_HEADER = ("| shape (B, T, D) | backend | fwd ms | fwd / floor | fwd+bwd ms | fwd+bwd / floor "
              "| speed-up vs reference (fwd, fwd+bwd) | fwd+bwd allocating / floor |\n"
              "|---|---|---|---|---|---|---|---|")
GPU_HEADER = ("| shape (B, T, D) | copy ms | copy GB/s | scan fwd ms | fwd GB/s | fwd bandwidth / copy's "
              "| fwd+bwd ms | fwd+bwd / copy time |\n|---|---|---|---|---|---|---|---|")


def best_time(fn, repeats, sync=lambda: None):
    """Minimum wall time of fn() over `repeats` calls (seconds). sync() waits for queued device work (GPU)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return min(times)


def machine_description():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}; {os.cpu_count()} logical CPUs; numba {numba.__version__} with {numba.get_num_threads()} "
            f"threads; numpy {np.__version__}; Python {platform.python_version()}; {platform.system()}")


def parse_shapes(spec):
    """'8x2048x512,1x16384x256' -> [(8, 2048, 512), (1, 16384, 256)]; ValueError naming a bad one."""
    shapes = []
    for item in spec.split(","):
        try:
            shape = tuple(int(n) for n in item.lower().split("x"))
        except ValueError:
            shape = ()
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"shape {item!r} is not BxTxD with three positive integers (e.g. 8x2048x512)")
        shapes.append(shape)
    return shapes


def bench_shape_gpu(shape, repeats, dtype=np.float32, seed=0, backend="cupy"):
    """Forward and forward+backward of a backend on CuPy arrays, and a device-to-device copy of one array."""
    from minigriffin.device import device_namespace
    cupy = device_namespace("gpu")                       # a clear error when there is no usable GPU
    rng = np.random.default_rng(seed)
    x = cupy.asarray(rng.standard_normal(shape).astype(dtype))     # (B, T, D)
    a = cupy.asarray(rng.uniform(0.9, 1.0, shape).astype(dtype))   # (B, T, D)
    dh = cupy.asarray(rng.standard_normal(shape).astype(dtype))    # (B, T, D)
    h_out, dx_out, da_out = cupy.empty_like(x), cupy.empty_like(x), cupy.empty_like(x)
    sync = cupy.cuda.Device().synchronize

    def timed(fn):
        fn()                                             # warm-up: NVRTC compiles on the first call
        sync()
        return best_time(fn, repeats, sync)

    def fwd_bwd():
        h, _ = linear_scan(x, a, backend=backend, out=h_out)
        return linear_scan_backward(dh, None, a, h, backend=backend, out=(dx_out, da_out))

    copy = timed(lambda: cupy.copyto(h_out, x))
    fwd = timed(lambda: linear_scan(x, a, backend=backend, out=h_out))
    return copy, fwd, timed(fwd_bwd), x.nbytes


def gpu_description(repeats):
    from minigriffin.device import device_namespace
    cupy = device_namespace("gpu")                       # DeviceUnavailable says why when there is no GPU
    props = cupy.cuda.runtime.getDeviceProperties(0)
    return (f"device: {props['name'].decode()}; cupy {cupy.__version__}; CUDA runtime "
            f"{cupy.cuda.runtime.runtimeGetVersion()}; float32; best of {repeats}")


def gpu_table(shape, repeats, backend="cupy"):
    """(table row, verdict) of one shape on the GPU: the backend's forward bandwidth against a copy's."""
    copy, fwd, fwd_bwd, nbytes = bench_shape_gpu(shape, repeats, backend=backend)
    copy_bw, fwd_bw = 2 * nbytes / copy, 3 * nbytes / fwd
    row = (f"| {shape} | {copy * 1e3:.3f} | {copy_bw / 1e9:,.0f} | {fwd * 1e3:.3f} | {fwd_bw / 1e9:,.0f} "
           f"| {fwd_bw / copy_bw:.0%} | {fwd_bwd * 1e3:.3f} | {fwd_bwd / copy:.2f} |")
    verdict = (f"{backend} fwd at {shape}: {fwd_bw / copy_bw:.0%} of copy bandwidth (target >= 80%): "
               f"{'met' if fwd_bw >= 0.8 * copy_bw else 'MISSED'}")
    return row, verdict


@njit(parallel=True, nogil=True)
def _bound_forward(x, a, h, parts):  # pragma: no cover - compiled by Numba
    """h = a * x over (B, T, D), in B * parts jobs of contiguous time stretches: the forward's traffic."""
    B, T, D = x.shape
    for job in prange(B * parts):
        b = job // parts
        k = job % parts
        for t in range(T * k // parts, T * (k + 1) // parts):
            x_row, a_row, h_row = x[b, t], a[b, t], h[b, t]    # (D,) each
            for j in range(D):
                h_row[j] = a_row[j] * x_row[j]


@njit(parallel=True, nogil=True)
def _bound_backward(dh, a, h, g, da, parts):  # pragma: no cover - compiled by Numba
    """g = dh + a, da = g * h: the backward's traffic (read dh, a, h; write g, da), split as above."""
    B, T, D = dh.shape
    for job in prange(B * parts):
        b = job // parts
        k = job % parts
        for t in range(T * k // parts, T * (k + 1) // parts):
            dh_row, a_row, h_row, g_row, da_row = dh[b, t], a[b, t], h[b, t], g[b, t], da[b, t]
            for j in range(D):
                gj = dh_row[j] + a_row[j]
                g_row[j] = gj
                da_row[j] = gj * h_row[j]


def streaming_bound(x, a, dh, h, g, da, repeats):
    """(forward, backward) times of the dependency-free passes with the scan's minimal traffic (module doc)."""
    parts = max(1, -(-numba.get_num_threads() // x.shape[0]))   # time stretches per row when B < threads
    _bound_forward(x, a, h, parts)                               # warm-up and compilation
    _bound_backward(dh, a, h, g, da, parts)
    return (best_time(lambda: _bound_forward(x, a, h, parts), repeats),
            best_time(lambda: _bound_backward(dh, a, h, g, da, parts), repeats))


def bench_shape(shape, backends, repeats, rounds, dtype=np.float32, seed=0):
    """Per-round times (seconds) at one shape: [{"floor", "bound fwd", "bound bwd", (backend, kind): ...}]."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)        # (B, T, D)
    a = rng.uniform(0.9, 1.0, shape).astype(dtype)      # (B, T, D) RG-LRU-like long memory
    dh = rng.standard_normal(shape).astype(dtype)       # (B, T, D)
    h_out, dx_out, da_out = np.empty_like(x), np.empty_like(x), np.empty_like(x)   # reused, like the floor's

    def calls(name):
        def fwd():
            return linear_scan(x, a, backend=name, out=h_out)

        def fwd_bwd():
            h, _ = linear_scan(x, a, backend=name, out=h_out)
            return linear_scan_backward(dh, None, a, h, backend=name, out=(dx_out, da_out))

        def fwd_bwd_allocating():
            h, _ = linear_scan(x, a, backend=name)
            return linear_scan_backward(dh, None, a, h, backend=name)
        return {"fwd": fwd, "fwd+bwd": fwd_bwd, "alloc": fwd_bwd_allocating}

    timed = {name: calls(name) for name in backends}
    for name in backends:
        timed[name]["fwd+bwd"]()                        # warm-up (and JIT compilation) outside the timed region
    per_round = []
    for _ in range(rounds):
        times = {"floor": best_time(lambda: np.multiply(a, x, out=h_out), repeats)}
        times["bound fwd"], times["bound bwd"] = streaming_bound(x, a, dh, h_out, dx_out, da_out, repeats)
        for name in backends:
            for kind, fn in timed[name].items():
                times[name, kind] = best_time(fn, repeats)
        per_round.append(times)
    return per_round


def median_and_range(values):
    """'median (low-high)' of a list of ratios; the median alone for one round."""
    values = sorted(values)
    median = float(np.median(values))
    return f"{median:.2f}" if len(values) == 1 else f"{median:.2f} ({values[0]:.2f}-{values[-1]:.2f})"


def cpu_table(shape, backends, repeats, rounds, targets=None):
    """(table rows, verdicts) of one shape on the CPU: the floor, the bound and every backend (CPU_HEADER's
    columns), and a verdict line per target in targets = {backend: {"fwd": ratio, "fwd+bwd": ratio}}."""
    rounds = bench_shape(shape, backends, repeats, rounds)

    def ms(key):
        return f"{np.median([r[key] for r in rounds]) * 1e3:.2f}"

    def ratio(key, per=lambda r: r["floor"]):
        return [r[key] / per(r) for r in rounds]

    for r in rounds:
        r["bound"] = r["bound fwd"] + r["bound bwd"]
    rows = [f"| {shape} | floor: np.multiply(a, x, out=h) | {ms('floor')} | 1.00 | | | | |",
            f"| {shape} | bound: minimal traffic, no recurrence | {ms('bound fwd')} "
            f"| {median_and_range(ratio('bound fwd'))} | {ms('bound')} | {median_and_range(ratio('bound'))} | | |"]
    verdicts = []
    for name in backends:
        speedup = "n/a"
        if "reference" in backends:
            speedup = ", ".join(f"{np.median(ratio(('reference', k), lambda r, k=k: r[name, k])):.1f}x"
                                for k in ("fwd", "fwd+bwd"))
        rows.append(f"| {shape} | {name} | {ms((name, 'fwd'))} | {median_and_range(ratio((name, 'fwd')))} "
                    f"| {ms((name, 'fwd+bwd'))} | {median_and_range(ratio((name, 'fwd+bwd')))} | {speedup} "
                    f"| {median_and_range(ratio((name, 'alloc')))} |")
        for kind, target in (targets or {}).get(name, {}).items():
            ratios = ratio((name, kind))
            median = float(np.median(ratios))
            bound = float(np.median(ratio("bound fwd" if kind == "fwd" else "bound")))
            under = sum(v <= target for v in ratios)
            verdicts.append(f"{name} {kind} at {shape}: {median:.2f}x floor, median of {len(ratios)} rounds "
                            f"(target <= {target}x): {'met' if median <= target else 'MISSED'}; "
                            f"{under} of {len(ratios)} rounds under the target; the bound: {bound:.2f}x")
    return rows, verdicts
