"""Forward + backward throughput of minigriffin against recurrentgemma's PyTorch model on the same config.

    python benchmarks/bench_model.py                   # the config of record (below), 2 threads
    python benchmarks/bench_model.py --batch 2 --seq 128 --repeats 2     # a quick look

Config of record (issue 3): vocab 256, width 256, 6 blocks, 4 heads, MLP 768, sequence 512, batch 8, float32,
2 threads; Hawk, Griffin (window 128) and the MQA baseline (global: window = sequence). Both sides run the
same thing: forward, mean cross-entropy, backward to every parameter. recurrentgemma is built with
gradient_checkpointing=False (its default recomputes activations). Times are the best of --repeats after a
warm-up. Each measurement runs in its own child process, one after another: Numba's, OpenBLAS's and torch's
thread pools each spin-wait after their work, and sharing one process made both sides look several times
slower than they are. Also printed: the share of this machine's sgemm FLOP/s (one big float32 matmul, measured in the
same run) that minigriffin reaches, counting matmul FLOPs only (6 x parameters in matmuls x tokens, plus the
attention scores). Target: minigriffin >= 2x recurrentgemma for Hawk and Griffin. Record in docs/benchmarks.md.

    python benchmarks/bench_model.py --device gpu --batch 32 --seq 2048      # on a CUDA machine (issue 6)

--device gpu runs minigriffin on CuPy arrays (the same code; the scan is the CUDA kernel) and recurrentgemma
on torch's CUDA device (install a CUDA build of torch for that), synchronising the device before each clock
read; the peak is then one big float32 matmul on the GPU.
"""

import argparse
import os
import time

import numpy as np


def best_time(fn, repeats, sync=lambda: None):
    fn()                                                   # warm-up (Numba compiles, torch allocates)
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()                                             # GPU work is asynchronous: wait for it
        times.append(time.perf_counter() - start)
    return min(times)


def sgemm_flops(n=1024, repeats=5, device="cpu"):
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    if device == "gpu":
        from minigriffin.device import device_namespace
        cupy = device_namespace("gpu")                     # DeviceUnavailable says why when there is no GPU
        a = cupy.asarray(a)
        return 2 * n**3 / best_time(lambda: a @ a, repeats, cupy.cuda.Device().synchronize)
    seconds = best_time(lambda: a @ a, repeats)
    return 2 * n**3 / seconds


def matmul_flops(cfg, batch, seq):
    """Forward + backward matmul FLOPs of one step (backward = 2x forward)."""
    D, E, F, V = cfg.width, cfg.lru_width, cfg.mlp_expanded_width, cfg.vocab_size
    tokens = batch * seq
    per_token = V * D                                      # tied head
    for kind in cfg.block_types:
        per_token += 3 * D * F                             # ffw_up (2 branches) + ffw_down
        if kind == "recurrent":
            per_token += 3 * D * E + 2 * E * E // cfg.gate_blocks
        else:
            per_token += 2 * D * D + 2 * cfg.head_dim * D
            keys = min(seq, cfg.attention_window_size + 1)
            per_token += 2 * cfg.num_heads * keys * cfg.head_dim   # q.k and p.v
    return 6 * per_token * tokens


def minigriffin_step(cfg, params, tokens, segment_pos, targets, workers=1):
    """What `minigriffin train` runs for a batch: train.loss_and_grads (forward, mean cross-entropy, backward),
    with `workers` data-parallel threads on the CPU (minigriffin/fast/parallel.py; 1 = one thread of Python with
    OpenBLAS and Numba using their own threads)."""
    from minigriffin.data import Batch
    from minigriffin.train import loss_and_grads
    batch = Batch(tokens=tokens, targets=targets, segment_pos=segment_pos, mask=None)

    def step():
        return loss_and_grads(params, batch, cfg, workers=workers)
    return step


def recurrentgemma_step(cfg, params, tokens, segment_pos, targets, threads, device="cpu"):
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
    import torch
    from oracle_utils import torch_griffin
    torch.set_num_threads(threads)
    model = torch_griffin(cfg, params)
    t_tokens, t_pos = torch.from_numpy(tokens), torch.from_numpy(segment_pos)
    t_targets = torch.from_numpy(targets)
    if device == "gpu":
        if not torch.cuda.is_available():
            raise RuntimeError("--device gpu: torch has no CUDA device (install a CUDA build of torch)")
        model, t_tokens, t_pos, t_targets = (t.to("cuda") for t in (model, t_tokens, t_pos, t_targets))

    def step():
        model.zero_grad(set_to_none=True)
        logits, _ = model(t_tokens, t_pos, return_cache=False)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab_size), t_targets.reshape(-1))
        loss.backward()
    return step


