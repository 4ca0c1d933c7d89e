"""Causal depthwise Conv1D with a document mask (Griffin §2.4, Figure 2(c); recurrentgemma layers.Conv1D).

    conv[t] = b + sum_{s=0..K-1} w[K-1-s] * x[t-s] * keep(t, s)

w[K-1] multiplies the current input and w[0] the input K-1 steps back. keep(t, s) is 1 when t-s >= 0 and no
document starts in (t-s, t] (segment_pos == 0 marks a start), so no tap ever crosses a document boundary;
inputs before the start of the sequence count as zero. K = 4 in Griffin.
"""

from typing import NamedTuple

from minigriffin.xp import array_namespace


def document_ids(segment_pos):
    """(B, T) int: which document of the row each position belongs to (a new one starts at segment_pos == 0)."""
    xp = array_namespace(segment_pos)
    return xp.cumsum(segment_pos == 0, axis=1)


class Conv1DState(NamedTuple):
    """The last K-1 inputs of a sequence, carried into its next chunk (recurrentgemma's conv1d_state)."""
    x: object          # (B, K-1, E) oldest first; zeros before the first token
    doc: object        # (B, K-1) int their document ids (minigriffin.state.NO_DOC for that padding)


class Conv1DCache(NamedTuple):
    x: object          # (B, K-1+T, E) input, after the carried inputs of the state (if any)
    w: object          # (K, E)
    keep: object       # (K, B, K-1+T) float: keep[s, b, t] = tap s back from t is inside the document
    carried: int = 0   # K-1 with a state (its rows lead x and get no gradient), else 0
    state: object = None   # Conv1DState after this chunk, when a state was given


def _tap_masks(segment_pos, K, dtype, doc=None):
    """keep[s, b, t] = 1.0 if t - s >= 0 and positions t-s and t are in the same document, else 0.0."""
    doc = document_ids(segment_pos) if doc is None else doc   # (B, T)
    xp = array_namespace(doc)
    B, T = doc.shape
    keep = xp.zeros((K, B, T), dtype=dtype)                # (K, B, T)
    for s in range(min(K, T)):
        keep[s, :, s:] = doc[:, s:] == doc[:, : T - s]
    return keep


def conv1d_forward(x, p, segment_pos, *, doc=None, state=None):
    """x: (B, T, E); p: {"w": (K, E), "b": (E,)}; segment_pos: (B, T) -> (B, T, E), cache.

    doc: optional (B, T) int document ids used instead of document_ids(segment_pos): taps join only positions
    with equal ids (minigriffin.model passes ids that continue across chunks). state: a Conv1DState whose K-1
    inputs come before x, so the taps reach back into the previous chunk; the new state is cache.state."""
    xp = array_namespace(x)
    K = p["w"].shape[0]
    doc = document_ids(segment_pos) if doc is None else doc   # (B, T)
    carried = 0
    if state is not None:                                  # the previous chunk's last K-1 inputs lead the way
        carried = state.x.shape[1]
        x = xp.concatenate([state.x, x], axis=1)           # (B, K-1+T, E)
        doc = xp.concatenate([state.doc, doc], axis=1)     # (B, K-1+T)
    T = x.shape[1]
    keep = _tap_masks(None, K, x.dtype, doc)               # (K, B, T)
    out = xp.broadcast_to(p["b"], x.shape).copy()          # (B, T, E)
    for s in range(min(K, T)):
        # out[:, t] += w[K-1-s] * x[:, t-s] * keep[s, :, t]   for t >= s
        out[:, s:] += p["w"][K - 1 - s] * (x[:, : T - s] * keep[s, :, s:, None])
    new_state = None
    if state is not None:                                  # T - carried >= 1, so x has at least K-1 rows
        new_state = Conv1DState(x[:, T - carried:].copy(), doc[:, T - carried:].copy())
    return out[:, carried:], Conv1DCache(x, p["w"], keep, carried, new_state)


def conv1d_backward(dout, cache):
    """dout: (B, T, E) -> dx: (B, T, E), grads {"w": (K, E), "b": (E,)}. The carried inputs of a state are
    constants: they contribute to dw but get no gradient."""
    xp = array_namespace(dout)
    x, w, keep, carried = cache.x, cache.w, cache.keep, cache.carried
    K, E = w.shape
    if carried:                                            # the carried rows produced no output
        dout = xp.concatenate([xp.zeros_like(x[:, :carried]), dout], axis=1)   # (B, K-1+T, E)
    T = x.shape[1]
    dx = xp.zeros_like(x)                                  # (B, T, E)
    dw = xp.zeros_like(w)                                  # (K, E)
    for s in range(min(K, T)):
        masked_dout = dout[:, s:] * keep[s, :, s:, None]   # (B, T-s, E)
        # forward was out[:, s:] += w[K-1-s] * x[:, :T-s] * keep
        dx[:, : T - s] += masked_dout * w[K - 1 - s]
        dw[K - 1 - s] = (masked_dout * x[:, : T - s]).reshape(-1, E).sum(axis=0)
    return dx[:, carried:], {"w": dw, "b": dout.reshape(-1, E).sum(axis=0)}
