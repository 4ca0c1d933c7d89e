# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 6. Long context: does the context beyond the training length help?
#
# Paper: [De, Smith et al. 2024, "Griffin", arXiv 2402.19427](https://arxiv.org/abs/2402.19427), §6.1 and Figure 5.
# Docs: [docs/results.md](../docs/results.md) (the study at laptop scale, its verdicts, what matches the paper and
# what does not, and the search for a regime where it does). Code: [minigriffin/paired.py](../minigriffin/paired.py)
# (the paired tests), [minigriffin/findings.py](../minigriffin/findings.py) (the verdicts),
# [minigriffin/evaluate.py](../minigriffin/evaluate.py) (loss per position),
# [minigriffin/experiment.py](../minigriffin/experiment.py) (the studies).
#
# This notebook states the paper's two long-context findings, shows why a loss curve read by eye cannot judge them,
# runs the paired test that does on a model trained here in seconds, reads the committed verdicts of the laptop-scale
# study, and ends with why the laptop models do not (yet) show the first finding and how to re-run everything.

# %%
import json
import os
import re
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image, Markdown, display

from minigriffin.cli import main as minigriffin
from minigriffin.data import ByteTokenizer, default_cache_dir, load_corpus
from minigriffin.evaluate import curve_from_losses, document_losses, documents, read_csv, standard_error
from minigriffin.experiment import PRESETS, runs_for, train_models
from minigriffin.findings import context_findings, context_use, context_use_markdown, findings_markdown
from minigriffin.paired import bootstrap_interval, cut_context_losses, describe, same_token_test, span_means, verdict
from minigriffin.params import init_a_param
from minigriffin.rglru import C, softplus

# Unset: small sizes that run in seconds. MINIGRIFFIN_FULL_RUN=1: the laptop sizes (the study's Hawk trained in
# section 3, then the whole extrapolation study in section 7: minutes, see docs/results.md for the wall times).
FULL_RUN = os.environ.get("MINIGRIFFIN_FULL_RUN") == "1"
plt.rcParams.update({"figure.dpi": 72, "savefig.dpi": 72, "font.size": 9})
RESULTS = Path("..") / "docs" / "results"
STUDIES = ("extrapolation", "train-length")
BOOKS = Path(os.environ.get("MINIGRIFFIN_BOOKS") or default_cache_dir() / "books").expanduser()
HAVE_BOOKS = BOOKS.is_dir() and ((BOOKS / "train").is_dir() or any(BOOKS.glob("*.txt")))
if not HAVE_BOOKS:
    print(f"NO BOOKS at {BOOKS.resolve()}: sections 2, 3, 4 and 7 need a folder of .txt books. Set "
          f"MINIGRIFFIN_BOOKS to one, or run `minigriffin download` once; those cells do nothing until then. "
          f"Sections 5 and 6 read the committed results and run without books.")

# %% [markdown]
# ## 1. The paper's two findings
#
# Section 6.1 trains Hawk, Griffin and MQA Transformers (about 1B parameters) on sequences of $L$ = 2,048 tokens,
# then feeds long held-out books to them whole and plots the loss at every token position, far beyond $L$.
#
# * **Finding 1 (Figure 5, left).** Hawk and Griffin predict the next token *better* the more context they are
#   given, and keep improving past the length they were trained on (to at least $4L$): they use context older than
#   anything they saw in training. The Transformer baselines (global attention with RoPE, and without positional
#   encoding, NoPE) do not extrapolate: their loss rises sharply just past $L$. As a test on one target at position
#   $t > L$: the context more than $L$ tokens back should *lower* Hawk's and Griffin's loss, and *raise* the
#   Transformer's.
# * **Finding 2 (Figure 5, right).** Hawk and Griffin trained at $4L$ (same number of tokens, so a quarter of the
#   sequences) are better than the same models trained at $L$ at long positions, and slightly worse at short ones.
#
# Both findings are about *what the context does*: finding 1 compares a model with and without its far context,
# finding 2 compares two models on the same text. The next section shows why the loss curve alone cannot tell.

