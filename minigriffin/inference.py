"""Inference with carried state: run a sequence chunk by chunk (or token by token) with no backward.

    state = init_state(cfg, batch_size)
    for each chunk:  logits, state = forward_chunk(params, tokens, segment_pos, cfg, state)

forward_chunk is model.model_forward with a state, keeping the logits and the new state and dropping the
backward cache: there is one forward pass, and feeding a sequence in chunks of any sizes gives the logits of
one call on the whole of it (tested in float64 to rtol 1e-12). segment_pos simply continues (a book's second
chunk of 512 starts at 512), and a 0 anywhere still starts a new document. What a state holds is described
in minigriffin/state.py (the recurrent blocks) and minigriffin/kvcache.py (the attention blocks).
Unlike recurrentgemma's decode path (no Conv1D document mask with a cache, positions recovered from
segment_pos), this stays exact when documents are packed and when a document starts inside a chunk.

forward_chunk is @accelerated (minigriffin/accelerate.py): a call with one token per row on NumPy arrays, as
sampling makes them, runs minigriffin.fast.decode.decode_step instead, compiled Numba kernels that do the same
computation (one compiled kernel per residual block, three for attention over a long context with one
sequence; tests/test_decode.py checks token-by-token decoding against
model_forward on the whole sequence, rtol 1e-12 in float64). MINIGRIFFIN_REFERENCE=1 turns it off. The first
such step makes a DecodePlan (the params with torch-layout weights transposed, about one more copy of the
model) and the ModelState passes it on, so params must not be modified in place while a state is being
continued.

Notebook: notebooks/07_decoding_cost.ipynb
"""

from minigriffin.accelerate import accelerated
from minigriffin.kvcache import AttentionState, KVBuffer
from minigriffin.model import check_inputs, model_forward
from minigriffin.state import (NO_DOC, ModelState, RecurrentState, check_state, init_state, state_nbytes,
                               state_reserved_nbytes)


@accelerated
def forward_chunk(params, tokens, segment_pos, cfg, state):
    """Logits for the next T tokens, continuing from `state` (Griffin §5.1, inference).

    tokens, segment_pos: (B, T) ints, any T >= 1 (segment_pos continues across chunks; 0 starts a document);
    state: ModelState from init_state or a previous call (not modified). Returns logits: (B, T, V) in
    cfg.dtype, equal to model_forward on the concatenation of all chunks, and the new ModelState.
    """
    check_inputs(params, tokens, segment_pos, cfg)
    check_state(state, cfg, tokens.shape[0])
    logits, cache = model_forward(params, tokens, segment_pos, cfg, state)
    return logits, cache.state


__all__ = ["forward_chunk", "init_state", "ModelState", "RecurrentState", "AttentionState",
           "KVBuffer", "NO_DOC", "state_nbytes", "state_reserved_nbytes"]
