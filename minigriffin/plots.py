"""Loss curves from metrics.jsonl files (`minigriffin plot`). Draws on an Agg canvas: no display needed, and
the backend of an interactive session or notebook is left alone."""

import json
from pathlib import Path


def read_metrics(run_dir):
    """List of per-step records of a run; a truncated last line (a crash mid-write) is skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a minigriffin run folder?")
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def plot_runs(run_dirs, out=None):
    """Training loss (light) and validation loss (markers) against step, one colour per run. Returns the PNG path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5))          # no pyplot: never switches the backend of a notebook or GUI session
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for i, run_dir in enumerate(run_dirs):
        records = read_metrics(run_dir)
        color = f"C{i % 10}"
        steps = [r["step"] for r in records]
        ax.plot(steps, [r["loss"] for r in records], color=color, alpha=0.35, lw=1)
        val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
        if val:
            ax.plot(*zip(*val), "o-", color=color, ms=4, label=f"{Path(run_dir).name} (validation)")
        else:
            ax.plot([], [], color=color, label=Path(run_dir).name)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats per byte)")
    ax.set_title("minigriffin training loss (light: train, markers: validation)")
    ax.grid(alpha=0.3)
    ax.legend()
    out = Path(out) if out else Path(run_dirs[0]) / "loss.png"
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    return out
