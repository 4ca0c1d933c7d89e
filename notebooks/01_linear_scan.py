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
# # 1. The linear scan
#
# Paper: [De, Smith et al. 2024, "Griffin", arXiv 2402.19427](https://arxiv.org/abs/2402.19427), §2.4 (the recurrence of eq. 4). Docs: [docs/scan.md](../docs/scan.md).
#
# Every RG-LRU layer of Hawk and Griffin (De, Smith et al. 2024, eq. 4) ends in one recurrence,
#
# $$h_t = a_t \, h_{t-1} + x_t, \qquad t = 0, \dots, T-1, \qquad h_{-1} = h_\text{init},$$
#
# where $h_\text{init}$ is the state carried in from before the sequence (the argument `h0` of the code, zero by
# default; $h_0$ in the text is always the state *after* step 0). It is
# run independently for every batch row and channel of `(B, T, D)` arrays. This notebook shows what it computes,
# how Blelloch's parallel scan computes the same thing in $2\log_2 T$ rounds, why its backward pass is the same scan
# run backwards with `a` shifted by one step, and how the backends of `minigriffin.scan` compare on this machine.
#
# The derivations are in [docs/scan.md](../docs/scan.md); the code is in
# [minigriffin/scan/](../minigriffin/scan/).

# %%
import os
import time

import matplotlib.pyplot as plt
import numpy as np

from minigriffin import available_backends, linear_scan, linear_scan_backward
from minigriffin.gradcheck import assert_grads_close, rel_error

# Unset: small sizes that run in seconds. MINIGRIFFIN_FULL_RUN=1: the sizes quoted in the text.
FULL_RUN = os.environ.get("MINIGRIFFIN_FULL_RUN") == "1"
plt.rcParams.update({"figure.dpi": 72, "savefig.dpi": 72, "font.size": 9})
rng = np.random.default_rng(0)
print("full run" if FULL_RUN else "small run (set MINIGRIFFIN_FULL_RUN=1 for the full sizes)")

# %% [markdown]
# ## The recurrence, and what it adds up to
#
# Unrolling the recurrence shows that $h$ is a *linear* function of $x$ (and of $h_\text{init}$): every input $x_s$
# reaches $h_t$ multiplied by all the gates in between,
#
# $$h_t = \sum_{s \le t} \Big(\prod_{r=s+1}^{t} a_r\Big) x_s + \Big(\prod_{r=0}^{t} a_r\Big) h_\text{init} .$$
#
# So the scan is a product with a lower-triangular matrix $M_{ts} = \prod_{r=s+1}^{t} a_r$. Building that matrix
# costs $O(T^2)$; the scan gets the same numbers in $O(T)$. Below, a naive loop and the matrix are checked against
# the package's `reference` backend (a plain NumPy loop over time).

# %%
T = 8
x = rng.standard_normal((1, T, 1))                     # (B, T, D) = (1, 8, 1), float64
a = rng.uniform(0.5, 1.0, (1, T, 1))                   # (B, T, D)
h0 = rng.standard_normal((1, 1))                       # (B, D): h_init

# naive version: the recurrence as written
h_naive, prev = np.empty(T), h0[0, 0]
for t in range(T):
    prev = a[0, t, 0] * prev + x[0, t, 0]
    h_naive[t] = prev

# the same numbers as a matrix product: M[t, s] = a[s+1] * ... * a[t]
av = a[0, :, 0]
M = np.array([[np.prod(av[s + 1:t + 1]) if s <= t else 0.0 for s in range(T)] for t in range(T)])   # (T, T)
h_matrix = M @ x[0, :, 0] + np.cumprod(av) * h0[0, 0]

h, h_last = linear_scan(x, a, h0, backend="reference")  # (1, T, 1), (1, 1)
assert np.allclose(h_naive, h[0, :, 0], rtol=1e-13, atol=0)    # float64
assert np.allclose(h_matrix, h[0, :, 0], rtol=1e-13, atol=0)   # float64
assert h_last[0, 0] == h[0, -1, 0]
print("h =", np.round(h[0, :, 0], 4))
print("M (lower triangular, products of gates):\n", np.round(M, 2))

