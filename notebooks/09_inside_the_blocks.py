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
# # 9. Inside the blocks, and one training step by hand
#
# Paper: [De, Smith et al. 2024, "Griffin", arXiv 2402.19427](https://arxiv.org/abs/2402.19427), §2.1 (residual
# block), §2.2 (MLP block), §2.3 (recurrent block), §2.4 (the RG-LRU, eqs. 1-4) and Figure 2. Docs:
# [docs/architecture.md](../docs/architecture.md), [docs/backprop.md](../docs/backprop.md) (sections 2-6).
#
# Notebook 4 used the blocks as black boxes. Here we open them. Each piece of the paper's Figure 2 is written
# naively in a few lines of NumPy, straight from the equations, and checked against the package's implementation
# on the spot, in float64:
#
# ```
# (a) residual block:   x ─┬─ RMSNorm ─ temporal block ─(+)─┬─ RMSNorm ─ gated MLP ─(+)─▶
#                          └─────────────────────────────┘  └────────────────────────┘
#
# (c) recurrent block:  x ─┬─ Linear ─ GeLU ─────────────────────┐
#                          └─ Linear ─ Conv1D ─ RG-LRU ──────── (×) ─ Linear ─▶     (× elementwise)
#
# (b) gated MLP:        x ─┬─ Linear ─ GeLU ──┐
#                          └─ Linear ─────── (×) ─ Linear ─▶
# ```
#
# The temporal block is the recurrent block (Hawk, Griffin) or local multi-query attention (Griffin's third
# block, notebook 3). The second half of the notebook writes out one training step (the loss, the backward, the
# gradient clipping, the learning-rate schedule and the AdamW update) and checks it against one step of
# `minigriffin train`, before handing over to the command line.
#
# Code: [minigriffin/layers.py](../minigriffin/layers.py) (linear, RMSNorm, GeLU, gated MLP),
# [minigriffin/conv1d.py](../minigriffin/conv1d.py), [minigriffin/rglru.py](../minigriffin/rglru.py),
# [minigriffin/blocks.py](../minigriffin/blocks.py), [minigriffin/optim.py](../minigriffin/optim.py),
# [minigriffin/train.py](../minigriffin/train.py).

# %%
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from minigriffin.attention import attention_forward
from minigriffin.blocks import recurrent_block_forward, residual_block_forward
from minigriffin.cli import main as minigriffin
from minigriffin.config import TrainConfig, make_config
from minigriffin.conv1d import conv1d_forward
from minigriffin.data import load_corpus, sample_batch
from minigriffin.gradcheck import rel_error
from minigriffin.head import cross_entropy_backward, cross_entropy_forward
from minigriffin.layers import gelu_tanh_forward, linear_forward, mlp_forward, rmsnorm_forward
from minigriffin.model import model_backward, model_forward
from minigriffin.optim import clip_by_global_norm, decays, lr_schedule
from minigriffin.params import init_params
from minigriffin.plots import read_metrics
from minigriffin.rglru import rglru_forward
from minigriffin.train import Trainer
from minigriffin.tree import tree_leaves, tree_map

# Unset: small sizes that run in seconds. MINIGRIFFIN_FULL_RUN=1: the sizes quoted in the text.
FULL_RUN = os.environ.get("MINIGRIFFIN_FULL_RUN") == "1"
plt.rcParams.update({"figure.dpi": 72, "savefig.dpi": 72, "font.size": 9})
rng = np.random.default_rng(0)

# A small Griffin (R, R, A) in float64, so that agreement can be asked to 1e-12.
# The shapes: B batch, T time, D width, E = D_RNN the recurrence's width, F the MLP width, H heads.
cfg = make_config("griffin-tiny", width=32, lru_width=48, mlp_expanded_width=96, num_heads=2,
                  attention_window_size=6, dtype="float64")
params = init_params(cfg, rng)
B, T, D, E, F = 2, 24, cfg.width, cfg.lru_width, cfg.mlp_expanded_width
x = rng.standard_normal((B, T, D))                                        # (B, T, D) a block's input
# Packed documents: row 0 is one document from its start; row 1 starts mid-document and a new one begins at t = 10.
segment_pos = np.array([np.arange(T), np.r_[np.arange(40, 50), np.arange(T - 10)]])   # (B, T)
print(f"D = {D}, E = {E}, F = {F}, blocks {cfg.block_types}; x: {x.shape}, segment_pos: {segment_pos.shape}")
print("row 1's segment_pos:", segment_pos[1])

