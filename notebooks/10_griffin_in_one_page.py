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
# # 10. Griffin in one page
#
# Paper: [De, Smith et al. 2024, "Griffin", arXiv 2402.19427](https://arxiv.org/abs/2402.19427), §2 and Figure 2
# (the blocks), §2.3 (local MQA), §2.4 (the RG-LRU, eqs. 1-4), §3 (the block pattern). Docs:
# [docs/architecture.md](../docs/architecture.md) ("From the paper to the code").
#
# The earlier notebooks open one piece at a time. This one puts them together: the whole forward pass of Hawk,
# Griffin and the MQA Transformer, from byte tokens to logits, in one function of plain NumPy that fits on a page,
# with no caches, no backward and no speed tricks. It is checked against the package's `model_forward`
# ([minigriffin/model.py](../minigriffin/model.py)) to float64 precision on a small random model.
#
# What the page holds, in order:
#
# * the token **embedding**, multiplied by $\sqrt{D}$ rounded to bfloat16 when the config asks for it (recurrentgemma's
#   RecurrentGemma presets do; its presets of the paper's models do not, and the paper mentions neither);
# * $L$ **residual blocks** (Figure 2(a)) in the family's pattern: Griffin repeats (recurrent, recurrent, attention),
#   Hawk is all recurrent, the MQA baseline all attention; each block is RMSNorm, a temporal block, a residual add,
#   RMSNorm, the gated MLP (Figure 2(b)), a residual add;
# * the **recurrent block** (Figure 2(c)): a GeLU branch times (linear, Conv1D, RG-LRU), notebook 9;
# * **local multi-query attention** with RoPE on half of each head: $H$ query heads share one key and one value
#   head, and each query sees itself and the $W$ keys before it in its own document, notebook 3;
# * a final **RMSNorm**, **tied logits** (the embedding table again, transposed), and the logit **soft-cap**
#   $c \tanh(z / c)$ when the config has one.

# %%
import os

import numpy as np

from minigriffin.config import make_config, replace
from minigriffin.gradcheck import rel_error
from minigriffin.model import model_forward
from minigriffin.params import count_params, init_params
from minigriffin.tree import tree_map

# Unset: small sizes that run in seconds. MINIGRIFFIN_FULL_RUN=1: the sizes quoted in the text.
FULL_RUN = os.environ.get("MINIGRIFFIN_FULL_RUN") == "1"
rng = np.random.default_rng(0)

# %% [markdown]
# ## The page
#
# Parameters are the package's nested dicts (names as in recurrentgemma's PyTorch checkpoints; linear weights are
# (out, in)). Shape letters: B batch, T time, D width, E = D_RNN the recurrence's width, F the MLP width,
# H query heads of size Dh = D / H, V vocabulary, W the attention window.

