"""`minigriffin demo` (what `make demo` runs): train a small Griffin on books for a few minutes, sample from it
and plot its loss curve. `minigriffin demo --scan` instead shows the scan backends agreeing with the NumPy
reference, and how fast each is.
"""

import time

import numpy as np

from minigriffin.scan import available_backends, linear_scan, linear_scan_backward


def _best_ms(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


DEMO_STEPS = 300          # a few minutes for griffin-small on a 2-core laptop CPU (docs/benchmarks.md)
SAMPLE_PROMPT = "It was "


def run_training_demo(data_dir=None, run_dir=None, steps=DEMO_STEPS, quick=False):
    """Train griffin-small (griffin-tiny with quick=True), then sample and plot. Returns the exit code.

    The same steps as `minigriffin train`, `minigriffin sample` and `minigriffin plot` with the settings below,
    through the library: the Trainer, generate and plot_runs."""
    from minigriffin.checkpoint import load_run
    from minigriffin.config import TrainConfig, make_config
    from minigriffin.data import ByteTokenizer, load_corpus
    from minigriffin.gutenberg import resolve_data_dir
    from minigriffin.plots import plot_runs
    from minigriffin.sample import generate
    from minigriffin.train import EXIT_INTERRUPTED, Trainer, run_and_report

    run_dir = run_dir or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}"
    preset, (batch_size, seq_len) = ("griffin-tiny", (2, 32)) if quick else ("griffin-small", (8, 128))
    train_cfg = TrainConfig(batch_size=batch_size, seq_len=seq_len, max_steps=steps, eval_every=max(1, steps // 3),
                            checkpoint_every=max(1, steps // 3), warmup_steps=30, lr=3e-3, eval_batches=4)
    print(f"== training {preset} for {steps} steps (Ctrl-C stops early and keeps a checkpoint)", flush=True)
    data_dir = resolve_data_dir(data_dir and str(data_dir))
    trainer = Trainer(run_dir, make_config(preset), train_cfg, data_dir, load_corpus(data_dir))
    trainer.start_fresh()
    code = run_and_report(trainer)
    if code not in (0, EXIT_INTERRUPTED):
        return code
    print(f"\n== a sample from the best checkpoint (prompt: {SAMPLE_PROMPT!r})", flush=True)
    params, cfg, _ = load_run(run_dir, "best")
    tokenizer = ByteTokenizer()
    prompt = tokenizer.encode(SAMPLE_PROMPT)[None].astype(np.int64)                 # (1, P)
    out = generate(params, cfg, prompt, 40 if quick else 300, np.random.default_rng(0), temperature=0.8)
    print(tokenizer.decode(out[0]))
    print("\n== loss curve", flush=True)
    print(f"wrote {plot_runs([run_dir])}")
    print(f"\nEverything is in {run_dir}/: config.json, metrics.jsonl, loss.png, checkpoints/{{best,last}}.npz")
    print(f"Continue training:   minigriffin train --resume {run_dir} --max_steps={2 * steps}")
    print(f"Sample again:        minigriffin sample {run_dir} --prompt 'Once upon a time'")
    return 0


def run_demo(quick=False):
    B, T, D = (2, 64, 16) if quick else (4, 2048, 256)
    repeats = 1 if quick else 5
    rng = np.random.default_rng(0)
    # RG-LRU-like inputs: multipliers close to one (long memory), a document boundary (a = 0) halfway.
    x = rng.standard_normal((B, T, D)).astype(np.float32)          # (B, T, D)
    a = rng.uniform(0.9, 0.999, (B, T, D)).astype(np.float32)      # (B, T, D)
    a[:, T // 2] = 0.0                                             # reset: the state restarts here
    dh = rng.standard_normal((B, T, D)).astype(np.float32)         # (B, T, D) an upstream gradient

    print(f"linear scan h_t = a_t * h_(t-1) + x_t over (B, T, D) = {(B, T, D)}, float32\n")
    h_ref, _ = linear_scan(x, a, backend="reference")
    grads_ref = linear_scan_backward(dh, None, a, h_ref, backend="reference")
    print(f"{'backend':<10} {'max |h - ref|':>14} {'max |dx - ref|':>15} {'fwd ms':>8} {'fwd+bwd ms':>11} {'speed-up':>9}")
    ref_ms = None
    for name in available_backends():
        print(f"{name:<10} ", end="", flush=True)
        start = time.perf_counter()
        h, _ = linear_scan(x, a, backend=name)                     # first call: Numba compiles here
        first_call = time.perf_counter() - start
        dx, _, _ = linear_scan_backward(dh, None, a, h, backend=name)

        def fwd_bwd():
            h, _ = linear_scan(x, a, backend=name)
            linear_scan_backward(dh, None, a, h, backend=name)

        fwd_ms = _best_ms(lambda: linear_scan(x, a, backend=name), repeats)
        total_ms = _best_ms(fwd_bwd, repeats)
        ref_ms = ref_ms or total_ms
        print(f"{np.abs(h - h_ref).max():>14.2e} {np.abs(dx - grads_ref[0]).max():>15.2e} {fwd_ms:>8.2f} "
              f"{total_ms:>11.2f} {ref_ms / total_ms:>8.1f}x"
              + (f"   (first call {first_call:.1f} s: JIT compile, cached on disk)" if first_call > 0.5 else ""))
    print("\nThe reset at t = T/2 in action: h there equals x exactly ->",
          bool(np.array_equal(h_ref[:, T // 2], x[:, T // 2])))
    print("Blelloch's parallel scan does ~2x the work of the loop: on a CPU the loop wins; on a GPU the tree wins.")
    print("Benchmarks against the memory floor: python benchmarks/bench_scan.py (results in docs/benchmarks.md)")
    return 0
