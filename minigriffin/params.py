"""Parameter initialisation (recurrentgemma's reset_parameters, e.g.
recurrentgemma/torch/modules.py `RecurrentBlock.reset_parameters`) and parameter counts from a config.

Parameters are nested dicts named like recurrentgemma's PyTorch state dict, so
"blocks.0.recurrent_block.rg_lru.a_param" is params["blocks"][0]["recurrent_block"]["rg_lru"]["a_param"].
Weights use torch's (out, in) layout. Gradients are dicts with the same keys.
"""

import math

import numpy as np

from minigriffin.cglru import cglru_init
from minigriffin.config import ATTENTION, RECURRENT
from minigriffin.rglru import init_a_param  # noqa: F401  (defined with the RG-LRU; re-exported here)


def _normal(rng, shape, std, dtype):
    return (rng.standard_normal(shape) * std).astype(dtype)


def init_params(cfg, rng):
    """Random parameters for `cfg` (GriffinConfig), drawn from the numpy Generator `rng`. All weights normal,
    biases and norm scales zero; output layers scaled by 2 / (number of blocks) (recurrentgemma's reset_parameters)."""
    dt = np.dtype(cfg.dtype)
    D, E, F, G, V = cfg.width, cfg.lru_width, cfg.mlp_expanded_width, cfg.gate_blocks, cfg.vocab_size
    Dh, K = cfg.head_dim, cfg.conv1d_temporal_width
    s_out = 2.0 / cfg.num_layers
    zeros = lambda *shape: np.zeros(shape, dtype=dt)  # noqa: E731

    def linear(n_out, n_in, std, bias=True):
        p = {"weight": _normal(rng, (n_out, n_in), std, dt)}
        if bias:
            p["bias"] = zeros(n_out)
        return p

    blocks = []
    for kind in cfg.block_types:
        block = {"temporal_pre_norm": {"scale": zeros(D)}, "channel_pre_norm": {"scale": zeros(D)}}
        if kind == RECURRENT:
            blk = E // cfg.gate_blocks
            block["recurrent_block"] = {
                "linear_y": linear(E, D, math.sqrt(1.0 / D)),
                "linear_x": linear(E, D, math.sqrt(1.0 / D)),
                "linear_out": linear(D, E, math.sqrt(s_out / E)),
                "conv_1d": {"w": _normal(rng, (K, E), math.sqrt(0.01 / K), dt), "b": zeros(E)},
                "rg_lru": {
                    "a_param": init_a_param(rng, E, dt, cfg.lru_min_rad, cfg.lru_max_rad),
                    "input_gate": {"w": _normal(rng, (G, blk, blk), math.sqrt(1.0 / blk), dt), "b": zeros(G, blk)},
                    "a_gate": {"w": _normal(rng, (G, blk, blk), math.sqrt(1.0 / blk), dt), "b": zeros(G, blk)},
                } if cfg.lru_only_real else cglru_init(rng, E, G, dt, min_rad=cfg.lru_min_rad, max_rad=cfg.lru_max_rad),
            }
        elif kind == ATTENTION:
            block["attention_block"] = {
                "proj_q": linear(D, D, math.sqrt(1.0 / D), bias=False),
                "proj_k": linear(Dh, D, math.sqrt(1.0 / D), bias=False),
                "proj_v": linear(Dh, D, math.sqrt(1.0 / D), bias=False),
                "proj_final": linear(D, D, math.sqrt(s_out / D)),
            }
        block["mlp_block"] = {
            "ffw_up": {"w": _normal(rng, (2, D, F), math.sqrt(1.0 / D), dt), "b": zeros(2, 1, 1, F)},
            "ffw_down": linear(D, F, math.sqrt(s_out / F)),
        }
        blocks.append(block)
    return {"embedder": {"input_embedding": _normal(rng, (V, D), math.sqrt(1.0 / D), dt)},
            "blocks": blocks, "final_norm": {"scale": zeros(D)}}


def count_params(cfg):
    """Number of parameters of a model with config `cfg`, from the shapes alone (no arrays allocated), so
    paper-sized presets can be counted. Equals tree.num_params(init_params(cfg, rng)) (tested)."""
    D, E, F, V, K = cfg.width, cfg.lru_width, cfg.mlp_expanded_width, cfg.vocab_size, cfg.conv1d_temporal_width
    G, Dh = cfg.gate_blocks, cfg.head_dim
    recurrent = (2 * (E * D + E)                 # linear_x, linear_y
                 + D * E + D                     # linear_out
                 + K * E + E                     # conv_1d
                 + E                             # a_param (CG-LRU: a_param and a_imag_param, E/2 each)
                 + 2 * (E * E // G + E if cfg.lru_only_real   # input_gate, a_gate: G blocks of (E/G)^2 plus biases
                        else E * E // (2 * G) + E // 2))     # CG-LRU: G blocks of (E/G) x (E/2G), biases E/2
    attention = D * D + 2 * Dh * D + D * D + D   # proj_q, proj_k, proj_v (one KV head), proj_final
    per_block = 2 * D + (2 * D * F + 2 * F) + (F * D + D)   # two norms, ffw_up, ffw_down
    total = V * D + D                            # tied embedding, final norm
    for kind in cfg.block_types:
        total += per_block + (recurrent if kind == RECURRENT else attention)
    return total
