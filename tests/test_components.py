"""Every forward/backward pair agrees with float64 central differences (minigriffin.gradcheck).

Tolerance, unless a test says otherwise: per element |numerical - analytic| <= 1e-9 + 1e-6 |numerical|
(float64, step 1e-6: truncation ~1e-12 relative for these smooth functions, roundoff ~1e-10 absolute).
Whole blocks use the fourth-order stencil with step 1e-3 (truncation ~1e-12, and roundoff 1000x smaller than
with step 1e-6, which through a whole block reached ~5e-9 absolute) and the same tolerance.
Cases include packed documents (a reset mid-sequence), T = 1 and T shorter than the conv width.
"""

import numpy as np
import pytest

from minigriffin.blocks import (recurrent_block_backward, recurrent_block_forward, residual_block_backward,
                                residual_block_forward)
from minigriffin.config import make_config
from minigriffin.conv1d import conv1d_backward, conv1d_forward
from minigriffin.gradcheck import assert_grads_close
from minigriffin.head import (cross_entropy_backward, cross_entropy_forward, embedding_backward,
                              embedding_forward, softcap_backward, softcap_forward)
from minigriffin.layers import (gelu_tanh_backward, gelu_tanh_forward, linear_backward, linear_forward,
                                mlp_backward, mlp_forward, rmsnorm_backward, rmsnorm_forward)
from minigriffin.params import init_params
from minigriffin.rglru import block_diagonal_backward, block_diagonal_forward, rglru_backward, rglru_forward

RTOL, ATOL = 1e-6, 1e-9


def segment_positions(B, T, starts=()):
    """(B, T) positions within documents; row 1 also starts new documents at the given indices."""
    sp = np.tile(np.arange(T), (B, 1))
    for s in starts:
        if 0 < s < T and B > 1:
            sp[1, s:] = np.arange(T - s)
    return sp


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_linear(rng):
    x, p = rng.standard_normal((2, 5, 4)), {"weight": rng.standard_normal((3, 4)), "bias": rng.standard_normal(3)}
    out, cache = linear_forward(x, p)
    dout = rng.standard_normal(out.shape)
    dx, grads = linear_backward(dout, cache)
    assert_grads_close(lambda x, p: linear_forward(x, p)[0], {"x": x, "p": p}, {"x": dx, "p": grads}, dout,
                       rtol=RTOL, atol=ATOL)


def test_rmsnorm(rng):
    x, p = rng.standard_normal((2, 5, 6)), {"scale": 0.3 * rng.standard_normal(6)}
    out, cache = rmsnorm_forward(x, p)
    dout = rng.standard_normal(out.shape)
    dx, grads = rmsnorm_backward(dout, cache)
    assert_grads_close(lambda x, p: rmsnorm_forward(x, p)[0], {"x": x, "p": p}, {"x": dx, "p": grads}, dout,
                       rtol=RTOL, atol=ATOL)


def test_gelu_tanh(rng):
    x = 3 * rng.standard_normal((4, 7))
    out, cache = gelu_tanh_forward(x)
    dout = rng.standard_normal(out.shape)
    assert_grads_close(lambda x: gelu_tanh_forward(x)[0], {"x": x}, {"x": gelu_tanh_backward(dout, cache)}, dout,
                       rtol=RTOL, atol=ATOL)


