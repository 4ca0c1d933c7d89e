"""Figures, CSV and Markdown of the copy and retrieval study (minigriffin.copy_retrieval; Griffin Figure 6).

Everything here reads the results dicts that copy_retrieval.run_task returns (plain JSON-able data), so a
study's outputs can be redrawn from its copy-retrieval.json:

    report = json.load(open("copy-retrieval.json"))
    plot_task(report["tasks"]["induction"], report["preset"], "induction.png")

Figures draw on an Agg canvas (no pyplot), as minigriffin.plots does.
"""

import csv
import json
from pathlib import Path

import numpy as np

from minigriffin.copy_retrieval_findings import findings_markdown, seeds_markdown
from minigriffin.paired import bootstrap_interval

# family -> (label, colour, line style): the CG-LRU variants dashed, the Conv1D ablations dotted, in their
# family's colour
STYLE = {"mqa": ("MQA Transformer", "C0", "-"), "hawk": ("Hawk", "C1", "-"), "griffin": ("Griffin", "C2", "-"),
         "hawk-cg": ("Hawk (CG-LRU)", "C1", "--"), "griffin-cg": ("Griffin (CG-LRU)", "C2", "--"),
         "hawk-noconv": ("Hawk (no Conv1D)", "C1", ":"), "griffin-noconv": ("Griffin (no Conv1D)", "C2", ":")}
TITLES = {"selective-copy": "Selective copying (Figure 6a)", "induction": "Induction heads (Figure 6b)",
          "phonebook": "Phonebook lookup (Figure 6c)"}
CSV_COLUMNS = ["model", "sweep", "step", "length", "entries", "token_accuracy", "exact_match"]


def write_task_csv(result, path):
    """One row per measurement: sweep "steps" (held-out batch at the training length, during training) or
    "length" (after training, at each evaluation length; phonebook: book entries too)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for m in result["models"]:
            for point in m["curve"]:
                writer.writerow([m["label"], "steps", point["step"], result["train_len"], "",
                                 f"{point['token_accuracy']:.6f}", f"{point['exact_match']:.6f}"])
            for point in m["lengths"]:
                writer.writerow([m["label"], "length", result["settings"]["steps"], point["length"],
                                 point["entries"] or "", f"{point['token_accuracy']:.6f}",
                                 f"{point['exact_match']:.6f}"])
    return Path(path)


def _draw(ax, m, x, points, key, label=None, colour=None):
    """One model's curve, with its 95% bootstrap band over the held-out rows (minigriffin.paired); label and
    colour: instead of the family's."""
    own_label, own_colour, style = STYLE.get(m["family"], (m["label"], "C7", "-"))
    label, colour = label or own_label, colour or own_colour
    ax.plot(x, [p[key] for p in points], style, color=colour, marker="o", ms=3, label=label)
    rows = "row_exact" if key == "exact_match" else "row_token"
    bands = np.array([bootstrap_interval(p[rows])[1:] for p in points])            # (points, 2)
    ax.fill_between(x, bands[:, 0], bands[:, 1], color=colour, alpha=0.12, lw=0)


def _curve_panel(ax, result, key, ylabel):
    for m in result["models"]:
        _draw(ax, m, [c["step"] for c in m["curve"]], m["curve"], key)
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)


def _length_panel(ax, result, key, ylabel, log_x):
    for m in result["models"]:
        _draw(ax, m, [c["length"] for c in m["lengths"]], m["lengths"], key)
    L = result["train_len"]
    window = next((m["window"] for m in result["models"] if m["window"]), None)
    lo = result["train_lengths"][0]
    if lo < L:                                    # phonebook: trained on a range of book sizes, shaded
        ax.axvspan(lo, L, color="gray", alpha=0.12, label=f"training lengths {lo}-{L}")
    ax.axvline(L, color="gray", ls="--", lw=1, label=f"training length {L}")
    if window:
        ax.axvline(window, color="C2", ls=":", lw=1, label=f"Griffin window {window}")
    if log_x:
        lengths = sorted({c["length"] for m in result["models"] for c in m["lengths"]})
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [str(n) for n in lengths], fontsize=8)
        ax.minorticks_off()
    ax.set_xlabel("evaluation sequence length (tokens)")
    ax.set_ylabel(ylabel)