# %%
def griffin_forward(params, tokens, segment_pos, cfg):
    """Hawk / Griffin / MQA forward pass in plain NumPy. tokens, segment_pos: (B, T) ints -> logits (B, T, V)."""
    def linear(x, p):                                                  # x (..., in) -> (..., out)
        return x @ p["weight"].T + p.get("bias", 0.0)

    def gelu(x):                                                       # tanh approximation
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))

    def rmsnorm(x, p):                                                 # no mean subtraction; gain 1 + scale
        return x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + 1e-6) * (1 + p["scale"])

    def sigmoid(x):
        return 1 / (1 + np.exp(-x))

    doc = np.cumsum(segment_pos == 0, axis=1)                          # (B, T) document id of each position
    B, T = tokens.shape

    def conv1d(u, p):                                                  # causal, depthwise, 4 taps (§2.3)
        K = p["w"].shape[0]
        out = np.broadcast_to(p["b"], u.shape).copy()                  # (B, T, E)
        for s in range(min(K, T)):                                     # the input s steps back, same document
            keep = (doc[:, s:] == doc[:, :T - s])[..., None]           # (B, T-s, 1)
            out[:, s:] += p["w"][K - 1 - s] * u[:, :T - s] * keep
        return out

    def rglru(u, p):                                                   # eqs. 1-4 (§2.4)
        G, blk, _ = p["a_gate"]["w"].shape                             # G gate blocks of E/G channels
        u_blocks = u.reshape(B, T, G, blk)                             # (B, T, G, E/G) block-diagonal gates
        r = sigmoid(np.einsum("bthi,hij->bthj", u_blocks, p["a_gate"]["w"]) + p["a_gate"]["b"]).reshape(u.shape)
        i = sigmoid(np.einsum("bthi,hij->bthj", u_blocks, p["input_gate"]["w"]) + p["input_gate"]["b"]).reshape(u.shape)
        log_a = -8.0 * r * np.logaddexp(0, p["a_param"])               # (B, T, E) log a_t = c r_t log sigmoid(-a_param)
        start = (segment_pos == 0)[..., None]                          # (B, T, 1) the state resets here
        a_t = np.where(start, 0.0, np.exp(log_a))                      # (B, T, E)
        x_t = np.where(start, 1.0, np.sqrt(1 - np.exp(2 * log_a))) * i * u   # (B, T, E)
        h, out = np.zeros(u.shape[::2]), np.empty_like(u)              # (B, E), (B, T, E)
        for t in range(T):
            h = a_t[:, t] * h + x_t[:, t]
            out[:, t] = h
        return out

    def recurrent_block(x, p):                                         # Figure 2(c)
        y = gelu(linear(x, p["linear_y"]))                             # (B, T, E)
        u = rglru(conv1d(linear(x, p["linear_x"]), p["conv_1d"]), p["rg_lru"])   # (B, T, E)
        return linear(u * y, p["linear_out"])                          # (B, T, D)

    def rope(x):                                                       # rotate the first half of each head
        R = x.shape[-1] // 2                                           # rotated dims
        theta = segment_pos[:, :, None, None] * 10_000.0 ** (-2 * np.arange(R // 2) / R)   # (B, T, 1, R/2)
        x1, x2 = x[..., :R // 2], x[..., R // 2:R]
        return np.concatenate([x1 * np.cos(theta) - x2 * np.sin(theta),
                               x2 * np.cos(theta) + x1 * np.sin(theta), x[..., R:]], axis=-1)

    def attention_block(x, p):                                         # local MQA (§2.3)
        H = cfg.num_heads
        Dh = x.shape[-1] // H
        q = linear(x, p["proj_q"]).reshape(B, T, H, Dh)                # (B, T, H, Dh)
        k = linear(x, p["proj_k"]).reshape(B, T, 1, Dh)                # (B, T, 1, Dh) one key head
        v = linear(x, p["proj_v"])                                     # (B, T, Dh)    one value head
        if cfg.use_rope:
            q, k = rope(q), rope(k)
        logits = np.einsum("bthd,bsd->bhts", q, k[:, :, 0]) / np.sqrt(Dh)   # (B, H, T, T)
        t, s = np.arange(T)[:, None], np.arange(T)[None, :]
        visible = (s <= t) & (t - s <= cfg.window) & (doc[:, :, None] == doc[:, None, :])   # (B, T, T)
        logits = np.where(visible[:, None], logits, -np.inf)
        probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)                     # (B, H, T, T)
        o = np.einsum("bhts,bsd->bthd", probs, v).reshape(B, T, H * Dh)   # (B, T, D)
        return linear(o, p["proj_final"])

    def mlp(x, p):                                                     # Figure 2(b)
        gate = gelu(x @ p["ffw_up"]["w"][0] + p["ffw_up"]["b"][0])     # (B, T, F)
        return linear(gate * (x @ p["ffw_up"]["w"][1] + p["ffw_up"]["b"][1]), p["ffw_down"])   # (B, T, D)

    table = params["embedder"]["input_embedding"]                      # (V, D)
    x = table[tokens]                                                  # (B, T, D)
    if cfg.embeddings_scale_by_sqrt_dim:                               # sqrt(D) rounded to bfloat16's 8 bits
        mantissa, exponent = np.frexp(np.sqrt(cfg.width))
        x = x * np.ldexp(np.round(mantissa * 256) / 256, exponent)
    for p in params["blocks"]:                                         # Figure 2(a), pre-norm
        temporal = recurrent_block if "recurrent_block" in p else attention_block
        x = x + temporal(rmsnorm(x, p["temporal_pre_norm"]), p.get("recurrent_block", p.get("attention_block")))
        x = x + mlp(rmsnorm(x, p["channel_pre_norm"]), p["mlp_block"])
    logits = rmsnorm(x, params["final_norm"]) @ table.T               # (B, T, V) tied output embedding
    if cfg.logits_soft_cap:
        logits = cfg.logits_soft_cap * np.tanh(logits / cfg.logits_soft_cap)
    return logits


# %% [markdown]
# About a hundred lines, including the comments. Small differences from the package are on purpose: the attention
# builds the whole $T \times T$ matrix (the package works in blocks of queries and keeps $O(T W)$ memory,
# notebook 3), masked logits are $-\infty$ rather than recurrentgemma's $-2.38 \cdot 10^{38}$ (both give a
# probability of exactly 0), $a_t$ and $a_t^2$ come from $\log a_t$ as in the package (notebook 2 shows why), and
# the recurrence is a Python loop instead of the scan (notebook 1).
#
# ## The check
#
# A small random Griffin: six blocks (R, R, A, R, R, A), a window shorter than the sequence, and three rows of packed
# documents (one starts mid-document, one has two document starts inside it). To test every line, including those
# that multiply by parameters that start at zero (biases, RMSNorm scales), every parameter gets some noise. The
# check runs twice: with the paper's settings (no embedding scale, no soft-cap) and with RecurrentGemma's
# ($\sqrt D$ and $c = 30$).

# %%
B, T = 3, (256 if FULL_RUN else 48)                                    # the full size: longer rows
base = make_config("griffin-tiny", width=32, lru_width=48, mlp_expanded_width=96, num_heads=2,
                   block_types=("recurrent", "recurrent", "attention") * 2, attention_window_size=7,
                   dtype="float64")
params = init_params(base, rng)
params = tree_map(lambda p: p + 0.2 * rng.standard_normal(p.shape), params)   # every line gets exercised
tokens = rng.integers(0, base.vocab_size, size=(B, T))                   # (B, T)
segment_pos = np.stack([np.arange(T),                                    # (B, T) one document
                        np.arange(100, 100 + T),                         # starts mid-document
                        np.r_[np.arange(5, 20), np.arange(20), np.arange(T - 35)]])   # starts at t = 15, 35
print(f"{count_params(base):,} parameters, blocks {base.block_types}, window {base.window}, "
      f"tokens {tokens.shape}")
for name, flags in [("paper", {}), ("RecurrentGemma", dict(embeddings_scale_by_sqrt_dim=True, logits_soft_cap=30.0))]:
    cfg = replace(base, **flags)
    ours = griffin_forward(params, tokens, segment_pos, cfg)              # (B, T, V)
    theirs, _ = model_forward(params, tokens, segment_pos, cfg)           # (B, T, V)
    err = rel_error(ours, theirs)
    assert ours.shape == theirs.shape and err < 1e-12, (name, err)       # float64
    print(f"{name:15s} one page == model_forward: logits {ours.shape}, rel. error {err:.1e}, "
          f"max |diff| {np.abs(ours - theirs).max():.1e}")

# %% [markdown]
# The same page runs Hawk and the MQA Transformer: only the block pattern changes (and the MQA baseline attends
# globally, which is local attention with a window longer than any document).

# %%
for family in ("hawk", "mqa"):
    cfg = make_config(f"{family}-tiny", width=32, lru_width=48, mlp_expanded_width=96, num_heads=2, dtype="float64")
    p = tree_map(lambda a: a + 0.2 * rng.standard_normal(a.shape), init_params(cfg, rng))
    err = rel_error(griffin_forward(p, tokens, segment_pos, cfg), model_forward(p, tokens, segment_pos, cfg)[0])
    assert err < 1e-12, (family, err)                                    # float64
    attention = "no attention" if family == "hawk" else "global attention"
    print(f"{family:5s} {cfg.block_types}, {attention}: rel. error {err:.1e}")

# %% [markdown]
# ## Your turn
#
# **1. Give Griffin a window of L.** The rows here have length $T$ (48 at the small size). Predict: if Griffin's
# local attention gets a window of $T - 1$ or more, is it exactly global attention (the MQA baseline's kind), or
# only close? Does the answer change with documents packed into the row? Run the cell; then try a window of $T/2$.

# %%
window = T - 1                                                          # try T // 2 as well
local = replace(base, attention_window_size=window)
global_ = replace(base, global_attention=True)
diff = np.abs(griffin_forward(params, tokens, segment_pos, local)
              - griffin_forward(params, tokens, segment_pos, global_))                 # (B, T, V)
print(f"window {window}: max |local - global| over the logits = {diff.max():.1e}; first position that differs "
      f"in row 0: {np.flatnonzero(diff[0].max(-1) > 0)[:1].tolist() or 'none'}")

# %% [markdown]
# **2. How far does one token reach?** In row 2, documents start at $t = 15$ and $t = 35$. Predict which positions'
# logits change when the token at $t = 5$ changes: all later ones, only those in its document, or only those within
# the attention window? Would the answer differ for Hawk, or for an MQA model? Run it (then try `base` with
# `block_types=("attention",)`: which positions change now?).

# %%
bumped = tokens.copy()
bumped[2, 5] = (bumped[2, 5] + 1) % base.vocab_size                     # (B, T)
change = np.abs(griffin_forward(params, bumped, segment_pos, base) - griffin_forward(params, tokens, segment_pos, base))
print("row 2: logits changed at t =", np.flatnonzero(change[2].max(-1) > 1e-12).tolist())
print("rows 0 and 1 changed:", bool(change[:2].max() > 0))

# %% [markdown]
# Next: [notebook 11](11_training_dynamics.ipynb) trains the three families side by side and watches what the
# RG-LRU's decay rates and gates learn.
