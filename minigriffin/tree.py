"""Trees: nested dicts and lists (and NamedTuples such as data.Batch) with arrays at the leaves.

Parameters, gradients, AdamW's moments and batches are trees. A leaf is named by its dotted path, as in
recurrentgemma's PyTorch state dict and in checkpoints: "blocks.0.recurrent_block.rg_lru.a_param" is
tree["blocks"][0]["recurrent_block"]["rg_lru"]["a_param"].

    tree_leaves(tree)            [(dotted path, leaf)], in a stable order
    tree_map(fn, *trees)         a new tree of fn(leaf, ...) over trees of one structure
    unflatten({path: leaf})      the nested tree back from dotted paths
    tree_cast(tree, dtype), num_params(tree)
    to_device(tree, xp), to_host(tree)    every array moved to the GPU (cupy) or to the host (numpy)

Checkpoints are always written from host arrays; the Trainer moves the parameters, AdamW's moments and each
batch with to_device, so training on the GPU runs the same code as on the CPU (docs/gpu.md).
"""

import numpy as np

from minigriffin.xp import is_device_array


def tree_leaves(tree, prefix=""):
    """[(dotted path, array)] for every array in a nested dict / list / tuple, in a stable order."""
    if isinstance(tree, dict):
        return [leaf for key in tree for leaf in tree_leaves(tree[key], f"{prefix}{key}.")]
    if isinstance(tree, (list, tuple)):
        return [leaf for i, sub in enumerate(tree) for leaf in tree_leaves(sub, f"{prefix}{i}.")]
    return [(prefix[:-1], tree)]


def tree_map(fn, *trees):
    """Apply fn leafwise to trees of identical structure (dicts, lists and NamedTuples such as data.Batch),
    returning a new tree."""
    first = trees[0]
    if isinstance(first, dict):
        return {key: tree_map(fn, *(t[key] for t in trees)) for key in first}
    if isinstance(first, list):
        return [tree_map(fn, *items) for items in zip(*trees)]
    if isinstance(first, tuple) and hasattr(first, "_fields"):
        return type(first)(*(tree_map(fn, *items) for items in zip(*trees)))
    return fn(*trees)


def unflatten(flat):
    """Nested tree from {dotted path: leaf}; numeric keys (the block index under "blocks") become list indices."""
    tree = {}
    for path, arr in flat.items():
        node, keys = tree, path.split(".")
        for key, nxt in zip(keys[:-1], keys[1:]):
            key = int(key) if key.isdigit() else key
            if isinstance(node, list):
                while len(node) <= key:
                    node.append(None)
                if node[key] is None:
                    node[key] = [] if nxt.isdigit() else {}
                node = node[key]
            else:
                node = node.setdefault(key, [] if nxt.isdigit() else {})
        last = keys[-1]
        if isinstance(node, list):
            while len(node) <= int(last):
                node.append(None)
            node[int(last)] = arr
        else:
            node[last] = arr
    return tree


def tree_cast(tree, dtype):
    """A copy of the tree with every array cast to dtype."""
    return tree_map(lambda arr: np.asarray(arr).astype(dtype), tree)


def num_params(params):
    """Total number of parameters in a tree."""
    return sum(int(arr.size) for _, arr in tree_leaves(params))


def to_device(tree, xp):
    """Every array leaf of `tree` (dicts, lists, NamedTuples) as an array of module xp (numpy or cupy).
    Non-array leaves are kept."""
    def move(arr):
        if not hasattr(arr, "dtype"):
            return arr
        if xp is np:
            return to_host(arr)
        return xp.asarray(arr)                                         # host -> device copy (or no-op)
    return tree_map(move, tree)


def to_host(tree):
    """Every array leaf of `tree` as a NumPy array (device -> host copy for CuPy arrays)."""
    def move(arr):
        if is_device_array(arr):
            return arr.get()
        return np.asarray(arr) if hasattr(arr, "dtype") else arr
    return tree_map(move, tree)