def test_gated_mlp(rng):
    D, F = 4, 6
    x = rng.standard_normal((2, 3, D))
    p = {"ffw_up": {"w": rng.standard_normal((2, D, F)), "b": rng.standard_normal((2, 1, 1, F))},
         "ffw_down": {"weight": rng.standard_normal((D, F)), "bias": rng.standard_normal(D)}}
    out, cache = mlp_forward(x, p)
    dout = rng.standard_normal(out.shape)
    dx, grads = mlp_backward(dout, cache)
    assert_grads_close(lambda x, p: mlp_forward(x, p)[0], {"x": x, "p": p}, {"x": dx, "p": grads}, dout,
                       rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("T, starts", [(9, (4,)), (9, (1, 2, 6)), (1, ()), (2, (1,)), (3, ())])
def test_conv1d(rng, T, starts):
    E = 5
    x = rng.standard_normal((2, T, E))
    sp = segment_positions(2, T, starts)
    p = {"w": rng.standard_normal((4, E)), "b": rng.standard_normal(E)}
    out, cache = conv1d_forward(x, p, sp)
    dout = rng.standard_normal(out.shape)
    dx, grads = conv1d_backward(dout, cache)
    assert_grads_close(lambda x, p: conv1d_forward(x, p, sp)[0], {"x": x, "p": p}, {"x": dx, "p": grads}, dout,
                       rtol=RTOL, atol=ATOL)


def test_conv1d_never_crosses_a_document_start(rng):
    """Changing inputs before a document start cannot change outputs after it (float64, exact)."""
    x = rng.standard_normal((2, 10, 3))
    sp = segment_positions(2, 10, (5,))
    p = {"w": rng.standard_normal((4, 3)), "b": rng.standard_normal(3)}
    out, _ = conv1d_forward(x, p, sp)
    x2 = x.copy()
    x2[1, :5] += 10.0
    out2, _ = conv1d_forward(x2, p, sp)
    np.testing.assert_array_equal(out[1, 5:], out2[1, 5:])
    assert not np.array_equal(out[1, :5], out2[1, :5])     # ... while it does change outputs before it


def test_block_diagonal(rng):
    x = rng.standard_normal((2, 3, 6))
    p = {"w": rng.standard_normal((3, 2, 2)), "b": rng.standard_normal((3, 2))}
    out, cache = block_diagonal_forward(x, p)
    dout = rng.standard_normal(out.shape)
    dx, grads = block_diagonal_backward(dout, cache)
    assert_grads_close(lambda x, p: block_diagonal_forward(x, p)[0], {"x": x, "p": p}, {"x": dx, "p": grads}, dout,
                       rtol=RTOL, atol=ATOL)


def _rglru_params(rng, E, H):
    from minigriffin.params import init_a_param
    blk = E // H
    return {"a_param": init_a_param(rng, E, np.float64),
            "input_gate": {"w": rng.standard_normal((H, blk, blk)), "b": rng.standard_normal((H, blk))},
            "a_gate": {"w": rng.standard_normal((H, blk, blk)), "b": rng.standard_normal((H, blk))}}


@pytest.mark.parametrize("T, starts, with_h0", [(11, (5,), True), (11, (1, 7), False), (1, (), True), (2, (1,), False)])
@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_rglru(rng, T, starts, with_h0, backend):
    B, E, H = 2, 6, 2
    x = rng.standard_normal((B, T, E))
    sp = segment_positions(B, T, starts)
    p = _rglru_params(rng, E, H)
    h0 = rng.standard_normal((B, E)) if with_h0 else None
    y, h_last, cache = rglru_forward(x, p, sp, h0=h0, backend=backend)
    dy, dh_last = rng.standard_normal(y.shape), rng.standard_normal(h_last.shape)
    dx, dh0, grads = rglru_backward(dy, dh_last, cache)
    inputs = {"x": x, "p": p} | ({"h0": h0} if with_h0 else {})
    analytic = {"x": dx, "p": grads} | ({"h0": dh0} if with_h0 else {})

    def forward(x, p, h0=None):
        return rglru_forward(x, p, sp, h0=h0, backend=backend)[:2]

    assert_grads_close(forward, inputs, analytic, (dy, dh_last), rtol=RTOL, atol=ATOL)


def test_rglru_sqrt_gradient_is_capped(rng):
    """Where 1 - a^2 < 2.5e-7 the sqrt's derivative is capped at 1000 (recurrentgemma SqrtBoundDerivative), so
    the a_param gradient is deliberately smaller than the true derivative there (float64)."""
    E, H = 2, 1
    p = _rglru_params(rng, E, H)
    p["a_param"] = np.array([-22.0, -1.0])         # channel 0: softplus = 2.8e-10, so 1 - a_t^2 ~ 2e-9
    p["a_gate"]["w"][:] = 0.0
    p["a_gate"]["b"][:] = 0.0                      # r = 0.5
    x = rng.standard_normal((1, 4, E))
    sp = np.arange(4)[None] + 1                    # no resets, so the multiplier is used
    y, _, cache = rglru_forward(x, p, sp, backend="reference")
    dy = np.zeros_like(y)
    dy[..., 0] = 1.0
    _, _, grads = rglru_backward(dy, None, cache)
    z = 1.0 - cache.a_square[..., 0]
    assert np.all(z < 1.0 / (4 * 1000.0**2))       # the cap is active for channel 0
    # The true derivative 1 / (2 sqrt(z)) is ~1e4 here, ten times the cap, and dominates the a_param gradient.
    # A relative step of 1e-3 keeps the change of z far above its float64 resolution (z ~ 2e-9).
    from minigriffin.gradcheck import numerical_grad
    true = numerical_grad(lambda: rglru_forward(x, p, sp, backend="reference")[0], p["a_param"], [0],
                          dy, eps=22e-3, order=4)[0]
    assert np.isfinite(grads["a_param"][0]) and abs(grads["a_param"][0]) * 5 < abs(true)
    # The exact capped value is checked against recurrentgemma in tests/test_oracle_layers.py.


def test_embedding_softcap_and_loss(rng):
    V, D = 7, 3
    table = rng.standard_normal((V, D))
    tokens = rng.integers(0, V, (2, 4))
    x, cache = embedding_forward(tokens, table, scale=1.5)
    dx = rng.standard_normal(x.shape)
    assert_grads_close(lambda table: embedding_forward(tokens, table, 1.5)[0], {"table": table},
                       {"table": embedding_backward(dx, cache)}, dx, rtol=RTOL, atol=ATOL)
    logits = 20 * rng.standard_normal((2, 4, V))
    capped, cap_cache = softcap_forward(logits, 30.0)
    assert np.abs(capped).max() < 30.0
    dcap = rng.standard_normal(capped.shape)
    assert_grads_close(lambda logits: softcap_forward(logits, 30.0)[0], {"logits": logits},
                       {"logits": softcap_backward(dcap, cap_cache)}, dcap, rtol=RTOL, atol=ATOL)
    targets = rng.integers(0, V, (2, 4))
    mask = np.array([[True, False, True, True], [False, True, True, True]])
    loss, ce_cache = cross_entropy_forward(logits, targets, mask)
    dlogits = cross_entropy_backward(1.0, ce_cache)
    assert dlogits[0, 1].sum() == 0 and np.abs(dlogits[0, 1]).max() == 0     # masked position: no gradient
    assert_grads_close(lambda logits: cross_entropy_forward(logits, targets, mask)[0], {"logits": logits},
                       {"logits": dlogits}, 1.0, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("preset", ["hawk-tiny", "griffin-tiny", "mqa-tiny"])
@pytest.mark.parametrize("T, starts", [(10, (3, 7)), (1, ())])
def test_residual_blocks(preset, T, starts):
    cfg = make_config(preset, dtype="float64", scan_backend="reference")
    rng = np.random.default_rng(1)
    params = init_params(cfg, rng)
    sp = segment_positions(2, T, starts)
    for p in params["blocks"][:3]:
        for norm in ("temporal_pre_norm", "channel_pre_norm"):
            p[norm]["scale"] = 0.2 * rng.standard_normal(cfg.width)
        x = rng.standard_normal((2, T, cfg.width))
        out, cache = residual_block_forward(x, p, sp, cfg)
        dout = rng.standard_normal(out.shape)
        dx, grads = residual_block_backward(dout, cache)
        assert_grads_close(lambda x, p: residual_block_forward(x, p, sp, cfg)[0], {"x": x, "p": p},
                           {"x": dx, "p": grads}, dout, rtol=RTOL, atol=ATOL, max_elements=20, eps=1e-3, order=4)


def test_recurrent_block(rng):
    cfg = make_config("hawk-tiny", dtype="float64", scan_backend="reference")
    p = init_params(cfg, rng)["blocks"][0]["recurrent_block"]
    sp = segment_positions(2, 8, (5,))
    x = rng.standard_normal((2, 8, cfg.width))
    out, cache = recurrent_block_forward(x, p, sp, scan_backend="reference")
    dout = rng.standard_normal(out.shape)
    dx, grads = recurrent_block_backward(dout, cache)
    assert_grads_close(lambda x, p: recurrent_block_forward(x, p, sp, scan_backend="reference")[0],
                       {"x": x, "p": p}, {"x": dx, "p": grads}, dout, rtol=RTOL, atol=ATOL, max_elements=20, eps=1e-3, order=4)
