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
# # 7. Decoding cost against context length
#
# Paper: [De, Smith et al. 2024, "Griffin", arXiv 2402.19427](https://arxiv.org/abs/2402.19427), §5 (eq. 5). Docs: [docs/benchmarks.md](../docs/benchmarks.md).
#
# Generating text costs one forward step per token, and each step reads the model's parameters plus whatever it
# carries about the past (Griffin paper §5.1):
#
# * a **recurrent** block carries its RG-LRU state $h$ ($D_\text{RNN}$ numbers) and the last 3 inputs of its Conv1D:
#   a fixed size, however long the context;
# * a **local attention** block carries the keys and values of its last $W$ tokens: bounded by the window;
# * a **global attention** block (the MQA baseline) carries the keys and values of *every* token so far: its cache
#   grows linearly with the context.
#
# This notebook measures the milliseconds per generated token and the bytes carried per sequence
# (`minigriffin.inference.state_nbytes`) for the three small presets at growing context lengths, and compares them
# with the paper's model of a decode step (eq. 5). Code: [minigriffin/inference.py](../minigriffin/inference.py);
# the full benchmark, beside recurrentgemma, is `python benchmarks/bench_decode.py`.

# %%
import dataclasses
import os
import statistics
import time

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

from minigriffin.config import PRESETS
from minigriffin.inference import AttentionState, RecurrentState, forward_chunk, init_state, state_nbytes
from minigriffin.params import count_params, init_params

# Unset: small sizes that run in seconds. MINIGRIFFIN_FULL_RUN=1: the sizes quoted in the text.
FULL_RUN = os.environ.get("MINIGRIFFIN_FULL_RUN") == "1"
plt.rcParams.update({"figure.dpi": 72, "savefig.dpi": 72, "font.size": 9})
rng = np.random.default_rng(0)
FAMILIES = ("hawk", "griffin", "mqa")
CONTEXTS = [256, 1024, 4096, 16384] if FULL_RUN else [128, 512, 2048, 8192]
BATCH = 8 if FULL_RUN else 4
STEPS = 20 if FULL_RUN else 7


def log_axes(ax):
    """log-log axes with plain numbers as tick labels."""
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(alpha=0.3, which="both")


def config(family):
    """The small preset. Griffin's attention is local (a window of 128 tokens); the MQA baseline's is global
    (global_attention=True: every earlier token of the document, whatever the context length)."""
    return PRESETS[f"{family}-small"]


# %% [markdown]
# ## A cache of a given length, without the prefill
#
# The cost of a step depends on the *size* of what is carried, not on its contents, so instead of running a
# 16k-token prompt first, the state is filled with random numbers of the right shapes (as
# `benchmarks/bench_decode.py` does). To be sure the shapes are right, the stand-in is compared with the state that a
# real prefill of a short prompt leaves behind.

# %%
def filled_state(cfg, batch, context, rng):
    """A ModelState as after `context` tokens: random h, Conv1D inputs, keys and values of the right shapes."""
    blocks = []
    for block in init_state(cfg, batch).blocks:
        if isinstance(block, AttentionState):
            n = min(cfg.window, context)                                         # tokens kept: window or all
            keys = rng.standard_normal((batch, n, cfg.head_dim)).astype(cfg.dtype)    # (B, N, Dh)
            values = rng.standard_normal((batch, n, cfg.head_dim)).astype(cfg.dtype)  # (B, N, Dh)
            blocks.append(AttentionState(keys, values, np.zeros((batch, n), np.int64)))
        else:
            blocks.append(RecurrentState(rng.standard_normal(block.h.shape).astype(cfg.dtype),        # (B, E)
                                         rng.standard_normal(block.conv_x.shape).astype(cfg.dtype),   # (B, 3, E)
                                         np.zeros_like(block.conv_doc)))                              # (B, 3)
    return init_state(cfg, batch)._replace(blocks=tuple(blocks), num_tokens=context)


