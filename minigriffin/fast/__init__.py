"""Accelerators: faster versions of reference functions, each attached here, at one visible point.

Every computation is defined once, in plain NumPy, in the modules of minigriffin/ (the definitions). What lives
in this package only makes some of them faster on a CPU, and each attaches to the function it stands for
with minigriffin.accelerate.register, all of them in this file:

    reference (the definition)         fast version                    runs when
    layers.gelu_tanh_forward/backward  fast/fused.py (Numba)           NumPy float arrays
    layers.gated_gelu_forward/backward fast/fused.py (Numba)           NumPy float arrays
    rglru.rglru_gates_backward         fast/fused.py (Numba)           NumPy float arrays
    attention.attention_core_forward   fast/attention_core.py (Numba)     NumPy float arrays
    attention.attention_core_backward  fast/attention_core.py (Numba)     what the fast forward saved
    train.loss_and_grads               fast/parallel.py (threads)      NumPy batch, B > 1, workers > 1
    inference.forward_chunk            fast/decode.py (Numba)          NumPy arrays, one token per row, real RG-LRU

The scan's backends (minigriffin/scan/) are the other kind of fast code: each is a whole implementation of the
one scan primitive behind the scan's own registry. MINIGRIFFIN_REFERENCE=1 turns every accelerator here off,
and tests/test_accelerate.py checks each against its reference. Importing this package compiles nothing and
does not import Numba: the kernels load on first use.
"""

import numpy as np

from minigriffin import attention, inference, layers, rglru, train
from minigriffin.accelerate import register
from minigriffin.fast import attention_core
from minigriffin.fast import fused, parallel
from minigriffin.xp import array_namespace

numpy_floats = fused.numpy_floats


register(layers.gelu_tanh_forward, applies=numpy_floats)(fused.gelu_tanh_forward)
register(layers.gelu_tanh_backward, applies=lambda dy, cache: numpy_floats(dy, cache.x, cache.tanh_u))(
    fused.gelu_tanh_backward)
register(layers.gated_gelu_forward, applies=numpy_floats)(fused.gated_gelu_forward)
register(layers.gated_gelu_backward,
         applies=lambda dhidden, up, gate, gelu_cache: numpy_floats(dhidden, up, gate, gelu_cache.tanh_u))(
    fused.gated_gelu_backward)
register(rglru.rglru_gates_backward,
         applies=lambda dnormalized_x, da_scan, c: numpy_floats(dnormalized_x, da_scan, c.x))(
    fused.rglru_gates_backward)
register(attention.attention_core_forward, applies=attention_core.applies_forward)(
    attention_core.attention_core_forward)
register(attention.attention_core_backward, applies=attention_core.applies_backward)(
    attention_core.attention_core_backward)


def _parallel_applies(params, batch, cfg, workers=1, state=None):
    return workers > 1 and batch.tokens.shape[0] > 1 and array_namespace(batch.tokens) is np


register(train.loss_and_grads, applies=_parallel_applies)(parallel.loss_and_grads)


def _decode_applies(params, tokens, segment_pos, cfg, state):
    """One token per row, and params, tokens and positions all NumPy arrays (CuPy runs the reference)."""
    return (getattr(tokens, "ndim", 0) == 2 and tokens.shape[1] == 1 and cfg.lru_only_real   # (real RG-LRU kernels)
            and type(params["embedder"]["input_embedding"]) is np.ndarray
            and type(tokens) is np.ndarray and type(segment_pos) is np.ndarray)


@register(inference.forward_chunk, applies=_decode_applies)
def decode_step(params, tokens, segment_pos, cfg, state):
    """fast/decode.py's decode_step; Numba is imported and the kernels compiled on the first step."""
    from minigriffin.fast import decode
    return decode.decode_step(params, tokens, segment_pos, cfg, state)
