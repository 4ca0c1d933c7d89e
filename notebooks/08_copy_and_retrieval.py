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
# # 8. Copy and retrieval: what a fixed-size state cannot hold
#
# Paper: [De, Smith et al. 2024, "Griffin", arXiv 2402.19427](https://arxiv.org/abs/2402.19427), §6.2 and
# Figure 6; the task settings in Appendix H, the complex-gated CG-LRU in Appendix B. The tasks come from
# [Gu and Dao 2023, "Mamba", arXiv 2312.00752](https://arxiv.org/abs/2312.00752) (selective copying and induction
# heads, Appendix E.1; induction heads first in [H3, arXiv 2212.14052](https://arxiv.org/abs/2212.14052)) and
# [Jelassi et al. 2024, "Repeat After Me: Transformers are Better than State Space Models at Copying",
# arXiv 2402.01032](https://arxiv.org/abs/2402.01032) (phonebook lookup, and the counting argument of section 2).
# Docs: [docs/tasks.md](../docs/tasks.md) (the generators, their layouts and what is ours),
# [docs/results.md](../docs/results.md) (the laptop study, what matches the paper and what does not). Code:
# [minigriffin/tasks/](../minigriffin/tasks/) (the three tasks),
# [minigriffin/copy_retrieval.py](../minigriffin/copy_retrieval.py) (the study: models, training, accuracy),
# [minigriffin/copy_retrieval_findings.py](../minigriffin/copy_retrieval_findings.py) (each claim of Figure 6 as
# a paired comparison), [minigriffin/copy_retrieval_report.py](../minigriffin/copy_retrieval_report.py) (figures
# and tables).
#
# Section 6.1 (notebook 6) asked whether Hawk and Griffin *use* a long context. Section 6.2 asks the sharper
# question: can they copy and retrieve from it exactly, as a Transformer can? This notebook shows the three tasks,
# argues why a state of fixed size must eventually fail at copying, trains tiny Hawk and Griffin models here in
# seconds to watch it happen (and to watch Griffin's local attention retrieve exactly what lies inside its window),
# then reads the committed laptop-scale study and its verdicts.

# %%
import dataclasses
import json
import math
import os
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

from minigriffin import copy_retrieval as cr
from minigriffin.config import ATTENTION
from minigriffin.copy_retrieval_findings import CLAIMS, copy_retrieval_findings, findings_markdown
from minigriffin.copy_retrieval_report import STYLE
from minigriffin.inference import forward_chunk, init_state
from minigriffin.model import model_forward
from minigriffin.paired import bootstrap_interval, describe, verdict
from minigriffin.params import count_params, init_a_param, init_params
from minigriffin.rglru import C, softplus
from minigriffin.state import block_arrays
from minigriffin.tasks import (PHONEBOOK_VOCAB, copy_marker, decode, induction_batch, noise_token, phonebook_batch,
                               phonebook_length, selective_copy_batch, special_token)

# Unset: small sizes that run in seconds. MINIGRIFFIN_FULL_RUN=1: the laptop preset's models and settings for the
# live training of sections 3-5 (several minutes).
FULL_RUN = os.environ.get("MINIGRIFFIN_FULL_RUN") == "1"
plt.rcParams.update({"figure.dpi": 72, "savefig.dpi": 72, "font.size": 9})
# The committed study (section 6). Another copy-retrieval.json can be read instead by setting this variable.
RESULTS_JSON = Path(os.environ.get("MINIGRIFFIN_COPY_RETRIEVAL_JSON")
                    or Path("..") / "docs" / "results" / "copy-retrieval.json")
NAMES = {family: style[0] for family, style in STYLE.items()}        # "hawk" -> "Hawk", ...

# %% [markdown]
# ## 1. The three tasks
#
# Each task is teacher-forced next-token prediction on rows of integers, with a `mask` that scores only the answer
# tokens ([docs/tasks.md](../docs/tasks.md)). A helper prints a row's tokens, targets and mask one above the other.

# %%
def show_row(batch, row, symbol, first=0):
    """Print tokens, targets and mask of one row from position `first`, one column per position."""
    cols = range(first, batch.tokens.shape[1])
    cell = lambda s: f"{s:>3}"                                                 # noqa: E731
    print("position " + "".join(cell(t) for t in cols))
    print("tokens   " + "".join(cell(symbol(batch.tokens[row, t])) for t in cols))
    print("targets  " + "".join(cell(symbol(batch.targets[row, t])) for t in cols))
    print("mask     " + "".join(cell("1" if batch.mask[row, t] else ".") for t in cols))


# %% [markdown]
# **Selective copying** (Mamba, Appendix E.1). Vocabulary 16: data symbols 0-13 (printed as letters), the noise
# token 14 (`.`) and the copy marker 15 (`>`). $N$ data tokens sit at random positions among noise; after the marker
# the model must write them in order. The gaps are random, so no fixed filter can do it: the model must decide *by
# content* what to keep. Griffin's setting: rows of 1,024 with 16 data tokens.

# %%
V = 16
sc_symbol = lambda t: ">" if t == copy_marker(V) else "." if t == noise_token(V) else "abcdefghijklmn"[t]  # noqa: E731
batch = selective_copy_batch(np.random.default_rng(1), 2, 20, num_data_tokens=4)
show_row(batch, 0, sc_symbol)
prefix = batch.tokens[:, :20 - 4]                                          # data among noise, before the marker
assert (batch.targets[batch.mask].reshape(2, 4) == prefix[prefix != noise_token(V)].reshape(2, 4)).all()
print("scored targets = the data tokens of the prefix, in order: checked on both rows")

