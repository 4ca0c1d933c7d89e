"""Autoregressive sampling with carried state (recurrentgemma sampler.py, Griffin §5): the prompt goes through
`inference.forward_chunk` once, then one token per step, each step feeding only the newest token and the
state (RG-LRU h, Conv1D inputs, KV window), so a step costs the same at token 10 as at token 10 000 for Hawk
and Griffin.

    out = generate(params, cfg, prompt_tokens, max_new_tokens=200, rng=np.random.default_rng(0),
                   temperature=0.8, top_k=40)
"""

import numbers

import numpy as np

from minigriffin.inference import forward_chunk, init_state


def _check_arguments(prompt, cfg, max_new_tokens, rng, temperature, top_k, prompt_chunk_size):
    """Raise a clear error for each bad argument of generate."""
    if prompt.ndim != 2 or prompt.dtype.kind not in "iu":
        raise TypeError(f"prompt_tokens must be an integer array of shape (B, P) or (P,), got "
                        f"{prompt.dtype} {tuple(prompt.shape)}")
    if prompt.shape[0] == 0 or prompt.shape[1] == 0:
        raise ValueError(f"prompt_tokens is empty (shape {tuple(prompt.shape)}): give at least one token per row")
    if int(prompt.min()) < 0 or int(prompt.max()) >= cfg.vocab_size:
        raise ValueError(f"prompt_tokens must lie in [0, {cfg.vocab_size}) (the vocabulary), got values in "
                         f"[{int(prompt.min())}, {int(prompt.max())}]")
    if not isinstance(max_new_tokens, numbers.Integral) or isinstance(max_new_tokens, bool) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
    if not isinstance(temperature, numbers.Real) or not temperature >= 0 or not np.isfinite(temperature):
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, numbers.Integral) or isinstance(top_k, bool) or top_k < 1):
        raise ValueError(f"top_k must be None or an int >= 1, got {top_k!r}")
    if prompt_chunk_size is not None and (not isinstance(prompt_chunk_size, numbers.Integral)
                                          or isinstance(prompt_chunk_size, bool) or prompt_chunk_size < 1):
        raise ValueError(f"prompt_chunk_size must be None or an int >= 1, got {prompt_chunk_size!r}")


def sample_next(logits, rng, temperature=1.0, top_k=None):
    """One token per row from next-token logits (B, V) -> (B,) int64.

    temperature 0: argmax (greedy, uses no randomness). Otherwise softmax(logits / temperature) restricted
    to the top_k largest logits (all if None), sampled by inverting the CDF with one uniform per row from rng.
    """
    logits = np.asarray(logits, dtype=np.float64)                        # (B, V) float64 for the softmax
    B, V = logits.shape
    if temperature == 0:
        return logits.argmax(axis=-1).astype(np.int64)                   # (B,)
    scaled = logits / temperature                                        # (B, V)
    if top_k is not None and top_k < V:
        kth = np.partition(scaled, V - top_k, axis=-1)[:, V - top_k, None]   # (B, 1) the k-th largest
        scaled = np.where(scaled >= kth, scaled, -np.inf)                # (B, V) ties at the k-th all stay in
    probs = np.exp(scaled - scaled.max(axis=-1, keepdims=True))          # (B, V)
    cdf = np.cumsum(probs, axis=-1)                                      # (B, V) unnormalised
    u = rng.random((B, 1)) * cdf[:, -1:]                                 # (B, 1) uniform in [0, total)
    # first index whose cdf exceeds u; excluded tokens (probability 0) never satisfy the strict inequality first
    return np.minimum((cdf <= u).sum(axis=-1), V - 1).astype(np.int64)   # (B,)


def generate(params, cfg, prompt_tokens, max_new_tokens, rng, temperature=1.0, top_k=None, *,
             prompt_chunk_size=None):
    """Continue each prompt row by max_new_tokens sampled tokens.

    prompt_tokens: (B, P) ints in [0, V) (or (P,), treated as B = 1), each row one document starting at
    position 0; rng: np.random.Generator, the only source of randomness; temperature: >= 0, 0 = greedy;
    top_k: None or >= 1; prompt_chunk_size: feed the prompt in chunks of this many tokens (None: at once;
    the result does not depend on it beyond rounding). Returns (B, P + max_new_tokens) int64: prompt, then samples.
    """
    prompt = np.asarray(prompt_tokens)
    if prompt.ndim == 1:
        prompt = prompt[None]                                            # (1, P)
    _check_arguments(prompt, cfg, max_new_tokens, rng, temperature, top_k, prompt_chunk_size)
    B, P = prompt.shape
    out = np.empty((B, P + max_new_tokens), dtype=np.int64)              # (B, P + new)
    out[:, :P] = prompt
    if max_new_tokens == 0:
        return out
    positions = np.broadcast_to(np.arange(P + max_new_tokens, dtype=np.int64), out.shape)   # (B, P + new)
    state = init_state(cfg, B)
    step = prompt_chunk_size or P
    for start in range(0, P, step):
        end = min(start + step, P)                                       # never into the unsampled slots
        logits, state = forward_chunk(params, out[:, start:end], positions[:, start:end], cfg, state)   # (B, chunk, V)
    for t in range(P, P + max_new_tokens):
        out[:, t] = sample_next(logits[:, -1], rng, temperature, top_k)  # (B,)
        if t + 1 < P + max_new_tokens:                                   # the last sample needs no forward
            logits, state = forward_chunk(params, out[:, t:t + 1], positions[:, t:t + 1], cfg, state)   # (B, 1, V)
    return out
