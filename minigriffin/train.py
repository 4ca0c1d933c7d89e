"""The training loop: `minigriffin train` (see cli.py). It never loses work.

    run_dir/config.json          the resolved model and training configuration
    run_dir/metrics.jsonl        one JSON object per step (loss, lr, grad norm, tokens/s; val_loss when measured)
    run_dir/checkpoints/last.npz every checkpoint_every steps and at the end (atomic, minigriffin.checkpoint)
    run_dir/checkpoints/best.npz whenever the validation loss improves
    run_dir/crash_step<N>.npz    a snapshot when a loss or gradient goes non-finite (last.npz is left alone)
    run_dir/.lock                while a trainer owns the folder (minigriffin.runlock): a second trainer is
                                 refused, naming the first; a lock left by a killed run is taken over

Resuming restores the parameters, AdamW's moments, the step, the data sampler's RNG state and the best
validation loss (the lower of last.npz's and best.npz's), the state carried into the next window when
training with carry_windows > 1 (minigriffin.carry), and trims metrics.jsonl to the checkpoint's step
(dropping the steps that will be trained again and a line torn by a kill), so N steps in one go and
N/2 + kill + resume + N/2 give bit-identical parameters and the same losses (with the reference scan and one
thread; multithreaded reductions may round differently run to run).
Ctrl-C finishes the current step, saves, prints the resume command and exits with 130; a second Ctrl-C stops
at once. Over several processes (`mpiexec -n N minigriffin train`): minigriffin.distributed, docs/distributed.md.

Devices: `Trainer(..., device="gpu")` (`minigriffin train --device gpu`) keeps the parameters, AdamW's moments
and every activation on the GPU as CuPy arrays and runs exactly the same forward, backward and AdamW code
(each layer takes its array module from its inputs; the scan's "auto" backend picks the CUDA kernels). Only
three places move data: the initial parameters (drawn on the host with the same RNG, so a seed gives the same
model on either device), each batch (sampled on the host), and checkpoints (always written as NumPy arrays).
So a run started on the GPU resumes on the CPU and back: `train --resume RUN --device cpu`.

Notebook: notebooks/05_training.ipynb
"""

import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from minigriffin.accelerate import accelerated
from minigriffin.carry import WindowSampler
from minigriffin.checkpoint import load_checkpoint, save_checkpoint
from minigriffin.config import TrainConfig, config_from_dict, config_to_dict
from minigriffin.data import TOKENIZER_FILE
from minigriffin.device import DEVICES, default_workers, device_namespace
from minigriffin.interrupt import StopRequest
from minigriffin.head import cross_entropy_backward, cross_entropy_forward
from minigriffin.model import model_backward, model_forward
from minigriffin.optim import AdamWState, adamw_init, adamw_update, clip_by_global_norm, lr_schedule
from minigriffin.params import count_params, init_params
from minigriffin.preflight import check_fits_in_memory, check_vocabulary
from minigriffin.resume import best_val_loss, trim_metrics
from minigriffin.runlock import RunLock
from minigriffin.tree import to_device, tree_leaves
from minigriffin.xp import array_namespace

EXIT_INTERRUPTED = 130


def weighted_loss_and_grads(params, batch, cfg, weight, state=None):
    """Mean cross-entropy over the batch's unmasked positions, the gradient of weight * that loss, and the
    state after the batch (None unless a state to start from was given; minigriffin.carry)."""
    logits, cache = model_forward(params, batch.tokens, batch.segment_pos, cfg, state=state)
    loss, ce_cache = cross_entropy_forward(logits, batch.targets, batch.mask)
    return loss, model_backward(cross_entropy_backward(weight, ce_cache), cache), cache.state


@accelerated
def loss_and_grads(params, batch, cfg, workers=1, state=None):
    """Mean cross-entropy over unmasked positions of a batch, and its gradient for every parameter.

    The definition runs the whole batch in one forward and backward. With workers > 1 on NumPy arrays,
    minigriffin.fast.parallel splits the batch's rows between that many threads instead, each running this
    same forward and backward on one core (NumPy's elementwise work is single-threaded, so this is how a CPU
    step uses every core): the same result up to the order of floating-point sums.

    state: a ModelState to start the batch from, carried from the previous window (training with
    carry_windows > 1, minigriffin.carry); the gradient stops at it. Then the return is (loss, grads,
    state after the batch) instead of (loss, grads)."""
    loss, grads, new_state = weighted_loss_and_grads(params, batch, cfg, 1.0, state)
    return (loss, grads) if state is None else (loss, grads, new_state)


