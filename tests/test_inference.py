"""minigriffin.inference (forward_chunk with carried state) and minigriffin.sample (generate).

The reference is model.model_forward on the whole sequence. Tolerance for float64: |chunked - full| <=
1e-12 * (|full| + max |full|), i.e. rtol 1e-12 plus an absolute floor of 1e-12 of the logits' scale, because a
T = 1 matmul sums in a different order than a T = 23 one and logits near 0 have no relative accuracy
(measured: max |chunked - full| / max |full| ~ 2e-15 in every case). float32: the same with 1e-5.
"""

import numpy as np
import pytest

from strategies import assert_close_to_scale, run_chunks, tiny_model

from minigriffin.inference import (AttentionState, ModelState, RecurrentState, forward_chunk, init_state,
                                   state_nbytes)
from minigriffin.model import model_forward
from minigriffin.sample import generate, sample_next

T_TOTAL = 23   # prime: no chunk size in CHUNK_SIZES divides it, so the last chunk is always shorter
# Row 0: one document. Row 1: continues a document (no 0 at the start), then documents start at 3, 10, 11
# (two starts in a row) and 20.
SEGMENT_POS = np.array([list(range(T_TOTAL)),
                        [3, 4, 5, 0, 1, 2, 3, 4, 5, 6, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 2]])
CASES = {   # tiny presets have W = 4 < every chunk of 5 or 7 and > chunks of 1, 2, 3
    "hawk": dict(preset="hawk-tiny"),
    "griffin-W4": dict(preset="griffin-tiny"),
    "griffin-W16": dict(preset="griffin-tiny", attention_window_size=16),   # W > every chunk, < T
    "griffin-W0-capped": dict(preset="griffin-tiny", attention_window_size=0, embeddings_scale_by_sqrt_dim=True,
                              logits_soft_cap=30.0),
    "mqa-local-W4": dict(preset="mqa-tiny", global_attention=False),
    "mqa-global": dict(preset="mqa-tiny"),                                  # global_attention (the preset)
    "mqa-nope": dict(preset="mqa-tiny", use_rope=False),                     # no positional encoding
    "griffin-cglru": dict(preset="griffin-tiny", lru_only_real=False),       # complex-gated recurrence
}
CHUNK_SIZES = [1, 2, 3, 5, 7]


def _model(case, dtype="float64", seed=0):
    cfg, params, _ = tiny_model(case, dtype, seed)
    return cfg, params


def _tokens(cfg, shape, seed=1):
    return np.random.default_rng(seed).integers(0, cfg.vocab_size, size=shape)


def _even_sizes(T, size):
    return [min(size, T - s) for s in range(0, T, size)]


@pytest.mark.parametrize("chunk", CHUNK_SIZES)
@pytest.mark.parametrize("name", CASES)
def test_chunked_equals_full_forward(name, chunk):
    cfg, params = _model(CASES[name])
    tokens = _tokens(cfg, SEGMENT_POS.shape)
    full, _ = model_forward(params, tokens, SEGMENT_POS, cfg)
    chunked, state = run_chunks(params, tokens, SEGMENT_POS, cfg, _even_sizes(T_TOTAL, chunk))
    assert chunked.dtype == np.float64 and state.num_tokens == T_TOTAL
    assert_close_to_scale(chunked, full, 1e-12)                          # float64, rtol 1e-12 (+ 1e-12 * max|full|)


@pytest.mark.parametrize("name", CASES)
def test_uneven_chunks_equal_full_forward(name):
    cfg, params = _model(CASES[name])
    tokens = _tokens(cfg, SEGMENT_POS.shape)
    full, _ = model_forward(params, tokens, SEGMENT_POS, cfg)
    chunked, _ = run_chunks(params, tokens, SEGMENT_POS, cfg, [1, 4, 2, 9, 7])
    assert_close_to_scale(chunked, full, 1e-12)                          # float64, rtol 1e-12 (+ 1e-12 * max|full|)


@pytest.mark.parametrize("name", ["hawk", "griffin-W4", "mqa-global", "griffin-cglru"])
def test_token_by_token_equals_full_forward_long(name):
    """Chunk size 1 over 70 tokens: well past the window, several documents, the decode path of sampling."""
    cfg, params = _model(CASES[name], seed=3)
    T = 70
    segment_pos = np.array([np.arange(T), np.concatenate([np.arange(30), np.arange(25), np.arange(15)])])
    tokens = _tokens(cfg, segment_pos.shape, seed=4)
    full, _ = model_forward(params, tokens, segment_pos, cfg)
    stepped, _ = run_chunks(params, tokens, segment_pos, cfg, [1] * T)
    assert_close_to_scale(stepped, full, 1e-12)                          # float64, rtol 1e-12 (+ 1e-12 * max|full|)