# %% [markdown]
# **Induction heads** (H3; Mamba, Appendix E.1). Random symbols 0-14 with one special token (15, printed `*`); the
# row ends with the special token again, and the target there is the symbol that followed its first occurrence.
# Only that last position is scored. Griffin trains at length 256 and evaluates far longer (Figure 6b).

# %%
ind_symbol = lambda t: "*" if t == special_token(V) else str(int(t))   # noqa: E731
batch = induction_batch(np.random.default_rng(3), 2, 16)
show_row(batch, 0, ind_symbol)
p_first = int(np.flatnonzero(batch.tokens[0] == special_token(V))[0])
assert batch.targets[0, -1] == batch.tokens[0, p_first + 1] and batch.mask[0].sum() == 1

# %% [markdown]
# **Phonebook lookup** (Jelassi et al. 2024; Griffin Figure 6c). A book of "name:number" lines, a blank line, two of
# its entries as worked examples, a blank line, then a third name and ":". The model must write that name's number;
# only its digits are scored. Our vocabulary is 39 characters (`PHONEBOOK_VOCAB`); names are random
# consonant-vowel syllables. Here 1-syllable names and 2-digit numbers, as in the laptop study, and a book of 4
# entries:

# %%
batch = phonebook_batch(np.random.default_rng(0), 1, 4, name_syllables=1, number_digits=2)
text = decode(np.append(batch.tokens[0], batch.targets[0, -1]))
print(text, "\n")
show_row(batch, 0, lambda t: PHONEBOOK_VOCAB[t].replace("\n", "\\n"), first=batch.tokens.shape[1] - 10)
print(f"\nrow length {batch.tokens.shape[1]} = phonebook_length(4, name_syllables=1, number_digits=2) = "
      f"{phonebook_length(4, name_syllables=1, number_digits=2)}; the paper's books reach 3,000 tokens")

# %% [markdown]
# Three tasks, three demands on memory:
#
# * **induction heads** asks for *one* symbol, wherever it sits: about $\log_2 15 \approx 3.9$ bits, whatever the
#   length;
# * **selective copying** asks for all $N$ data tokens, in order: $N \log_2 14$ bits (16 tokens: 61 bits);
# * **phonebook lookup** asks for the number of whichever name is queried, and the model cannot know which until
#   the end: it must keep *every* number, with its name. The bits grow with the book.

# %% [markdown]
# ## 2. Why a fixed-size state struggles to copy
#
# **The counting argument** (Jelassi et al. 2024, section 2, proved there for any model with a fixed-size state).
# Whatever a model will write after the copy marker, it writes from what it carries at the marker: for Hawk, its
# state. If the state can take $2^s$ distinct
# values (s bits) and the prefix can hold $14^N$ distinct data sequences, then once $14^N > 2^s$ two different
# sequences lead to the same state, and the model writes the same answer for both: it gets at least one wrong. So a
# model with a fixed-size state cannot copy strings longer than about $s / \log_2 14$ tokens, however it is trained.
# A Transformer has no such limit: its key-value cache keeps every token, and grows with the sequence. Griffin sits
# between: its recurrent blocks have a fixed state, its local attention keeps the last $W$ tokens *verbatim*.
#
# The cell below measures what each model carries after $T$ tokens (the float arrays of
# [`inference`](../minigriffin/inference.py)'s state: RG-LRU states and Conv1D taps, keys and values), for the
# laptop study's model size (5 blocks, width 64; Appendix H), with Griffin's window at 32.

# %%
def state_floats(family, T, window=32):
    """Floats carried after a prompt of T tokens by a laptop-size model (the arrays of its decoding state)."""
    cfg = dataclasses.replace(cr.model_config(family, cr.APPENDIX_H, "induction", dict(L=2 * window)),
                              attention_window_size=window)
    params = init_params(cfg, np.random.default_rng(0))
    tokens = np.zeros((1, T), dtype=np.int64)
    _, state = forward_chunk(params, tokens, np.arange(T)[None], cfg, init_state(cfg, 1))
    return sum(a.size for block in state.blocks for a in block_arrays(block) if a.dtype.kind == "f")


lengths = (16, 64, 256, 1024)
print("floats carried after T tokens" + "".join(f"{'T = ' + str(T):>12}" for T in lengths))
for family in ("hawk", "griffin", "mqa"):
    print(f"{NAMES[family]:<29}" + "".join(f"{state_floats(family, T):>12,}" for T in lengths))
bits = lambda n: n * math.log2(14)                                               # noqa: E731
print(f"\nselective copying needs {bits(8):.0f} bits for 8 data tokens (the laptop study), {bits(16):.0f} for 16 "
      f"(the paper); Hawk's state, in float32, holds {32 * state_floats('hawk', 16):,} bits")

# %% [markdown]
# The bound is far from binding at these sizes: 32-bit floats could, in principle, hold tens of thousands of bits,
# and selective copying needs a few dozen. What limits a recurrent model in practice is not the number of bits its
# state *could* hold but what it can *learn* to write into a sum of decaying inputs and read back out. The RG-LRU's
# state is $h_t = a_t \odot h_{t-1} + \sqrt{1 - a_t^2} \odot (i_t \odot x_t)$: every token is added into the same
# $D_\text{RNN}$ numbers, and the tokens kept must stay separable from everything added after them.
#
# A toy shows the scale of the problem. Take a diagonal linear recurrence of width $D = 64$ with the RG-LRU's
# initial decays, feed it $N$ random symbols (each a random 64-vector), and ask the *best linear readout* of the
# final state (least squares over many rows) which symbol sat at each position. Writing every symbol into 64
# numbers and reading each back linearly works only while the $N \times 13$ independent directions the symbols
# need fit in 64 dimensions:

# %%
def linear_recall(num_tokens, width=64, rows=3000, symbols=14, seed=0):
    """Accuracy of the best linear readout (least squares, fit on half the rows, scored on the other half) of
    every symbol from the final state of h_t = a h_(t-1) + sqrt(1 - a^2) x_t, a from the RG-LRU's initialisation."""
    rng = np.random.default_rng(seed)
    a = np.exp(-C * softplus(init_a_param(rng, width, np.float64, 0.9, 0.999)))       # (width,) with r_t = 1
    embed = rng.standard_normal((symbols, width))                                     # (symbols, width)
    seq = rng.integers(0, symbols, size=(rows, num_tokens))                            # (rows, N)
    decay = a[None, :] ** np.arange(num_tokens - 1, -1, -1)[:, None]                   # (N, width)
    h = np.einsum("rnw,nw->rw", embed[seq], decay * np.sqrt(1 - a ** 2))               # (rows, width)
    onehot = np.eye(symbols)[seq].reshape(rows, -1)                                    # (rows, N * symbols)
    fit, test = slice(0, rows // 2), slice(rows // 2, rows)
    readout, *_ = np.linalg.lstsq(h[fit], onehot[fit], rcond=None)                     # (width, N * symbols)
    guess = (h[test] @ readout).reshape(-1, num_tokens, symbols).argmax(-1)            # (rows/2, N)
    return float((guess == seq[test]).mean())


counts = (1, 2, 4, 6, 8, 12, 16)
recall = [linear_recall(n) for n in counts]
for n, acc in zip(counts, recall):
    print(f"N = {n:>2} symbols into 64 numbers: linear readout right on {acc:.2f} of them "
          f"(N x 13 = {13 * n:>3} directions needed)")

# %% [markdown]
# A trained Hawk is not linear (gates, MLPs, a nonlinear readout), so in principle it can pack more than this toy;
# but it has to *learn* to write and to read, and section 3 shows how slowly that goes. The pattern is the one to
# expect: a few tokens fit, and past that each token kept costs the others precision.
# Attention has no such trade: a key-value cache stores every token verbatim, and a query reads the one it matches.
# So the prediction for the tasks:
#
# * **induction heads** (one symbol) suits a recurrence: Hawk should extrapolate far past its training length, as
#   long as it has learned to *hold* the symbol;
# * **selective copying** is harder for Hawk the more data tokens there are; Griffin can read the data tokens that
#   lie inside its window and should learn much faster;
# * **phonebook lookup** grows without bound: a fixed state must fail once the book is long enough; Griffin should
#   retrieve exactly while the queried entry lies inside its window, and fail past it unless its recurrence holds it.

# %% [markdown]
# ## 3. Live: selective copying, Hawk against Griffin (Figure 6a in small)
#
# Two models trained here with the study's own functions:
# [`copy_retrieval.model_config`](../minigriffin/copy_retrieval.py) (Griffin's window is half the training
# length), [`task_batch`](../minigriffin/copy_retrieval.py) (fresh rows every step, the same for both models) and
# [`train_model`](../minigriffin/copy_retrieval.py), which evaluates a held-out batch along the way. The small size:
# 3 blocks of width 32 (Griffin: recurrent, recurrent, local attention), rows of 24 with 5 data tokens, 400 steps of
# 16 rows; with `MINIGRIFFIN_FULL_RUN=1`, the laptop preset's models and selective-copying settings.

# %%
if FULL_RUN:
    MODEL, LR = cr.PRESETS["laptop"]["model"], cr.PRESETS["laptop"]["lr"]
    SC = cr.PRESETS["laptop"]["selective-copy"]
    IND = cr.PRESETS["laptop"]["induction"]
else:
    MODEL, LR = dict(width=32, depth=3, heads=2, lru_width=32, mlp=96), 5e-3
    SC = dict(L=24, data_tokens=5, batch=16, steps=400, evals=8, eval_rows=128)
    IND = dict(L=16, batch=16, steps=300, evals=6, eval_rows=128, lengths=(1 / 2, 1, 2, 4, 8, 16, 32))
LIVE = ("hawk", "griffin")
quiet = lambda *args, **kwargs: None                                       # noqa: E731  train_model's log

sc_held_out = cr.task_batch("selective-copy", SC, np.random.default_rng([0, 2]), SC["eval_rows"])
sc_models = {}
for family in LIVE:
    cfg = cr.model_config(family, MODEL, "selective-copy", SC)
    start = time.perf_counter()
    params, curve, loss, rate = cr.train_model(cfg, "selective-copy", SC, LR, seed=0, device="cpu",
                                               held_out=sc_held_out, log=quiet)
    sc_models[family] = (params, cfg, curve)
    print(f"{NAMES[family]:<8} {count_params(cfg):,} parameters, window "
          f"{cfg.attention_window_size if family == 'griffin' else '-'}: {time.perf_counter() - start:.1f} s, final "
          f"loss {loss:.3f}, held-out accuracy per token {curve[-1]['token_accuracy']:.2f}, exact match "
          f"{curve[-1]['exact_match']:.2f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 2.8))
for family, (_, _, curve) in sc_models.items():
    label, colour, _ = STYLE[family]
    for ax, key in zip(axes, ("token_accuracy", "exact_match")):
        ax.plot([c["step"] for c in curve], [c[key] for c in curve], "o-", ms=3, color=colour, label=label)
axes[0].axhline(cr.CHANCE["selective-copy"], color="black", ls=":", lw=0.8, label="chance")
for ax, title in zip(axes, ("accuracy per copied token", "exact match (every token right)")):
    ax.set_xlabel("training step")
    ax.set_title(title)
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
axes[0].legend(fontsize=8)
plt.show()

# %% [markdown]
# The paper's claim reads "Hawk learns far more slowly". The study turns that into a number: a row's accuracy
# averaged over every evaluation during training (the area under its learning curve), Griffin minus Hawk on the
# same held-out rows, with a bootstrap interval over rows ([`paired.bootstrap_interval`](../minigriffin/paired.py)).

# %%
def area(curve):
    """(rows,) each held-out row's per-token accuracy averaged over the evaluations after step 0."""
    return np.mean([c["row_token"] for c in curve if c["step"] > 0], axis=0)


gap = bootstrap_interval(area(sc_models["griffin"][2]) - area(sc_models["hawk"][2]))
print(f"Griffin - Hawk, per-token accuracy averaged over training, {SC['eval_rows']} rows: {describe(*gap, unit='')}"
      f" -> {verdict(*gap, above='Griffin learns faster', below='Hawk learns faster')}")

# %% [markdown]
# ## 4. Live: is it the window that copies?
#
# Griffin's local attention lets position $q$ read the keys of positions $s$ with $q - s \le W$. The answer $d_k$ is
# predicted at position $P + k - 1$ ($P$ = where the marker is), so it is *inside the window* when its data token
# sat at most $W$ positions earlier. If the window does the copying, Griffin should be right almost always inside it
# and fall back to its recurrence (Hawk's skill) outside it.
#
# The cell scores 512 fresh rows and splits every answer token by that distance.

# %%
test = cr.task_batch("selective-copy", SC, np.random.default_rng([0, 3]), 512)
L, N = SC["L"], SC["data_tokens"]
P = L - N                                                                           # the marker's position
source = np.array([np.flatnonzero(row[:P] != noise_token(V)) for row in test.tokens])    # (rows, N) data slots
distance = (P + np.arange(N))[None, :] - source                                     # (rows, N) query - source
W = sc_models["griffin"][1].attention_window_size
inside = distance <= W                                                              # (rows, N)
right = {}
for family, (params, cfg, _) in sc_models.items():
    logits, _ = model_forward(params, test.tokens, test.segment_pos, cfg)          # (rows, L, V)
    right[family] = (np.asarray(logits).argmax(-1)[:, P:] == test.targets[:, P:]).astype(float)   # (rows, N)
    print(f"{NAMES[family]:<8} accuracy {right[family][inside].mean():.2f} on the answers inside the window "
          f"(a fraction {inside.mean():.2f} of them), {right[family][~inside].mean():.2f} outside")

fig, ax = plt.subplots(figsize=(6.5, 2.8))
ds = np.arange(distance.min(), distance.max() + 1)
for family in LIVE:
    label, colour, _ = STYLE[family]
    acc = [right[family][distance == d].mean() if (distance == d).sum() >= 20 else np.nan for d in ds]
    ax.plot(ds, acc, "o-", ms=3, color=colour, label=label)
ax.axvline(W + 0.5, color="C2", ls=":", lw=1, label=f"Griffin's window W = {W}")
conv_reach = 3 * sc_models["griffin"][1].block_types.index(ATTENTION)   # 3 per recurrent block before attention
ax.axvspan(W + 0.5, W + conv_reach + 0.5, color="C2", alpha=0.08, label=f"W to W + {conv_reach} (Conv1D reach)")
ax.axhline(cr.CHANCE["selective-copy"], color="black", ls=":", lw=0.8, label="chance")
ax.set_xlabel("distance from the data token to the position that must write it")
ax.set_ylabel("accuracy")
ax.set_ylim(-0.03, 1.03)
ax.grid(alpha=0.3)
ax.legend(fontsize=7, loc="lower left", ncol=2)
plt.show()

# %% [markdown]
# Inside against outside is confounded by recency: the tokens inside the window are the *later* data tokens, and a
# recurrence forgets old tokens first too. Hawk, which has no window, measures that confound. So the test is a
# difference of differences, paired on the same rows: per row, (Griffin inside - Griffin outside) - (Hawk inside -
# Hawk outside). Rows with no answer on one side drop out (NaN).

# %%
def split(values, mask):
    """(rows,) mean of values over mask per row, NaN for a row with no entry in mask."""
    n = mask.sum(axis=1)
    return np.where(n > 0, (values * mask).sum(axis=1) / np.maximum(n, 1), np.nan)


edge = {f: split(right[f], inside) - split(right[f], ~inside) for f in LIVE}        # (rows,) inside - outside
for family in LIVE:
    print(f"{NAMES[family]:<8} inside - outside the window: {describe(*bootstrap_interval(edge[family]), unit='')}")
window_effect = bootstrap_interval(edge["griffin"] - edge["hawk"])
edge_is_window = "the drop at the edge is the window's"
print(f"Griffin's edge minus Hawk's: {describe(*window_effect, unit='')} -> "
      f"{verdict(*window_effect, above=edge_is_window, below='the opposite')}")
for side, mask in (("inside", inside), ("outside", ~inside)):
    diff = bootstrap_interval(split(right["griffin"], mask) - split(right["hawk"], mask))
    print(f"Griffin - Hawk on the answers {side} the window: {describe(*diff, unit='')}")

# %% [markdown]
# How to read it. Inside the window, Griffin's attention can read the data token itself, and Griffin should be
# right almost every time, whatever else the row holds. Outside, Griffin has only what its recurrent blocks kept
# (its attention still sees the answers written so far, which tells it *how many* have been written, but not the
# next one), so its accuracy should drop past the window's edge, the dotted line, while Hawk's falls smoothly with
# distance. The edge is a few positions soft: each recurrent block before the attention block starts with a Conv1D
# of width 4 (notebook 4), which can carry a token up to 3 positions forward, so the key at $s + 3$ (or $s + 6$
# after two such blocks) may still hold the token at $s$: the shaded band. A positive "edge minus Hawk's" interval
# says the drop is the window's, beyond what recency alone explains. This is Figure 6c's story in miniature:
# Griffin retrieves exactly what its window holds, and past it is a recurrent model. The cell below says what this
# run shows.

# %%
g_in, g_out = right["griffin"][inside].mean(), right["griffin"][~inside].mean()
h_in, h_out = right["hawk"][inside].mean(), right["hawk"][~inside].mean()
print(f"Accuracy inside and outside the window: Griffin {g_in:.2f} and {g_out:.2f}; Hawk {h_in:.2f} and {h_out:.2f}.")
print("The window's edge is " + ("visible: Griffin drops there more than recency alone explains."
                                 if window_effect[1] > 0 else
                                 "not separated from recency in this run (the interval covers 0 or is negative)."))
if g_out > h_in:
    print("Outside its window Griffin is still better than Hawk anywhere: its recurrent blocks, trained beside an "
          "attention block, have learned more of the task than Hawk's in the same steps.")

# %% [markdown]
# ## 5. Live: induction heads, a task that needs four bits (Figure 6b in small)
#
# The same two architectures trained at length $L$ = 16 (Griffin's window 8; with `MINIGRIFFIN_FULL_RUN=1`, the
# laptop preset's $L$ = 64), then scored on rows up to $32L$
# ([`copy_retrieval.sweep`](../minigriffin/copy_retrieval.py) gives the lengths,
# [`accuracy`](../minigriffin/copy_retrieval.py) scores them in chunks). Section 2 predicts that a recurrence can
# hold one symbol at any distance, *if* training taught it to hold it.

# %%
held_out = cr.task_batch("induction", IND, np.random.default_rng([0, 2]), IND["eval_rows"])
points = [(n, cr.task_batch("induction", IND, np.random.default_rng([0, 3, n]), IND["eval_rows"], n))
          for n, _, _ in cr.sweep("induction", IND)]
ind_acc, ind_cfg = {}, {}
for family in LIVE:
    cfg = cr.model_config(family, MODEL, "induction", IND)
    start = time.perf_counter()
    params, curve, loss, _ = cr.train_model(cfg, "induction", IND, LR, seed=0, device="cpu", held_out=held_out,
                                            log=quiet)
    ind_acc[family] = [cr.accuracy(params, cfg, b, np) for _, b in points]
    ind_cfg[family] = cfg
    print(f"{NAMES[family]:<8} trained in {time.perf_counter() - start:.1f} s with its evaluation; accuracy at "
          + ", ".join(f"{n}: {a.exact:.2f}" for (n, _), a in zip(points, ind_acc[family])))

# %%
fig, ax = plt.subplots(figsize=(6.5, 2.8))
xs = [n for n, _ in points]
for family in LIVE:
    label, colour, _ = STYLE[family]
    band = np.array([bootstrap_interval(a.row_exact)[1:] for a in ind_acc[family]])     # (lengths, 2)
    ax.plot(xs, [a.exact for a in ind_acc[family]], "o-", ms=3, color=colour, label=label)
    ax.fill_between(xs, band[:, 0], band[:, 1], color=colour, alpha=0.15, lw=0)
ax.axvline(IND["L"], color="grey", ls="--", lw=1, label=f"training length L = {IND['L']}")
ind_window = ind_cfg["griffin"].attention_window_size
ax.axvline(ind_window, color="C2", ls=":", lw=1, label=f"Griffin's window {ind_window}")
ax.axhline(cr.CHANCE["induction"], color="black", ls=":", lw=0.8, label="chance")
ax.set_xscale("log", base=2)
ax.set_xticks(xs, [str(n) for n in xs])
ax.minorticks_off()
ax.set_xlabel("evaluation length (tokens)")
ax.set_ylabel("accuracy")
ax.set_ylim(-0.03, 1.03)
ax.grid(alpha=0.3)
ax.legend(fontsize=7)
plt.show()
for family in LIVE:
    ok = [n for (n, _), a in zip(points, ind_acc[family]) if a.exact >= 0.9]
    print(f"{NAMES[family]}: accuracy >= 0.9 up to length {max(ok) if ok else 'none'}"
          + (f" = {max(ok) / IND['L']:g} L" if ok else ""))

# %% [markdown]
# Where to look: at the dotted line (Griffin's window) and at the dashed one ($L$). If Griffin stays right well past
# its window, its recurrent blocks hold the one symbol as Hawk's do, and the window is not what solves induction: a
# four-bit memory fits any state. Where the recurrent models fail, they fail gradually and far out, where states
# older than anything seen in training have to hold the symbol (notebook 6's problem again). A global-attention
# Transformer trained the same way meets key-query distances it never saw past $L$: the committed study below
# measures how it fares.

# %% [markdown]
# To be sure, the cell below keeps only the rows whose answer lies out of the window's reach (more than
# $W + 3 \times$ the recurrent blocks before the attention block back, section 4's shaded band) and scores both
# models on those rows alone.

# %%
reach = ind_window + 3 * ind_cfg["griffin"].block_types.index(ATTENTION)
beyond = {}
for k, (n, b) in enumerate(points):
    first = (b.tokens == special_token(V)).argmax(axis=1)                      # (rows,) the first special token
    far = (n - 2 - first) > reach                                              # (rows,) answer out of reach
    if far.sum() >= 10:
        beyond[n] = {f: np.asarray(ind_acc[f][k].row_exact)[far].mean() for f in LIVE}
        print(f"length {n:>4}: {far.sum():>3} rows with the answer more than {reach} tokens back: "
              + ", ".join(f"{NAMES[f]} {beyond[n][f]:.2f}" for f in LIVE))
n = min(beyond)
print(f"At length {n}, out of the window's reach, Griffin is right on {beyond[n]['griffin']:.2f} of the rows: "
      + ("its recurrence, not its window, does the recall there." if beyond[n]["griffin"] >= 0.9 else
         "it leans on its window more than its recurrence can make up for."))

# %% [markdown]
# ## 6. The committed laptop study
#
# `minigriffin experiment copy-retrieval --preset laptop` trains the MQA Transformer, Hawk and Griffin of Appendix H
# (5 blocks, width 64, about 250K parameters), and on the first two tasks Hawk and Griffin with the CG-LRU
# (Appendix B), on all three tasks; then it tests each of Figure 6's claims as a paired comparison on the same
# held-out rows ([`copy_retrieval_findings`](../minigriffin/copy_retrieval_findings.py)). The settings beside the
# paper's (lengths are shorter, steps far fewer; the ratios kept: Griffin's window $L/2$, evaluation lengths
# against $L$):

# %%
committed = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.is_file() else None
if committed is None:
    print(f"No committed results at {RESULTS_JSON.resolve()}: run the study as in section 8.")
else:
    print(f"{RESULTS_JSON.name}: preset {committed['preset']}, commit {committed['commit']}, seed {committed['seed']}, "
          f"{committed['wall_time_s'] / 60:.1f} min on {committed['machine']}")
    paper = {"selective-copy": "length 1,024, 16 data tokens, window 512, up to 100K steps",
             "induction": "trained at 256, window 128, evaluated far past 256",
             "phonebook": "pretrained 7B models, books up to 3,000 tokens, window 1,024"}
    rows = ["| task | the paper | here | Griffin's window |", "|---|---|---|---|"]
    for task, result in committed["tasks"].items():
        s = result["settings"]
        here = (f"books of {s['entries'][0]}-{s['entries'][1]} entries (up to {result['train_len']} tokens)"
                if task == "phonebook" else f"length {s['L']}" + (f", {s['data_tokens']} data tokens"
                                                                     if task == "selective-copy" else ""))
        window = next((m["window"] for m in result["models"] if m["window"]), None)
        rows.append(f"| {task} | {paper[task]} | {here}, {s['steps']} steps of {s['batch']} rows | {window} |")
    display(Markdown("\n".join(rows)))

# %% [markdown]
# Figure 6's three panels, drawn from the JSON: (a) held-out accuracy per copied token during training, (b)
# induction accuracy against evaluation length (log axis), (c) phonebook exact match against book length. Where the
# file holds per-row results (`row_token`, `row_exact`), each curve has its 95% bootstrap band over the held-out
# rows.

# %%
def band(points, rows_key):
    """(points, 2) bootstrap interval of each point's per-row values, or None if the file has none."""
    if not all(rows_key in p for p in points):
        return None
    return np.array([bootstrap_interval(p[rows_key])[1:] for p in points])


def panel(ax, result, sweep, key):
    """One task's curves: sweep "curve" (against steps) or "lengths" (against evaluation length)."""
    for m in result["models"]:
        label, colour, style = STYLE.get(m["family"], (m["label"], "C7", "-"))
        pts = m[sweep]
        x = [p["step" if sweep == "curve" else "length"] for p in pts]
        ax.plot(x, [p[key] for p in pts], style, marker="o", ms=2.5, color=colour, label=label)
        b = band(pts, "row_token" if key == "token_accuracy" else "row_exact")
        if b is not None:
            ax.fill_between(x, b[:, 0], b[:, 1], color=colour, alpha=0.12, lw=0)
    ax.axhline(result["chance"], color="black", ls=":", lw=0.8)
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)


def marks(ax, result):
    """Training length (dashed; phonebook: the range of training books shaded) and Griffin's window (dotted)."""
    L, lo = result["train_len"], result["train_lengths"][0]
    if lo < L:
        ax.axvspan(lo, L, color="grey", alpha=0.12)
    ax.axvline(L, color="grey", ls="--", lw=1, label=f"training length {L}")
    window = next((m["window"] for m in result["models"] if m["window"]), None)
    if window:
        ax.axvline(window, color="C2", ls=":", lw=1, label=f"Griffin's window {window}")


if committed is not None:
    tasks = committed["tasks"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    if "selective-copy" in tasks:
        panel(axes[0], tasks["selective-copy"], "curve", "token_accuracy")
        axes[0].set_xlabel("training step")
        axes[0].set_ylabel("accuracy per copied token")
    if "induction" in tasks:
        panel(axes[1], tasks["induction"], "lengths", "exact_match")
        marks(axes[1], tasks["induction"])
        xs = [p["length"] for p in tasks["induction"]["models"][0]["lengths"]]
        axes[1].set_xscale("log", base=2)
        axes[1].set_xticks(xs, [str(n) for n in xs], fontsize=7)
        axes[1].minorticks_off()
        axes[1].set_xlabel("evaluation length (tokens)")
        axes[1].set_ylabel("accuracy")
    if "phonebook" in tasks:
        panel(axes[2], tasks["phonebook"], "lengths", "exact_match")
        marks(axes[2], tasks["phonebook"])
        axes[2].set_xlabel("book length (tokens)")
        axes[2].set_ylabel("exact match (every digit)")
    for ax, title in zip(axes, ("(a) selective copying", "(b) induction heads", "(c) phonebook lookup")):
        ax.set_title(title)
        ax.legend(fontsize=6)
    fig.suptitle(f"Figure 6 from {RESULTS_JSON.name} ({committed['preset']} preset); dotted black: chance",
                 fontsize=10)
    fig.tight_layout()
    plt.show()

# %% [markdown]
# ### The verdicts
#
# Each claim is a paired difference, second model minus first, on the same held-out rows, with a 95% bootstrap
# interval over rows. "yes": the whole interval has the paper's sign; "no": the whole interval has the other sign;
# "not shown": it covers 0. A claim of *no* difference ("about as fast", "both solve it") holds when the interval
# covers 0, which few rows make easy: read its width. The table is the one the study writes into its
# `copy-retrieval.md` ([`findings_markdown`](../minigriffin/copy_retrieval_findings.py)).

# %%
records = None
if committed is not None:
    has_rows = all("row_exact" in p for r in committed["tasks"].values() for m in r["models"] for p in m["lengths"])
    records = committed.get("findings")
    if records is None and has_rows:
        records = copy_retrieval_findings(committed)                # an older file: the verdicts computed here
    if records is None:
        print("This results file has no per-row results, so its claims cannot be tested: rerun the study (section 8).")
    else:
        display(Markdown(findings_markdown(records, NAMES)))

# %% [markdown]
# What matches the paper and what does not, read from those verdicts (the sentences are computed, so they stay true
# when the study is rerun):

# %%
SIGN = {(task, first, second, claim): sign for task, _, (first, second), sign, claim in CLAIMS}


def says(r):
    """One sentence about one verdict record."""
    a, b = NAMES.get(r["first"], r["first"]), NAMES.get(r["second"], r["second"])
    numbers = (f"{b} {r['second_accuracy']:.2f} against {a} {r['first_accuracy']:.2f}, difference "
               f"{describe(*r['difference'], unit='')}")
    if r["holds"] == "no claim":
        return (f"*{r['task']}, {r['where']}*: no claim in the paper ({r['claim'][7:]}); here "
                f"{verdict(*r['difference'], above=f'{b} is better', below=f'{a} is better')} ({numbers}).")
    if SIGN.get((r["task"], r["first"], r["second"], r["claim"])) == 0:       # a claim of no difference
        low, high = r["difference"][1:]
        reading = (f"**matches the paper** (no difference shown; the interval is {high - low:.2f} wide)"
                   if r["holds"] == "yes" else "**does not hold**: the two differ")
        if "solve" in r["claim"] and max(r["first_accuracy"], r["second_accuracy"]) < 0.9:
            reading += ", but neither model solves it here (both below 0.9)"
    else:
        reading = {"yes": "**matches the paper**", "no": "**the opposite of the paper**",
                   "not shown": "**not shown** at this size (the interval covers 0)"}[r["holds"]]
    return f"*{r['task']}, {r['where']}*: \"{r['claim']}\" {reading}: {numbers}."


if records:
    tally = {h: sum(r["holds"] == h for r in records) for h in ("yes", "no", "not shown")}
    display(Markdown(f"{sum(tally.values())} claims tested: {tally['yes']} shown, {tally['no']} contradicted, "
                     f"{tally['not shown']} not shown.\n\n" + "\n".join(f"* {says(r)}" for r in records)))

# %% [markdown]
# And the numbers behind Figure 6's three shapes, read from the curves:

# %%
def longest_good(m, level=0.9):
    """The longest evaluation length at which a model's accuracy is at least `level`, or None."""
    good = [p["length"] for p in m["lengths"] if p["exact_match"] >= level]
    return max(good) if good else None


if committed is not None:
    lines = []
    if "selective-copy" in tasks:
        r = tasks["selective-copy"]
        lines.append("**Selective copying** after the last step (exact match, per token): " + "; ".join(
            f"{NAMES[m['family']]} {m['curve'][-1]['exact_match']:.2f} ({m['curve'][-1]['token_accuracy']:.2f})"
            for m in r["models"]) + ".")
    if "induction" in tasks:
        r = tasks["induction"]
        L_train = r["train_len"]
        parts = []
        for m in r["models"]:
            n = longest_good(m)
            last = m["lengths"][-1]
            parts.append(f"{NAMES[m['family']]} up to {f'{n} ({n / L_train:g} L)' if n else 'no length'}, "
                         f"{last['exact_match']:.2f} at {last['length']}")
        lines.append(f"**Induction heads**, trained at L = {L_train}: accuracy at least 0.9 " + "; ".join(parts)
                     + ".")
    if "phonebook" in tasks:
        r = tasks["phonebook"]
        window = next((m["window"] for m in r["models"] if m["window"]), None)
        fits = [p["length"] for p in r["models"][0]["lengths"] if window and p["length"] <= window]
        parts = []
        for m in r["models"]:
            acc = {p["length"]: p["exact_match"] for p in m["lengths"]}
            parts.append(f"{NAMES[m['family']]} " + ", ".join(f"{acc[n]:.2f}" for n in sorted(acc)))
        lines.append(f"**Phonebook**, exact match at book lengths {', '.join(str(n) for n in sorted(acc))} tokens "
                     f"(Griffin's window {window}; books that fit inside it: "
                     f"{', '.join(map(str, fits)) or 'none'}; longest training book {r['train_len']}): "
                     + "; ".join(parts) + ".")
    display(Markdown("\n\n".join(lines)))

# %% [markdown]
# How to read them against the paper:
#
# * **Selective copying (6a).** The paper: all three solve it, Hawk far more slowly, Griffin about as fast as the
#   Transformer. At laptop scale the runs are short, so "solve" may not be reached by anyone; the learning-speed
#   claims (the "mean over training" rows) are the ones the budget can test. Section 2's argument says why Hawk is
#   slow: it must pack every data token into its state, while attention reads them back from the cache.
# * **Induction heads (6b).** The paper: the Transformer fails past its training length, Hawk and Griffin
#   extrapolate. One symbol fits in any state, so a recurrence *can* extrapolate; whether it does depends on
#   training having taught it to hold the symbol over long gaps. If Griffin here stops near $L$ while Hawk goes
#   further, Griffin has learned to lean on its attention for recent symbols and on a recurrence that was never
#   asked to hold them long: a difference from the paper that longer training at the paper's length may remove.
#   The live models of section 5, trained at a much shorter $L$, show what happens when both recurrences do learn
#   to hold the symbol.
# * **Phonebook (6c).** The paper: the Transformer perfect up to its training length, Griffin perfect up to its
#   window and degrading after, Hawk only for tiny books. At laptop scale the models are trained from scratch on tiny
#   books and fall short of "perfect"; the shape to look for is Griffin's exact match high on books that fit inside
#   its window and falling as the queried entry moves out of it, as in section 4, and Hawk falling with every entry
#   added, as section 2 predicts.
# * **The CG-LRU** (Appendix B) has no claim in Figure 6; the paper reports only that complex recurrences did not
#   help language modelling. Its rows say whether it helps or hurts these tasks here.
#
# [docs/results.md](../docs/results.md) interprets the current numbers.

# %% [markdown]
# ## 7. Your turn
#
# **1. Widen Griffin's window after training.** The selective-copying Griffin of section 3 was trained with a window
# of $L/2$. Give it a window of $L$ at evaluation only (every data token is then inside it), without retraining.
# **Predict first**: does its accuracy on the answers that were outside the window rise to the inside level, stay
# where it was, or fall? Think about what its attention has learned about distances it never saw (RoPE encodes
# them, and the training rows never asked it to attend further than $W$). Then run the cell. For the retrained
# version, set `retrain = True` (a few more seconds): a Griffin trained with a window of $L$ from the start.

# %%
retrain = False
params, cfg, _ = sc_models["griffin"]
wide = dataclasses.replace(cfg, attention_window_size=L)
if retrain:
    params, _, _, _ = cr.train_model(wide, "selective-copy", SC, LR, seed=0, device="cpu", held_out=sc_held_out,
                                     log=quiet)
logits, _ = model_forward(params, test.tokens, test.segment_pos, wide)                  # (rows, L, V)
wide_right = (np.asarray(logits).argmax(-1)[:, P:] == test.targets[:, P:]).astype(float)   # (rows, N)
print(f"window {W} -> {L}{' (retrained)' if retrain else ' (evaluation only)'}: answers that were outside the "
      f"window {right['griffin'][~inside].mean():.2f} -> {wide_right[~inside].mean():.2f}, inside "
      f"{right['griffin'][inside].mean():.2f} -> {wide_right[inside].mean():.2f} (accuracy)")
change = bootstrap_interval(split(wide_right, ~inside) - split(right["griffin"], ~inside))
print(f"paired change on the answers outside the old window: {describe(*change, unit='')} -> "
      f"{verdict(*change, above='a wider window helps', below='a wider window hurts')}")

# %% [markdown]
# **2. Count a phonebook's bits.** Section 2's argument in numbers: a model that reads the book before it sees the
# query must keep every number (and which name it belongs to). **Predict first**: with the study's `gpu` preset
# format (2-syllable names, 4-digit numbers), how many bits do the numbers of a book of 1,024 tokens hold, and
# how many entries is that? Change `syllables` and `digits` and watch the row length and the bits move.

# %%
syllables, digits = 2, 4
for entries in (10, 50, 100, 300):
    tokens = phonebook_length(entries, name_syllables=syllables, number_digits=digits)
    print(f"{entries:>4} entries: {tokens:>5,} tokens; the numbers alone hold "
          f"{entries * digits * math.log2(10):>7,.0f} bits, the names {entries * math.log2(105 ** syllables):>7,.0f} "
          f"more")

# %% [markdown]
# (Answers, once you have run them. Exercise 1: the model meets, at evaluation, keys at distances its attention was
# never trained on, and more keys compete for each query; unless it was retrained with the wider window, nothing
# taught it to use them, and it can lose what it had. Exercise 2: with 4 digits each entry's number is about 13
# bits, and a line is 10 tokens, so a book holds about 1.3 bits of numbers per token of text. A window of $W$ tokens
# holds about $W / 10$ whole entries verbatim; a state has to fit all of them.)

# %% [markdown]
# ## 8. Re-running the study
#
# ```sh
# minigriffin experiment copy-retrieval --preset laptop                     # all three tasks, about 30 minutes
# minigriffin experiment copy-retrieval --preset laptop --task induction    # one of them
# minigriffin experiment copy-retrieval --preset gpu --device gpu           # the paper's lengths
# ```
#
# Each writes `copy-retrieval-<task>.png` and `.csv`, `copy-retrieval.md` and `copy-retrieval.json` into `--out`
# (default `runs/copy-retrieval-<preset>/`), and every final model under its `runs/<task>/<model>/`. Copy the
# JSON into `docs/results/` to update section 6, or point this notebook at it with
# `MINIGRIFFIN_COPY_RETRIEVAL_JSON=path/to/copy-retrieval.json` set before starting Jupyter. The `tiny` preset
# runs the whole pipeline in seconds (models that learn nothing: it checks the mechanics).
#
# Previous: [long context](06_long_context.ipynb), [decoding cost](07_decoding_cost.ipynb) (the other side of a
# fixed-size state: it is what makes decoding cheap).