def evaluate(params, batches, cfg):
    """Mean validation loss over a fixed list of batches (weighted by counted positions)."""
    total, count = 0.0, 0
    for batch in batches:
        logits, _ = model_forward(params, batch.tokens, batch.segment_pos, cfg)
        loss, _ = cross_entropy_forward(logits, batch.targets, batch.mask)
        n = int(batch.mask.sum())
        total, count = total + loss * n, count + n
    return total / count


def first_non_finite(grads):
    """Dotted path of the first gradient holding NaN or inf, or None."""
    for path, g in tree_leaves(grads):
        xp = array_namespace(g)
        if not bool(xp.all(xp.isfinite(g))):
            return path
    return None


class Trainer:
    """Holds everything a run is: configs, parameters, optimiser state, step and RNG, and the run folder."""
    stop_request = StopRequest                      # Ctrl-C in run(); under MPI, agreed by every rank

    def __init__(self, run_dir, model_cfg, train_cfg, data_dir, corpus, device="cpu", tokenizer=None):
        if device not in DEVICES:
            raise ValueError(f"unknown device {device!r}; choose one of {list(DEVICES)}")
        if device == "gpu" and model_cfg.scan_backend not in ("auto", "cupy"):
            raise ValueError(f"scan_backend={model_cfg.scan_backend!r} runs on the CPU; with --device gpu use "
                             f"scan_backend=auto or cupy")
        check_fits_in_memory(model_cfg, train_cfg)
        check_vocabulary(corpus, model_cfg)
        self.device = device
        # data-parallel threads for a CPU step (minigriffin.fast.parallel); train_cfg.cpu_workers = 0 means one per core
        self.workers = 1 if device == "gpu" else (train_cfg.cpu_workers or default_workers())
        self.xp = device_namespace(device)          # numpy, or cupy (DeviceUnavailable says why not)
        self.run_dir = Path(run_dir)
        self.model_cfg, self.train_cfg = model_cfg, train_cfg
        self.data_dir = str(data_dir)
        self.corpus = corpus
        self.tokenizer = tokenizer                  # a BPE tokenizer is saved in the run (None: bytes)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.best_val, self.last_finite_loss, self.step = math.inf, None, 0
        self.params = self.opt_state = self.data_rng = None
        self.windows = WindowSampler(corpus.train, model_cfg, train_cfg.batch_size, train_cfg.seq_len,
                                     train_cfg.carry_windows, self.xp)      # where each step's tokens come from
        self.lock = None                            # RunLock: held from start_fresh/resume until run() ends

    # ------------------------------------------------------------------------------------ state in/out
    def start_fresh(self):
        if (self.ckpt_dir / "last.npz").exists():
            raise FileExistsError(f"{self.run_dir} already holds a run; continue it with --resume {self.run_dir} "
                                  f"or choose another --run-dir")
        self.lock = RunLock(self.run_dir).acquire()         # one trainer per run folder (minigriffin.runlock)
        init_rng, data_seed = np.random.default_rng(self.train_cfg.seed), self.train_cfg.seed + 1
        self.params = to_device(init_params(self.model_cfg, init_rng), self.xp)   # drawn on the host
        self.opt_state = adamw_init(self.params)
        self.data_rng = np.random.default_rng(data_seed)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        trim_metrics(self.run_dir / "metrics.jsonl", 0)     # records of an earlier try that saved no checkpoint
        config = {"model": config_to_dict(self.model_cfg), "train": self.train_cfg.__dict__ | {},
                  "data_dir": self.data_dir}
        (self.run_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        if hasattr(self.tokenizer, "save"):                 # what eval-length and sample decode with
            self.tokenizer.save(self.run_dir / TOKENIZER_FILE)

    def meta(self):
        return {"step": self.step, "model_config": config_to_dict(self.model_cfg),
                "train_config": dict(self.train_cfg.__dict__), "data_dir": self.data_dir,
                "data_rng_state": self.data_rng.bit_generator.state, "best_val_loss": self.best_val,
                "last_finite_loss": self.last_finite_loss, "saved_from_device": self.device}

    def save(self, name):
        carry_meta, carry = self.windows.checkpoint_arrays(self.step)
        return save_checkpoint(self.ckpt_dir / name, params=self.params, adam_m=self.opt_state.m,
                               adam_v=self.opt_state.v, meta=self.meta() | carry_meta, carry=carry)

    @classmethod
    def resume(cls, run_dir, corpus_loader, max_steps=None, device="cpu"):
        """Continue the run in run_dir from checkpoints/last.npz (architecture and settings come from it),
        on `device`, whichever device wrote the checkpoint."""
        # Locked before the run is read, so no other trainer changes it meanwhile (no folder: no run to lock).
        lock = RunLock(run_dir).acquire() if Path(run_dir).is_dir() else None
        try:
            return cls._resume_locked(run_dir, corpus_loader, max_steps, device, lock)
        except BaseException:
            if lock is not None:                        # refused or failed: the folder is free again at once
                lock.release()
            raise

    @classmethod
    def _resume_locked(cls, run_dir, corpus_loader, max_steps, device, lock):
        params, m, v, meta, carry = load_checkpoint(Path(run_dir) / "checkpoints" / "last.npz", with_carry=True)
        model_cfg = config_from_dict(meta["model_config"])
        train_dict = dict(meta["train_config"])
        if max_steps is not None:
            train_dict["max_steps"] = max_steps
        train_cfg = TrainConfig(**train_dict)
        trainer = cls(run_dir, model_cfg, train_cfg, meta["data_dir"], corpus_loader(meta["data_dir"]), device)
        trainer.lock = lock
        trainer.params, trainer.step = to_device(params, trainer.xp), int(meta["step"])
        trainer.opt_state = AdamWState(trainer.step, to_device(m, trainer.xp), to_device(v, trainer.xp))
        trainer.data_rng = np.random.default_rng()
        trainer.data_rng.bit_generator.state = meta["data_rng_state"]
        trainer.windows.restore(meta, carry)
        trainer.best_val = best_val_loss(trainer.ckpt_dir, float(meta["best_val_loss"]))
        trainer.last_finite_loss = meta.get("last_finite_loss")
        trim_metrics(trainer.run_dir / "metrics.jsonl", trainer.step)
        return trainer

    # ------------------------------------------------------------------------------------------- loop
    def crash(self, loss, grads, lr):
        """Save a separate snapshot (never last.npz) and raise, naming the step and the first bad gradient."""
        bad = first_non_finite(grads)
        snapshot = save_checkpoint(self.run_dir / f"crash_step{self.step + 1}.npz", params=self.params,
                                   adam_m=self.opt_state.m, adam_v=self.opt_state.v, meta=self.meta())
        where = f"first non-finite gradient: {bad}" if bad else f"loss is {loss}"
        raise FloatingPointError(
            f"non-finite loss or gradient at step {self.step + 1} (lr {lr:.3g}, last finite loss "
            f"{self.last_finite_loss}); {where}. Parameters before this step are in {snapshot}; the last good "
            f"checkpoint is untouched. Try a lower --lr, --grad_clip=1.0, or --dtype=float64 to debug.")

    def gradients(self, batch, state=None):
        """(mean loss, gradients) of the batch; a carried state goes on to the next window (self.windows.carry).
        minigriffin.distributed replaces this one step: each rank takes its rows, then one Allreduce."""
        batch = to_device(batch, self.xp)                   # sampled on the host; a no-op on the CPU
        if state is None:
            return loss_and_grads(self.params, batch, self.model_cfg, workers=self.workers)
        loss, grads, new_state = loss_and_grads(self.params, batch, self.model_cfg, workers=self.workers, state=state)
        self.windows.carry(new_state)
        return loss, grads

    def train_step(self, batch, state=None):
        """One optimisation step from `state` (None: from zeros); returns (loss, grad norm before clipping, lr)."""
        tc = self.train_cfg
        loss, grads = self.gradients(batch, state)
        lr = lr_schedule(self.step + 1, lr=tc.lr, warmup_steps=tc.warmup_steps, max_steps=tc.max_steps,
                         min_lr=tc.min_lr)
        norm = clip_by_global_norm(grads, tc.grad_clip)
        if not (math.isfinite(loss) and math.isfinite(norm)):
            self.crash(loss, grads, lr)
        self.opt_state = adamw_update(self.params, grads, self.opt_state, lr=lr, beta1=tc.beta1, beta2=tc.beta2,
                                      eps=tc.eps, weight_decay=tc.weight_decay)
        self.step += 1
        self.last_finite_loss = loss
        return loss, norm, lr

    def run(self, progress=None, log=print):
        """Train until max_steps (or Ctrl-C). Returns a summary dict. progress: a tqdm-like factory or None."""
        from minigriffin.data import eval_batches
        if self.lock is None or not self.lock.held:        # a Trainer set up by hand, or run() a second time
            self.lock = RunLock(self.run_dir).acquire()
        tc = self.train_cfg
        val_batches = to_device(eval_batches(self.corpus.valid, tc.batch_size, tc.seq_len, tc.eval_batches,
                                             seed=tc.seed), self.xp)
        tokens_per_step = tc.batch_size * tc.seq_len
        metrics = open(self.run_dir / "metrics.jsonl", "a")
        bar = progress(total=tc.max_steps, initial=self.step, unit="step") if progress else None
        start, start_step, interrupted = time.perf_counter(), self.step, False
        pause = float(os.environ.get("MINIGRIFFIN_PAUSE_AFTER_CHECKPOINT", "0"))   # used by the kill test
        try:
            with self.stop_request() as interrupt:
                while self.step < tc.max_steps:
                    batch, state = self.windows.next(self.step, self.data_rng)
                    loss, norm, lr = self.train_step(batch, state)
                    elapsed = time.perf_counter() - start
                    rate = tokens_per_step * (self.step - start_step) / elapsed
                    record = {"step": self.step, "loss": loss, "lr": lr, "grad_norm": norm,
                              "tokens_per_s": rate, "elapsed_s": elapsed}
                    if self.step % tc.eval_every == 0 or self.step == tc.max_steps:
                        record["val_loss"] = evaluate(self.params, val_batches, self.model_cfg)
                        if record["val_loss"] < self.best_val:
                            self.best_val = record["val_loss"]
                            self.save("best.npz")
                    metrics.write(json.dumps(record) + "\n")
                    metrics.flush()
                    eta = (tc.max_steps - self.step) * elapsed / max(1, self.step - start_step)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{rate:,.0f}", refresh=False)
                    elif self.step % tc.log_every == 0 or self.step == tc.max_steps or "val_loss" in record:
                        val = f" val {record['val_loss']:.4f}" if "val_loss" in record else ""
                        log(f"step {self.step}/{tc.max_steps} loss {loss:.4f}{val} lr {lr:.2e} "
                            f"{rate:,.0f} tok/s ETA {eta / 60:.1f} min", flush=True)
                    if self.step % tc.checkpoint_every == 0 or self.step == tc.max_steps or interrupt.requested:
                        self.save("last.npz")
                        if pause:
                            time.sleep(pause)
                    if interrupt.requested:
                        interrupted = True
                        break
        finally:
            metrics.close()
            self.lock.release()                             # finished, Ctrl-C or an error: the folder is free
            if bar is not None:
                bar.close()
        return {"step": self.step, "interrupted": interrupted, "best_val_loss": self.best_val,
                "last_loss": self.last_finite_loss, "run_dir": str(self.run_dir)}


def run_and_report(trainer, progress_bar=True):
    """Run a Trainer as `minigriffin train` does: the run folder and model size first, a progress bar on a
    terminal (progress_bar=False: plain log lines), then the summary and, after Ctrl-C, how to resume.
    Returns the exit status: 0, or EXIT_INTERRUPTED."""
    print(f"run folder: {trainer.run_dir}  ({count_params(trainer.model_cfg):,} parameters, "
          f"{trainer.model_cfg.num_layers} blocks, step {trainer.step} of {trainer.train_cfg.max_steps}, "
          f"on the {trainer.device})", flush=True)
    progress = None
    if progress_bar and sys.stderr.isatty():
        from tqdm import tqdm
        progress = lambda **kw: tqdm(dynamic_ncols=True, **kw)  # noqa: E731
    summary = trainer.run(progress=progress)
    print(f"step {summary['step']}: last loss {summary['last_loss']:.4f}, best validation loss "
          f"{summary['best_val_loss']:.4f}; checkpoints in {trainer.ckpt_dir}")
    if summary["interrupted"]:
        print(f"interrupted: resume with\n  minigriffin train --resume {trainer.run_dir}")
        return EXIT_INTERRUPTED
    return 0
