"""Induction heads (Griffin section 6.2 and Appendix H; Fu, Dao et al. 2023, "Hungry Hungry Hippos", and
Olsson et al. 2022, "In-context learning and induction heads").

Random tokens, with one special token at a random position; the row ends with the special token again, and
the model must predict the token that followed its first occurrence. It is recall of one token from anywhere
in the context, so it tests how far a model can look back: Griffin trains at length 256 and evaluates at
lengths far beyond (its Figure 6b), which here is just a larger seq_len.

The layout follows H3's `generate_induction_head` (HazyResearch/safari, src/dataloaders/synthetics.py) with
one trigger: the special token is V - 1 (the same id as the selective-copy marker) and occurs nowhere else;
every other token is uniform over [0, V - 1).

    position   0  1  2  3  4  5  6  7  8  9     (T = 10, V = 16: * is the special token 15,
    tokens     3  9  0  *  7  4  2  8  5  *      7 the token to recall)
    targets    9  0  *  7  4  2  8  5  *  7
    mask       0  0  0  0  0  0  0  0  0  1

The first special token's position p is uniform over [0, T - 3], so the recalled token (at p + 1 <= T - 2) is
always a random symbol and never the final special token. Only position T - 1 is scored. The other targets are
the next random tokens, which are unpredictable: scoring them would only add noise to the loss.
"""

import numpy as np

from minigriffin.tasks.common import batch_from_stream, check_int, check_rng

# The paper's setting (Griffin Appendix H): vocabulary 16, training length 256, Griffin's window 128; the
# evaluation lengths of Figure 6b reach far past 256 (Mamba's Appendix E.1 tests 2^6 ... 2^20).
GRIFFIN_INDUCTION = {"vocab_size": 16, "seq_len": 256, "window": 128}


def special_token(vocab_size):
    """The special (trigger) token's id: vocab_size - 1."""
    return vocab_size - 1


def induction_batch(rng, batch_size, seq_len, *, vocab_size=16):
    """A Batch of induction-head rows (layout in the module docstring).

    rng: numpy.random.Generator (the same seed gives the same arrays); seq_len = T >= 3 (the special token,
    the token to recall, the final special token). Returns minigriffin.data.Batch of (B, T) arrays whose mask
    scores only position T - 1, where the target is the recalled token."""
    check_rng(rng)
    B = check_int("batch_size", batch_size, 1)
    V = check_int("vocab_size", vocab_size, 3)              # the special token and at least two symbols
    T = check_int("seq_len", seq_len, 3)
    special = special_token(V)
    rows = np.arange(B)                                                            # (B,)
    stream = rng.integers(0, V - 1, size=(B, T + 1))                               # (B, T + 1) no special
    p = rng.integers(0, T - 2, size=B)                                             # (B,) in [0, T - 3]
    stream[rows, p] = special
    stream[:, T - 1] = special
    stream[:, T] = stream[rows, p + 1]                                             # the answer
    scored = np.zeros((B, T), dtype=bool)                                          # (B, T)
    scored[:, T - 1] = True
    return batch_from_stream(stream, scored)
