"""The fused single-token decode step (T = 1) on NumPy arrays: a few Numba kernels per residual block.

minigriffin/fast/__init__.py registers decode_step as the fast version of inference.forward_chunk for one
token per row on NumPy arrays; the kernels live in decode_math.py (scalar helpers, including a vectorising
exp), decode_recurrent.py (the recurrent block and the head) and decode_attention.py (the attention block).

Chunks of T > 1 and CuPy arrays run model.model_forward, which stays the reference; these kernels do the same
computation, operation for operation:

    recurrent block   one kernel (recurrent_rows): RMSNorm, linear_y + GeLU, linear_x, the K Conv1D taps with
                      their document mask, the RG-LRU gates and state update, linear_out, residual, RMSNorm,
                      gated MLP, residual
    attention block   one kernel (attention_block_rows): RMSNorm, q/k/v projections and RoPE, writing the
                      step's key and value straight into the slot reserved for them in the preallocated
                      cache (kvcache.kv_reserve); one pass over the keys for the scaled, masked logits,
                      minus their max, exp; one pass over the values for the sums and o = p V;
                      proj_final, residual, RMSNorm, gated MLP, residual. (A batch of one with long
                      contexts runs the attention in between as attention_core_split instead.)
    head              RMSNorm, tied projection, soft-cap (head_rows)

Why it is faster (docs/benchmarks.md, "Decode-step cost"): the plain path spends a decode step in hundreds of
NumPy calls on (B, 1, 256) arrays, a few microseconds of dispatch each, and in OpenBLAS calls on a single row.
Here a block is one compiled call. Matrix-vector products are written as y += x_i * W^T[i, :] over
the rows of the transposed weight, a loop LLVM vectorises without `fastmath` (the dot-product form would need
reassociation); with B > 1 the rows of the batch share each pass over a weight row. The transposed copies are
made once per state lineage (`DecodePlan`, carried by the ModelState), so params must not be modified in
place while a state made from them is still being continued (training and then decoding with a fresh
`init_state` is fine). Rows of the batch are independent in a decode step, so with B > 1 and
MINIGRIFFIN_DECODE_THREADS > 1 the batch is split into one group of rows per Python thread, each taking its
rows through every block (the kernels release the GIL); every attention block's cache slot is reserved
before they start, so the threads meet once, at the end of the step (run_rows, _groups). A batch of one
instead splits attention over at least 2 x SPLIT_MIN_KEYS keys between Numba threads
(attention_core_split). The default is one thread.

No `fastmath`, except "reassoc" and "contract" in one function, `dot` (the logits' dot products, which LLVM
vectorises only when it may reorder the sum; NaN and inf semantics are kept). Every other multiply and add
is the reference's, in the model dtype (constants are cast to it, as NumPy does with Python scalars). Sums
run in another order than OpenBLAS's, and exp is decode_math.exp (within 2 ulp), so float64 results agree with the
plain path to ~1e-15 relative, not bit for bit; tests/test_decode.py checks token-by-token decoding against
model_forward at rtol 1e-12 (float64) and 1e-5 (float32). Kernels use `error_model="numpy"` (a division by
zero gives inf or NaN, as in NumPy): Numba's default tests every divisor, and that branch, like a libm exp
call, keeps LLVM from vectorising a loop (docs/conventions.md).
"""

import os
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numba
import numpy as np

from minigriffin.config import RECURRENT
from minigriffin.fast.decode_attention import (attention_block_rows, attention_core_split, attention_in_rows,
                                               attention_out_rows)
from minigriffin.fast.decode_math import constants
from minigriffin.fast.decode_recurrent import head_rows, recurrent_rows
from minigriffin.head import embedding_forward, embedding_scale
from minigriffin.kvcache import kv_reserve
from minigriffin.model import check_inputs
from minigriffin.rglru import softplus
from minigriffin.rope import MAX_WAVELENGTH
from minigriffin.state import ModelState, RecurrentState, check_state

# -------------------------------------------------------------------------------------------- weights plan
class DecodePlan(NamedTuple):
    """The params rearranged for the kernels: C-contiguous, torch-layout weights (out, in) transposed to
    (in, out), softplus(a_param) precomputed. `sources` are the arrays it was made from (checked by identity)."""
    sources: tuple
    blocks: tuple      # one tuple of arrays per residual block, in the kernels' argument order
    final_scale: object
    table_t: object    # (D, V)
    constants: object  # cs


def _c(arr):
    return np.ascontiguousarray(arr)


