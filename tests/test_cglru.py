"""The CG-LRU (minigriffin/cglru.py, Griffin Appendix B): finite-difference gradients, the carried state, resets.

Gradients: float64 central differences (minigriffin.gradcheck, five-point stencil, step 1e-4) of every input
and parameter, with documents starting mid-sequence and a carried state; rtol 1e-7, atol 1e-10. Agreement with
recurrentgemma's JAX layer is tests/test_oracle_cglru.py.
"""

import numpy as np
import pytest

from minigriffin.cglru import cglru_backward, cglru_forward, cglru_init, complex_to_merged, merged_to_complex
from minigriffin.gradcheck import assert_grads_close

B, T, E, H = 2, 11, 8, 2
# row 0 continues a document from an earlier chunk (so h0 matters); row 1 holds three documents, the first at t = 0
SP = np.array([list(range(7, 7 + T)), [0, 1, 2, 0, 1, 2, 3, 0, 1, 2, 3]])


def make_case(seed=0, dtype=np.float64, T=T, segment_pos=SP):
    """params with every leaf non-trivial (biases drawn, gates away from 1/2), x, h0 (merged), dy, dh_last."""
    rng = np.random.default_rng(seed)
    p = cglru_init(rng, E, H, dtype)
    for gate in ("input_gate", "a_gate"):
        p[gate]["w"] = (4 * p[gate]["w"]).astype(dtype)
        p[gate]["b"] = rng.normal(0, 0.5, p[gate]["b"].shape).astype(dtype)
    x, dy = (rng.standard_normal((B, T, E)).astype(dtype) for _ in range(2))
    h0, dh_last = (rng.standard_normal((B, E)).astype(dtype) for _ in range(2))
    return p, x, h0, dy, dh_last, segment_pos[:, :T]


@pytest.mark.parametrize("backend", ["reference", "numba", "blelloch"])
@pytest.mark.parametrize("with_h0", [True, False])
def test_gradients_match_finite_differences(backend, with_h0):
    p, x, h0, dy, dh_last, sp = make_case(1)
    h0 = h0 if with_h0 else None
    y, h_last, cache = cglru_forward(x, p, sp, h0=h0, backend=backend)
    dx, dh0, grads = cglru_backward(dy, dh_last, cache)
    assert (dh0 is None) == (h0 is None)
    assert set(grads) == {"a_param", "a_imag_param", "input_gate", "a_gate"}
    inputs = {"x": x, "params": p} | ({"h0": h0} if with_h0 else {})
    analytic = {"x": dx, "params": grads} | ({"h0": dh0} if with_h0 else {})

    def forward(x, params, h0=None):
        y, h_last, _ = cglru_forward(x, params, sp, h0=h0, backend=backend)
        return y, h_last

    reports = assert_grads_close(forward, inputs, analytic, (dy, dh_last), rtol=1e-7, atol=1e-10,   # float64
                                 eps=1e-4, order=4, max_elements=48)
    assert {r.name for r in reports} >= {"x", "params.a_param", "params.a_imag_param", "params.input_gate.w",
                                         "params.input_gate.b", "params.a_gate.w", "params.a_gate.b"}
    if with_h0:
        assert np.abs(dh0[0]).max() > 1e-3     # row 0 continues its document: the state carries gradient
        np.testing.assert_array_equal(dh0[1], 0.0)   # row 1 starts a document at t = 0: h0 is dropped, exactly


def test_complex_h0_is_the_merged_pair():
    """h0 given as complex (B, E/2) or as the real pair [Re ; Im] (B, E): the same outputs, and dh0 comes back in
    the form it was given, dL/dRe + i dL/dIm for the complex one (float64, exact)."""
    p, x, h0, dy, dh_last, sp = make_case(2)
    y, last, cache = cglru_forward(x, p, sp, h0=h0)
    y_c, last_c, cache_c = cglru_forward(x, p, sp, h0=merged_to_complex(h0))
    np.testing.assert_array_equal(y_c, y)                                   # float64, exact
    np.testing.assert_array_equal(last_c, last)                             # float64, exact
    assert last.shape == (B, E) and last.dtype == np.float64
    _, dh0, _ = cglru_backward(dy, dh_last, cache)
    _, dh0_c, _ = cglru_backward(dy, dh_last, cache_c)
    assert dh0.shape == (B, E) and dh0_c.shape == (B, E // 2) and dh0_c.dtype == np.complex128
    np.testing.assert_array_equal(complex_to_merged(dh0_c), dh0)            # float64, exact


@pytest.mark.parametrize("backend", ["reference", "numba"])
def test_chunks_with_a_carried_state_equal_one_pass(backend):
    """Forward over T = 25 in chunks of 9, 1 and 15, each starting from the last one's h_last, equals one pass;
    backward chunk by chunk (dh_last of a chunk = dh0 of the next) gives one pass's gradients, the parameter
    gradients summed over chunks (float64, rtol 1e-12 of each tensor's largest value)."""
    sp = np.array([list(range(3, 28)), [0, 1, 2, 3, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 2, 3, 4, 5, 6]])
    p, x, h0, dy, dh_last, sp = make_case(3, T=25, segment_pos=sp)
    y, last, cache = cglru_forward(x, p, sp, h0=h0, backend=backend)
    dx, dh0, grads = cglru_backward(dy, dh_last, cache)
    bounds, caches, ys, state = [0, 9, 10, 25], [], [], h0
    for t0, t1 in zip(bounds, bounds[1:]):
        y_k, state, cache_k = cglru_forward(x[:, t0:t1].copy(), p, sp[:, t0:t1], h0=state, backend=backend)
        ys.append(y_k)
        caches.append(cache_k)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-12 * np.abs(b).max())  # noqa: E731
    close(np.concatenate(ys, axis=1), y)                                    # float64
    close(state, last)                                                      # float64
    dxs, grad_sum, d_state = [], None, dh_last
    for (t0, t1), cache_k in reversed(list(zip(zip(bounds, bounds[1:]), caches))):
        dx_k, d_state, grads_k = cglru_backward(dy[:, t0:t1].copy(), d_state, cache_k)
        dxs.insert(0, dx_k)
        grad_sum = grads_k if grad_sum is None else {
            k: ({leaf: grad_sum[k][leaf] + v[leaf] for leaf in v} if isinstance(v, dict) else grad_sum[k] + v)
            for k, v in grads_k.items()}
    close(np.concatenate(dxs, axis=1), dx)                                  # float64
    close(d_state, dh0)                                                     # float64
    for key in ("a_param", "a_imag_param"):
        close(grad_sum[key], grads[key])                                    # float64
    for gate in ("input_gate", "a_gate"):
        for leaf in ("w", "b"):
            close(grad_sum[gate][leaf], grads[gate][leaf])                  # float64


