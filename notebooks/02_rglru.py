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
# # 2. The RG-LRU
#
# Paper: [De, Smith et al. 2024, "Griffin", arXiv 2402.19427](https://arxiv.org/abs/2402.19427), §2.4, eqs. 1-4. Docs: [docs/backprop.md](../docs/backprop.md).
#
# The Real-Gated Linear Recurrent Unit (Griffin paper §2.4) is the layer that gives Hawk and Griffin their memory.
# For an input $x_t$ of width $E$ (the output of the recurrent block's Conv1D):
#
# $$
# \begin{aligned}
# r_t &= \sigma(W_a x_t + b_a) && \text{recurrence gate (eq. 1)}\\
# i_t &= \sigma(W_x x_t + b_x) && \text{input gate (eq. 2)}\\
# a_t &= a^{c\, r_t}, \quad a = \sigma(-\texttt{a\_param}),\ c = 8 && \text{(eq. 3)}\\
# h_t &= a_t \odot h_{t-1} + \sqrt{1 - a_t^2} \odot (i_t \odot x_t) && \text{(eq. 4)}
# \end{aligned}
# $$
#
# **Notation.** The paper writes $a = \sigma(\Lambda)$ with a learnable $\Lambda$. recurrentgemma, and this
# package, store the opposite sign, $\texttt{a\_param} = -\Lambda$, so everywhere below (and in the code)
# $a = \sigma(-\texttt{a\_param})$ and $\log a = -\operatorname{softplus}(\texttt{a\_param})$: the same $a$, a
# parameter of the opposite sign. A large positive `a_param` means a short memory.
#
# The gates read the layer's input, never $h$, so everything except the recurrence itself is elementwise and runs for
# all $t$ at once; the recurrence is the linear scan of [notebook 1](01_linear_scan.ipynb). $W_a$ and $W_x$ are
# block-diagonal. Code: [minigriffin/rglru.py](../minigriffin/rglru.py); the backward is derived in
# [docs/backprop.md](../docs/backprop.md).

# %%
import os

import matplotlib.pyplot as plt
import numpy as np

from minigriffin import linear_scan
from minigriffin.config import PRESETS, make_config
from minigriffin.gradcheck import assert_grads_close
from minigriffin.params import init_a_param, init_params
from minigriffin.rglru import C, rglru_backward, rglru_forward, sigmoid, softplus

# Unset: small sizes that run in seconds. MINIGRIFFIN_FULL_RUN=1: the sizes quoted in the text.
FULL_RUN = os.environ.get("MINIGRIFFIN_FULL_RUN") == "1"
plt.rcParams.update({"figure.dpi": 72, "savefig.dpi": 72, "font.size": 9})
rng = np.random.default_rng(0)

# One RG-LRU layer as initialised in a Hawk model of the small preset (E = 256, 4 gate blocks), in float64.
cfg = make_config("hawk-small", block_types=("recurrent",), dtype="float64")
p = init_params(cfg, rng)["blocks"][0]["recurrent_block"]["rg_lru"]
E = cfg.lru_width
print({name: (arr.shape if hasattr(arr, "shape") else {k: v.shape for k, v in arr.items()}) for name, arr in p.items()})

# %% [markdown]
# ## The gates, written out
#
# A naive version straight from the equations: the block-diagonal gates as full $E \times E$ matrices that are zero
# off the blocks, $a_t$ computed as the power $a^{c r_t}$, and a Python loop over time. It must agree with
# `rglru_forward`, which computes the gates with one small matmul per block, $a_t$ in log space, and the recurrence
# with the scan.

