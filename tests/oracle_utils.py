"""Helpers shared by the oracle tests: build recurrentgemma's PyTorch Griffin from a minigriffin config and
params, and run it in exact float64.

recurrentgemma (1.0.1, PyTorch) keeps three float32 islands even in a float64 model: the RG-LRU scan
accumulator (recurrentgemma/torch/layers.py: RGLRU.forward calls `rnn_scan`, whose `acc_dtype` defaults to
torch.float32), the RoPE inverse frequencies (modules.py `_apply_rope` builds them with torch.arange, in
torch's default dtype) and the attention softmax (modules.py LocalAttentionBlock.forward:
`masked_logits.type(torch.float32)`). `exact_float64_torch()` patches all three for the duration of a test: a
float64 default dtype, rnn_scan with acc_dtype=float64, and in modules.py a stand-in for the `torch` module
whose `float32` is float64. docs/backprop.md §9 describes how the oracle tests use this.
"""

import contextlib
import functools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
rg = pytest.importorskip("recurrentgemma.torch")
rg_layers = pytest.importorskip("recurrentgemma.torch.layers")
rg_modules = pytest.importorskip("recurrentgemma.torch.modules")

from minigriffin.config import ATTENTION  # noqa: E402
from minigriffin.convert import to_torch_state_dict  # noqa: E402


class _TorchWithFloat64Softmax:
    """Forwards every attribute to torch, except float32, which is float64 (for modules.py's softmax cast)."""

    def __getattr__(self, name):
        return torch.float64 if name == "float32" else getattr(torch, name)


@contextlib.contextmanager
def exact_float64_torch():
    saved_default, saved_scan, saved_torch = torch.get_default_dtype(), rg_layers.rnn_scan, rg_modules.torch
    torch.set_default_dtype(torch.float64)
    rg_layers.rnn_scan = functools.partial(saved_scan, acc_dtype=torch.float64)
    rg_modules.torch = _TorchWithFloat64Softmax()
    try:
        yield
    finally:
        torch.set_default_dtype(saved_default)
        rg_layers.rnn_scan = saved_scan
        rg_modules.torch = saved_torch


ORACLE_MAX_LEN = 1024     # no oracle test feeds a longer sequence (or prompt plus decoded tokens)


def torch_griffin(cfg, params, global_window=ORACLE_MAX_LEN):
    """recurrentgemma.torch.Griffin with cfg's shapes and our params loaded (dtype from cfg). A model with
    global attention gets the window global_window, which must be at least the longest sequence fed to it
    (recurrentgemma has no global flag; its decode cache is a ring buffer of that many keys)."""
    if cfg.num_gate_blocks not in (None, cfg.num_heads):
        raise ValueError("recurrentgemma ties the RG-LRU gate blocks to num_heads")
    if not cfg.use_rope:
        raise ValueError("recurrentgemma always applies RoPE: it has no NoPE model to compare with")
    rcfg = rg.GriffinConfig(
        vocab_size=cfg.vocab_size, width=cfg.width, mlp_expanded_width=cfg.mlp_expanded_width,
        num_heads=cfg.num_heads,
        block_types=tuple(rg.TemporalBlockType.ATTENTION if t == ATTENTION else rg.TemporalBlockType.RECURRENT
                          for t in cfg.block_types),
        embeddings_scale_by_sqrt_dim=cfg.embeddings_scale_by_sqrt_dim,
        # recurrentgemma has no global flag: a global-attention model gets a window longer than any sequence
        # the oracle tests feed (ORACLE_MAX_LEN), which masks nothing, as our GLOBAL_WINDOW does
        attention_window_size=global_window if cfg.global_attention else cfg.attention_window_size,
        logits_soft_cap=cfg.logits_soft_cap,
        lru_width=cfg.lru_width)
    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    model = rg.Griffin(rcfg, gradient_checkpointing=False, dtype=dtype)
    state = {name: torch.from_numpy(np.ascontiguousarray(arr)) for name, arr in to_torch_state_dict(params).items()}
    model.load_state_dict(state, strict=True)
    return model


def max_rel_error(actual, expected):
    """max |actual - expected| / max |expected|: the figure the oracle tests bound."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = np.abs(expected).max()
    return float(np.abs(actual - expected).max() / scale) if scale else float(np.abs(actual).max())
