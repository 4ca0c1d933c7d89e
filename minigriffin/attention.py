"""Local sliding-window multi-query attention (Griffin's attention block), forward and backward.

Griffin (De, Smith et al. 2024, §2.3) interleaves RG-LRU blocks with *local* multi-query attention (MQA,
Shazeer 2019: H query heads share ONE key/value head of size Dh = D // H) and RoPE; the "MQA Transformer"
baseline is the same block with global attention, here simply window >= T. The computation is exactly
recurrentgemma 1.0.1's `torch/modules.py:LocalAttentionBlock.forward` (training / prompt path):

    q = x Wq^T -> (B, T, H, Dh) head-major;  k = x Wk^T, v = x Wv^T -> (B, T, Dh)   no biases
    q, k = RoPE(q, segment_pos), RoPE(k, segment_pos)                                minigriffin.rope
    logits[t, s] = (q_t · k_s) * Dh**-0.5, kept iff doc[s] == doc[t] and 0 <= t - s <= W, else -2.3819763e38
    p = softmax over s (in x.dtype);  o = p v -> (B, T, H*Dh);  out = o Wf^T + bf

with doc = cumsum(segment_pos == 0) along T (packed documents) and t, s array indices. Each query sees W + 1
keys: itself and the W before it.

Memory is O(T * W), not O(T^2), in both passes: queries are processed in blocks of `block_size` rows, and a
block [q0, q1) only scores the keys [q0 - W, q1) it can see. The cache keeps the per-block probabilities,
B*H*T*(Q + W) numbers in all (cheaper than recomputing the softmax; llm.c keeps its attention probabilities
the same way; for NumPy arrays minigriffin/fast/attention_core.py keeps only each row's softmax statistics and
recomputes the probabilities in the backward: O(T) memory). Default block size: Q = min(max(W, 32), 128).
Q <= max(W, 32) keeps memory O(T * (W + 32));
Q >= 32 bounds the Python loop to T / 32 iterations even for tiny windows; Q <= 128 keeps the wasted
(masked) part of each block, Q * (Q + W) scored vs Q * (W + 1) visible, small for the paper's W = 1024.
Shape letters: docs/conventions.md (Tq, Tk: queries / keys of one block).

Notebook: notebooks/03_local_attention_rope.ipynb
"""

import numbers
from typing import NamedTuple

import numpy as np

from minigriffin.accelerate import accelerated
from minigriffin.conv1d import document_ids
from minigriffin.kvcache import AttentionState, kv_append
from minigriffin.layers import LinearCache, linear_backward, linear_forward
from minigriffin.rope import RopeCache, rope_backward, rope_forward
from minigriffin.xp import array_namespace

MIN_LOGITS_VALUE = -2.3819763e38     # recurrentgemma's _MIN_LOGITS_VALUE: exp() of it minus the max is exactly 0
_PARAM_SHAPES = {"proj_q": {"weight": "DD"}, "proj_k": {"weight": "hD"},
                 "proj_v": {"weight": "hD"}, "proj_final": {"weight": "DD", "bias": "D"}}


class AttentionCache(NamedTuple):
    proj_q: LinearCache
    proj_k: LinearCache
    proj_v: LinearCache
    proj_final: LinearCache   # holds o: (B, T, D)
    rope: RopeCache           # sin/cos (B, T, 1, Dh/4), shared by q and k (same positions, same Dh); None: NoPE
    q: object                 # (B, T, H, Dh) after RoPE (if any)
    k: object                 # (B, N+T, Dh) after RoPE (if any): the N carried keys of a state, then the chunk's
    v: object                 # (B, N+T, Dh)
    probs: tuple              # what attention_core_forward saved: per query block (B, Tq, H, Tk) probabilities
                              # (the definition), or per-row softmax statistics (fast/attention.py, NumPy arrays)
    window: int
    block_size: int
    carried: int = 0          # N: keys and values of a state in front of the chunk's (constants: no gradient)
    state: object = None      # AttentionState after this chunk, when a state was given


def default_block_size(window):
    """Query block size Q = min(max(W, 32), 128); see the module docstring for why."""
    return min(max(window, 32), 128)


def query_blocks(T, window, block_size, carried=0):
    """[(q0, q1, k0)]: query block [q0, q1) and the first key it can see, k0 = max(0, q0 - W), in indices of
    [carried keys, chunk] (the chunk's queries are [N, N + T))."""
    N = carried
    return [(q0, min(q0 + block_size, N + T), max(0, q0 - window)) for q0 in range(N, N + T, block_size)]