# %%
def rglru_naive(x, p, segment_pos, h0):
    """naive version of eqs. 1-4, with resets at segment_pos == 0. x: (B, T, E) -> (B, T, E)."""
    B, T, E = x.shape
    G, blk, _ = p["a_gate"]["w"].shape

    def dense(gate):                                     # the block-diagonal matrix, zeros off the blocks
        W = np.zeros((E, E))
        for k in range(G):
            W[k * blk:(k + 1) * blk, k * blk:(k + 1) * blk] = gate["w"][k]
        return W, gate["b"].reshape(E)

    (Wa, ba), (Wx, bx) = dense(p["a_gate"]), dense(p["input_gate"])
    r = 1 / (1 + np.exp(-(x @ Wa + ba)))                  # (B, T, E) recurrence gate
    i = 1 / (1 + np.exp(-(x @ Wx + bx)))                  # (B, T, E) input gate
    a = 1 / (1 + np.exp(p["a_param"]))                    # (E,) a = sigmoid(-a_param)
    h, out = h0.copy(), np.empty_like(x)
    for t in range(T):
        a_t = a ** (C * r[:, t])                          # (B, E) eq. 3 as a power
        reset = (segment_pos[:, t] == 0)[:, None]         # (B, 1) a document starts here
        h = np.where(reset, 0.0, a_t) * h + np.where(reset, 1.0, np.sqrt(1 - a_t ** 2)) * i[:, t] * x[:, t]
        out[:, t] = h
    return out


B, T = 2, 16
x = rng.standard_normal((B, T, E))                                       # (B, T, E)
segment_pos = np.array([np.arange(T), np.r_[np.arange(7, 13), np.arange(10)]])   # (B, T): row 1 restarts at t=6
h0 = rng.standard_normal((B, E))                                         # (B, E)
y, h_last, cache = rglru_forward(x, p, segment_pos, h0=h0)
assert np.allclose(rglru_naive(x, p, segment_pos, h0), y, rtol=1e-11, atol=1e-13)   # float64
print(f"naive eqs. 1-4 == rglru_forward (float64); y: {y.shape}, h_last: {h_last.shape}")

# %% [markdown]
# ## $a_t = a^{c r_t}$, computed in log space
#
# With $a = \sigma(-\texttt{a\_param})$, $\log a = -\operatorname{softplus}(\texttt{a\_param})$, so
#
# $$\log a_t = -c\, r_t \operatorname{softplus}(\texttt{a\_param}), \qquad a_t = e^{\log a_t}, \qquad a_t^2 = e^{2 \log a_t}.$$
#
# The package (like recurrentgemma) never forms the base $a$ itself. Why it matters: the interesting gates are close
# to 1, and a float32 number close to 1 is coarse (its spacing is $6 \cdot 10^{-8}$). Taking $\log$ of a rounded $a$
# keeps only the few digits that survived the rounding, while softplus computes $\log a$ directly, to full relative
# precision.
# The memory length $1/(1-a) \approx -1/\log a$ inherits that error, and so does the gradient, which flows through
# $\log a_t$. In float32:

# %%
one_minus_a = np.logspace(-1, -7, 300)                                   # 1 - a from 0.1 down to 1e-7
a_param = np.log(1 / (1 - one_minus_a) - 1).astype(np.float32)          # (300,) float32 parameters
exact = -softplus(a_param.astype(np.float64))                            # log a, float64, same inputs
via_a = np.log(sigmoid(-a_param))                                        # float32: form a, then log
via_softplus = -softplus(a_param)                                        # float32: log space
err = lambda v: np.abs(v.astype(np.float64) - exact) / np.abs(exact)     # noqa: E731  relative error
fig, ax = plt.subplots(figsize=(6, 3))
ax.loglog(one_minus_a, err(via_a) + 1e-12, ".", ms=3, label="log(sigmoid(-a_param))  (form a first)")
ax.loglog(one_minus_a, err(via_softplus) + 1e-12, ".", ms=3, label="-softplus(a_param)  (log space)")
ax.invert_xaxis()
ax.set_xlabel("1 - a   (the gate gets closer to 1 to the right)")
ax.set_ylabel("relative error of log a")
ax.set_title("float32: log a computed two ways")
ax.legend(fontsize=8)
plt.show()
assert err(via_softplus).max() < 1e-6 < err(via_a).max()                  # float32

