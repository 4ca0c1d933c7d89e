"""Import DeepMind's recurrentgemma weights into minigriffin and export them back.

minigriffin parameters are nested dicts named like recurrentgemma's PyTorch state dict, with the same
(out, in) layout for linear weights, so the PyTorch conversion is only a change of naming:
"blocks.0.recurrent_block.rg_lru.a_param" <-> params["blocks"][0]["recurrent_block"]["rg_lru"]["a_param"].
The Flax tree nests differently ({"blocks.0": {"recurrent_block": {"linear_x": {"kernel": ...}}}}) and
stores dense kernels as (in, out), the transpose; recurrentgemma/conversion.py does the same mapping.

    params = from_torch_state_dict(model.state_dict())      # tensors or arrays
    state = to_torch_state_dict(params)                      # name -> numpy array (torch.from_numpy to load)
    cfg = config_from_params(params, preset="griffin-small") # shapes from the weights, the rest from a preset
"""

import numpy as np

from minigriffin.config import ATTENTION, RECURRENT, make_config, replace
from minigriffin.tree import tree_leaves

_BLOCK_KEYS = ("temporal_pre_norm", "channel_pre_norm", "recurrent_block", "attention_block", "mlp_block")


def _to_numpy(value):
    """A numpy array from a numpy array, a torch tensor (on any device, any float dtype) or a jax array."""
    if hasattr(value, "detach"):                      # torch
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return value.numpy().copy()
    return np.array(value)


def to_torch_state_dict(params):
    """Flat {state-dict name: numpy array}, names exactly as recurrentgemma.torch.Griffin.state_dict()."""
    return {name: np.array(arr) for name, arr in tree_leaves(params)}


def from_torch_state_dict(state_dict, dtype=None):
    """Nested minigriffin params from a recurrentgemma PyTorch state dict (tensors or arrays).
    Unknown names raise; dtype casts every array (None keeps the stored dtype)."""
    params = {"embedder": {}, "blocks": [], "final_norm": {}}
    for name, value in state_dict.items():
        path = name.split(".")
        arr = _to_numpy(value)
        if dtype is not None:
            arr = arr.astype(dtype)
        if path[0] == "blocks":
            index = int(path[1])
            while len(params["blocks"]) <= index:
                params["blocks"].append({})
            if path[2] not in _BLOCK_KEYS:
                raise KeyError(f"unexpected state-dict entry {name!r}")
            node, rest = params["blocks"][index], path[2:]
        elif path[0] in ("embedder", "final_norm"):
            node, rest = params, path
        else:
            raise KeyError(f"unexpected state-dict entry {name!r}")
        for key in rest[:-1]:
            node = node.setdefault(key, {})
        node[rest[-1]] = arr
    if any(not block for block in params["blocks"]):
        raise ValueError("state dict has gaps in its block numbering")
    return params


def to_flax_params(params):
    """The Flax/JAX tree recurrentgemma uses (under a top-level "params"), kernels transposed to (in, out)."""
    flax = {}
    for name, arr in tree_leaves(params):
        path = name.split(".")
        if path[0] == "blocks":
            path = [f"blocks.{path[1]}"] + path[2:]
        if path[-1] == "weight" and arr.ndim == 2:
            path[-1], arr = "kernel", arr.T
        elif path[-1] == "weight":
            path[-1] = "kernel"
        node = flax
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = np.ascontiguousarray(arr)
    return {"params": flax}


def from_flax_params(flax_params, dtype=None):
    """Inverse of to_flax_params; accepts the tree with or without the top-level "params" key."""
    tree = flax_params.get("params", flax_params)
    state = {}

    def walk(node, prefix):
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, name + ".")
                continue
            arr = _to_numpy(value)
            if key == "kernel":
                name = name[: -len("kernel")] + "weight"
                arr = arr.T if arr.ndim == 2 else arr
            state[name] = np.ascontiguousarray(arr)

    walk(tree, "")
    return from_torch_state_dict(state, dtype=dtype)


def config_from_params(params, preset="griffin-small", **overrides):
    """A GriffinConfig whose shapes (vocab, widths, heads, block types) are read from params; the rest
    (window, soft-cap, embedding scale) comes from `preset` and `overrides`, which the weights cannot tell."""
    V, D = params["embedder"]["input_embedding"].shape
    block_types, E, F, heads, gate_blocks = [], D, 3 * D, None, None
    for block in params["blocks"]:
        F = block["mlp_block"]["ffw_up"]["w"].shape[-1]
        if "recurrent_block" in block:
            block_types.append(RECURRENT)
            E = block["recurrent_block"]["linear_x"]["weight"].shape[0]
            gate_blocks = block["recurrent_block"]["rg_lru"]["a_gate"]["w"].shape[0]
        else:
            block_types.append(ATTENTION)
            heads = D // block["attention_block"]["proj_k"]["weight"].shape[0]
    shapes = dict(vocab_size=V, width=D, lru_width=E, mlp_expanded_width=F, block_types=tuple(block_types))
    if heads is not None:
        shapes["num_heads"] = heads
    base = make_config(preset)
    if heads is None and gate_blocks is not None:
        shapes["num_heads"] = gate_blocks     # all-recurrent: heads only matter as the gate block count
    fields = {**shapes, "num_gate_blocks": None, **overrides}
    # Validate against a consistent interim config first (the preset's window etc. with our shapes).
    cfg = replace(base, **{**fields, "num_gate_blocks": gate_blocks})
    if cfg.num_gate_blocks == cfg.num_heads and "num_gate_blocks" not in overrides:
        cfg = replace(cfg, num_gate_blocks=None)             # the recurrentgemma convention
    return cfg
