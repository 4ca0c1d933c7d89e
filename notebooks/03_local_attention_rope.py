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
# # 3. Local attention and RoPE
#
# Paper: [De, Smith et al. 2024, "Griffin", arXiv 2402.19427](https://arxiv.org/abs/2402.19427), §2.3. Docs: [docs/backprop.md](../docs/backprop.md).
#
# Griffin's other temporal block is *local* multi-query attention (paper §2.3): every query attends to itself and the
# $W$ keys before it (never across a document start), all $H$ query heads share one key/value head, and positions
# enter only through rotary embeddings (RoPE) on the queries and keys. This notebook draws the mask, shows RoPE as
# rotations, explains why a bounded window lets RoPE extrapolate to longer sequences, and measures the $O(T W)$
# memory of the package's blocked implementation.
#
# Code: [minigriffin/attention.py](../minigriffin/attention.py), [minigriffin/rope.py](../minigriffin/rope.py);
# backward derivations in [docs/backprop.md](../docs/backprop.md).

# %%
import os
import time
import tracemalloc

import matplotlib.pyplot as plt
import numpy as np

from minigriffin.attention import attention_backward, attention_forward, attention_mask, default_block_size
from minigriffin.config import make_config
from minigriffin.params import init_params
from minigriffin.rope import MAX_WAVELENGTH, rope_forward

# Unset: small sizes that run in seconds. MINIGRIFFIN_FULL_RUN=1: the sizes quoted in the text.
FULL_RUN = os.environ.get("MINIGRIFFIN_FULL_RUN") == "1"
plt.rcParams.update({"figure.dpi": 72, "savefig.dpi": 72, "font.size": 9})
rng = np.random.default_rng(0)

# %% [markdown]
# ## The sliding-window mask, with documents
#
# Key $s$ is visible to query $t$ when both are in the same document, $s \le t$ and $t - s \le W$: each query sees
# at most $W + 1$ keys. Documents are found from `segment_pos` (0 marks a start), so packed books never see each other.
# Below, three documents of 10, 6 and 8 tokens in one row, with $W = 4$; a naive double loop checks the package's
# `attention_mask`.

# %%
W = 4
segment_pos = np.r_[np.arange(10), np.arange(6), np.arange(8)][None]   # (B, T) = (1, 24)
T = segment_pos.shape[1]
mask = attention_mask(segment_pos, 0, T, 0, T, W)[0]                  # (T, T) bool, queries x keys

doc = np.cumsum(segment_pos[0] == 0)                                   # naive version
naive = np.array([[doc[t] == doc[s] and 0 <= t - s <= W for s in range(T)] for t in range(T)])
assert np.array_equal(mask, naive)
assert mask.sum(axis=1).max() == W + 1

fig, ax = plt.subplots(figsize=(4.5, 4.5))
ax.imshow(mask, cmap="Blues", interpolation="none")
for start in np.flatnonzero(segment_pos[0] == 0)[1:]:
    ax.axhline(start - 0.5, color="C3", lw=0.8)
    ax.axvline(start - 0.5, color="C3", lw=0.8)
ax.set_xlabel("key position s")
ax.set_ylabel("query position t")
ax.set_title(f"attention_mask: W = {W}, documents of 10, 6, 8 tokens")
plt.show()

# %% [markdown]
# ## RoPE on half of each head, drawn as rotations
#
# RoPE (Su et al. 2021) rotates pairs of coordinates of $q$ and $k$ by an angle proportional to the position. As in
# recurrentgemma, only the **first half** of each head's $D_h$ dimensions is rotated; the second half passes through
# unchanged. The rotated half $R = D_h/2$ is split in two, $x_1 = x_{[0, R/2)}$ and $x_2 = x_{[R/2, R)}$, and pair $j$
# turns by $\theta_j = \text{pos} \cdot 10000^{-2j/R}$:
#
# $$y_1 = x_1 \cos\theta - x_2 \sin\theta, \qquad y_2 = x_2 \cos\theta + x_1 \sin\theta .$$
#
# That is multiplication of the complex number $x_1 + i x_2$ by $e^{i\theta}$, the naive version used to check
# `rope_forward` below. Then, for $D_h = 16$ (four rotated pairs), the path of the unit vector of each pair over
# positions 0 to 63: pair 0 turns one radian per token, pair 3 a thousandth of that.