# %% [markdown]
# ## The spectrum of decay rates at initialisation
#
# `init_a_param` draws $a^2$ uniformly in $[0.9^2, 0.999^2]$ ("uniformly on a ring", as recurrentgemma; the paper's
# text says $a^c$ instead). Each channel therefore starts with its own timescale: its memory length $1/(1-a)$ ranges
# from 10 to 1000 tokens. The gate then shortens it token by token: $a_t = a^{8 r_t}$ with $r_t \in (0, 1)$, and
# at initialisation $r_t$ is spread around 0.5, so $a_t \approx a^4$ and the typical memory is a few to a few
# hundred tokens. Training moves both. Below, $a$ for the width of the 1B preset ($E = 2560$), and the actual $a_t$
# of our $E = 256$ layer on random inputs.

# %%
E_big = PRESETS["griffin-1b"].lru_width
a_init = sigmoid(-init_a_param(rng, E_big, np.float64))                 # (E_big,)
x_random = rng.standard_normal((4, 256, E))                             # (B, T, E)
_, _, c = rglru_forward(x_random, p, np.broadcast_to(np.arange(1, 257), (4, 256)))
a_t = c.a.ravel()                                                        # a_t = a^(8 r_t), every position and channel
assert 0.9 - 1e-9 <= a_init.min() and a_init.max() <= 0.999 + 1e-9

fig, axes = plt.subplots(1, 2, figsize=(9, 3))
share = lambda v: np.full(v.size, 1 / v.size)                          # noqa: E731  fraction per bin
labels = [f"a at init (E = {E_big})", "a_t = a^(8 r_t) on random inputs"]
bins = np.linspace(0.4, 1.0, 31)                                        # the same bins for both
axes[0].hist([a_init, a_t], bins=bins, weights=[share(a_init), share(a_t)], label=labels)   # side by side
axes[0].set_ylabel("fraction")
axes[0].set_xlabel("decay rate")
axes[0].legend(fontsize=8)
bins = np.logspace(0, 3.2, 25)
axes[1].hist([1 / (1 - a_init), 1 / (1 - a_t)], bins=bins, weights=[share(a_init), share(a_t)],
             label=["1 / (1 - a)", "1 / (1 - a_t)"])
axes[1].set_xscale("log")
axes[1].set_xlabel("memory length in tokens (log scale)")
axes[1].legend(fontsize=8)
fig.suptitle("RG-LRU decay rates at initialisation")
fig.tight_layout()
plt.show()
print(f"a in [{a_init.min():.4f}, {a_init.max():.4f}]; a_t in [{a_t.min():.3f}, {a_t.max():.4f}], "
      f"median memory 1/(1-a_t) = {np.median(1 / (1 - a_t)):.1f} tokens")

# %% [markdown]
# ## Why $\sqrt{1 - a_t^2}$ keeps the state's scale
#
# Feed the plain recurrence $h_t = a h_{t-1} + x_t$ with independent inputs of variance 1. The variance of the state
# grows as $\sum_k a^{2k} \to 1/(1 - a^2)$: about 5 for $a = 0.9$, but 500 for $a = 0.999$. Channels with long memory
# would dominate everything downstream. Scaling the input by $\sqrt{1 - a^2}$ makes the stationary variance exactly
# $(1 - a^2)/(1 - a^2) = 1$ for every channel, whatever its timescale. Simulated with `linear_scan` on many independent
# sequences:

# %%
n_seq, T = (2000, 6000) if FULL_RUN else (400, 3000)
gates = np.array([0.9, 0.99, 0.999])
x = rng.standard_normal((n_seq, T, len(gates)))                          # (B, T, D): one channel per gate value
a = np.broadcast_to(gates, x.shape).copy()                               # (B, T, D)
h_plain, _ = linear_scan(x, a)
h_scaled, _ = linear_scan(np.ascontiguousarray(x * np.sqrt(1 - gates ** 2)), a)
t = np.arange(1, T + 1)
fig, axes = plt.subplots(1, 2, figsize=(9, 3), sharey=True)
for k, g in enumerate(gates):
    axes[0].plot(t, h_plain[:, :, k].var(axis=0), color=f"C{k}", label=f"a = {g}")
    axes[0].plot(t, (1 - g ** (2 * t)) / (1 - g ** 2), "k:", lw=0.8)
    axes[1].plot(t, h_scaled[:, :, k].var(axis=0), color=f"C{k}", label=f"a = {g}")