# %% [markdown]
# ## The three small layers: Linear, GeLU, RMSNorm
#
# * **Linear** is $y = x W^\top + b$, with $W$ stored as (out, in), PyTorch's layout (recurrentgemma's checkpoints
#   are PyTorch state dicts). Every linear layer of the recurrent block and the MLP has a bias; the attention's
#   $q$, $k$, $v$ projections do not.
# * **GeLU** is the tanh approximation, $\tfrac12 x\,(1 + \tanh(\sqrt{2/\pi}\,(x + 0.044715\,x^3)))$, as in
#   recurrentgemma (and JAX's default): it differs from the exact $x\,\Phi(x)$ by less than $10^{-3}$.
# * **RMSNorm** (§2.1) divides each token's vector by its root mean square, with no mean subtraction and no bias,
#   and multiplies by a learned gain stored as $1 + \texttt{scale}$ (scale starts at 0, so the gain starts at 1):
#   $\operatorname{RMSNorm}(x) = x / \sqrt{\operatorname{mean}(x^2) + 10^{-6}} \cdot (1 + \texttt{scale})$.

# %%
def linear(x, p):
    """naive: x (..., in) -> (..., out); W is (out, in), the bias optional."""
    y = x @ p["weight"].T                                          # (..., out)
    return y + p["bias"] if "bias" in p else y


def gelu(x):
    """naive: the tanh approximation of GeLU, elementwise."""
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def rmsnorm(x, p, eps=1e-6):
    """naive: x (..., D) -> (..., D); each row divided by its root mean square, times 1 + scale."""
    return x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + eps) * (1 + p["scale"])


block0 = params["blocks"][0]                                       # a residual block with a recurrent block
p_lin = block0["recurrent_block"]["linear_x"]                      # {"weight": (E, D), "bias": (E,)}
p_norm = {"scale": 0.1 * rng.standard_normal(D)}                   # a trained-looking gain (init: zeros)
for name, naive, package in [
        ("linear", linear(x, p_lin), linear_forward(x, p_lin)[0]),
        ("gelu_tanh", gelu(x), gelu_tanh_forward(x)[0]),
        ("rmsnorm", rmsnorm(x, p_norm), rmsnorm_forward(x, p_norm)[0])]:
    assert naive.shape == package.shape and rel_error(naive, package) < 1e-14, name    # float64
    print(f"{name:10s} naive == package, {package.shape}, rel. error {rel_error(naive, package):.1e}")
xn = rmsnorm(x, {"scale": np.zeros(D)})                            # (B, T, D)
print(f"after RMSNorm (scale 0) every token has mean square {np.mean(xn**2, -1).min():.6f} .. "
      f"{np.mean(xn**2, -1).max():.6f}")

# %% [markdown]
# ## The Conv1D: four taps per channel, never across a document start
#
# The recurrent block puts a small convolution between its linear layer and the RG-LRU (§2.3: a small separable
# Conv1D with a temporal filter dimension of 4; the paper credits the Shift-SSM of H3 for the idea). It is
#
# * **causal**: output $t$ reads inputs $t, t-1, t-2, t-3$ only, never the future;
# * **depthwise**: each of the $E$ channels has its own 4 weights and mixes nothing across channels (the
#   `linear_x` before it has already mixed the channels), so it costs $4E$ weights plus an $E$ bias;
# * **masked at document starts**: with packed documents (notebook 5), a tap that would reach back into the
#   previous document reads 0 instead, like the zero padding before the first token.
#
# $$\text{conv}_t = b + \sum_{s=0}^{3} w_{3-s} \odot u_{t-s} \cdot \text{keep}(t, s), \qquad
#   \text{keep}(t,s) = [\,t - s \ge 0 \text{ and no document starts in } (t-s, t]\,].$$
#
# $w_3$ multiplies the current input and $w_0$ the input three steps back (recurrentgemma's order). Why have it at
# all? The RG-LRU is a diagonal recurrence: each channel is an exponential moving average whose decay is at best
# a gate away from constant, so on its own it blurs which byte came 1, 2 or 3 steps ago. The convolution hands the
# gates and the recurrence a sharp view of the last four inputs (in a byte model: the current n-gram), for
# $4E$ parameters and $O(1)$ work per token; a decode step keeps the last 3 inputs in its state
# ([minigriffin/state.py](../minigriffin/state.py)).