# %%
B, T, N, Dh = 2, 64, 3, 16
x = rng.standard_normal((B, T, N, Dh))                                 # (B, T, N, Dh)
pos = np.broadcast_to(np.arange(T), (B, T))                            # (B, T)
y, _ = rope_forward(x, pos)
R = Dh // 2
theta = pos[:, :, None, None] * MAX_WAVELENGTH ** (-2 * np.arange(R // 2) / R)   # (B, T, 1, R/2)
z = (x[..., :R // 2] + 1j * x[..., R // 2:R]) * np.exp(1j * theta)     # naive version: complex rotation
assert np.allclose(y[..., :R // 2], z.real, rtol=1e-12, atol=1e-12)    # float64
assert np.allclose(y[..., R // 2:R], z.imag, rtol=1e-12, atol=1e-12)
assert np.array_equal(y[..., R:], x[..., R:])                          # the second half passes through

unit = np.zeros((1, T, R // 2, Dh))                                    # one "head" per pair, each a unit vector
for j in range(R // 2):
    unit[0, :, j, j] = 1.0                                             # x1 of pair j = 1
rotated, _ = rope_forward(unit, np.arange(T)[None])
fig, axes = plt.subplots(1, R // 2, figsize=(10, 2.8))
for j, ax in enumerate(axes):
    u, v = rotated[0, :, j, j], rotated[0, :, j, R // 2 + j]           # the pair's two coordinates
    ax.plot(np.cos(np.linspace(0, 2 * np.pi, 100)), np.sin(np.linspace(0, 2 * np.pi, 100)), color="0.85")
    ax.scatter(u, v, c=np.arange(T), cmap="viridis", s=10)
    ax.set_aspect("equal")
    ax.set_xlim(-1.2, 1.2)
    ax.set_ylim(-1.2, 1.2)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"pair {j}: {MAX_WAVELENGTH ** (-2 * j / R):g} rad/token", fontsize=8)
fig.suptitle("RoPE: positions 0 (dark) to 63 (yellow) of dims (j, R/2 + j); dims R..Dh-1 are not rotated")
fig.tight_layout()
plt.show()

# %% [markdown]
# Because both $q$ and $k$ are rotated by their own positions and rotations preserve dot products,
# $\text{RoPE}(q, m) \cdot \text{RoPE}(k, n)$ depends only on the offset $m - n$:

# %%
q, k = rng.standard_normal((1, 1, 1, Dh)), rng.standard_normal((1, 1, 1, Dh))


def score(m, n):
    return float((rope_forward(q, np.array([[m]]))[0] * rope_forward(k, np.array([[n]]))[0]).sum())


print([round(score(m, m - 3), 10) for m in (3, 10, 100, 5000)], "(offset 3 at four places)")
assert np.allclose([score(m, m - 3) for m in (3, 10, 100, 5000)], score(3, 0), rtol=1e-9)

# %% [markdown]
# ## Why a bounded window lets RoPE extrapolate
#
# The attention logits therefore see positions only through the offsets $t - s$ between a query and the keys it
# attends to. A model with **global** attention trained on sequences of length $L$ has only ever seen offsets
# $0 \dots L-1$; on a longer sequence most query-key pairs have offsets it never saw, each pair of RoPE dimensions
# sits at angles it was never trained on, and the loss blows up past $L$ (Figure 5 of the paper; notebook 6). With a
# **local** window $W < L$, every offset is at most $W$, at any position of any sequence: the attention at token
# 100 000 computes exactly the kind of logits it computed in training. (Griffin uses $W = 1024$ with training
# length 2048; our long-context study uses $W = L/2$.)
#
# Two checks with the package: the layer's output does not change when the same tokens sit at positions shifted by
# 1000 (only offsets matter), and the share of attended pairs whose offset was never seen in training, counted from
# `attention_mask`, for a global model and a local one trained at $L = 64$. The right panel shows what an unseen
# offset means for RoPE: the angle by which each rotated pair of the $D_h = 16$ head above turns between a key and a
# query $d$ tokens apart, $\theta_j d$, in full turns. A pair that completes a turn within $L$ has met every angle
# in training, and offsets past $L$ only repeat them; a slow pair that has not (pairs 2 and 3 here) meets, past $L$,
# angles it was never trained on, and that is where global attention breaks down. A window $W$ caps every pair's
# angle at $\theta_j W$, inside what training showed.

# %%
cfg = make_config("mqa-tiny", width=64, num_heads=4, lru_width=64, mlp_expanded_width=192, dtype="float64")
p64 = init_params(cfg, rng)["blocks"][0]["attention_block"]
x = rng.standard_normal((1, 48, cfg.width))                            # (B, T, D)
out_a, _ = attention_forward(x, p64, np.arange(48)[None], num_heads=4, window=16)
out_b, _ = attention_forward(x, p64, 1000 + np.arange(48)[None], num_heads=4, window=16)
assert np.allclose(out_a, out_b, rtol=1e-9, atol=1e-12)               # float64: positions shifted by 1000

L, W_local = 64, 32
lengths = [64, 128, 256, 512] + ([1024, 2048] if FULL_RUN else [])
unseen = {"global attention": [], f"local attention, W = {W_local}": []}
for T_test in lengths:
    one_doc = np.arange(T_test)[None]                                  # (1, T): one long document
    t, s = np.nonzero(attention_mask(one_doc, 0, T_test, 0, T_test, T_test)[0])
    unseen["global attention"].append(np.mean(t - s >= L))
    t, s = np.nonzero(attention_mask(one_doc, 0, T_test, 0, T_test, W_local)[0])
    unseen[f"local attention, W = {W_local}"].append(np.mean(t - s >= L))

fig, axes = plt.subplots(1, 2, figsize=(10, 3))
for name, share in unseen.items():
    axes[0].plot(lengths, share, "o-", label=name)
axes[0].axvline(L, color="grey", ls="--", lw=0.8)
axes[0].set_xscale("log", base=2)
axes[0].set_xlabel("evaluation length T")
axes[0].set_ylabel(f"attended pairs with offset >= {L}")
axes[0].set_title(f"offsets never seen when training at L = {L}")
axes[0].legend(fontsize=8)
offsets = np.arange(1, 8 * L + 1)
rates = MAX_WAVELENGTH ** (-2 * np.arange(R // 2) / R)                 # (R/2,) radians per token, Dh = 16
for j, rate in enumerate(rates):
    axes[1].plot(offsets, rate * offsets / (2 * np.pi), color=f"C{j}", label=f"pair {j}")
axes[1].axhline(1, color="black", lw=0.8)
axes[1].axvspan(1, L, color="C2", alpha=0.15, label=f"offsets seen in training (L = {L})")
axes[1].axvspan(1, W_local, color="C1", alpha=0.25, label=f"all a W = {W_local} window ever sees")
axes[1].set_xscale("log", base=2)
axes[1].set_yscale("log")
axes[1].set_xlabel("offset t - s")
axes[1].set_ylabel("angle between q and k (full turns)")
axes[1].set_title("RoPE angle of each pair against the offset")
axes[1].legend(fontsize=7, loc="lower right")
fig.tight_layout()
plt.show()
print({name: [f"{v:.0%}" for v in share] for name, share in unseen.items()}, "at T =", lengths)
for j, rate in enumerate(rates):
    turns_L, turns_far = rate * L / (2 * np.pi), rate * 8 * L / (2 * np.pi)
    print(f"pair {j}: {turns_L:.3g} turns at offset L = {L}, {turns_far:.3g} at 8L"
          + ("  <- past L, angles never seen in training" if turns_L < 1 else ""))

# %% [markdown]
# ## Memory: $O(T \cdot W)$, not $O(T^2)$
#
# Materialising the full $T \times T$ matrix of attention probabilities would cost $O(T^2)$ memory, although only
# $W + 1$ entries per row can be non-zero. `attention_forward` processes queries in blocks of $Q$ rows, and a block
# only scores the keys $[q_0 - W, q_1)$ it can see; the cache keeps those per-block probabilities for the backward,
# $B \cdot H \cdot T \cdot (Q + W)$ numbers in all. Below, `tracemalloc` (which sees NumPy's allocations) measures
# the peak memory of forward + backward for growing $T$ at fixed $W$, beside the same layer with a global window
# ($W = T$). It measures the NumPy definition in `attention.py` (`MINIGRIFFIN_REFERENCE=1`, set only around the
# measurement): compiled versions of the same computation in `minigriffin/fast/` may trade memory for arithmetic
# differently, for example by recomputing the probabilities in the backward instead of keeping them.

# %%
cfg = make_config("mqa-tiny", width=64, num_heads=4, lru_width=64, mlp_expanded_width=192)   # float32
p32 = init_params(cfg, rng)["blocks"][0]["attention_block"]
W_mem = 32
local_T = [256, 512, 1024, 2048, 4096] + ([8192, 16384] if FULL_RUN else [])
global_T = [t for t in local_T if t <= (4096 if FULL_RUN else 2048)]


def peak_mib(T, window):
    """Peak bytes allocated by attention_forward + attention_backward, in MiB (inputs excluded)."""
    x = rng.standard_normal((1, T, cfg.width)).astype(np.float32)      # (B, T, D)
    dout = rng.standard_normal((1, T, cfg.width)).astype(np.float32)   # (B, T, D)
    seg = np.arange(T)[None]                                           # (B, T)
    os.environ["MINIGRIFFIN_REFERENCE"] = "1"                          # the definitions, not minigriffin/fast/
    try:
        tracemalloc.start()
        out, cache = attention_forward(x, p32, seg, num_heads=cfg.num_heads, window=window)
        dx, grads = attention_backward(dout, cache)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    finally:
        del os.environ["MINIGRIFFIN_REFERENCE"]
    return peak / 2 ** 20


start = time.perf_counter()
local = [peak_mib(T, W_mem) for T in local_T]
global_ = [peak_mib(T, T) for T in global_T]
print(f"measured in {time.perf_counter() - start:.1f} s")
for T, mib in zip(local_T, local):
    print(f"T = {T:>6}: local W = {W_mem}: {mib:7.2f} MiB ({mib * 2 ** 20 / T:,.0f} bytes per token)"
          + (f"   global: {global_[global_T.index(T)]:7.2f} MiB" if T in global_T else ""))
slope = lambda T, m: np.polyfit(np.log(T), np.log(m), 1)[0]            # noqa: E731  log-log slope
print(f"log-log slope, all points: local {slope(local_T, local):.2f}, global {slope(global_T, global_):.2f}; "
      f"last two points: local {slope(local_T[-2:], local[-2:]):.2f}, global {slope(global_T[-2:], global_[-2:]):.2f}")
# the probabilities the global layer keeps: each block of Q queries scores the keys before its end, H T (T + Q) / 2
probabilities = [4 * cfg.num_heads * T * (T + default_block_size(T)) / 2 / 2 ** 20 for T in global_T]   # MiB
print("of which the global layer's kept probabilities (quadratic in T):",
      ", ".join(f"{m:.1f} MiB at T = {T}" for T, m in zip(global_T, probabilities)))

fig, ax = plt.subplots(figsize=(5.5, 3.2))
ax.loglog(local_T, local, "o-", base=2, label=f"local, W = {W_mem}")
ax.loglog(global_T, global_, "s-", base=2, label="global (W = T)")
guide_T = np.array([local_T[0], local_T[-1]], dtype=float)
ax.loglog(guide_T, local[0] * guide_T / guide_T[0], "k:", lw=0.8, base=2, label="O(T) guide")
ax.loglog(guide_T, global_[0] * (guide_T / guide_T[0]) ** 2, "k--", lw=0.8, base=2, label="O(T^2) guide")
ax.set_ylim(0.5 * min(local), 2 * max(global_ + local))
ax.set_xlabel("sequence length T")
ax.set_ylabel("peak MiB, forward + backward")
ax.set_title(f"attention memory (B = 1, D = {cfg.width}, H = {cfg.num_heads}, float32)")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# The local layer's bytes per token stay flat as $T$ grows: its curve lies on the $O(T)$ guide, slope 1. The global
# layer's grow with $T$, but its measured slope is about 1.5 over these sizes, not the 2 of the $O(T^2)$ guide
# (dashed): its peak is the quadratic part (the kept probabilities, printed above) *plus* everything that is linear
# in $T$ (the input, the projections, the outputs and their gradients, $B \cdot T \cdot D$ numbers each). At
# $T = 256$ the linear part is most of the total; the quadratic part grows four times per doubling and takes over as
# $T$ grows, so the slope between the last two points is steeper than over all of them, and tends to 2 for long
# sequences. (With `MINIGRIFFIN_FULL_RUN=1` the range reaches $T = 4096$.)
#
# At inference the same bound holds for the cache: a local attention layer keeps only
# its last $W$ keys and values, whatever the length of the context ([notebook 7](07_decoding_cost.ipynb)).
#
# ## Your turn
#
# Griffin's long-context study trains at $L$ and uses a window $W = L/2$; the paper uses $W = 1024$ at
# $L = 2048$. **Predict first**: with the window $W = L/2$ below, what share of the attended (query, key) pairs of a
# 512-token sequence have an offset the model never saw in training at $L = 64$? And with $W = 2L$, a window longer
# than the training sequences? Run the cell, then try other windows (`W_try`) and lengths.

# %%
W_try = L // 2                       # try L, 2 * L, 4 * L
T_eval = 512
t, s = np.nonzero(attention_mask(np.arange(T_eval)[None], 0, T_eval, 0, T_eval, W_try)[0])
print(f"W = {W_try}, trained at L = {L}, evaluated at T = {T_eval}: {np.mean(t - s >= L):.0%} of the attended "
      f"pairs have an offset never seen in training; the largest offset is {np.max(t - s)}")

# %% [markdown]
# Next: [the whole model](04_model.ipynb).
