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
# # 11. Training dynamics: three families side by side, and what the RG-LRU learns
#
# Paper: [De, Smith et al. 2024, "Griffin", arXiv 2402.19427](https://arxiv.org/abs/2402.19427), §3 (Hawk, Griffin
# and the MQA Transformer of each size trained on the same number of tokens, Table 2; held-out loss against training
# FLOPs in Figure 1(a)), §2.4 (the RG-LRU, eqs. 1-4, and its initialisation). Docs:
# [docs/results.md](../docs/results.md) (the laptop-scale studies), [docs/architecture.md](../docs/architecture.md).
#
# Two questions, on a model small enough to train here in seconds:
#
# 1. **How do the three families learn?** Hawk (all recurrent blocks), Griffin (recurrent, recurrent, local
#    attention) and the MQA Transformer (global attention) of the same width and depth, trained on the same batches,
#    in the same order, with the same optimiser settings: equal tokens, as in the paper's scaling comparison.
# 2. **What does training do to the RG-LRU?** Each channel's decay $a = \sigma(\Lambda)$ (the package stores
#    $\texttt{a\_param} = -\Lambda$, so $a = \sigma(-\texttt{a\_param})$) starts spread over $[0.9, 0.999]$
#    (notebook 2). We compare the decay rates and the gates' activity on held-out text before and after training.
#
# The text is the books corpus when one is available (`MINIGRIFFIN_BOOKS`, else the download cache of
# `minigriffin download`, as in notebooks 5 and 6); without books, a small built-in text generated below, so the
# notebook always runs. The training is `minigriffin train`'s own `Trainer`
# ([minigriffin/train.py](../minigriffin/train.py)), the loop whose single step notebook 9 writes out.

# %%
import os
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from minigriffin.config import TrainConfig, make_config
from minigriffin.data import default_cache_dir, eval_batches, load_corpus, unigram_entropy
from minigriffin.model import model_forward
from minigriffin.params import count_params
from minigriffin.plots import read_metrics
from minigriffin.rglru import C, softplus
from minigriffin.train import Trainer
from minigriffin.tree import tree_map

# Unset: small sizes that run in seconds. MINIGRIFFIN_FULL_RUN=1: the sizes quoted in the text.
FULL_RUN = os.environ.get("MINIGRIFFIN_FULL_RUN") == "1"
plt.rcParams.update({"figure.dpi": 72, "savefig.dpi": 72, "font.size": 9})
WORK = Path(tempfile.mkdtemp(prefix="minigriffin-nb11-"))

BOOKS = Path(os.environ.get("MINIGRIFFIN_BOOKS") or default_cache_dir() / "books").expanduser()
HAVE_BOOKS = BOOKS.is_dir() and ((BOOKS / "train").is_dir() or any(BOOKS.glob("*.txt")))


def builtin_text(n_sentences, seed):
    """A small generated text: sentences from a toy grammar, so there is something to learn beyond byte counts."""
    rng = np.random.default_rng(seed)
    words = [["The", "A", "Every", "That", "My", "Her"], ["old", "quiet", "bright", "tired", "young", ""],
             ["sailor", "farmer", "captain", "dog", "queen", "stranger", "teacher"],
             ["walked", "waited", "sang", "slept", "laughed", "looked"],
             ["by the river", "in the garden", "at the harbour", "on the hill", "after dinner", "at night"]]
    sentences = [" ".join(w for w in (group[rng.integers(len(group))] for group in words) if w) + "."
                 for _ in range(n_sentences)]
    return "\n".join(" ".join(sentences[i:i + 5]) for i in range(0, n_sentences, 5)) + "\n"   # paragraphs


if HAVE_BOOKS:
    DATA = BOOKS
    corpus = load_corpus(BOOKS)
    print("books from", "$MINIGRIFFIN_BOOKS" if os.environ.get("MINIGRIFFIN_BOOKS") else "the download cache")
else:
    DATA = WORK / "builtin"
    for split, n_books in (("train", 6), ("valid", 2)):
        (DATA / split).mkdir(parents=True)
        for k in range(n_books):
            (DATA / split / f"{split}{k}.txt").write_text(builtin_text(600, seed=100 * (split == "valid") + k))
    corpus = load_corpus(DATA, cache_dir=WORK / "cache")
    print(f"no books: using the built-in text ({corpus.train.tokens.shape[0]:,} training bytes). "
          f"Set MINIGRIFFIN_BOOKS or run `minigriffin download` for real text.")
