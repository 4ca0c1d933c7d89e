"""RG-LRU and Conv1D against recurrentgemma's PyTorch layers, in float64 (float32 islands patched).

Max relative error <= 1e-12 (float64), including the capped sqrt derivative where 1 - a^2 is tiny. Seen: <= 1.7e-15
for every output and gradient, except the a_param gradient of the capped case (extreme=True): 1.6e-13.
"""

import numpy as np
import pytest

from minigriffin.conv1d import conv1d_backward, conv1d_forward
from minigriffin.params import init_a_param
from minigriffin.rglru import rglru_backward, rglru_forward

oracle_utils = pytest.importorskip("oracle_utils")
torch = oracle_utils.torch
L = oracle_utils.rg_layers

pytestmark = pytest.mark.oracle

SP = np.array([list(range(12)), [0, 1, 2, 0, 1, 2, 3, 4, 5, 0, 1, 2]])   # packed documents


def _set(param, value):
    with torch.no_grad():
        param.copy_(torch.from_numpy(value))


@pytest.mark.parametrize("extreme", [False, True])
def test_rglru_matches_recurrentgemma(extreme):
    rng = np.random.default_rng(0)
    B, T, E, H = 2, 12, 8, 2
    blk = E // H
    p = {"a_param": init_a_param(rng, E, np.float64),
         "input_gate": {"w": rng.standard_normal((H, blk, blk)), "b": rng.standard_normal((H, blk))},
         "a_gate": {"w": rng.standard_normal((H, blk, blk)), "b": rng.standard_normal((H, blk))}}
    if extreme:                                    # a -> 1: 1 - a^2 below 2.5e-7, so the sqrt cap is active
        p["a_param"][:4] = -16.0
        p["a_gate"]["b"][0] = -5.0
    x = rng.standard_normal((B, T, E))
    dy = rng.standard_normal((B, T, E))
    y, _, cache = rglru_forward(x, p, SP, backend="reference")
    dx, _, grads = rglru_backward(dy, None, cache)
    with oracle_utils.exact_float64_torch():
        layer = L.RGLRU(E, H, dtype=torch.float64)
        _set(layer.a_param, p["a_param"])
        for gate in ("input_gate", "a_gate"):
            _set(getattr(layer, gate).w, p[gate]["w"])
            _set(getattr(layer, gate).b, p[gate]["b"])
        x_t = torch.from_numpy(x).requires_grad_(True)
        y_t, _ = layer(x_t, torch.from_numpy(SP))
        (y_t * torch.from_numpy(dy)).sum().backward()
    if extreme:
        assert (1 - cache.a_square < 1 / (4 * 1000.0**2)).any()
    err = oracle_utils.max_rel_error
    assert err(y, y_t.detach().numpy()) <= 1e-12                                   # float64
    assert err(dx, x_t.grad.numpy()) <= 1e-12                                       # float64
    assert err(grads["a_param"], layer.a_param.grad.numpy()) <= 1e-12               # float64
    for gate in ("input_gate", "a_gate"):
        assert err(grads[gate]["w"], getattr(layer, gate).w.grad.numpy()) <= 1e-12  # float64
        assert err(grads[gate]["b"], getattr(layer, gate).b.grad.numpy()) <= 1e-12  # float64


def test_conv1d_matches_recurrentgemma():
    rng = np.random.default_rng(1)
    B, T, E = 2, 12, 5
    p = {"w": rng.standard_normal((4, E)), "b": rng.standard_normal(E)}
    x, dy = rng.standard_normal((B, T, E)), rng.standard_normal((B, T, E))
    y, cache = conv1d_forward(x, p, SP)
    dx, grads = conv1d_backward(dy, cache)
    with oracle_utils.exact_float64_torch():
        layer = L.Conv1D(E, 4, dtype=torch.float64)
        _set(layer.w, p["w"])
        _set(layer.b, p["b"])
        x_t = torch.from_numpy(x).requires_grad_(True)
        y_t, _ = layer(x_t * 1.0, torch.from_numpy(SP))   # a non-leaf copy: Conv1D masks its input in place
        (y_t * torch.from_numpy(dy)).sum().backward()
    err = oracle_utils.max_rel_error
    assert err(y, y_t.detach().numpy()) <= 1e-12                  # float64
    assert err(dx, x_t.grad.numpy()) <= 1e-12                     # float64
    assert err(grads["w"], layer.w.grad.numpy()) <= 1e-12         # float64
    assert err(grads["b"], layer.b.grad.numpy()) <= 1e-12         # float64
