# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 6. Long context: Figure 5 at laptop scale
#
# Paper: [De, Smith et al. 2024, "Griffin", arXiv 2402.19427](https://arxiv.org/abs/2402.19427), §6.1 and Figure 5. Docs: [docs/results.md](../docs/results.md), which judges each finding with paired
# statistics and says what matches the paper and what does not.
#
# Section 6.1 of the Griffin paper asks what happens when a model reads far more text than it was trained on. Long
# held-out documents are fed whole, and the loss is averaged per token position. In Figure 5 (left), Hawk
# and Griffin keep predicting well, or better, at positions several times beyond their training length, while the
# global-attention MQA Transformer's loss shoots up just past it. In the right panel, models trained on 4x longer
# sequences (same number of tokens) are better far out and slightly worse early.
#
# `minigriffin experiment` repeats both studies at laptop scale on the books:
#
# * **extrapolation**: Hawk, Griffin (local window $L/2$) and MQA (global attention, RoPE) trained at the same length
#   $L$ with the same token budget, evaluated up to $8L$;
# * **train-length**: Hawk and Griffin trained at $L$ and at $4L$ (batch divided by 4, same steps), evaluated up to
#   $16L$.
#
# The documents are the validation books cut into up to 16 consecutive pieces of $8L$ (or $16L$) bytes, each scored
# as one document starting at position 0, so a curve averages dozens of long stretches of text rather than a few
# title pages. Evaluation ([minigriffin/evaluate.py](../minigriffin/evaluate.py)) runs each document in chunks that
# carry the recurrent state and the attention cache, so Hawk's and Griffin's memory does not grow with the length. This
# notebook reads the committed results from [docs/results/](../docs/results/) and, at the small size, runs the whole
# pipeline end to end on a tiny preset.

# %%
import json
import os
import re
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

from minigriffin.cli import main as minigriffin
from minigriffin.data import default_cache_dir
from minigriffin.evaluate import markdown_table, read_csv, standard_error

# Unset: small sizes that run in seconds. MINIGRIFFIN_FULL_RUN=1: the sizes quoted in the text.
FULL_RUN = os.environ.get("MINIGRIFFIN_FULL_RUN") == "1"
plt.rcParams.update({"figure.dpi": 72, "savefig.dpi": 72, "font.size": 9})
RESULTS = Path("..") / "docs" / "results"
BOOKS = Path(os.environ.get("MINIGRIFFIN_BOOKS") or default_cache_dir() / "books").expanduser()
STUDIES = ("extrapolation", "train-length")


def load_study(folder, study):
    """{label: LengthCurve} of one study from <study>-<label>.csv files (train length from the label, L<n>),
    and the study's <study>.json metadata (or None)."""
    meta_path = Path(folder) / f"{study}.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    curves = {}
    for path in sorted(Path(folder).glob(f"{study}-*.csv")):
        label = path.stem[len(study) + 1:]
        match = re.search(r"L(\d+)$", label)
        curves[label] = read_csv(path, name=label, train_len=int(match.group(1)) if match else 0)
    return curves, meta


