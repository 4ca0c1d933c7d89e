"""Paired statistics for the long-context study (Griffin §6.1): the same tokens under two conditions.

A loss curve over positions mixes two things: what the model does with a longer context, and what the text at
those positions is like (the end of a book is not its beginning). Comparing buckets of one curve, or curves of
different models at different positions, cannot tell them apart. Both of the paper's findings are therefore
judged here by paired differences on the *same target tokens*, with a bootstrap interval over documents:

  finding 1 (longer contexts help, past the training length L): each target in [t0, t1) is predicted twice,
      once with the whole document before it and once with the context cut to c tokens (a fresh document
      starting c tokens before t0). cut - full > 0 means the context beyond c helped.
  finding 2 (a model trained at 4L beats one trained at L far out, and is slightly worse early): the loss of
      the 4L model minus the L model, position by position on the same documents, averaged over far positions
      (>= 4L) and over short ones (< L/2).

Per-document, per-position losses are kept as a matrix (documents, positions) with NaN past a document's end,
saved beside the CSVs as .npz so any comparison can be redone without the models.
"""

from pathlib import Path

import numpy as np

from minigriffin.evaluate import position_losses

LEVEL = 0.95             # bootstrap interval coverage
N_BOOT = 4000            # bootstrap resamples of the documents


def save_losses(path, losses, *, name, train_len):
    """Write a document_losses matrix (as float32) with its model's name and training length to an .npz."""
    np.savez_compressed(path, losses=losses.astype(np.float32), name=np.array(name), train_len=np.array(train_len))
    return Path(path)


def load_losses(path):
    """(losses (n_docs, positions) float64, name, train_len) from save_losses' file."""
    with np.load(path, allow_pickle=False) as data:
        return data["losses"].astype(np.float64), str(data["name"]), int(data["train_len"])


def bootstrap_interval(per_document, *, level=LEVEL, n_boot=N_BOOT, seed=0):
    """(mean, low, high): the mean over documents of per-document values and its percentile bootstrap
    interval, resampling documents with replacement. NaN entries (documents that did not reach) are dropped."""
    values = np.asarray(per_document, dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        raise ValueError("no document reaches these positions: nothing to compare")
    if values.size == 1:
        return float(values[0]), float("-inf"), float("inf")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, (n_boot, values.size))].mean(axis=1)     # (n_boot,)
    tail = (1 - level) / 2
    return float(values.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def span_means(losses, lo, hi):
    """(n_docs,) each document's mean loss over positions [lo, hi), NaN for a document that ends before hi."""
    losses = np.asarray(losses)
    if not 0 <= lo < hi <= losses.shape[1]:
        raise ValueError(f"positions [{lo}, {hi}) are outside the {losses.shape[1]} positions evaluated")
    span = losses[:, lo:hi]
    complete = ~np.isnan(span).any(axis=1)
    out = np.full(losses.shape[0], np.nan)
    out[complete] = span[complete].mean(axis=1)
    return out


def paired_difference(first, second, lo, hi, **bootstrap):
    """second - first on the same documents and positions [lo, hi): (mean, low, high) over documents."""
    first, second = np.asarray(first), np.asarray(second)
    if first.shape[0] != second.shape[0]:
        raise ValueError(f"the two loss tables hold {first.shape[0]} and {second.shape[0]} documents: a paired "
                         f"comparison needs the same documents")
    return bootstrap_interval(span_means(second, lo, hi) - span_means(first, lo, hi), **bootstrap)


def cut_context_losses(params, cfg, doc, lo, hi, context, *, chunk_size=512):
    """(hi - lo,) losses of the targets at positions [lo, hi) of doc predicted from only the `context` tokens
    before lo: tokens [lo - context, hi] fed as a fresh document (its first token is position 0)."""
    if not 0 <= context <= lo < hi < len(doc):
        raise ValueError(f"need 0 <= context ({context}) <= lo ({lo}) < hi ({hi}) < document length ({len(doc)})")
    piece = doc[lo - context:hi + 1]
    return position_losses(params, cfg, piece, chunk_size)[context:]


def same_token_test(params, cfg, docs, full_losses, lo, hi, context, *, chunk_size=512, **bootstrap):
    """Finding 1's test: cut - full over targets [lo, hi), per document, as (mean, low, high). Documents that
    end before hi are left out. full_losses: evaluate.document_losses(params, cfg, docs)."""
    per_doc = np.full(len(docs), np.nan)
    for i, doc in enumerate(docs):
        if len(doc) > hi:
            cut = cut_context_losses(params, cfg, doc, lo, hi, context, chunk_size=chunk_size)
            per_doc[i] = cut.mean() - np.mean(full_losses[i, lo:hi])
    return bootstrap_interval(per_doc, **bootstrap)


def verdict(mean, low, high, *, above="helps", below="hurts"):
    """'helps' when the whole interval is above 0, 'hurts' when below, else 'no difference'."""
    if low > 0:
        return above
    if high < 0:
        return below
    return "no difference"


def describe(mean, low, high, unit="nats/byte"):
    """'+0.012 [+0.004, +0.020] nats/byte'."""
    return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}] {unit}".rstrip()
