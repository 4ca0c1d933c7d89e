"""The fused attention core (minigriffin/fast/attention_core.py) equals the definition (attention.py).

Each case runs attention_core_forward / attention_core_backward with the accelerators on and off
(MINIGRIFFIN_REFERENCE=1), both ways the fast backward gets its probabilities (kept from the forward, or
recomputed from the log-sum-exp: KEEP_MAX_BYTES = 0) and with the serial and the multithreaded Numba builds
forced. Tolerances, relative to each output's largest magnitude (at least 1): float64 1e-12 (only the order of
operations differs: o = (e v) / l instead of (e / l) v, and the row sums); float32 2e-5 (the recomputed
probabilities are exp(logit - lse), whose argument carries the float32 rounding of logits up to ~10 in size).
The finite-difference checks of tests/test_attention.py run the fast path too (it is the default for NumPy
arrays); the one here checks the recomputing backward, which those small cases never reach.
"""

import numpy as np
import pytest

from minigriffin.attention import (attention_backward, attention_core_backward, attention_core_forward,
                                   attention_forward, default_block_size)
from minigriffin.conv1d import document_ids
from minigriffin.fast import attention_core
from minigriffin.gradcheck import assert_grads_close
from minigriffin.kvcache import AttentionState

# (B, T, H, Dh, window, block_size, carried keys N, positions)
CASES = {
    "global_single": (2, 40, 4, 8, 40, None, 0, "single"),
    "global_packed": (2, 37, 2, 8, 1000, 8, 0, "packed"),
    "local_packed": (3, 50, 2, 4, 7, 4, 0, "packed"),
    "window_0": (1, 12, 2, 4, 0, 3, 0, "packed"),
    "block_1": (1, 9, 2, 4, 3, 1, 0, "packed"),
    "T_1": (2, 1, 2, 4, 5, None, 0, "single"),
    "carried_local": (2, 21, 2, 8, 6, 5, 6, "packed, continued"),
    "carried_new_document": (1, 10, 2, 4, 6, 4, 5, "packed"),
    "carried_global": (1, 17, 4, 4, 100, 6, 9, "continued"),
}


def _positions(rng, B, T, kind):
    if kind == "single":
        return np.tile(np.arange(T), (B, 1))
    if kind == "continued":                                      # no document starts in the chunk
        return np.tile(np.arange(50, 50 + T), (B, 1))
    pos = np.tile(np.arange(T), (B, 1))
    for b in range(B):
        cuts = sorted(rng.choice(np.arange(1, T), size=min(2, T - 1), replace=False))
        for cut in cuts:
            pos[b, cut:] = np.arange(T - cut)
        if kind == "packed, continued":                         # the first document began before the chunk
            pos[b, :cuts[0]] += 20
    return pos