# %% [markdown]
# ## 2. Why a loss curve read by eye cannot judge them
#
# The study's documents are long stretches of books: each validation book is cut into consecutive pieces of $8L$
# bytes, each scored as one document from position 0 ([`evaluate.documents`](../minigriffin/evaluate.py)). The
# curve is the loss at position $t$, averaged over the documents. Moving along it from $t_1$ to $t_2$ changes two
# things at once:
#
# 1. the model sees more context ($t_2$ bytes before the target instead of $t_1$), and
# 2. the target is another byte of other text.
#
# The second is not noise that averages out: position $t$ of every document is the same kind of place in a book.
# The first piece of each book opens with its title page (capitals, short lines, blank lines), the later positions
# are prose. Below, the openings of a few documents of the laptop study's layout ($L$ = 128, pieces of 1,024
# bytes) against the text at position 900 of the same documents.

# %%
study = PRESETS["laptop"]                                        # the committed study's layout: L, pieces per book
L_STUDY, EVAL_LEN = study["L"], 8 * study["L"]
if HAVE_BOOKS:
    corpus = load_corpus(BOOKS)
    study_docs = documents(corpus.valid, EVAL_LEN, study["segments"])      # [(<= 8L,) uint8 tokens]
    tokenizer = ByteTokenizer()
    print(f"{len(study_docs)} documents of up to {EVAL_LEN} bytes from {len(corpus.valid.doc_starts) - 1} "
          f"validation books")
    for i in (0, 1, study["segments"]):
        print(f"document {i:>2}, positions 0-59:    {tokenizer.decode(study_docs[i][:60])!r}")
        print(f"             positions 900-959: {tokenizer.decode(study_docs[i][900:960])!r}")

# %% [markdown]
# To see how much the text alone moves the curve, score the same documents with a model that reads **no context
# at all**: the unigram model, $p(\text{byte})$ counted on the training books. Its loss at position $t$ depends
# only on which byte sits there, so any shape in its curve is the text, nothing else. The cell draws its curve
# (`evaluate.curve_from_losses`, the study's log-spaced buckets) and, where the committed results are present,
# the curve of the study's Hawk on the same kind of documents, each as its difference from its own average so
# that the two shapes can be compared. It then compares the far positions with the first ones, paired by
# document, as one would by eye.