def plot_studies(studies, title):
    """One panel per study: mean loss per position bucket (log2 positions), +-1 standard error as a band."""
    fig, axes = plt.subplots(1, len(studies), figsize=(6 * len(studies), 3.8), squeeze=False)
    for ax, (study, curves) in zip(axes[0], studies.items()):
        for i, (label, c) in enumerate(curves.items()):
            centre = np.sqrt(np.maximum(c.bucket_lo, 1) * c.bucket_hi)
            ax.plot(centre, c.mean, "o-", ms=3, color=f"C{i}", label=label)
            stderr = standard_error(c)                                  # spread / sqrt(documents), per bucket
            ax.fill_between(centre, c.mean - stderr, c.mean + stderr, color=f"C{i}", alpha=0.15)
        for train_len in sorted({c.train_len for c in curves.values() if c.train_len}):
            ax.axvline(train_len, color="grey", ls="--", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("token position in the document (dashed: training lengths)")
        ax.set_ylabel("cross-entropy (nats per byte)")
        ax.set_title(study)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    plt.show()


def summarise(curves):
    """Loss at the training length against the furthest positions evaluated, per model."""
    for label, c in curves.items():
        at_train = c.mean[np.searchsorted(c.bucket_hi, c.train_len, side="left")]
        far = c.mean[-1]
        print(f"{label:<14} loss at the training length {at_train:.3f}; at positions {c.bucket_lo[-1]}-"
              f"{c.bucket_hi[-1] - 1}: {far:.3f} ({far - at_train:+.3f}; {c.documents[-1]} documents)")


# %% [markdown]
# ## The committed results
#
# The files in `docs/results/` come from `minigriffin experiment extrapolation --preset laptop` and
# `minigriffin experiment extrapolation --preset laptop --study train-length` (`<study>.json` records the command,
# seed, commit, machine and wall time; one CSV per model, read with `minigriffin.evaluate.read_csv`).

# %%
committed = {study: load_study(RESULTS, study) for study in STUDIES}
found = {study: curves for study, (curves, _) in committed.items() if curves}
if not found:
    print(f"No committed results in {RESULTS.resolve()} yet (expected {', '.join(s + '-<label>.csv' for s in STUDIES)}"
          f" and {' / '.join(s + '.json' for s in STUDIES)}). Re-run the study as below; this section fills in when "
          f"the notebook is executed again.")
else:
    presets = sorted({meta["preset"] for _, meta in committed.values() if meta})
    plot_studies(found, "Loss per position in long held-out documents, +-1 standard error"
                 + (f" ({', '.join(presets)} preset)" if presets else ""))
    for study, curves in found.items():
        meta = committed[study][1]
        print(f"== {study}" + (f": `{meta['command']}`, seed {meta['seed']}, commit {meta['commit']}, "
                               f"{meta['wall_time_s'] / 60:.0f} min on {meta['machine']}" if meta else ""))
        summarise(curves)
        L = min(c.train_len for c in curves.values())
        positions = [L // 2, L - 1, 2 * L, 4 * L, 8 * L - 2] + ([16 * L - 2] if study == "train-length" else [])
        display(Markdown(markdown_table(list(curves.values()), positions)))

# %% [markdown]
# What to look for: the MQA baseline's curve against the dashed line at its training length (global attention meets
# offsets it never saw, notebook 3), against Hawk's and Griffin's, whose states and windows see nothing new at long
# positions. In the train-length panel, compare each model's $L$ and $4L$ curves early and late in the books.
#
# ## Re-running it
#
# ```sh
# minigriffin experiment extrapolation --preset laptop                        # ~25 min on a 2-core laptop
# minigriffin experiment extrapolation --preset laptop --study train-length   # reuses the models trained at L
# ```
#
# Both write to `runs/experiment-laptop/` (`--out` to change): the CSVs, `<study>.png`, `<study>.md` and
# `<study>.json`, and each model's run folder with its checkpoints. A model whose checkpoint is complete is not
# trained again. Below, the same pipeline runs end to end with the `tiny` preset (three steps per model, evaluated up
# to 128 bytes) into a temporary folder; it only shows the mechanics, the curves mean nothing. With
# `MINIGRIFFIN_FULL_RUN=1` the cell runs the `laptop` preset into `../runs/experiment-laptop` instead.

# %%
preset, out = ("laptop", Path("../runs/experiment-laptop")) if FULL_RUN else \
    ("tiny", Path(tempfile.mkdtemp(prefix="minigriffin-experiment-")))
HAVE_BOOKS = BOOKS.is_dir() and ((BOOKS / "train").is_dir() or any(BOOKS.glob("*.txt")))
if not HAVE_BOOKS:
    print(f"NO BOOKS at {BOOKS.resolve()}: set MINIGRIFFIN_BOOKS to a folder of .txt books (or run "
          f"`minigriffin download`) to run the experiment. Skipping it.")
else:
    code = minigriffin(["experiment", "extrapolation", "--preset", preset, "--data-dir", str(BOOKS),
                        "--out", str(out)])
    assert code == 0, f"the experiment exited with {code}"

# %%
# The experiment saved its figure with matplotlib's file-only backend; switch this notebook back to inline figures.
# %matplotlib inline

# %%
if HAVE_BOOKS:
    curves, meta = load_study(out, "extrapolation")
    print(f"{out}: {sorted(p.name for p in out.iterdir())}")
    plot_studies({"extrapolation": curves}, f"{preset} preset, run here in {meta['wall_time_s']:.0f} s")
    summarise(curves)

# %% [markdown]
# Next: [decoding cost](07_decoding_cost.ipynb), the other side of a fixed-size state.
