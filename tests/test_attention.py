"""Local MQA (minigriffin.attention): blockwise == dense reference, mask edges, gradients, O(T*W) memory, errors.

The comparison with recurrentgemma's LocalAttentionBlock lives in tests/test_oracle_attention.py.
"""

import time
import tracemalloc

import numpy as np
import pytest

from minigriffin.attention import attention_backward, attention_forward, attention_mask
from minigriffin.gradcheck import assert_grads_close
from minigriffin.rope import rope_forward


def make_params(rng, D, H, dtype=np.float64, scale=1.0):
    """Random params with recurrentgemma's init scale (std sqrt(1/D)); `scale` > 1 gives peakier softmaxes."""
    Dh = D // H
    std = scale / np.sqrt(D)
    return {"proj_q": {"weight": (rng.standard_normal((D, D)) * std).astype(dtype)},
            "proj_k": {"weight": (rng.standard_normal((Dh, D)) * std).astype(dtype)},
            "proj_v": {"weight": (rng.standard_normal((Dh, D)) * std).astype(dtype)},
            "proj_final": {"weight": (rng.standard_normal((D, D)) * std).astype(dtype),
                           "bias": (rng.standard_normal(D) * 0.1).astype(dtype)}}


def packed_positions(rng, B, T, n_docs=3):
    """(B, T) segment_pos for B rows of packed documents: positions restart at 0 at random cut points."""
    rows = []
    for b in range(B):
        cuts = np.sort(rng.choice(np.arange(1, T), size=min(n_docs - 1, T - 1), replace=False)) if T > 1 else []
        pos = np.arange(T)
        for c in cuts:
            pos[c:] = np.arange(T - c)
        rows.append(pos)
    return np.stack(rows)


def dense_reference(x, params, segment_pos, num_heads, window, rope=True):
    """Naive O(T^2) local MQA: full (T, T) logits, mask built with explicit loops. float64 only.
    rope=False: no positional encoding (NoPE)."""
    B, T, D = x.shape
    H, Dh = num_heads, D // num_heads
    q = (x @ params["proj_q"]["weight"].T).reshape(B, T, H, Dh)
    k = (x @ params["proj_k"]["weight"].T).reshape(B, T, 1, Dh)
    v = x @ params["proj_v"]["weight"].T                                   # (B, T, Dh)
    if rope:
        q, _ = rope_forward(q, segment_pos)    # RoPE itself is checked in test_rope.py and against the oracle
        k, _ = rope_forward(k, segment_pos)
    out = np.zeros((B, T, H, Dh))
    for b in range(B):
        doc = np.cumsum(segment_pos[b] == 0)
        mask = np.array([[doc[s] == doc[t] and s <= t and t - s <= window for s in range(T)] for t in range(T)])
        for h in range(H):
            logits = q[b, :, h] @ k[b, :, 0].T * Dh ** -0.5                 # (T, T)
            logits = np.where(mask, logits, -np.inf)
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            out[b, :, h] = p @ v[b]
    return out.reshape(B, T, D) @ params["proj_final"]["weight"].T + params["proj_final"]["bias"]


# (B, T, D, H, window, block_size, positions): packed documents unless "single"; block_size None = default
CASES = {
    "local_packed_T_not_multiple_of_Q": (2, 13, 16, 2, 3, 4, "packed"),
    "local_default_block": (2, 37, 32, 4, 5, None, "packed"),
    "local_window_0": (1, 9, 8, 2, 0, 2, "packed"),
    "local_block_1": (1, 10, 16, 2, 4, 1, "packed"),
    "window_T_minus_1_is_global": (2, 12, 16, 4, 11, 5, "single"),
    "global_window_ge_T_packed": (2, 15, 16, 1, 40, None, "packed"),
    "T_1": (3, 1, 16, 2, 3, None, "single"),
    "continued_document": (1, 11, 8, 2, 3, 3, "continued"),
    "many_blocks_many_heads": (1, 70, 32, 8, 9, 8, "packed"),
}


