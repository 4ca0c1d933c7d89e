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
# # 4. Putting the model together
#
# Paper: [De, Smith et al. 2024, "Griffin", arXiv 2402.19427](https://arxiv.org/abs/2402.19427), §2 and Figure 2, Table 2. Docs: [docs/architecture.md](../docs/architecture.md).
#
# Hawk, Griffin and the MQA Transformer baseline share everything except which temporal block each residual block
# uses. Every residual block is
#
# ```
# x -> RMSNorm -> temporal block (recurrent or local MQA attention) -> + x -> RMSNorm -> gated MLP -> + 
# ```
#
# with a tied embedding at both ends. This notebook shows the three block patterns, counts parameters against the
# hyperparameters of the paper's Table 2, checks the whole model's hand-written backward, and compares the model with
# DeepMind's own implementation, `recurrentgemma`, when it is installed.
#
# The data flow through the package is drawn in [docs/architecture.md](../docs/architecture.md); code:
# [minigriffin/model.py](../minigriffin/model.py), [minigriffin/blocks.py](../minigriffin/blocks.py).

# %%
import contextlib
import importlib.util
import os
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from minigriffin.config import ATTENTION, PRESETS, RECURRENT, make_config
from minigriffin.gradcheck import assert_grads_close
from minigriffin.head import cross_entropy_backward, cross_entropy_forward
from minigriffin.model import model_backward, model_forward
from minigriffin.params import count_params, init_params
from minigriffin.tree import num_params, tree_leaves

# Unset: small sizes that run in seconds. MINIGRIFFIN_FULL_RUN=1: the sizes quoted in the text.
FULL_RUN = os.environ.get("MINIGRIFFIN_FULL_RUN") == "1"
plt.rcParams.update({"figure.dpi": 72, "savefig.dpi": 72, "font.size": 9})
rng = np.random.default_rng(0)

# %% [markdown]
# ## Block patterns
#
# * **Hawk**: every temporal block is recurrent (Conv1D + RG-LRU, notebook 2).
# * **Griffin**: two recurrent blocks, then one local-attention block, repeating (R, R, A, R, R, A, ...).
# * **MQA Transformer**: every temporal block is multi-query attention, and it is **global**: the `mqa-*` presets
#   set `global_attention=True`, so each query sees every earlier token of its document however long it is, and the
#   preset's `attention_window_size` is not used. Griffin's attention is **local**: a window of
#   `attention_window_size` tokens (128 in the small presets, 1024 in the paper's).
#
# The presets are named `<family>-<size>`; here are the 12-block models of the paper's 100M row.

# %%
families = ("hawk", "griffin", "mqa")
fig, ax = plt.subplots(figsize=(7, 1.8))
for row, family in enumerate(families):
    for i, kind in enumerate(PRESETS[f"{family}-100m"].block_types):
        colour = "#6baed6" if kind == RECURRENT else "#fd8d3c"
        ax.add_patch(plt.Rectangle((i, -row - 0.4), 0.9, 0.8, color=colour))
        ax.text(i + 0.45, -row, "R" if kind == RECURRENT else "A", ha="center", va="center", fontsize=8)
ax.set_xlim(-0.1, 12)
ax.set_ylim(-2.6, 0.6)
ax.set_yticks([0, -1, -2], [f"{f}-100m" for f in families])
ax.set_xticks(np.arange(12) + 0.45, range(12))
ax.set_xlabel("residual block (R = recurrent, A = MQA attention)")
for side in ("top", "right", "left"):
    ax.spines[side].set_visible(False)
plt.show()
for family in families:
    cfg = PRESETS[f"{family}-small"]
    attention = ("no attention" if ATTENTION not in cfg.block_types else "global attention" if cfg.global_attention
                 else f"local attention, window {cfg.attention_window_size}")
    print(f"{family}-small: D = {cfg.width}, {cfg.num_layers} blocks {''.join(k[0].upper() for k in cfg.block_types)}, "
          f"{attention}, {count_params(cfg):,} parameters")

