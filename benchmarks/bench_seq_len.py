"""Training step time against sequence length at a fixed number of tokens per batch (Griffin section 4.3, Figure 3).

    python benchmarks/bench_seq_len.py --plot docs/results/seq-len-speed.png --json docs/results/seq-len-speed.json
    python benchmarks/bench_seq_len.py --quick          # three lengths, one width, 4,096 tokens: a few minutes

Hawk, Griffin (window 128) and the MQA Transformer (global attention: window = sequence), 6 blocks, vocab 256,
MLP 3 x width, heads of 64 channels, float32, 2 threads. The batch holds --tokens tokens at every length
(8,192 by default: batch 32 at 256 down to batch 1 at 8,192), so the linear layers cost the same at every
length and only the temporal mixing changes: the recurrence is O(T) per sequence, global attention O(T^2).
Each point is one training step as benchmarks/bench_model.py times it (forward, mean cross-entropy, backward to
every parameter; minigriffin with 2 data-parallel workers when the batch has 2 rows or more), the best of
--repeats after a warm-up, in its own child process, and is reported relative to the MQA model at the
shortest length of the same width and implementation, as the paper does. The same sweep runs on
recurrentgemma's PyTorch model loaded with the same weights (bench_model.recurrentgemma_step).

Peak memory: each child reads its resident set size (RSS, /proc/self/statm) after building the model and
its inputs and before the first step, and its peak RSS (getrusage ru_maxrss) after the last; the difference
is the memory a training step needs on top of the weights. RSS rather than tracemalloc, because tracemalloc
does not see torch's allocations. recurrentgemma computes full (B, H, T, T) logits, masks and probabilities,
so points whose three such float32 tensors per attention layer would pass --oracle-max-gb are skipped.

--clock cpu --threads 1 counts CPU seconds per step with every thread pool at one thread: the work of a step,
whatever share of the cores other jobs leave the process (a starved process's wall clock measures the other jobs).

Points are measured length by length, the three models side by side (then the other implementation) so that
a slow spell on a shared machine moves neighbouring bars together; --rounds repeats the whole sweep and keeps
each point's best. Record in docs/benchmarks.md ("Training step time against sequence length").
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_model import best_time, minigriffin_step, recurrentgemma_step  # noqa: E402

FAMILIES = ("hawk", "griffin", "mqa")
LABELS = {"hawk": "Hawk", "griffin": "Griffin", "mqa": "MQA Transformer"}
IMPLS = ("minigriffin", "recurrentgemma")


def config(family, seq, width):
    """6 blocks, heads of 64 channels, MLP 3 x width; Griffin's window 128; MQA global (window = seq)."""
    from minigriffin.config import GriffinConfig, block_pattern
    return GriffinConfig(vocab_size=256, width=width, mlp_expanded_width=3 * width, num_heads=width // 64,
                         lru_width=width, block_types=block_pattern(family, 6),
                         attention_window_size=seq if family == "mqa" else 128)