# %%
if HAVE_BOOKS:
    counts = np.bincount(corpus.train.tokens, minlength=256) + 1            # (256,) add-one smoothing
    log_p = np.log(counts / counts.sum())                                    # (256,)
    unigram = np.full((len(study_docs), EVAL_LEN - 1), np.nan)               # (documents, positions)
    for i, doc in enumerate(study_docs):
        unigram[i, :len(doc) - 1] = -log_p[np.asarray(doc[1:], dtype=np.int64)]   # target t is byte t + 1
    curve = curve_from_losses(unigram, EVAL_LEN, name="unigram (no context)")
    fig, ax = plt.subplots(figsize=(6.5, 3))
    shown = [curve]
    if (RESULTS / f"extrapolation-hawk-L{L_STUDY}.csv").is_file():
        shown.append(read_csv(RESULTS / f"extrapolation-hawk-L{L_STUDY}.csv", name=f"hawk-L{L_STUDY} (committed)"))
    for i, c in enumerate(shown):
        centre = np.sqrt(np.maximum(c.bucket_lo, 1) * c.bucket_hi)
        ax.plot(centre, c.mean - c.mean.mean(), "o-", ms=3, color=f"C{i}", label=c.name)
        ax.fill_between(centre, c.mean - c.mean.mean() - standard_error(c), c.mean - c.mean.mean()
                        + standard_error(c), color=f"C{i}", alpha=0.15)
    ax.axvline(L_STUDY, color="grey", ls="--", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("token position in the document (dashed: L)")
    ax.set_ylabel("loss minus the curve's average\n(nats per byte)")
    ax.set_title("The curve of a model that uses no context still moves with position")
    ax.legend(fontsize=8)
    plt.show()
    if len(shown) == 2 and shown[0].mean.shape == shown[1].mean.shape:
        print(f"correlation of the two curves over the position buckets: "
              f"{np.corrcoef(shown[0].mean, shown[1].mean)[0, 1]:+.2f}")
    far_minus_early = bootstrap_interval(span_means(unigram, 4 * L_STUDY, EVAL_LEN - 1)
                                         - span_means(unigram, 0, L_STUDY // 2))
    print(f"unigram model, loss at positions >= 4L minus loss at positions < L/2, same documents: "
          f"{describe(*far_minus_early)} -> {verdict(*far_minus_early, above='higher far out', below='lower far out')}")

# %% [markdown]
# A model that cannot use context at all has a loss that changes with position, and the change passes a paired
# test over documents: comparing *positions* compares *texts*. So the bends of a real model's curve (a dip just
# before $L$, a rise after it, a slow decline far out) cannot be read as "more context helps" or "the model breaks
# past $L$": part or all of each bend is the text. What separates the two is a comparison on the **same targets**.

# %% [markdown]
# ## 3. The paired same-token test
#
# [`paired.cut_context_losses`](../minigriffin/paired.py) predicts the targets at positions $[t_0, t_1)$ of a
# document a second time, from only the $c$ tokens before $t_0$: tokens $[t_0 - c, t_1]$ are fed as a fresh
# document (its first token is position 0, the state starts from zero). The same targets, the same model; only
# the context differs. Then, per document $d$,
#
# $$\Delta_d(c) = \text{mean loss of the targets with the context cut to } c \;-\; \text{mean loss with the whole
# document before them},$$
#
# and $\Delta > 0$ means the context beyond $c$ tokens back helped; $\Delta < 0$ means it hurt. With $c = L$ and
# targets past $L$ this is exactly finding 1. [`paired.same_token_test`](../minigriffin/paired.py) averages
# $\Delta_d$ over documents and [`paired.bootstrap_interval`](../minigriffin/paired.py) gives a 95% interval by
# resampling *documents* with replacement (4,000 resamples): the documents are the independent units, the bytes
# within one are not. [`paired.verdict`](../minigriffin/paired.py) reads the interval: "helps" when it lies wholly
# above 0, "hurts" when wholly below, "no difference" when it straddles 0.
#
# Below, a Hawk trained here for a few seconds (small size: width 64, $L$ = 32, 200 steps; with
# `MINIGRIFFIN_FULL_RUN=1`, the laptop study's own Hawk, $L$ = 128, 800 steps, which section 7's study then reuses),
# through the same [`experiment.train_models`](../minigriffin/experiment.py) as the study. **At the small size the
# numbers mean nothing**: the model has barely learned bigrams, and a few documents give wide intervals. The cells
# show the mechanics; section 5 shows the measured results.

# %%
if FULL_RUN:
    p, live_out = PRESETS["laptop"], Path("../runs/experiment-laptop")     # section 7 reuses this Hawk
else:
    p = dict(PRESETS["tiny"], width=64, lru_width=64, mlp=192, L=32, batch=8, steps=200, lr=5e-3, segments=4)
    live_out = Path(tempfile.mkdtemp(prefix="minigriffin-hawk-"))
L = p["L"]
if HAVE_BOOKS:
    hawk_run = [run for run in runs_for("extrapolation", p) if run[1] == "hawk"]    # (label, family, L, batch)
    [(_, trainer, _)] = train_models(hawk_run, p, corpus, BOOKS, live_out, seed=0, device="cpu",
                                     log=lambda msg, **_: print(msg) if "step" not in msg else None)
    params, cfg = trainer.params, trainer.model_cfg
    docs = documents(corpus.valid, 8 * L, p["segments"])                 # the same documents for every test
    full = document_losses(params, cfg, docs)                             # (documents, 8L - 1), NaN past the end
    print(f"{len(docs)} documents of up to {8 * L} bytes; full-context losses {full.shape}")

# %% [markdown]
# One document by hand: the targets at $[2L, 2L + L/2)$ with the whole document before them, and with the context
# cut to $L$.

# %%
if HAVE_BOOKS:
    lo, hi = 2 * L, 2 * L + L // 2
    cut = cut_context_losses(params, cfg, docs[0], lo, hi, context=L)     # (hi - lo,) the same targets
    print(f"document 0, targets {lo}-{hi - 1}: full context {full[0, lo:hi].mean():.4f}, context cut to {L}: "
          f"{cut.mean():.4f}, cut - full {cut.mean() - full[0, lo:hi].mean():+.4f} nats/byte")

# %% [markdown]
# Then every document: one $\Delta_d$ each, and the bootstrap interval over them. The loop is the naive version of
# `same_token_test`, checked against it.

# %%
if HAVE_BOOKS:
    per_doc = np.array([cut_context_losses(params, cfg, doc, lo, hi, L).mean() - full[i, lo:hi].mean()
                        for i, doc in enumerate(docs) if len(doc) > hi])  # (documents that reach hi,)
    mean, low, high = same_token_test(params, cfg, docs, full, lo, hi, L)
    assert np.allclose(bootstrap_interval(per_doc), (mean, low, high), rtol=1e-12, atol=0)   # float64
    print(f"{per_doc.size} documents; per-document cut - full from {per_doc.min():+.4f} to {per_doc.max():+.4f}")
    print(f"cut to L = {L}, targets at 2L: {describe(mean, low, high)} -> "
          f"{verdict(mean, low, high, above='longer context helps', below='longer context hurts')}")
    by_eye = bootstrap_interval(span_means(full, lo, hi) - span_means(full, L // 2, L))
    print(f"for contrast, the curve read by eye (loss at 2L minus loss at [L/2, L), other targets): "
          f"{describe(*by_eye)}")

# %% [markdown]
# [`findings.context_findings`](../minigriffin/findings.py) runs this test for one model at the windows the study
# reports (targets at $2L$, $4L$ and the last $L/2$ positions, context cut to $L$) and
# [`findings.findings_markdown`](../minigriffin/findings.py) prints the verdicts, the table the study writes into
# `docs/results/extrapolation.md`. (Again: at the small size, whatever it says is noise.)

# %%
if HAVE_BOOKS:
    live_findings = context_findings(params, cfg, docs, full, f"hawk-L{L}", L, 8 * L, cut=L)
    display(Markdown(findings_markdown(live_findings)))

# %% [markdown]
# ## 4. How far back a model uses its context
#
# Finding 1 is one point of a curve. [`findings.context_use`](../minigriffin/findings.py) runs the same test for a
# range of cuts $c$: at targets inside the training length ($[L/2, L)$, cuts below $L/2$) and at the windows past
# it. $\Delta(c)$ is what the context more than $c$ tokens back is worth; where it reaches 0, nothing further back
# is used. (`minigriffin eval-length RUN --context-use` prints the same table for a trained run.)
#
# For finding 1 to be possible, two things must show:
#
# * **use far inside $L$**: at targets in $[L/2, L)$, $\Delta(c)$ still above 0 for $c$ approaching $L/2$. A model
#   whose curve reaches 0 after a few dozen bytes has nothing to gain from thousands more;
# * **that use surviving past $L$**: at targets past $L$, $\Delta(L) > 0$. The state there was built over more than
#   $L$ tokens, which training never produced; $\Delta(L) < 0$ means that state misleads the model (it would do
#   better forgetting), $\Delta(L) \approx 0$ that the far context is simply not used.

# %%
if HAVE_BOOKS:
    use = context_use(params, cfg, docs, full, L, 8 * L, cuts=None if FULL_RUN else (1, 2, 4, 8, 16, 32))
    display(Markdown(context_use_markdown(f"hawk-L{L} (trained here)", use)))
    fig, ax = plt.subplots(figsize=(6.5, 3))
    for i, window in enumerate(use["windows"]):
        cells = [(c, *use["cells"][(c, window)]) for c in use["cuts"] if (c, window) in use["cells"]]
        cs, means, lows, highs = (np.array(col) for col in zip(*cells))
        ax.errorbar(cs * 1.04 ** i, means, yerr=[means - lows, highs - means], fmt="o-", ms=3, capsize=2,
                    color=f"C{i}", label=f"targets {window}")
    ax.axhline(0, color="black", lw=0.8)
    ax.axvline(L, color="grey", ls="--", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context cut to c tokens (dashed: L)")
    ax.set_ylabel("cut - full (nats per byte)")
    ax.set_title("Context use: what the context beyond c is worth (95% intervals)")
    ax.legend(fontsize=8)
    plt.show()


# %% [markdown]
# ## 5. The committed results
#
# [`docs/results/`](../docs/results/) holds the laptop-scale runs of both studies: `<study>.json` (the settings,
# command, seed, commit, machine and wall time, and a `findings` list: one record per paired comparison, with its
# mean, 95% interval and verdict), one CSV of the loss curve per model, `<study>.md` and `<study>.png`. A study run
# with `--eval-data-dir` (a second domain, such as non-fiction) also has a `domains` entry with the same records
# per domain. The table below is built from those records; the column "the paper" is what section 6.1 reports for
# that comparison, and "matches" compares it with the verdict.

# %%
PAPER = {1: {"hawk": "longer context helps", "griffin": "longer context helps",
             "mqa": "longer context hurts", "mqa-nope": "longer context hurts"},
         2: {"far": "4L better", "early": "4L worse"}}          # finding 2's early difference: "slightly worse"


def paper_says(record):
    """What section 6.1 reports for this comparison (a verdict string), or None."""
    if record["finding"] == 1:
        return PAPER[1].get(re.sub(r"-L\d+$", "", record["model"]))
    return PAPER[2].get(record["targets"].split()[0])


def matches(record):
    """'yes' (the paper's verdict), 'no: the opposite', or 'not shown' when the interval includes 0 (saying
    whether the mean at least has the paper's sign)."""
    expected = paper_says(record)
    if expected is None:
        return "-"
    if record["verdict"] == expected:
        return "yes"
    if record["verdict"] != "no difference":
        return "no: the opposite"
    sign = 1 if expected in ("longer context helps", "4L worse") else -1     # the sign of mean the paper expects
    return "not shown (interval includes 0" + (", same sign)" if sign * record["mean"] > 0 else ")")


def verdict_table(records):
    """The findings records of a study as a Markdown table, with the paper's claim beside each verdict."""
    lines = ["| finding | model | comparison | targets | mean [95% interval], nats/byte | verdict | the paper | "
             "matches |", "|---|---|---|---|---|---|---|---|"]
    for r in records:
        comparison = r["comparison"] + (f" (cut to {r['cut']})" if "cut" in r else "")
        lines.append(f"| {r['finding']} | {r['model']} | {comparison} | {r['targets']} | "
                     f"{describe(r['mean'], r['low'], r['high'], unit='')} | {r['verdict']} | "
                     f"{paper_says(r) or '-'} | {matches(r)} |")
    return "\n".join(lines)


def show_study(meta, title):
    """The verdicts of one study's <study>.json, on the held-out books and on each extra domain."""
    display(Markdown(f"**{title}** ({meta['study']} study, `{meta['preset']}` preset, seed {meta['seed']}, "
                     f"commit {meta['commit']}, {meta['documents']} documents, {meta['wall_time_s'] / 60:.1f} "
                     f"min on {meta.get('device', 'cpu')})\n\n" + verdict_table(meta["findings"])))
    for name, domain in (meta.get("domains") or {}).items():       # names only: the folders are machine paths
        display(Markdown(f"*Evaluated on the domain `{name}`* ({domain['documents']} documents)\n\n"
                         + verdict_table(domain["findings"])))


committed = {s: json.loads((RESULTS / f"{s}.json").read_text()) for s in STUDIES if (RESULTS / f"{s}.json").is_file()}
if not committed:
    print(f"No committed results in {RESULTS} (expected {' and '.join(s + '.json' for s in STUDIES)}): run the "
          f"studies as in section 7.")
for s, meta in committed.items():
    show_study(meta, "Finding 1" if s == "extrapolation" else "Finding 2")
    figure = RESULTS / f"{s}.png"
    if figure.is_file():
        display(Image(filename=str(figure), width=620))

# %% [markdown]
# What to look for (the numbers change when the study is rerun; [docs/results.md](../docs/results.md) interprets the
# current ones):
#
# * **The Transformers** (mqa with RoPE, mqa-nope): "longer context hurts" at every window past $L$ is the paper's
#   breakdown, measured on the same targets, so it is the model and not the text. In the figure it is the curve
#   shooting up right after the dashed line.
# * **Hawk and Griffin, finding 1**: "helps" would reproduce the paper. "No difference" with an interval hugging 0
#   means they extrapolate only in the weak sense: past $L$ they do not break, because they do not use the far
#   context at all (section 4). "Hurts" means they do use their state, and a state older than $L$ misleads them.
# * **Finding 2**: far out, "4L better" is the paper's direction; early, "4L worse" is. Note the size of the
#   differences against the intervals: these are small effects, and the figure's lower panel (paired differences
#   per position bucket) shows where along the document they come from.
# * Across domains: a verdict that holds on the novels but not on the second domain is about the books, not the
#   architecture.

# %% [markdown]
# ## 6. Why the laptop models do not show finding 1, and what the search tries
#
# Two reasons, both visible in section 4's test:
#
# * **They never meet a state older than $L$ in training.** The paper trains as the study does: each window of $L$
#   tokens starts from a zero state. Past $L$ at evaluation the state summarises more text than any state seen in
#   training; a model that learned to rely on its state can be misled by it, and one that did not gains nothing.
# * **Small models use only a few dozen bytes of context.** With under a million parameters and a couple of million
#   training bytes, a byte-level model learns spelling and word statistics; its context-use curve reaches 0 long
#   before $L$ (the table in docs/results.md), so there is no far context for it to use, inside $L$ or past it.
#
# The regime search (issue 16; the measured table is in [docs/results.md](../docs/results.md)) pulls these levers,
# each judged by the same paired tests:
#
# * **a longer $L$ with more tokens**: more of the text's long-range structure inside each training window
#   (`--seq_len`, `--max_steps`);
# * **a wider state**: `--lru_width` (the RG-LRU's $D_{RNN}$), so the state has room to keep more than the last word;
# * **the RG-LRU decay initialisation**: config fields `lru_min_rad`, `lru_max_rad` ($a$ drawn with $a^2$ uniform in
#   $[\text{min}^2, \text{max}^2]$, notebook 2), which set how fast each channel forgets at the start of training
#   (cell below);
# * **carrying the state across training windows**: `--carry_windows=K`
#   ([minigriffin/carry.py](../minigriffin/carry.py)): each batch row reads $K$ consecutive windows and starts each from the state the previous one ended with
#   (gradients stop at the window boundary), so training meets states up to $KL$ tokens old at the cost of $L$;
# * **a subword tokenizer**: $L$ tokens of a few bytes each span several times more text than $L$ bytes.
#
# How far back can a channel remember at initialisation? With the recurrence gate open ($r_t = 1$),
# $a_t = a^{c}$ with $c = 8$, so a channel's memory halves every $\ln 2 / (c\,\mathrm{softplus}(\Lambda))$ tokens
# ($a = \sigma(-\Lambda)$). The gate can hold a channel ($r_t \to 0$ makes $a_t \to 1$), but what the initial
# range offers is the starting point of training.

# %%
def half_lives(a_param):
    """(E,) tokens after which a channel's state has halved, with the recurrence gate open (r_t = 1)."""
    return np.log(2) / (C * softplus(np.asarray(a_param, dtype=np.float64)))


rng = np.random.default_rng(0)
for min_rad, max_rad in ((0.9, 0.999), (0.9, 0.9999)):                  # the default range, and a wider one
    h = half_lives(init_a_param(rng, 4096, np.float64, min_rad, max_rad))
    print(f"lru_min_rad={min_rad}, lru_max_rad={max_rad}: half-lives at initialisation: median {np.median(h):.1f}, "
          f"longest {h.max():.0f} tokens; {np.mean(h > L_STUDY):.0%} of channels longer than L = {L_STUDY}")
if HAVE_BOOKS:
    trained = np.concatenate([half_lives(block["recurrent_block"]["rg_lru"]["a_param"])
                              for block in params["blocks"] if "recurrent_block" in block])
    print(f"the Hawk trained in section 3 (L = {L}): median {np.median(trained):.1f}, longest {trained.max():.0f} "
          f"tokens")

# %% [markdown]
# ## 7. Re-running the studies
#
# ```sh
# minigriffin experiment extrapolation --preset laptop                        # finding 1: Hawk, Griffin, MQA, NoPE at L
# minigriffin experiment extrapolation --preset laptop --study train-length   # finding 2: Hawk, Griffin at L and 4L
# ```
#
# Both write into `runs/experiment-laptop/` (`--out` to change; the second reuses the models at $L$ the first
# trained, and a model whose checkpoint is complete is never trained again): the CSVs, the per-document losses
# (`.npz`), `<study>.png`, `<study>.md` and `<study>.json`. Copy those into `docs/results/` to update this
# notebook's section 5. Options:
#
# * `--eval-data-dir FOLDER` (repeatable) evaluates the same models on a second domain as well, with its own
#   verdicts (files `<study>-on-<folder>.*`, the `domains` entry of the JSON); `minigriffin download --nonfiction`
#   fetches non-fiction books for it.
# * `--preset gpu --device gpu`: wider and deeper models, $L$ = 512, many more tokens ([docs/gpu.md](../docs/gpu.md)).
# * `minigriffin eval-length RUN_DIR --max-len N --segments-per-book 16 --same-token --context-use` evaluates
#   any trained run: its loss curve, finding 1's test (`--same-token CUT` to cut elsewhere than $L$) and the
#   context-use table of section 4.
#
# Below, the whole extrapolation pipeline runs end to end with the `tiny` preset (three training steps per model,
# evaluated up to 128 bytes) into a temporary folder, and its verdicts are read back from its JSON with section 5's
# table. It shows the mechanics only: these models are untrained. Yet their loss curves (drawn last) rise and fall
# together along the positions: that is the text of section 2 again. With `MINIGRIFFIN_FULL_RUN=1` the cell runs
# the `laptop` preset into `../runs/experiment-laptop` instead (reusing section 3's Hawk).

# %%
preset, out = ("laptop", Path("../runs/experiment-laptop")) if FULL_RUN else \
    ("tiny", Path(tempfile.mkdtemp(prefix="minigriffin-experiment-")))
if HAVE_BOOKS:
    code = minigriffin(["experiment", "extrapolation", "--preset", preset, "--data-dir", str(BOOKS),
                        "--out", str(out)])
    assert code == 0, f"the experiment exited with {code}"

# %%
# The experiment draws its figure off-screen; make sure this notebook's figures are inline again.
# %matplotlib inline

# %%
if HAVE_BOOKS:
    run = json.loads((out / "extrapolation.json").read_text())
    show_study(run, f"The {preset} run just made")
    fig, ax = plt.subplots(figsize=(6.5, 3))
    for i, path in enumerate(sorted(out.glob("extrapolation-*.csv"))):
        c = read_csv(path, name=path.stem[len("extrapolation-"):])
        ax.plot(np.sqrt(np.maximum(c.bucket_lo, 1) * c.bucket_hi), c.mean, "o-", ms=3, color=f"C{i}", label=c.name)
    ax.axvline(PRESETS[preset]["L"], color="grey", ls="--", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("token position in the document (dashed: L)")
    ax.set_ylabel("cross-entropy (nats per byte)")
    ax.set_title(f"{preset} preset, run here in {run['wall_time_s']:.0f} s")
    ax.legend(fontsize=8)
    plt.show()

# %% [markdown]
# ## Your turn: does local attention alone extrapolate?
#
# Griffin's attention is local (a window of $L/2$ here); its recurrent blocks see further back. Take them away: an
# MQA Transformer whose attention is local with a window of $L/2$ (family `mqa-local`), trained like section 3's
# Hawk, then section 3's same-token test at targets $[2L, 2L + L/2)$ with the context cut to $L$.
# **Predict first**: "longer context helps", "hurts", or "no difference"? And how large can cut - full be for a
# single document? Then run it (about 20 s at the small size), and try `family_try = "mqa"` (global attention: the
# paper's breakdown past $L$), or `"griffin"` with `window_try = L` (Griffin with a window as long as its training
# sequences, whose attention is then global in training).

# %%
family_try, window_try = "mqa-local", L // 2          # try ("mqa", L // 2), ("griffin", L), ("griffin", L // 2)
if HAVE_BOOKS:
    label = f"{family_try}-L{L}-window{window_try}"
    [(_, trainer_try, _)] = train_models([(label, family_try, L, p["batch"])], dict(p, window=window_try), corpus,
                                         BOOKS, live_out, seed=0, device="cpu",
                                         log=lambda msg, **_: print(msg) if "step" not in msg else None)
    params_try, cfg_try = trainer_try.params, trainer_try.model_cfg
    full_try = document_losses(params_try, cfg_try, docs)                # (documents, 8L - 1)
    per_doc_try = np.array([cut_context_losses(params_try, cfg_try, doc, lo, hi, L).mean() - full_try[i, lo:hi].mean()
                            for i, doc in enumerate(docs) if len(doc) > hi])
    test_try = bootstrap_interval(per_doc_try)
    print(f"{label}: cut to L = {L}, targets at 2L: {describe(*test_try)} -> "
          f"{verdict(*test_try, above='longer context helps', below='longer context hurts')}; "
          f"largest |cut - full| of one document {np.abs(per_doc_try).max():.0e} nats/byte")

# %% [markdown]
# (Once you have run it: with a window of $L/2$ and no recurrence, nothing more than $L/2$ tokens back reaches a
# prediction, and RoPE sees only offsets, so cutting the context to $L$ changes no logit: the difference is 0 for
# every document, up to float32 rounding (the rotations are computed at other absolute positions). Such a model
# "extrapolates" only in the weak sense: it cannot break past $L$, and it cannot use anything beyond its window
# either. Hawk and Griffin can, in principle, through their state.)
#
# Next: [decoding cost](07_decoding_cost.ipynb), the other side of a fixed-size state.
