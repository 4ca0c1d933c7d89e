"""Loss per token position on long documents (Griffin §6.1, Figure 5): `minigriffin eval-length`.

Each validation book is fed as ONE document (segment_pos = 0, 1, 2, ...) of up to `max_len` tokens, in
chunks that carry the recurrent state and the attention window cache from one chunk to the next
(minigriffin.inference.forward_chunk). Memory therefore does not grow with max_len for Hawk and Griffin;
the global-attention baseline keeps every key of the document (its window is the whole context), so its
cache grows linearly. The loss at position t is the cross-entropy of predicting token t+1 from tokens 0..t.

Positions are grouped into log-spaced buckets; the output is the mean loss per bucket over books, its
spread (standard deviation of the per-book bucket means) and how many documents reached the bucket (a book
shorter than max_len counts only in the buckets it covers, so later buckets can have fewer documents).

Notebook: notebooks/06_long_context.ipynb
"""

import csv
from pathlib import Path
from typing import NamedTuple

import numpy as np

from minigriffin.inference import forward_chunk, init_state
from minigriffin.tree import to_host
from minigriffin.xp import array_namespace


class LengthCurve(NamedTuple):
    name: str                 # label of the run
    train_len: int            # sequence length the model was trained at (marked on the plot)
    bucket_lo: np.ndarray     # (K,) first position of each bucket
    bucket_hi: np.ndarray     # (K,) one past the last position
    mean: np.ndarray          # (K,) mean loss over books (nats per byte)
    spread: np.ndarray        # (K,) standard deviation over documents of the per-document bucket mean
    documents: np.ndarray     # (K,) int: documents that reached each bucket (mean, spread are over these)


def standard_error(curve):
    """(K,) standard error of each bucket's mean: spread / sqrt(documents that reached the bucket)."""
    return curve.spread / np.sqrt(np.maximum(np.asarray(curve.documents), 1))


def position_losses(params, cfg, tokens, chunk_size=512):
    """Per-position loss for one document. tokens: (N,) ints -> (N-1,) float64 losses, computed chunk by chunk
    on the device the parameters are on (NumPy, or CuPy on a GPU); the losses come back to the host."""
    N = len(tokens)
    if N < 2:
        raise ValueError(f"a document needs at least 2 tokens to score, got {N}")
    xp = array_namespace(params["embedder"]["input_embedding"])
    state = init_state(cfg, 1, xp)
    losses = np.empty(N - 1)
    for start in range(0, N - 1, chunk_size):
        stop = min(start + chunk_size, N - 1)
        chunk = xp.asarray(np.asarray(tokens[start:stop], dtype=np.int64)[None])    # (1, C)
        positions = xp.arange(start, stop, dtype=np.int64)[None]              # (1, C) one document
        logits, state = forward_chunk(params, chunk, positions, cfg, state)   # (1, C, V)
        logits = to_host(logits[0]).astype(np.float64)                        # (C, V)
        shifted = logits - logits.max(axis=-1, keepdims=True)
        log_z = np.log(np.exp(shifted).sum(axis=-1))                          # (C,)
        targets = np.asarray(tokens[start + 1:stop + 1], dtype=np.int64)      # (C,)
        losses[start:stop] = log_z - shifted[np.arange(stop - start), targets]
    return losses


def log_buckets(max_len, first=16, per_octave=2):
    """Bucket edges [0, first, ..., max_len) growing geometrically (per_octave buckets per doubling)."""
    edges = [0, first]
    while edges[-1] < max_len - 1:
        edges.append(min(max_len - 1, int(round(edges[-1] * 2 ** (1 / per_octave)))))
        if edges[-1] == edges[-2]:
            edges[-1] += 1
    return np.array(edges[:-1]), np.array(edges[1:])


def documents(split, max_len, segments_per_book=1, max_books=None):
    """The token arrays to evaluate: from each book, up to `segments_per_book` consecutive, non-overlapping
    pieces of max_len tokens, starting at the book's beginning. Each piece is scored as one document (its
    first token is position 0); with several pieces per book the curve averages over far more text than the
    handful of validation books alone would give, while every piece is still a long stretch of one book."""
    starts = split.doc_starts
    n_books = len(starts) - 1 if max_books is None else min(max_books, len(starts) - 1)
    docs = []
    for b in range(n_books):
        for k in range(segments_per_book):
            lo = starts[b] + k * max_len
            if lo + 1 >= starts[b + 1] or (k > 0 and lo + max_len > starts[b + 1]):
                break                       # only the first piece of a book may be shorter than max_len
            docs.append(split.tokens[lo:min(starts[b + 1], lo + max_len)])
    return docs


def document_losses(params, cfg, docs, *, chunk_size=512, progress=None):
    """(n_docs, max_len - 1) float64: row i the per-position losses of docs[i], NaN past its end."""
    width = max(len(doc) for doc in docs) - 1
    table = np.full((len(docs), width), np.nan)
    for i, doc in enumerate(docs):
        losses = position_losses(params, cfg, doc, chunk_size)
        table[i, :len(losses)] = losses
        if progress:
            progress(i + 1, len(docs))
    return table


def length_curve(params, cfg, split, max_len, *, name="", train_len=0, chunk_size=512, max_books=None,
                 segments_per_book=1, progress=None):
    """Evaluate the books of `split` (a data.TokenSplit) up to max_len tokens each (see `documents` for
    segments_per_book); returns a LengthCurve. A document shorter than max_len counts in the buckets it reaches."""
    docs = documents(split, max_len, segments_per_book, max_books)
    losses = document_losses(params, cfg, docs, chunk_size=chunk_size, progress=progress)
    return curve_from_losses(losses, max_len, name=name, train_len=train_len)


