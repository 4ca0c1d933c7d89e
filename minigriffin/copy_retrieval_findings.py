"""The copy and retrieval study's verdicts: each of Figure 6's claims as a paired comparison with an interval.

Every model of a task answers the same held-out rows (minigriffin.copy_retrieval draws them once per task), so
two models are compared row by row: the difference of their per-row accuracies, averaged over rows, with a 95%
percentile bootstrap interval resampling rows (minigriffin.paired.bootstrap_interval). What a row's accuracy is
depends on where the claim is read:

    learning   selective copying, Figure 6a: a row's mean per-token accuracy over every held-out evaluation
               during training (step 0 left out): the area under its learning curve, so "learns faster" is a
               number and not a reading of two curves by eye
    final      selective copying: a row's exact match after the last step
    beyond     induction heads, Figure 6b: a row's exact match at each evaluation length past the training
               length L (2L, 4L and the longest)
    at L       phonebook, Figure 6c: exact match on books of the longest training size
    window     phonebook: exact match on the longest books that fit inside Griffin's window
    past L     phonebook: exact match on the longest books evaluated, past the training lengths

A claim holds ("yes") when the whole interval has the paper's sign, fails ("no") when the whole interval has
the other sign, and is "not shown" when the interval covers 0. A claim of no difference ("about as fast")
holds when the interval covers 0, which a small sample makes easy: read its width. CG-LRU rows have no claim
in the paper (Appendix B reports only that complex recurrences did not help language modelling), nor do the
Conv1D ablation's ("-noconv", run only when asked for).
"""

import numpy as np

from minigriffin.paired import bootstrap_interval, describe

# (task, where, (first, second), the paper's sign of second - first (None: no claim), the paper's claim)
CLAIMS = [
    ("selective-copy", "learning", ("hawk", "griffin"), +1, "Hawk learns far more slowly than Griffin"),
    ("selective-copy", "learning", ("hawk", "mqa"), +1, "Hawk learns far more slowly than the Transformer"),
    ("selective-copy", "learning", ("mqa", "griffin"), 0, "Griffin learns about as fast as the Transformer"),
    ("selective-copy", "final", ("mqa", "griffin"), 0, "Griffin ends level with the Transformer (in the paper "
                                                       "both solve it: read their accuracies)"),
    ("selective-copy", "learning", ("hawk", "hawk-cg"), None, "(none) the CG-LRU in Hawk"),
    ("selective-copy", "learning", ("griffin", "griffin-cg"), None, "(none) the CG-LRU in Griffin"),
    ("induction", "beyond", ("mqa", "hawk"), +1, "the Transformer fails past L; Hawk extrapolates"),
    ("induction", "beyond", ("mqa", "griffin"), +1, "the Transformer fails past L; Griffin extrapolates"),
    ("induction", "beyond", ("hawk", "hawk-cg"), None, "(none) the CG-LRU in Hawk"),
    ("induction", "beyond", ("griffin", "griffin-cg"), None, "(none) the CG-LRU in Griffin"),
    ("phonebook", "window", ("hawk", "griffin"), +1, "Griffin retrieves inside its window; Hawk only from tiny books"),
    ("phonebook", "at L", ("griffin", "mqa"), +1, "the Transformer retrieves up to its training length, "
                                                  "Griffin degrades past its window"),
    ("phonebook", "at L", ("hawk", "mqa"), +1, "the Transformer retrieves up to its training length; Hawk does not"),
    ("phonebook", "past L", ("mqa", "griffin"), +1, "past the Transformer's training length Griffin is better"),
    # The Conv1D ablation (--model griffin-noconv): does retrieval need the Conv1D's view of the previous tokens?
    ("phonebook", "window", ("griffin-noconv", "griffin"), None, "(none) Griffin's Conv1D (width 4 against 1)"),
    ("phonebook", "at L", ("griffin-noconv", "griffin"), None, "(none) Griffin's Conv1D (width 4 against 1)"),
    ("phonebook", "past L", ("griffin-noconv", "griffin"), None, "(none) Griffin's Conv1D (width 4 against 1)"),
    ("induction", "beyond", ("griffin-noconv", "griffin"), None, "(none) Griffin's Conv1D (width 4 against 1)"),
]


