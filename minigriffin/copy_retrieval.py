"""The copy and retrieval study (Griffin §6.2, Figure 6) at laptop scale: `minigriffin experiment copy-retrieval`.

    minigriffin experiment copy-retrieval --preset laptop                        # all three tasks
    minigriffin experiment copy-retrieval --preset laptop --task induction       # one of them

Hawk, Griffin (local attention in the 3rd of 5 blocks, window L/2) and the MQA Transformer (global attention,
RoPE) of Griffin's Appendix H (5 residual blocks, width 64, about 250K parameters) are trained from scratch on
each task of minigriffin.tasks; on selective copying and induction heads also Hawk and Griffin with the
complex-gated CG-LRU (Appendix B, lru_only_real=False):

    selective-copy  held-out accuracy against training steps                           (Figure 6a)
    induction       trained at length L, then accuracy against evaluation length L/4 ... 16L or more   (6b)
    phonebook       trained on books of a range of sizes, then exact match against book length in tokens (6c)

Every step draws a fresh batch from a seeded numpy Generator (the same batches for every model of a task);
the held-out batches come from a different seed. The optimiser is AdamW without weight decay (Adam, as in
Mamba's Appendix E.1), betas (0.9, 0.999), clipping at global norm 1, warm-up then cosine decay to lr / 10.
Outputs in --out: copy-retrieval-<task>.png and .csv per task, copy-retrieval.md, copy-retrieval.json (the
command, seed, commit, wall time, machine and every number), and each final model in runs/<task>/<model>/
(checkpoints/last.npz, readable with checkpoint.load_run). Settings beside the paper's: docs/results.md,
"Copy and retrieval".

Ablations: `--model` picks which models train (repeatable; any task), including Hawk and Griffin without their
temporal Conv1D ("-noconv": width 1, so each position's recurrence input sees only its own token), and `--steps`
replaces the preset's training steps (the schedule's warm-up and decay follow). The held-out rows depend on the
seed and task only, so models of separate runs with the same seed answer the same rows and pair.
"""

import json
import math
import re
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from minigriffin.checkpoint import save_checkpoint
from minigriffin.config import ATTENTION, GriffinConfig, block_pattern, config_to_dict
from minigriffin.copy_retrieval_findings import copy_retrieval_findings
from minigriffin.device import default_workers, device_namespace
from minigriffin.inference import forward_chunk, init_state
from minigriffin.optim import adamw_init, adamw_update, clip_by_global_norm, lr_schedule
from minigriffin.params import count_params, init_params
from minigriffin.tasks import (PHONEBOOK_VOCAB, exact_match, induction_batch, phonebook_batch, phonebook_length,
                               row_token_accuracy, selective_copy_batch, token_accuracy)
from minigriffin.train import loss_and_grads
from minigriffin.tree import to_device, to_host

TASKS = ("selective-copy", "induction", "phonebook")
FAMILIES = {"selective-copy": ("mqa", "hawk", "griffin", "hawk-cg", "griffin-cg"),
            "induction": ("mqa", "hawk", "griffin", "hawk-cg", "griffin-cg"),
            "phonebook": ("mqa", "hawk", "griffin")}
# Run only when asked for (--model): the Conv1D ablation (conv1d_temporal_width 1 instead of 4).
ABLATIONS = ("hawk-noconv", "griffin-noconv")
MODELS = ("mqa", "hawk", "griffin", "hawk-cg", "griffin-cg") + ABLATIONS
# The chance accuracy of one answer token: 14 data symbols to copy, 15 symbols to recall, 10 digits.
CHANCE = {"selective-copy": 1 / 14, "induction": 1 / 15, "phonebook": 1 / 10}
APPENDIX_H = dict(width=64, depth=5, heads=2, lru_width=64, mlp=192)     # 250K-274K parameters at V = 16

