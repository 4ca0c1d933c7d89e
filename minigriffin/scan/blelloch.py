"""Blelloch's work-efficient parallel scan in NumPy: the teaching version of what GPUs and TPUs do.

The recurrence h_t = a_t * h_{t-1} + x_t is a prefix "sum" under the associative operator on pairs

    (a1, x1) o (a2, x2) = (a1 * a2,  a2 * x1 + x2)        # apply step 1, then step 2

so it can be computed in 2 log2(T) rounds (an up-sweep that builds a tree of partial compositions and a
down-sweep that hands every position the composition of everything before it), each round being one
vectorised NumPy operation over all positions it touches. On a CPU the plain loop in `reference.py` or
`numba_cpu.py` is faster: the parallel scan does about twice the arithmetic and many more memory passes,
and a CPU has too few lanes to profit (mamba.py issue #57 found the same). See docs/scan.md.
"""

import numpy as np


def _combine(a_first, x_first, a_second, x_second):
    """(a1, x1) o (a2, x2) = (a1 a2, a2 x1 + x2). Returns fresh arrays."""
    return a_first * a_second, a_second * x_first + x_second


def scan(x, a, h0, reverse, out):
    """Write the scan of x with multipliers a, starting from h0, into out (same contract as reference.scan)."""
    if reverse:  # a reverse scan is a forward scan of the time-flipped sequence
        scan(x[:, ::-1], a[:, ::-1], h0, False, out[:, ::-1])
        return out
    B, T, D = x.shape
    N = 1 << (T - 1).bit_length()                 # next power of two >= T
    # Pad with the identity element (a=1, x=0) so every tree level is full.
    A = np.ones((B, N, D), dtype=x.dtype)         # (B, N, D) running compositions: multiplier part
    X = np.zeros((B, N, D), dtype=x.dtype)        # (B, N, D) running compositions: additive part
    A[:, :T] = a
    X[:, :T] = x
    # Fold h0 into the first element: h_0 = a_0 h0 + x_0, after which the scan starts from zero.
    X[:, 0] = a[:, 0] * h0 + x[:, 0]
    first_x = X[:, 0].copy()                      # (B, D) the folded first element, needed at the end

    # Up-sweep: after round d, position i = k 2^(d+1) - 1 holds the composition of its 2^(d+1) leaves.
    span = 1
    while span < N:
        left = slice(span - 1, N, 2 * span)       # last leaf of each left subtree
        right = slice(2 * span - 1, N, 2 * span)  # last leaf of each right subtree (the parent slot)
        A[:, right], X[:, right] = _combine(A[:, left], X[:, left], A[:, right], X[:, right])
        span *= 2

    # Down-sweep: turn the tree into an *exclusive* prefix: slot i ends up holding
    # the composition of elements 0 .. i-1 (the identity for i = 0).
    A[:, N - 1] = 1
    X[:, N - 1] = 0
    span = N // 2
    while span >= 1:
        left = slice(span - 1, N, 2 * span)
        right = slice(2 * span - 1, N, 2 * span)
        A_left, X_left = A[:, left].copy(), X[:, left].copy()   # composition of the left subtree
        A[:, left], X[:, left] = A[:, right], X[:, right]        # left child inherits the prefix
        # right child: prefix, then the left subtree
        A[:, right], X[:, right] = _combine(A[:, right], X[:, right], A_left, X_left)
        span //= 2

    # Inclusive result: h_t = (prefix before t) o (element t); the additive part is a_t * X_t + x_t.
    np.multiply(a[:, 1:], X[:, 1:T], out=out[:, 1:])
    out[:, 1:] += x[:, 1:]
    out[:, 0] = first_x                           # the prefix before t=0 is the identity
    return out
