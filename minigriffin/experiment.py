"""The paper's long-context study (Griffin §6.1, Figure 5) at laptop scale: `minigriffin experiment`.

    minigriffin experiment extrapolation --preset laptop                      # left panel of Figure 5
    minigriffin experiment extrapolation --preset laptop --study train-length # right panel

extrapolation: Hawk, Griffin (window L/2), the MQA Transformer (global attention) with RoPE and, where the preset has
`nope`, the same Transformer without positional encoding (mqa-nope) are trained at the same length L
on the books with the same token budget, then evaluated on the validation books, each book one document,
up to 8L (each book split into up to `segments` pieces of 8L tokens, each scored as one document, so the
curve averages 80 long stretches of text rather than 5 book openings). train-length: Hawk and Griffin trained at L and at 4L with the same number of tokens and steps
(batch divided by 4), evaluated up to 16L. Outputs (in --out): one CSV per model and study, a figure and a
Markdown table per study, and <study>.json with the command, seed, commit, wall time and machine. Both
studies share --out by default, so the second reuses the models at length L that the first trained (a run
whose checkpoint is complete is not trained again).
"""

import json
import re
import time
from pathlib import Path

from minigriffin.config import ATTENTION, GriffinConfig, TrainConfig, block_pattern, config_to_dict
from minigriffin.data import unigram_entropy
from minigriffin.evaluate import (curve_from_losses, document_losses, documents, markdown_table, plot_curves,
                                  write_csv)
from minigriffin.findings import (bucket_differences, context_findings, context_panel, findings_markdown,
                                  train_length_findings)
from minigriffin.paired import save_losses
from minigriffin.provenance import machine_description, source_commit

# name -> (model shape, training settings). L is seq_len. "laptop" fits both studies in ~45 min on 2 cores.
PRESETS = {
    "laptop": dict(width=128, depth=4, heads=2, lru_width=128, mlp=384, L=128, batch=16, steps=800, lr=3e-3,
                   segments=16, nope=True),
    "tiny": dict(width=16, depth=3, heads=2, lru_width=16, mlp=48, L=16, batch=2, steps=3, lr=3e-3, segments=2,
                 nope=True),   # tests
    # For a GPU (--device gpu): 4x wider, 1.5x deeper, L = 512 against 4L = 2,048, 16,384 tokens a step, 49M
    # tokens per model (30x the laptop's). Not yet run on a GPU: docs/results.md says what it should show.
    "gpu": dict(width=512, depth=6, heads=4, lru_width=512, mlp=1536, L=512, batch=32, steps=3000, lr=1e-3,
                segments=16, nope=True),
}