# %% [markdown]
# ## Blelloch's parallel scan, step by step
#
# Describe step $t$ by the pair $(a_t, x_t)$, the map $h \mapsto a_t h + x_t$. Doing step 1 and then step 2 is again
# such a map,
#
# $$(a_1, x_1) \circ (a_2, x_2) = (a_1 a_2,\; a_2 x_1 + x_2),$$
#
# and composing maps is associative. So $h_t$ is a *prefix* of compositions, and prefixes can be computed as a tree
# (Blelloch 1990): an **up-sweep** that builds partial compositions of 2, 4, 8, ... neighbouring steps, and a
# **down-sweep** that hands every position the composition of everything before it. Each round is one vectorised
# operation over all the slots it touches; there are $2 \log_2 T$ rounds instead of $T$ steps.
#
# The naive version below records, for every slot and every round, *which steps* its pair composes (`"2:3"` = steps
# 2 to 3, `"·"` = the identity), while computing the numbers alongside. It is checked against the package's
# `blelloch` backend, then drawn.

# %%
left, right = rng.uniform(0.5, 1, 3), rng.standard_normal(3)
p1, p2, p3 = zip(left, right)
compose = lambda p, q: (p[0] * q[0], q[0] * p[1] + q[1])   # noqa: E731  (a1, x1) o (a2, x2)
assert np.allclose(compose(compose(p1, p2), p3), compose(p1, compose(p2, p3)))   # associative


def blelloch_traced(a, x):
    """naive version: Blelloch's scan on 1-D arrays of power-of-two length, recording every round."""
    N = len(a)
    A, X = a.astype(float).copy(), x.astype(float).copy()
    span_of = [(i, i) for i in range(N)]                  # which steps each slot composes; None = identity
    rounds = [("input", [], span_of.copy())]

    def join(s, t):
        return t if s is None else s if t is None else (s[0], t[1])

    d = 1
    while d < N:                                          # up-sweep
        pairs = [(i - d, i) for i in range(2 * d - 1, N, 2 * d)]
        for l, r in pairs:
            A[r], X[r] = A[l] * A[r], A[r] * X[l] + X[r]
            span_of[r] = join(span_of[l], span_of[r])
        rounds.append((f"up-sweep, span {2 * d}", pairs, span_of.copy()))
        d *= 2
    A[-1], X[-1], span_of[-1] = 1.0, 0.0, None
    rounds.append(("clear the root", [], span_of.copy()))
    d = N // 2
    while d >= 1:                                         # down-sweep
        pairs = [(i - d, i) for i in range(2 * d - 1, N, 2 * d)]
        for l, r in pairs:
            (A[l], X[l]), (A[r], X[r]) = (A[r], X[r]), (A[r] * A[l], A[l] * X[r] + X[l])
            span_of[l], span_of[r] = span_of[r], join(span_of[r], span_of[l])
        rounds.append((f"down-sweep, span {2 * d}", pairs, span_of.copy()))
        d //= 2
    h = a * X + x                                         # exclusive prefix, then apply step i itself
    rounds.append(("apply own step", [], [join(s, (i, i)) for i, s in enumerate(span_of)]))
    return h, rounds


a8, x8 = rng.uniform(0.5, 1.0, 8), rng.standard_normal(8)
h_tree, rounds = blelloch_traced(a8, x8)
h_pkg, _ = linear_scan(x8.reshape(1, 8, 1), a8.reshape(1, 8, 1), backend="blelloch")
assert np.allclose(h_tree, h_pkg[0, :, 0], rtol=1e-13, atol=0)      # float64
assert rounds[-1][2] == [(0, i) for i in range(8)]                   # slot i ends holding steps 0..i
print("T = 8: 2 log2(8) = 6 tree rounds, plus clearing the root and one elementwise step; the loop takes 8 "
      "dependent steps. The gap grows with T (below).")