axes[0].set_title("h_t = a h_(t-1) + x_t")
axes[1].set_title("h_t = a h_(t-1) + sqrt(1 - a^2) x_t")
for ax in axes:
    ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.legend(fontsize=8)
axes[0].set_ylabel(f"variance of h over {n_seq} sequences")
fig.tight_layout()
plt.show()
print("stationary variance without / with the multiplier:",
      np.round(h_plain[:, -1].var(axis=0), 1), "/", np.round(h_scaled[:, -1].var(axis=0), 2))

# %% [markdown]
# (Dotted: the exact variance $(1 - a^{2t})/(1 - a^2)$.) With the multiplier, a channel with $a = 0.999$ takes about
# $1/(1-a^2) \approx 500$ steps to reach its full scale; the state never carries more variance than its input.
#
# ## Resets at document starts
#
# Training batches pack several books into one row; `segment_pos` is the position within the current book and is 0
# where a new one starts. There the RG-LRU sets $a_t = 0$ (the state is dropped) and the multiplier to 1, so
# $h_t = i_t \odot x_t$: nothing of the previous book leaks into the next. Below, one row holds a document of 20
# tokens and then one of 12; the second document's output equals that of the same 12 tokens run on their own, and the
# carried-in state `h0` is ignored when a row starts with a reset.

# %%
T1, T2 = 20, 12
x = rng.standard_normal((1, T1 + T2, E))                                 # (1, T, E)
packed = np.r_[np.arange(T1), np.arange(T2)][None]                       # (1, T): a document starts at t = 20
one_document = np.arange(T1 + T2)[None]                                  # (1, T): no reset
y_packed, _, _ = rglru_forward(x, p, packed)
y_joined, _, _ = rglru_forward(x, p, one_document)
y_alone, _, _ = rglru_forward(np.ascontiguousarray(x[:, T1:]), p, np.arange(T2)[None])
assert np.allclose(y_packed[:, T1:], y_alone, rtol=1e-12, atol=1e-14)     # float64: nothing leaks across
y_h0, _, _ = rglru_forward(x, p, packed, h0=rng.standard_normal((1, E)))
assert np.array_equal(y_h0, y_packed)                                    # a reset at t = 0 ignores h0

channel = int(np.argmax(sigmoid(-p["a_param"])))                         # the channel with the longest memory
fig, ax = plt.subplots(figsize=(6, 2.8))
ax.plot(y_joined[0, :, channel], "o-", ms=3, label="one document of 32 tokens")
ax.plot(y_packed[0, :, channel], "s--", ms=3, label="documents of 20 + 12 (reset at t = 20)")
ax.plot(np.arange(T1, T1 + T2), y_alone[0, :, channel], "k.", ms=4, label="the 12 tokens alone")
ax.axvline(T1 - 0.5, color="grey", lw=0.8)
ax.set_xlabel("t")
ax.set_ylabel(f"h, channel {channel}")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## A gradient check
#
# `rglru_backward` is written by hand: the reverse scan of notebook 1, then the multiplier (whose square-root
# derivative is capped at 1000, as in recurrentgemma), then $\log a_t$, the gates and the block-diagonal matmuls.
# `minigriffin.gradcheck.assert_grads_close` compares every gradient with central finite differences of the loss
# $L = \sum y \cdot dy + h_\text{last} \cdot dh_\text{last}$, in float64, on a small layer whose second row
# continues a document from an earlier chunk (so `h0` matters there) and starts a new one at $t = 4$.