# %%
def conv1d(u, p, segment_pos):
    """naive: u (B, T, E) -> (B, T, E); w: (K, E), w[K-1] on the current input; no tap crosses a document start."""
    B, T, E = u.shape
    K = p["w"].shape[0]
    doc = np.cumsum(segment_pos == 0, axis=1)                      # (B, T) which document each position is in
    out = np.empty_like(u)                                         # (B, T, E)
    for t in range(T):
        out[:, t] = p["b"]
        for s in range(K):                                         # the input s steps back
            if t - s >= 0:
                same_doc = (doc[:, t] == doc[:, t - s])[:, None]   # (B, 1)
                out[:, t] += same_doc * p["w"][K - 1 - s] * u[:, t - s]
    return out


p_conv = block0["recurrent_block"]["conv_1d"]                      # {"w": (4, E), "b": (E,)}
u = rng.standard_normal((B, T, E))                                 # (B, T, E)
conv_package, _ = conv1d_forward(u, p_conv, segment_pos)           # (B, T, E)
assert rel_error(conv1d(u, p_conv, segment_pos), conv_package) < 1e-14   # float64
print(f"naive Conv1D == conv1d_forward: {conv_package.shape}, w: {p_conv['w'].shape}")

# %% [markdown]
# The whole layer, for one channel, is a $T \times T$ matrix $M$ with $\text{conv} = b + M u$. Feeding the package's
# `conv1d_forward` one unit impulse per time step (one per batch row) reads $M$ off column by column: a band of four
# diagonals, the main one and three below it (causal, width 4), cut where row 1's new document starts at $t = 10$.

# %%
def conv_matrix(p, seg_row):
    """M[t, s] = d conv_t / d u_s for channel 0 of p, from the package, with segment_pos seg_row: (T,)."""
    T = seg_row.shape[0]
    impulses = np.eye(T)[:, :, None] * np.ones(p["w"].shape[1])    # (T, T, E): row s is a unit impulse at time s
    out, _ = conv1d_forward(impulses, p, np.broadcast_to(seg_row, (T, T)))   # (T, T, E)
    return (out[:, :, 0] - p["b"][0]).T                            # (T, T): column s = response to u_s


