"""Inference with carried state: run a sequence chunk by chunk (or token by token) with no backward.

    state = init_state(cfg, batch_size)
    for each chunk:  logits, state = forward_chunk(params, tokens, segment_pos, cfg, state)

Feeding a sequence in chunks of any sizes gives the same logits as `model.model_forward` on the whole of it
(tested in float64 to rtol 1e-12): segment_pos simply continues (a book's second chunk of 512 starts at 512),
and a 0 anywhere still starts a new document. What each residual block carries (Griffin §5.1; recurrentgemma/torch/modules.py `RecurrentBlockCache`, `AttentionBlockCache`):

    recurrent block   h: (B, E) RG-LRU state;  the last K-1 = 3 Conv1D inputs (B, 3, E) and their document ids
    attention block   the last min(W, tokens so far) post-RoPE keys and values (B, <=W, Dh) and their document ids

so Hawk's state is O(1) in the context length and Griffin's is bounded by the window. For the MQA baseline
(global attention, W >= the context) the attention state IS the full KV cache: it grows with every token up
to W, which is why MQA decoding becomes memory-bound at long contexts (Griffin paper eq. 5, Figure 4).

Positions need not be stored: an attention cache always holds the contiguous last N tokens, so slot i is the
token N - i steps before the chunk, and [cache, chunk] laid end to end has array indices that differ exactly
as the full sequence's do. The window mask is therefore the training mask (`attention._mask_from_doc`)
evaluated on the concatenation. Document ids continue across chunks (ModelState.doc counts the starts seen);
-1 marks the Conv1D padding before the first token, which no real token ever matches.
Unlike recurrentgemma's decode path (no Conv1D document mask with a cache, positions recovered from
segment_pos), this stays exact when documents are packed and when a document starts inside a chunk.

Single-token steps (T = 1, NumPy arrays), as sampling feeds them, take a fused path: minigriffin.decode runs
each recurrent residual block as one Numba kernel (norms, projections, Conv1D taps, RG-LRU, MLP), each
attention block as one too (projections and RoPE; one pass over the keys for the logits, exp, one pass over
the values; proj_final and MLP), and the head as one more; the same computation as the chunk path below,
which stays the reference for T > 1 and for CuPy
arrays (tests/test_decode.py: token by token equals model_forward to rtol 1e-12 in float64). The first such
step makes a DecodePlan (the params with torch-layout weights transposed, about one more copy of the model)
and the ModelState passes it on, so params must not be modified in place while a state is being continued.

The attention cache lives in a preallocated KVBuffer per block, not in arrays rebuilt each chunk: a state's
keys, values and doc are views of it, and the newest state appends in place (see KVBuffer). This is an
append-only buffer with room beyond W rather than a ring buffer, so an older state keeps its contents and
forward_chunk stays a pure function of its input state; when the room runs out the last W + 1 entries move
to a new buffer (amortised a few copied entries per token). state_nbytes counts the cache (the last
min(W, tokens) entries), state_reserved_nbytes the buffers as allocated (at most 1024 + 1 entries more).

Notebook: notebooks/07_decoding_cost.ipynb
"""

from typing import NamedTuple

import numpy as np

from minigriffin import decode
from minigriffin.attention import MIN_LOGITS_VALUE, _mask_from_doc, default_block_size
from minigriffin.config import RECURRENT
from minigriffin.conv1d import conv1d_forward
from minigriffin.head import embedding_forward, embedding_scale, softcap_forward
from minigriffin.layers import gelu_tanh_forward, linear_forward, mlp_forward, rmsnorm_forward
from minigriffin.model import _check_inputs
from minigriffin.rglru import rglru_forward
from minigriffin.rope import rope_forward
from minigriffin.xp import array_namespace

NO_DOC = -1          # document id of the Conv1D padding before the first token (real ids are >= 0)


class RecurrentState(NamedTuple):
    """recurrentgemma's RecurrentBlockCache, plus the document ids of the carried Conv1D inputs."""
    h: object          # (B, E) RG-LRU state h_{t} after the last token, model dtype (float32 or float64)
    conv_x: object     # (B, K-1, E) the last K-1 Conv1D inputs (linear_x outputs), oldest first, 0-padded
    conv_doc: object   # (B, K-1) int64 their document ids, NO_DOC for padding


