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
# # 5. Training on books
#
# Paper: [De, Smith et al. 2024, "Griffin", arXiv 2402.19427](https://arxiv.org/abs/2402.19427), §3. Docs: [docs/architecture.md](../docs/architecture.md), [docs/reliability.md](../docs/reliability.md).
#
# A small Griffin learns to write English, byte by byte, from public-domain books. This notebook looks at the
# training data, runs a short training with the same code path as `minigriffin train`, draws the loss curve and
# samples from the result.
#
# The books folder comes from the environment variable `MINIGRIFFIN_BOOKS`; without it, the download cache that
# `minigriffin download` fills (31 books from Project Gutenberg, ~32 MB, into `~/.cache/minigriffin/books`).
# The training loop is in [minigriffin/train.py](../minigriffin/train.py); one step is drawn in
# [docs/architecture.md](../docs/architecture.md).

# %% tags=["text-varies"]
import os
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from minigriffin.checkpoint import load_checkpoint
from minigriffin.cli import main as minigriffin
from minigriffin.config import config_from_dict
from minigriffin.data import ByteTokenizer, default_cache_dir, load_corpus, sample_batch, unigram_entropy
from minigriffin.plots import read_metrics
from minigriffin.sample import generate

# Unset: small sizes that run in seconds. MINIGRIFFIN_FULL_RUN=1: the sizes quoted in the text.
FULL_RUN = os.environ.get("MINIGRIFFIN_FULL_RUN") == "1"
plt.rcParams.update({"figure.dpi": 72, "savefig.dpi": 72, "font.size": 9})

BOOKS = Path(os.environ.get("MINIGRIFFIN_BOOKS") or default_cache_dir() / "books").expanduser()
HAVE_BOOKS = BOOKS.is_dir() and ((BOOKS / "train").is_dir() or any(BOOKS.glob("*.txt")))
if HAVE_BOOKS:
    where = "$MINIGRIFFIN_BOOKS" if os.environ.get("MINIGRIFFIN_BOOKS") else str(BOOKS).replace(str(Path.home()), "~")
    print(f"books: {where}")
else:
    print(f"NO BOOKS at {BOOKS.resolve()}: this notebook needs a folder of .txt books. Set MINIGRIFFIN_BOOKS to "
          f"one, or run `minigriffin download` and point MINIGRIFFIN_BOOKS at the folder it prints. "
          f"The cells below do nothing until then.")

# %% [markdown]
# ## The data
#
# Tokens are UTF-8 bytes (vocabulary 256): no tokenizer to train, nothing unknown. Each book is one document; a
# split's books are concatenated into one stream and memmapped from a cache, so loading is instant after the first
# time. A training batch is $B$ random windows of $T$ bytes with their next-byte targets; `segment_pos` is each
# byte's position within its own book (0 where a new book starts: the RG-LRU, the Conv1D and the attention all reset
# there), and `mask` drops the one target per boundary that would ask a book's last byte to predict the next book's
# first.
#
# The unigram entropy of the validation books, the loss of the best model that ignores context, is a useful line to
# beat.

# %%
if HAVE_BOOKS:
    corpus = load_corpus(BOOKS)
    for split in (corpus.train, corpus.valid):
        print(f"{split.name}: {len(split.doc_starts) - 1} books, {split.tokens.shape[0]:,} bytes")
    entropy = unigram_entropy(corpus.valid)
    print(f"unigram entropy of valid: {entropy:.3f} nats per byte (uniform over 256 bytes: {np.log(256):.3f})")
    batch = sample_batch(corpus.train, 4, 64, np.random.default_rng(0))
    print({name: arr.shape for name, arr in batch._asdict().items()})
    print("row 0:", repr(ByteTokenizer().decode(batch.tokens[0])))
    print("positions in its book:", batch.segment_pos[0, 0], "...", batch.segment_pos[0, -1])

# %% [markdown]
# ## A short training run
#
# `minigriffin.cli.main` takes the same arguments as the `minigriffin` command, so the cell below is exactly
# `minigriffin train --preset ... --data-dir BOOKS --run-dir ...`. Any model or training field can be overridden
# with `--key=value`. At the small size it trains a narrow Griffin (width 64, three blocks) for a few seconds; with
# `MINIGRIFFIN_FULL_RUN=1` it trains `griffin-small` (about 5M parameters) for 300 steps of 8 x 128 bytes, the
# settings of `make demo` (about 3 minutes on a 2-core laptop).
#
# The run goes to a temporary folder: `config.json`, `metrics.jsonl` (one line per step) and
# `checkpoints/{last,best}.npz`. Interrupting it (Ctrl-C, or the stop button) saves a checkpoint, and
# `minigriffin train --resume RUN_DIR` continues exactly where it stopped.

# %%
if FULL_RUN:
    description = "griffin-small, 300 steps of 8 x 128 bytes"
    settings = ["--preset", "griffin-small", "--batch_size=8", "--seq_len=128", "--max_steps=300",
                "--eval_every=50", "--warmup_steps=30", "--lr=3e-3", "--log_every=50"]
else:
    description = "griffin-tiny widened to D = 64, 240 steps of 8 x 64 bytes"
    settings = ["--preset", "griffin-tiny", "--width=64", "--lru_width=64", "--mlp_expanded_width=192",
                "--attention_window_size=32", "--batch_size=8", "--seq_len=64", "--max_steps=240",
                "--eval_every=40", "--warmup_steps=20", "--lr=5e-3", "--eval_batches=2", "--log_every=40"]
