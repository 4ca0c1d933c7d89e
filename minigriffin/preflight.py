"""Checks a run passes before it starts: it fits in memory, and its books fit the model's vocabulary.

Both refuse with a message naming the sizes, instead of a MemoryError deep inside NumPy (or swapping) for a
typo such as --width=10000000, or an index error in the embedding for a token the model has no row for.
The Trainer runs them before it creates anything in the run folder.
"""

import os

from minigriffin.params import count_params


def training_bytes(model_cfg, train_cfg):
    """A lower bound on the memory one training step needs, from the shapes alone: parameters, gradients and
    AdamW's two moments (4 copies), plus the activations the backward keeps (per token and block, about 12 of
    width D, 12 of lru_width E and 3 of the MLP width F; the logits and their softmax: 3 of vocab size V)."""
    item = 8 if model_cfg.dtype == "float64" else 4
    D, E, F, V = model_cfg.width, model_cfg.lru_width, model_cfg.mlp_expanded_width, model_cfg.vocab_size
    tokens = train_cfg.batch_size * train_cfg.seq_len
    per_token = model_cfg.num_layers * (12 * D + 12 * E + 3 * F) + 3 * V
    return item * (4 * count_params(model_cfg) + tokens * per_token)


def _physical_memory():
    """Bytes of RAM on this machine, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_fits_in_memory(model_cfg, train_cfg):
    """Refuse, naming the sizes, a run that cannot fit in this machine's memory (a typo such as --width=10000000
    would otherwise end in a MemoryError deep inside NumPy, or in swapping)."""
    need, have = training_bytes(model_cfg, train_cfg), _physical_memory()
    if have is not None and need > have:
        raise ValueError(f"this model and batch need at least {need / 2**30:,.1f} GiB for one training step "
                         f"(parameters, gradients, AdamW state and activations) but the machine has "
                         f"{have / 2**30:,.1f} GiB; use a smaller width, batch_size or seq_len")


def check_vocabulary(corpus, model_cfg):
    """Every token of the corpus must be an index into the model's embedding table."""
    for split in (corpus.train, corpus.valid):
        top = int(split.tokens.max()) if split.tokens.size else 0
        if top >= model_cfg.vocab_size:
            raise ValueError(f"the {split.name} books hold token {top} but the model's vocab_size is "
                             f"{model_cfg.vocab_size}: byte tokens need vocab_size=256, a BPE tokenizer "
                             f"its own vocabulary size")
