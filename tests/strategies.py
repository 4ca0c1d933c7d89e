"""Hypothesis strategies for scan inputs, and the per-dtype tolerance table the scan tests share.

Hypothesis draws the *structure* (shapes, dtype, direction, h0 or not, the regime of `a`, a seed); the
values come from a seeded NumPy generator, because Hypothesis is built for small data and T*D reaches ~40k.
Regimes of `a`: uniform in [0, 1); exact zeros scattered in (document resets); and the hard long-memory
case a = 1 - 10^-k (k = 1..6) on a random subset of channels, where a backward bug hides (accelerated-scan #15).
"""

from typing import NamedTuple

import numpy as np
from hypothesis import strategies as st

from minigriffin.config import make_config
from minigriffin.params import init_params
from minigriffin.scan import linear_scan, linear_scan_backward

# Tolerances are relative to the *error scale* of each element: the same computation run on absolute values
# (scan of |x| with a >= 0, and likewise for the backward). Rounding errors of any summation order are bounded
# by a multiple of that scale, while cancellation can make |h| itself arbitrarily small, so this is the tight,
# honest yardstick. float64: 1e-12 (a sequential scan's bound is T*u = 300 * 1.1e-16 = 3e-14).
# float32: 2e-6, about 33 units of roundoff (u = 6e-8); over 300 random cases Blelloch's worst was 3.7e-7
# (its tree has 2 log2(T) + 2 <= 20 rounding levels) and numba matched the loop exactly.
RTOL = {np.dtype(np.float32): 2e-6, np.dtype(np.float64): 1e-12}


class ScanCase(NamedTuple):
    x: np.ndarray        # (B, T, D)
    a: np.ndarray        # (B, T, D) in [0, 1]
    h0: np.ndarray | None  # (B, D)
    reverse: bool


def make_a(rng, shape, regime, k, zero_frac, dtype):
    """Multipliers in [0, 1] for one regime (see module docstring)."""
    B, T, D = shape
    a = rng.uniform(0.0, 1.0, size=shape)
    if regime in ("near_one", "mixed"):
        channels = rng.random(D) < (1.0 if regime == "near_one" else 0.5)   # (D,) channels with long memory
        a[:, :, channels] = 1.0 - 10.0 ** (-k)
    if zero_frac > 0:
        a[rng.random(shape) < zero_frac] = 0.0                                # document resets
    return a.astype(dtype)


@st.composite
def scan_cases(draw, max_T=300, max_D=33, max_B=4, dtypes=(np.float32, np.float64)):
    """Random ScanCase: B 1-4, T 1-300 (T=1 and odd lengths drawn on purpose), D 1-33."""
    B = draw(st.integers(1, max_B))
    T = draw(st.one_of(st.just(1), st.integers(1, 9), st.integers(1, max_T).map(lambda t: t | 1),
                       st.integers(1, max_T)))
    D = draw(st.integers(1, max_D))
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    regime = draw(st.sampled_from(["uniform", "near_one", "mixed"]))
    k = draw(st.integers(1, 6))
    zero_frac = draw(st.sampled_from([0.0, 0.02, 0.3]))
    with_h0 = draw(st.booleans())
    reverse = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.uniform(-10, 10, size=(B, T, D)).astype(dtype)
    a = make_a(rng, (B, T, D), regime, k, zero_frac, dtype)
    h0 = rng.uniform(-10, 10, size=(B, D)).astype(dtype) if with_h0 else None
    return ScanCase(x, a, h0, reverse)


def forward_error_scale(case):
    """|h| computed on absolute values with the reference backend: the yardstick for forward rounding error."""
    h0 = None if case.h0 is None else np.abs(case.h0)
    return linear_scan(np.abs(case.x), case.a, h0, reverse=case.reverse, backend="reference")


def assert_within(actual, expected, scale, rtol, what):
    """|actual - expected| <= rtol * scale elementwise, with a message giving the worst element."""
    err = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    bound = rtol * scale.astype(np.float64)
    if not np.all(err <= bound):
        i = np.unravel_index(np.argmax(err - bound), err.shape)
        raise AssertionError(f"{what}: |{actual[i]!r} - {expected[i]!r}| = {err[i]:.3g} > {rtol} * scale "
                             f"{scale[i]:.3g} at {list(i)} ({int(np.sum(err > bound))} elements off)")


def backward_error_scales(case, dh, dh_last):
    """(dx, da, dh0) scales: the reference backward run on absolute values (a >= 0 already)."""
    h_abs, _ = forward_error_scale(case)
    h0 = None if case.h0 is None else np.abs(case.h0)
    dl = None if dh_last is None else np.abs(dh_last)
    return linear_scan_backward(np.abs(dh), dl, case.a, h_abs, h0, reverse=case.reverse, backend="reference")


def tiny_model(case, dtype="float64", seed=0):
    """(cfg, params, rng) for a test case {"preset": ..., **overrides}, reference scan, with non-zero norm
    scales so every code path carries weight (init makes them 0). rng continues after the draws, for inputs."""
    cfg = make_config(case["preset"], dtype=dtype, scan_backend="reference",
                      **{k: v for k, v in case.items() if k != "preset"})
    rng = np.random.default_rng(seed)
    params = init_params(cfg, rng)
    for block in params["blocks"]:
        for norm in ("temporal_pre_norm", "channel_pre_norm"):
            block[norm]["scale"] = (0.1 * rng.standard_normal(cfg.width)).astype(dtype)
    return cfg, params, rng


def run_chunks(params, tokens, segment_pos, cfg, sizes, state=None):
    """inference.forward_chunk over consecutive chunks of the given sizes (1s: token by token); returns all
    the logits, concatenated, and the final state."""
    from minigriffin.inference import forward_chunk, init_state
    state = init_state(cfg, tokens.shape[0]) if state is None else state
    outs, start = [], 0
    for size in sizes:
        logits, state = forward_chunk(params, tokens[:, start:start + size], segment_pos[:, start:start + size],
                                      cfg, state)
        outs.append(logits)
        start += size
    assert start == tokens.shape[1]
    return np.concatenate(outs, axis=1), state


def assert_close_to_scale(actual, expected, tol):
    """|actual - expected| <= tol * (|expected| + max |expected|): relative, with the largest value's scale as
    the floor (logits near 0 carry the rounding of their neighbours)."""
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * np.abs(expected).max())
