"""AdamW with decoupled weight decay, linear warm-up then cosine decay, and global-norm gradient clipping.

    lr_t = schedule(step)                      warm-up from 0 over `warmup_steps`, cosine down to `min_lr`
    g    = clip(grads, max_norm)               one scale for all gradients: min(1, max_norm / ||g||_2)
    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
    p -= lr_t * (m / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps) + wd * p)      (wd only where decay_mask)

Weight decay follows recurrentgemma's fine-tuning recipe (colabs/fine_tuning_tutorial_jax.ipynb: optax.adamw
with no decay on rg_lru/*, embedder/*, and parameters named b or scale): no decay on norms, biases, the RG-LRU
(a_param and its gates) or the embedding. Parameters, m and v are updated in place.
"""

import math
from typing import NamedTuple

import numpy as np

from minigriffin.tree import tree_leaves, tree_map, unflatten
from minigriffin.xp import array_namespace


class AdamWState(NamedTuple):
    step: int       # number of updates done so far
    m: dict         # first moments, same tree as params
    v: dict         # second moments, same tree as params


def adamw_init(params):
    """Zero moments shaped like params."""
    def zeros(p):
        return array_namespace(p).zeros_like(p)             # on the parameter's device
    return AdamWState(0, tree_map(zeros, params), tree_map(zeros, params))


def decays(path):
    """Whether weight decay applies to the parameter at this dotted path (see the module docstring)."""
    parts = path.split(".")
    return not ("rg_lru" in parts or "embedder" in parts or parts[-1] in ("b", "bias", "scale"))


def decay_mask(params):
    """A tree of bools: True where weight decay applies."""
    return unflatten({path: decays(path) for path, _ in tree_leaves(params)})


def lr_schedule(step, *, lr, warmup_steps, max_steps, min_lr=0.0):
    """Learning rate for update number `step` (1-based): linear warm-up to lr, then cosine decay to min_lr."""
    if step <= warmup_steps:
        return lr * step / max(1, warmup_steps)
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)       # in (0, 1)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def global_norm(grads):
    """sqrt of the sum of squares of every gradient element, accumulated in float64."""
    total = 0.0
    for _, g in tree_leaves(grads):
        flat = g.reshape(-1).astype(np.float64)
        total += float(array_namespace(g).dot(flat, flat))   # float(): one device -> host copy per leaf
    return math.sqrt(total)


def clip_by_global_norm(grads, max_norm):
    """Scale all gradients by min(1, max_norm / norm) in place. Returns the norm before clipping."""
    norm = global_norm(grads)
    if max_norm and norm > max_norm:
        scale = max_norm / norm
        for _, g in tree_leaves(grads):
            g *= scale
    return norm


def adamw_update(params, grads, state, *, lr, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1):
    """One AdamW step at learning rate `lr`, in place on params and the moments. Returns the new state."""
    t = state.step + 1
    bias1, bias2 = 1.0 - beta1**t, 1.0 - beta2**t
    m_leaves, v_leaves = dict(tree_leaves(state.m)), dict(tree_leaves(state.v))
    grad_leaves = dict(tree_leaves(grads))
    for path, p in tree_leaves(params):
        g, m, v = grad_leaves[path], m_leaves[path], v_leaves[path]
        m *= beta1
        m += (1.0 - beta1) * g
        v *= beta2
        v += (1.0 - beta2) * (g * g)
        xp = array_namespace(p)
        update = (m / bias1) / (xp.sqrt(v / bias2) + eps)
        if weight_decay and decays(path):
            update += weight_decay * p                     # decoupled: not part of the gradient
        p -= (lr * update).astype(p.dtype, copy=False)
    return AdamWState(t, state.m, state.v)