@pytest.mark.parametrize("name", ["hawk", "griffin-W4", "mqa-global"])
def test_float32_chunked_matches_full_and_state_is_float32(name):
    cfg, params = _model(CASES[name], dtype="float32")
    tokens = _tokens(cfg, SEGMENT_POS.shape)
    full, _ = model_forward(params, tokens, SEGMENT_POS, cfg)
    chunked, state = run_chunks(params, tokens, SEGMENT_POS, cfg, _even_sizes(T_TOTAL, 3))
    assert chunked.dtype == np.float32
    for block in state.blocks:
        assert (block.h if isinstance(block, RecurrentState) else block.keys).dtype == np.float32
    assert_close_to_scale(chunked, full, 1e-5)                           # float32, rtol 1e-5 (+ 1e-5 * max|full|)


@pytest.mark.parametrize("name", ["hawk", "griffin-W4", "griffin-W16", "mqa-global"])
def test_document_start_inside_a_chunk_does_not_leak(name):
    """Two rows with different first documents and the same second document (starting mid-chunk): from the
    start of the second document on, logits and the carried state's effect must be identical."""
    cfg, params = _model(CASES[name])
    T, cut = 17, 6                                               # chunk [4, 8) holds the start at 6
    segment_pos = np.tile(np.concatenate([np.arange(cut), np.arange(T - cut)]), (2, 1))
    tokens = _tokens(cfg, (1, T)).repeat(2, axis=0)
    tokens[1, :cut] = (tokens[0, :cut] + 7) % cfg.vocab_size     # row 1: a different first document
    logits, state = run_chunks(params, tokens, segment_pos, cfg, [4, 4, 4, 5])
    np.testing.assert_allclose(logits[1, cut:], logits[0, cut:], rtol=1e-13, atol=0)   # float64, rtol 1e-13
    assert np.abs(logits[1, :cut] - logits[0, :cut]).max() > 1e-3   # the first documents do differ
    # The carried state must not leak either: continue both rows with the same chunk.
    more = _tokens(cfg, (1, 5), seed=9).repeat(2, axis=0)
    next_logits, _ = forward_chunk(params, more, np.tile(np.arange(T - cut, T - cut + 5), (2, 1)), cfg, state)
    np.testing.assert_allclose(next_logits[1], next_logits[0], rtol=1e-13, atol=0)   # float64, rtol 1e-13


def test_forward_chunk_leaves_its_input_state_unchanged():
    cfg, params = _model(CASES["griffin-W4"])
    tokens = _tokens(cfg, SEGMENT_POS.shape)
    _, state = run_chunks(params, tokens[:, :9], SEGMENT_POS[:, :9], cfg, [9])
    first, _ = forward_chunk(params, tokens[:, 9:], SEGMENT_POS[:, 9:], cfg, state)
    again, _ = forward_chunk(params, tokens[:, 9:], SEGMENT_POS[:, 9:], cfg, state)
    np.testing.assert_array_equal(first, again)                  # float64, bitwise: the state was not mutated


def _nbytes_after(cfg, params, n, chunk, B=1):
    segment_pos = np.arange(n)[None].repeat(B, axis=0)           # one long document (a "book")
    tokens = _tokens(cfg, (B, n))
    state = init_state(cfg, B)
    for s in range(0, n, chunk):
        _, state = forward_chunk(params, tokens[:, s:s + chunk], segment_pos[:, s:s + chunk], cfg, state)
    return state_nbytes(state), state


def test_hawk_state_size_does_not_grow():
    cfg, params = _model(CASES["hawk"])
    small, _ = _nbytes_after(cfg, params, 10, 1)
    large, state = _nbytes_after(cfg, params, 1000, 100)
    assert small == large                                        # O(1) memory per step
    E, K1, L = cfg.lru_width, cfg.conv1d_temporal_width - 1, cfg.num_layers
    assert large == L * (8 * E + 8 * K1 * E + 8 * K1) + 8        # float64 h, conv inputs, int64 doc ids; row doc
    assert state.num_tokens == 1000


def test_griffin_state_size_is_bounded_by_the_window():
    cfg, params = _model(CASES["griffin-W16"])
    W, Dh = cfg.attention_window_size, cfg.head_dim
    sizes = {n: _nbytes_after(cfg, params, n, 7)[0] for n in (10, W, 1000)}
    attention_bytes = lambda keys: keys * (2 * 8 * Dh + 8)       # noqa: E731  float64 k and v, int64 doc id
    assert sizes[W] - sizes[10] == attention_bytes(W - 10)       # one attention block: grows up to W ...
    assert sizes[1000] == sizes[W]                               # ... and not beyond
    _, state = _nbytes_after(cfg, params, 1000, 7)
    assert [b.keys.shape for b in state.blocks if isinstance(b, AttentionState)] == [(1, W, Dh)]


