"""AdamW, the schedule and clipping against steps computed by hand (float64, rel 1e-12)."""

import math

import numpy as np
import pytest

from minigriffin.optim import (adamw_init, adamw_update, clip_by_global_norm, decay_mask, decays, global_norm,
                               lr_schedule)


def test_first_two_adamw_steps_by_hand():
    p = {"w": np.array([1.0, -2.0]), "bias": np.array([0.5])}
    g1 = {"w": np.array([0.1, -0.4]), "bias": np.array([2.0])}
    g2 = {"w": np.array([-0.3, 0.2]), "bias": np.array([1.0])}
    lr, b1, b2, eps, wd = 0.01, 0.9, 0.95, 1e-8, 0.1
    state = adamw_init(p)
    state = adamw_update(p, g1, state, lr=lr, beta1=b1, beta2=b2, eps=eps, weight_decay=wd)
    # step 1: m_hat = g, v_hat = g^2, so the Adam direction is sign(g) (up to eps)
    w1 = np.array([1.0, -2.0]) - lr * (np.array([0.1, -0.4]) / (np.abs([0.1, -0.4]) + eps) + wd * np.array([1.0, -2.0]))
    b1_ = 0.5 - lr * (2.0 / (2.0 + eps))                      # no decay on biases
    np.testing.assert_allclose(p["w"], w1, rtol=1e-12)        # float64
    np.testing.assert_allclose(p["bias"], [b1_], rtol=1e-12)  # float64
    state = adamw_update(p, g2, state, lr=lr, beta1=b1, beta2=b2, eps=eps, weight_decay=wd)
    m = b1 * (1 - b1) * np.array([0.1, -0.4]) + (1 - b1) * np.array([-0.3, 0.2])
    v = b2 * (1 - b2) * np.array([0.01, 0.16]) + (1 - b2) * np.array([0.09, 0.04])
    w2 = w1 - lr * ((m / (1 - b1**2)) / (np.sqrt(v / (1 - b2**2)) + eps) + wd * w1)
    np.testing.assert_allclose(p["w"], w2, rtol=1e-12)        # float64
    assert state.step == 2


def test_decay_mask_follows_the_recurrentgemma_recipe():
    assert decays("blocks.0.recurrent_block.linear_x.weight")
    assert decays("blocks.0.mlp_block.ffw_up.w")
    for path in ("blocks.0.recurrent_block.rg_lru.a_param", "blocks.0.recurrent_block.rg_lru.a_gate.w",
                 "embedder.input_embedding", "final_norm.scale", "blocks.1.mlp_block.ffw_down.bias",
                 "blocks.0.recurrent_block.conv_1d.b"):
        assert not decays(path), path
    mask = decay_mask({"blocks": [{"linear": {"weight": 0, "bias": 0}}]})
    assert mask == {"blocks": [{"linear": {"weight": True, "bias": False}}]}


def test_schedule_warmup_then_cosine():
    kw = dict(lr=1.0, warmup_steps=10, max_steps=110, min_lr=0.1)
    assert lr_schedule(1, **kw) == pytest.approx(0.1)
    assert lr_schedule(10, **kw) == pytest.approx(1.0)
    assert lr_schedule(60, **kw) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.5)))   # midpoint
    assert lr_schedule(110, **kw) == pytest.approx(0.1)
    assert lr_schedule(500, **kw) == pytest.approx(0.1)
    values = [lr_schedule(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))    # monotone decay after warm-up


def test_global_norm_clipping():
    grads = {"a": np.array([3.0, 0.0]), "b": [np.array([[4.0]])]}
    assert global_norm(grads) == pytest.approx(5.0)
    norm = clip_by_global_norm(grads, 1.0)
    assert norm == pytest.approx(5.0)
    assert global_norm(grads) == pytest.approx(1.0, rel=1e-12)              # float64
    np.testing.assert_allclose(grads["a"], [0.6, 0.0], rtol=1e-12)
    unclipped = {"a": np.array([0.3])}
    assert clip_by_global_norm(unclipped, 1.0) == pytest.approx(0.3) and unclipped["a"][0] == 0.3


def test_float32_params_stay_float32():
    p = {"w": np.ones(3, np.float32)}
    state = adamw_init(p)
    adamw_update(p, {"w": np.full(3, 0.5, np.float32)}, state, lr=0.1)
    assert p["w"].dtype == np.float32 and state.m["w"].dtype == np.float32