def _points(task_result, where):
    """[(label of the point, {family: (rows,) per-row values})] at which a claim of kind `where` is read."""
    models = {m["family"]: m for m in task_result["models"]}
    if where == "learning":
        return [("mean over training", {f: np.mean([c["row_token"] for c in m["curve"] if c["step"] > 0], axis=0)
                                        for f, m in models.items()})]
    if where == "final":
        return [(f"step {task_result['settings']['steps']}",
                 {f: np.asarray(m["curve"][-1]["row_exact"], float) for f, m in models.items()})]
    lengths = [p["length"] for p in next(iter(models.values()))["lengths"]]
    L = task_result["train_len"]
    if where == "beyond":
        past = [n for n in lengths if n > L]
        picks = sorted({n for n in past if n in (2 * L, 4 * L)} | set(past[-1:]))
    elif where == "at L":
        picks = [n for n in lengths if n == L]
    elif where == "window":
        window = next((m["window"] for m in models.values() if m["window"]), None)
        inside = [n for n in lengths if window and n <= window]
        picks = inside[-1:] or lengths[:1]
    else:                                                  # "past L"
        picks = [n for n in lengths if n > L][-1:]
    points = []
    for n in picks:
        at = {f: np.asarray(next(p for p in m["lengths"] if p["length"] == n)["row_exact"], float)
              for f, m in models.items()}
        entries = next(p for p in next(iter(models.values()))["lengths"] if p["length"] == n)["entries"]
        points.append((f"length {n}" + (f" ({entries} entries)" if entries else "") + _multiple(n, L), at))
    return points


def _multiple(n, L):
    return " = L" if n == L else f" = {n // L}L" if n % L == 0 and n > L else ""


def holds(sign, low, high):
    """'yes', 'no' or 'not shown': does the interval [low, high] of second - first show the paper's sign?"""
    if sign is None:
        return "no claim"
    if sign == 0:
        return "yes" if low <= 0 <= high else "no"
    if sign * low > 0 and sign * high > 0:
        return "yes"
    if sign * low < 0 and sign * high < 0:
        return "no"
    return "not shown"


def copy_retrieval_findings(report):
    """One record per claim and point for the tasks the report holds: the two models' accuracies, the paired
    difference second - first (mean, low, high) and whether it shows the paper's claim."""
    records = []
    for task, where, (first, second), sign, claim in CLAIMS:
        result = report["tasks"].get(task)
        if result is None or not {first, second} <= {m["family"] for m in result["models"]}:
            continue
        for point, rows in _points(result, where):
            mean, low, high = bootstrap_interval(rows[second] - rows[first])
            records.append({"task": task, "where": point, "first": first, "second": second, "claim": claim,
                            "first_accuracy": float(rows[first].mean()), "second_accuracy": float(rows[second].mean()),
                            "rows": int(rows[first].size), "difference": [mean, low, high],
                            "holds": holds(sign, low, high)})
    return records


def findings_markdown(records, names):
    """The verdicts as a Markdown table; names: family -> display name."""
    lines = ["| task | the paper's claim | read at | second - first (95% interval) | holds here? |",
             "|---|---|---|---|---|"]
    for r in records:
        a, b = names.get(r["first"], r["first"]), names.get(r["second"], r["second"])
        lines.append(f"| {r['task']} | {r['claim']} | {r['where']} | {b} {r['second_accuracy']:.2f} - {a} "
                     f"{r['first_accuracy']:.2f} = {describe(*r['difference'], unit='')} | {r['holds']} |")
    return "\n".join(lines) + "\n"


def seeds_markdown(reports, names):
    """The verdicts of runs that differ only in their seed, side by side: per claim and point, each seed's
    paired difference with its interval (each over that seed's own held-out rows and trained models), and
    whether the seeds agree: every interval above 0, every one below, or every one covering 0 (for a claim,
    the same verdict). reports: the runs' JSON dicts; names: family -> display name. A point missing from any
    run is left out; the intervals are not pooled (the models differ between seeds, so rows of two seeds are
    not pairs)."""
    seeds = [r["seed"] for r in reports]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"the runs must have different seeds, got {seeds}")
    keyed = [{(f["task"], f["claim"], f["where"], f["first"], f["second"]): f for f in r["findings"]} for r in reports]
    lines = ["| task | the paper's claim | read at: second - first | " + " | ".join(f"seed {s}" for s in seeds)
             + " | seeds agree? |", "|---|---|---|" + "---|" * len(seeds) + "---|"]
    for key in keyed[0]:
        if not all(key in k for k in keyed[1:]):
            continue
        found = [k[key] for k in keyed]
        task, claim, where, first, second = key
        sides = {"above 0" if low > 0 else "below 0" if high < 0 else "covers 0"
                 for _, low, high in (f["difference"] for f in found)}
        cells = [f"{describe(*f['difference'], unit='')} ({f['holds']})" for f in found]
        lines.append(f"| {task} | {claim} | {where}: {names.get(second, second)} - {names.get(first, first)} | "
                     + " | ".join(cells) + f" | {'yes' if len(sides) == 1 else 'no'} |")
    return "\n".join(lines) + "\n"