def test_a_document_start_drops_the_state():
    """From a segment_pos == 0 on, the output does not depend on h0 or on earlier steps (float64, exact)."""
    p, x, h0, _, _, _ = make_case(4)
    sp = np.tile(np.array([5, 6, 7, 8, 0, 1, 2, 3, 4, 5, 6]), (B, 1))
    y, _, _ = cglru_forward(x, p, sp, h0=h0, backend="reference")
    x_other = x.copy()
    x_other[:, :4] = 7.0
    y_other, _, _ = cglru_forward(x_other, p, sp, h0=-3 * h0, backend="reference")
    np.testing.assert_array_equal(y_other[:, 4:], y[:, 4:])                 # float64, exact
    assert np.abs(y_other[:, :4] - y[:, :4]).min() > 0


def test_one_step_and_float32():
    """T = 1 (decoding) from a state equals that step of a longer pass (float64, exact); float32 runs a complex64
    scan and agrees with float64 to 1e-5 of the output's largest value."""
    p, x, h0, _, _, sp = make_case(5)
    y, _, _ = cglru_forward(x, p, sp, h0=h0, backend="reference")
    y1, last1, _ = cglru_forward(x[:, :1].copy(), p, sp[:, :1], h0=h0, backend="reference")
    np.testing.assert_array_equal(y1, y[:, :1])                             # float64, exact
    p32 = {k: ({leaf: w.astype(np.float32) for leaf, w in v.items()} if isinstance(v, dict)
               else v.astype(np.float32)) for k, v in p.items()}
    y32, last32, cache32 = cglru_forward(x.astype(np.float32), p32, sp, h0=h0.astype(np.float32))
    assert y32.dtype == last32.dtype == np.float32 and cache32.h.dtype == np.complex64
    np.testing.assert_allclose(y32, y, rtol=0, atol=1e-5 * np.abs(y).max())   # float32 vs float64


def test_init_names_shapes_and_ranges():
    p = cglru_init(np.random.default_rng(0), 64, 4, "float32")
    assert {k: v.shape for k, v in p.items() if not isinstance(v, dict)} == {"a_param": (32,), "a_imag_param": (32,)}
    for gate in ("input_gate", "a_gate"):
        assert p[gate]["w"].shape == (4, 16, 8) and p[gate]["b"].shape == (4, 8)
        assert p[gate]["w"].dtype == np.float32 and not p[gate]["b"].any()
    assert 0 <= p["a_imag_param"].min() and p["a_imag_param"].max() <= 0.1 * np.pi
    radius = 1 / (1 + np.exp(p["a_param"].astype(np.float64)))            # |a| = sigmoid(-a_param)
    assert radius.min() >= 0.9 - 1e-6 and radius.max() <= 0.999 + 1e-6
    with pytest.raises(ValueError, match="must be even"):
        cglru_init(np.random.default_rng(0), 7, 1)
    with pytest.raises(ValueError, match="multiple of num_heads"):
        cglru_init(np.random.default_rng(0), 12, 4)


def test_a_wrong_state_or_width_is_refused():
    p, x, h0, _, _, sp = make_case(6)
    with pytest.raises(ValueError, match=r"real pair .*\(2, 8\) float64 or complex \(2, 4\) complex128"):
        cglru_forward(x, p, sp, h0=h0[:, :4])
    with pytest.raises(ValueError, match="got \\(2, 8\\) float32"):
        cglru_forward(x, p, sp, h0=h0.astype(np.float32))
    with pytest.raises(ValueError, match="must be even and twice a_param's"):
        cglru_forward(x[..., :6], p, sp)