fig, axes = plt.subplots(1, 2, figsize=(8, 3.6))
for ax, row, title in zip(axes, (0, 1), ("row 0: one document", "row 1: a document starts at t = 10")):
    M = conv_matrix(p_conv, segment_pos[row])
    lim = np.abs(M).max()
    ax.imshow(M, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_title(title)
    ax.set_xlabel("input time s")
    ax.set_ylabel("output time t")
axes[1].axhline(9.5, color="k", lw=0.6, ls=":")
axes[1].axvline(9.5, color="k", lw=0.6, ls=":")
plt.suptitle("the Conv1D of channel 0 as a matrix: conv = b + M u", y=1.0)
plt.tight_layout()
plt.show()
M = conv_matrix(p_conv, segment_pos[1])
print("taps w[3], w[2], w[1], w[0] of channel 0:", np.round(p_conv["w"][::-1, 0], 4))
print("column s = 8 of row 1 (the response to u_8):", np.round(M[8:13, 8], 4), "(cut at t = 10)")

# %% [markdown]
# ### Your turn: the reach of one input
#
# **Predict first.** In row 0 (one document), change the input $u$ at time 5 in every channel. Which outputs of the
# Conv1D change? Then the same in row 1 at time 8, two steps before its document start. Write down your two lists of
# time steps, then run the cell.

# %%
for row, t0 in ((0, 5), (1, 8)):
    bumped = u.copy()
    bumped[row, t0] += 1.0                                         # (B, T, E)
    changed = np.abs(conv1d_forward(bumped, p_conv, segment_pos)[0] - conv_package)[row].max(axis=-1) > 0   # (T,)
    print(f"row {row}, input at t = {t0}: outputs changed at t = {np.flatnonzero(changed).tolist()}")

# %% [markdown]
# ## The RG-LRU, briefly
#
# Notebook 2 takes the RG-LRU apart (§2.4): the recurrence gate $r_t = \sigma(W_a u_t + b_a)$ (eq. 1) and input gate
# $i_t = \sigma(W_x u_t + b_x)$ (eq. 2), both block-diagonal; $a_t = a^{c r_t}$ with $c = 8$ (eq. 3), where the
# paper writes $a = \sigma(\Lambda)$ and the package stores $\texttt{a\_param} = -\Lambda$, so
# $a = \sigma(-\texttt{a\_param})$; and $h_t = a_t \odot h_{t-1} + \sqrt{1 - a_t^2} \odot (i_t \odot u_t)$ (eq. 4),
# with the state dropped ($a_t = 0$, multiplier 1) where a document starts. Here it is again, as a loop, because the
# block below needs it:

# %%
def rglru(u, p, segment_pos, c=8.0):
    """naive eqs. 1-4: u (B, T, E) -> h (B, T, E). Gates: H blocks of (E/H, E/H), applied to u split head-major."""
    B, T, E = u.shape
    H, blk, _ = p["a_gate"]["w"].shape
    u_blocks = u.reshape(B, T, H, blk)                                                     # (B, T, H, E/H)
    sigmoid = lambda z: 1 / (1 + np.exp(-z))                                               # noqa: E731
    r = sigmoid(np.einsum("bthi,hij->bthj", u_blocks, p["a_gate"]["w"]) + p["a_gate"]["b"]).reshape(B, T, E)
    i = sigmoid(np.einsum("bthi,hij->bthj", u_blocks, p["input_gate"]["w"]) + p["input_gate"]["b"]).reshape(B, T, E)
    a = sigmoid(-p["a_param"])                                     # (E,) a = sigmoid(Lambda), Lambda = -a_param
    h, out = np.zeros((B, E)), np.empty_like(u)                    # (B, E), (B, T, E)
    for t in range(T):
        a_t = a ** (c * r[:, t])                                   # (B, E) eq. 3
        start = (segment_pos[:, t] == 0)[:, None]                  # (B, 1) a document starts here
        h = np.where(start, 0.0, a_t) * h + np.where(start, 1.0, np.sqrt(1 - a_t**2)) * i[:, t] * u[:, t]   # eq. 4
        out[:, t] = h
    return out


p_lru = block0["recurrent_block"]["rg_lru"]
assert rel_error(rglru(u, p_lru, segment_pos), rglru_forward(u, p_lru, segment_pos)[0]) < 1e-13   # float64
print("naive eqs. 1-4 == rglru_forward")

# %% [markdown]
# ## The recurrent block (Figure 2(c))
#
# Two branches of width $E$ read the same (normed) input $x$. The left one is a linear layer and a GeLU; the right
# one a linear layer, the Conv1D and the RG-LRU. Their elementwise product goes through a last linear layer back to
# width $D$. The GeLU branch acts as a gate on the recurrence's output, the same trick as the gated MLP below. Note
# what is *not* there: no normalisation inside, no nonlinearity between the Conv1D and the RG-LRU, and the gates of
# the RG-LRU read the Conv1D's output $u_t$, never the state $h_{t-1}$.

# %%
def recurrent_block(x, p, segment_pos):
    """naive Figure 2(c): x (B, T, D) -> (B, T, D)."""
    y = gelu(linear(x, p["linear_y"]))                             # (B, T, E) the GeLU branch
    u = linear(x, p["linear_x"])                                   # (B, T, E)
    u = conv1d(u, p["conv_1d"], segment_pos)                       # (B, T, E) four taps, masked at starts
    h = rglru(u, p["rg_lru"], segment_pos)                         # (B, T, E) eqs. 1-4
    return linear(h * y, p["linear_out"])                          # (B, T, D) elementwise product, then back to D


p_rec = block0["recurrent_block"]
out_package, rec_cache = recurrent_block_forward(x, p_rec, segment_pos)   # (B, T, D)
assert rel_error(recurrent_block(x, p_rec, segment_pos), out_package) < 1e-13       # float64
print(f"naive recurrent block == recurrent_block_forward: {x.shape} -> {out_package.shape}")
for name, arr in [("linear_y / linear_x weight", p_rec["linear_x"]["weight"]),
                  ("conv_1d w", p_rec["conv_1d"]["w"]), ("rg_lru a_param", p_rec["rg_lru"]["a_param"]),
                  ("rg_lru gate w (a_gate, input_gate)", p_rec["rg_lru"]["a_gate"]["w"]),
                  ("linear_out weight", p_rec["linear_out"]["weight"])]:
    print(f"  {name:36s} {arr.shape}")

# %% [markdown]
# ## The gated MLP (Figure 2(b)) and the residual block (Figure 2(a))
#
# The MLP (§2.2) has the same shape as the recurrent block with the time mixing taken out: two linear branches of
# width $F = 3D$ (expansion factor $M = 3$ for every model of the paper), GeLU on one, their product, a linear layer
# back to $D$. The package stores both up-projections in one array `ffw_up.w` of shape (2, D, F) (recurrentgemma's
# layout: note (in, out) here, unlike the torch Linear layers).
#
# The residual block (§2.1) is pre-norm: each of the two sublayers reads an RMSNormed copy of the residual stream
# and adds its output back, so the stream itself is never normalised (the final RMSNorm before the output head
# does that once).

# %%
def mlp(x, p):
    """naive Figure 2(b): x (B, T, D) -> (B, T, D). Branch 0 goes through GeLU and gates branch 1."""
    gate = gelu(x @ p["ffw_up"]["w"][0] + p["ffw_up"]["b"][0])     # (B, T, F)
    value = x @ p["ffw_up"]["w"][1] + p["ffw_up"]["b"][1]          # (B, T, F)
    return linear(gate * value, p["ffw_down"])                     # (B, T, D)


def residual_block(x, p, temporal):
    """naive Figure 2(a): x (B, T, D) -> (B, T, D); temporal: the recurrent block or attention, (B, T, D) -> same."""
    r = x + temporal(rmsnorm(x, p["temporal_pre_norm"]))            # (B, T, D)
    return r + mlp(rmsnorm(r, p["channel_pre_norm"]), p["mlp_block"])   # (B, T, D)


assert rel_error(mlp(x, block0["mlp_block"]), mlp_forward(x, block0["mlp_block"])[0]) < 1e-14   # float64
print("naive gated MLP == mlp_forward")
# The attention block (Griffin's third block) was opened in notebook 3; here the package's attention_forward
# stands in for it, and notebook 10 writes it out too.
for i, (kind, p) in enumerate(zip(cfg.block_types, params["blocks"])):
    if kind == "recurrent":
        temporal = lambda z, p=p: recurrent_block(z, p["recurrent_block"], segment_pos)   # noqa: E731
    else:
        temporal = lambda z, p=p: attention_forward(z, p["attention_block"], segment_pos,   # noqa: E731
                                                    num_heads=cfg.num_heads, window=cfg.window)[0]
    naive = residual_block(x, p, temporal)                         # (B, T, D)
    package, _ = residual_block_forward(x, p, segment_pos, cfg)    # (B, T, D)
    assert rel_error(naive, package) < 1e-13, i                    # float64
    print(f"block {i} ({kind:9s}): naive residual block == residual_block_forward, rel. error "
          f"{rel_error(naive, package):.1e}")

# %% [markdown]
# ## One training step, written out
#
# `minigriffin train` repeats one step: draw a batch, run the model forward, take the loss, run the backward, clip
# the gradient, pick the learning rate, update the parameters with AdamW. Below, each of these is written out and
# checked against the package, and the whole step against `Trainer.train_step`
# ([minigriffin/train.py](../minigriffin/train.py)), the exact function the command line calls.
#
# The paper says only that the models are trained with AdamW, with the learning rate, weight decay and $\beta_2$
# tuned on small models (§3); it states no schedule, warm-up or clipping. The package uses the usual choices
# (nanoGPT's): a linear warm-up, a cosine decay, clipping by global norm, and the weight-decay exclusions of
# recurrentgemma's fine-tuning recipe ([minigriffin/optim.py](../minigriffin/optim.py)).
#
# The data: a short built-in text written to a temporary folder as a one-book corpus (notebook 5 trains on the real
# books; one step needs no more).

# %%
TEXT = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in "
        "want of a wife. However little known the feelings or views of such a man may be on his first entering a "
        "neighbourhood, this truth is so well fixed in the minds of the surrounding families, that he is "
        "considered the rightful property of some one or other of their daughters. ") * 4