def _inputs(name, dtype):
    B, T, H, Dh, W, Q, N, kind = CASES[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    q = (2 * rng.standard_normal((B, T, H, Dh))).astype(dtype)  # peaky softmaxes
    k, v = (rng.standard_normal((B, N + T, Dh)).astype(dtype) for _ in range(2))
    do = rng.standard_normal((B, T, H, Dh)).astype(dtype)
    pos = _positions(rng, B, T, kind)
    doc = document_ids(pos)                                     # the chunk's ids: 0 until its first start, ...
    carried_doc = np.repeat(doc[:, :1] - (pos[:, :1] == 0), N, axis=1)   # the chunk's first document continued,
    doc = np.concatenate([carried_doc, doc], axis=1) if N else doc       # or the one before it (then invisible)
    options = dict(window=W, block_size=Q or default_block_size(W), carried=N)
    return q, k, v, doc, do, options


def _params(rng, D, Dh=8):
    return {"proj_q": {"weight": rng.standard_normal((D, D)) / 2},
            "proj_k": {"weight": rng.standard_normal((Dh, D)) / 2},
            "proj_v": {"weight": rng.standard_normal((Dh, D)) / 2},
            "proj_final": {"weight": rng.standard_normal((D, D)) / 4, "bias": rng.standard_normal(D)}}


def _run(q, k, v, doc, do, options):
    o, saved = attention_core_forward(q, k, v, doc, **options)
    return o, saved, attention_core_backward(do, q, k, v, saved, **options)


def _close(fast, ref, dtype, what):
    scale = max(float(np.abs(ref).max()), 1.0)      # at least 1: window 0 has dq = 0 (rounding only, ~1e-16)
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    err = float(np.abs(fast - ref).max())
    assert fast.dtype == dtype and err <= rtol * scale, f"{what}: max error {err:.3g} at scale {scale:.3g}"


BUILDS = [(name, "serial") for name in CASES] + [("global_packed", "parallel"), ("carried_local", "parallel")]


@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name, build", BUILDS)
def test_fast_core_equals_the_definition(monkeypatch, name, build, dtype, keep):
    args = _inputs(name, dtype)
    monkeypatch.setenv("MINIGRIFFIN_REFERENCE", "1")
    o_ref, saved_ref, grads_ref = _run(*args)
    assert isinstance(saved_ref, tuple) and not isinstance(saved_ref, attention_core.SoftmaxStats)
    monkeypatch.setenv("MINIGRIFFIN_REFERENCE", "0")
    monkeypatch.setattr(attention_core, "KEEP_MAX_BYTES", 1 << 40 if keep else 0)
    monkeypatch.setattr(attention_core, "PARALLEL_MIN_ELEMENTS", 1 << 62 if build == "serial" else 0)
    o, saved, grads = _run(*args)
    assert isinstance(saved, attention_core.SoftmaxStats) and (saved.kept is not None) == keep
    _close(o, o_ref, dtype, "o")
    for label, g, g_ref in zip(("dq", "dk", "dv"), grads, grads_ref):
        _close(g, g_ref, dtype, label)


@pytest.mark.parametrize("keep", [True, False])
def test_whole_layer_with_a_carried_state_equals_the_definition(monkeypatch, keep):
    """attention_forward/backward through a state (a KVBuffer-backed AttentionState, as chunked training has)."""
    rng = np.random.default_rng(5)
    B, T, N, D, H, W = 2, 19, 7, 16, 2, 8
    x = rng.standard_normal((B, T, D))
    params = _params(rng, D)
    pos = np.tile(np.arange(30, 30 + T), (B, 1))
    pos[1, 11:] = np.arange(T - 11)                             # row 1: a new document mid-chunk
    dout = rng.standard_normal((B, T, D))
    monkeypatch.setattr(attention_core, "KEEP_MAX_BYTES", 1 << 40 if keep else 0)
    results = []
    for reference in ("1", "0"):
        monkeypatch.setenv("MINIGRIFFIN_REFERENCE", reference)
        state = AttentionState(rng.standard_normal((B, N, 8)), rng.standard_normal((B, N, 8)),
                               np.ones((B, N), np.int64))
        doc = document_ids(pos)                                 # the chunk continues document 1
        out, cache = attention_forward(x, params, pos, num_heads=H, window=W, doc=doc, state=state)
        results.append((out, *attention_backward(dout, cache), cache.state))
    (out_ref, dx_ref, grads_ref, state_ref), (out, dx, grads, new_state) = results
    _close(out, out_ref, np.float64, "out")
    _close(dx, dx_ref, np.float64, "dx")
    for name in grads:
        for leaf in grads[name]:
            _close(grads[name][leaf], grads_ref[name][leaf], np.float64, f"{name}.{leaf}")
    np.testing.assert_array_equal(new_state.keys, state_ref.keys)


def test_recomputing_backward_matches_finite_differences(monkeypatch):
    """The flash-style backward (probabilities recomputed from the log-sum-exp), packed documents, a window."""
    monkeypatch.setattr(attention_core, "KEEP_MAX_BYTES", 0)
    rng = np.random.default_rng(3)
    B, T, D, H, W = 2, 23, 16, 2, 6
    x = rng.standard_normal((B, T, D))
    params = _params(rng, D)
    pos = _positions(rng, B, T, "packed")
    out, cache = attention_forward(x, params, pos, num_heads=H, window=W, block_size=4)
    assert isinstance(cache.probs, attention_core.SoftmaxStats) and cache.probs.kept is None
    dout = rng.standard_normal(out.shape)
    dx, grads = attention_backward(dout, cache)
    assert_grads_close(lambda x, params: attention_forward(x, params, pos, num_heads=H, window=W, block_size=4)[0],
                       {"x": x, "params": params}, {"x": dx, "params": grads}, dout,
                       rtol=1e-6, atol=1e-9, eps=1e-5, max_elements=30)     # float64, as test_attention.py


def test_the_fast_path_takes_only_what_it_can():
    q = np.zeros((1, 4, 2, 4))
    k = v = np.zeros((1, 4, 4))
    assert attention_core.applies_forward(q, k, v, np.array([[1, 1, 2, 2]]))
    assert not attention_core.applies_forward(q, k, v, np.array([[1, 2, 1, 2]]))   # a document in two runs
    assert not attention_core.applies_forward(q.astype(np.float16), k, v, np.array([[1, 1, 2, 2]]))
    assert not attention_core.applies_backward(q, q, k, v, (np.zeros((1, 4, 2, 4)),))   # the definition's probs
    np.testing.assert_array_equal(attention_core.document_starts(np.array([[0, 0, 1, 1, 1, 4], [2, 2, 2, 2, 2, 2]])),
                                  [[0, 0, 2, 2, 2, 5], [0, 0, 0, 0, 0, 0]])


def test_global_attention_memory_is_linear_in_T_when_recomputing(monkeypatch):
    """T = 8,192, global attention, float64: the definition keeps B*H*sum(Tq*Tk) = 68M probabilities (545 MB here);
    the recomputing path keeps (B, T, H) statistics and works on one query block's logits at a time."""
    import tracemalloc
    monkeypatch.setattr(attention_core, "KEEP_MAX_BYTES", 0)
    B, T, H, Dh = 1, 8192, 2, 16
    rng = np.random.default_rng(0)
    q = rng.standard_normal((B, T, H, Dh))
    k, v = rng.standard_normal((B, T, Dh)), rng.standard_normal((B, T, Dh))
    do = rng.standard_normal((B, T, H, Dh))
    doc = np.ones((B, T), np.int64)
    tracemalloc.start()
    try:
        o, saved = attention_core_forward(q, k, v, doc, window=T, block_size=128)
        attention_core_backward(do, q, k, v, saved, window=T, block_size=128)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # one block's exponentials and dlogits, B*H*128*T*8 = 16 MiB each, and the transposed copies NumPy's matmul
    # makes of them; o, dq and friends (B, T, H, Dh) 2 MiB each: measured 90 MiB, against 545 MB kept by the definition
    assert peak < 128 * 2**20, f"peak {peak / 2**20:.1f} MiB"