print(f"train {corpus.train.tokens.shape[0]:,} bytes in {len(corpus.train.names)} documents, "
      f"valid {corpus.valid.tokens.shape[0]:,} bytes in {len(corpus.valid.names)}")

# %% [markdown]
# ## Three models, equal tokens
#
# Same width $D$, depth, MLP and RG-LRU widths for all three; only the temporal blocks differ. At the small size:
# $D = 64$, three blocks, 160 steps of $8 \times 64$ bytes (81,920 tokens each, a few seconds per model). With
# `MINIGRIFFIN_FULL_RUN=1`: the `-small` presets ($D = 256$, six blocks, about 5M parameters), 500 steps of
# $8 \times 128$ bytes (several minutes per model on a 2-core laptop).
#
# One seed for all three: the same data-sampler seed means every model sees exactly the same batches in the same
# order, so the curves differ only through the architecture (and the parameter draw it implies). Two worker threads
# split each batch (`cpu_workers=2`) on every machine, so the sums run in the same order and the run reproduces.

# %%
if FULL_RUN:
    sizes = dict(width=256, lru_width=256, mlp_expanded_width=768, num_heads=4, attention_window_size=128)
    depth, train_cfg = 6, TrainConfig(batch_size=8, seq_len=128, max_steps=500, lr=3e-3, min_lr=3e-4,
                                      warmup_steps=30, eval_every=50, eval_batches=4, checkpoint_every=500,
                                      cpu_workers=2)
else:
    sizes = dict(width=64, lru_width=64, mlp_expanded_width=192, num_heads=2, attention_window_size=32)
    depth, train_cfg = 3, TrainConfig(batch_size=8, seq_len=64, max_steps=160, lr=5e-3, min_lr=5e-4,
                                      warmup_steps=16, eval_every=20, eval_batches=2, checkpoint_every=160,
                                      cpu_workers=2)
configs = {family: make_config(f"{family}-tiny", **sizes,
                               block_types=make_config(f"{family}-small").block_types[:depth])
           for family in ("hawk", "griffin", "mqa")}
for family, cfg in configs.items():
    attention = {"hawk": "none", "griffin": f"local, window {cfg.window}", "mqa": "global"}[family]
    print(f"{family:8s} {count_params(cfg):>9,} parameters  blocks {''.join(t[0].upper() for t in cfg.block_types)}"
          f"  attention: {attention}")
tokens_per_model = train_cfg.batch_size * train_cfg.seq_len * train_cfg.max_steps
print(f"each model trains on {tokens_per_model:,} tokens")

# %%
trained, initial, wall = {}, {}, {}
for family, cfg in configs.items():
    trainer = Trainer(WORK / family, cfg, train_cfg, str(DATA), corpus)
    trainer.start_fresh()                                           # parameters drawn from train_cfg.seed
    initial[family] = tree_map(np.copy, trainer.params)             # kept: the run updates in place
    start = time.perf_counter()
    trainer.run(log=lambda *args, **kwargs: None)                   # quiet; metrics.jsonl has every step
    wall[family] = time.perf_counter() - start
    trained[family] = trainer.params
    print(f"{family:8s} trained in {wall[family]:5.1f} s")

# %% [markdown]
# ## The loss curves
#
# The training loss of every step (faint), its running mean over 10 steps, and the validation loss on the same fixed
# held-out windows for all three (markers). The x-axis counts training tokens, the same for every model. The grey
# line is the unigram entropy of the validation text: the loss of the best model that ignores context.

# %%
fig, ax = plt.subplots(figsize=(7, 3.8))
final_val = {}
for k, family in enumerate(configs):
    records = read_metrics(WORK / family)
    tokens_seen = np.array([r["step"] for r in records]) * train_cfg.batch_size * train_cfg.seq_len
    loss = np.array([r["loss"] for r in records])
    smooth = np.convolve(loss, np.ones(10) / 10, mode="valid")
    val = np.array([(r["step"], r["val_loss"]) for r in records if "val_loss" in r])   # (n_evals, 2)
    final_val[family] = val[-1, 1]
    ax.plot(tokens_seen, loss, color=f"C{k}", alpha=0.2, lw=0.8)
    ax.plot(tokens_seen[9:], smooth, color=f"C{k}", label=f"{family}, training (mean of 10 steps)")
    ax.plot(val[:, 0] * train_cfg.batch_size * train_cfg.seq_len, val[:, 1], "o--", color=f"C{k}", ms=4,
            lw=0.8, label=f"{family}, validation")
