"""Every accelerator (minigriffin/fast/, attached with minigriffin/accelerate.py) equals the definition it stands for.

The fused Numba kernels (fast/fused.py): each layer is run on the same inputs with the accelerators on and off
(MINIGRIFFIN_REFERENCE=1), in float64 and float32, with the serial and the multithreaded builds each forced. The finite-difference checks in
test_components.py run the fused path (it is the default for NumPy arrays), so together these show both
paths are right. Tolerances, relative to each output's largest magnitude: float64 1e-13 (only the order of
operations differs); float32 4 ulp (the same formulas in float32 arithmetic, again in another order).
"""

import numpy as np
import pytest

from minigriffin.accelerate import accelerated, accelerators, reference_only, register
from minigriffin.fast import fused
from minigriffin.layers import gelu_tanh_backward, gelu_tanh_forward, mlp_backward, mlp_forward
from minigriffin.rglru import rglru_backward, rglru_forward
from minigriffin.tree import tree_leaves

SHAPES = [(1, 1, 3), (2, 7, 33), (3, 50, 64)]


def _close(fast, slow, dtype, what):
    """Errors relative to each output's largest magnitude: 1 + tanh(u) cancels where u << 0, so an element's
    own relative error says nothing there (the NumPy code has the same cancellation)."""
    scale = max(float(np.abs(slow).max()), np.finfo(dtype).tiny)
    ulps = 1e-13 / np.finfo(np.float64).eps if dtype == np.float64 else 4        # float64: 1e-13 of the scale
    err = float(np.abs(fast - slow).max())
    assert err <= ulps * np.finfo(dtype).eps * scale, f"{what}: max error {err:.3g} at scale {scale:.3g}"


def _both_ways(monkeypatch, fn):
    """fn() with the kernels on (each build forced) and off: [(label, result)]."""
    results = []
    for label, threshold, reference in [("serial", 1 << 62, "0"), ("parallel", 0, "0"), ("numpy", 0, "1")]:
        monkeypatch.setattr(fused, "PARALLEL_MIN_ELEMENTS", threshold)
        monkeypatch.setenv("MINIGRIFFIN_REFERENCE", reference)
        results.append((label, fn()))
    return results


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES)
def test_gelu_fused_equals_numpy(monkeypatch, dtype, shape):
    rng = np.random.default_rng(0)
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)

    def run():
        out, cache = gelu_tanh_forward(x)
        return out, gelu_tanh_backward(dy, cache)
    results = _both_ways(monkeypatch, run)
    (_, (out_ref, dx_ref)) = results[-1]
    for label, (out, dx) in results[:-1]:
        assert out.dtype == dtype and dx.dtype == dtype
        _close(out, out_ref, dtype, f"gelu forward ({label})")
        _close(dx, dx_ref, dtype, f"gelu backward ({label})")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES)
def test_mlp_fused_equals_numpy(monkeypatch, dtype, shape):
    rng = np.random.default_rng(1)
    B, T, D = shape
    F = 3 * D
    p = {"ffw_up": {"w": (rng.standard_normal((2, D, F)) / np.sqrt(D)).astype(dtype),
                    "b": rng.standard_normal((2, 1, 1, F)).astype(dtype)},
         "ffw_down": {"weight": (rng.standard_normal((D, F)) / np.sqrt(F)).astype(dtype),
                      "bias": rng.standard_normal(D).astype(dtype)}}
    x = rng.standard_normal(shape).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)

    def run():
        out, cache = mlp_forward(x, p)
        dx, grads = mlp_backward(dout, cache)
        return out, dx, grads
    results = _both_ways(monkeypatch, run)
    (_, (out_ref, dx_ref, grads_ref)) = results[-1]
    for label, (out, dx, grads) in results[:-1]:
        _close(out, out_ref, dtype, f"mlp forward ({label})")
        _close(dx, dx_ref, dtype, f"mlp dx ({label})")
        for (path, g), (_, g_ref) in zip(tree_leaves(grads), tree_leaves(grads_ref)):
            # float32 weight gradients sum B*T products: allow the matmul's own rounding on top
            if dtype == np.float64:
                _close(g, g_ref, dtype, f"mlp {path} ({label})")
            else:
                assert np.abs(g - g_ref).max() <= 1e-5 * np.abs(g_ref).max(), f"mlp {path} ({label})"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", SHAPES)
