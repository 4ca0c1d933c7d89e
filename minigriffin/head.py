"""The model's ends: token embedding, tied output projection, final-logit soft-cap, and the loss.

    x0 = Emb[tokens] (* bf16(sqrt(D)) if configured)      recurrentgemma Embedder.encode
    logits = x @ Emb.T                                     tied output head (Embedder.decode)
    logits = c * tanh(logits / c)                          soft-cap (RecurrentGemma presets, c = 30)
    loss = mean over unmasked positions of -log softmax(logits)[target]

The embedding's gradient has two sources (input lookup and output projection); they are added in one
place only, model.model_backward.
"""

import math
from typing import NamedTuple

import numpy as np

from minigriffin.xp import array_namespace


def round_to_bfloat16(value):
    """Round a Python float to the nearest bfloat16 (round half to even), returned as a Python float.
    recurrentgemma scales embeddings by sqrt(D) cast to bfloat16, e.g. D = 2560 gives 50.5, not 50.596."""
    bits = np.array([value], dtype=np.float32).view(np.uint32)[0]
    bits = (int(bits) + 0x7FFF + ((int(bits) >> 16) & 1)) & 0xFFFF0000
    return float(np.array([bits], dtype=np.uint32).view(np.float32)[0])


def embedding_scale(width):
    """The embedding multiplier recurrentgemma uses: bf16(sqrt(D))."""
    return round_to_bfloat16(math.sqrt(width))


def embedding_forward(tokens, table, scale=None):
    """tokens: (B, T) ints in [0, V); table: (V, D) -> x: (B, T, D); scale: a float or None."""
    xp = array_namespace(table)
    V = table.shape[0]
    if tokens.ndim != 2 or tokens.dtype.kind not in "iu":
        raise TypeError(f"tokens must be a (B, T) integer array, got {tokens.dtype} {tuple(tokens.shape)}")
    if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) >= V):
        raise ValueError(f"tokens must lie in [0, {V}), got values in [{int(tokens.min())}, {int(tokens.max())}]")
    x = table[tokens]                                      # (B, T, D)
    if scale is not None:
        x = x * xp.asarray(scale, dtype=table.dtype)
    return x, (tokens, V, scale)


def embedding_backward(dx, cache):
    """dx: (B, T, D) -> dtable: (V, D) (scatter-add of the rows that were looked up)."""
    xp = array_namespace(dx)
    tokens, V, scale = cache
    if scale is not None:
        dx = dx * scale
    dtable = xp.zeros((V, dx.shape[-1]), dtype=dx.dtype)   # (V, D)
    xp.add.at(dtable, tokens.reshape(-1), dx.reshape(-1, dx.shape[-1]))
    return dtable


def softcap_forward(logits, cap):
    """c * tanh(logits / c); cap = 0 means no cap (identity)."""
    xp = array_namespace(logits)
    if not cap:
        return logits, None
    t = xp.tanh(logits / cap)
    return cap * t, t


def softcap_backward(dout, cache):
    """forward was y = c tanh(x / c)  ->  dx = dy (1 - tanh^2)."""
    return dout if cache is None else dout * (1.0 - cache * cache)


class CrossEntropyCache(NamedTuple):
    probs: object      # (B, T, V)
    targets: object    # (B, T)
    weights: object    # (B, T) 1 / (number of counted positions) where counted, else 0


def cross_entropy_forward(logits, targets, mask=None):
    """Mean softmax cross-entropy over counted positions. logits: (B, T, V); targets: (B, T) ints;
    mask: (B, T) bool, True where the position counts (None: all). Returns (loss: float, cache)."""
    xp = array_namespace(logits)
    if targets.shape != logits.shape[:2]:
        raise ValueError(f"targets must have shape {tuple(logits.shape[:2])}, got {tuple(targets.shape)}")
    if mask is None:
        mask = xp.ones(targets.shape, dtype=bool)
    count = int(mask.sum())
    if count == 0:
        raise ValueError("cross_entropy: the mask excludes every position, so the mean loss is undefined")
    shifted = logits - logits.max(axis=-1, keepdims=True)                  # (B, T, V) for stability
    log_z = xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))            # (B, T, 1)
    log_probs = shifted - log_z                                             # (B, T, V)
    picked = xp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]   # (B, T)
    weights = mask.astype(logits.dtype) / count                            # (B, T)
    loss = -float((picked * weights).sum())
    return loss, CrossEntropyCache(xp.exp(log_probs), targets, weights)


def cross_entropy_backward(dloss, cache):
    """dloss: scalar -> dlogits: (B, T, V) = dloss * weight * (softmax - onehot(target))."""
    xp = array_namespace(cache.probs)
    dlogits = cache.probs.copy()                                            # (B, T, V)
    xp.put_along_axis(dlogits, cache.targets[..., None],
                      xp.take_along_axis(dlogits, cache.targets[..., None], axis=-1) - 1.0, axis=-1)
    return dlogits * (dloss * cache.weights[..., None])