# Per task: L the training length (phonebook: books of `entries` = (fewest, most) entries, so L is the longest
# row), `steps` of `batch` rows, `evals` held-out evaluations during training on `eval_rows` rows, and the
# evaluation sweep: `lengths` as multiples of L (induction) or book sizes in entries (phonebook).
PRESETS = {
    # All three tasks in about 30 minutes on an idle 2-core laptop (docs/results.md): the paper's
    # ratios (Griffin's window L/2, evaluation lengths against L) at shorter lengths and far fewer steps.
    "laptop": {"model": APPENDIX_H, "lr": 1e-3,
               "selective-copy": dict(L=64, data_tokens=8, batch=32, steps=1000, evals=20, eval_rows=128),
               "induction": dict(L=64, batch=32, steps=800, evals=8, eval_rows=128,
                                 lengths=(1 / 4, 1 / 2, 1, 2, 4, 8, 16, 32)),
               "phonebook": dict(entries=(4, 12), syllables=1, digits=2, score_examples=True, batch=32,
                                 steps=2000, evals=10, eval_rows=128, eval_entries=(4, 8, 12, 16, 20, 24, 32))},
    # For tests: seconds.
    "tiny": {"model": dict(width=16, depth=3, heads=2, lru_width=16, mlp=48), "lr": 3e-3,
             "selective-copy": dict(L=16, data_tokens=4, batch=4, steps=3, evals=2, eval_rows=8),
             "induction": dict(L=8, batch=4, steps=3, evals=1, eval_rows=8, lengths=(1 / 2, 1, 2)),
             "phonebook": dict(entries=(3, 4), syllables=1, digits=2, score_examples=True, batch=2, steps=2,
                               evals=1, eval_rows=4, eval_entries=(3, 5))},
    # For --device gpu: the paper's lengths (copying 1,024 with 16 data tokens, induction 256) and the default
    # phonebook format (2-syllable names, 4-digit numbers); not yet run (the expected time is in the docs).
    "gpu": {"model": APPENDIX_H, "lr": 1e-3,
            "selective-copy": dict(L=1024, data_tokens=16, batch=64, steps=10000, evals=40, eval_rows=256),
            "induction": dict(L=256, batch=64, steps=5000, evals=20, eval_rows=256,
                              lengths=(1 / 4, 1 / 2, 1, 2, 4, 8, 16, 32, 64)),
            "phonebook": dict(entries=(10, 100), syllables=2, digits=4, score_examples=True, batch=32,
                              steps=10000, evals=20, eval_rows=256,
                              eval_entries=(10, 25, 50, 75, 100, 125, 150, 200, 250, 300))},
}


def book_length(p, entries):
    """Row length in tokens of a phonebook of `entries` entries with the settings p (name syllables, digits)."""
    return phonebook_length(entries, name_syllables=p["syllables"], number_digits=p["digits"])


def train_length(task, p):
    """The longest training row of a task's settings p (phonebook: the book of the most entries)."""
    return book_length(p, p["entries"][1]) if task == "phonebook" else p["L"]