data_dir = Path(tempfile.mkdtemp(prefix="minigriffin-nb09-"))
for split in ("train", "valid"):
    (data_dir / split).mkdir()
    (data_dir / split / "book.txt").write_text(TEXT)
corpus = load_corpus(data_dir, cache_dir=data_dir / "cache")

# The trainer, as `minigriffin train` builds it (one worker, so its sums run in the same order as ours).
train_cfg = TrainConfig(batch_size=4, seq_len=32, max_steps=100, lr=3e-3, min_lr=3e-4, warmup_steps=10,
                        weight_decay=0.1, grad_clip=1.0, cpu_workers=1)
trainer = Trainer(data_dir / "run", cfg, train_cfg, str(data_dir), corpus)
trainer.start_fresh()                                              # parameters drawn from the seed
params0 = tree_map(np.copy, trainer.params)                        # our copy: the package updates in place
batch = sample_batch(corpus.train, train_cfg.batch_size, train_cfg.seq_len, np.random.default_rng(1))
print({name: arr.shape for name, arr in batch._asdict().items()})

# %% [markdown]
# ### The loss and its gradient
#
# The loss is the mean cross-entropy of the next byte over the counted positions (`mask` drops a target that
# would be the next document's first byte). Its gradient with respect to the logits is the classic
# $(\operatorname{softmax} - \text{onehot}(\text{target})) / N$; from there `model_backward` runs the hand-written
# backward of every layer in reverse (notebook 4 checks it against finite differences).