entropy = unigram_entropy(corpus.valid)
ax.axhline(entropy, color="grey", ls="--", lw=0.8, label="unigram entropy (no context)")
ax.set_xlabel("training tokens")
ax.set_ylabel("cross-entropy (nats per byte)")
ax.set_ylim(top=min(ax.get_ylim()[1], entropy + 0.6))
ax.set_title("Hawk, Griffin and MQA on the same batches")
ax.legend(fontsize=7, ncol=2, loc="upper right")
plt.show()
for family in sorted(configs, key=final_val.get):
    print(f"{family:8s} final validation loss {final_val[family]:.3f} nats per byte "
          f"({final_val[family] - entropy:+.3f} from the unigram entropy), trained in {wall[family]:.1f} s")

# %% [markdown]
# How to read it: the list above ranks the models by their last validation loss, but the gaps come from one seed,
# a few seconds of training and a handful of validation windows, so they are not a result about the architectures.
# The paper's comparison (held-out loss against training FLOPs, §3.1 and Figure 1(a): the three families scale
# alike, Griffin slightly below the Transformer) is about models of 100M to 14B parameters trained on billions of
# tokens; [docs/results.md](../docs/results.md) reports what the laptop scale shows, with paired statistics. One
# plausible reason for a gap at this tiny size: the recurrent blocks' Conv1D hands them the last four bytes from
# the first step (notebook 9), while attention must learn where to look.
#
# ## The RG-LRU's decay rates, before and after
#
# Each channel of each recurrent layer has one parameter, `a_param`. The decay applied at step $t$ is
# $a_t = a^{c r_t}$ (eq. 3, $c = 8$), between $a^c$ (gate $r_t = 1$: the fastest forgetting this channel can do) and
# 1 ($r_t = 0$: keep everything). We plot the channel's *timescale at $r_t = 1$*,
# $\tau = -1 / \log(a^c) = 1 / (c \operatorname{softplus}(\texttt{a\_param}))$ tokens: how long the channel
# remembers when its gate is fully open, on shared logarithmic bins for the start and the end of training.
# The RG-LRU's parameters get no weight decay (notebook 9), so only the gradient moves them.

# %%
def recurrent_layers(params):
    """The RG-LRU parameters of every recurrent block, in order."""
    return [b["recurrent_block"]["rg_lru"] for b in params["blocks"] if "recurrent_block" in b]


def timescale(a_param):
    """tau = -1 / log(a^c) in tokens: the memory of a channel whose recurrence gate is fully open (r_t = 1)."""
    return 1.0 / (C * softplus(a_param.astype(np.float64)))


tau = {(family, when): np.concatenate([timescale(p["a_param"]) for p in recurrent_layers(params)])
       for family in ("hawk", "griffin") for when, params in (("init", initial[family]), ("end", trained[family]))}
bins = np.geomspace(min(v.min() for v in tau.values()) / 1.2, max(v.max() for v in tau.values()) * 1.2, 30)
fig, axes = plt.subplots(1, 3, figsize=(10, 3.2))
for ax, family in zip(axes[:2], ("hawk", "griffin")):
    ax.hist(tau[family, "init"], bins=bins, histtype="stepfilled", color="grey", alpha=0.4, label="initialisation")
    ax.hist(tau[family, "end"], bins=bins, histtype="step", color="C0" if family == "hawk" else "C1", lw=1.5,
            label="after training")
    ax.set_xscale("log")
    ax.set_xlabel("timescale at r = 1, tokens")
    ax.set_ylabel("channels")
    ax.set_title(f"{family}: {tau[family, 'init'].size} RG-LRU channels")
    ax.legend(fontsize=7)
ax = axes[2]
for family, color in (("hawk", "C0"), ("griffin", "C1")):
    ax.semilogx(tau[family, "init"], tau[family, "end"] / tau[family, "init"], ".", ms=3, color=color, label=family)
