"""The gradient checker itself: it passes a correct backward and fails a wrong one (a checker that cannot fail
is worse than none)."""

import numpy as np
import pytest

from minigriffin.gradcheck import assert_grads_close, check_grads, numerical_grad, rel_error
from minigriffin.tree import tree_leaves


def _tanh_layer(x, params):
    return np.tanh(x @ params["w"] + params["b"])            # (N, M)


def _tanh_layer_backward(dout, x, params):
    out = _tanh_layer(x, params)
    dz = dout * (1 - out**2)                                  # forward was out = tanh(z)
    return dz @ params["w"].T, {"w": x.T @ dz, "b": dz.sum(0)}


def _case(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4, 3))
    params = {"w": rng.standard_normal((3, 5)), "b": rng.standard_normal(5)}
    dout = rng.standard_normal((4, 5))
    return x, params, dout


def test_correct_gradients_pass():
    x, params, dout = _case()
    dx, grads = _tanh_layer_backward(dout, x, params)
    reports = assert_grads_close(_tanh_layer, {"x": x, "params": params}, {"x": dx, "params": grads}, dout,
                                 rtol=1e-7, atol=1e-10)   # float64, smooth function, step 1e-6
    assert {r.name for r in reports} == {"x", "params.w", "params.b"}
    assert all(r.max_rel_error < 1e-7 for r in reports)      # float64, max rel error 1e-7


def test_a_wrong_gradient_fails_and_is_named():
    x, params, dout = _case()
    dx, grads = _tanh_layer_backward(dout, x, params)
    grads["b"] = grads["b"] * 1.001                          # a 0.1% error in one gradient
    with pytest.raises(AssertionError, match=r"params\.b\[\d\]: numerical"):
        assert_grads_close(_tanh_layer, {"x": x, "params": params}, {"x": dx, "params": grads}, dout,
                           rtol=1e-7, atol=1e-10)


def test_sampling_checks_only_max_elements_and_still_catches_errors():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 40))
    dout = rng.standard_normal((50, 40))
    good = check_grads(lambda x: x**3, {"x": x}, {"x": 3 * x**2 * dout}, dout, max_elements=25)
    assert good[0].checked == 25 and good[0].ok
    bad = check_grads(lambda x: x**3, {"x": x}, {"x": 3 * x**2 * dout + 1e-3}, dout, max_elements=25)
    assert not bad[0].ok


def test_inputs_are_restored_after_perturbation():
    x, params, dout = _case()
    before = x.copy()
    numerical_grad(lambda: _tanh_layer(x, params), x, np.arange(x.size), dout)
    np.testing.assert_array_equal(x, before)                 # float64, exact


def test_float32_is_refused():
    x = np.ones((2, 2), np.float32)
    with pytest.raises(TypeError, match="need float64"):
        numerical_grad(lambda: x * 2, x, [0], np.ones((2, 2)))


def test_rel_error_and_tree_leaves():
    assert rel_error(np.zeros(3), np.zeros(3)) == 0.0
    assert rel_error(np.array([1.0]), np.array([1.0 + 1e-8])) == pytest.approx(5e-9, rel=1e-6)   # float64, rel 1e-6
    leaves = tree_leaves({"blocks": [{"w": 1}, {"w": 2}], "emb": 3})
    assert [path for path, _ in leaves] == ["blocks.0.w", "blocks.1.w", "emb"]
