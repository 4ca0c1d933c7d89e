"""`minigriffin demo` (what `make demo` runs): the linear scan at the heart of the RG-LRU, on every backend.

For now the demo shows the scan backends agreeing with the NumPy reference and how fast each is; once the
training issue lands, `make demo` trains a small Griffin on books instead.
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
