"""Data-parallel training over MPI ranks (mpi4py): `mpiexec -n N minigriffin train ...` trains one model with N
processes, on one machine or on many. docs/distributed.md explains it for users; this is the code.

Every rank holds the whole model and runs the same steps:

    batch  = the step's global batch of B rows, drawn by every rank from the same data RNG
    rows   = this rank's B/N of them (rank r: rows r B/N ... (r + 1) B/N - 1)
    g_r    = (n_r / n) * the gradient of the mean loss over its rows   (n_r of the batch's n counted targets)
    buffer = [g_r, all parameters flattened | (n_r / n) loss_r | stop flag]       (P + 2,), one array
    Allreduce(SUM, buffer)     ->  on every rank: sum_r g_r, the gradient of the whole batch's mean loss
    clip, AdamW                    the same update on every rank, so the replicas stay equal

So N ranks compute what one process computes on the whole batch, up to the order of the floating-point sums
(tests/test_distributed.py: float64 within 1e-12 after 20 steps), and the data RNG is the same on every rank
(with carry_windows > 1 so is the carried state: gathered after each window). Rank 0 alone writes:
config.json, metrics.jsonl, the checkpoints, the log lines; it also evaluates. The others only compute.

Start-up, on every rank: its code and its command line are checked against rank 0's (sha256 fingerprints
broadcast from rank 0); rank 0 sets the run up (fresh, or --resume from its checkpoint) and broadcasts its
state: the run's metadata as JSON text, then the parameters and AdamW's moments as one flat array. So only
rank 0 reads a checkpoint, and a run checkpointed under N ranks resumes under any N that divides the batch
(bit for bit under the same N). Last, each rank's books are checked against rank 0's.

Faults: a rank count that does not divide batch_size, or a rank whose code, command line or books differ: one
line from rank 0, exit status 2 on every rank. Ctrl-C (on rank 0 alone, or on every rank: mpiexec forwards
it): the flag travels in the step's buffer, every rank stops after the same step, rank 0 saves. A rank that
dies or hangs: the others give up after --distributed-timeout seconds with an error and MPI_Abort instead of
waiting forever (distributed_comm.Ranks.wait). The modules: this one (launch, the Trainer of one rank, the
run) and minigriffin.distributed_comm (timed collectives, the flat buffer, fingerprints).
"""

import importlib.util
import json
import os
import sys

import numpy as np

from minigriffin.config import TrainConfig, config_from_dict, config_to_dict
from minigriffin.distributed_comm import (FlatGradients, Ranks, agree, carry_layout, code_fingerprint,
                                          corpus_fingerprint, fill_trees, flatten_trees, gather_state, share_carry,
                                          text_fingerprint)
from minigriffin.interrupt import StopRequest
from minigriffin.optim import AdamWState, adamw_init
from minigriffin.params import init_params
from minigriffin.model import model_forward
from minigriffin.state import state_rows
from minigriffin.train import EXIT_INTERRUPTED, Trainer, loss_and_grads, run_and_report
from minigriffin.tree import to_device, to_host

EXIT_ERROR = 2
#: what MPI launchers set in each process they start: the number of ranks (MPICH and Intel MPI, Open MPI,
#: MVAPICH2)
LAUNCH_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def launched_size(environ=None):
    """(variable, N) when an MPI launcher (mpiexec, mpirun) started this process as one of N > 1, else None."""
    environ = os.environ if environ is None else environ
    for name in LAUNCH_VARIABLES:
        if environ.get(name, "").isdigit() and int(environ[name]) > 1:
            return name, int(environ[name])
    return None


def launch(mode, environ=None):
    """How `minigriffin train` runs, from --distributed: None for one process, or why it runs over MPI.
    mode: "none" (never), "mpi" (always, even as one rank) or "auto" (when a launcher started several)."""
    found = None if mode == "none" else launched_size(environ)
    if mode == "none" or (mode == "auto" and found is None):
        return None
    why = "--distributed mpi" if mode == "mpi" else f"started by an MPI launcher, {found[0]}={found[1]}"
    if importlib.util.find_spec("mpi4py") is None:
        raise SystemExit(f"data-parallel training ({why}) needs mpi4py, which is not installed: pip install "
                         f"'minigriffin[mpi]' (or --distributed none to train in one process)")
    return why


class AgreedStop:
    """Ctrl-C under MPI. `local` is this rank's own request (minigriffin.interrupt); `requested`, which the loop
    reads, turns true on every rank at once: after the Allreduce of a step in which any rank asked."""

    def __init__(self):
        self.local, self.requested = StopRequest(), False

    def __enter__(self):
        self.local.__enter__()
        return self

    def __exit__(self, *exc):
        return self.local.__exit__(*exc)


