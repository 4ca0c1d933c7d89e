"""What the synthetic tasks share: argument checks, a Batch from a token stream, and answer accuracy.

Every task builds one token stream per row, S: (B, T + 1), and reads it as next-token prediction exactly as the
books do (minigriffin.data.Batch): tokens = S[:, :-1], targets = S[:, 1:], segment_pos = 0..T-1 (one document
per row), and mask = the positions whose target is an answer token. The trainer's loss is the mean
cross-entropy over mask == True, so it sees the answers and nothing else.

Accuracy is measured with teacher forcing: the logits of one forward pass over the whole row, argmax at every
scored position. For an answer of K consecutive tokens a_1..a_K that follow the prompt directly (true of all
three tasks), "all K argmaxes right under teacher forcing" is the same event as "greedy decoding of K tokens
from the prompt writes a_1..a_K": greedy's first step sees exactly the teacher-forced prefix; if it writes
a_1, its second step again sees the teacher-forced prefix, and so on; at the first wrong token both verdicts
are "wrong". This holds for any causal model with the same argmax tie-break, given the logits agree (a model run
token by token may differ from one whole-row pass in rounding, which can flip a near-tie). It is the exact
match of the first K generated tokens: a check on the generated line, as in Jelassi et al. 2024, also asks
that the model stop after them. Per-token accuracy has no such greedy equivalent: under greedy decoding a
wrong token changes every later prefix.
"""

import numbers

import numpy as np

from minigriffin.data import Batch
from minigriffin.tree import to_host


def check_rng(rng):
    """TypeError unless rng is a numpy.random.Generator (np.random.default_rng(seed))."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")


def check_int(name, value, minimum):
    """value as a Python int; ValueError naming the argument unless it is an integer >= minimum."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def batch_from_stream(stream, scored):
    """Next-token Batch of a stream. stream: (B, T + 1) ints; scored: (B, T) bool, True where the target
    (the stream's next token) is an answer token."""
    B, T1 = stream.shape
    assert scored.shape == (B, T1 - 1), (scored.shape, stream.shape)
    stream = stream.astype(np.int64, copy=False)                                   # (B, T + 1)
    segment_pos = np.broadcast_to(np.arange(T1 - 1, dtype=np.int64), (B, T1 - 1)).copy()   # (B, T)
    return Batch(tokens=stream[:, :-1].copy(), targets=stream[:, 1:].copy(),       # (B, T), (B, T)
                 segment_pos=segment_pos, mask=scored.astype(bool, copy=True))     # (B, T), (B, T)


def _predictions(logits, batch):
    """argmax of logits (B, T, V) as a NumPy (B, T) array, after checking it matches the batch."""
    B, T = batch.targets.shape
    if getattr(logits, "ndim", None) != 3 or tuple(logits.shape[:2]) != (B, T):
        raise ValueError(f"logits must have shape ({B}, {T}, V) to match the batch, "
                         f"got {tuple(getattr(logits, 'shape', ()))}")
    return to_host(logits.argmax(axis=-1))                                         # (B, T)


def token_accuracy(logits, batch):
    """Fraction of scored answer tokens whose argmax logit is the target (teacher forcing).
    logits: (B, T, V); batch: a task Batch. Returns a float in [0, 1]."""
    correct = _predictions(logits, batch) == batch.targets                         # (B, T)
    n = int(batch.mask.sum())
    if n == 0:
        raise ValueError("batch.mask scores no position: there is no answer to measure")
    return float(correct[batch.mask].sum() / n)


def row_token_accuracy(logits, batch):
    """Per row: the fraction of its scored answer tokens whose argmax is the target (teacher forcing).
    logits: (B, T, V) -> (B,) float64, the unit that paired comparisons resample (minigriffin.paired)."""
    correct = _predictions(logits, batch) == batch.targets                         # (B, T)
    per_row = batch.mask.sum(axis=1)                                               # (B,)
    if not per_row.all():
        raise ValueError("a row of batch.mask scores no position: its accuracy is undefined")
    return (correct & batch.mask).sum(axis=1) / per_row                            # (B,)


def exact_match(logits, batch):
    """Per row: are all its scored answer tokens the argmax (teacher forcing)? Equal to greedy decoding
    getting the whole answer right (module docstring). logits: (B, T, V) -> (B,) bool."""
    correct = _predictions(logits, batch) == batch.targets                         # (B, T)
    if not batch.mask.any(axis=1).all():
        raise ValueError("a row of batch.mask scores no position: its exact match is undefined")
    return (correct | ~batch.mask).all(axis=1)                                     # (B,)


def exact_match_accuracy(logits, batch):
    """Fraction of rows whose whole answer is right (exact_match averaged over the batch): a float in [0, 1]."""
    return float(exact_match(logits, batch).mean())
