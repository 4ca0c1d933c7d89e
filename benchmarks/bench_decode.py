"""Decode-step cost against context length (Griffin §5.1, Figure 4): milliseconds per generated token and cache
bytes per sequence, for Hawk, Griffin and the MQA baseline of the small presets, minigriffin beside
recurrentgemma's PyTorch model on the same config.

    python benchmarks/bench_decode.py                  # contexts 256, 1k, 4k, 16k; batch 1 and 8
    python benchmarks/bench_decode.py --contexts 256,1024 --steps 5 --rounds 1

The cost of a decode step depends on the size of the cache, not on what is in it, so each measurement starts
from a cache of the given context length filled with random keys, values and states (no 16k-token prefill).
Griffin's window (128) and Hawk's state are fixed, so their caches do not grow; the MQA baseline attends
globally (global_attention), so it keeps every key; recurrentgemma, which has no global flag, gets a window
of the whole context. minigriffin decodes as generation does,
each step continuing the state the previous one returned (its KV cache is appended to in place, so feeding
one state again would copy it); the context therefore grows by one token per step, which for MQA keeps the
window full at W = context. recurrentgemma's cache is a fixed-size ring buffer, so it is fed the same cache
each step. Each implementation and batch size runs in its own child process (thread pools spin after their
work: minigriffin's batch-1 steps leave OpenMP threads spinning that slowed batch-8 steps taking turns with
them 2x, which a program decoding one batch size at a time does not see); the time is the median of --steps
steps after 3 warm-up steps, the contexts taking turns step by step (so noise lands on all alike). torch gets
2 threads; minigriffin MINIGRIFFIN_DECODE_THREADS=2 unless set (the library's default is 1): with batch > 1 each of 2 Python threads takes half the rows through every
block, meeting once, at the end of the step; with batch 1 the two threads split attention over 512 keys or
more between them. Targets: Hawk and Griffin at 16k within 10% of their time at 256; minigriffin at most
one third of recurrentgemma's ms per token. Writes a PNG (--plot) and prints a Markdown table.

Rounds. The machine is shared: another tenant's burst can slow every step of whichever child process runs
during it (one run measured minigriffin's Griffin batch-8 steps at 4.9-5.3 ms against 3.7-3.8 in the run
before, with nothing changed). So the children run in --rounds rounds (default 3), each round measuring
every (model, batch) once, minigriffin and recurrentgemma back to back; a row's time is the median over
rounds of its per-round medians, and the table also gives the lowest and highest of the per-round ratios
(minigriffin's time over recurrentgemma's in the same round), so one disturbed round shows up as a spread
instead of deciding the result.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

FAMILIES = ("hawk", "griffin", "mqa")


def _cfg(family, context):
    from minigriffin.config import PRESETS
    return PRESETS[f"{family}-small"]                     # mqa-small attends globally (global_attention)


def _interleaved_medians(steppers, steps):
    """Median wall time (ms) of each stepper's step(i), for i = 3 .. steps + 2 after warm-up steps 0, 1, 2.

    The steppers take turns, one step each, so every (context, batch) is sampled across the same stretch of
    time: a busy moment on the shared machine then lands on all of them alike instead of on whichever
    context happened to be measured during it (timing them one after another made Hawk's context-independent
    step look 13-53% slower at 16k than at 256 in some runs). The order of the turn reverses every step, so
    that no context is always the one measured first (Hawk at batch 1 measured up to 10% slower at 256 than
    at 16k, its step being the same work, with 256 always first; the first of a turn was the slowest in
    other orders too)."""
    for i in range(3):
        for step in steppers:
            step(i)
    times = [[] for _ in steppers]
    for i in range(3, steps + 3):
        turn = list(zip(steppers, times))
        for step, record in (turn if i % 2 else turn[::-1]):
            start = time.perf_counter()
            step(i)
            record.append(time.perf_counter() - start)
    return [1e3 * statistics.median(record) for record in times]


def _ours(family, context, batch):
    from minigriffin.inference import AttentionState, RecurrentState, forward_chunk, init_state, state_nbytes
    from minigriffin.params import init_params
    cfg = _cfg(family, context)
    params = init_params(cfg, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    state = init_state(cfg, batch)
    blocks = []
    for block in state.blocks:
        if isinstance(block, AttentionState):
            n = context if cfg.global_attention else min(cfg.attention_window_size, context)
            shape = (batch, n, cfg.head_dim)
            blocks.append(AttentionState(rng.standard_normal(shape).astype(np.float32),
                                         rng.standard_normal(shape).astype(np.float32),
                                         np.zeros((batch, n), dtype=np.int64)))
        else:
            blocks.append(RecurrentState(rng.standard_normal(block.h.shape).astype(block.h.dtype),
                                         rng.standard_normal(block.conv_x.shape).astype(block.conv_x.dtype),
                                         np.zeros_like(block.conv_doc)))
    state = state._replace(blocks=tuple(blocks), num_tokens=context)
    nbytes = state_nbytes(state) // batch
    tokens = np.zeros((batch, 1), dtype=np.int64)
    current = [state]

    def step(i):   # as generation does: each step continues the state the previous one returned
        positions = np.full((batch, 1), context + i, dtype=np.int64)
        current[0] = forward_chunk(params, tokens, positions, cfg, current[0])[1]
    return step, nbytes


def _theirs(family, context, batch):
    import torch
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    from oracle_utils import torch_griffin

    from minigriffin.params import init_params
    torch.set_num_threads(2)
    cfg = _cfg(family, context)
    # recurrentgemma has no global flag: the MQA baseline's window (and ring buffer) is the whole context
    model = torch_griffin(cfg, init_params(cfg, np.random.default_rng(0)), global_window=context)
    cache = model.init_cache(batch, torch.float32)
    for name, block in cache.items():
        if hasattr(block, "num_tokens"):
            cache[name] = block._replace(keys=torch.randn_like(block.keys), values=torch.randn_like(block.values),
                                         num_tokens=torch.full_like(block.num_tokens, context))
        else:
            cache[name] = block._replace(rg_lru_state=torch.randn_like(block.rg_lru_state),
                                         conv1d_state=torch.randn_like(block.conv1d_state))
    nbytes = sum(t.numel() * t.element_size() for block in cache.values() for t in block if torch.is_tensor(t))
    tokens = torch.zeros((batch, 1), dtype=torch.int64)
    positions = torch.full((batch, 1), context, dtype=torch.int64)
    def step(i):
        with torch.no_grad():
            model(tokens, positions, cache=cache)
    return step, nbytes // batch


def _child_main(args):
    measure = _ours if args.measure == "minigriffin" else _theirs
    combos = [(context, batch) for context in args.contexts for batch in args.batches]
    steppers, sizes = zip(*(measure(args.family, context, batch) for context, batch in combos))
    medians = _interleaved_medians(steppers, args.steps)
    rows = [{"context": context, "batch": batch, "ms": ms, "cache_bytes": nbytes}
            for (context, batch), ms, nbytes in zip(combos, medians, sizes)]
    print(json.dumps(rows))


def _run_child(args, impl, family, batch):
    env = dict(os.environ, NUMBA_NUM_THREADS="2", OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2",
               MINIGRIFFIN_DECODE_THREADS=os.environ.get("MINIGRIFFIN_DECODE_THREADS", "2"))
    cmd = [sys.executable, os.path.abspath(__file__), "--measure", impl, "--family", family, "--steps",
           str(args.steps), "--contexts", ",".join(map(str, args.contexts)), "--batches", str(batch)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{impl} {family} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _median_rows(rounds):
    """Per-round lists of rows (same order every round) -> one list, each row's ms the median over rounds."""
    return [dict(rows[0], ms=statistics.median(row["ms"] for row in rows), per_round=[row["ms"] for row in rows])
            for rows in zip(*rounds)]


