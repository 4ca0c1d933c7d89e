"""The fused T = 1 decode path (minigriffin.fast.decode, the accelerator of forward_chunk for one token on NumPy arrays) and
the preallocated KV cache (inference.KVBuffer).

Reference: model.model_forward on the whole sequence. Tolerances as tests/test_inference.py: float64
|decoded - full| <= 1e-12 * (|full| + max |full|); float32 the same with 1e-5 (sums run in another order
than OpenBLAS's, and 1 + tanh is computed as 2 / (1 + exp(-2u)), so agreement is to rounding, not bitwise).
"""

import numba
import numpy as np
import pytest

from strategies import assert_close_to_scale, run_chunks, tiny_model

from minigriffin.fast import decode, decode_attention, decode_math
from minigriffin.inference import (AttentionState, KVBuffer, forward_chunk, init_state, state_nbytes,
                                   state_reserved_nbytes)
from minigriffin.model import model_forward

CASES = {
    "hawk": dict(preset="hawk-tiny"),
    "griffin-W4": dict(preset="griffin-tiny"),                                   # W = 4 << T
    "griffin-W0-capped": dict(preset="griffin-tiny", attention_window_size=0, embeddings_scale_by_sqrt_dim=True,
                              logits_soft_cap=30.0),
    "mqa-W4": dict(preset="mqa-tiny", global_attention=False),                  # local, W = 4 << T
    "mqa-global": dict(preset="mqa-tiny"),                                       # global_attention
    "mqa-nope": dict(preset="mqa-tiny", use_rope=False),   # no positional encoding
}


def _packed_positions(T, starts, first=0):
    """segment_pos of one row: a document continues from `first`, new ones start at each index in `starts`."""
    pos, p = [], first
    for t in range(T):
        p = 0 if t in starts else (p + 1 if t else p)
        pos.append(p)
    return np.array(pos)


def _segment_pos(T):
    return np.stack([np.arange(T),                                              # one document
                     _packed_positions(T, {5, 6, 19, 40, 41, 42, 77}, first=3)])   # packed, doc starts in a row


def _stepped_and_full(name, dtype, T):
    """Logits of T tokens fed one at a time (packed documents, _segment_pos) and of one full forward pass."""
    cfg, params, _ = tiny_model(CASES[name], dtype, 3)
    segment_pos = _segment_pos(T)
    tokens = np.random.default_rng(4).integers(0, cfg.vocab_size, size=segment_pos.shape)
    full, _ = model_forward(params, tokens, segment_pos, cfg)
    stepped, state = run_chunks(params, tokens, segment_pos, cfg, [1] * T)
    return stepped, full, state


@pytest.mark.parametrize("name", CASES)
def test_token_by_token_equals_full_forward_float64(name):
    """100 tokens one at a time: packed documents (a start mid-sequence, three in a row), W < T, the KV
    buffer refilled many times (tiny W = 4: a new buffer every 16 tokens)."""
    T = 100
    stepped, full, state = _stepped_and_full(name, "float64", T)
    assert state.plan is not None and state.num_tokens == T                     # the fast path ran
    assert_close_to_scale(stepped, full, 1e-12)                                          # float64, rtol 1e-12


@pytest.mark.parametrize("name", ["hawk", "griffin-W4", "mqa-global"])
def test_token_by_token_equals_full_forward_float32(name):
    stepped, full, _ = _stepped_and_full(name, "float32", 60)
    assert stepped.dtype == np.float32
    assert_close_to_scale(stepped, full, 1e-5)                                           # float32, rtol 1e-5