def model_config(family, p, train_len):
    """Hawk / Griffin (local attention, window L/2) / MQA (global attention: every earlier token of the document,
    in training and in evaluation) / mqa-nope (the same MQA Transformer without positional encoding, the paper's
    NoPE baseline) / mqa-local (the MQA Transformer with local attention only). train_len does not change the
    model: Griffin's window stays L/2 at every training length unless p sets "window" (the window study)."""
    rope = family != "mqa-nope"
    base = "mqa" if family in ("mqa-nope", "mqa-local") else family
    levers = {k: p[k] for k in ("lru_min_rad", "lru_max_rad") if k in p}     # the RG-LRU decay's initial range
    return GriffinConfig(width=p["width"], mlp_expanded_width=p["mlp"], num_heads=p["heads"],
                         lru_width=p["lru_width"], block_types=block_pattern(base, p["depth"]),
                         attention_window_size=p.get("window") or max(1, p["L"] // 2),
                         global_attention=family in ("mqa", "mqa-nope"), use_rope=rope, **levers)


def attention_kind(cfg):
    """How a model attends, as recorded in the results: "none" (Hawk), "global" or "local, window W"."""
    if ATTENTION not in cfg.block_types:
        return "none"
    return "global" if cfg.global_attention else f"local, window {cfg.attention_window_size}"


def runs_for(study, p):
    """(label, family, train length, batch size) for each model of a study."""
    L, batch = p["L"], p["batch"]
    if study == "extrapolation":
        families = ("hawk", "griffin", "mqa") + (("mqa-nope",) if p.get("nope") else ())
        return [(f"{f}-L{L}", f, L, batch) for f in families]
    if study == "train-length":
        return [(f"{f}-L{n}", f, n, b) for f in ("hawk", "griffin") for n, b in ((L, batch), (4 * L, max(1, batch // 4)))]
    raise ValueError(f"unknown study {study!r}; choose extrapolation or train-length")


def saved_step(run_dir):
    """Step of the run's last checkpoint, or 0 when there is none."""
    from minigriffin.checkpoint import CheckpointError, load_checkpoint
    path = Path(run_dir) / "checkpoints" / "last.npz"
    if not path.exists():
        return 0
    try:
        return int(load_checkpoint(path)[3]["step"])
    except (CheckpointError, KeyError, ValueError, json.JSONDecodeError):
        return 0


def domain_names(eval_data_dirs):
    """A short name for each extra evaluation folder (its base name; made unique): files are <study>-on-<name>."""
    names = []
    for d in eval_data_dirs:
        base = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(d).expanduser().resolve().name).strip("-") or "books"
        name, i = base, 2
        while name in names or name == "valid":
            name, i = f"{base}{i}", i + 1
        names.append(name)
    return names


def train_models(runs, p, corpus, data_dir, out_dir, *, seed, device, log, steps_after=0):
    """Train (or reuse, when complete in out_dir/runs) each model of a study: [(run, trainer, summary)].
    steps_after: steps the study still has to train after these runs (for its ETA)."""
    from minigriffin.train import Trainer
    start, done_steps, models = time.perf_counter(), 0, []
    # Steps this process has to train (runs already complete in out_dir are reused, not retrained).
    total_steps = sum(p["steps"] - saved_step(out_dir / "runs" / r[0]) for r in runs) + steps_after
    for label, family, train_len, batch in runs:
        run_dir = out_dir / "runs" / label
        cfg = model_config(family, p, train_len)
        tcfg = TrainConfig(batch_size=batch, seq_len=train_len, max_steps=p["steps"], lr=p["lr"],
                           min_lr=p["lr"] / 10, warmup_steps=max(1, p["steps"] // 20), eval_every=p["steps"],
                           checkpoint_every=p["steps"], eval_batches=2, seed=seed, carry_windows=p.get("carry", 1))
        if (run_dir / "checkpoints" / "last.npz").exists():
            trainer = Trainer.resume(run_dir, lambda _: corpus, device=device)
            if trainer.model_cfg != cfg or trainer.train_cfg != tcfg:
                saved, wanted = config_to_dict(trainer.model_cfg) | vars(trainer.train_cfg), \
                    config_to_dict(cfg) | vars(tcfg)
                diff = ", ".join(f"{k}: saved {saved.get(k)!r}, study {wanted[k]!r}"
                                 for k in wanted if saved.get(k) != wanted[k])
                raise ValueError(f"{run_dir} holds a run with other settings than this study's ({diff}); "
                                 f"remove it or choose another --out")
            log(f"[{label}] continuing from step {trainer.step}")
        else:
            trainer = Trainer(run_dir, cfg, tcfg, data_dir, corpus, device=device)
            trainer.start_fresh()
        t0, first_step = time.perf_counter(), trainer.step

        def progress_log(msg, **_):
            elapsed = time.perf_counter() - start
            steps_now = done_steps + trainer.step - first_step
            eta = elapsed / max(1, steps_now) * (total_steps - steps_now)
            log(f"[{label}] {msg} | study ETA {eta / 60:.1f} min", flush=True)

        summary = trainer.run(log=progress_log)
        done_steps += trainer.step - first_step
        log(f"[{label}] trained in {time.perf_counter() - t0:.0f} s: final loss {summary['last_loss']:.3f}, "
            f"validation {summary['best_val_loss']:.3f}")
        models.append(((label, family, train_len, batch), trainer, summary))
    return models


def evaluate_domain(study, preset, p, models, split, prefix, eval_len, out_dir, *, what):
    """Evaluate the trained models on one set of books: CSV and .npz per model, figure, table, verdicts.
    Files are named <prefix>-<label>.csv, <prefix>.png, <prefix>.md. Returns the report dict."""
    docs = documents(split, eval_len, p["segments"])            # the same documents for every model
    runs = [run for run, _, _ in models]
    curves, table_losses, findings = [], {}, []
    for (label, family, train_len, _), trainer, _ in models:
        # Evaluated with exactly the model that was trained (global attention stays global, local stays local).
        losses = document_losses(trainer.params, trainer.model_cfg, docs)           # (documents, positions)
        save_losses(out_dir / f"{prefix}-{label}.npz", losses, name=label, train_len=train_len)
        curve = curve_from_losses(losses, eval_len, name=label, train_len=train_len)
        write_csv(curve, out_dir / f"{prefix}-{label}.csv")
        curves.append(curve)
        table_losses[label] = losses
        if study == "extrapolation":
            findings.extend(context_findings(trainer.params, trainer.model_cfg, docs, losses, label, train_len,
                                             eval_len, cut=p.get("cut") or train_len))
    paired = (bucket_differences(table_losses, runs, p["L"], eval_len) if study == "train-length"
              else context_panel(findings))               # the paired differences beneath the curves
    figure = plot_curves(curves, out_dir / f"{prefix}.png",
                         title=f"{study}: loss per position on {what} ({preset} preset)", paired=paired)
    positions = sorted({p["L"] // 2, p["L"] - 1, 2 * p["L"], 4 * p["L"], 8 * p["L"] - 2}
                       | ({16 * p["L"] - 2} if study == "train-length" else set()))
    table = markdown_table(curves, positions)
    if study == "train-length":
        findings = train_length_findings(table_losses, runs, p["L"], eval_len)
    verdicts = findings_markdown(findings)
    (out_dir / f"{prefix}.md").write_text(f"Evaluated on {what}.\n\n{table}\n\n{verdicts}\n")
    return {"books": what, "figure": figure.name, "table": table, "findings": findings, "documents": len(docs),
            "unigram_entropy": unigram_entropy(split), "verdicts": verdicts}


def run_study(study, preset, data_dir, out_dir, *, seed=0, log=print, command="", eval_data_dirs=(),
              device="cpu"):
    """Train, evaluate and report one study. Returns the results dict written to out_dir/<study>.json.

    The models are evaluated on the validation books of data_dir (files <study>.*) and on each folder of
    eval_data_dirs, a second domain such as `minigriffin download --nonfiction` (files <study>-on-<name>.*)."""
    from minigriffin.data import load_corpus, load_eval_books
    p = PRESETS[preset]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = load_corpus(data_dir)
    extra = [(name, load_eval_books(d), str(d)) for name, d in zip(domain_names(eval_data_dirs), eval_data_dirs)]
    runs = runs_for(study, p)
    eval_len = (8 if study == "extrapolation" else 16) * p["L"]
    log(f"{study}: {len(runs)} models x {p['steps']} steps, {p['batch'] * p['L']:,} tokens per step on the "
        f"{device}; evaluation up to {eval_len} tokens on the {len(corpus.valid.doc_starts) - 1} validation books"
        + "".join(f" and the {len(split.doc_starts) - 1} books of {d}" for _, split, d in extra))
    start = time.perf_counter()
    models = train_models(runs, p, corpus, data_dir, out_dir, seed=seed, device=device, log=log)
    report = evaluate_domain(study, preset, p, models, corpus.valid, study, eval_len, out_dir,
                             what="held-out books")
    domains = {name: evaluate_domain(study, preset, p, models, split, f"{study}-on-{name}", eval_len, out_dir,
                                     what=f"the books of {d}") | {"eval_data_dir": d}
               for name, split, d in extra}
    trained = [{"label": label, "family": family, "train_len": train_len, "batch_size": batch,
                "steps": p["steps"], "final_train_loss": summary["last_loss"],
                "val_loss": summary["best_val_loss"], "attention": attention_kind(trainer.model_cfg),
                "window": None if trainer.model_cfg.global_attention or ATTENTION not in trainer.model_cfg.block_types
                else trainer.model_cfg.attention_window_size}
               for (label, family, train_len, batch), trainer, summary in models]
    results = {"study": study, "preset": preset, "settings": p, "seed": seed, "commit": source_commit(),
               "command": command, "device": device,
               "wall_time_s": round(time.perf_counter() - start, 1), "models": trained,
               "eval_len": eval_len, "unigram_entropy_valid": report["unigram_entropy"],
               "machine": machine_description(),
               "figure": report["figure"], "table": report["table"], "findings": report["findings"],
               "documents": report["documents"], "domains": domains}
    (out_dir / f"{study}.json").write_text(json.dumps(results, indent=2) + "\n")
    for name, rep in [("held-out books", report)] + [(f"the books of {d['eval_data_dir']}", d) for d in domains.values()]:
        log(f"\n{name}:\n{rep['table']}\n\n{rep['verdicts']}\n\nfigure: {out_dir / rep['figure']}")
    log(f"wall time {results['wall_time_s'] / 60:.1f} min")
    return results