def mask_from_doc(doc, q_start, q_end, k_start, k_end, window):
    """The attention mask from precomputed document ids doc: (B, >= max(q_end, k_end)) -> (B, Tq, Tk)."""
    xp = array_namespace(doc)
    t = xp.arange(q_start, q_end)[:, None]                              # (Tq, 1) query array index
    s = xp.arange(k_start, k_end)[None, :]                              # (1, Tk) key array index
    same_doc = doc[:, q_start:q_end, None] == doc[:, None, k_start:k_end]   # (B, Tq, Tk)
    return same_doc & (s <= t) & (t - s <= window)                      # (B, Tq, Tk)


def attention_mask(segment_pos, q_start, q_end, k_start, k_end, window):
    """Which keys each query may see (recurrentgemma `_compute_forward_pass_mask`, cut to one block).

    segment_pos: (B, T) ints -> bool (B, Tq, Tk) for queries [q_start, q_end) and keys [k_start, k_end):
    key s is visible to query t iff same document, s <= t and t - s <= window (W + 1 keys incl. t itself).
    """
    return mask_from_doc(document_ids(segment_pos), q_start, q_end, k_start, k_end, window)


def _check_inputs(x, params, segment_pos, num_heads, window, block_size):
    """Validate shapes and dtypes at the public boundary; raise naming the offending arrays."""
    xp = array_namespace(x, segment_pos)
    if x.ndim != 3:
        raise ValueError(f"attention: x must be (B, T, D), got shape {x.shape}")
    if x.dtype not in (xp.float32, xp.float64):
        raise TypeError(f"attention: x must be float32 or float64, got {x.dtype}")
    B, T, D = x.shape
    if not isinstance(num_heads, numbers.Integral) or num_heads < 1 or D % num_heads != 0:
        raise ValueError(f"attention: width D = {D} of x {x.shape} must be divisible by num_heads = {num_heads}")
    Dh = D // num_heads
    if Dh % 4 != 0:
        raise ValueError(f"attention: head dim Dh = D / H = {D} / {num_heads} = {Dh} must be a multiple of 4 "
                         "(RoPE rotates half of it, split in halves again)")
    if segment_pos.shape != (B, T):
        raise ValueError(f"attention: segment_pos shape {segment_pos.shape} != (B, T) = {(B, T)} of x {x.shape}")
    if segment_pos.dtype.kind not in "iu":
        raise TypeError(f"attention: segment_pos must be integer, got {segment_pos.dtype}")
    if not isinstance(window, numbers.Integral) or window < 0:
        raise ValueError(f"attention: window must be an int >= 0, got {window!r}")
    if block_size is not None and (not isinstance(block_size, numbers.Integral) or block_size < 1):
        raise ValueError(f"attention: block_size must be None or an int >= 1, got {block_size!r}")
    sizes = {"D": D, "h": Dh}
    if set(params) != set(_PARAM_SHAPES):
        raise ValueError(f"attention: params keys {sorted(params)} != {sorted(_PARAM_SHAPES)}")
    for name, leaves in _PARAM_SHAPES.items():
        if set(params[name]) != set(leaves):
            raise ValueError(f"attention: params[{name!r}] keys {sorted(params[name])} != {sorted(leaves)}")
        for leaf, letters in leaves.items():
            arr, want = params[name][leaf], tuple(sizes[c] for c in letters)
            if arr.shape != want:
                raise ValueError(f"attention: {name}.{leaf} has shape {arr.shape}, expected {want} "
                                 f"for x {x.shape} and num_heads={num_heads}")
            if arr.dtype != x.dtype:
                raise TypeError(f"attention: {name}.{leaf} is {arr.dtype} but x is {x.dtype} (no silent casts)")
    return xp