def _sources(params):
    """Every params leaf, in a fixed order: a plan is reused only while all of them are the same objects."""
    out = [params["embedder"]["input_embedding"], params["final_norm"]["scale"]]

    def walk(tree):
        if isinstance(tree, dict):
            for key in sorted(tree):
                walk(tree[key])
        else:
            out.append(tree)
    walk(params["blocks"])
    return tuple(out)


def plan_matches(plan, params):
    if plan is None:
        return False
    sources = _sources(params)
    return len(sources) == len(plan.sources) and all(a is b for a, b in zip(sources, plan.sources))


def make_plan(params, cfg):
    """DecodePlan for params (a transposed copy of the dense weights: about the size of the model)."""
    blocks = []
    for kind, p in zip(cfg.block_types, params["blocks"]):
        mlp = p["mlp_block"]
        F = mlp["ffw_up"]["w"].shape[2]
        mlp_args = (_c(p["channel_pre_norm"]["scale"]), _c(mlp["ffw_up"]["w"]), _c(mlp["ffw_up"]["b"].reshape(2, F)),
                    _c(mlp["ffw_down"]["weight"].T), _c(mlp["ffw_down"]["bias"]))
        if kind == RECURRENT:
            r = p["recurrent_block"]
            blocks.append((_c(p["temporal_pre_norm"]["scale"]),
                           _c(r["linear_y"]["weight"].T), _c(r["linear_y"]["bias"]),
                           _c(r["linear_x"]["weight"].T), _c(r["linear_x"]["bias"]),
                           _c(r["conv_1d"]["w"]), _c(r["conv_1d"]["b"]),
                           _c(r["rg_lru"]["input_gate"]["w"]), _c(r["rg_lru"]["input_gate"]["b"]),
                           _c(r["rg_lru"]["a_gate"]["w"]), _c(r["rg_lru"]["a_gate"]["b"]),
                           _c(softplus(r["rg_lru"]["a_param"])),
                           _c(r["linear_out"]["weight"].T), _c(r["linear_out"]["bias"])) + mlp_args)
        else:
            a = p["attention_block"]
            blocks.append(((_c(p["temporal_pre_norm"]["scale"]), _c(a["proj_q"]["weight"].T),
                            _c(a["proj_k"]["weight"].T), _c(a["proj_v"]["weight"].T)),
                           (_c(a["proj_final"]["weight"].T), _c(a["proj_final"]["bias"])) + mlp_args))
    return DecodePlan(_sources(params), tuple(blocks), _c(params["final_norm"]["scale"]),
                      _c(params["embedder"]["input_embedding"].T), constants(cfg))


def decode_threads():
    """Threads a decode step may use: MINIGRIFFIN_DECODE_THREADS (default 1), an int >= 1."""
    raw = os.environ.get("MINIGRIFFIN_DECODE_THREADS", "1")
    try:
        wanted = int(raw)
    except ValueError:
        raise ValueError(f"MINIGRIFFIN_DECODE_THREADS must be an integer >= 1, got {raw!r}") from None
    if wanted < 1:
        raise ValueError(f"MINIGRIFFIN_DECODE_THREADS must be an integer >= 1, got {raw!r}")
    return wanted


def _groups(B):
    """Row groups for a decode step: one per decode thread (at most B); 1 means everything on this thread.

    Rows of the batch are independent in a decode step, so with B > 1 each thread can take a group of rows
    through all the blocks (run_rows), and the threads meet once, at the end: every attention block's cache
    slot for the step is reserved before they start (kvcache.kv_reserve), so each group writes its own
    rows' keys and values. Once per step matters: with a parallel region per kernel call, each region waits
    for a descheduled thread whenever another process holds a core (docs/benchmarks.md, "Decode kernels").
    A batch of one uses the other threads inside long attention blocks instead
    (attention_core_split). Serial by default, because even one wait per step costs a scheduler quantum on
    a busy machine."""
    return max(1, min(B, decode_threads()))


# Keys per thread below which attention_core_split is not worth its two parallel regions (docs/benchmarks.md).
SPLIT_MIN_KEYS = 256