class KVBuffer:
    """Preallocated storage behind AttentionState: keys, values (B, C, Dh) and doc (B, C), C >= the window.

    Entries are written once, in token order, never overwritten: a state is a view [start, start + N) of it,
    and `head` is the end of the newest state's entries. Only the state whose view ends at `head` appends
    in place (at [head, head + T)); any other, an older state continued a second time, copies what it needs
    into a new buffer. So appending costs O(T), every state stays valid, and forward_chunk never changes its
    input state. When the buffer is full the last W + 1 entries move to a new one with room for about
    W / 4 more (at least 16, at most 1024): amortised, a few copied entries per token.
    """
    __slots__ = ("keys", "values", "doc", "head")

    def __init__(self, B, capacity, Dh, dtype):
        self.keys = np.empty((B, capacity, Dh), dtype)      # (B, C, Dh)
        self.values = np.empty((B, capacity, Dh), dtype)    # (B, C, Dh)
        self.doc = np.empty((B, capacity), np.int64)        # (B, C)
        self.head = 0

    @property
    def capacity(self):
        return self.keys.shape[1]


class AttentionState(NamedTuple):
    """The sliding-window KV cache: the last N = min(W, tokens so far) tokens, oldest first.

    keys, values and doc are views of a KVBuffer (or plain arrays, e.g. for a state built by hand: the first
    append moves them into a buffer). AttentionState(keys, values, doc) still constructs one."""
    keys: object       # (B, N, Dh) post-RoPE keys
    values: object     # (B, N, Dh)
    doc: object        # (B, N) int64 their document ids
    buffer: object = None   # KVBuffer that keys, values and doc are views of, or None
    start: int = 0          # where the views begin in the buffer


class ModelState(NamedTuple):
    blocks: tuple      # one RecurrentState or AttentionState per residual block
    doc: object        # (B,) int64 document id of the last token fed (0 before any token, as in model_forward)
    num_tokens: int    # tokens fed so far in each row
    plan: object = None   # decode.DecodePlan: params laid out for the T = 1 kernels, made once and passed on


def init_state(cfg, batch_size):
    """The state before the first token (zeros, empty caches). cfg: GriffinConfig -> ModelState."""
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    B, E, Dh, K1 = int(batch_size), cfg.lru_width, cfg.head_dim, cfg.conv1d_temporal_width - 1
    dt = np.dtype(cfg.dtype)
    blocks = []
    for kind in cfg.block_types:
        if kind == RECURRENT:
            blocks.append(RecurrentState(h=np.zeros((B, E), dt),                      # (B, E)
                                         conv_x=np.zeros((B, K1, E), dt),             # (B, K-1, E)
                                         conv_doc=np.full((B, K1), NO_DOC, np.int64)))  # (B, K-1)
        else:
            blocks.append(AttentionState(keys=np.zeros((B, 0, Dh), dt),               # (B, 0, Dh)
                                         values=np.zeros((B, 0, Dh), dt),             # (B, 0, Dh)
                                         doc=np.zeros((B, 0), np.int64)))             # (B, 0)
    return ModelState(tuple(blocks), np.zeros(B, np.int64), 0)


def _block_arrays(block):
    if isinstance(block, RecurrentState):
        return (block.h, block.conv_x, block.conv_doc)
    return (block.keys, block.values, block.doc)


def state_nbytes(state):
    """Bytes of the cache a ModelState carries (the per-sequence cache of Griffin paper eq. 5, times B): the
    recurrent states and the last N = min(W, tokens) keys, values and document ids of each attention block.
    The KVBuffer behind an attention block reserves room for up to min(max(W/4, 16), 1024) + 1 more tokens,
    not counted here (state_reserved_nbytes counts them)."""
    return int(sum(arr.nbytes for block in state.blocks for arr in _block_arrays(block)) + state.doc.nbytes)