def _config(family, seq):
    from minigriffin.config import GriffinConfig, block_pattern
    window = seq if family == "mqa" else 128
    return GriffinConfig(vocab_size=256, width=256, mlp_expanded_width=768, num_heads=4, lru_width=256,
                         block_types=block_pattern(family, 6), attention_window_size=window)


def _measure(args):
    """Child process: time one implementation on one family; print the seconds per step."""
    from minigriffin.params import init_params
    cfg = _config(args.family, args.seq)
    params = init_params(cfg, np.random.default_rng(1))
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 256, (args.batch, args.seq))
    targets = rng.integers(0, 256, (args.batch, args.seq))
    segment_pos = np.tile(np.arange(args.seq), (args.batch, 1))
    sync = lambda: None  # noqa: E731
    if args.measure == "minigriffin":
        if args.device == "gpu":
            from minigriffin.device import device_namespace
            from minigriffin.tree import to_device
            cupy = device_namespace("gpu")                 # a clear error when there is no usable GPU
            params, tokens, segment_pos, targets = to_device([params, tokens, segment_pos, targets], cupy)
            sync = cupy.cuda.Device().synchronize
        step = minigriffin_step(cfg, params, tokens, segment_pos, targets, args.workers)
    else:
        step = recurrentgemma_step(cfg, params, tokens, segment_pos, targets, args.threads, args.device)
        if args.device == "gpu":
            import torch
            sync = torch.cuda.synchronize
    print(best_time(step, args.repeats, sync))


def _child(args, what, family):
    import subprocess
    import sys
    env = dict(os.environ, NUMBA_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads),
               OPENBLAS_NUM_THREADS=str(args.threads))
    cmd = [sys.executable, __file__, "--measure", what, "--family", family, "--batch", str(args.batch),
           "--seq", str(args.seq), "--repeats", str(args.repeats), "--threads", str(args.threads),
           "--device", args.device, "--workers", str(args.workers)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{what} {family} failed:\n{out.stderr[-3000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-oracle", action="store_true", help="time minigriffin only")
    parser.add_argument("--workers", type=int, help="minigriffin's data-parallel threads (default: --threads on "
                        "the CPU, as `minigriffin train` does; 1 on the GPU)")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="default: %(default)s")
    parser.add_argument("--measure", choices=["minigriffin", "recurrentgemma"], help=argparse.SUPPRESS)
    parser.add_argument("--family", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.workers is None:
        args.workers = 1 if args.device == "gpu" else args.threads
    if args.measure:
        return _measure(args)

    if args.device == "gpu":
        peak = sgemm_flops(n=8192, device="gpu")
        import cupy
        name = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
        print(f"device: {name}; cupy {cupy.__version__}; sgemm (8192^3, float32) {peak / 1e12:.1f} TFLOP/s")
    else:
        peak = sgemm_flops()
        print(f"machine: {os.cpu_count()} CPUs; numpy {np.__version__}; sgemm (1024^3, float32) "
              f"{peak / 1e9:.1f} GFLOP/s")
    print(f"config: vocab 256, width 256, 6 blocks, 4 heads, MLP 768, seq {args.seq}, batch {args.batch}, "
          f"float32, {args.threads} threads; minigriffin with {args.workers} data-parallel worker(s); "
          f"best of {args.repeats}\n")
    print("| model | minigriffin tokens/s | recurrentgemma tokens/s | ratio | minigriffin share of sgemm FLOP/s |")
    print("|---|---|---|---|---|")
    n_tokens = args.batch * args.seq
    for family in ("hawk", "griffin", "mqa"):
        ours = _child(args, "minigriffin", family)
        share = matmul_flops(_config(family, args.seq), args.batch, args.seq) / ours / peak
        if args.skip_oracle:
            print(f"| {family} | {n_tokens / ours:,.0f} | - | - | {share:.0%} |", flush=True)
            continue
        theirs = _child(args, "recurrentgemma", family)
        print(f"| {family} | {n_tokens / ours:,.0f} | {n_tokens / theirs:,.0f} | {theirs / ours:.2f}x "
              f"| {share:.0%} |", flush=True)


if __name__ == "__main__":
    main()
