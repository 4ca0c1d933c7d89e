"""The attention block's carried state: the last min(W, tokens so far) keys and values (Griffin §5.1).

An attention block that continues a sequence (minigriffin.attention.attention_forward with state=...) needs
the post-RoPE keys and values of the last W tokens, and their document ids so the training mask can be
evaluated on [cache, chunk] laid end to end. For global attention (GriffinConfig.global_attention) that is
every earlier token of the document: the full KV cache, which grows with the context.

The keys live in a preallocated KVBuffer per block, not in arrays rebuilt each chunk: a state's keys, values
and doc are views of it, and the newest state appends in place. It is an append-only buffer with room beyond
W rather than a ring buffer, so an older state keeps its contents and a forward pass stays a pure function of
its input state; when the room runs out the last W + 1 entries move to a new buffer (amortised, a few copied
entries per token).
"""

from typing import NamedTuple

import numpy as np

from minigriffin.xp import array_namespace


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

    def __init__(self, B, capacity, Dh, dtype, xp=np):
        self.keys = xp.empty((B, capacity, Dh), dtype)      # (B, C, Dh)  (xp: numpy, or cupy on a GPU)
        self.values = xp.empty((B, capacity, Dh), dtype)    # (B, C, Dh)
        self.doc = xp.empty((B, capacity), np.int64)        # (B, C)
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


def slack(n):
    """Spare entries a new KVBuffer gets beyond the n it is created with."""
    return min(max(n // 4, 16), 1024)


def kv_reserve(state, T, window):
    """Make room for T more tokens in an AttentionState's cache, without writing them yet.

    Returns (keys, values, docs, new_state, n_new): views of the last min(N + T, W + 1) entries, contiguous
    in the buffer (for a single token, everything it attends to: the cached N <= W keys and its own), whose
    last n_new = min(T, W + 1) entries are the slots for the newest tokens' keys, values and document ids
    (the caller fills them), and the new state holding the last min(N + T, W). Splitting the reservation
    from the write lets a decode step reserve every block's slot up front, so that threads working on
    different rows of the batch can each write their own rows without meeting (fast.decode.decode_step)."""
    B, N, Dh = state.keys.shape
    reach = min(N + T, window + 1)
    keep = min(N + T, window)
    n_new = min(T, reach)
    buf = state.buffer
    end = state.start + N
    if buf is not None and buf.head == end and end + T <= buf.capacity:
        new_end = end + T                                   # in place: nothing any state sees is overwritten
    else:                                                   # a fresh buffer with the last `reach` entries
        buf = KVBuffer(B, reach + slack(reach), Dh, state.keys.dtype, array_namespace(state.keys))
        n_old = reach - n_new                               # <= N
        buf.keys[:, :n_old] = state.keys[:, N - n_old:]
        buf.values[:, :n_old] = state.values[:, N - n_old:]
        buf.doc[:, :n_old] = state.doc[:, N - n_old:]
        new_end = reach
    buf.head = new_end
    a, s = new_end - reach, new_end - keep
    new_state = AttentionState(buf.keys[:, s:new_end], buf.values[:, s:new_end], buf.doc[:, s:new_end], buf, s)
    return buf.keys[:, a:new_end], buf.values[:, a:new_end], buf.doc[:, a:new_end], new_state, n_new


def kv_append(state, k, v, doc, window):
    """Append T tokens' keys, values (B, T, Dh) and document ids (B, T) to an AttentionState.

    Returns (keys, values, docs, new_state) as kv_reserve, with the new tokens written (the last
    min(T, W + 1) of them: earlier ones would fall out of the window at once)."""
    T = k.shape[1]
    keys, values, docs, new_state, n_new = kv_reserve(state, T, window)
    keys[:, -n_new:] = k[:, T - n_new:]
    values[:, -n_new:] = v[:, T - n_new:]
    docs[:, -n_new:] = doc[:, T - n_new:]
    return keys, values, docs, new_state