# %%
fig, ax = plt.subplots(figsize=(8.5, 5.6))
label = lambda s: "·" if s is None else (f"{s[0]}" if s[0] == s[1] else f"{s[0]}:{s[1]}")   # noqa: E731
for row, (name, pairs, spans) in enumerate(rounds):
    y = -row
    touched = {r for _, r in pairs} if name.startswith("up") else {i for p in pairs for i in p}   # slots written
    for i, s in enumerate(spans):
        colour = ("#c6dbef" if name.startswith("up") else "#fdd0a2") if i in touched else "#f0f0f0"
        ax.add_patch(plt.Rectangle((i - 0.4, y - 0.3), 0.8, 0.6, facecolor=colour, edgecolor="grey", lw=0.6))
        ax.text(i, y, label(s), ha="center", va="center", fontsize=8)
    ax.text(-0.7, y, name, ha="right", va="center", fontsize=8)
    for l, r in pairs:
        style = dict(arrowstyle="->", lw=0.9, shrinkA=7, shrinkB=9)
        if name.startswith("up"):   # right <- left o right
            ax.annotate("", xy=(r, y), xytext=(l, y + 1), arrowprops=dict(color="C0", **style))
        else:                       # left <- right (the prefix); right <- prefix o left
            ax.annotate("", xy=(l, y), xytext=(r, y + 1), arrowprops=dict(color="C1", **style))
            ax.annotate("", xy=(r, y), xytext=(l, y + 1), arrowprops=dict(color="C1", ls="--", **style))
ax.set_xlim(-3.3, 7.6)
ax.set_ylim(-len(rounds) + 0.4, 0.6)
ax.set_xticks(range(8), [f"slot {i}" for i in range(8)])
ax.set_yticks([])
for side in ("top", "right", "left"):
    ax.spines[side].set_visible(False)
ax.set_title("Blelloch scan on T = 8: each box shows which steps its pair composes (· = identity)")
plt.show()

# %% [markdown]
# Reading the figure from the top: the up-sweep (blue) combines neighbours into spans of 2, 4 and 8 steps, so slot 7
# ends holding the whole sequence `0:7`. The root is then cleared to the identity, and the down-sweep (orange) pushes
# prefixes down the tree: a left child receives its parent's prefix (solid arrow), a right child receives the prefix
# followed by its left sibling's span (dashed). Afterwards slot $i$ holds steps `0:i-1` (an *exclusive* scan), and
# one last elementwise step applies step $i$ itself.
#
# The tree does about twice the arithmetic of the loop, but its depth is $2\log_2 T$ instead of $T$. That trade pays
# off on a GPU with thousands of idle threads; on a CPU, whose few cores are already kept busy by the $B \cdot D$
# independent channels, the plain loop wins (timings at the end).

# %%
for T_ in (8, 1024, 2 ** 20):
    print(f"T = {T_:>9,}: loop depth {T_:>9,} steps; tree depth {2 * int(np.log2(T_)):>3} rounds, "
          f"about {2 * T_:>9,} compositions")

# %% [markdown]
# ## The backward pass is a reverse scan with `a` shifted left
#
# Let $dh_t$ be the gradient arriving directly at $h_t$ and $g_t$ the *total* gradient of the loss with respect to
# $h_t$, including what reaches it through later states. $h_t$ feeds only $h_{t+1} = a_{t+1} h_t + x_{t+1}$, so
#
# $$g_t = dh_t + a_{t+1}\, g_{t+1}, \qquad g_{T-1} = dh_{T-1} + dh_\text{last}.$$
#
# That is the same recurrence run from the end, with input $dh$ and multiplier $a_{t+1}$: a reverse scan of $dh$ with
# `a` shifted left by one step. Every other gradient is then local:
# $dx_t = g_t$, $da_t = g_t\, h_{t-1}$ (with $h_{-1} = h_\text{init}$), $dh_\text{init} = a_0\, g_0$.
#
# Below, `linear_scan(..., reverse=True)` with a shifted `a` reproduces `linear_scan_backward`'s `dx`, and then
# `minigriffin.gradcheck` compares all three gradients with central finite differences in float64, for two draws of
# the gates:
#
# * **uniform in [0, 1)**: neighbouring gates differ by order one, so a *local* mistake shows at once (using $a_t$
#   where $a_{t+1}$ belongs, say). But $g_0$ contains $dh_{T-1}$ times $a_1 a_2 \cdots a_{T-1}$, and with such gates
#   that product vanishes within a few steps: a mistake in how the gradient travels *far* (the carried-in
#   $dh_\text{last}$ dropped, a reverse scan that stops early or restarts in the middle, as a blocked backend could)
#   would hide in the tolerance.
# * **near 1** ($a = 1 - 10^{u}$, $u$ uniform in $[-6, -2]$, RG-LRU-like): the gradient of the last output reaches
#   the first input almost undiminished, so a far-travel mistake is an error of order one.