def test_mqa_local_cache_grows_with_the_context_up_to_the_window():
    cfg, params = _model(dict(preset="mqa-tiny", global_attention=False, attention_window_size=512))
    Dh, L = cfg.head_dim, cfg.num_layers
    per_token = L * (2 * 8 * Dh + 8)                             # float64 k and v, int64 doc id, every block
    sizes = {n: _nbytes_after(cfg, params, n, 100)[0] for n in (10, 500, 1000)}
    assert sizes[500] - sizes[10] == 490 * per_token             # the full KV cache: linear in the context
    assert sizes[1000] - sizes[500] == 12 * per_token            # ... until it holds W = 512 keys


def test_mqa_global_cache_keeps_every_key():
    """global_attention (the mqa presets): the cache holds every token of the document, however long."""
    cfg, params = _model(dict(preset="mqa-tiny"))
    assert cfg.global_attention
    Dh, L = cfg.head_dim, cfg.num_layers
    per_token = L * (2 * 8 * Dh + 8)                             # float64 k and v, int64 doc id, every block
    sizes = {n: _nbytes_after(cfg, params, n, 100)[0] for n in (10, 500, 1000)}
    assert sizes[500] - sizes[10] == 490 * per_token             # linear in the context ...
    assert sizes[1000] - sizes[500] == 500 * per_token           # ... with no window to stop it


def test_init_state_and_forward_chunk_reject_bad_input():
    cfg, params = _model(CASES["griffin-W4"])
    tokens = _tokens(cfg, (2, 3))
    pos = np.arange(3)[None].repeat(2, axis=0)
    with pytest.raises(ValueError, match="batch_size"):
        init_state(cfg, 0)
    with pytest.raises(ValueError, match="batch size"):
        forward_chunk(params, tokens, pos, cfg, init_state(cfg, 3))
    with pytest.raises(TypeError, match="ModelState"):
        forward_chunk(params, tokens, pos, cfg, None)
    hawk_cfg, _ = _model(CASES["hawk"])
    with pytest.raises(TypeError, match="block 2"):
        forward_chunk(params, tokens, pos, cfg, init_state(hawk_cfg, 2))
    with pytest.raises(ValueError, match="T=0"):
        forward_chunk(params, tokens[:, :0], pos[:, :0], cfg, init_state(cfg, 2))
    assert isinstance(init_state(cfg, 2), ModelState)


# ------------------------------------------------------------------------------------------------ generate
@pytest.fixture(scope="module")
def griffin():
    return _model(CASES["griffin-W4"], seed=5)


def test_generate_is_deterministic_for_a_seed(griffin):
    cfg, params = griffin
    prompt = _tokens(cfg, (2, 6))
    kwargs = dict(temperature=1.0, top_k=20)
    a = generate(params, cfg, prompt, 12, np.random.default_rng(123), **kwargs)
    b = generate(params, cfg, prompt, 12, np.random.default_rng(123), **kwargs)
    c = generate(params, cfg, prompt, 12, np.random.default_rng(124), **kwargs)
    assert a.shape == (2, 18) and a.dtype == np.int64
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[:, :6], prompt)
    assert not np.array_equal(a, c)                              # another seed, other samples


def _greedy_by_full_forward(params, cfg, prompt, n):
    seq = prompt.copy()
    for _ in range(n):
        pos = np.arange(seq.shape[1])[None].repeat(seq.shape[0], axis=0)
        logits, _ = model_forward(params, seq, pos, cfg)
        seq = np.concatenate([seq, logits[:, -1].argmax(axis=-1)[:, None]], axis=1)
    return seq


@pytest.mark.parametrize("prompt_len", [1, 2, 7])
def test_greedy_equals_argmax_of_full_forward(griffin, prompt_len):
    cfg, params = griffin
    prompt = _tokens(cfg, (2, prompt_len), seed=prompt_len)
    ours = generate(params, cfg, prompt, 10, np.random.default_rng(0), temperature=0)
    np.testing.assert_array_equal(ours, _greedy_by_full_forward(params, cfg, prompt, 10))
    chunked = generate(params, cfg, prompt, 10, np.random.default_rng(0), temperature=0, prompt_chunk_size=3)
    np.testing.assert_array_equal(chunked, ours)
    top1 = generate(params, cfg, prompt, 10, np.random.default_rng(0), temperature=1.0, top_k=1)
    np.testing.assert_array_equal(top1, ours)                    # top_k = 1 is greedy too