@pytest.mark.parametrize("name", ["griffin-W4", "mqa-W4", "mqa-global"])
def test_mixing_chunks_and_single_tokens(name):
    """Prompt chunks (T > 1, the reference path) and single steps (the fused path) hand the state back and
    forth, through the same KV buffers."""
    cfg, params, _ = tiny_model(CASES[name], "float64", 5)
    sizes = [7, 1, 1, 3, 1, 1, 1, 9, 1, 2, 1, 1, 1, 1, 1, 6, 1, 1, 20, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    T = sum(sizes)
    segment_pos = _segment_pos(T)
    tokens = np.random.default_rng(6).integers(0, cfg.vocab_size, size=segment_pos.shape)
    full, _ = model_forward(params, tokens, segment_pos, cfg)
    mixed, _ = run_chunks(params, tokens, segment_pos, cfg, sizes)
    assert_close_to_scale(mixed, full, 1e-12)                                            # float64, rtol 1e-12


def test_kv_buffer_is_reused_then_replaced_and_states_stay_valid():
    """Linear decoding appends in place; a buffer fills and the last W + 1 entries move to a new one; an
    old state continued again copies instead of overwriting what a newer state holds."""
    cfg, params, _ = tiny_model(CASES["mqa-W4"], "float64", 7)
    B, T, W = 2, 70, cfg.attention_window_size
    segment_pos = np.tile(np.arange(T), (B, 1))
    tokens = np.random.default_rng(8).integers(0, cfg.vocab_size, size=(B, T))
    full, _ = model_forward(params, tokens, segment_pos, cfg)
    state = init_state(cfg, B)
    buffers, states = [], []
    for t in range(T):
        logits, state = forward_chunk(params, tokens[:, t:t + 1], segment_pos[:, t:t + 1], cfg, state)
        assert_close_to_scale(logits[:, 0], full[:, t], 1e-12)                          # float64, rtol 1e-12
        block = state.blocks[0]
        assert isinstance(block.buffer, KVBuffer) and block.keys.shape == (B, min(t + 1, W), cfg.head_dim)
        assert np.shares_memory(block.keys, block.buffer.keys)                  # a view, not a copy
        buffers.append(block.buffer)
        states.append(state)
    assert len({id(b) for b in buffers}) >= 4                                    # wrapped around several times
    assert buffers[10] is buffers[11]                                            # ... appending in place between
    # Continue an old state twice: each time it must give the full forward's next logits, and the newer
    # states built on the same buffer must still hold what they held.
    keys_before = states[-1].blocks[0].keys.copy()
    for _ in range(2):
        logits, _ = forward_chunk(params, tokens[:, 31:32], segment_pos[:, 31:32], cfg, states[30])
        assert_close_to_scale(logits[:, 0], full[:, 31], 1e-12)                         # float64, rtol 1e-12
    np.testing.assert_array_equal(states[-1].blocks[0].keys, keys_before)


def test_state_nbytes_counts_the_cache_not_the_spare_room():
    cfg, params, _ = tiny_model(dict(preset="griffin-tiny", attention_window_size=16), "float64", 0)
    tokens = np.zeros((1, 40), np.int64)
    pos = np.arange(40)[None]
    _, state = run_chunks(params, tokens, pos, cfg, [1] * 40)
    W, Dh = cfg.attention_window_size, cfg.head_dim
    attention = [b for b in state.blocks if isinstance(b, AttentionState)]
    assert [b.keys.shape for b in attention] == [(1, W, Dh)]
    _, reference_state = run_chunks(params, tokens, pos, cfg, [40])                 # chunk path: same accounting
    assert state_nbytes(state) == state_nbytes(reference_state)
    assert state_reserved_nbytes(state) >= state_nbytes(state)
    assert state_reserved_nbytes(state) - state_nbytes(state) <= (W + 1 + 16) * (2 * 8 * Dh + 8)


def test_hand_built_attention_state_is_moved_into_a_buffer():
    """AttentionState(keys, values, doc) of plain arrays (as benchmarks and notebooks build) still works."""
    cfg, params, _ = tiny_model(CASES["mqa-global"], "float64", 9)
    T = 12
    pos = np.arange(T)[None]
    tokens = np.random.default_rng(2).integers(0, cfg.vocab_size, size=(1, T))
    full, _ = model_forward(params, tokens, pos, cfg)
    _, state = run_chunks(params, tokens[:, :T - 1], pos[:, :T - 1], cfg, [T - 1])
    plain = state._replace(blocks=tuple(AttentionState(b.keys.copy(), b.values.copy(), b.doc.copy())
                                        for b in state.blocks), plan=None)
    logits, new = forward_chunk(params, tokens[:, T - 1:], pos[:, T - 1:], cfg, plain)
    assert_close_to_scale(logits[:, 0], full[:, T - 1], 1e-12)                          # float64, rtol 1e-12
    assert all(b.buffer is not None for b in new.blocks)


def test_plan_is_rebuilt_for_other_params():
    cfg, params, _ = tiny_model(CASES["hawk"], "float64", 1)
    _, other, _ = tiny_model(CASES["hawk"], "float64", 2)
    tokens = np.array([[3]])
    _, state = forward_chunk(params, tokens, np.array([[0]]), cfg, init_state(cfg, 1))
    assert decode.plan_matches(state.plan, params) and not decode.plan_matches(state.plan, other)
    a, _ = forward_chunk(other, tokens, np.array([[1]]), cfg, state)
    b, _ = forward_chunk(other, tokens, np.array([[1]]), cfg, state._replace(plan=None))
    np.testing.assert_array_equal(a, b)                                          # float64, bitwise


def test_parallel_row_groups_equal_serial(monkeypatch):
    """B > 1 splits rows between threads; each row's arithmetic is the same whatever the split."""
    cfg, params, _ = tiny_model(CASES["griffin-W4"], "float64", 3)
    B, T = 5, 12
    segment_pos = np.tile(np.arange(T), (B, 1))
    tokens = np.random.default_rng(1).integers(0, cfg.vocab_size, size=(B, T))
    results = []
    for groups in (1, 2, 3):
        monkeypatch.setattr(decode, "_groups", lambda B, g=groups: min(B, g))
        results.append(run_chunks(params, tokens, segment_pos, cfg, [1] * T)[0])
    np.testing.assert_array_equal(results[0], results[1])                       # float64, bitwise
    np.testing.assert_array_equal(results[0], results[2])                       # float64, bitwise


def _softmax_attention(q, keys, values, doc, query_doc, scale):
    """Plain NumPy reference: o[b, h] = softmax_s(scale k_s.q_h over keys with doc == query_doc) @ V."""
    logits = scale * np.einsum("bsd,bhd->bhs", keys, q)                         # (B, H, M)
    logits = np.where((doc == query_doc[:, None])[:, None, :], logits, -np.inf)
    p = np.exp(logits - logits.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    return np.einsum("bhs,bsd->bhd", p, values).reshape(q.shape[0], -1)        # (B, H * Dh)


@pytest.mark.parametrize("n_parts", [1, 2, 3])
def test_attention_core_equals_softmax_reference(n_parts):
    """attention_core_rows and attention_core_split (keys cut into runs, flash-decoding's combine) on the
    entries [start, stop) of a larger buffer, against plain NumPy softmax attention; also when a whole run of
    keys is masked (another document) and so has no max of its own."""
    rng = np.random.default_rng(0)
    B, H, Dh, C, start, stop = 3, 4, 8, 120, 7, 97
    cfg, _, _ = tiny_model(CASES["mqa-global"], "float64", 1)
    cs = decode_math.constants(cfg)
    q = rng.standard_normal((B, H, Dh))
    keys, values = rng.standard_normal((B, C, Dh)), rng.standard_normal((B, C, Dh))
    doc = np.ones((B, C), np.int64)
    doc[1, :start + 50] = 0                                 # row 1: its first run (or two) of keys all masked
    doc[2, ::3] = 0                                         # row 2: scattered masked keys
    query_doc = np.ones(B, np.int64)
    view = slice(start, stop)
    expected = _softmax_attention(q, keys[:, view], values[:, view], doc[:, view], query_doc, cs[decode_math.ATTN_SCALE])
    rows, split = np.full((B, H * Dh), np.nan), np.full((B, H * Dh), np.nan)
    decode_attention.attention_core_rows(0, B, q, keys, values, doc, start, stop, query_doc, cs, rows)
    decode_attention.attention_core_split(q, keys, values, doc, start, stop, query_doc, cs, split, n_parts)
    assert_close_to_scale(rows, expected, 1e-13)                                 # float64, rtol 1e-13
    assert_close_to_scale(split, expected, 1e-13)                                # float64, rtol 1e-13


def test_batch_of_one_splits_long_attention(monkeypatch):
    """With two decode threads and B = 1, attention over many keys runs as two runs of keys on two threads;
    token-by-token decoding still equals the full forward pass."""
    if numba.get_num_threads() < 2:
        pytest.skip("needs 2 Numba threads (NUMBA_NUM_THREADS >= 2) for the split to run")
    cfg, params, _ = tiny_model(CASES["mqa-global"], "float64", 3)
    T = 100
    monkeypatch.setenv("MINIGRIFFIN_DECODE_THREADS", "2")
    monkeypatch.setattr(decode, "SPLIT_MIN_KEYS", 16)     # split from 32 keys on (the default is 256 per thread)
    calls = []
    split = decode_attention.attention_core_split
    monkeypatch.setattr(decode, "attention_core_split", lambda *a: calls.append(a[-1]) or split(*a))
    segment_pos = _segment_pos(T)[1:]                      # one row, packed documents
    tokens = np.random.default_rng(4).integers(0, cfg.vocab_size, size=segment_pos.shape)
    full, _ = model_forward(params, tokens, segment_pos, cfg)
    stepped, _ = run_chunks(params, tokens, segment_pos, cfg, [1] * T)
    assert calls and set(calls) == {2}                     # the split ran, in two runs
    assert_close_to_scale(stepped, full, 1e-12)                                          # float64, rtol 1e-12


@pytest.mark.parametrize("raw", ["0", "two", "-1"])
def test_bad_decode_thread_count_is_an_error(monkeypatch, raw):
    monkeypatch.setenv("MINIGRIFFIN_DECODE_THREADS", raw)
    with pytest.raises(ValueError, match="MINIGRIFFIN_DECODE_THREADS"):
        decode.decode_threads()


def test_nan_in_a_key_reaches_the_output():
    """The logits' dot products may be reordered (fastmath "reassoc"), but NaN must still propagate."""
    cfg, _, _ = tiny_model(CASES["mqa-global"], "float64", 1)
    cs = decode_math.constants(cfg)
    rng = np.random.default_rng(0)
    B, H, Dh, M = 2, 4, 8, 20
    q, keys, values = rng.standard_normal((B, H, Dh)), rng.standard_normal((B, M, Dh)), rng.standard_normal((B, M, Dh))
    keys[1, 5, 3] = np.nan
    doc, query_doc, o = np.zeros((B, M), np.int64), np.zeros(B, np.int64), np.empty((B, H * Dh))
    decode_attention.attention_core_rows(0, B, q, keys, values, doc, 0, M, query_doc, cs, o)
    assert np.isfinite(o[0]).all() and np.isnan(o[1]).all()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_vectorising_exp_is_within_two_ulp_of_numpy(dtype):
    """decode_math.exp against the correctly rounded exp (float32: float64 np.exp rounded; float64: np.exp, itself
    within an ulp) over the dtype's whole range: at most 2 ulp where the result is a normal number, at most one
    smallest subnormal in the subnormal range, and exactly inf, 0 and NaN where those are the answer."""
    cfg, _, _ = tiny_model(CASES["hawk"], dtype, 1)
    cs = decode_math.constants(cfg)
    dt = np.dtype(dtype)
    edge = {np.float32: 89.0, np.float64: 710.0}[dt.type]
    x = np.concatenate([np.linspace(-edge - 40, edge + 5, 400_001), 5 * np.random.default_rng(0).standard_normal(100_000),
                        [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30, 1e-30, -1e-30]]).astype(dt)
    got = x.copy()
    decode_math.exp_in_place(got, cs)                                          # the kernels' own loop
    with np.errstate(over="ignore"):
        want = np.exp(x.astype(np.float64)).astype(dt)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(got[np.isinf(want)], want[np.isinf(want)])
    np.testing.assert_array_equal(got[want == 0], 0)
    normal = np.isfinite(want) & (want >= np.finfo(dt).tiny)
    ulps = np.abs(got[normal].astype(np.float64) - want[normal]) / np.spacing(want[normal]).astype(np.float64)
    assert ulps.max() <= 2.0, f"{dtype}: {ulps.max()} ulp at x = {x[normal][np.argmax(ulps)]}"
    subnormal = (want > 0) & (want < np.finfo(dt).tiny)
    assert subnormal.sum() > 100
    steps = np.abs(got[subnormal].astype(np.float64) - want[subnormal]) / np.finfo(dt).smallest_subnormal
    assert steps.max() <= 1.0
