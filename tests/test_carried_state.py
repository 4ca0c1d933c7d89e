"""One forward that carries state: each layer continued chunk by chunk equals one pass over the whole
sequence, and its backward (the carried state held constant) agrees with float64 central differences.

Chunked == whole: float64, rtol 1e-12 (the same operations, in other groupings of the matmuls).
Gradients: minigriffin.gradcheck, float64, per element |numerical - analytic| <= 1e-9 + 1e-6 |numerical|.
"""

import numpy as np
import pytest

from minigriffin.attention import attention_backward, attention_forward
from minigriffin.blocks import residual_block_backward, residual_block_forward
from minigriffin.config import make_config
from minigriffin.conv1d import Conv1DState, conv1d_backward, conv1d_forward
from minigriffin.gradcheck import assert_grads_close
from minigriffin.kvcache import AttentionState
from minigriffin.model import model_backward, model_forward
from minigriffin.state import NO_DOC, init_state

from strategies import tiny_model

RTOL, ATOL = 1e-6, 1e-9


def _positions(T, starts=()):
    """(2, T) positions: row 0 one document; row 1 starts new documents at the given indices."""
    sp = np.tile(np.arange(T), (2, 1))
    for s in starts:
        sp[1, s:] = np.arange(T - s)
    return sp


def _attention_params(rng, D, Dh):
    return {"proj_q": {"weight": rng.standard_normal((D, D)) / D**0.5},
            "proj_k": {"weight": rng.standard_normal((Dh, D)) / D**0.5},
            "proj_v": {"weight": rng.standard_normal((Dh, D)) / D**0.5},
            "proj_final": {"weight": rng.standard_normal((D, D)) / D**0.5, "bias": rng.standard_normal(D)}}


@pytest.mark.parametrize("split", [1, 2, 5, 9])
def test_conv1d_in_chunks_equals_one_pass(split):
    rng = np.random.default_rng(0)
    x, sp = rng.standard_normal((2, 12, 5)), _positions(12, (3, 7))
    p = {"w": rng.standard_normal((4, 5)), "b": rng.standard_normal(5)}
    whole, _ = conv1d_forward(x, p, sp)
    doc = np.cumsum(sp == 0, axis=1)
    state = Conv1DState(np.zeros((2, 3, 5)), np.full((2, 3), NO_DOC))
    first, cache = conv1d_forward(x[:, :split], p, sp[:, :split], doc=doc[:, :split], state=state)
    second, _ = conv1d_forward(x[:, split:], p, sp[:, split:], doc=doc[:, split:], state=cache.state)
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), whole, rtol=1e-12, atol=1e-14)