ax.axhline(1.0, color="grey", lw=0.8, ls=":", label="unchanged")
ax.set_xlabel("timescale at initialisation, tokens")
ax.set_ylabel("after / before training")
ax.set_title("each channel: how much its timescale moved")
ax.legend(fontsize=7)
plt.tight_layout()
plt.show()
for family in ("hawk", "griffin"):
    ratio = tau[family, "end"] / tau[family, "init"]
    print(f"{family:8s} timescale at r = 1: median {np.median(tau[family, 'init']):.2f} -> "
          f"{np.median(tau[family, 'end']):.2f} tokens; a fraction {np.mean(ratio < 1):.2f} of the channels got "
          f"shorter; largest changes x{ratio.max():.2f} and x{ratio.min():.2f}")

# %% [markdown]
# The initialisation draws $a^2$ uniformly in $[0.9^2, 0.999^2]$, so $\tau$ at $r_t = 1$ starts between
# $1/(8 \cdot 0.105) \approx 1.2$ and $1/(8 \cdot 0.001) \approx 125$ tokens, piled up at the short end (grey). Adam
# moves every `a_param` by roughly the learning rate per step (notebook 9), so in a short run the channels can only
# drift by a modest factor: the right panel shows, channel by channel, how far and which way (the printed lines
# count them). A run at the full size trains longer and moves them further.
#
# ## The gates on held-out text
#
# The decay rate is only half of it: $a_t = a^{c r_t}$ also depends on the recurrence gate $r_t$, and the input
# gate $i_t$ scales what enters the state. Both are computed from the input at every position (eqs. 1-2), so we
# measure them by running the models on held-out windows (the validation split), before and after training, and
# read them from the forward pass's cache (`cache.blocks[i].temporal.rglru`, the values the backward uses).

# %%
held_out = eval_batches(corpus.valid, 16, train_cfg.seq_len, 1, seed=123)[0]   # 16 held-out windows, (16, T)


def gate_stats(params, cfg):
    """Per recurrent layer: the RG-LRU cache of a forward pass on the held-out batch (r_t, i_t, a_t: (B, T, E))."""
    _, cache = model_forward(params, held_out.tokens, held_out.segment_pos, cfg)
    return [c.temporal.rglru for c in cache.blocks if c.kind == "recurrent"]


stats = {(family, when): gate_stats(params, configs[family])
         for family in ("hawk", "griffin") for when, params in (("init", initial[family]), ("end", trained[family]))}
fig, axes = plt.subplots(1, 3, figsize=(10, 3.2))
for ax, (name, field) in zip(axes, (("recurrence gate r_t", "gate_a"), ("input gate i_t", "gate_x"),
                                    ("decay a_t = a^(c r_t)", "a"))):
    per_channel = {(family, when): np.concatenate([getattr(c, field).mean(axis=(0, 1)) for c in stats[family, when]])
                   for family, when in stats}                          # (channels,) mean over B and T
    values = np.concatenate(list(per_channel.values()))
    gate_bins = np.linspace(values.min(), values.max(), 31)            # one set of bins for all four histograms
    for family, color in (("hawk", "C0"), ("griffin", "C1")):
        for when, style in (("init", ":"), ("end", "-")):
            ax.hist(per_channel[family, when], bins=gate_bins, histtype="step", ls=style, color=color, lw=1.3,
                    label=f"{family}, {'initialisation' if when == 'init' else 'trained'}")
    ax.set_xlabel(f"mean {name} per channel")
    ax.set_title(name)
axes[0].set_ylabel("channels")
axes[0].legend(fontsize=7)
plt.tight_layout()
plt.show()
print("layer               mean r_t         mean i_t         median a_t")
for family in ("hawk", "griffin"):
    for layer, (c0, c1) in enumerate(zip(stats[family, "init"], stats[family, "end"])):
        print(f"{family:8s} RG-LRU {layer}   {c0.gate_a.mean():.3f} -> {c1.gate_a.mean():.3f}   "
              f"{c0.gate_x.mean():.3f} -> {c1.gate_x.mean():.3f}   "
              f"{np.median(c0.a):.3f} -> {np.median(c1.a):.3f}")