def model_config(family, model, task, p):
    """Hawk / Griffin (window L/2) / MQA (global attention, RoPE); "-cg": the CG-LRU in every recurrent block;
    "-noconv": the recurrent blocks' Conv1D of temporal width 1 (a per-channel scale: no previous tokens)."""
    if family not in MODELS:
        raise ValueError(f"unknown model {family!r}; choose from {list(MODELS)}")
    base = family.removesuffix("-cg").removesuffix("-noconv")
    conv = {"conv1d_temporal_width": 1} if family.endswith("-noconv") else {}
    return GriffinConfig(vocab_size=len(PHONEBOOK_VOCAB) if task == "phonebook" else 16, width=model["width"],
                         mlp_expanded_width=model["mlp"], num_heads=model["heads"], lru_width=model["lru_width"],
                         block_types=block_pattern(base, model["depth"]),
                         attention_window_size=max(1, train_length(task, p) // 2),
                         global_attention=base == "mqa", lru_only_real=not family.endswith("-cg"), **conv)


def task_batch(task, p, rng, rows, size=None):
    """A Batch of `rows` task rows. size: the row length (selective-copy, induction; default L) or the book's
    entries (phonebook; default: one size for the whole batch, uniform over p["entries"], as in training: a
    batch of one size has no padding to compute)."""
    if task == "selective-copy":
        return selective_copy_batch(rng, rows, size or p["L"], num_data_tokens=p["data_tokens"])
    if task == "induction":
        return induction_batch(rng, rows, size or p["L"])
    training = size is None
    if training:
        size = int(rng.integers(p["entries"][0], p["entries"][1] + 1))
    batch = phonebook_batch(rng, rows, size, name_syllables=p["syllables"], number_digits=p["digits"])
    return score_examples(batch, p, size) if training and p.get("score_examples") else batch


def score_examples(batch, p, entries):
    """A phonebook training batch whose loss also reads the digits of the two worked examples (each is a lookup
    of one of the book's names, like the query): three answers per book instead of one. Evaluation scores only
    the query. Layout (minigriffin.tasks.phonebook): the book's lines, a blank line, then the two examples."""
    line = 2 * p["syllables"] + p["digits"] + 2                            # "name:number\n"
    first = entries * line + 1                                             # stream index of the first example
    digits = [first + k * line + 2 * p["syllables"] + 1 + d for k in (0, 1) for d in range(p["digits"])]
    mask = batch.mask.copy()                                               # (B, T)
    mask[:, np.array(digits) - 1] = True          # the target at position t is stream token t + 1
    return batch._replace(mask=mask)


def sweep(task, p):
    """[(row length in tokens, book entries or None, size for task_batch)] of the evaluation after training."""
    if task == "induction":
        return [(n, None, n) for n in (max(3, round(m * p["L"])) for m in p["lengths"])]
    if task == "phonebook":
        return [(book_length(p, n), n, n) for n in p["eval_entries"]]
    return []


class Accuracy(NamedTuple):
    """A model's answers on one held-out batch: the pooled accuracies and, per row, what paired comparisons
    between models resample (minigriffin.copy_retrieval_findings; the rows are the same for every model)."""
    token: float            # fraction of all scored answer tokens right
    exact: float            # fraction of rows whose whole answer is right
    row_token: list         # (B,) per row: fraction of its answer tokens right
    row_exact: list         # (B,) per row: 1 if its whole answer is right, else 0

    def record(self, **where):
        """The JSON record of one point: where (step, or length and entries) and the accuracies."""
        return {**where, "token_accuracy": self.token, "exact_match": self.exact,
                "row_token": [round(v, 4) for v in self.row_token], "row_exact": self.row_exact}


def accuracy(params, cfg, batch, xp, *, chunk=512, rows=32):
    """Accuracy of batch's answers under teacher forcing (tasks.common): per token, exact match, and both per
    row. Runs rows at a time in chunks of tokens with the state carried (minigriffin.inference), so memory stays
    bounded at any length (global attention's key/value cache still grows with it)."""
    B, T = batch.tokens.shape
    logits = []
    for r0 in range(0, B, rows):
        r1, state, parts = min(B, r0 + rows), init_state(cfg, min(B, r0 + rows) - r0, xp), []
        for t0 in range(0, T, chunk):
            t1 = min(T, t0 + chunk)
            out, state = forward_chunk(params, xp.asarray(batch.tokens[r0:r1, t0:t1]),
                                       xp.asarray(batch.segment_pos[r0:r1, t0:t1]), cfg, state)  # (b, C, V)
            parts.append(to_host(out))
        logits.append(np.concatenate(parts, axis=1))                                          # (b, T, V)
    logits = np.concatenate(logits)                                                           # (B, T, V)
    row_exact = exact_match(logits, batch)                                                    # (B,) bool
    return Accuracy(token_accuracy(logits, batch), float(row_exact.mean()),
                    row_token_accuracy(logits, batch).tolist(), row_exact.astype(int).tolist())


def train_model(cfg, task, p, lr, *, seed, device, held_out, log):
    """Train one model on fresh batches; evaluate on held_out (a Batch) p["evals"] times on the way.
    Returns (params, curve: [{step, token_accuracy, exact_match}], final loss, tokens per second)."""
    xp = device_namespace(device)
    workers = 1 if device == "gpu" else default_workers()          # data-parallel threads on the CPU
    params = to_device(init_params(cfg, np.random.default_rng([seed, 0])), xp)
    opt = adamw_init(params)
    data_rng = np.random.default_rng([seed, 1, TASKS.index(task)])     # the same batches for every model
    steps, every = p["steps"], max(1, p["steps"] // p["evals"])
    curve, tokens, start, loss = [], 0, time.perf_counter(), math.nan

    def record(step):
        acc = accuracy(params, cfg, held_out, xp)
        curve.append(acc.record(step=step))
        log(f"  step {step:5d}  loss {loss:6.3f}  held-out token accuracy {acc.token:.3f}, exact match {acc.exact:.3f}"
            + (f"  ({tokens / (time.perf_counter() - start):,.0f} tokens/s)" if step else ""))

    record(0)
    for step in range(1, steps + 1):
        batch = to_device(task_batch(task, p, data_rng, p["batch"]), xp)
        loss, grads = loss_and_grads(params, batch, cfg, workers=workers)
        norm = clip_by_global_norm(grads, 1.0)
        if not (math.isfinite(loss) and math.isfinite(norm)):
            raise FloatingPointError(f"non-finite loss or gradient at step {step}; try a lower learning rate")
        rate = lr_schedule(step, lr=lr, warmup_steps=max(1, steps // 20), max_steps=steps, min_lr=lr / 10)
        opt = adamw_update(params, grads, opt, lr=rate, beta1=0.9, beta2=0.999, weight_decay=0.0)
        tokens += batch.tokens.size
        if step % every == 0 or step == steps:
            record(step)
    return params, curve, float(loss), tokens / (time.perf_counter() - start)


def run_task(task, preset, out_dir, *, seed, device, log, models=None, steps=None):
    """Train and evaluate the task's models (default: FAMILIES[task]) for the preset's steps (or `steps`);
    returns its results dict (written into the JSON)."""
    settings = PRESETS[preset]
    p = {**settings[task], **({"steps": steps} if steps else {})}
    model, L, families = settings["model"], train_length(task, p), tuple(models or FAMILIES[task])
    eval_rng = np.random.default_rng([seed, 2, TASKS.index(task)])          # held out: not the training seed
    held_out = task_batch(task, p, eval_rng, p["eval_rows"], p["entries"][1] if task == "phonebook" else None)
    points = [(length, entries, task_batch(task, p, eval_rng, p["eval_rows"], size))
              for length, entries, size in sweep(task, p)]
    log(f"{task}: {len(families)} models x {p['steps']} steps of {p['batch']} rows, training length {L}")
    start, trained = time.perf_counter(), []
    for family in families:
        cfg = model_config(family, model, task, p)
        log(f"[{task}/{family}] {count_params(cfg):,} parameters, attention "
            + ("none" if ATTENTION not in cfg.block_types else "global" if cfg.global_attention
               else f"window {cfg.window}"))
        t0 = time.perf_counter()
        params, curve, loss, rate = train_model(cfg, task, p, settings["lr"], seed=seed, device=device,
                                                held_out=held_out, log=log)
        lengths = []
        for length, entries, batch in points:
            acc = accuracy(params, cfg, batch, device_namespace(device))
            lengths.append(acc.record(length=length, entries=entries))
            log(f"  length {length:6d}{f' ({entries} entries)' if entries else ''}: token accuracy {acc.token:.3f}, "
                f"exact match {acc.exact:.3f}")
        run = Path(out_dir) / "runs" / task / family / "checkpoints"
        meta = {"step": p["steps"], "task": task, "preset": preset, "seed": seed, "model_config": config_to_dict(cfg),
                "train_config": {"seq_len": L, "batch_size": p["batch"], "max_steps": p["steps"]}}
        save_checkpoint(run / "last.npz", params=params, adam_m={}, adam_v={}, meta=meta)
        trained.append({"label": family, "family": family, "params": count_params(cfg), "train_len": L,
                       "window": None if cfg.global_attention or ATTENTION not in cfg.block_types else cfg.window,
                       "cg_lru": not cfg.lru_only_real, "conv1d_width": cfg.conv1d_temporal_width,
                       "final_loss": loss, "tokens_per_s": round(rate),
                       "train_and_eval_s": round(time.perf_counter() - t0, 1), "curve": curve, "lengths": lengths})
    shortest = book_length(p, p["entries"][0]) if task == "phonebook" else L
    return {"task": task, "settings": p, "train_len": L, "train_lengths": [shortest, L], "chance": CHANCE[task],
            "models": trained, "wall_time_s": round(time.perf_counter() - start, 1)}


def report_json(report):
    """The report as indented JSON with every list of numbers on one line and no spaces in it (the per-row
    results of every point would otherwise take a line per number; without the spaces a laptop run's file is
    about 265 KB instead of 325)."""
    text = json.dumps(report, indent=2)
    return re.sub(r"\[\s+([^\[\]{}\"]*?)\s+\]", lambda m: "[" + re.sub(r"\s+", "", m.group(1)) + "]", text) + "\n"


def run_copy_retrieval(preset, out_dir, *, tasks=TASKS, seed=0, device="cpu", command="", log=print, models=None,
                       steps=None):
    """Run the study's tasks; write per task a CSV and a figure, then copy-retrieval.md and copy-retrieval.json.
    models: which to train on every task (default: each task's FAMILIES); steps: replaces the preset's.
    Returns the results dict (what the JSON holds)."""
    from minigriffin.copy_retrieval_report import plot_task, report_markdown, write_task_csv
    from minigriffin.provenance import machine_description, source_commit
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"unknown task(s) {unknown}; choose from {list(TASKS)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if models is not None and (not models or [m for m in models if m not in MODELS]):
        raise ValueError(f"unknown model(s) {[m for m in models if m not in MODELS]}; choose from {list(MODELS)}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    device_namespace(device)                           # fail now, not after the first task, if it is unusable
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start, results = time.perf_counter(), {}
    for task in dict.fromkeys(tasks):                  # in the order given, each once
        results[task] = run_task(task, preset, out_dir, seed=seed, device=device, log=log,
                                 models=models and tuple(dict.fromkeys(models)), steps=steps)
        write_task_csv(results[task], out_dir / f"copy-retrieval-{task}.csv")
        plot_task(results[task], preset, out_dir / f"copy-retrieval-{task}.png")
    report = {"study": "copy-retrieval", "preset": preset, "seed": seed, "command": command, "commit": source_commit(),
              "device": device, "machine": machine_description(), "wall_time_s": round(time.perf_counter() - start, 1),
              "model": PRESETS[preset]["model"], "lr": PRESETS[preset]["lr"], "tasks": results}
    report["findings"] = copy_retrieval_findings(report)
    markdown = report_markdown(report)
    (out_dir / "copy-retrieval.md").write_text(markdown)
    (out_dir / "copy-retrieval.json").write_text(report_json(report))
    log(f"\n{markdown}\nwall time {report['wall_time_s'] / 60:.1f} min; outputs in {out_dir}")
    return report
