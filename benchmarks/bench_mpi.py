"""Data parallelism on one machine: MPI ranks (minigriffin/distributed.py) against the thread workers of
minigriffin/fast/parallel.py, and the cost of the Allreduce that the ranks pay every step.

    python benchmarks/bench_mpi.py --data-dir BOOKS          # needs the mpi extra: pip install -e '.[mpi]'

Part 1, tokens per second of full training steps (batch sampling, forward, backward, the gradient exchange,
clipping, AdamW), griffin-small, batch 8 x 256, float32, best of --repeats windows of --steps steps after 2
warm-up steps, for:
    1 process, 1 thread         one core (Numba and OpenBLAS limited to one thread)
    1 process, 2 thread workers minigriffin.fast.parallel: the batch's rows split between 2 threads (default)
    1 MPI rank, 2 workers       minigriffin.distributed with one rank: the flat buffer, an Allreduce of one
    2 MPI ranks, 1 thread each  4 rows per rank, one Allreduce of the 4.9M gradients (19 MB) per step
Part 2, Allreduce time on localhost between 2 ranks, per message size: MPI's blocking Allreduce, and the
Iallreduce + Test polling that minigriffin uses (so that a dead rank cannot hang the others); ms and ms/MB.

Every configuration runs in its own processes (started here with mpiexec, or plainly), one after the other.
Results go in docs/benchmarks.md; docs/distributed.md turns the Allreduce cost into a scaling estimate.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ONE_THREAD = {"NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
#: (name, MPI ranks or 0 for a plain process, cpu_workers (0: the default, one per core of the process), env)
CONFIGS = [("1 process, 1 thread (one core)", 0, 1, ONE_THREAD),
           ("1 process, 2 thread workers (fast/parallel.py; the default)", 0, 0, {}),
           ("1 MPI rank, 2 thread workers", 1, 0, {}),
           ("2 MPI ranks, 1 thread each", 2, 0, {})]
SIZES_MB = [0.25, 1, 4, 19, 64]


def mpiexec():
    return str(Path(sys.executable).parent / "mpiexec") if (Path(sys.executable).parent / "mpiexec").exists() \
        else "mpiexec"


def worker_steps(args):
    """One process of a configuration: time training steps; rank 0 (or the lone process) prints JSON."""
    from minigriffin.config import PRESETS, TrainConfig
    from minigriffin.data import load_corpus
    from minigriffin.optim import adamw_init
    from minigriffin.params import init_params
    ranks, cls = None, None
    if args.ranks:
        from minigriffin.distributed import RankTrainer, limit_threads
        from minigriffin.distributed_comm import Ranks
        ranks, cls = Ranks.start(timeout=600), RankTrainer
        limit_threads(ranks.local_size)
    else:
        from minigriffin.train import Trainer as cls
    corpus = load_corpus(args.data_dir)
    cfg = PRESETS[args.preset]
    trainer = cls("/nonexistent", cfg, TrainConfig(batch_size=args.batch, seq_len=args.seq, cpu_workers=args.threads),
                  args.data_dir, corpus)
    trainer.params = init_params(cfg, np.random.default_rng(0))
    trainer.opt_state = adamw_init(trainer.params)
    trainer.data_rng = np.random.default_rng(1)
    if ranks is not None:
        trainer.join(ranks)

    from bench_train import best_seconds_per_step           # this folder is sys.path[0] when run as a script
    best = best_seconds_per_step(lambda: trainer.train_step(trainer.windows.next(trainer.step, trainer.data_rng)[0]),
                                 args.steps, args.repeats)
    if ranks is None or ranks.rank == 0:
        print(json.dumps({"s_per_step": best, "tokens_per_s": args.batch * args.seq / best}), flush=True)


def worker_allreduce(args):
    """Two ranks: time Allreduce and Iallreduce + Test on float32 buffers of each size; rank 0 prints JSON."""
    from mpi4py import MPI

    from minigriffin.distributed_comm import Ranks
    ranks = Ranks.start(timeout=600)
    comm, rows = ranks.comm, []
    for mb in SIZES_MB:
        buf = np.ones(int(mb * 2**20 / 4), dtype=np.float32)
        timings = {}
        for name, call in (("blocking", lambda: comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)),
                           ("polled", lambda: ranks.allreduce(buf, "the benchmark"))):
            times = []
            for _ in range(args.allreduce_repeats):
                comm.Barrier()
                start = time.perf_counter()
                call()
                times.append(time.perf_counter() - start)
            timings[name] = float(np.median(times))
        rows.append({"mb": mb, **timings})
    if ranks.rank == 0:
        print(json.dumps(rows), flush=True)


def run_json(cmd, env=None):
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=dict(os.environ, **(env or {}))).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("MINIGRIFFIN_BOOKS"))
    parser.add_argument("--preset", default="griffin-small")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--allreduce-repeats", type=int, default=20)
    parser.add_argument("--worker", choices=["steps", "allreduce"], help=argparse.SUPPRESS)
    parser.add_argument("--ranks", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == "steps":
        return worker_steps(args)
    if args.worker == "allreduce":
        return worker_allreduce(args)
    if not args.data_dir:
        parser.error("--data-dir (or $MINIGRIFFIN_BOOKS) is needed")
    from mpi4py import MPI
    common = [sys.executable, __file__, "--data-dir", args.data_dir, "--preset", args.preset, "--batch",
              str(args.batch), "--seq", str(args.seq), "--steps", str(args.steps), "--repeats", str(args.repeats)]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at the start; {MPI.Get_library_version().splitlines()[0]}; {args.preset}, "
          f"batch {args.batch} x {args.seq}, float32\n")
    print("| configuration | tokens/s | s/step |\n|---|---|---|")
    for name, n, threads, env in CONFIGS:
        cmd = [*common, "--worker", "steps", "--ranks", str(n), "--threads", str(threads)]
        result = run_json([mpiexec(), "-n", str(n), *cmd] if n else cmd, env)
        print(f"| {name} | {result['tokens_per_s']:,.0f} | {result['s_per_step']:.2f} |", flush=True)
    rows = run_json([mpiexec(), "-n", "2", sys.executable, __file__, "--worker", "allreduce",
                     "--allreduce-repeats", str(args.allreduce_repeats)])
    print(f"\nAllreduce between 2 ranks on this machine (float32 sum in place, median of {args.allreduce_repeats})\n")
    print("| MB | blocking Allreduce, ms | ms/MB | Iallreduce + Test (minigriffin), ms | ms/MB |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mb']:g} | {1e3 * r['blocking']:.2f} | {1e3 * r['blocking'] / r['mb']:.2f} | "
              f"{1e3 * r['polled']:.2f} | {1e3 * r['polled'] / r['mb']:.2f} |")
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
