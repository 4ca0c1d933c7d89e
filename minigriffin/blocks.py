"""Blocks: composition only, no new math (Griffin §2, Figure 2; recurrentgemma modules.py).

    recurrent block:  y = gelu(linear_y(x));  u = rglru(conv1d(linear_x(x)));  out = linear_out(u * y)
                      (rglru: the RG-LRU, or the complex-gated CG-LRU when cfg.lru_only_real is False)
    residual block:   r = x + temporal(rmsnorm_t(x));  out = r + mlp(rmsnorm_c(r))
where temporal is the recurrent block or local multi-query attention.
"""

from typing import NamedTuple

from minigriffin.attention import attention_backward, attention_forward
from minigriffin.cglru import cglru_backward, cglru_forward
from minigriffin.config import RECURRENT
from minigriffin.conv1d import Conv1DState, conv1d_backward, conv1d_forward
from minigriffin.layers import (gelu_tanh_backward, gelu_tanh_forward, linear_backward, linear_forward,
                                mlp_backward, mlp_forward, rmsnorm_backward, rmsnorm_forward)
from minigriffin.rglru import rglru_backward, rglru_forward
from minigriffin.state import RecurrentState


class RecurrentBlockCache(NamedTuple):
    linear_y: object
    gelu: object
    y: object          # (B, T, E) gelu branch
    linear_x: object
    conv: object
    rglru: object
    u: object          # (B, T, E) RG-LRU output
    linear_out: object
    state: object = None   # RecurrentState after this chunk, when a state was given
    only_real: bool = True  # which unit ran: the RG-LRU, or (False) the CG-LRU


def recurrent_block_forward(x, p, segment_pos, *, scan_backend="auto", doc=None, state=None, only_real=True):
    """x: (B, T, D) -> out: (B, T, D), cache. p: {"linear_y", "linear_x", "linear_out", "conv_1d", "rg_lru"}.
    doc: document ids (see conv1d_forward); state: a RecurrentState (RG-LRU h and the Conv1D's last inputs)
    to continue from; the new one is cache.state. only_real=False: the CG-LRU (its h is [Re h ; Im h], (B, E))."""
    lru_forward = rglru_forward if only_real else cglru_forward
    conv_state = None if state is None else Conv1DState(state.conv_x, state.conv_doc)
    h0 = None if state is None else state.h
    y_pre, linear_y_cache = linear_forward(x, p["linear_y"])              # (B, T, E)
    y, gelu_cache = gelu_tanh_forward(y_pre)                               # (B, T, E)
    u_pre, linear_x_cache = linear_forward(x, p["linear_x"])              # (B, T, E)
    u_conv, conv_cache = conv1d_forward(u_pre, p["conv_1d"], segment_pos, doc=doc, state=conv_state)  # (B, T, E)
    u, h_last, rglru_cache = lru_forward(u_conv, p["rg_lru"], segment_pos, h0=h0, backend=scan_backend)
    out, linear_out_cache = linear_forward(u * y, p["linear_out"])        # (B, T, D)
    new_state = None if state is None else RecurrentState(h_last, conv_cache.state.x, conv_cache.state.doc)
    return out, RecurrentBlockCache(linear_y_cache, gelu_cache, y, linear_x_cache, conv_cache, rglru_cache,
                                    u, linear_out_cache, new_state, only_real)


def recurrent_block_backward(dout, cache):
    """dout: (B, T, D) -> dx: (B, T, D), grads with the keys of p."""
    c = cache
    dprod, linear_out_grads = linear_backward(dout, c.linear_out)         # (B, T, E)
    du, dy = dprod * c.y, dprod * c.u                                      # forward: linear_out(u * y)
    du_conv, _, rglru_grads = (rglru_backward if c.only_real else cglru_backward)(du, None, c.rglru)
    du_pre, conv_grads = conv1d_backward(du_conv, c.conv)
    dx_from_x, linear_x_grads = linear_backward(du_pre, c.linear_x)
    dx_from_y, linear_y_grads = linear_backward(gelu_tanh_backward(dy, c.gelu), c.linear_y)
    grads = {"linear_y": linear_y_grads, "linear_x": linear_x_grads, "linear_out": linear_out_grads,
             "conv_1d": conv_grads, "rg_lru": rglru_grads}
    return dx_from_x + dx_from_y, grads


class ResidualBlockCache(NamedTuple):
    kind: str
    temporal_norm: object
    temporal: object
    channel_norm: object
    mlp: object
    state: object = None   # the temporal block's state after this chunk, when a state was given


def residual_block_forward(x, p, segment_pos, cfg, *, doc=None, state=None):
    """Pre-norm residual block. x: (B, T, D) -> (B, T, D). p holds the norms, the temporal block and "mlp_block".
    doc, state: as for the temporal block (state: a RecurrentState or an AttentionState); new one: cache.state."""
    kind = RECURRENT if "recurrent_block" in p else "attention"
    normed, temporal_norm_cache = rmsnorm_forward(x, p["temporal_pre_norm"])
    if kind == RECURRENT:
        mixed, temporal_cache = recurrent_block_forward(normed, p["recurrent_block"], segment_pos,
                                                        scan_backend=cfg.scan_backend, doc=doc, state=state,
                                                        only_real=cfg.lru_only_real)
    else:
        mixed, temporal_cache = attention_forward(normed, p["attention_block"], segment_pos,
                                                  num_heads=cfg.num_heads, window=cfg.window,
                                                  rope=cfg.use_rope, doc=doc, state=state)
    residual = x + mixed                                                   # (B, T, D)
    normed2, channel_norm_cache = rmsnorm_forward(residual, p["channel_pre_norm"])
    mlp_out, mlp_cache = mlp_forward(normed2, p["mlp_block"])
    return residual + mlp_out, ResidualBlockCache(kind, temporal_norm_cache, temporal_cache,
                                                  channel_norm_cache, mlp_cache, temporal_cache.state)


def residual_block_backward(dout, cache):
    """dout: (B, T, D) -> dx: (B, T, D), grads with the keys of p."""
    c = cache
    # forward was out = residual + mlp(rmsnorm(residual))
    dnormed2, mlp_grads = mlp_backward(dout, c.mlp)
    dresidual_from_norm, channel_norm_grads = rmsnorm_backward(dnormed2, c.channel_norm)
    dresidual = dout + dresidual_from_norm
    # forward was residual = x + temporal(rmsnorm(x))
    if c.kind == RECURRENT:
        dnormed, temporal_grads = recurrent_block_backward(dresidual, c.temporal)
        temporal_key = "recurrent_block"
    else:
        dnormed, temporal_grads = attention_backward(dresidual, c.temporal)
        temporal_key = "attention_block"
    dx_from_norm, temporal_norm_grads = rmsnorm_backward(dnormed, c.temporal_norm)
    grads = {"temporal_pre_norm": temporal_norm_grads, "channel_pre_norm": channel_norm_grads,
             temporal_key: temporal_grads, "mlp_block": mlp_grads}
    return dresidual + dx_from_norm, grads