def oracle_gb(family, seq, batch, width):
    """recurrentgemma's full-attention tensors: 3 x (B, H, T, T) float32 per attention layer, in GB."""
    layers = sum(kind == "attention" for kind in config(family, seq, width).block_types)
    return layers * 3 * batch * (width // 64) * seq * seq * 4 / 1e9


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def best_cpu_time(fn, repeats):
    """bench_model.best_time on the process's CPU clock: with every pool at one thread, the work of a step
    whatever share of the cores the scheduler gives this process (--clock cpu)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def measure(args):
    """Child process: time one implementation on one point; print JSON {seconds, peak_mb}."""
    from minigriffin.params import init_params
    cfg = config(args.family, args.seq, args.width)
    params = init_params(cfg, np.random.default_rng(1))
    rng = np.random.default_rng(0)
    batch = args.tokens // args.seq
    tokens = rng.integers(0, 256, (batch, args.seq))
    targets = rng.integers(0, 256, (batch, args.seq))
    segment_pos = np.tile(np.arange(args.seq), (batch, 1))
    if args.measure == "minigriffin":
        step = minigriffin_step(cfg, params, tokens, segment_pos, targets, args.threads)   # workers = threads
    else:
        step = recurrentgemma_step(cfg, params, tokens, segment_pos, targets, args.threads)
    before = _rss_bytes()
    seconds = (best_cpu_time if args.clock == "cpu" else best_time)(step, args.repeats)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024          # Linux: kilobytes
    print(json.dumps({"seconds": seconds, "peak_mb": (peak - before) / 2**20}))


def child(args, impl, family, width, seq):
    env = dict(os.environ, NUMBA_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads),
               OPENBLAS_NUM_THREADS=str(args.threads))
    cmd = [sys.executable, os.path.abspath(__file__), "--measure", impl, "--family", family, "--width", str(width),
           "--seq", str(seq), "--tokens", str(args.tokens), "--repeats", str(args.repeats),
           "--threads", str(args.threads), "--clock", args.clock]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{impl} {family} width {width} seq {seq} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def sweep(args):
    """{(impl, family, width, seq): {"seconds", "peak_mb"} or None (skipped)}, best over --rounds."""
    results = {}
    impls = IMPLS[:1] if args.skip_oracle else IMPLS
    for round_ in range(args.rounds):
        for width in args.widths:
            for seq in args.lengths:
                for impl in impls:
                    for family in FAMILIES:
                        key = (impl, family, width, seq)
                        too_big = oracle_gb(family, seq, args.tokens // seq, width) > args.oracle_max_gb
                        if impl == "recurrentgemma" and too_big:
                            results[key] = None
                            continue
                        got = child(args, impl, family, width, seq)
                        old = results.get(key)
                        if old is None or got["seconds"] < old["seconds"]:
                            results[key] = got
                        if args.json:
                            save(results, args)
                        print(f"round {round_ + 1}: {impl:14s} {family:7s} width {width} seq {seq:5d}: "
                              f"{got['seconds']:7.3f} s, peak +{got['peak_mb']:,.0f} MB", file=sys.stderr, flush=True)
    return results


def save(results, args):
    with open(args.json, "w") as f:
        json.dump({"clock": args.clock, "threads": args.threads, "tokens": args.tokens, "lengths": args.lengths,
                   "widths": args.widths, "repeats": args.repeats, "rounds": args.rounds,
                   "skip_oracle": args.skip_oracle, "command": " ".join(sys.argv),
                   "points": [dict(zip(("impl", "family", "width", "seq"), key), **(got or {"skipped": True}))
                              for key, got in results.items()]}, f, indent=1)


def load(args):
    """Results and settings of an earlier --json file (--from-json: table and figure without measuring)."""
    with open(args.from_json) as f:
        saved = json.load(f)
    for name in ("tokens", "lengths", "widths", "repeats", "rounds", "skip_oracle", "clock", "threads"):
        setattr(args, name, saved[name])
    return {(p["impl"], p["family"], p["width"], p["seq"]): None if p.get("skipped") else p for p in saved["points"]}


def relative(results, impl, family, width, seq, shortest):
    base, got = results.get((impl, "mqa", width, shortest)), results.get((impl, family, width, seq))
    return None if base is None or got is None else got["seconds"] / base["seconds"]


def table(results, args):
    """Markdown: one row per (width, length), each model's step time relative to MQA at the shortest length."""
    shortest = min(args.lengths)
    impls = IMPLS[:1] if args.skip_oracle else IMPLS
    head = "| width | length | batch |"
    for impl in impls:
        head += "".join(f" {impl} {f} |" for f in FAMILIES)
    head += "".join(f" peak MB {impl} {f} |" for impl in impls for f in FAMILIES)
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for width in sorted(args.widths):
        for seq in args.lengths:
            row = f"| {width} | {seq} | {args.tokens // seq} |"
            for impl in impls:
                for family in FAMILIES:
                    got = results.get((impl, family, width, seq))
                    rel = relative(results, impl, family, width, seq, shortest)
                    row += " - |" if rel is None else f" {rel:.2f} ({got['seconds']:.2f} s) |"
            for impl in impls:
                for family in FAMILIES:
                    got = results.get((impl, family, width, seq))
                    row += " - |" if got is None else f" {got['peak_mb']:,.0f} |"
            lines.append(row)
    return "\n".join(lines)


def plot(results, args, path):
    """Figure 3's layout: relative step time against length, a panel per width and implementation; memory below."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    impls = IMPLS[:1] if args.skip_oracle else IMPLS
    fig = Figure(figsize=(4.2 * len(args.widths), 3.2 * (len(impls) + 1)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(impls) + 1, len(args.widths), squeeze=False)
    shortest, colors = min(args.lengths), {"hawk": "tab:blue", "griffin": "tab:green", "mqa": "tab:red"}
    for col, width in enumerate(sorted(args.widths)):
        for row, impl in enumerate(impls):
            ax = axes[row][col]
            for family in FAMILIES:
                pts = [(seq, relative(results, impl, family, width, seq, shortest)) for seq in args.lengths]
                pts = [(s, r) for s, r in pts if r is not None]
                ax.plot([s for s, _ in pts], [r for _, r in pts], "o-", color=colors[family], label=LABELS[family])
            ax.set_xscale("log", base=2)
            ax.set_title(f"{impl}, width {width}", fontsize=10)
            ax.set_ylabel(f"step time / MQA at {shortest}")
            ax.grid(alpha=0.3)
        ax = axes[-1][col]
        for impl, style in zip(impls, ("-", "--")):
            for family in FAMILIES:
                pts = [(seq, results.get((impl, family, width, seq))) for seq in args.lengths]
                pts = [(s, g["peak_mb"]) for s, g in pts if g is not None]
                ax.plot([s for s, _ in pts], [m for _, m in pts], "o" + style, color=colors[family],
                        label=f"{LABELS[family]} ({impl})")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"peak step memory (RSS), width {width}", fontsize=10)
        ax.set_ylabel("MB above the weights")
        ax.set_xlabel(f"sequence length ({args.tokens:,} tokens per batch)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    axes[-1][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=8192, help="tokens per batch (default: %(default)s)")
    parser.add_argument("--lengths", type=lambda s: [int(x) for x in s.split(",")],
                        default=[256, 512, 1024, 2048, 4096, 8192])
    parser.add_argument("--widths", type=lambda s: [int(x) for x in s.split(",")], default=[256, 128])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall: seconds per step (default); cpu: CPU seconds per step with --threads 1, for a "
                             "machine whose cores other jobs hold (docs/benchmarks.md)")
    parser.add_argument("--oracle-max-gb", type=float, default=8.0,
                        help="skip recurrentgemma points whose full attention tensors pass this (default: %(default)s)")
    parser.add_argument("--skip-oracle", action="store_true", help="time minigriffin only")
    parser.add_argument("--quick", action="store_true", help="lengths 256,1024,4096, width 128, 4,096 tokens, 1 repeat")
    parser.add_argument("--plot", help="write the figure here (PNG)")
    parser.add_argument("--json", help="write the measurements here (after every point)")
    parser.add_argument("--from-json", help="the table and figure of an earlier --json, measuring nothing")
    parser.add_argument("--measure", choices=IMPLS, help=argparse.SUPPRESS)
    parser.add_argument("--family", help=argparse.SUPPRESS)
    parser.add_argument("--width", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seq", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        return measure(args)
    if args.from_json:
        args.json = None
    if args.quick:
        args.lengths, args.widths, args.tokens, args.repeats = [256, 1024, 4096], [128], 4096, 1
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu counts the CPU time of every thread, spinning ones too: use it with --threads 1")
    if args.tokens % max(args.lengths):
        parser.error(f"--tokens {args.tokens} must be a multiple of every length (longest {max(args.lengths)})")
    results = load(args) if args.from_json else None
    print(f"machine: {os.cpu_count()} CPUs; numpy {np.__version__}; {args.threads} threads; {args.clock} clock; "
          f"{args.tokens:,} tokens per batch; best of {args.repeats} after a warm-up; {args.rounds} round(s)")
    print("cells: step time relative to MQA at the shortest length of the same width and implementation "
          "(seconds per step); peak MB: RSS above the weights\n")
    results = results if args.from_json else sweep(args)
    print(table(results, args))
    if args.plot:
        plot(results, args, args.plot)


if __name__ == "__main__":
    main()