def attention_forward(x, params, segment_pos, *, num_heads, window, block_size=None, rope=True, doc=None,
                      state=None):
    """Local MQA with RoPE (Griffin §2.3; recurrentgemma LocalAttentionBlock), O(T * W) memory.

    x: (B, T, D) float32/float64; params: {"proj_q": {"weight": (D, D)}, "proj_k": {"weight": (Dh, D)},
    "proj_v": {"weight": (Dh, D)}, "proj_final": {"weight": (D, D), "bias": (D,)}}; segment_pos: (B, T) ints;
    num_heads: H; window: W >= 0 (W >= T is global attention); block_size: query rows per block (None:
    default_block_size(W); the result does not depend on it beyond rounding); rope: False leaves q and k
    unrotated (no positional encoding, "NoPE", the paper's §6.1 baseline). Returns out: (B, T, D), cache.
    doc: optional (B, T) document ids instead of document_ids(segment_pos) (ids that continue across chunks).
    state: an AttentionState (minigriffin.kvcache) whose N keys and values come before the chunk's: queries
    then see [cached keys, chunk keys] under the same mask; the new state (the last min(W, N + T)) is
    cache.state. Continuing in chunks gives the logits of one pass over the whole sequence.
    """
    xp = _check_inputs(x, params, segment_pos, num_heads, window, block_size)
    B, T, D = x.shape
    H, Dh = num_heads, D // num_heads
    Q = block_size or default_block_size(window)
    q, proj_q_cache = linear_forward(x, params["proj_q"])                  # (B, T, D)
    k, proj_k_cache = linear_forward(x, params["proj_k"])                  # (B, T, Dh)
    v, proj_v_cache = linear_forward(x, params["proj_v"])                  # (B, T, Dh)
    q, k = q.reshape(B, T, H, Dh), k.reshape(B, T, 1, Dh)                 # (B, T, H, Dh) "(n h)", head-major
    rope_cache = None
    if rope:
        q, rope_cache = rope_forward(q, segment_pos)                       # (B, T, H, Dh)
        k, _ = rope_forward(k, segment_pos)                                # (B, T, 1, Dh) same sin/cos as q
    k = k.reshape(B, T, Dh)                                                # (B, T, Dh) the single KV head
    doc = document_ids(segment_pos) if doc is None else doc                # (B, T)
    N = 0
    if state is not None:                                                  # [cached keys, chunk keys]
        N = state.keys.shape[1]
        chunk_k, chunk_v, chunk_doc = k, v, doc
        k = xp.concatenate([state.keys, k], axis=1)                        # (B, N+T, Dh)
        v = xp.concatenate([state.values, v], axis=1)                      # (B, N+T, Dh)
        doc = xp.concatenate([state.doc, doc], axis=1)                     # (B, N+T)
    o, saved = attention_core_forward(q, k, v, doc, window=window, block_size=Q, carried=N)   # (B, T, H, Dh)
    out, proj_final_cache = linear_forward(o.reshape(B, T, D), params["proj_final"])   # (B, T, D)
    new_state = None
    if state is not None:                       # keep the last min(W, N + T): all a later query can see
        if xp is np:                            # appended in place into the state's KVBuffer
            new_state = kv_append(state, chunk_k, chunk_v, chunk_doc, window)[3]
        else:                                   # CuPy arrays: plain copies
            start = N + T - min(window, N + T)
            new_state = AttentionState(k[:, start:].copy(), v[:, start:].copy(), doc[:, start:].copy())
    cache = AttentionCache(proj_q_cache, proj_k_cache, proj_v_cache, proj_final_cache, rope_cache,
                           q, k, v, saved, window, Q, N, new_state)
    return out, cache


def attention_backward(dout, cache):
    """dout: (B, T, D) -> dx: (B, T, D), grads: dict with the same keys and shapes as params. O(T * W) memory."""
    B, T, H, Dh = cache.q.shape
    D, N = H * Dh, cache.carried
    # forward was: out = proj_final(o.reshape(B, T, D))
    do, grads_final = linear_backward(dout, cache.proj_final)             # (B, T, D)
    do = do.reshape(B, T, H, Dh)                                          # (B, T, H, Dh)
    dq, dk, dv = attention_core_backward(do, cache.q, cache.k, cache.v, cache.probs, window=cache.window,
                                         block_size=cache.block_size, carried=N)
    del do                                                                # done with it: lowers the peak memory
    dk, dv = dk[:, N:], dv[:, N:]                                         # the carried keys are constants
    # forward was: k = rope(k.reshape(B, T, 1, Dh)).reshape(B, T, Dh);  q = rope(q.reshape(B, T, H, Dh))
    if cache.rope is not None:                                            # None: NoPE, q and k were not rotated
        dk = rope_backward(dk.reshape(B, T, 1, Dh), cache.rope).reshape(B, T, Dh)   # (B, T, Dh)
        dq = rope_backward(dq, cache.rope)                                # (B, T, H, Dh)
    dq = dq.reshape(B, T, D)                                              # (B, T, D)
    # forward was: q, k, v = proj_q(x), proj_k(x), proj_v(x)  ->  dx sums the three paths (in place into
    # linear_backward's fresh dx, so only two (B, T, D) gradients are alive at a time)
    dx, grads_v = linear_backward(dv, cache.proj_v)                       # (B, T, D)
    dx_k, grads_k = linear_backward(dk, cache.proj_k)                     # (B, T, D)
    dx += dx_k
    del dx_k
    dx_q, grads_q = linear_backward(dq, cache.proj_q)                     # (B, T, D)
    dx += dx_q
    return dx, {"proj_q": grads_q, "proj_k": grads_k, "proj_v": grads_v, "proj_final": grads_final}


