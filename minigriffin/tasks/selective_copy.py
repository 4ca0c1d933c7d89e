"""Selective copying (Griffin section 6.2 and Appendix H; Gu and Dao 2023, "Mamba", section 4.1.1 / App. E.1).

A row holds a few data tokens at random positions in a sea of noise tokens, then a copy marker, after which
the model must write the data tokens in their order. The spacing is random, so a fixed time-invariant filter
cannot copy them: the model has to select what to keep by content. Token ids follow mad-lab's
`generate_copying_instance(selective=True)` (athms/mad-lab, mad/data/instances.py): the copy marker is V - 1,
the noise ("blank") token is V - 2, and data tokens are drawn uniformly, with repeats, from [0, V - 2).

The answer is teacher-forced next-token prediction (minigriffin.tasks.common): the data tokens follow the
marker as inputs too, so the target at the marker is d_1, at d_1 it is d_2, ..., and the last data token is
only a target. (mad-lab instead feeds N more noise tokens after the marker and asks for d_1..d_N there.)

    position   0  1  2  3  4  5  6  7  8  9 10 11 12 13     (T = 14, N = 3 data tokens a b c;
    tokens     .  .  a  .  .  .  b  .  c  .  .  >  a  b      . noise, > copy marker)
    targets    .  a  .  .  .  b  .  c  .  .  >  a  b  c
    mask       0  0  0  0  0  0  0  0  0  0  0  1  1  1

So with seq_len = T the data sit at N distinct positions of the first T - N, drawn uniformly (mad-lab's
np.insert never puts noise after the last data token; here any slot may be the last one), the marker is at
T - N, and the last N positions are scored. Griffin: V = 16, N = 16, T = 1,024 (Mamba: T = 4,096).
"""

import numpy as np

from minigriffin.tasks.common import batch_from_stream, check_int, check_rng

# The paper's setting (Griffin Appendix H): vocabulary 16 with the noise token, 16 data tokens, length 1,024,
# Griffin's local-attention window 512.
GRIFFIN_SELECTIVE_COPY = {"vocab_size": 16, "num_data_tokens": 16, "seq_len": 1024, "window": 512}


def copy_marker(vocab_size):
    """The copy marker's token id: vocab_size - 1 (mad-lab's copy_token)."""
    return vocab_size - 1


def noise_token(vocab_size):
    """The noise token's id: vocab_size - 2 (mad-lab's blank_token)."""
    return vocab_size - 2


def selective_copy_batch(rng, batch_size, seq_len, *, vocab_size=16, num_data_tokens=16):
    """A Batch of selective-copying rows (layout in the module docstring).

    rng: numpy.random.Generator (the same seed gives the same arrays); seq_len = T, the row length, which must
    hold N data tokens, the marker and N - 1 answer inputs beside them: T >= 2 N.
    Returns minigriffin.data.Batch of (B, T) arrays; mask scores exactly the N answer positions T-N..T-1."""
    check_rng(rng)
    B = check_int("batch_size", batch_size, 1)
    V = check_int("vocab_size", vocab_size, 3)              # at least one data symbol beside noise and marker
    N = check_int("num_data_tokens", num_data_tokens, 1)
    T = check_int("seq_len", seq_len, 2)
    if T < 2 * N:
        raise ValueError(f"seq_len={T} is too short for num_data_tokens={N}: the first seq_len - N positions "
                         f"hold the N data tokens among noise, then come the marker and the answers, so "
                         f"seq_len must be >= 2 * num_data_tokens = {2 * N}")
    P = T - N                                               # prefix length: data among noise
    data = rng.integers(0, V - 2, size=(B, N))              # (B, N) tokens to copy
    # N distinct slots of the prefix per row, uniform over all subsets: the first N of a random permutation.
    slots = np.sort(rng.random((B, P)).argsort(axis=1)[:, :N], axis=1)             # (B, N) increasing
    stream = np.full((B, T + 1), noise_token(V), dtype=np.int64)                   # (B, T + 1)
    stream[np.arange(B)[:, None], slots] = data                                    # data among noise
    stream[:, P] = copy_marker(V)
    stream[:, P + 1:] = data                                                       # the answer, in order
    scored = np.zeros((B, T), dtype=bool)                                          # (B, T)
    scored[:, P:] = True                                    # targets at P..T-1 are d_1..d_N
    return batch_from_stream(stream, scored)