# %%
logits, cache = model_forward(params0, batch.tokens, batch.segment_pos, cfg)   # (B, T, V)
shifted = logits - logits.max(axis=-1, keepdims=True)                # (B, T, V) for a stable softmax
log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))   # (B, T, V)
picked = np.take_along_axis(log_probs, batch.targets[..., None], axis=-1)[..., 0]   # (B, T)
n_counted = batch.mask.sum()
loss = -(picked * batch.mask).sum() / n_counted
dlogits = np.exp(log_probs)                                        # (B, T, V) softmax ...
rows, cols = np.indices(batch.targets.shape)                       # (B, T) each
dlogits[rows, cols, batch.targets] -= 1.0                          # ... minus the one-hot of the target
dlogits *= batch.mask[..., None] / n_counted                       # (B, T, V) mean over counted positions

loss_package, ce_cache = cross_entropy_forward(logits, batch.targets, batch.mask)
assert abs(loss - loss_package) < 1e-12 and rel_error(dlogits, cross_entropy_backward(1.0, ce_cache)) < 1e-13
grads = model_backward(dlogits, cache)                             # same tree as params
print(f"loss {loss:.4f} nats per byte (a uniform guess over 256 bytes scores log 256 = {np.log(256):.4f})")
print(f"{len(tree_leaves(grads))} gradient arrays, e.g. grads['blocks'][0]['recurrent_block']['rg_lru']"
      f"['a_param']: {grads['blocks'][0]['recurrent_block']['rg_lru']['a_param'].shape}")

# %% [markdown]
# ### Clipping by global norm
#
# All gradients are treated as one long vector: if its Euclidean norm exceeds `grad_clip`, every gradient is scaled
# by the same factor `grad_clip / norm`, so the direction is kept and only the length is capped. A step that hits a
# rare, huge gradient then moves no further than a normal one.

# %%
norm = np.sqrt(sum(np.sum(g**2) for _, g in tree_leaves(grads)))
clip_scale = min(1.0, train_cfg.grad_clip / norm)
clipped = tree_map(lambda g: g * clip_scale, grads)

grads_package = tree_map(np.copy, grads)
norm_package = clip_by_global_norm(grads_package, train_cfg.grad_clip)   # in place; returns the norm before
assert abs(norm - norm_package) < 1e-12 * norm
assert all(rel_error(g, dict(tree_leaves(grads_package))[path]) < 1e-15 for path, g in tree_leaves(clipped))
print(f"global norm {norm:.3f}; clip at {train_cfg.grad_clip} -> every gradient scaled by {clip_scale:.3f}")