def _case(name, dtype=np.float64, scale=2.0):
    B, T, D, H, W, Q, kind = CASES[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    x = rng.standard_normal((B, T, D)).astype(dtype)
    params = make_params(rng, D, H, dtype, scale=scale)
    if kind == "packed":
        pos = packed_positions(rng, B, T)
    elif kind == "continued":                  # the row starts mid-document: no 0 until index 4
        pos = np.concatenate([np.arange(7, 11), np.arange(T - 4)])[None]
    else:
        pos = np.tile(np.arange(T), (B, 1))
    return x, params, pos, dict(num_heads=H, window=W, block_size=Q), rng


@pytest.mark.parametrize("name", CASES)
def test_blockwise_forward_matches_dense_reference(name):
    x, params, pos, kw, _ = _case(name)
    out, _ = attention_forward(x, params, pos, **kw)
    ref = dense_reference(x, params, pos, kw["num_heads"], kw["window"])
    assert out.shape == x.shape and out.dtype == np.float64
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)          # float64, rtol 1e-12, atol 1e-12


@pytest.mark.parametrize("name", CASES)
def test_attention_backward_matches_finite_differences(name):
    x, params, pos, kw, rng = _case(name)
    out, cache = attention_forward(x, params, pos, **kw)
    dout = rng.standard_normal(out.shape)
    dx, grads = attention_backward(dout, cache)
    assert {k: {kk: g.shape for kk, g in v.items()} for k, v in grads.items()} == \
           {k: {kk: p.shape for kk, p in v.items()} for k, v in params.items()}
    # Central differences, step 1e-5: truncation ~ eps^2 * |f'''| ~ 1e-10 * 10 (measured: the error at step 1e-3
    # is 1e-5) and roundoff ~ 1e-15 * |out| / eps ~ 1e-9 (|out| up to ~13 with these peaky softmaxes; at step
    # 1e-6 the roundoff alone reached 2e-8). Measured worst relative error over all cases 3e-8, so rtol 1e-6 with
    # atol 1e-9 holds with margin, while a wrong or missing term is O(1e-2) or more.
    assert_grads_close(lambda x, params: attention_forward(x, params, pos, **kw)[0],
                       {"x": x, "params": params}, {"x": dx, "params": grads}, dout,
                       rtol=1e-6, atol=1e-9, eps=1e-5, max_elements=30)     # float64, rtol 1e-6, atol 1e-9


NOPE_CASES = ["local_packed_T_not_multiple_of_Q", "global_window_ge_T_packed", "continued_document"]


@pytest.mark.parametrize("name", NOPE_CASES)
def test_nope_forward_matches_dense_reference_and_finite_differences(name):
    """rope=False (the paper's NoPE baseline): q and k are used unrotated, forward and backward."""
    x, params, pos, kw, rng = _case(name)
    out, cache = attention_forward(x, params, pos, rope=False, **kw)
    ref = dense_reference(x, params, pos, kw["num_heads"], kw["window"], rope=False)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)          # float64, rtol 1e-12, atol 1e-12
    assert not np.allclose(out, attention_forward(x, params, pos, **kw)[0], rtol=1e-3)   # RoPE does matter
    dout = rng.standard_normal(out.shape)
    dx, grads = attention_backward(dout, cache)
    assert_grads_close(lambda x, params: attention_forward(x, params, pos, rope=False, **kw)[0],
                       {"x": x, "params": params}, {"x": dx, "params": grads}, dout,
                       rtol=1e-6, atol=1e-9, eps=1e-5, max_elements=30)     # float64, rtol 1e-6, atol 1e-9


@pytest.mark.parametrize("block_size", [1, 3, 7, 16, 200])
def test_result_does_not_depend_on_block_size(block_size):
    x, params, pos, kw, rng = _case("many_blocks_many_heads")
    out_ref, cache_ref = attention_forward(x, params, pos, **kw)
    dout = rng.standard_normal(out_ref.shape)
    dx_ref, grads_ref = attention_backward(dout, cache_ref)
    out, cache = attention_forward(x, params, pos, **(kw | {"block_size": block_size}))
    dx, grads = attention_backward(dout, cache)
    np.testing.assert_allclose(out, out_ref, rtol=1e-13, atol=1e-13)      # float64, 1e-13: only summation order
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-12)        # float64, 1e-12
    for name in grads:
        for leaf in grads[name]:
            np.testing.assert_allclose(grads[name][leaf], grads_ref[name][leaf], rtol=1e-12, atol=1e-12)  # float64