for family in FAMILIES:
    cfg = config(family)
    params = init_params(cfg, rng)
    prompt = rng.integers(0, 256, (2, 300))                                     # (B, T)
    _, real = forward_chunk(params, prompt, np.broadcast_to(np.arange(300), (2, 300)), cfg, init_state(cfg, 2))
    fake = filled_state(cfg, 2, 300, rng)
    shapes = lambda state: [[a.shape for a in b[:3]] for b in state.blocks]    # noqa: E731  the arrays of each block
    assert shapes(real) == shapes(fake)
    assert state_nbytes(real) == state_nbytes(fake)
    print(f"{family:<8} after 300 tokens: {state_nbytes(real) // 2:>9,} bytes carried per sequence")

# %% [markdown]
# ## Latency and memory against context length
#
# Each measurement starts from a filled cache of the given length and times decode steps (one new token per
# sequence, batch of several sequences), each continuing the state the previous step returned, as generation
# does: the median of a few steps after two warm-up steps. (A step appends its key and value to the cache in
# place; feeding the same old state again would make it copy the cache first.)

# %%
results = {family: [] for family in FAMILIES}
for family in FAMILIES:
    for context in CONTEXTS:
        cfg = config(family)
        params = init_params(cfg, np.random.default_rng(0))
        state = filled_state(cfg, BATCH, context, rng)
        nbytes = state_nbytes(state) // BATCH
        token = np.zeros((BATCH, 1), np.int64)                                 # (B, 1)
        times = []
        for i in range(STEPS + 2):
            position = np.full((BATCH, 1), context + i, np.int64)              # (B, 1) the next position
            start = time.perf_counter()
            _, state = forward_chunk(params, token, position, cfg, state)
            if i >= 2:                                                         # two warm-up steps
                times.append(time.perf_counter() - start)
        ms = 1e3 * statistics.median(times)
        results[family].append((context, ms, nbytes))
        print(f"{family:<8} context {context:>6}: {ms:7.2f} ms per step of {BATCH} tokens, "
              f"{nbytes:>12,} bytes per sequence")

# %% tags=["numbers-vary"]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
for i, family in enumerate(FAMILIES):
    contexts, ms, nbytes = zip(*results[family])
    axes[0].plot(contexts, ms, "o-", color=f"C{i}", label=family)
    axes[1].plot(contexts, np.array(nbytes) / 2 ** 20, "o-", color=f"C{i}", label=family)
axes[0].set_ylabel(f"ms per decode step (batch {BATCH})")
axes[1].set_ylabel("MiB carried per sequence")
for ax in axes:
    log_axes(ax)
    ax.set_xlabel("context length (tokens already seen)")
    ax.legend(fontsize=8)
fig.suptitle("Decoding the small presets (D = 256, 6 blocks; Griffin's window 128, MQA global)")
fig.tight_layout()
plt.show()

# %% [markdown]
# Hawk's state and Griffin's window do not grow, so their step time stays flat at any context. The MQA baseline
# carries $2 \cdot (\text{blocks}) \cdot T \cdot D_h$ numbers per sequence, 3 KiB per token here, and its step time
# grows with them once the cache dominates what a step has to read. Griffin carries more than Hawk (a window of 128
# keys and values in two blocks), but that stops growing at 128 tokens.
#
# ## The paper's model of a decode step (eq. 5)
#
# Decoding a small batch does little arithmetic per byte it reads, so it is bound by memory bandwidth: every step reads
# all the parameters once, and every sequence's cache once,
#
# $$\text{time per step} \approx \frac{\text{parameter bytes} + B \cdot \text{cache bytes per sequence}}
#   {\text{memory bandwidth}}.$$
#
# For Hawk and Griffin the second term is small and constant, so decoding stays parameter-bound at every length. For
# the MQA baseline it grows with $T$ and overtakes the parameters at
# $T^\ast = \text{parameter bytes} / (B \cdot \text{cache bytes per token})$: beyond that, latency grows linearly and
# the batch that fits in memory shrinks, which is why Griffin reaches a higher throughput in the paper (Figure 1b) and
# a lower latency on long samples (Figure 4). The numbers for the models above, with the bandwidth of this machine
# estimated from a large copy:

# %%
src = np.ones(2 ** 25 if FULL_RUN else 2 ** 24, np.float32)                # 128 or 64 MiB
dst = np.empty_like(src)
np.copyto(dst, src)
start = time.perf_counter()
for _ in range(3):
    np.copyto(dst, src)
bandwidth = 3 * 2 * src.nbytes / (time.perf_counter() - start)            # bytes read + written per second
print(f"copy bandwidth of this machine: about {bandwidth / 1e9:.1f} GB/s")