# %% [markdown]
# ### The learning-rate schedule: linear warm-up, then a cosine
#
# For update number $t = 1, 2, \dots$: $\eta_t = \eta\, t / t_w$ during the $t_w$ warm-up steps (Adam's second
# moment is a poor estimate for the first few steps, so those steps are kept small), then
# $\eta_t = \eta_{\min} + \tfrac12 (\eta - \eta_{\min})(1 + \cos(\pi\, p))$ with $p$ the fraction of the remaining
# steps done, down to $\eta_{\min}$ at the last step.

# %%
def lr_at(step, lr, min_lr, warmup, max_steps):
    """naive warm-up + cosine: the learning rate of update number step (1-based)."""
    if step <= warmup:
        return lr * step / warmup
    progress = min(1.0, (step - warmup) / (max_steps - warmup))
    return min_lr + 0.5 * (lr - min_lr) * (1 + np.cos(np.pi * progress))


tc = train_cfg
steps = np.arange(1, tc.max_steps + 1)
naive_lrs = [lr_at(s, tc.lr, tc.min_lr, tc.warmup_steps, tc.max_steps) for s in steps]
package_lrs = [lr_schedule(s, lr=tc.lr, warmup_steps=tc.warmup_steps, max_steps=tc.max_steps, min_lr=tc.min_lr)
               for s in steps]
assert np.allclose(naive_lrs, package_lrs, rtol=1e-15, atol=0)
fig, ax = plt.subplots(figsize=(6, 2.6))
ax.plot(steps, package_lrs, label="lr_schedule (package)")
ax.plot(steps[::5], naive_lrs[::5], "o", ms=3, mfc="none", label="naive, every 5th step")
ax.axvline(tc.warmup_steps, color="grey", ls=":", lw=0.8)
ax.set_xlabel("update number")
ax.set_ylabel("learning rate")
ax.set_title(f"warm-up {tc.warmup_steps} steps, cosine from {tc.lr} to {tc.min_lr} at step {tc.max_steps}")
ax.legend(fontsize=8)
plt.show()
lr1 = naive_lrs[0]
print(f"the first update uses lr = {lr1:.1e}")

# %% [markdown]
# ### AdamW
#
# Adam keeps two running averages per parameter, of the gradient ($m$) and of its square ($v$), corrects both for
# starting at zero, and moves each parameter by $\eta\,\hat m / (\sqrt{\hat v} + \epsilon)$: a step of about $\eta$
# in the direction of the recent gradients, whatever their scale. AdamW adds weight decay *decoupled* from the
# gradient: $\eta\,\lambda\,p$ is subtracted directly, so it is not rescaled by $\sqrt{\hat v}$ (Loshchilov & Hutter
# 2019). Decay applies to the weight matrices only: not to biases, RMSNorm scales, the embedding, or any RG-LRU
# parameter (`a_param` and its gates), whose size means something other than "complexity" (`optim.decays`).

# %%
def adamw(params, grads, m, v, t, lr, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1):
    """naive AdamW update number t (1-based), returning new (params, m, v) trees."""
    grads, m, v = dict(tree_leaves(grads)), dict(tree_leaves(m)), dict(tree_leaves(v))   # {dotted path: array}
    new_p, new_m, new_v = {}, {}, {}
    for path, p in tree_leaves(params):
        g = grads[path]
        new_m[path] = beta1 * m[path] + (1 - beta1) * g
        new_v[path] = beta2 * v[path] + (1 - beta2) * g**2
        m_hat, v_hat = new_m[path] / (1 - beta1**t), new_v[path] / (1 - beta2**t)   # bias corrections
        update = m_hat / (np.sqrt(v_hat) + eps)
        if decays(path):                                           # decoupled weight decay
            update = update + weight_decay * p
        new_p[path] = p - lr * update
    return new_p, new_m, new_v


zeros = tree_map(np.zeros_like, params0)
new_params, _, _ = adamw(params0, clipped, zeros, zeros, t=1, lr=lr1, beta1=tc.beta1, beta2=tc.beta2, eps=tc.eps,
                         weight_decay=tc.weight_decay)
decayed = [path for path, _ in tree_leaves(params0) if decays(path)]
print(f"weight decay on {len(decayed)} of {len(tree_leaves(params0))} arrays, e.g. {decayed[:3]}")
print("no decay, e.g.:", [path for path, _ in tree_leaves(params0) if not decays(path)][:4])