class RankTrainer(Trainer):
    """A Trainer that is one rank of N: it computes its rows' share of the gradient, and one Allreduce adds the
    shares up. Everything else (clipping, AdamW, the loop of rank 0) is the Trainer's own code."""

    ranks = flat = stop = None          # set by join (stop: by stop_request, while a loop runs)

    def join(self, ranks):
        """Train as one of `ranks` (distributed_comm.Ranks), once the parameters are in place."""
        self.ranks, self.flat = ranks, FlatGradients(self.params)
        return self

    def stop_request(self):
        self.stop = AgreedStop()
        return self.stop

    def gradients(self, batch, state=None):
        """This rank's rows of the global batch -> its weighted gradient -> Allreduce -> the batch's (loss, grads).
        state (carry_windows > 1): the whole batch's carried state; this rank starts its rows from theirs, and
        the states after the window are gathered so every rank carries the whole batch's (gather_state)."""
        B, size = batch.tokens.shape[0], self.ranks.size
        rows = slice(self.ranks.rank * B // size, (self.ranks.rank + 1) * B // size)
        part = type(batch)(*(field[rows] for field in batch))                      # (B/N, T) arrays
        counted, total = (int(np.count_nonzero(b.mask)) for b in (part, batch))
        asked = self.stop is not None and self.stop.local.requested
        part_state = None if state is None else state_rows(state, rows)
        if counted:
            loss, grads, *after = loss_and_grads(self.params, to_device(part, self.xp), self.model_cfg,
                                                 workers=self.workers, state=part_state)
            self.flat.pack(grads, counted / total, loss, asked)
        else:                                           # every target of these rows is masked: adds nothing
            self.flat.pack(None, 0.0, 0.0, asked)
            after = [] if state is None else [model_forward(self.params, *(self.xp.asarray(a) for a in (
                part.tokens, part.segment_pos)), self.model_cfg, state=part_state)[1].state]
        if state is not None:
            self.windows.carry(gather_state(self.ranks, after[0], rows, B, f"step {self.step + 1}'s carried state"))
        self.ranks.allreduce(self.flat.buffer, f"step {self.step + 1}'s gradient Allreduce")
        loss, stop = self.flat.loss_and_stop()
        if stop and self.stop is not None:
            self.stop.requested = True
        return loss, self.flat.grads

    def crash(self, loss, grads, lr):
        """Every rank sees the same non-finite step; rank 0 writes the snapshot and names the problem."""
        if self.ranks.rank == 0:
            super().crash(loss, grads, lr)
        raise SystemExit(EXIT_ERROR)


def check_split(trainer, size):
    """Refuse a run the ranks cannot share (ValueError: one line, exit status 2)."""
    B = trainer.train_cfg.batch_size
    if B % size:
        multiples = ", ".join(str(size * k) for k in range(1, 4))
        raise ValueError(f"batch_size={B} does not split evenly over {size} MPI ranks: use a multiple of {size} "
                         f"({multiples}, ...), or a number of ranks that divides {B}")


def limit_threads(local_size):
    """Share this machine's cores between its ranks: Numba threads, BLAS threads, and so the default number
    of data-parallel worker threads (cpu_workers=0 means one per Numba thread)."""
    import numba
    from threadpoolctl import threadpool_limits
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_rank = min(max(1, cores // local_size), numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(per_rank)
    threadpool_limits(limits=per_rank, user_api="blas")
    return per_rank


def use_gpu(local_rank):
    """With --device gpu, rank i of a machine uses its GPU i (modulo the count), so ranks do not share one."""
    try:
        import cupy
        cupy.cuda.Device(local_rank % cupy.cuda.runtime.getDeviceCount()).use()
    except Exception:                               # no CuPy or no GPU: the Trainer says why, in one line
        pass


def replica(meta, load_corpus, device):
    """A rank's RankTrainer built from rank 0's metadata (Trainer.meta), reading the books at rank 0's data_dir
    path on this machine (checked against rank 0's by agree); its arrays arrive by share_state."""
    model_cfg, train_cfg = config_from_dict(meta["model_config"]), TrainConfig(**meta["train_config"])
    trainer = RankTrainer(meta["run_dir"], model_cfg, train_cfg, meta["data_dir"], load_corpus(meta["data_dir"]),
                          device)
    trainer.params = to_device(init_params(model_cfg, np.random.default_rng(0)), trainer.xp)   # the shapes
    trainer.step = int(meta["step"])
    trainer.opt_state = AdamWState(trainer.step, *adamw_init(trainer.params)[1:])
    trainer.data_rng = np.random.default_rng()
    trainer.data_rng.bit_generator.state = meta["data_rng_state"]
    trainer.best_val, trainer.last_finite_loss = float(meta["best_val_loss"]), meta["last_finite_loss"]
    return trainer


def share_state(ranks, trainer):
    """Rank 0's parameters and AdamW moments into every rank's, as one flat array (one Bcast)."""
    trees = (trainer.params, trainer.opt_state.m, trainer.opt_state.v)
    flat = flatten_trees(trees)                     # rank 0: the values; the others: a buffer of the same size
    ranks.bcast(flat, "the broadcast of the parameters")
    if ranks.rank != 0:
        fill_trees(flat, trees)


def request(plan):
    """What a rank's command line asks for (cli.py's plan), as the dict the ranks compare with rank 0's."""
    if plan.resume:
        return {"resume": plan.resume, "max_steps": plan.max_steps, "device": plan.device}
    return {"model": config_to_dict(plan.model_cfg), "train": dict(vars(plan.train_cfg)), "device": plan.device,
            "tokenizer": plan.tokenizer.name, "data_dir": str(plan.data_dir)}


def start_rank0(ranks, plan, make):
    """Rank 0's RankTrainer: resumed (and locked), or fresh; refused before a folder is written if the ranks
    cannot share its batch."""
    trainer = make(RankTrainer, start=False)
    try:
        check_split(trainer, ranks.size)
    except BaseException:
        if trainer.lock is not None:                # a resumed run is locked: free it again
            trainer.lock.release()
        raise
    if not plan.resume:
        trainer.start_fresh()
    return trainer


def setup(ranks, plan, make):
    """Every rank's RankTrainer, with rank 0's state; raises on every rank if any rank cannot train."""
    trainer, failed = None, False
    if ranks.rank == 0:
        try:
            trainer = start_rank0(ranks, plan, make)
            carry_meta, carry = trainer.windows.checkpoint_arrays(trainer.step)    # mid-group: the carried state
            carry = None if carry is None else to_host(carry)
            meta = trainer.meta() | carry_meta | {"run_dir": str(trainer.run_dir),
                                                  "carry_layout": None if carry is None else carry_layout(carry)}
            text = json.dumps(meta)
        except BaseException:                       # refused (printed by the command line): tell the others
            ranks.bcast_text(json.dumps({"error": True}), "rank 0's set-up")
            raise
        ranks.bcast_text(text, "rank 0's set-up")
    else:
        meta = json.loads(ranks.bcast_text(None, "rank 0's set-up"))
        if meta.get("error"):
            raise SystemExit(EXIT_ERROR)
        try:
            trainer = replica(meta, plan.load_corpus, plan.device)
        except Exception as exc:                    # e.g. no books at that path on this machine
            print(f"minigriffin train: error: rank {ranks.rank}: {one_line(exc)}", file=sys.stderr, flush=True)
            failed = True
    try:
        agree(ranks, {"data": "0" * 64 if failed else corpus_fingerprint(trainer.corpus)}, failed)
    except ValueError:
        trainer.lock.release()                      # rank 0: the run folder is free for the next try
        raise
    share_state(ranks, trainer)
    if meta["carry_layout"]:                        # resumed inside a group of carried windows
        carry = share_carry(ranks, carry if ranks.rank == 0 else None, meta["carry_layout"], "the carried state")
        trainer.windows.restore(meta, carry)
    return trainer.join(ranks)


def follow(trainer):
    """What every rank but 0 runs: the same steps, with no evaluation, no files and no output."""
    with trainer.stop_request() as stop:
        while trainer.step < trainer.train_cfg.max_steps and not stop.requested:
            batch, state = trainer.windows.next(trainer.step, trainer.data_rng)
            trainer.train_step(batch, state)
    return EXIT_INTERRUPTED if stop.requested else 0


def one_line(exc):
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{text} ({type(exc).__name__})"


def run_distributed(how, plan, make, timeout=300.0, progress_bar=True):
    """`minigriffin train` as one rank of an MPI job; returns the exit status (0, or 130 after Ctrl-C).

    how: why it runs over MPI (launch); plan: what this rank's command line asks for (cli.py's _train_plan);
    make(cls, start): the plan's Trainer of class cls, started if start (called on rank 0 only)."""
    ranks = Ranks.start(timeout)
    threads = limit_threads(ranks.local_size)
    if plan.device == "gpu":
        use_gpu(ranks.local_rank)
    agree(ranks, {"code": code_fingerprint(), "config": text_fingerprint(request(plan))})
    trainer = setup(ranks, plan, make)
    if ranks.rank == 0:
        B = trainer.train_cfg.batch_size
        megabytes = (trainer.flat.size + 2) * trainer.flat.buffer.itemsize / 2**20
        print(f"data-parallel over {ranks.size} MPI rank{'s' * (ranks.size > 1)} ({how}; {ranks.local_size} on "
              f"this machine, {threads} thread(s) each): {B // ranks.size} of the batch's {B} rows per rank, one "
              f"Allreduce of {megabytes:.1f} MB per step", flush=True)
    try:
        if ranks.rank != 0:
            return follow(trainer)
        status = run_and_report(trainer, progress_bar=progress_bar)
        if status == EXIT_INTERRUPTED:
            print(f"  or over MPI ranks: mpiexec -n N minigriffin train --resume {trainer.run_dir}  (N: {ranks.size}, "
                  f"or another number of ranks that divides batch_size={B})", flush=True)
        return status
    except (SystemExit, FloatingPointError):        # a non-finite step, seen by every rank (RankTrainer.crash)
        raise
    except BaseException as exc:                    # this rank alone: the others wait in an Allreduce; stop them
        what = "interrupted" if isinstance(exc, KeyboardInterrupt) else one_line(exc)
        print(f"minigriffin train: error: rank {ranks.rank}: {what}; stopping every rank", file=sys.stderr,
              flush=True)
        ranks.abort(EXIT_INTERRUPTED if isinstance(exc, KeyboardInterrupt) else EXIT_ERROR)