def state_reserved_nbytes(state):
    """Bytes actually allocated for a ModelState: state_nbytes with each attention block's whole KVBuffer."""
    total = state.doc.nbytes
    for block in state.blocks:
        if isinstance(block, AttentionState) and block.buffer is not None:
            buf = block.buffer
            total += buf.keys.nbytes + buf.values.nbytes + buf.doc.nbytes
        else:
            total += sum(arr.nbytes for arr in _block_arrays(block))
    return int(total)


def _slack(n):
    """Spare entries a new KVBuffer gets beyond the n it is created with."""
    return min(max(n // 4, 16), 1024)


def _kv_reserve(state, T, window):
    """Make room for T more tokens in an AttentionState's cache, without writing them yet.

    Returns (keys, values, docs, new_state, n_new): views of the last min(N + T, W + 1) entries, contiguous
    in the buffer (for a single token, everything it attends to: the cached N <= W keys and its own), whose
    last n_new = min(T, W + 1) entries are the slots for the newest tokens' keys, values and document ids
    (the caller fills them), and the new state holding the last min(N + T, W). Splitting the reservation
    from the write lets a decode step reserve every block's slot up front, so that threads working on
    different rows of the batch can each write their own rows without meeting (inference._decode_step)."""
    B, N, Dh = state.keys.shape
    reach = min(N + T, window + 1)
    keep = min(N + T, window)
    n_new = min(T, reach)
    buf = state.buffer
    end = state.start + N
    if buf is not None and buf.head == end and end + T <= buf.capacity:
        new_end = end + T                                   # in place: nothing any state sees is overwritten
    else:                                                   # a fresh buffer with the last `reach` entries
        buf = KVBuffer(B, reach + _slack(reach), Dh, state.keys.dtype)
        n_old = reach - n_new                               # <= N
        buf.keys[:, :n_old] = state.keys[:, N - n_old:]
        buf.values[:, :n_old] = state.values[:, N - n_old:]
        buf.doc[:, :n_old] = state.doc[:, N - n_old:]
        new_end = reach
    buf.head = new_end
    a, s = new_end - reach, new_end - keep
    new_state = AttentionState(buf.keys[:, s:new_end], buf.values[:, s:new_end], buf.doc[:, s:new_end], buf, s)
    return buf.keys[:, a:new_end], buf.values[:, a:new_end], buf.doc[:, a:new_end], new_state, n_new


def _kv_append(state, k, v, doc, window):
    """Append T tokens' keys, values (B, T, Dh) and document ids (B, T) to an AttentionState.

    Returns (keys, values, docs, new_state) as _kv_reserve, with the new tokens written (the last
    min(T, W + 1) of them: earlier ones would fall out of the window at once)."""
    T = k.shape[1]
    keys, values, docs, new_state, n_new = _kv_reserve(state, T, window)
    keys[:, -n_new:] = k[:, T - n_new:]
    values[:, -n_new:] = v[:, T - n_new:]
    docs[:, -n_new:] = doc[:, T - n_new:]
    return keys, values, docs, new_state


def _recurrent_chunk(x, p, segment_pos, doc, state, scan_backend):
    """Recurrent block (Griffin §2.3, Figure 2(c); recurrentgemma `RecurrentBlock`) continuing from `state`. x: (B, T, D) -> out: (B, T, D), RecurrentState."""
    xp = array_namespace(x)
    T, K1 = x.shape[1], state.conv_x.shape[1]
    y_pre, _ = linear_forward(x, p["linear_y"])                            # (B, T, E)
    y, _ = gelu_tanh_forward(y_pre)                                        # (B, T, E)
    u_pre, _ = linear_forward(x, p["linear_x"])                            # (B, T, E)
    # Prepend the carried inputs so the taps reach back into the previous chunk; their document ids keep
    # the training mask (no tap across a document start). Outputs at the K-1 carried rows are dropped.
    conv_in = xp.concatenate([state.conv_x, u_pre], axis=1)                # (B, K-1+T, E)
    conv_doc = xp.concatenate([state.conv_doc, doc], axis=1)               # (B, K-1+T)
    conv_out, _ = conv1d_forward(conv_in, p["conv_1d"], None, doc=conv_doc)   # (B, K-1+T, E)
    u, h_last, _ = rglru_forward(conv_out[:, K1:], p["rg_lru"], segment_pos, h0=state.h,
                                 backend=scan_backend)                     # (B, T, E), (B, E)
    out, _ = linear_forward(u * y, p["linear_out"])                        # (B, T, D)
    # conv_in[:, T:] is the last K-1 rows (written this way because [:, -0:] would keep everything)
    return out, RecurrentState(h_last, conv_in[:, T:].copy(), conv_doc[:, T:].copy())


def _attention_chunk(x, p, segment_pos, doc, state, num_heads, window, rope=True):
    """Local MQA (Griffin §2.3; recurrentgemma `LocalAttentionBlock`) over [cached keys, chunk]. x: (B, T, D) -> out: (B, T, D), AttentionState.
    The same computation as attention.attention_forward, with N carried keys in front and no backward cache."""
    xp = array_namespace(x)
    B, T, D = x.shape
    H, Dh = num_heads, D // num_heads
    N = state.keys.shape[1]
    q, _ = linear_forward(x, p["proj_q"])                                  # (B, T, D)
    k, _ = linear_forward(x, p["proj_k"])                                  # (B, T, Dh)
    v, _ = linear_forward(x, p["proj_v"])                                  # (B, T, Dh)
    q, k = q.reshape(B, T, H, Dh), k.reshape(B, T, 1, Dh)                 # (B, T, H, Dh) head-major
    if rope:                                                               # else NoPE: q and k unrotated
        q, _ = rope_forward(q, segment_pos)                                # (B, T, H, Dh)
        k, _ = rope_forward(k, segment_pos)                                # (B, T, 1, Dh)
    keys = xp.concatenate([state.keys, k.reshape(B, T, Dh)], axis=1)       # (B, N+T, Dh)
    values = xp.concatenate([state.values, v], axis=1)                     # (B, N+T, Dh)
    docs = xp.concatenate([state.doc, doc], axis=1)                        # (B, N+T)
    scale = Dh ** -0.5
    min_logit = xp.asarray(MIN_LOGITS_VALUE, dtype=x.dtype)                # () keeps the softmax in x.dtype
    Q = default_block_size(window)
    o = xp.empty_like(q)                                                   # (B, T, H, Dh)
    # Query blocks [q0, q1) in concatenated indices (the chunk is [N, N+T)); each sees keys [q0 - W, q1).
    for q0 in range(N, N + T, Q):
        q1, k0 = min(q0 + Q, N + T), max(0, q0 - window)
        Tq, Tk = q1 - q0, q1 - k0
        q_blk = q[:, q0 - N:q1 - N].reshape(B, Tq * H, Dh)                 # (B, Tq*H, Dh)
        logits = (q_blk @ xp.swapaxes(keys[:, k0:q1], 1, 2)) * scale       # (B, Tq*H, Tk)
        logits = logits.reshape(B, Tq, H, Tk)                              # (B, Tq, H, Tk)
        mask = _mask_from_doc(docs, q0, q1, k0, q1, window)                # (B, Tq, Tk) the training mask
        logits = xp.where(mask[:, :, None, :], logits, min_logit)          # (B, Tq, H, Tk)
        probs = xp.exp(logits - logits.max(axis=-1, keepdims=True))        # (B, Tq, H, Tk)
        probs /= probs.sum(axis=-1, keepdims=True)                         # (B, Tq, H, Tk)
        o[:, q0 - N:q1 - N] = (probs.reshape(B, Tq * H, Tk) @ values[:, k0:q1]).reshape(B, Tq, H, Dh)
    out, _ = linear_forward(o.reshape(B, T, D), p["proj_final"])           # (B, T, D)
    # Keep the last min(W, N+T) tokens: all a later query can see (in the state's KVBuffer, not the
    # concatenation). CuPy arrays keep plain copies, as before the buffer existed.
    if xp is np:
        return out, _kv_append(state, keys[:, N:], values[:, N:], docs[:, N:], window)[3]
    start = N + T - min(window, N + T)
    return out, AttentionState(keys[:, start:].copy(), values[:, start:].copy(), docs[:, start:].copy())


def _check_state(state, cfg, B):
    """The state must come from init_state / forward_chunk for this cfg and batch size."""
    if not isinstance(state, ModelState):
        raise TypeError(f"state must be a ModelState (use init_state(cfg, batch_size)), got {type(state).__name__}")
    if len(state.blocks) != cfg.num_layers:
        raise ValueError(f"state has {len(state.blocks)} blocks, cfg has {cfg.num_layers}")
    for i, (kind, block) in enumerate(zip(cfg.block_types, state.blocks)):
        want = RecurrentState if kind == RECURRENT else AttentionState
        if not isinstance(block, want):
            raise TypeError(f"state block {i} is a {type(block).__name__}, but cfg block {i} is {kind}")
    if state.doc.shape != (B,):
        raise ValueError(f"state is for batch size {state.doc.shape[0]}, tokens have B={B}")
    first = state.blocks[0]
    arr = first.h if isinstance(first, RecurrentState) else first.keys
    if arr.dtype != np.dtype(cfg.dtype):
        raise TypeError(f"state is {arr.dtype} but cfg.dtype is {cfg.dtype!r}")


def forward_chunk(params, tokens, segment_pos, cfg, state):
    """Logits for the next T tokens, continuing from `state` (Griffin §5.1, inference).

    tokens, segment_pos: (B, T) ints, any T >= 1 (segment_pos continues across chunks; 0 starts a document);
    state: ModelState from init_state or a previous call (not modified). Returns logits: (B, T, V) in
    cfg.dtype, equal to model_forward on the concatenation of all chunks, and the new ModelState.
    """
    _check_inputs(params, tokens, segment_pos, cfg)
    B, T = tokens.shape
    _check_state(state, cfg, B)
    xp = array_namespace(params["embedder"]["input_embedding"])
    if T == 1 and xp is np and array_namespace(tokens, segment_pos) is np:
        return _decode_step(params, tokens, segment_pos, cfg, state)
    # Document ids continue from the previous chunk: the same ids model_forward would give these positions.
    doc = state.doc[:, None] + xp.cumsum(segment_pos == 0, axis=1)         # (B, T)
    table = params["embedder"]["input_embedding"]                          # (V, D)
    scale = embedding_scale(cfg.width) if cfg.embeddings_scale_by_sqrt_dim else None
    x, _ = embedding_forward(tokens, table, scale)                         # (B, T, D)
    new_blocks = []
    for p, block_state in zip(params["blocks"], state.blocks):
        # the residual block of blocks.residual_block_forward, with carried state
        normed, _ = rmsnorm_forward(x, p["temporal_pre_norm"])             # (B, T, D)
        if isinstance(block_state, RecurrentState):
            mixed, block_state = _recurrent_chunk(normed, p["recurrent_block"], segment_pos, doc, block_state,
                                                  cfg.scan_backend)        # (B, T, D)
        else:
            mixed, block_state = _attention_chunk(normed, p["attention_block"], segment_pos, doc, block_state,
                                                  cfg.num_heads, cfg.window, cfg.use_rope)
        residual = x + mixed                                               # (B, T, D)
        normed2, _ = rmsnorm_forward(residual, p["channel_pre_norm"])      # (B, T, D)
        mlp_out, _ = mlp_forward(normed2, p["mlp_block"])                  # (B, T, D)
        x = residual + mlp_out                                             # (B, T, D)
        new_blocks.append(block_state)
    normed, _ = rmsnorm_forward(x, params["final_norm"])                   # (B, T, D)
    logits, _ = softcap_forward(normed @ table.T, cfg.logits_soft_cap)     # (B, T, V) tied head
    return logits, ModelState(tuple(new_blocks), doc[:, -1].copy(), state.num_tokens + T, state.plan)


def _decode_step(params, tokens, segment_pos, cfg, state):
    """forward_chunk for T = 1 on NumPy arrays: the fused kernels of minigriffin.decode, same computation."""
    plan = state.plan if decode.plan_matches(state.plan, params) else decode.make_plan(params, cfg)
    cs = plan.constants
    table = params["embedder"]["input_embedding"]                          # (V, D)
    scale = embedding_scale(cfg.width) if cfg.embeddings_scale_by_sqrt_dim else None
    x, _ = embedding_forward(tokens, table, scale)                         # (B, 1, D)
    x = np.ascontiguousarray(x[:, 0])                                      # (B, D)
    positions = segment_pos[:, 0]                                          # (B,)
    reset = np.ascontiguousarray(positions == 0)                           # (B,) a document starts here
    doc = state.doc + reset                                                # (B,) int64 its document id
    B = x.shape[0]
    n_groups = decode._groups(B)
    sin = cos = None
    new_blocks = []
    # `work` lists the kernels of the step in order, each taking a group of rows [r0, r1). Every attention
    # block's cache slot for this token is reserved here, before any kernel runs, so row groups can run the
    # whole list in their own threads and meet once, at the end.
    work = []
    for kind, plan_block, block_state in zip(cfg.block_types, plan.blocks, state.blocks):
        x_out = np.empty_like(x)                                           # (B, D)
        if kind == RECURRENT:
            new = RecurrentState(np.empty_like(block_state.h), np.empty_like(block_state.conv_x),
                                 np.empty_like(block_state.conv_doc))
            args = (x, reset, doc, decode._c(block_state.h), decode._c(block_state.conv_x),
                    decode._c(block_state.conv_doc)) + plan_block + (cs, x_out) + tuple(new)
            work.append(lambda r0, r1, args=args: decode._recurrent_rows(r0, r1, *args))
        else:
            if sin is None:                                                # (B, Dh/4) each, shared by all blocks
                half = cfg.head_dim // 4 if cfg.use_rope else 0              # NoPE: rotate nothing
                sin, cos = decode.rope_sin_cos(positions, half, x.dtype)
            H, Dh = cfg.num_heads, cfg.head_dim
            keys, _, docs, new, _ = _kv_reserve(block_state, 1, cfg.window)   # (B, N+1, ...)
            buf = new.buffer                                               # the views end at buf.head
            stop = buf.head
            start = stop - keys.shape[1]
            docs[:, -1] = doc                                              # the last entry is this token's slot
            q = np.empty((B, H, Dh), x.dtype)
            o = np.empty((B, H * Dh), x.dtype)                             # (B, D)
            args_in = (x, sin, cos) + plan_block[0] + (cs, q, buf.keys[:, stop - 1], buf.values[:, stop - 1])
            cache = (buf.keys, buf.values, buf.doc, start, stop, doc)      # kernels take whole buffers
            n_parts = decode.split_parts(stop - start) if n_groups == 1 else 1   # a batch of one: split keys
            if n_parts > 1:                                                # three calls, the middle one parallel
                core = (q,) + cache + (cs, o, n_parts)
                out = (x, o) + plan_block[1] + (cs, x_out)
                work.append(lambda r0, r1, a=args_in: decode._attention_in_rows(r0, r1, *a))
                work.append(lambda r0, r1, a=core: decode.attention_core_split(*a))
                work.append(lambda r0, r1, a=out: decode._attention_out_rows(r0, r1, *a))
            else:                                                          # one call per row group
                whole = args_in + cache + (o,) + plan_block[1] + (x_out,)
                work.append(lambda r0, r1, a=whole: decode._attention_block_rows(r0, r1, *a))
        new_blocks.append(new)
        x = x_out
    logits = np.empty((B, plan.table_t.shape[1]), x.dtype)                 # (B, V)
    head_args = (x, plan.final_scale, plan.table_t, cs, logits)
    work.append(lambda r0, r1: decode._head_rows(r0, r1, *head_args))
    decode.run_rows(n_groups, B, lambda r0, r1: [step(r0, r1) for step in work])
    logits = logits[:, None]                                               # (B, 1, V)
    return logits, ModelState(tuple(new_blocks), doc, state.num_tokens + 1, plan)