# %% [markdown]
# ### The same step through the package
#
# `Trainer.train_step` does all of the above (`loss_and_grads`, `lr_schedule`, `clip_by_global_norm`,
# `adamw_update`) on its own parameters, in place. Fed the same batch, it must land on the same parameters:

# %%
loss_trainer, norm_trainer, lr_trainer = trainer.train_step(batch)
assert abs(loss_trainer - loss) < 1e-12 and abs(norm_trainer - norm) < 1e-9 * norm and lr_trainer == lr1
worst = max(rel_error(new_params[path], p) for path, p in tree_leaves(trainer.params))
assert worst < 1e-12, worst                                        # float64
print(f"Trainer.train_step: loss {loss_trainer:.6f}, norm {norm_trainer:.4f}, lr {lr_trainer:.1e}; "
      f"our parameters agree with the trainer's to {worst:.1e}")

# %% [markdown]
# ### Your turn: how far does the first step move a parameter?
#
# **Predict first.** At the first update, $m = (1-\beta_1) g$ and $v = (1-\beta_2) g^2$, and the bias corrections
# divide them by exactly $(1-\beta_1)$ and $(1-\beta_2)$. So what is $\hat m / \sqrt{\hat v}$ for each entry? What,
# then, is the largest $|\Delta p|$ over a parameter that has no weight decay, as a multiple of the learning rate,
# and does it depend on how big the gradient was, or on the clipping? Write your answer down, then run the cell
# (change `grad_clip` in `train_cfg` above to test the last part).

# %%
before = dict(tree_leaves(params0))
for path in ("blocks.0.recurrent_block.rg_lru.a_param", "blocks.0.recurrent_block.conv_1d.b", "final_norm.scale",
             "blocks.0.recurrent_block.linear_x.weight", "blocks.2.attention_block.proj_q.weight"):
    step_size = np.abs(new_params[path] - before[path])
    print(f"{path:42s} max |dp| / lr = {step_size.max() / lr1:.4f}, median {np.median(step_size) / lr1:.4f}")

# %% [markdown]
# (What the cell shows: at step 1, $\hat m / \sqrt{\hat v} = g / |g| = \pm 1$ for every entry whose gradient is
# well above $\epsilon$, so every parameter moves by the learning rate itself, plus $\eta \lambda |p|$ where weight
# decay applies, whatever the size of its gradient: clipping cannot change the first step. Adam is invariant to
# the gradient's scale.)
#
# ## Handing over to the command line
#
# That is the whole training step. `minigriffin train` runs it in a loop and adds what a long run needs: a
# validation loss every `eval_every` steps, checkpoints (`last.npz`, and `best.npz` on a new best validation loss),
# a guard that stops on a non-finite loss or gradient and saves the state before it, Ctrl-C that saves and prints
# the resume command, and bit-identical resumption ([docs/reliability.md](../docs/reliability.md)). The cell below
# runs it on the same text with the same settings (as `minigriffin train --preset griffin-tiny ...` would from a
# shell); notebook 5 does it on the books.

# %%
n_steps = 200 if FULL_RUN else 40
code = minigriffin(["train", "--preset", "griffin-tiny", "--width=32", "--lru_width=48", "--mlp_expanded_width=96",
                    "--attention_window_size=6", "--batch_size=4", "--seq_len=32", f"--max_steps={n_steps}",
                    "--warmup_steps=10", "--lr=3e-3", "--min_lr=3e-4", f"--eval_every={n_steps // 4}",
                    "--eval_batches=2", f"--log_every={n_steps // 4}", "--cpu_workers=1",
                    "--data-dir", str(data_dir), "--run-dir", str(data_dir / "cli-run")])
assert code == 0
records = read_metrics(data_dir / "cli-run")
print(f"{len(records)} steps; loss {records[0]['loss']:.3f} -> {records[-1]['loss']:.3f}; "
      f"the learning rate went {records[0]['lr']:.1e} -> {max(r['lr'] for r in records):.1e} -> "
      f"{records[-1]['lr']:.1e}")

# %% [markdown]
# (The text repeats a 400-byte passage, so the loss falls quickly: the model starts memorising it.) Next:
# [notebook 10](10_griffin_in_one_page.ipynb) joins the pieces of this notebook into one forward pass of the whole
# model on one page.
