"""Benchmark the linear-scan backends against the memory floor measured in the same run.

    python benchmarks/bench_scan.py                 # the two shapes of record, float32
    python benchmarks/bench_scan.py --shapes 2x256x64 --repeats 3

The floor is one `np.multiply(a, x, out=h)` pass over the same (B, T, D) arrays: it reads two arrays and
writes one, exactly the traffic a perfect forward scan needs. Like the floor, the scans write into
preallocated buffers (`out=`); the last column repeats forward + backward letting every call allocate its
outputs, which on Linux pages in fresh memory for arrays over glibc's 32 MiB mmap threshold. Every time is the best of --repeats runs
(this machine is shared and noisy; the minimum is the least disturbed run), after a warm-up call that
also triggers Numba's compilation. Ratios are within one run, so they travel between machines far better
than seconds do. Targets (issue 2): numba forward <= 1.2x floor, forward + backward <= 2.5x floor. The
measurement runs in --rounds rounds (floor, bound, then every backend's calls); each ratio is taken to its
own round's floor, and the verdict is on the median over rounds, because one disturbed stretch of a few
seconds can move a single run's ratio by 30% on a shared machine. Results are recorded in docs/benchmarks.md. This is a benchmark, not a test: nothing here asserts.

The **bound** row says how far a scan could get on this machine in this run. It times two dependency-free
passes with exactly the scan's minimal memory traffic, split over the threads as the Numba backend splits
its work (whole batch rows, or stretches of time when B < threads): h = a * x (read two arrays, write one:
the forward) and g = dh + a, da = g * h (read three, write two: the backward). A scan moves at least this
much memory and adds the recurrence's dependency and, at small B, the chunked scan's extra reads, so it
should not beat the bound by more than the run's noise (a few percent between back-to-back timings). When the bound's
forward + backward is itself near 2.5 floors (on a shared VM, two threads sometimes get barely more memory
bandwidth than one), the target cannot be met in that run whatever the kernel.

    python benchmarks/bench_scan.py --device gpu    # the cupy backend on CuPy arrays (issue 6)

On the GPU the floor is a device-to-device copy of one (B, T, D) array (`cupy.copyto`, which reads one array
and writes one), timed in the same run; the forward scan reads two and writes one, so its achieved bandwidth
is 3 * nbytes / time, reported as a fraction of the copy's 2 * nbytes / time. Target: >= 80%. Times are the
best of --repeats, each bracketed by device synchronisation.

The measuring code is minigriffin/scan/timing.py, shared with `minigriffin check-scan`, which times a kernel of
your own the same way (docs/testing-kernels.md).
"""

import argparse

from minigriffin.scan import available_backends
from minigriffin.scan.timing import (
    CPU_HEADER,
    GPU_HEADER,
    cpu_table,
    gpu_description,
    gpu_table,
    machine_description,
    parse_shapes,
)

TARGETS = {"numba": {"fwd": 1.2, "fwd+bwd": 2.5}}


def main_gpu(args):
    print(gpu_description(args.repeats) + "\n")
    print(GPU_HEADER)
    verdicts = []
    for shape in parse_shapes(args.shapes):
        row, verdict = gpu_table(shape, args.repeats)
        print(row)
        verdicts.append(verdict)
    print()
    print("\n".join(verdicts))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="8x2048x512,1x16384x256", help="comma-separated BxTxD (default: %(default)s)")
    parser.add_argument("--backends", default=",".join(available_backends()), help="default: %(default)s")
    parser.add_argument("--repeats", type=int, default=7, help="timings per call per round; the best counts")
    parser.add_argument("--rounds", type=int, default=5,
                        help="CPU: rounds of floor, bound and scans; ratios are per round, reported as the "
                             "median over rounds with their range (default %(default)s)")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                        help="cpu: every CPU backend against np.multiply; gpu: cupy against a device copy")
    args = parser.parse_args(argv)
    if args.device == "gpu":
        return main_gpu(args)
    backends = args.backends.split(",")
    print(f"machine: {machine_description()}")
    print(f"dtype float32; each time is the best of {args.repeats} calls; each ratio is to the floor of its own "
          f"round, given as the median over {args.rounds} rounds (lowest-highest); ms are medians\n")
    print(CPU_HEADER)
    verdicts = []
    for shape in parse_shapes(args.shapes):
        rows, shape_verdicts = cpu_table(shape, backends, args.repeats, args.rounds, TARGETS)
        print("\n".join(rows))
        verdicts += shape_verdicts
    print()
    print("\n".join(verdicts))


if __name__ == "__main__":
    main()