def test_rglru_backward_fused_equals_numpy(monkeypatch, dtype, shape):
    """Including resets (segment_pos == 0 mid-row) and a near 1 (the capped sqrt derivative)."""
    rng = np.random.default_rng(2)
    B, T, E = shape
    H = 1 if E % 3 else 3
    p = {"a_param": np.concatenate([rng.uniform(-9, 3, E - 1), [-12.0]]).astype(dtype),   # a -> 1 at the end
         "input_gate": {"w": (rng.standard_normal((H, E // H, E // H)) / np.sqrt(E // H)).astype(dtype),
                        "b": rng.standard_normal((H, E // H)).astype(dtype)},
         "a_gate": {"w": (rng.standard_normal((H, E // H, E // H)) / np.sqrt(E // H)).astype(dtype),
                    "b": rng.standard_normal((H, E // H)).astype(dtype)}}
    x = rng.standard_normal(shape).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    segment_pos = np.tile(np.arange(T), (B, 1))
    segment_pos[:, T // 2:] -= T // 2                           # a document starts mid-row

    def run():
        _, _, cache = rglru_forward(x, p, segment_pos, backend="reference")
        return rglru_backward(dy, None, cache)
    results = _both_ways(monkeypatch, run)
    (_, (dx_ref, _, grads_ref)) = results[-1]
    for label, (dx, _, grads) in results[:-1]:
        _close(dx, dx_ref, dtype, f"rglru dx ({label})")
        for (path, g), (_, g_ref) in zip(tree_leaves(grads), tree_leaves(grads_ref)):
            if dtype == np.float64:
                np.testing.assert_allclose(g, g_ref, rtol=1e-12, atol=1e-14 * np.abs(g_ref).max(),
                                           err_msg=f"rglru {path} ({label})")   # sums over B*T in another order
            else:
                assert np.abs(g - g_ref).max() <= 1e-5 * np.abs(g_ref).max(), f"rglru {path} ({label})"


def test_kernels_only_take_numpy_float_arrays():
    assert fused.numpy_floats(np.ones(3, np.float32), np.ones(3))
    assert not fused.numpy_floats(np.ones(3, np.int64))
    assert not fused.numpy_floats(np.ones(3).view(type("Sub", (np.ndarray,), {})))    # e.g. a device stand-in


# Where each registered accelerator is shown equal to its reference (a new one without a test fails below).
COVERED = {
    "minigriffin.layers.gelu_tanh_forward": "test_gelu_fused_equals_numpy",
    "minigriffin.layers.gelu_tanh_backward": "test_gelu_fused_equals_numpy",
    "minigriffin.layers.gated_gelu_forward": "test_mlp_fused_equals_numpy",
    "minigriffin.layers.gated_gelu_backward": "test_mlp_fused_equals_numpy",
    "minigriffin.rglru.rglru_gates_backward": "test_rglru_backward_fused_equals_numpy",
    "minigriffin.attention.attention_core_forward": "tests/test_fast_attention.py (fast core == definition)",
    "minigriffin.attention.attention_core_backward": "tests/test_fast_attention.py (fast core == definition)",
    "minigriffin.train.loss_and_grads": "tests/test_parallel.py (rows split between threads == one pass)",
    "minigriffin.inference.forward_chunk": "tests/test_decode.py (token by token == model_forward)",
}


def test_every_accelerator_is_checked_against_its_reference():
    registered = {key for key, found in accelerators().items() if found}
    assert registered == set(COVERED), f"accelerators without a test here: {registered - set(COVERED)}"


def test_the_reference_switch_and_the_dispatch(monkeypatch):
    """A registered fast version runs when it applies and MINIGRIFFIN_REFERENCE is not set; otherwise the
    definition runs. register() refuses a function that is not @accelerated, and a second registration."""
    calls = []

    @accelerated
    def double(x):
        calls.append("reference")
        return 2 * x

    @register(double, applies=lambda x: x > 0)
    def double_fast(x):
        calls.append("fast")
        return x + x

    monkeypatch.delenv("MINIGRIFFIN_REFERENCE", raising=False)
    assert not reference_only()
    assert double(3) == 6 and double(-1) == -2 and calls == ["fast", "reference"]
    from minigriffin.scan import linear_scan
    x = np.ones((1, 3, 2))
    scans = []
    monkeypatch.setattr("minigriffin.scan._load", lambda name: scans.append(name) or __import__(
        "minigriffin.scan.reference", fromlist=["scan"]))
    linear_scan(x, 0.5 * x)
    monkeypatch.setenv("MINIGRIFFIN_REFERENCE", "1")
    assert reference_only() and double(3) == 6 and calls[-1] == "reference"
    linear_scan(x, 0.5 * x)
    assert scans == ["numba", "reference"]            # the scan's "auto" is the NumPy reference too
    with pytest.raises(TypeError, match="not marked @accelerated"):
        register(lambda x: x, applies=lambda x: True)(lambda x: x)
    with pytest.raises(ValueError, match="already registered"):
        register(double, applies=lambda x: True)(double_fast)


def test_importing_the_package_registers_without_numba():
    import subprocess
    import sys
    code = ("import sys, minigriffin; from minigriffin.accelerate import accelerators; "
            "print(sum(len(v) for v in accelerators().values()), 'numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(len(COVERED)), "False"]