# %%
B, T, D = 2, 13, 3                                                   # T not a power of two
x = rng.standard_normal((B, T, D))                                   # (B, T, D) float64
h0 = rng.standard_normal((B, D))                                     # (B, D): h_init
dh = rng.standard_normal((B, T, D))                                  # (B, T, D) upstream gradient
dh_last = rng.standard_normal((B, D))                                # (B, D)
gate_draws = {"uniform in [0, 1)": rng.uniform(0.0, 1.0, (B, T, D)),                 # (B, T, D)
              "near 1": 1 - 10 ** rng.uniform(-6, -2, (B, T, D))}                     # (B, T, D)

for draw, a in gate_draws.items():
    h, _ = linear_scan(x, a, h0)
    dx, da, dh0 = linear_scan_backward(dh, dh_last, a, h, h0)

    # a_{t+1}; past the end a 1, so the reverse scan's initial state dh_last enters g_{T-1} unchanged
    a_shifted = np.concatenate([a[:, 1:], np.ones((B, 1, D))], axis=1)   # (B, T, D)
    g, _ = linear_scan(dh, a_shifted, dh_last, reverse=True)             # (B, T, D)
    assert np.allclose(g, dx, rtol=1e-13, atol=1e-15)                     # float64
    h_prev = np.concatenate([h0[:, None], h[:, :-1]], axis=1)            # (B, T, D): h_{t-1}
    assert np.allclose(da, g * h_prev, rtol=1e-13, atol=1e-15)            # float64

    reports = assert_grads_close(
        lambda x, a, h0: linear_scan(x, a, h0, backend="reference"),      # outputs (h, h_last)
        {"x": x, "a": a, "h0": h0}, {"x": dx, "a": da, "h0": dh0}, (dh, dh_last), rtol=1e-7, atol=1e-10)
    reach = np.prod(a[:, 1:], axis=1)                                    # (B, D): a_1 ... a_(T-1)
    print(f"gates {draw}: a_1 a_2 ... a_(T-1), the share of dh_(T-1) that reaches g_0: median "
          f"{np.median(reach):.1e}")
    for r in reports:
        print(f"  {r.name:>3}: {r.checked} elements checked, max relative error {r.max_rel_error:.1e}")
check_inputs = (x, h0, dh, dh_last)                                  # kept for the exercise at the end

# %% [markdown]
# With uniform gates almost nothing of the last output's gradient reaches the first input; with gates near 1
# nearly all of it does, so the check sees the whole path. The plot shows how far back one output's gradient reaches
# for a few gate values.

# %%
T = 4096 if FULL_RUN else 1024
fig, ax = plt.subplots(figsize=(6, 3))
for value in (0.9, 0.99, 0.999, 1 - 1e-6):
    a = np.full((1, T, 1), value)
    dh = np.zeros((1, T, 1))
    dh[0, -1] = 1.0                                                    # gradient of the last output only
    dx, _, _ = linear_scan_backward(dh, None, a, np.zeros_like(a))
    ax.plot(np.arange(T), dx[0, :, 0], label=f"a = {value:g}")
ax.set_yscale("log")
ax.set_ylim(1e-6, 2)
ax.set_xlabel("input position s")
ax.set_ylabel(r"$\partial h_{T-1} / \partial x_s$")
ax.set_title(f"How far back the last output's gradient reaches (T = {T})")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## The backends on this machine
#
# `linear_scan` has one interface and several backends (`available_backends()` lists those that can run here):
# `reference` (the NumPy loop, the oracle), `blelloch` (the tree above, in NumPy), `numba` (a compiled loop,
# parallel over batch rows and channel blocks; the CPU default) and `cupy` (CUDA kernels, when a GPU is present).
# The backward is written once on top of each backend's scan, so all of them get it for free.
#
# Each backend is first checked against `reference` in float32, then timed (best of a few runs, after one warm-up
# call that also triggers Numba's compilation). The numbers depend on this machine and on what else runs on it.

# %% tags=["numbers-vary"]
B, T, D = (4, 4096, 256) if FULL_RUN else (2, 1024, 64)
repeats = 5 if FULL_RUN else 3
x = rng.standard_normal((B, T, D)).astype(np.float32)                 # (B, T, D)
a = rng.uniform(0.9, 0.999, (B, T, D)).astype(np.float32)             # (B, T, D) RG-LRU-like gates
dh = rng.standard_normal((B, T, D)).astype(np.float32)                # (B, T, D)
h_ref, _ = linear_scan(x, a, backend="reference")
dx_ref, _, _ = linear_scan_backward(dh, None, a, h_ref, backend="reference")


