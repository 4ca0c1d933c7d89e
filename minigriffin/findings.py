"""The verdicts of the long-context study (Griffin §6.1), each a paired comparison with a bootstrap interval.

    finding 1 (extrapolation study): does context beyond the training length help? For each model, targets in
        windows at 2L, 4L and the end of the evaluated length, predicted with the whole document before them
        and with the context cut to `cut` tokens (default L): cut - full, per document (minigriffin.paired).
    finding 2 (train-length study): for each family, the model trained at 4L minus the one trained at L on the
        same documents and positions, far out (>= 4L) and early (< L/2).

Each verdict is "helps", "hurts" or "no difference": whether the 95% interval over documents lies above 0,
below 0, or straddles it (paired.verdict).
"""

import numpy as np

from minigriffin.evaluate import log_buckets
from minigriffin.paired import describe, paired_difference, same_token_test, verdict


def target_windows(train_len, eval_len):
    """[(name, lo, hi)]: targets [2L, 2L + L/2), [4L, 4L + L/2) and the last L/2 positions evaluated."""
    L, half = train_len, max(1, train_len // 2)
    last = eval_len - 1                               # positions 0 .. eval_len - 2 have a loss
    windows = [(f"{k}L", k * L, k * L + half) for k in (2, 4) if k * L + half < last]
    windows.append((f"end ({last - half}-{last - 1})", last - half, last))
    return windows


def context_findings(params, cfg, docs, losses, label, train_len, eval_len, *, cut):
    """Finding 1 for one model: one record per target window (cut - full; above 0: the far context helped)."""
    records = []
    for name, lo, hi in target_windows(train_len, eval_len):
        if lo < cut or not any(len(doc) > hi for doc in docs):
            continue                                   # no context to cut, or no document reaches the targets
        mean, low, high = same_token_test(params, cfg, docs, losses, lo, hi, cut)
        records.append({"finding": 1, "model": label, "targets": name, "positions": [lo, hi], "cut": cut,
                        "comparison": "cut - full", "mean": mean, "low": low, "high": high,
                        "verdict": verdict(mean, low, high, above="longer context helps",
                                           below="longer context hurts")})
    return records


def context_use(params, cfg, docs, losses, train_len, eval_len, cuts=None):
    """How far back a model uses its context, inside and past its training length L: cut - full at targets
    [L/2, L) (inside) and in the target_windows past L, for each cut c (default 4, 16, 64, L/2, L; only cuts
    that leave context to cut). A curve that reaches 0 at c means nothing beyond c tokens back is used.
    Returns {"cuts": [...], "windows": [...], "cells": {(cut, window name): (mean, low, high)}}."""
    L = train_len
    cuts = sorted({c for c in (cuts or (4, 16, 64, L // 2, L)) if c >= 1})
    windows = [("L/2..L", L // 2, L)] + [w for w in target_windows(L, eval_len) if w[1] > L]
    cells = {}
    for c in cuts:
        for name, lo, hi in windows:
            if c < lo and any(len(doc) > hi for doc in docs):
                cells[(c, name)] = same_token_test(params, cfg, docs, losses, lo, hi, c)
    return {"cuts": cuts, "windows": [w[0] for w in windows], "cells": cells}


def context_use_markdown(name, use, unit="nats/byte"):
    """One row per cut, one column per target window: 'cut - full [95% interval]' (above 0: the context
    beyond the cut helped there). unit: "nats/token" for a run on BPE tokens."""
    lines = [f"context use of {name} (cut - full, {unit}, 95% interval over documents)",
             "| cut | " + " | ".join(use["windows"]) + " |", "|---|" + "---|" * len(use["windows"])]
    for c in use["cuts"]:
        cells = [describe(*use["cells"][(c, w)], unit="") if (c, w) in use["cells"] else "-" for w in use["windows"]]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def train_length_findings(losses, runs, L, eval_len):
    """Finding 2: for each family with models at L and 4L, 4L minus L far out and early (below 0: 4L better)."""
    by_family = {}
    for label, family, train_len, _ in runs:
        by_family.setdefault(family, {})[train_len] = label
    records = []
    for family, labels in by_family.items():
        if L not in labels or 4 * L not in labels:
            continue
        short, long = losses[labels[L]], losses[labels[4 * L]]
        for name, lo, hi in ((f"far (>= 4L = {4 * L})", 4 * L, eval_len - 1), (f"early (< L/2 = {L // 2})", 0, L // 2)):
            mean, low, high = paired_difference(short, long, lo, hi)
            records.append({"finding": 2, "model": f"{labels[4 * L]} - {labels[L]}", "targets": name,
                            "positions": [lo, hi], "comparison": "4L - L", "mean": mean, "low": low,
                            "high": high, "verdict": verdict(mean, low, high, above="4L worse", below="4L better")})
    return records


def bucket_differences(losses, runs, L, max_len):
    """For each family with models at L and 4L: (label, lo, hi, mean, low, high) arrays over the log position
    buckets of evaluate.log_buckets, the 4L model minus the L model on the same documents and positions, with
    95% bootstrap intervals (for the panel beneath the loss curves)."""
    by_family = {}
    for label, family, train_len, _ in runs:
        by_family.setdefault(family, {})[train_len] = label
    panels = []
    lo_all, hi_all = log_buckets(max_len)
    for family, labels in by_family.items():
        if L not in labels or 4 * L not in labels:
            continue
        rows = [(lo, hi, *_bucket_difference(losses[labels[L]], losses[labels[4 * L]], lo, hi))
                for lo, hi in zip(lo_all, hi_all)]
        lo, hi, mean, low, high = (np.array(col) for col in zip(*rows))
        panels.append((f"{family}: {4 * L} minus {L}", lo, hi, mean, low, high))
    return panels


def context_panel(records):
    """Finding 1's records (context_findings) as panels for the figure: per model, (label, lo, hi, mean, low,
    high) arrays over its target windows, cut - full with the 95% interval."""
    by_model = {}
    for r in records:
        by_model.setdefault(r["model"], []).append(r)
    panels = []
    for model, rows in by_model.items():
        rows = sorted(rows, key=lambda r: r["positions"][0])
        lo, hi, mean, low, high = (np.array(col) for col in zip(*((r["positions"][0], r["positions"][1], r["mean"],
                                                                   r["low"], r["high"]) for r in rows)))
        panels.append((f"{model}: cut to {rows[0]['cut']} minus full", lo, hi, mean, low, high))
    return panels


def _bucket_difference(first, second, lo, hi):
    """paired_difference, or NaNs where no document covers the whole bucket."""
    try:
        return paired_difference(first, second, lo, hi)
    except ValueError:
        return (np.nan, np.nan, np.nan)


def findings_markdown(records, unit="nats/byte"):
    """The verdicts as a Markdown table (one row per comparison); unit: "nats/token" for BPE runs."""
    lines = ["| finding | comparison | targets | difference, 95% interval | verdict |", "|---|---|---|---|---|"]
    for r in records:
        what = f"{r['model']}: {r['comparison']}" + (f" (cut to {r['cut']})" if "cut" in r else "")
        difference = describe(r["mean"], r["low"], r["high"], unit)
        lines.append(f"| {r['finding']} | {what} | {r['targets']} | {difference} | {r['verdict']} |")
    return "\n".join(lines)