@accelerated
def attention_core_forward(q, k, v, doc, *, window, block_size, carried=0):
    """The attention proper, query block by query block: o = softmax(mask(q k^T / sqrt(Dh))) v.

    q: (B, T, H, Dh) (after RoPE); k, v: (B, N+T, Dh) (N carried keys first); doc: (B, N+T) document ids.
    Returns o: (B, T, H, Dh) and what the backward needs: the per-block probabilities (B, Tq, H, Tk), 0 where
    masked. For NumPy arrays minigriffin/fast/attention_core.py runs instead and keeps only each row's softmax
    statistics (O(T) memory; the backward recomputes the probabilities)."""
    xp = array_namespace(q)
    B, T, H, Dh = q.shape
    N, scale = carried, Dh ** -0.5
    min_logit = xp.asarray(MIN_LOGITS_VALUE, dtype=q.dtype)                # () keeps the softmax in q.dtype
    o = xp.empty_like(q)                                                   # (B, T, H, Dh)
    probs = []
    for q0, q1, k0 in query_blocks(T, window, block_size, N):              # q0, q1, k0: indices into k, v, doc
        Tq, Tk = q1 - q0, q1 - k0
        # MQA: all H heads share k, so (Tq, H) flatten into one batched matmul against (Dh, Tk).
        logits = q[:, q0 - N:q1 - N].reshape(B, Tq * H, Dh) @ xp.swapaxes(k[:, k0:q1], 1, 2)   # (B, Tq*H, Tk)
        logits = (logits * scale).reshape(B, Tq, H, Tk)                   # (B, Tq, H, Tk)
        mask = mask_from_doc(doc, q0, q1, k0, q1, window)                  # (B, Tq, Tk)
        logits = xp.where(mask[:, :, None, :], logits, min_logit)          # (B, Tq, H, Tk)
        p = xp.exp(logits - logits.max(axis=-1, keepdims=True))            # (B, Tq, H, Tk) 0 where masked
        p /= p.sum(axis=-1, keepdims=True)                                 # (B, Tq, H, Tk) softmax over keys
        o[:, q0 - N:q1 - N] = (p.reshape(B, Tq * H, Tk) @ v[:, k0:q1]).reshape(B, Tq, H, Dh)   # (B, Tq, H, Dh)
        probs.append(p)
    return o, tuple(probs)


@accelerated
def attention_core_backward(do, q, k, v, saved, *, window, block_size, carried=0):
    """do: (B, T, H, Dh), the rest as attention_core_forward got and returned them
    -> dq: (B, T, H, Dh), dk, dv: (B, N+T, Dh)."""
    xp = array_namespace(do)
    B, T, H, Dh = q.shape
    N, scale = carried, Dh ** -0.5
    dq = xp.zeros_like(q)                                                 # (B, T, H, Dh)
    dk = xp.zeros_like(k)                                                 # (B, N+T, Dh) summed over query blocks
    dv = xp.zeros_like(v)                                                 # (B, N+T, Dh) summed over query blocks
    blocks = query_blocks(T, window, block_size, N)
    for (q0, q1, k0), p in reversed(list(zip(blocks, saved))):
        Tq, Tk = q1 - q0, q1 - k0
        p = p.reshape(B, Tq * H, Tk)                                      # (B, Tq*H, Tk)
        do_blk = do[:, q0 - N:q1 - N].reshape(B, Tq * H, Dh)              # (B, Tq*H, Dh)
        # forward was: o[q0:q1] = p @ v[k0:q1]  ->  dp = do v^T;  dv[k0:q1] += p^T do
        dv[:, k0:q1] += xp.swapaxes(p, 1, 2) @ do_blk                    # (B, Tk, Dh)
        dp = do_blk @ xp.swapaxes(v[:, k0:q1], 1, 2)                      # (B, Tq*H, Tk)
        # forward was: p = softmax(logits)  ->  dlogits = p * (dp - sum_s(dp * p))
        dlogits = p * (dp - (dp * p).sum(axis=-1, keepdims=True))         # (B, Tq*H, Tk)
        # forward was: logits = where(mask, logits, MIN)  ->  masked entries get no gradient; p == 0 exactly
        #   there, so dlogits is already 0 and the mask need not be rebuilt.
        # forward was: logits = (q k^T) * scale  ->  dq = (dlogits * scale) k;  dk += (dlogits * scale)^T q
        dlogits *= scale
        dq[:, q0 - N:q1 - N] = (dlogits @ k[:, k0:q1]).reshape(B, Tq, H, Dh)   # (B, Tq, H, Dh)
        dk[:, k0:q1] += xp.swapaxes(dlogits, 1, 2) @ q[:, q0 - N:q1 - N].reshape(B, Tq * H, Dh)   # (B, Tk, Dh)
    return dq, dk, dv