def best_ms(fn):
    fn()                                                              # warm-up (and JIT compilation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def forward_backward(name):
    h, _ = linear_scan(x, a, backend=name)
    linear_scan_backward(dh, None, a, h, backend=name)


timings = {}
print(f"(B, T, D) = {(B, T, D)}, float32, {os.cpu_count()} CPUs")
print(f"{'backend':<10} {'rel err h':>10} {'rel err dx':>11} {'forward ms':>11} {'fwd+bwd ms':>11}")
for name in available_backends():
    if name == "cupy":                                                # it takes CuPy (GPU) arrays: docs/gpu.md
        print("cupy       (available: it scans CuPy arrays on the GPU; see docs/gpu.md and benchmarks/bench_scan.py)")
        continue
    h, _ = linear_scan(x, a, backend=name)
    dx, _, _ = linear_scan_backward(dh, None, a, h, backend=name)
    err_h, err_dx = rel_error(h, h_ref), rel_error(dx, dx_ref)
    assert err_h < 1e-5 and err_dx < 1e-5, (name, err_h, err_dx)      # float32 (tree order rounds differently)
    timings[name] = (best_ms(lambda: linear_scan(x, a, backend=name)), best_ms(lambda: forward_backward(name)))
    print(f"{name:<10} {err_h:>10.1e} {err_dx:>11.1e} {timings[name][0]:>11.2f} {timings[name][1]:>11.2f}")

# %% tags=["numbers-vary"]
fig, ax = plt.subplots(figsize=(6, 2.6))
names = list(timings)
ax.barh(np.arange(len(names)) + 0.2, [timings[n][0] for n in names], height=0.4, label="forward")
ax.barh(np.arange(len(names)) - 0.2, [timings[n][1] for n in names], height=0.4, label="forward + backward")
ax.set_yticks(range(len(names)), names)
ax.set_xscale("log")
ax.set_xlabel("milliseconds (log scale, best of a few runs)")
ax.set_title(f"linear scan backends, (B, T, D) = {(B, T, D)}, float32")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# On a CPU the compiled loop (`numba`) is the fastest: it reads `a` and `x` and writes `h` once, at memory speed.
# The NumPy `reference` loop pays Python overhead per time step, and `blelloch` makes a full memory pass per tree
# round. [docs/benchmarks.md](../docs/benchmarks.md) measures the backends against the memory-bandwidth floor at
# larger sizes (`python benchmarks/bench_scan.py`).
#
# Wrote a scan kernel of your own? [docs/testing-kernels.md](../docs/testing-kernels.md) registers it, tests it as
# these backends are tested, and benchmarks it.
#
# ## Your turn
#
# The backward above feeds the reverse scan with `a` shifted left by one step. Suppose you forgot the shift (`shift
# = 0` below: the reverse scan multiplies by $a_t$ instead of $a_{t+1}$). **Predict first**: which of the two gate
# draws of the gradient check shows the mistake, and roughly how large is the relative error of `dx` for each: about
# $10^{-1}$, $10^{-3}$, $10^{-6}$? Then run the cell, and set `shift = 1` to see the errors vanish.

# %%
shift = 0                                                             # 1 is right; 0 forgets the shift
x, h0, dh, dh_last = check_inputs                                     # the gradient check's inputs
B, T, D = x.shape
for draw, a in gate_draws.items():
    h, _ = linear_scan(x, a, h0)
    dx, _, _ = linear_scan_backward(dh, dh_last, a, h, h0)                # the right gradient
    a_used = np.concatenate([a[:, shift:], np.ones((B, shift, D))], axis=1)   # (B, T, D)
    g, _ = linear_scan(dh, a_used, dh_last, reverse=True)
    print(f"gates {draw:<18} shift = {shift}: relative error of dx {rel_error(g, dx):.1e}")

# %% [markdown]
# (Once you have run it: the uniform draw shows the mistake plainly, because neighbouring gates differ by order one;
# near 1, $a_t \approx a_{t+1}$ and the mistake is hundreds of times smaller. Each draw catches what the other
# misses, which is why the check runs both.)
#
# Next: [the RG-LRU](02_rglru.ipynb), which wraps this scan in gates.