def test_float32_stays_float32_and_is_close_to_float64():
    x, params, pos, kw, rng = _case("local_default_block")
    out64, cache64 = attention_forward(x, params, pos, **kw)
    to32 = lambda tree: {k: {kk: a.astype(np.float32) for kk, a in v.items()} for k, v in tree.items()}  # noqa: E731
    out32, cache32 = attention_forward(x.astype(np.float32), to32(params), pos, **kw)
    assert out32.dtype == np.float32 and cache32.probs[0].dtype == np.float32
    np.testing.assert_allclose(out32, out64, rtol=1e-4, atol=1e-5)        # float32 vs float64, rtol 1e-4, atol 1e-5
    dout = rng.standard_normal(out64.shape)
    dx64, _ = attention_backward(dout, cache64)
    dx32, grads32 = attention_backward(dout.astype(np.float32), cache32)
    assert dx32.dtype == np.float32 and all(g.dtype == np.float32 for v in grads32.values() for g in v.values())
    np.testing.assert_allclose(dx32, dx64, rtol=1e-4, atol=1e-5)          # float32 vs float64, rtol 1e-4, atol 1e-5


# ---------------------------------------------------------------------------------------------- mask edges
def test_mask_window_edge_and_document_start():
    T, W, start = 30, 5, 17                     # documents [0, 17) and [17, 30)
    pos = np.concatenate([np.arange(start), np.arange(T - start)])[None]
    mask = attention_mask(pos, 0, T, 0, T, W)[0]                           # (T, T)
    for t in range(T):
        doc_start = 0 if t < start else start
        visible = [s for s in range(T) if mask[t, s]]
        assert visible == list(range(max(doc_start, t - W), t + 1)), t    # t - W .. t, clipped at the doc start
    assert mask[10, 5] and not mask[10, 4]                                # key t - W visible, t - W - 1 not
    assert mask[start + 1, start] and not mask[start + 1, start - 1]      # never across a document start
    assert mask.sum(axis=1).max() == W + 1                                # W + 1 keys, itself included


@pytest.mark.parametrize("q_start, q_end, k_start, k_end",
                         [(0, 30, 0, 30), (8, 12, 3, 12), (29, 30, 24, 30), (0, 1, 0, 1)])
def test_mask_block_is_a_slice_of_the_full_mask(q_start, q_end, k_start, k_end):
    pos = packed_positions(np.random.default_rng(0), 3, 30, n_docs=4)
    full = attention_mask(pos, 0, 30, 0, 30, 4)                           # (B, T, T)
    block = attention_mask(pos, q_start, q_end, k_start, k_end, 4)        # (B, Tq, Tk)
    assert block.dtype == bool and block.shape == (3, q_end - q_start, k_end - k_start)
    np.testing.assert_array_equal(block, full[:, q_start:q_end, k_start:k_end])   # exact


@pytest.mark.parametrize("block_size", [1, 4, None])
def test_forward_sees_exactly_the_window(block_size):
    """Perturbing v at key s changes query t's output iff s is in t's window and document."""
    T, W, start, t = 24, 6, 14, 21             # documents [0, 14) and [14, 24)
    rng = np.random.default_rng(7)
    params = make_params(rng, 16, 2)
    pos = np.concatenate([np.arange(start), np.arange(T - start)])[None]
    x = rng.standard_normal((1, T, 16))
    base, _ = attention_forward(x, params, pos, num_heads=2, window=W, block_size=block_size)
    for q in (t, start + 2):
        changed = []
        for s in range(T):
            x2 = x.copy()
            x2[0, s] += 1.0
            out, _ = attention_forward(x2, params, pos, num_heads=2, window=W, block_size=block_size)
            if np.abs(out[0, q] - base[0, q]).max() > 1e-12:                # float64: untouched rows are bit-equal
                changed.append(s)
        assert changed == list(range(max(start, q - W), q + 1)), (q, changed)