def test_generate_samples_stay_in_the_top_k(griffin):
    cfg, params = griffin
    prompt = _tokens(cfg, (3, 4))
    out = generate(params, cfg, prompt, 15, np.random.default_rng(7), temperature=2.0, top_k=3)
    logits, _ = model_forward(params, out, np.arange(out.shape[1])[None].repeat(3, axis=0), cfg)
    ranks = (logits[:, 3:-1] > np.take_along_axis(logits[:, 3:-1], out[:, 4:, None], axis=-1)).sum(axis=-1)
    assert ranks.max() < 3                                       # each sample was among the 3 largest logits


def test_generate_1d_prompt_and_zero_new_tokens(griffin):
    cfg, params = griffin
    out = generate(params, cfg, np.array([5]), 4, np.random.default_rng(0))
    assert out.shape == (1, 5) and out[0, 0] == 5
    np.testing.assert_array_equal(generate(params, cfg, np.array([[1, 2]]), 0, np.random.default_rng(0)),
                                  [[1, 2]])


def test_sample_next_follows_the_distribution():
    logits = np.array([[np.log(0.5), np.log(0.3), np.log(0.2), -np.inf]])   # token 3 has probability 0
    draws = np.array([sample_next(logits, np.random.default_rng(s))[0] for s in range(4000)])
    freq = np.bincount(draws, minlength=4) / draws.size
    np.testing.assert_allclose(freq, [0.5, 0.3, 0.2, 0.0], atol=0.03)   # 4000 draws: sd <= 0.008


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(prompt_tokens=np.zeros((2, 0), np.int64)), ValueError, "empty"),
    (dict(prompt_tokens=np.array([[1, 256]])), ValueError, "vocabulary"),
    (dict(prompt_tokens=np.array([[-1, 2]])), ValueError, "vocabulary"),
    (dict(prompt_tokens=np.array([[1.0, 2.0]])), TypeError, "integer"),
    (dict(temperature=-0.5), ValueError, "temperature"),
    (dict(temperature=float("nan")), ValueError, "temperature"),
    (dict(top_k=0), ValueError, "top_k"),
    (dict(max_new_tokens=-1), ValueError, "max_new_tokens"),
    (dict(rng=0), TypeError, "Generator"),
    (dict(prompt_chunk_size=0), ValueError, "prompt_chunk_size"),
])
def test_generate_rejects_bad_arguments(griffin, kwargs, error, match):
    cfg, params = griffin
    args = dict(prompt_tokens=np.array([[1, 2]]), max_new_tokens=3, rng=np.random.default_rng(0))
    args.update(kwargs)
    with pytest.raises(error, match=match):
        generate(params, cfg, **args)


# --------------------------------------------------------------------------------------------------- oracle
@pytest.mark.oracle
def test_decode_steps_match_recurrentgemma():
    """recurrentgemma's own decode path (prompt without a cache, then one token per call with cache=...,
    as its sampler does) gives the same step logits as forward_chunk, float64 with the float32 islands
    patched: max relative error <= 1e-10 (measured ~1e-15). Griffin tiny, W = 4 < prompt 6 < prompt + 8 steps."""
    pytest.importorskip("torch")
    oracle_utils = pytest.importorskip("oracle_utils")
    torch = oracle_utils.torch
    cfg, params = _model(CASES["griffin-W4"], seed=11)
    B, P, steps = 2, 6, 8
    tokens = _tokens(cfg, (B, P + steps), seed=12)
    positions = np.arange(P + steps)[None].repeat(B, axis=0)
    with oracle_utils.exact_float64_torch():
        model = oracle_utils.torch_griffin(cfg, params)
        with torch.no_grad():
            t_logits, cache = model(torch.from_numpy(tokens[:, :P]), torch.from_numpy(positions[:, :P]))
            theirs = [t_logits.numpy()]
            for t in range(P, P + steps):
                step_logits, cache = model(torch.from_numpy(tokens[:, t:t + 1]),
                                           torch.from_numpy(positions[:, t:t + 1]), cache=cache)
                theirs.append(step_logits.numpy())
    ours, _ = run_chunks(params, tokens, positions, cfg, [P] + [1] * steps)
    theirs = np.concatenate(theirs, axis=1)                      # (B, P + steps, V)
    assert oracle_utils.max_rel_error(ours[:, P:], theirs[:, P:]) <= 1e-10   # float64, max rel error 1e-10
    assert oracle_utils.max_rel_error(ours[:, :P], theirs[:, :P]) <= 1e-10   # float64, max rel error 1e-10