# %% [markdown]
# ## Parameter counts against Table 2
#
# The paper's Table 2 gives, per model size, the width $D$, the RNN width $D_\text{RNN}$ ($\approx 4D/3$), the depth
# and the number of heads ($D/128$, so $D_h = 128$), with MLP expansion 3. Counting the weight matrices from those
# numbers gives a closed form, per residual block:
#
# * gated MLP: $2 \cdot D \cdot 3D + 3D \cdot D = 9D^2$
# * recurrent block: `linear_x`, `linear_y`, `linear_out` give $3 D D_\text{RNN}$ ($= 4D^2$ when $D_\text{RNN} =
#   4D/3$, the size of a multi-head attention block, which is why the paper picks that ratio); the two
#   block-diagonal gates with 16 blocks add $2 D_\text{RNN}^2 / 16$
# * MQA block: $D^2$ for the queries, $D^2$ for the output, and only $2 D D_h$ for the single key/value head
#
# plus $V D$ for the tied embedding. `count_params` counts every array exactly (biases, norms, the Conv1D and
# `a_param` included); the closed form keeps only the matrices. Our vocabulary is 256 bytes; the paper does not say
# which tokenizer its models use (RecurrentGemma's checkpoints use a 256k-token vocabulary), so the embedding, and
# hence the total, is not comparable with the nominal sizes: compare the parameters outside the embedding.

# %%
def table2_formula(cfg):
    """Weight-matrix parameters from Table 2's hyperparameters (no biases, norms, Conv1D or a_param)."""
    D, E, Dh, G = cfg.width, cfg.lru_width, cfg.head_dim, cfg.gate_blocks
    per_block = {RECURRENT: 9 * D * D + 3 * D * E + 2 * E * E // G,
                 ATTENTION: 9 * D * D + 2 * D * D + 2 * D * Dh}
    return cfg.vocab_size * D + sum(per_block[kind] for kind in cfg.block_types)


print(f"{'preset':<13} {'D':>5} {'D_RNN':>5} {'depth':>5} {'count_params':>14} {'formula':>14} {'diff':>7} "
      f"{'without embedding':>18}")
for size in ("100m", "200m", "400m", "1b", "3b", "7b", "14b"):
    for family in families:
        cfg = PRESETS[f"{family}-{size}"]
        exact, formula = count_params(cfg), table2_formula(cfg)
        assert abs(exact - formula) / exact < 0.01
        body = exact - cfg.vocab_size * cfg.width
        print(f"{family + '-' + size:<13} {cfg.width:>5} {cfg.lru_width:>5} {cfg.num_layers:>5} {exact:>14,} "
              f"{formula:>14,} {(exact - formula) / exact:>7.2%} {body / 1e6:>16.1f} M")

# %% [markdown]
# The closed form is within a fraction of a percent of the exact count: the matrices are nearly everything. Hawk
# and Griffin come out slightly larger than the MQA baseline at the same row, because a recurrent block
# ($\approx 4D^2$ plus gates) is larger than a multi-query attention block ($\approx 2D^2$). With a 256k vocabulary
# the embedding would add $256000 \cdot D$ (197M at $D = 768$), which is why the paper's nominal sizes cannot be
# compared with totals at our 256-byte vocabulary.
#
# `count_params` works from the shapes alone, so even the 14B presets are counted without allocating anything; for
# the small presets it must equal the size of an actual initialisation:

# %%
for family in families:
    cfg = PRESETS[f"{family}-small"]
    assert count_params(cfg) == num_params(init_params(cfg, rng))
print("count_params == num_params(init_params(...)) for the three small presets")

# %% [markdown]
# ## One forward and backward pass
#
# `model_forward` returns the logits and a cache; `model_backward` turns the gradient of the loss with respect to the
# logits into a gradient for every parameter, a nested dict shaped like the parameters. At initialisation the model
# knows nothing, so the loss on random tokens is near that of a uniform guess, $\ln 256 \approx 5.55$ nats; a little
# above it, because the tied head starts with logits of standard deviation about 1, which costs about half a nat
# ($\ln V + \sigma^2/2$ for Gaussian logits).