step_bytes = {}                                                             # bytes a decode step reads, eq. 5
for family in FAMILIES:
    contexts, ms, nbytes = map(np.array, zip(*results[family]))
    param_bytes = 4 * count_params(config(family))                        # float32
    step_bytes[family] = param_bytes + BATCH * nbytes                     # (contexts,)
    print(f"{family:<8} eq. 5: {param_bytes / 2 ** 20:.1f} MiB of parameters + {BATCH} x "
          f"{nbytes[0] / 2 ** 20:.2f} to {nbytes[-1] / 2 ** 20:.2f} MiB of cache read per step")
    if family == "mqa":
        per_token = nbytes[-1] / contexts[-1]
        print(f"MQA: {per_token:,.0f} bytes of cache per token per sequence: the cache outweighs the parameters "
              f"beyond T* = {param_bytes / (BATCH * per_token):,.0f} tokens at batch {BATCH}")

# %% tags=["numbers-vary"]
fig, ax = plt.subplots(figsize=(8, 3.6))
floor_styles = {"hawk": dict(ls=(0, (1, 1.5)), lw=2.5), "griffin": dict(ls=(0, (5, 2)), lw=1.2),
                "mqa": dict(ls=(0, (1, 1.5)), lw=1.5)}                     # hawk's and griffin's floors nearly meet
for i, family in enumerate(FAMILIES):
    contexts, ms, _ = map(np.array, zip(*results[family]))
    ax.plot(contexts, ms, "o-", color=f"C{i}", label=f"{family}: measured")
    ax.plot(contexts, 1e3 * step_bytes[family] / bandwidth, color=f"C{i}", label=f"{family}: eq. 5, bytes / bandwidth",
            **floor_styles[family])
log_axes(ax)
ax.set_xlabel("context length")
ax.set_ylabel(f"ms per decode step (batch {BATCH})")
ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))        # outside the axes: no curve hidden
fig.tight_layout()
plt.show()

# %% [markdown]
# The dotted and dashed lines are the bandwidth floor of eq. 5 (Hawk's, thick dotted, and Griffin's, dashed, nearly
# coincide: their parameters are about the same size and their caches small beside them). A single-token step here
# runs fused Numba kernels (`minigriffin/fast/decode.py`: one compiled call per recurrent block, a BLAS product and
# one pass over the values per attention block) and appends the new key and value to a preallocated cache in place, so it reads each parameter and
# each cached key and value about once; what keeps it above the floor is arithmetic done without fused
# multiply-adds, the softmax's exponentials, and a few Python calls per block. Small caches also still fit in the
# processor's caches, so the measured MQA curve bends up more sharply than the model once its cache outgrows them.
# The *shape* is the paper's: flat for Hawk and Griffin, rising with the context for the global-attention baseline
# once its cache outweighs the parameters. No implementation can remove the baseline's growth, which is the bytes it
# must read.
#
# ## Your turn
#
# Give the MQA baseline a local window instead of global attention (`global_attention=False`, a window of
# `window_try` tokens): it is then Griffin without the recurrent blocks. **Predict first**: at a context of 8,192
# tokens, how many bytes does it carry per sequence, and is its decode step closer to Hawk's or to the global MQA's?
# Then run it and try other windows. (Whether such a model still predicts well far out is notebook 6's exercise.)

# %%
window_try = 512                     # try 128, 2048
cfg_try = dataclasses.replace(PRESETS["mqa-small"], global_attention=False, attention_window_size=window_try)
params_try = init_params(cfg_try, np.random.default_rng(0))
for context in CONTEXTS:
    state = filled_state(cfg_try, BATCH, context, rng)
    nbytes = state_nbytes(state) // BATCH
    token, times = np.zeros((BATCH, 1), np.int64), []
    for i in range(STEPS + 2):
        start = time.perf_counter()
        _, state = forward_chunk(params_try, token, np.full((BATCH, 1), context + i, np.int64), cfg_try, state)
        times.append(time.perf_counter() - start)
    print(f"mqa, window {window_try}, context {context:>6}: {1e3 * statistics.median(times[2:]):7.2f} ms per step, "
          f"{nbytes:>12,} bytes per sequence")
