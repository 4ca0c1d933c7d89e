"""Griffin's local-attention window (Griffin Appendix E, Figure 9) at laptop scale:
`minigriffin experiment extrapolation --study window`.

At each training length L in (L0, 4 L0) (L0 the preset's L; two lengths keep the laptop preset inside 45
minutes), with the tokens of a step held fixed (the batch shrinks as L grows) and the same number of steps,
so every model sees the same token budget:

    griffin-wW-LL   Griffin with a window W of L/8, L/4 and L/2 (its one attention block is local)
    mqa-LL          the MQA Transformer with global attention (RoPE), the paper's baseline
    mqa-local-wW-LL the same Transformer with local attention only, window L/4

Every model of a length is scored on the same held-out text: the validation books cut into pieces of L tokens
(each piece one document; the same text at every L, cut differently), mean loss per byte over the piece's
positions. The paper's claims are then paired comparisons on those pieces, minus the global Transformer, with
95% bootstrap intervals over pieces (minigriffin.paired): Griffin at every window beats the global Transformer
at every length (the gap narrowing as L grows), and local-only Transformers are much worse. The Griffin with
W = L/2 at L0 is the extrapolation study's griffin-L<L0> (same settings), and mqa-L<L0> is its MQA: sharing
--out with that study reuses them. Outputs in --out: window.png, window.md, window.json.
"""

import json
import time
from pathlib import Path

import numpy as np

from minigriffin.copy_retrieval_findings import holds
from minigriffin.evaluate import document_losses, documents
from minigriffin.experiment import PRESETS, attention_kind, saved_step, train_models
from minigriffin.paired import bootstrap_interval, describe, span_means
from minigriffin.provenance import machine_description, source_commit

LENGTH_MULTIPLES = (1, 4)                     # training lengths L0 and 4 L0
GRIFFIN_WINDOWS = (8, 4, 2)                   # Griffin's window L/8, L/4, L/2
LOCAL_MQA_WINDOW = 4                          # the local-only Transformer's window L/4
KINDS = [f"griffin L/{d}" for d in GRIFFIN_WINDOWS] + ["mqa global", f"mqa local L/{LOCAL_MQA_WINDOW}"]