def main(argv=None):
    ints = lambda text: [int(v) for v in text.split(",")]  # noqa: E731
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", type=ints, default=[256, 1024, 4096, 16384])
    parser.add_argument("--batches", type=ints, default=[1, 8])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of every child (default 3)")
    parser.add_argument("--skip-oracle", action="store_true")
    parser.add_argument("--plot", help="write the figure here (the one of record: docs/results/decode.png); "
                        "default: no figure, so a quick run never overwrites the committed one")
    parser.add_argument("--measure", choices=["minigriffin", "recurrentgemma"], help=argparse.SUPPRESS)
    parser.add_argument("--family", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        return _child_main(args)
    impls = ("minigriffin", "recurrentgemma")[: 1 if args.skip_oracle else 2]
    per_round = {(impl, family): [[] for _ in range(args.rounds)] for impl in impls for family in FAMILIES}
    for r in range(args.rounds):
        for family in FAMILIES:
            for batch in args.batches:
                for impl in impls:                   # the two implementations back to back, for each batch
                    per_round[(impl, family)][r].extend(_run_child(args, impl, family, batch))
            print(f"round {r + 1}/{args.rounds}: measured {family}", file=sys.stderr, flush=True)
    key = lambda row: (row["context"], row["batch"])  # noqa: E731
    results = {name: _median_rows([sorted(rows, key=key) for rows in rounds]) for name, rounds in per_round.items()}
    print(f"Median over {args.rounds} round(s) of each round's median of {args.steps} steps; 'ratio range' is the "
          "lowest and highest per-round ratio.\n")
    print("| model | batch | context | minigriffin ms/token | recurrentgemma ms/token | ratio | ratio range "
          "| cache bytes/sequence |")
    print("|---|---|---|---|---|---|---|---|")
    for family in FAMILIES:
        ours = results[("minigriffin", family)]
        theirs = results.get(("recurrentgemma", family))
        for i, row in enumerate(ours):
            t = theirs[i]["ms"] if theirs else float("nan")
            ratios = [a / b for a, b in zip(row["per_round"], theirs[i]["per_round"])] if theirs else [float("nan")]
            print(f"| {family} | {row['batch']} | {row['context']} | {row['ms']:.2f} | {t:.2f} | "
                  f"{row['ms'] / t:.2f} | {min(ratios):.2f}-{max(ratios):.2f} | {row['cache_bytes']:,} |")
    print()
    for family in ("hawk", "griffin"):
        for batch in args.batches:
            rows = [r for r in results[("minigriffin", family)] if r["batch"] == batch]
            first, last = rows[0], rows[-1]
            change = last["ms"] / first["ms"] - 1
            print(f"{family} batch {batch}: {last['context']} vs {first['context']}: {change:+.0%} "
                  f"(target within +-10%): {'met' if abs(change) <= 0.10 else 'MISSED'}")
    if args.plot:
        _plot(results, args)
        print(f"figure: {args.plot}")


def _plot(results, args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(args.batches), figsize=(5 * len(args.batches), 4), squeeze=False)
    for ax, batch in zip(axes[0], args.batches):
        for i, family in enumerate(FAMILIES):
            for impl, style in (("minigriffin", "o-"), ("recurrentgemma", "s--")):
                rows = [r for r in results.get((impl, family), []) if r["batch"] == batch]
                if rows:
                    ax.plot([r["context"] for r in rows], [r["ms"] for r in rows], style, color=f"C{i}",
                            label=f"{family} ({impl})")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context length (tokens in the cache)")
        ax.set_ylabel("ms per generated token")
        ax.set_title(f"decode step, batch {batch}, small presets")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(args.plot) or ".", exist_ok=True)
    fig.savefig(args.plot, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
