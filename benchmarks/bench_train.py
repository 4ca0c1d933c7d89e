"""Training throughput of the small presets: full optimisation steps (batch sampling, forward, loss, backward,
clipping, AdamW) per second, as `minigriffin train` runs them.

    python benchmarks/bench_train.py --data-dir BOOKS       # batch 8 x 256 (the train default)

BOOKS: the books corpus, e.g. the folder `minigriffin download` prints (~/.cache/minigriffin/books by default).

Best of --repeats timed windows of --steps steps, after 2 warm-up steps, float32, default threads.
Results go in docs/benchmarks.md; README quotes them as the time each preset takes on a laptop.
"""

import argparse
import os
import platform
import time

import numpy as np


def best_seconds_per_step(step, steps, repeats, warmup=2):
    """Wall seconds per call of step(): the best of `repeats` windows of `steps` calls, after `warmup` calls."""
    for _ in range(warmup):
        step()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        best = min(best, (time.perf_counter() - start) / steps)
    return best


def main(argv=None):
    from minigriffin.data import default_cache_dir
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir",
                        default=os.environ.get("MINIGRIFFIN_BOOKS") or str(default_cache_dir() / "books"))
    parser.add_argument("--presets", default="hawk-small,griffin-small,mqa-small")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)

    from minigriffin.config import PRESETS, TrainConfig
    from minigriffin.data import load_corpus, sample_batch
    from minigriffin.params import count_params
    from minigriffin.train import Trainer
    corpus = load_corpus(args.data_dir)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; batch {args.batch} x "
          f"{args.seq}, float32\n")
    print("| preset | parameters | tokens/s | s/step | 1,000 steps take |")
    print("|---|---|---|---|---|")
    for name in args.presets.split(","):
        cfg = PRESETS[name]
        trainer = Trainer("/nonexistent", cfg, TrainConfig(batch_size=args.batch, seq_len=args.seq), args.data_dir,
                          corpus)
        from minigriffin.optim import adamw_init
        from minigriffin.params import init_params
        trainer.params = init_params(cfg, np.random.default_rng(0))
        trainer.opt_state = adamw_init(trainer.params)
        trainer.data_rng = np.random.default_rng(1)

        best = best_seconds_per_step(
            lambda: trainer.train_step(sample_batch(corpus.train, args.batch, args.seq, trainer.data_rng)),
            args.steps, args.repeats)
        tokens = args.batch * args.seq
        print(f"| {name} | {count_params(cfg):,} | {tokens / best:,.0f} | {best:.2f} | {1000 * best / 60:.0f} min |",
              flush=True)


if __name__ == "__main__":
    main()