def window_runs(p):
    """[(kind, (label, family, L, batch), window or None)] for every model of the study."""
    runs = []
    for m in LENGTH_MULTIPLES:
        L, batch = m * p["L"], max(1, p["batch"] // m)
        for d in GRIFFIN_WINDOWS:
            W = L // d
            label = f"griffin-L{L}" if (m, d) == (1, 2) else f"griffin-w{W}-L{L}"   # the extrapolation study's
            runs.append((f"griffin L/{d}", (label, "griffin", L, batch), W))
        runs.append(("mqa global", (f"mqa-L{L}", "mqa", L, batch), None))
        W = L // LOCAL_MQA_WINDOW
        runs.append((f"mqa local L/{LOCAL_MQA_WINDOW}", (f"mqa-local-w{W}-L{L}", "mqa-local", L, batch), W))
    return runs


def piece_losses(params, cfg, split, L, pieces_per_book):
    """(pieces,) each held-out piece's mean loss per byte over its L - 1 scored positions (NaN: a short piece)."""
    losses = document_losses(params, cfg, documents(split, L, pieces_per_book))       # (pieces, L - 1)
    return span_means(losses, 0, L - 1)                                                 # (pieces,)


def window_findings(results):
    """Each claim of Figure 9 per training length, paired on the same pieces: (second - first) records."""
    claims = [(kind, "mqa global", -1, f"Griffin ({kind[8:]}) beats the global Transformer")
              for kind in KINDS if kind.startswith("griffin")]
    claims += [(f"mqa local L/{LOCAL_MQA_WINDOW}", "mqa global", +1, "local-only attention is much worse"),
               ("griffin L/2", "griffin L/8", None, "(none) a larger window in Griffin")]
    records = []
    for L, models in results.items():
        for second, first, sign, claim in claims:
            a, b = np.asarray(models[first]["pieces"]), np.asarray(models[second]["pieces"])
            mean, low, high = bootstrap_interval(b - a)
            records.append({"train_len": L, "first": first, "second": second, "claim": claim,
                            "difference": [mean, low, high], "holds": holds(sign, low, high)})
    return records


def plot_window(results, records, path, preset):
    """Left: held-out loss against training length per model kind (95% intervals). Right: the paired
    difference to the global Transformer at each length."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(12, 4.5))
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    lengths = sorted(results)
    for i, kind in enumerate(KINDS):
        mean, low, high = np.array([results[L][kind]["loss"] for L in lengths]).T      # (lengths,) each
        dodge = 2.0 ** (0.03 * (i - len(KINDS) // 2))           # side by side on the log axis, not on top
        left.errorbar(np.array(lengths) * dodge, mean, yerr=[mean - low, high - mean], fmt="o-", ms=4, capsize=3,
                      color=f"C{i}", label=kind)
        diffs = [r for r in records if r["second"] == kind and r["first"] == "mqa global"]
        if diffs:
            d, lo, hi = np.array([r["difference"] for r in diffs]).T
            right.errorbar(np.array([r["train_len"] for r in diffs]) * dodge, d, yerr=[d - lo, hi - d], fmt="o-", ms=4,
                           capsize=3, color=f"C{i}", label=f"{kind} - mqa global")
    right.axhline(0, color="black", lw=0.8)
    for ax, ylabel in ((left, "held-out loss (nats per byte)"), (right, "paired difference (nats per byte)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [str(n) for n in lengths])
        ax.minorticks_off()
        ax.set_xlabel("training sequence length L (bytes; same tokens per step and steps)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    left.set_title(f"Griffin's window (Appendix E, Figure 9), {preset} preset", fontsize=10)
    right.set_title("minus the global Transformer on the same pieces (95% bootstrap)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)


def window_markdown(results, records):
    lengths = sorted(results)
    lines = ["Held-out loss per byte (95% bootstrap interval over pieces):", "",
             "| model | " + " | ".join(f"L = {L}" for L in lengths) + " |", "|---|" + "---|" * len(lengths)]
    for kind in KINDS:
        lines.append(f"| {kind} | " + " | ".join("{:.3f} [{:.3f}, {:.3f}]".format(*results[L][kind]["loss"])
                                                for L in lengths) + " |")
    lines += ["", "| L | the paper's claim | second - first on the same pieces (95% interval) | holds here? |",
              "|---|---|---|---|"]
    lines += [f"| {r['train_len']} | {r['claim']} | {r['second']} - {r['first']} = "
              f"{describe(*r['difference'], unit='')} | {r['holds']} |" for r in records]
    return "\n".join(lines) + "\n"


def run_window_study(preset, data_dir, out_dir, *, seed=0, log=print, command="", device="cpu"):
    """Train (or reuse) every model, score them on the same pieces, write window.png/.md/.json."""
    from minigriffin.data import load_corpus
    p, out_dir = PRESETS[preset], Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus, start, runs = load_corpus(data_dir), time.perf_counter(), window_runs(p)
    log(f"window: {len(runs)} models x {p['steps']} steps of {p['batch'] * p['L']:,} tokens on the {device}")
    results, models = {}, []
    longest = LENGTH_MULTIPLES[-1] * p["L"]
    for i, (kind, run, window) in enumerate(runs):       # one at a time: each has its own window
        later = sum(p["steps"] - saved_step(out_dir / "runs" / r[1][0]) for r in runs[i + 1:])
        [(_, trainer, summary)] = train_models([run], {**p, "window": window}, corpus, data_dir, out_dir,
                                               seed=seed, device=device, log=log, steps_after=later)
        label, _, L, batch = run
        pieces = piece_losses(trainer.params, trainer.model_cfg, corpus.valid, L,
                              p["segments"] * longest // L)                     # the same text at every L
        results.setdefault(L, {})[kind] = {"label": label, "loss": list(bootstrap_interval(pieces)),
                                           "pieces": pieces.tolist()}
        models.append({"kind": kind, "label": label, "train_len": L, "batch_size": batch, "window": window,
                       "attention": attention_kind(trainer.model_cfg), "final_train_loss": summary["last_loss"]})
        log(f"[{label}] held-out loss {describe(*results[L][kind]['loss'], unit='nats/byte')}")
    records = window_findings(results)
    figure = plot_window(results, records, out_dir / "window.png", preset)
    table = window_markdown(results, records)
    report = {"study": "window", "preset": preset, "settings": p, "seed": seed, "commit": source_commit(),
              "command": command, "device": device, "machine": machine_description(),
              "wall_time_s": round(time.perf_counter() - start, 1), "models": models, "figure": figure.name,
              "results": {str(L): v for L, v in results.items()}, "findings": records, "table": table}
    (out_dir / "window.md").write_text(f"# {command or 'window study'}\n\nseed {seed}, commit {report['commit']}, "
                                       f"wall time {report['wall_time_s'] / 60:.1f} min, {report['machine']}\n\n"
                                       + table)
    (out_dir / "window.json").write_text(json.dumps(report, indent=2) + "\n")
    log(f"\n{table}\nwall time {report['wall_time_s'] / 60:.1f} min; figure {out_dir / figure.name}")
    return report