# ------------------------------------------------------------------------------------------------- memory
def test_memory_is_linear_in_T_times_W():
    B, T, W, D, H = 1, 8192, 64, 64, 2
    Dh = D // H
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, D))
    params = make_params(rng, D, H)
    pos = np.tile(np.arange(T), (B, 1))
    dout = rng.standard_normal((B, T, D))
    start = time.perf_counter()
    tracemalloc.start()
    try:
        out, cache = attention_forward(x, params, pos, num_heads=H, window=W)
        dx, grads = attention_backward(dout, cache)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - start
    mib = 2 ** 20
    # Expected, float64 (8 bytes), default block Q = min(max(W, 32), 128) = 64:
    #   cache after the forward, ~33 MiB:
    #     stored probabilities  B*H*T*(Q+W)*8 = 1*2*8192*128*8 = 16 MiB (the O(T*W) term)
    #     q (after RoPE), o, out: (B, T, D) = 8192*64*8        =  4 MiB each
    #     k, v: (B, T, Dh) = 8192*32*8 = 2 MiB each; RoPE sin/cos 0.5 MiB each
    #   backward on top, ~20 MiB: do, dq and two dx of (B, T, D) at 4 MiB, dk and dv at 2 MiB, RoPE temporaries
    #   per-block temporaries B*H*Q*(Q+W)*8 = 128 KiB each (negligible)
    # -> ~53 MiB (measured 53.2 MiB with NumPy 2.3); bound 64 MiB. Dense O(T^2) attention holds at least one
    # (T, T) float64 matrix, 512 MiB, so it can never pass.
    print(f"peak {peak / mib:.1f} MiB in {elapsed:.2f} s")
    assert peak < 64 * mib, f"peak {peak / mib:.1f} MiB"                # O(T*W) bound; O(T^2) is >= 512 MiB
    assert out.shape == dx.shape == (B, T, D) and grads["proj_k"]["weight"].shape == (Dh, D)


# ------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("mutate, exc, match", [
    (lambda a: a | {"x": a["x"][0]}, ValueError, r"x must be \(B, T, D\), got shape \(5, 16\)"),
    (lambda a: a | {"num_heads": 3}, ValueError, "D = 16 .* divisible by num_heads = 3"),
    (lambda a: a | {"num_heads": 8}, ValueError, "Dh = D / H = 16 / 8 = 2 must be a multiple of 4"),
    (lambda a: a | {"pos": a["pos"][:, :4]}, ValueError, r"segment_pos shape \(2, 4\) != \(B, T\) = \(2, 5\)"),
    (lambda a: a | {"pos": a["pos"].astype(float)}, TypeError, "segment_pos must be integer"),
    (lambda a: a | {"window": -1}, ValueError, "window must be an int >= 0"),
    (lambda a: a | {"block_size": 0}, ValueError, "block_size"),
    (lambda a: a | {"x": a["x"].astype(np.float16)}, TypeError, "float32 or float64"),
    (lambda a: a | {"params": a["params"] | {"proj_k": {"weight": np.zeros((16, 16))}}}, ValueError,
     r"proj_k.weight has shape \(16, 16\), expected \(4, 16\)"),
    (lambda a: a | {"params": a["params"] | {"proj_q": {"weight": np.zeros((16, 16)), "bias": np.zeros(16)}}},
     ValueError, "params\\['proj_q'\\] keys"),
    (lambda a: a | {"params": {k: v for k, v in a["params"].items() if k != "proj_v"}}, ValueError, "params keys"),
    (lambda a: a | {"params": a["params"] | {"proj_final": {"weight": np.zeros((16, 16), np.float32),
                                                             "bias": np.zeros(16)}}}, TypeError, "no silent casts"),
])
def test_attention_rejects_bad_inputs(mutate, exc, match):
    rng = np.random.default_rng(0)
    args = {"x": rng.standard_normal((2, 5, 16)), "params": make_params(rng, 16, 4),
            "pos": np.tile(np.arange(5), (2, 1)), "num_heads": 4, "window": 2, "block_size": None}
    a = mutate(args)
    with pytest.raises(exc, match=match):
        attention_forward(a["x"], a["params"], a["pos"], num_heads=a["num_heads"], window=a["window"],
                          block_size=a["block_size"])