# %%
cfg = PRESETS["griffin-small"]
params = init_params(cfg, rng)
B, T = 2, 128
tokens = rng.integers(0, cfg.vocab_size, (B, T))                       # (B, T)
targets = rng.integers(0, cfg.vocab_size, (B, T))                      # (B, T)
segment_pos = np.broadcast_to(np.arange(T), (B, T))                    # (B, T): one document per row
logits, cache = model_forward(params, tokens, segment_pos, cfg)        # (B, T, V)
loss, ce_cache = cross_entropy_forward(logits, targets)
grads = model_backward(cross_entropy_backward(1.0, ce_cache), cache)
print(f"logits {logits.shape} {logits.dtype}; loss {loss:.3f} (ln 256 = {np.log(256):.3f}); "
      f"{len(tree_leaves(grads))} gradient arrays, {sum(g.size for _, g in tree_leaves(grads)):,} numbers")

# %% [markdown]
# The gradient of the whole model, every parameter of a tiny Griffin, checked against finite differences of the loss
# in float64 (a few sampled entries per array; fourth-order differences, which tolerate the larger step the deep
# composition needs):

# %%
cfg_tiny = make_config("griffin-tiny", dtype="float64", scan_backend="reference")
p_tiny = init_params(cfg_tiny, rng)
seg = np.array([np.arange(13), np.r_[np.arange(5), np.arange(8)]])    # (B, T): row 1 packs two documents
tok, tgt = rng.integers(0, 256, seg.shape), rng.integers(0, 256, seg.shape)


def loss_fn(params):
    logits, _ = model_forward(params, tok, seg, cfg_tiny)
    return np.array(cross_entropy_forward(logits, tgt)[0])


logits, cache = model_forward(p_tiny, tok, seg, cfg_tiny)
_, ce_cache = cross_entropy_forward(logits, tgt)
g_tiny = model_backward(cross_entropy_backward(1.0, ce_cache), cache)
reports = assert_grads_close(loss_fn, {"params": p_tiny}, {"params": g_tiny}, np.array(1.0),
                             rtol=1e-6, atol=1e-9, eps=1e-3, order=4, max_elements=3 if FULL_RUN else 2)
worst = max(reports, key=lambda r: r.max_rel_error)
print(f"{len(reports)} parameter arrays checked; worst relative error {worst.max_rel_error:.1e}")

# %% [markdown]
# ## Agreement with DeepMind's recurrentgemma
#
# `recurrentgemma` (PyPI, 1.0.1) is DeepMind's released implementation; its PyTorch model uses the same parameter
# names and layouts, so `minigriffin.convert.to_torch_state_dict` loads our weights into it unchanged. The helpers in
# [tests/oracle_utils.py](../tests/oracle_utils.py) build that model from one of our configs and, for an exact
# float64 comparison, patch the three places where recurrentgemma computes in float32 even in a float64 model (the
# scan accumulator, the RoPE frequencies and the softmax). The gradients come from torch's autograd.
#
# This needs the test extras (`pip install "minigriffin[test,oracle]"`, PyTorch CPU and recurrentgemma); without
# them the cell says so and skips.

# %%
TESTS = Path("..") / "tests"
missing = [m for m in ("torch", "recurrentgemma", "jax", "flax", "pytest") if importlib.util.find_spec(m) is None]
if missing or not (TESTS / "oracle_utils.py").is_file():
    print(f"SKIPPED: the comparison with recurrentgemma needs {', '.join(missing) or 'tests/oracle_utils.py'} "
          f"(pip install \"minigriffin[test,oracle]\" in a checkout of the repository).")
    have_oracle = False