RUN_DIR = Path(tempfile.mkdtemp(prefix="minigriffin-notebook-")) / "griffin"
if HAVE_BOOKS:
    start = time.perf_counter()
    code = minigriffin(["train", *settings, "--data-dir", str(BOOKS), "--run-dir", str(RUN_DIR)])
    assert code == 0, f"training exited with {code}"
    print(f"trained in {time.perf_counter() - start:.0f} s")

# %% [markdown]
# ## The loss curve
#
# `metrics.jsonl` has the training loss of every step (noisy: each step sees a different batch) and the validation
# loss on a fixed set of windows from the held-out books, measured every `eval_every` steps.

# %%
if HAVE_BOOKS:
    records = read_metrics(RUN_DIR)
    steps = np.array([r["step"] for r in records])
    loss = np.array([r["loss"] for r in records])
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    smooth = np.convolve(loss, np.ones(10) / 10, mode="valid")
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    ax.plot(steps, loss, color="C0", alpha=0.3, lw=1, label="training loss")
    ax.plot(steps[9:], smooth, color="C0", label="training loss, mean of 10 steps")
    ax.plot(*zip(*val), "o-", color="C1", label="validation loss")
    ax.axhline(np.log(256), color="grey", ls=":", label="uniform over 256 bytes")
    ax.axhline(entropy, color="grey", ls="--", label="unigram entropy (no context)")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats per byte)")
    ax.set_title(description)
    ax.legend(fontsize=8)
    plt.show()
    print(f"final validation loss {val[-1][1]:.3f} nats per byte = {val[-1][1] / np.log(2):.2f} bits per byte; "
          f"{records[-1]['tokens_per_s']:,.0f} tokens/s")

# %% [markdown]
# Once the validation loss drops below the unigram line, the model is using context: it has learned which bytes
# tend to follow which. A bigger model trained for longer (the full size, or `make demo`) goes lower, and its
# samples turn from byte soup into words and punctuation.
#
# ## Samples
#
# `generate` feeds the prompt once and then one byte at a time, carrying the state (RG-LRU $h$, Conv1D inputs, the
# attention window's keys and values) from step to step ([minigriffin/sample.py](../minigriffin/sample.py)). The same
# from the command line: `minigriffin sample RUN_DIR --prompt "It was " --temperature 0.8`.

# %% tags=["text-varies"]
if HAVE_BOOKS:
    params, _, _, meta = load_checkpoint(RUN_DIR / "checkpoints" / "best.npz")
    cfg = config_from_dict(meta["model_config"])
    tokenizer = ByteTokenizer()
    prompt = tokenizer.encode("It was a dark and stormy night")
    n_new = 300 if FULL_RUN else 120
    for temperature in (0.5, 1.0):
        out = generate(params, cfg, prompt[None].astype(np.int64), n_new, np.random.default_rng(0),
                       temperature=temperature)
        print(f"--- temperature {temperature}:\n{tokenizer.decode(out[0])!r}\n")

# %% [markdown]
# Lower temperatures pick likely bytes (repetitive, more word-like); temperature 1 samples the model's distribution
# as it is.
#
# ## Your turn: train at another length
#
# The run above trained on windows of 64 bytes. Train the same model on the same number of bytes cut into shorter
# windows (`seq_len_try` = 16, so four times the batch), then score both on the same validation text: 40 pieces of
# 256 bytes, each read from its start, with the loss averaged over three ranges of positions. **Predict first**:
# at positions 0-15, which model is better? At positions 64-254, past anything the 16-byte model saw in training,
# is it a little worse, much worse, or better than the model trained on 64 bytes? Then run it (about ten seconds),
# and try `seq_len_try = 128`. [Notebook 6](06_long_context.ipynb) asks the same question carefully, with paired
# tests.

# %%
seq_len_try = 16                     # the run above: 64; try 128 (same bytes: batch 8 * 64 / seq_len_try)
if HAVE_BOOKS and not FULL_RUN:
    from minigriffin.evaluate import document_losses, documents

    other = [a for a in settings if not a.startswith(("--batch_size=", "--seq_len=", "--attention_window_size="))]
    other += [f"--batch_size={8 * 64 // seq_len_try}", f"--seq_len={seq_len_try}",
              f"--attention_window_size={seq_len_try // 2}"]
    RUN_TRY = RUN_DIR.parent / f"griffin-L{seq_len_try}"
    assert minigriffin(["train", *other, "--data-dir", str(BOOKS), "--run-dir", str(RUN_TRY), "--log_every=1000"]) == 0
    pieces = documents(corpus.valid, 256, 8)                                # the same text for both models
    print(f"mean loss (nats per byte) on {len(pieces)} validation pieces of 256 bytes, by position:")
    for name, run in ((f"trained on {64} bytes", RUN_DIR), (f"trained on {seq_len_try} bytes", RUN_TRY)):
        params, _, _, meta = load_checkpoint(run / "checkpoints" / "best.npz")
        losses = document_losses(params, config_from_dict(meta["model_config"]), pieces)   # (pieces, 255)
        spans = [(0, 16), (16, 64), (64, 255)]
        print(f"  {name:<20}" + "".join(f"  positions {lo}-{hi - 1}: {np.nanmean(losses[:, lo:hi]):.3f}"
                                         for lo, hi in spans))

# %% [markdown]
# (Once you have run it: at this size both models use only a few dozen bytes of context, so far into the pieces they
# do about equally well; the model trained on short windows has met four times as many window starts, and that
# shows in the first positions. Whether longer training windows pay off far out is finding 2 of the paper, measured
# in [notebook 6](06_long_context.ipynb).)
#
# Next: [long context](06_long_context.ipynb), where models trained on short windows read whole books.
