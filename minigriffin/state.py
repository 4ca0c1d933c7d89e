"""What a model carries from one chunk of a sequence to the next (Griffin §5.1; recurrentgemma
torch/modules.py `RecurrentBlockCache`, `AttentionBlockCache`).

    recurrent block   h: (B, E) RG-LRU state;  the last K-1 = 3 Conv1D inputs (B, 3, E) and their document ids
    attention block   the last min(W, tokens so far) post-RoPE keys and values (B, <=W, Dh) and their document
                      ids (minigriffin.kvcache)

so Hawk's state is O(1) in the context length and Griffin's is bounded by the window; for global attention
(the MQA baseline) the attention state is the full KV cache, which grows with every token (paper eq. 5).

Positions need not be stored: an attention cache always holds the contiguous last N tokens, so [cache, chunk]
laid end to end has array indices that differ exactly as the full sequence's do, and the training mask applies
unchanged. Document ids continue across chunks (ModelState.doc is the id of the last token fed); NO_DOC marks
the Conv1D padding before the first token, which no real token ever matches.
"""

from typing import NamedTuple

import numpy as np

from minigriffin.config import RECURRENT
from minigriffin.kvcache import AttentionState

NO_DOC = -1          # document id of the Conv1D padding before the first token (real ids are >= 0)


class RecurrentState(NamedTuple):
    """recurrentgemma's RecurrentBlockCache, plus the document ids of the carried Conv1D inputs."""
    h: object          # (B, E) RG-LRU state h_{t} after the last token, model dtype (float32 or float64)
    conv_x: object     # (B, K-1, E) the last K-1 Conv1D inputs (linear_x outputs), oldest first, 0-padded
    conv_doc: object   # (B, K-1) int64 their document ids, NO_DOC for padding


class ModelState(NamedTuple):
    blocks: tuple      # one RecurrentState or AttentionState per residual block
    doc: object        # (B,) int64 document id of the last token fed (0 before any token, as in model_forward)
    num_tokens: int    # tokens fed so far in each row
    plan: object = None   # fast.decode.DecodePlan: params laid out for the T = 1 kernels, made once and passed on


def init_state(cfg, batch_size, xp=np):
    """The state before the first token (zeros, empty caches). cfg: GriffinConfig -> ModelState.
    xp: the array module the model runs on (numpy, or cupy for parameters on a GPU)."""
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    B, E, Dh, K1 = int(batch_size), cfg.lru_width, cfg.head_dim, cfg.conv1d_temporal_width - 1
    dt = np.dtype(cfg.dtype)
    blocks = []
    for kind in cfg.block_types:
        if kind == RECURRENT:
            blocks.append(RecurrentState(h=xp.zeros((B, E), dt),                      # (B, E)
                                         conv_x=xp.zeros((B, K1, E), dt),             # (B, K-1, E)
                                         conv_doc=xp.full((B, K1), NO_DOC, np.int64)))  # (B, K-1)
        else:
            blocks.append(AttentionState(keys=xp.zeros((B, 0, Dh), dt),               # (B, 0, Dh)
                                         values=xp.zeros((B, 0, Dh), dt),             # (B, 0, Dh)
                                         doc=xp.zeros((B, 0), np.int64)))             # (B, 0)
    return ModelState(tuple(blocks), xp.zeros(B, np.int64), 0)


def block_arrays(block):
    if isinstance(block, RecurrentState):
        return (block.h, block.conv_x, block.conv_doc)
    return (block.keys, block.values, block.doc)


def state_nbytes(state):
    """Bytes of the cache a ModelState carries (the per-sequence cache of Griffin paper eq. 5, times B): the
    recurrent states and the last N = min(W, tokens) keys, values and document ids of each attention block.
    The KVBuffer behind an attention block reserves room for up to min(max(W/4, 16), 1024) + 1 more tokens,
    not counted here (state_reserved_nbytes counts them)."""
    return int(sum(arr.nbytes for block in state.blocks for arr in block_arrays(block)) + state.doc.nbytes)


def state_reserved_nbytes(state):
    """Bytes actually allocated for a ModelState: state_nbytes with each attention block's whole KVBuffer."""
    total = state.doc.nbytes
    for block in state.blocks:
        if isinstance(block, AttentionState) and block.buffer is not None:
            buf = block.buffer
            total += buf.keys.nbytes + buf.values.nbytes + buf.doc.nbytes
        else:
            total += sum(arr.nbytes for arr in block_arrays(block))
    return int(total)


def check_state(state, cfg, B):
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


# ---------------------------------------------------------------------------- carrying a state in training
def _block_from_arrays(kind_of, arrays):
    """A RecurrentState or AttentionState (of the same kind as kind_of) from its three arrays."""
    if isinstance(kind_of, RecurrentState):
        return RecurrentState(*arrays)
    return AttentionState(*arrays)                   # plain arrays; the first append moves them into a buffer


def state_rows(state, rows):
    """The state of some batch rows only (rows: a slice), e.g. one CPU worker's share (fast/parallel.py)."""
    blocks = tuple(_block_from_arrays(b, [arr[rows] for arr in block_arrays(b)]) for b in state.blocks)
    return ModelState(blocks, state.doc[rows], state.num_tokens)


def concat_states(states):
    """One state from the states of consecutive row shares (the inverse of state_rows); arrays are copied."""
    if len(states) == 1:
        return states[0]
    first = states[0]
    blocks = tuple(_block_from_arrays(b, [np.concatenate(parts) for parts in
                                          zip(*(block_arrays(s.blocks[i]) for s in states))])
                   for i, b in enumerate(first.blocks))
    return ModelState(blocks, np.concatenate([s.doc for s in states]), first.num_tokens)


def state_to_tree(state):
    """{"blocks": [{name: array}], "doc": array}: a ModelState as a tree of arrays, for a checkpoint."""
    blocks = [dict(zip(("h", "conv_x", "conv_doc") if isinstance(b, RecurrentState) else
                       ("keys", "values", "doc"), block_arrays(b))) for b in state.blocks]
    return {"blocks": blocks, "doc": state.doc}


def state_from_tree(tree, num_tokens, xp=np):
    """The ModelState state_to_tree wrote (arrays moved to module xp: numpy, or cupy for a GPU run)."""
    blocks = tuple(RecurrentState(*(xp.asarray(b[k]) for k in ("h", "conv_x", "conv_doc"))) if "h" in b else
                   AttentionState(*(xp.asarray(b[k]) for k in ("keys", "values", "doc"))) for b in tree["blocks"])
    return ModelState(blocks, xp.asarray(tree["doc"]), int(num_tokens))