def curve_from_losses(losses, max_len, *, name="", train_len=0):
    """A LengthCurve from a document_losses table: each document's mean per log bucket it reaches, then the
    mean and spread over the documents that reached each bucket."""
    lo, hi = log_buckets(max_len)
    n = losses.shape[1]
    table = np.array([[row[l:h].mean() if h <= n and not np.isnan(row[h - 1]) else np.nan
                       for l, h in zip(lo, hi)] for row in losses])           # (books, K)
    reached = np.sum(~np.isnan(table), axis=0)
    keep = reached > 0
    mean = np.nanmean(table[:, keep], axis=0)
    spread = np.nanstd(table[:, keep], axis=0)
    return LengthCurve(name, train_len, lo[keep], hi[keep], mean, spread, reached[keep].astype(np.int64))


def write_csv(curve, path):
    """One row per bucket: first position, last position, mean loss, spread over documents, and the number
    of documents that reached that bucket."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["position_from", "position_to", "mean_loss", "spread_over_documents", "documents"])
        for l, h, m, s, n in zip(curve.bucket_lo, curve.bucket_hi, curve.mean, curve.spread, curve.documents):
            writer.writerow([int(l), int(h) - 1, f"{m:.5f}", f"{s:.5f}", int(n)])
    return Path(path)


def read_csv(path, name=None, train_len=0):
    """A LengthCurve from a write_csv file (each row's own document count)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return LengthCurve(name or Path(path).stem, train_len,
                       np.array([int(r["position_from"]) for r in rows], dtype=np.int64),
                       np.array([int(r["position_to"]) + 1 for r in rows], dtype=np.int64),
                       np.array([float(r["mean_loss"]) for r in rows]),
                       np.array([float(r["spread_over_documents"]) for r in rows]),
                       np.array([int(r["documents"]) for r in rows], dtype=np.int64))


def plot_curves(curves, path, title="Loss per token position (held-out books, one document each)", paired=None):
    """Several runs on one figure: log-scaled positions, a band of +-1 standard error of the mean over
    documents (spread / sqrt(documents), with each bucket's own document count), training lengths marked.
    paired: optional [(label, lo, hi, mean, low, high)] arrays per bucket (findings.bucket_differences),
    drawn in a panel beneath with their 95% intervals: paired differences on the same tokens."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(8, 7.5 if paired else 5))   # no pyplot: never switches a notebook's backend
    FigureCanvasAgg(fig)
    ax, below = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1]) if paired else (fig.subplots(), None)
    marked = set()
    for i, c in enumerate(curves):
        color = f"C{i % 10}"
        centre = np.sqrt(np.maximum(c.bucket_lo, 1) * c.bucket_hi)
        ax.plot(centre, c.mean, "o-", color=color, ms=3, label=c.name)
        sem = standard_error(c)                                        # (K,)
        ax.fill_between(centre, c.mean - sem, c.mean + sem, color=color, alpha=0.15)
        if c.train_len and c.train_len not in marked:
            ax.axvline(c.train_len, color="gray", ls="--", lw=1)
            ax.text(c.train_len, ax.get_ylim()[1], f" trained at {c.train_len}", rotation=90, va="top",
                    fontsize=8, color="gray")
            marked.add(c.train_len)
    ax.set_xscale("log", base=2)
    ax.set_ylabel("cross-entropy (nats per byte)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    if paired:
        for i, (label, lo, hi, mean, low, high) in enumerate(paired):
            centre = np.sqrt(np.maximum(lo, 1) * hi)
            below.plot(centre, mean, "o-", ms=3, color=f"C{i % 10}", label=label)
            below.fill_between(centre, low, high, color=f"C{i % 10}", alpha=0.2)
        below.axhline(0, color="black", lw=0.8)
        if max((np.nanmax(np.abs(np.r_[low, high])) for *_, low, high in paired), default=0) > 0.2:
            below.set_yscale("symlog", linthresh=0.01)      # a breakdown of 1-2 nats beside effects of 0.01
        below.set_ylabel("paired difference\n(nats per byte)")
        below.grid(alpha=0.3, which="both")
        below.legend(fontsize=8)
    (below or ax).set_xlabel("token position in the document (bytes); band: +-1 standard error over documents"
                             if not paired else "token position (bytes); bands: +-1 standard error over documents "
                             "(top), 95% bootstrap interval (bottom)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


def markdown_table(curves, positions):
    """Mean loss of each run at the buckets containing the given positions, as a Markdown table."""
    header = "| run | " + " | ".join(f"pos {p}" for p in positions) + " |"
    lines = [header, "|---|" + "---|" * len(positions)]
    for c in curves:
        cells = []
        for p in positions:
            idx = np.nonzero((c.bucket_lo <= p) & (p < c.bucket_hi))[0]
            cells.append(f"{c.mean[idx[0]]:.3f}" if len(idx) else "-")
        lines.append(f"| {c.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _n_documents(n):
    return f"{int(n)} document" + ("" if int(n) == 1 else "s")


def bucket_summary(curve):
    """A short human-readable summary: loss in the first and the last bucket, each with its document count."""
    return (f"{curve.name}: {curve.mean[0]:.3f} at positions {curve.bucket_lo[0]}-{curve.bucket_hi[0] - 1} "
            f"({_n_documents(curve.documents[0])}), {curve.mean[-1]:.3f} at {curve.bucket_lo[-1]}-"
            f"{curve.bucket_hi[-1] - 1} ({_n_documents(curve.documents[-1])})")


__all__ = ["LengthCurve", "standard_error", "position_losses", "document_losses", "log_buckets", "length_curve",
           "curve_from_losses", "write_csv",
           "read_csv", "plot_curves", "markdown_table", "bucket_summary"]