def test_conv1d_backward_with_a_state():
    rng = np.random.default_rng(1)
    x, sp = rng.standard_normal((2, 5, 3)), _positions(5, (2,))
    p = {"w": rng.standard_normal((4, 3)), "b": rng.standard_normal(3)}
    state = Conv1DState(rng.standard_normal((2, 3, 3)), np.zeros((2, 3), np.int64))   # the same document
    doc = np.cumsum(sp == 0, axis=1) - 1                                   # row 0 continues document 0
    out, cache = conv1d_forward(x, p, sp, doc=doc, state=state)
    dout = rng.standard_normal(out.shape)
    dx, grads = conv1d_backward(dout, cache)
    assert_grads_close(lambda x, p: conv1d_forward(x, p, sp, doc=doc, state=state)[0], {"x": x, "p": p},
                       {"x": dx, "p": grads}, dout, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("window, split", [(3, 4), (3, 1), (100, 6), (0, 5)])
def test_attention_in_chunks_equals_one_pass(window, split):
    rng = np.random.default_rng(2)
    B, T, D, H = 2, 11, 16, 2
    x, sp = rng.standard_normal((B, T, D)), _positions(T, (6,))
    p = _attention_params(rng, D, D // H)
    kw = dict(num_heads=H, window=window, block_size=2)
    whole, _ = attention_forward(x, p, sp, **kw)
    doc = np.cumsum(sp == 0, axis=1)
    state = AttentionState(np.zeros((B, 0, D // H)), np.zeros((B, 0, D // H)), np.zeros((B, 0), np.int64))
    first, cache = attention_forward(x[:, :split], p, sp[:, :split], doc=doc[:, :split], state=state, **kw)
    second, cache2 = attention_forward(x[:, split:], p, sp[:, split:], doc=doc[:, split:], state=cache.state, **kw)
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), whole, rtol=1e-12, atol=1e-14)
    assert cache2.state.keys.shape[1] == min(window, T)                   # the last min(W, tokens) keys


def test_attention_backward_with_a_state():
    rng = np.random.default_rng(3)
    B, T, D, H, N = 2, 5, 8, 2, 4
    x, sp = rng.standard_normal((B, T, D)), _positions(T, (3,)) + np.array([[N], [N]]) * (_positions(T, (3,)) > 0)
    sp[:, 0] = N                                                           # both rows continue their document
    p = _attention_params(rng, D, D // H)
    state = AttentionState(rng.standard_normal((B, N, D // H)), rng.standard_normal((B, N, D // H)),
                           np.zeros((B, N), np.int64))
    doc = np.cumsum(sp == 0, axis=1)
    kw = dict(num_heads=H, window=3, block_size=2, doc=doc, state=state)
    out, cache = attention_forward(x, p, sp, **kw)
    dout = rng.standard_normal(out.shape)
    dx, grads = attention_backward(dout, cache)
    assert_grads_close(lambda x, p: attention_forward(x, p, sp, **kw)[0], {"x": x, "p": p},
                       {"x": dx, "p": grads}, dout, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("preset, extra", [("hawk-tiny", {}), ("griffin-tiny", {}), ("mqa-tiny", {}),
                                           ("griffin-tiny", {"lru_only_real": False})],
                         ids=["hawk", "griffin", "mqa", "griffin-cglru"])
def test_model_backward_from_a_carried_state(preset, extra):
    """The second chunk's loss gradient, with the first chunk's state held constant, is the gradient of the
    function 'second chunk from that state' (central differences over every parameter)."""
    cfg, params, rng = tiny_model({"preset": preset, **extra})
    tokens = rng.integers(0, cfg.vocab_size, (2, 9))
    sp = _positions(9, (6,))
    _, cache = model_forward(params, tokens[:, :5], sp[:, :5], cfg, init_state(cfg, 2))
    state = cache.state
    logits, cache2 = model_forward(params, tokens[:, 5:], sp[:, 5:], cfg, state)
    dlogits = rng.standard_normal(logits.shape)
    grads = model_backward(dlogits, cache2)
    assert_grads_close(lambda params: model_forward(params, tokens[:, 5:], sp[:, 5:], cfg, state)[0],
                       {"params": params}, {"params": grads}, dlogits, rtol=RTOL, atol=ATOL, eps=1e-3, order=4,
                       max_elements=4)


def test_residual_block_carries_its_temporal_state():
    cfg, params, rng = tiny_model({"preset": "griffin-tiny"})
    x, sp = rng.standard_normal((2, 7, cfg.width)), _positions(7)
    state = init_state(cfg, 2).blocks[0]
    doc = np.cumsum(sp == 0, axis=1)
    _, cache = residual_block_forward(x, params["blocks"][0], sp, cfg, doc=doc, state=state)
    assert cache.state.h.shape == (2, cfg.lru_width) and cache.state.conv_x.shape == (2, 3, cfg.lru_width)
    np.testing.assert_array_equal(cache.state.conv_doc, doc[:, -3:])
    _, no_state = residual_block_forward(x, params["blocks"][0], sp, cfg)
    assert no_state.state is None
    dx, _ = residual_block_backward(np.ones_like(x), cache)
    assert dx.shape == x.shape