def plot_task(result, preset, path):
    """The task's figure in the style of Griffin's Figure 6: accuracy against training steps (selective
    copying), or against evaluation length (induction: log axis; phonebook: linear, as in the paper) beside
    the held-out accuracy during training. Returns the PNG path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    task = result["task"]
    fig = Figure(figsize=(13, 4.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3 if task == "phonebook" else 2)
    if task == "selective-copy":
        _curve_panel(axes[0], result, "exact_match", "exact match (all data tokens right)")
        _curve_panel(axes[1], result, "token_accuracy", "accuracy per copied token")
        chance_ax = axes[1]
    else:                                         # induction: one answer token, so exact match = per token
        unit = "accuracy" if task == "induction" else "exact match (every digit right)"
        _length_panel(axes[0], result, "exact_match", unit, task == "induction")
        if task == "phonebook":
            _length_panel(axes[1], result, "token_accuracy", "accuracy per answer digit", False)
        _curve_panel(axes[-1], result, "exact_match", f"held-out {unit} at length {result['train_len']}")
        axes[-1].set_title("during training", fontsize=9)
        chance_ax = axes[1] if task == "phonebook" else axes[0]
    chance_ax.axhline(result["chance"], color="black", ls=":", lw=0.8, label=f"chance {result['chance']:.3f}")
    for ax in axes:
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    chance_ax.legend(fontsize=7)
    fig.suptitle(f"{TITLES[task]}, {preset} preset: {_settings_line(result)}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)


def _settings_line(result):
    s = result["settings"]
    if result["task"] == "selective-copy":
        what = f"length {s['L']}, {s['data_tokens']} data tokens"
    elif result["task"] == "induction":
        what = f"trained at length {s['L']}"
    else:
        what = (f"books of {s['entries'][0]}-{s['entries'][1]} entries (up to {result['train_len']} tokens), "
                f"{s['syllables']}-syllable names, {s['digits']}-digit numbers")
    return f"{what}, batch {s['batch']}, {s['steps']} steps, {s['eval_rows']} held-out rows per point"


def task_markdown(result):
    """One task's section: settings, then a table of every model's accuracy (exact match; per token in brackets
    where the answer has more than one token)."""
    task, models = result["task"], result["models"]
    lines = [f"## {TITLES[task]}", "", _settings_line(result) + f"; chance per token {result['chance']:.3f}; "
             f"task time {result['wall_time_s'] / 60:.1f} min.", ""]
    if task == "selective-copy":
        curve = models[0]["curve"]
        picks = sorted({curve[len(curve) * k // 4]["step"] for k in (1, 2, 3)} | {curve[-1]["step"]})
        head = [f"step {s}" for s in picks]
        rows = [[f"{c['exact_match']:.2f} ({c['token_accuracy']:.2f})" for c in m["curve"] if c["step"] in picks]
                for m in models]
        lines.append("Held-out exact match (per-token accuracy in brackets) during training:")
    else:
        head = [f"{p['length']}" + (f" ({p['entries']} entries)" if p["entries"] else "")
                + (" = L" if p["length"] == result["train_len"] else "") for p in models[0]["lengths"]]
        rows = [[f"{p['exact_match']:.2f}" + (f" ({p['token_accuracy']:.2f})" if task == "phonebook" else "")
                 for p in m["lengths"]] for m in models]
        lines.append("Accuracy after training against evaluation length in tokens"
                     + (" (exact match; per-digit accuracy in brackets):" if task == "phonebook" else ":"))
    lines += ["", "| model | parameters | attention | final loss | tokens/s | " + " | ".join(head) + " |",
              "|---|---|---|---|---|" + "---|" * len(head)]
    for m, cells in zip(models, rows):
        attention = "global" if m["family"] == "mqa" else f"window {m['window']}" if m["window"] else "none"
        lines.append(f"| {STYLE.get(m['family'], (m['label'],))[0]} | {m['params']:,} | {attention} | "
                     f"{m['final_loss']:.3f} | {m['tokens_per_s']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def report_markdown(report):
    """copy-retrieval.md: how the run was made, then one section per task."""
    model = report["model"]
    head = [f"# Copy and retrieval (Griffin section 6.2, Figure 6): {report['preset']} preset", "",
            f"- command: `{report['command']}`" if report["command"] else "- command: (called from Python)",
            f"- seed {report['seed']}, commit {report['commit']}, device {report['device']}, "
            f"wall time {report['wall_time_s'] / 60:.1f} min",
            f"- machine: {report['machine']}",
            f"- models: {model['depth']} residual blocks, width {model['width']}, MLP {model['mlp']}, "
            f"RG-LRU width {model['lru_width']}, {model['heads']} heads; AdamW without weight decay, "
            f"lr {report['lr']:g} (warm-up, cosine to lr/10), betas (0.9, 0.999), clip 1.0", ""]
    verdicts = ["## The paper's claims, tested", "",
                "Paired on the same held-out rows: second model minus first, 95% bootstrap interval over rows "
                "(minigriffin/copy_retrieval_findings.py says what each point reads).", "",
                findings_markdown(report["findings"], {f: style[0] for f, style in STYLE.items()})]
    return "\n".join(head) + "\n" + "\n".join(task_markdown(r) for r in report["tasks"].values()) + "\n" + \
        "\n".join(verdicts)


def plot_seeds(reports, path):
    """Runs that differ only in their seed, one panel per task and model: induction and phonebook accuracy
    against evaluation length, selective copying's per-token accuracy during training; one line per seed with
    its 95% bootstrap band over that seed's held-out rows. Returns the PNG path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    tasks = [t for t in TITLES if all(t in r["tasks"] for r in reports)]
    families = [[m["family"] for m in reports[0]["tasks"][t]["models"]] for t in tasks]
    fig = Figure(figsize=(2.9 * max(map(len, families)), 2.6 * len(tasks)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(tasks), max(map(len, families)), squeeze=False)
    for row, (task, names) in enumerate(zip(tasks, families)):
        for col, family in enumerate(names):
            ax = axes[row][col]
            for k, report in enumerate(reports):
                result = report["tasks"][task]
                m = next(m for m in result["models"] if m["family"] == family)
                along, key = ("curve", "token_accuracy") if task == "selective-copy" else ("lengths", "exact_match")
                x = [p["step" if along == "curve" else "length"] for p in m[along]]
                _draw(ax, m, x, m[along], key, label=f"seed {report['seed']}", colour=f"C{k}")
            if task != "selective-copy":
                ax.axvline(result["train_len"], color="gray", ls="--", lw=1)
            if task == "induction":
                ax.set_xscale("log", base=2)
            ax.set_title(f"{task}: {STYLE.get(family, (family,))[0]}", fontsize=8)
            ax.set_ylim(-0.03, 1.03)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
        for col in range(len(names), axes.shape[1]):
            axes[row][col].set_visible(False)
        axes[row][0].set_ylabel("per-token accuracy" if task == "selective-copy" else "exact match", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Copy and retrieval, laptop preset, one line per seed (dashed: training length)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return Path(path)


def seeds_report(json_paths, out_dir):
    """copy-retrieval-seeds.md (each seed's verdicts side by side, copy_retrieval_findings.seeds_markdown) and
    copy-retrieval-seeds.png (plot_seeds) in out_dir, from the JSON files of runs that differ only in their
    seed. Returns the two paths."""
    reports = [json.loads(Path(p).read_text()) for p in json_paths]
    if len({(r["preset"], r["model"]["width"], r["lr"]) for r in reports}) != 1:
        raise ValueError("the runs differ in more than their seed (preset, model or learning rate)")
    out_dir = Path(out_dir)
    runs = [f"- seed {r['seed']}: `{Path(p).name}`, commit {r['commit']}, {r['wall_time_s'] / 60:.1f} min"
            for p, r in zip(json_paths, reports)]
    text = ["# Copy and retrieval: the verdicts of each seed", "", *runs, "",
            "Each seed's paired difference (second - first) with its 95% bootstrap interval over that seed's "
            "held-out rows, and whether every seed's interval falls on the same side of 0.", "",
            seeds_markdown(reports, {f: style[0] for f, style in STYLE.items()})]
    (out_dir / "copy-retrieval-seeds.md").write_text("\n".join(text))
    return out_dir / "copy-retrieval-seeds.md", plot_seeds(reports, out_dir / "copy-retrieval-seeds.png")