# %%
cfg_small = make_config("hawk-tiny", width=8, lru_width=8, mlp_expanded_width=24, dtype="float64")
p_small = init_params(cfg_small, rng)["blocks"][0]["recurrent_block"]["rg_lru"]
for gate in ("a_gate", "input_gate"):                                     # non-zero biases exercise their gradient
    p_small[gate]["b"] = 0.5 * rng.standard_normal(p_small[gate]["b"].shape)
B, T, E_small = 2, 11, cfg_small.lru_width
x = rng.standard_normal((B, T, E_small))                                  # (B, T, E)
seg = np.array([np.arange(T), np.r_[np.arange(5, 9), np.arange(T - 4)]])  # (B, T)
h0 = rng.standard_normal((B, E_small))                                    # (B, E)
dy, dh_last = rng.standard_normal((B, T, E_small)), rng.standard_normal((B, E_small))

y, h_last, cache = rglru_forward(x, p_small, seg, h0=h0, backend="reference")
dx, dh0, grads = rglru_backward(dy, dh_last, cache)
reports = assert_grads_close(
    lambda x, p, h0: rglru_forward(x, p, seg, h0=h0, backend="reference")[:2],   # outputs (y, h_last)
    {"x": x, "p": p_small, "h0": h0}, {"x": dx, "p": grads, "h0": dh0}, (dy, dh_last), rtol=1e-6, atol=1e-9)
for r in reports:
    print(f"{r.name:<16} {r.checked:>3} checked, max relative error {r.max_rel_error:.1e}")
assert np.all(dh0[0] == 0) and np.any(dh0[1] != 0)                        # row 0 starts with a reset

# %% [markdown]
# ## Your turn
#
# Two choices of eq. 3-4 to question. The cell below recomputes the decay rates of the layer above on the same
# random inputs, $a_t = a^{c\, r_t}$, with a constant $c$ of your choice (the paper's is 8), and the stationary
# variance of the state of a channel that keeps a constant $a_t$, with or without the $\sqrt{1 - a_t^2}$ multiplier.
#
# **Predict first**: with $c = 1$, is the median memory $1/(1 - a_t)$ longer or shorter than the 6.8 tokens printed
# above, and by roughly what factor? (Hint: for $a$ near 1, $1 - a^k \approx k(1 - a)$.) Without the multiplier,
# how much larger than its input's variance does the state of the longest-memory channel get? Then change
# `c_exercise` (try 1, 4, 16) and `keep_multiplier`.

# %%
c_exercise = 1                       # the paper's c is 8
keep_multiplier = False              # True: eq. 4 as written; False: h_t = a_t h_(t-1) + i_t x_t

log_a_t = -c_exercise * c.gate_a * c.softplus_a_param                    # (B, T, E) log a_t, same r_t as above
a_t_ex = np.exp(log_a_t).ravel()
memory = 1 / (1 - a_t_ex)
variance = (1 - a_t_ex ** 2 if keep_multiplier else 1.0) / (1 - a_t_ex ** 2)   # stationary var(h) / var(input)
print(f"c = {c_exercise}: median memory 1/(1-a_t) = {np.median(memory):.1f} tokens (c = {C}: "
      f"{np.median(1 / (1 - a_t)):.1f}), longest {memory.max():,.0f}")
print(f"{'with' if keep_multiplier else 'without'} sqrt(1 - a_t^2): stationary variance of the state, median "
      f"channel {np.median(variance):.1f}, longest-memory channel {variance.max():,.1f} (times the input's)")

# %% [markdown]
# (Once you have run it: for $a$ near 1, $1 - a^{c r} \approx c\, r (1 - a)$, so memory lengths scale as $1/c$: $c = 1$
# makes them about 8 times longer than $c = 8$, and $c$ is what lets the gate $r_t$ shorten a memory by a large
# factor. Without the multiplier the state's variance is $1/(1 - a_t^2)$ times its input's: thousands for the
# longest-memory channels, while the multiplier makes it 1 for every channel.)
#
# Next: [local attention and RoPE](03_local_attention_rope.ipynb), Griffin's other temporal block.
