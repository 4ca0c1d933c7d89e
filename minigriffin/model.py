"""The whole model: embedding, residual blocks, final norm, tied head, soft-cap (Griffin §2; recurrentgemma
griffin.Griffin.forward). Hawk, Griffin and the MQA baseline differ only in cfg.block_types.

    logits, cache = model_forward(params, tokens, segment_pos, cfg)
    loss, loss_cache = cross_entropy_forward(logits, targets)
    grads = model_backward(cross_entropy_backward(1.0, loss_cache), cache)

The embedding gets gradient from two places (input lookup, tied output head); they are summed here and only
here ("accumulation in exactly one place").

Notebook: notebooks/04_model.ipynb
"""

from typing import NamedTuple

import numpy as np

from minigriffin.blocks import residual_block_backward, residual_block_forward
from minigriffin.head import (embedding_backward, embedding_forward, embedding_scale, softcap_backward,
                              softcap_forward)
from minigriffin.layers import rmsnorm_backward, rmsnorm_forward
from minigriffin.state import ModelState, check_state
from minigriffin.xp import array_namespace


class ModelCache(NamedTuple):
    embedding: object
    blocks: list
    final_norm: object
    normed: object       # (B, T, D) final-normed activations (input of the tied head)
    table: object        # (V, D) the embedding table
    softcap: object
    state: object = None # ModelState after these tokens, when a state was given


def check_inputs(params, tokens, segment_pos, cfg):
    table = params["embedder"]["input_embedding"]
    if table.dtype != np.dtype(cfg.dtype):
        raise TypeError(f"params are {table.dtype} but cfg.dtype is {cfg.dtype!r}; cast with tree.tree_cast")
    if len(params["blocks"]) != cfg.num_layers:
        raise ValueError(f"params have {len(params['blocks'])} blocks, cfg has {cfg.num_layers}")
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be (B, T), got shape {tuple(tokens.shape)}")
    if segment_pos.shape != tokens.shape or segment_pos.dtype.kind not in "iu":
        raise ValueError(f"segment_pos must be an integer array of shape {tuple(tokens.shape)}, "
                         f"got {segment_pos.dtype} {tuple(segment_pos.shape)}")
    if tokens.shape[1] == 0:
        raise ValueError("tokens has T=0: nothing to run")


def model_forward(params, tokens, segment_pos, cfg, state=None):
    """tokens, segment_pos: (B, T) ints (segment_pos = position within the document, 0 at a start).
    Returns logits: (B, T, V) in cfg.dtype and the cache for model_backward.

    state: a ModelState (minigriffin.state.init_state, or cache.state of the previous call) to continue a
    sequence from: its chunks then give the logits of one call on the whole sequence (segment_pos continues
    across chunks, and a 0 anywhere still starts a document); the new state is cache.state. This is the one
    forward pass for training, chunked evaluation, prefill and sampling (minigriffin.inference wraps it)."""
    check_inputs(params, tokens, segment_pos, cfg)
    xp = array_namespace(tokens, segment_pos)
    if state is not None:
        check_state(state, cfg, tokens.shape[0])
    # Document ids, continuing from the state's last token: taps and attention join only equal ids.
    start = 0 if state is None else state.doc[:, None]
    doc = start + xp.cumsum(segment_pos == 0, axis=1)                      # (B, T)
    table = params["embedder"]["input_embedding"]                          # (V, D)
    scale = embedding_scale(cfg.width) if cfg.embeddings_scale_by_sqrt_dim else None
    x, embedding_cache = embedding_forward(tokens, table, scale)           # (B, T, D)
    block_caches = []
    block_states = (None,) * cfg.num_layers if state is None else state.blocks
    for p, block_state in zip(params["blocks"], block_states):
        x, block_cache = residual_block_forward(x, p, segment_pos, cfg, doc=doc, state=block_state)  # (B, T, D)
        block_caches.append(block_cache)
    normed, final_norm_cache = rmsnorm_forward(x, params["final_norm"])   # (B, T, D)
    logits = normed @ table.T                                              # (B, T, V) tied head
    logits, softcap_cache = softcap_forward(logits, cfg.logits_soft_cap)
    new_state = None
    if state is not None:
        new_state = ModelState(tuple(c.state for c in block_caches), doc[:, -1].copy(),
                               state.num_tokens + tokens.shape[1], state.plan)
    return logits, ModelCache(embedding_cache, block_caches, final_norm_cache, normed, table, softcap_cache,
                              new_state)


def model_backward(dlogits, cache):
    """dlogits: (B, T, V) -> grads, a nested dict with the same keys and shapes as params."""
    xp = array_namespace(dlogits)
    dlogits = softcap_backward(dlogits, cache.softcap)
    V, D = cache.table.shape
    # forward was logits = normed @ table.T
    dtable_head = dlogits.reshape(-1, V).T @ cache.normed.reshape(-1, D)   # (V, D)
    dx = dlogits @ cache.table                                             # (B, T, D)
    dx, final_norm_grads = rmsnorm_backward(dx, cache.final_norm)
    block_grads = [None] * len(cache.blocks)
    for i in range(len(cache.blocks) - 1, -1, -1):
        dx, block_grads[i] = residual_block_backward(dx, cache.blocks[i])
    dtable_input = embedding_backward(dx, cache.embedding)
    dtable = xp.add(dtable_head, dtable_input)                             # the one accumulation
    return {"embedder": {"input_embedding": dtable}, "blocks": block_grads, "final_norm": final_norm_grads}