def split_parts(n_keys):
    """Runs of keys for attention_core_split with a batch of one: one per decode thread (at most Numba's
    thread count), each of at least SPLIT_MIN_KEYS keys; 1 means do not split."""
    return max(1, min(decode_threads(), numba.get_num_threads(), n_keys // SPLIT_MIN_KEYS))


_POOLS = {}


def run_rows(n_groups, B, work):
    """Run work(r0, r1) for n_groups row groups of a batch of B, the first on this thread and the others on
    pool threads, and wait for all. work must release the GIL to gain anything (nogil kernels, BLAS, NumPy)."""
    bounds = [(g * B // n_groups, (g + 1) * B // n_groups) for g in range(n_groups)]
    if n_groups == 1:
        work(0, B)
        return
    if n_groups not in _POOLS:
        _POOLS[n_groups] = ThreadPoolExecutor(n_groups - 1, thread_name_prefix="minigriffin-decode")
    futures = [_POOLS[n_groups].submit(work, r0, r1) for r0, r1 in bounds[1:]]
    work(*bounds[0])
    for future in futures:
        future.result()


def rope_sin_cos(positions, half, dtype):
    """sin, cos: (B, R/2) for positions (B,), computed exactly as rope.rope_forward (float64, then cast)."""
    R = 2 * half
    freq = np.arange(half, dtype=np.float64)
    inv_freq = 1.0 / MAX_WAVELENGTH ** (2.0 * freq / R)
    theta = positions[:, None].astype(np.float64) * inv_freq               # (B, R/2)
    return np.ascontiguousarray(np.sin(theta).astype(dtype)), np.ascontiguousarray(np.cos(theta).astype(dtype))


def decode_step(params, tokens, segment_pos, cfg, state):
    """inference.forward_chunk for T = 1 on NumPy arrays (registered in minigriffin/fast/__init__.py): the
    kernels, the same computation as model.model_forward with a state. Returns logits (B, 1, V) and the new
    ModelState."""
    check_inputs(params, tokens, segment_pos, cfg)
    check_state(state, cfg, tokens.shape[0])
    plan = state.plan if plan_matches(state.plan, params) else make_plan(params, cfg)
    cs = plan.constants
    table = params["embedder"]["input_embedding"]                          # (V, D)
    scale = embedding_scale(cfg.width) if cfg.embeddings_scale_by_sqrt_dim else None
    x, _ = embedding_forward(tokens, table, scale)                         # (B, 1, D)
    x = np.ascontiguousarray(x[:, 0])                                      # (B, D)
    positions = segment_pos[:, 0]                                          # (B,)
    reset = np.ascontiguousarray(positions == 0)                           # (B,) a document starts here
    doc = state.doc + reset                                                # (B,) int64 its document id
    B = x.shape[0]
    n_groups = _groups(B)
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
            args = (x, reset, doc, _c(block_state.h), _c(block_state.conv_x),
                    _c(block_state.conv_doc)) + plan_block + (cs, x_out) + tuple(new)
            work.append(lambda r0, r1, args=args: recurrent_rows(r0, r1, *args))
        else:
            if sin is None:                                                # (B, Dh/4) each, shared by all blocks
                half = cfg.head_dim // 4 if cfg.use_rope else 0              # NoPE: rotate nothing
                sin, cos = rope_sin_cos(positions, half, x.dtype)
            H, Dh = cfg.num_heads, cfg.head_dim
            keys, _, docs, new, _ = kv_reserve(block_state, 1, cfg.window)   # (B, N+1, ...)
            buf = new.buffer                                               # the views end at buf.head
            stop = buf.head
            start = stop - keys.shape[1]
            docs[:, -1] = doc                                              # the last entry is this token's slot
            q = np.empty((B, H, Dh), x.dtype)
            o = np.empty((B, H * Dh), x.dtype)                             # (B, D)
            args_in = (x, sin, cos) + plan_block[0] + (cs, q, buf.keys[:, stop - 1], buf.values[:, stop - 1])
            cache = (buf.keys, buf.values, buf.doc, start, stop, doc)      # kernels take whole buffers
            n_parts = split_parts(stop - start) if n_groups == 1 else 1   # a batch of one: split keys
            if n_parts > 1:                                                # three calls, the middle one parallel
                core = (q,) + cache + (cs, o, n_parts)
                out = (x, o) + plan_block[1] + (cs, x_out)
                work.append(lambda r0, r1, a=args_in: attention_in_rows(r0, r1, *a))
                work.append(lambda r0, r1, a=core: attention_core_split(*a))
                work.append(lambda r0, r1, a=out: attention_out_rows(r0, r1, *a))
            else:                                                          # one call per row group
                whole = args_in + cache + (o,) + plan_block[1] + (x_out,)
                work.append(lambda r0, r1, a=whole: attention_block_rows(r0, r1, *a))
        new_blocks.append(new)
        x = x_out
    logits = np.empty((B, plan.table_t.shape[1]), x.dtype)                 # (B, V)
    head_args = (x, plan.final_scale, plan.table_t, cs, logits)
    work.append(lambda r0, r1: head_rows(r0, r1, *head_args))
    run_rows(n_groups, B, lambda r0, r1: [step(r0, r1) for step in work])
    logits = logits[:, None]                                               # (B, 1, V)
    return logits, ModelState(tuple(new_blocks), doc, state.num_tokens + 1, plan)