else:
    sys.path.insert(0, str(TESTS.resolve()))
    import oracle_utils
    import torch

    from minigriffin.convert import to_torch_state_dict
    have_oracle = True
    seg = np.array([np.arange(13), np.r_[np.arange(5), np.arange(8)]])    # packed documents, window 4 < T
    print(f"{'model':<8} {'dtype':<8} {'logits rel. error':>18} {'worst gradient rel. error':>26}")
    for family in families:
        for dtype in ("float64", "float32"):
            cfg = make_config(f"{family}-tiny", dtype=dtype, scan_backend="reference")
            params = init_params(cfg, np.random.default_rng(1))
            tok = rng.integers(0, cfg.vocab_size, seg.shape)
            logits, cache = model_forward(params, tok, seg, cfg)
            dlogits = rng.standard_normal(logits.shape).astype(dtype)
            ours = to_torch_state_dict(model_backward(dlogits, cache))
            exact = oracle_utils.exact_float64_torch() if dtype == "float64" else contextlib.nullcontext()
            with exact:
                model = oracle_utils.torch_griffin(cfg, params)
                t_logits, _ = model(torch.from_numpy(tok), torch.from_numpy(seg), return_cache=False)
                (t_logits * torch.from_numpy(dlogits)).sum().backward()
            theirs = {name: p.grad.numpy() for name, p in model.named_parameters()}
            assert set(ours) == set(theirs)
            err_logits = oracle_utils.max_rel_error(logits, t_logits.detach().numpy())
            err_grads = max(oracle_utils.max_rel_error(ours[k], theirs[k]) for k in theirs)
            bound = 1e-10 if dtype == "float64" else 2e-5
            assert err_logits <= bound and err_grads <= bound, (family, dtype, err_logits, err_grads)
            print(f"{family:<8} {dtype:<8} {err_logits:>18.1e} {err_grads:>26.1e}")

# %% [markdown]
# In float64 the two implementations agree to rounding error, logits and every gradient; in float32 to about the
# precision of float32 arithmetic. The tests (`tests/test_oracle_*.py`) make the same comparison for every layer,
# for packed documents and for decoding with a cache.
#
# ## Your turn
#
# Local attention with a window as long as the sequence sees everything global attention sees. **Predict first**:
# on rows of 13 tokens (the second row packs documents of 5 and 8), for which windows $W$ does a tiny Griffin give
# the same logits as the same weights with `global_attention=True`: $W = 12$? $W = 7$? $W = 4$? Then run the cell
# and try other windows. (Notebook 6 asks what this means for extrapolation: a Griffin whose window is as long as
# its training sequences is, in training, a model with global attention.)

# %%
W_try = 7                                     # try 12, 7, 4, 1
cfg_local = make_config("griffin-tiny", dtype="float64", attention_window_size=W_try)
cfg_global = make_config("griffin-tiny", dtype="float64", global_attention=True)
p_same = init_params(cfg_local, np.random.default_rng(2))     # the same weights for both
seg = np.array([np.arange(13), np.r_[np.arange(5), np.arange(8)]])    # (B, T): row 1 packs two documents
tok = np.random.default_rng(3).integers(0, 256, seg.shape)            # (B, T)
logits_local, _ = model_forward(p_same, tok, seg, cfg_local)
logits_global, _ = model_forward(p_same, tok, seg, cfg_global)
differs = np.abs(logits_local - logits_global).max(axis=-1) > 1e-12   # (B, T) positions whose logits differ
for row in range(2):
    print(f"W = {W_try}, row {row}: logits differ from global attention at positions "
          f"{np.flatnonzero(differs[row]).tolist() or 'none'}")

# %% [markdown]
# (Once you have run it: a query at position $t$ of a document sees $\min(t, W)$ earlier keys, so the logits agree
# with global attention wherever every document position is at most $W$: $W = 12$ changes nothing on 13 tokens,
# $W = 7$ changes positions 8-12 of the first row but nothing in the second, whose documents have at most 8 tokens.
# A window is invisible until a document outgrows it.)
#
# Next: [training on books](05_training.ipynb).