# %% [markdown]
# At initialisation the gates' weights are random and their biases zero, so each gate sits near 0.5 on average
# (dotted), and $a_t \approx a^4$. Whatever moved after training (solid) was learned from the text: a channel
# whose mean $r_t$ falls keeps its state for longer than at initialisation; one whose mean $i_t$ falls lets in less.
# How the initial range of $a$ matters at the laptop scale (a decay initialised nearer 1, `--lru_min_rad=0.99
# --lru_max_rad=0.9999`, trains worse there) is in [docs/results.md](../docs/results.md).
#
# ## Your turn: read further than trained
#
# Every model above was trained on windows of $L$ = `train_cfg.seq_len` bytes. Feed held-out windows four times as
# long, and average the loss at each position $t$ (the model has $t$ bytes of context there). The text at each
# position differs (16 windows only), so the curves are noisy and their ups and downs are shared: compare the models
# at the same position, not one curve's height across positions (notebook 6 shows how to test that properly).
#
# **Predict first.** Past position $L$, the MQA Transformer meets query-key distances it never saw in training
# (global attention with RoPE); Hawk meets states built over more bytes than it ever saw; Griffin's attention sees
# at most $W$ bytes back, as in training. Which curves rise past $L$, which stay flat, which keep falling? Write it
# down (notebook 6 and [docs/results.md](../docs/results.md) ask the same at the laptop scale), then run the cell.

# %%
long_windows = eval_batches(corpus.valid, 16, 4 * train_cfg.seq_len, 1, seed=7)[0]   # (16, 4L)


def loss_per_position(params, cfg, batch):
    """Mean next-byte loss at each position of the batch's windows: (T,), NaN where every row is masked."""
    logits, _ = model_forward(params, batch.tokens, batch.segment_pos, cfg)          # (B, T, V)
    shifted = logits - logits.max(axis=-1, keepdims=True)                              # (B, T, V)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))          # (B, T, V)
    loss = -np.take_along_axis(log_probs, batch.targets[..., None], axis=-1)[..., 0]   # (B, T)
    return (loss * batch.mask).sum(axis=0) / batch.mask.sum(axis=0)                   # (T,)


def plot_positions(curves, title):
    """Loss against position, smoothed over 8 positions, with the training length marked."""
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    for k, (name, curve) in enumerate(curves.items()):
        ax.plot(np.arange(4, curve.size - 3), np.convolve(curve, np.ones(8) / 8, mode="valid"), label=name,
                color=f"C{k}")
    ax.axvline(train_cfg.seq_len, color="grey", ls=":", lw=0.8, label="training length L")
    ax.set_xlabel("position t in the window (bytes of context)")
    ax.set_ylabel("loss, mean of 16 windows")
    ax.set_title(title)
    ax.legend(fontsize=7)
    plt.show()
    L = train_cfg.seq_len
    for name, curve in curves.items():
        print(f"{name:22s} mean loss at t in [L/2, L): {np.nanmean(curve[L // 2:L]):.3f}   "
              f"[L, 2L): {np.nanmean(curve[L:2 * L]):.3f}   [2L, 4L): {np.nanmean(curve[2 * L:]):.3f}")


curves = {family: loss_per_position(trained[family], cfg, long_windows) for family, cfg in configs.items()}
plot_positions(curves, f"trained on L = {train_cfg.seq_len}, read to 4L")

# %% [markdown]
# ### Your turn: give MQA a window of L/2
#
# **Predict first.** Train the MQA Transformer again on the same batches, but with *local* attention of window
# $L/2$ (each query sees only the $L/2$ bytes before it, in training and after). Does local attention alone,
# without any recurrent block, read past $L$ without its loss rising? Is it better or worse than global MQA
# within $L$? The cell trains it (a few seconds) and adds it to the plot.

# %%
local_mqa = make_config("mqa-tiny", **{**sizes, "attention_window_size": train_cfg.seq_len // 2},
                        block_types=configs["mqa"].block_types, global_attention=False)
trainer = Trainer(WORK / "mqa-local", local_mqa, train_cfg, str(DATA), corpus)
trainer.start_fresh()
trainer.run(log=lambda *args, **kwargs: None)
curves[f"mqa, window L/2 = {local_mqa.window}"] = loss_per_position(trainer.params, local_mqa, long_windows)
plot_positions(curves, "the same, with local MQA added")
