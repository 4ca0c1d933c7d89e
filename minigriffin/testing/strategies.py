"""Hypothesis strategies for scan inputs and the per-dtype tolerances that every scan test shares.

Hypothesis draws the *structure* (shapes, dtype, direction, h0 or not, the regime of `a`, the magnitude of x
and h0, a seed); the values come from a seeded NumPy generator, because Hypothesis is built for small data
and T*D reaches ~40k.
Regimes of `a`: uniform in [0, 1); exact zeros scattered in (document resets); the hard long-memory case
a = 1 - 10^-k (k = 1..6) on a random subset of channels, where a backward bug hides (accelerated-scan #15);
a = 1 exactly (a pure running sum) on a random subset of channels and scattered elements; and a = 0
everywhere (h = x, every step a reset).
Magnitudes of x and h0: uniform in [-10, 10] half the time; "huge", about the largest values whose scan and
gradients (|da| <= |g| |h|, up to 4 (T + 1)^2 max|x|) stay finite in the case's dtype (~1e37 in float32 for
T = 1, ~5e32 for T = 300); "tiny", log-uniform from the smallest subnormal (1.4e-45 in float32, 4.9e-324 in
float64) to 128 times the smallest normal number (1.2e-38 / 2.2e-308).

`scan_cases` is what minigriffin's own tests draw; `kernel_cases` adds the shapes where a hand-written kernel
breaks (lengths around chunk sizes, long sequences, wide channels, prime lengths) and the flags of
minigriffin.testing.check_scan_backend (time-slice views, dh_last).
"""

from typing import NamedTuple

import numpy as np
from hypothesis import strategies as st

from minigriffin.scan import linear_scan, linear_scan_backward

# Tolerances are relative to the *error scale* of each element: the same computation run on absolute values
# (scan of |x| with a >= 0, and likewise for the backward). Rounding errors of any summation order are bounded
# by a multiple of that scale, while cancellation can make |h| itself arbitrarily small, so this is the tight,
# honest yardstick. float64: 1e-12 (a sequential scan's bound is T*u = 300 * 1.1e-16 = 3e-14).
# float32: 2e-6, about 33 units of roundoff (u = 6e-8); over 300 random cases Blelloch's worst was 3.7e-7
# (its tree has 2 log2(T) + 2 <= 20 rounding levels) and numba matched the loop exactly.
# Underflow: below the smallest normal number `tiny` a product is rounded to a multiple of the smallest
# subnormal, an absolute error of up to u * tiny rather than a relative one (the standard model
# fl(p * q) = p q (1 + d) + e, |d| <= u, |e| <= u * tiny). So the error scales count every input of the
# absolute-value computation as at least `tiny` and every result as at least `tiny` more; above ~1e-30
# (float32) this changes nothing, and in the subnormal range it allows rtol / u (about 33 in float32) such
# absolute rounding errors per step, instead of a relative error that no summation order could meet.
RTOL = {np.dtype(np.float32): 2e-6, np.dtype(np.float64): 1e-12}
REGIMES = ("uniform", "near_one", "mixed", "one", "zero")
MAGNITUDES = ("normal", "huge", "tiny")
PRIMES = (2, 3, 5, 7, 11, 13, 17, 31, 61, 127, 251, 257, 509, 1021)
CHUNKS = (8, 16, 32, 64, 128, 256, 512)      # lengths kernels like to cut T into
KINDS = ("general", "chunk-boundary", "long", "wide")


class ScanCase(NamedTuple):
    x: np.ndarray        # (B, T, D)
    a: np.ndarray        # (B, T, D) in [0, 1]
    h0: np.ndarray | None  # (B, D)
    reverse: bool


class KernelCase(NamedTuple):
    """One example of check_scan_backend: the scan inputs, the backward's incoming gradients, and how they
    were drawn (for the report)."""
    case: ScanCase
    dh: np.ndarray               # (B, T, D)
    dh_last: np.ndarray | None   # (B, D)
    views: bool                  # also call the primitive on time-slice views of the inputs and of `out`
    info: dict                   # kind, regime, magnitude, k, zero_frac

    def __repr__(self):              # short: Hypothesis writes it into its notes on every failure
        c = self.case
        return (f"KernelCase(shape={c.x.shape}, dtype={c.x.dtype.name}, reverse={c.reverse}, "
                f"h0={c.h0 is not None}, dh_last={self.dh_last is not None}, views={self.views}, {self.info})")


def make_a(rng, shape, regime, k, zero_frac, dtype):
    """Multipliers in [0, 1] for one regime (see module docstring)."""
    B, T, D = shape
    if regime == "zero":
        return np.zeros(shape, dtype)                                         # every step a reset: h = x
    a = rng.uniform(0.0, 1.0, size=shape)
    if regime in ("near_one", "mixed"):
        channels = rng.random(D) < (1.0 if regime == "near_one" else 0.5)   # (D,) channels with long memory
        a[:, :, channels] = 1.0 - 10.0 ** (-k)
    if regime in ("one", "mixed"):
        a[:, :, rng.random(D) < 0.5] = 1.0                                   # exact running sums
        a[rng.random(shape) < 0.1] = 1.0                                     # and scattered exact ones
    if zero_frac > 0:
        a[rng.random(shape) < zero_frac] = 0.0                                # document resets
    return a.astype(dtype)


def make_values(rng, shape, magnitude, T, dtype):
    """x or h0 of one magnitude regime (see module docstring), in float64 before the cast to dtype."""
    if magnitude == "normal":
        return rng.uniform(-10, 10, size=shape)
    info = np.finfo(dtype)
    sign = rng.choice([-1.0, 1.0], size=shape)
    if magnitude == "huge":
        # |h| <= (T + 1) M and |g| <= sum |dh| + |dh_last| < 4 (T + 1) for the tests' N(0, 1) dh, so
        # |da| = |g h_prev| < 4 (T + 1)^2 M = max / 2: every result and every error scale stays finite.
        top = float(info.max) / (8.0 * (T + 1) ** 2)
        return sign * rng.uniform(0.5, 1.0, size=shape) * top
    assert magnitude == "tiny", magnitude
    low, high = np.log2(float(info.smallest_subnormal)), np.log2(float(info.tiny)) + 7.0
    return sign * np.exp2(rng.uniform(low, high, size=shape))


def _draw_values(draw, B, T, D, dtypes):
    """The scan inputs of one example, after its shape: (ScanCase, info dict, rng for further values)."""
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    regime = draw(st.sampled_from(["uniform", "near_one", "mixed", "one"] * 2 + ["zero"]))   # zero: 1 in 9
    magnitude = draw(st.sampled_from(["normal", "normal", "huge", "tiny"]))   # normal half the time
    k = draw(st.integers(1, 6))
    zero_frac = draw(st.sampled_from([0.0, 0.02, 0.3]))
    with_h0 = draw(st.booleans())
    reverse = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = make_values(rng, (B, T, D), magnitude, T, dtype).astype(dtype)
    a = make_a(rng, (B, T, D), regime, k, zero_frac, dtype)
    h0 = make_values(rng, (B, D), magnitude, T, dtype).astype(dtype) if with_h0 else None
    info = {"regime": regime, "magnitude": magnitude, "k": k, "zero_frac": zero_frac}
    return ScanCase(x, a, h0, reverse), info, rng


@st.composite
def scan_cases(draw, max_T=300, max_D=33, max_B=4, dtypes=(np.float32, np.float64), min_T=1):
    """Random ScanCase: B 1-4, T min_T-300 (T = min_T and odd lengths drawn on purpose), D 1-33."""
    B = draw(st.integers(1, max_B))
    T = max(min_T, draw(st.one_of(st.just(1), st.integers(1, 9), st.integers(1, max_T).map(lambda t: t | 1),
                                  st.integers(1, max_T))))
    D = draw(st.integers(1, max_D))
    return _draw_values(draw, B, T, D, dtypes)[0]


@st.composite
def kernel_cases(draw, dtypes=(np.float32, np.float64), max_long_T=4096):
    """Random KernelCase for check_scan_backend, of one of four kinds (KINDS):
    general: B 1-4, T 1-300 (T = 1, 1-9, odd, prime drawn on purpose), D 1-33;
    chunk-boundary: T = m * c + {-1, 0, 1} for chunk sizes c in CHUNKS and m = 1-3, B 1-2, D 1-8;
    long: T 1000-max_long_T, B 1-2, D 1-4 (accumulation drift, carries between chunks);
    wide: D 128-1024, T 1-16, B 1-2 (channel blocks, vector tails).
    Plus dh ~ N(0, 1), dh_last (or None) and whether to test time-slice views."""
    kind = draw(st.sampled_from(["general"] * 4 + ["chunk-boundary"] * 2 + ["long", "wide"]))
    if kind == "general":
        B, D = draw(st.integers(1, 4)), draw(st.integers(1, 33))
        T = draw(st.one_of(st.just(1), st.integers(1, 9), st.integers(1, 300).map(lambda t: t | 1),
                           st.integers(1, 300), st.sampled_from([p for p in PRIMES if p <= 300])))
    elif kind == "chunk-boundary":
        B, D = draw(st.integers(1, 2)), draw(st.integers(1, 8))
        T = draw(st.integers(1, 3)) * draw(st.sampled_from(CHUNKS)) + draw(st.sampled_from([0, -1, 1]))
    elif kind == "long":
        B, D = draw(st.integers(1, 2)), draw(st.integers(1, 4))
        T = draw(st.one_of(st.integers(1000, max_long_T), st.sampled_from((1021, max_long_T))))
    else:
        B, D, T = draw(st.integers(1, 2)), draw(st.integers(128, 1024)), draw(st.integers(1, 16))
    case, info, rng = _draw_values(draw, B, T, D, dtypes)
    dh = rng.standard_normal((B, T, D)).astype(case.x.dtype)
    dh_last = rng.standard_normal((B, D)).astype(case.x.dtype) if draw(st.booleans()) else None
    return KernelCase(case, dh, dh_last, draw(st.booleans()), {"kind": kind, **info})


def forward_error_scale(case):
    """|h| computed on absolute values with the reference backend, every input and result floored at the
    smallest normal number (see RTOL): the yardstick for forward rounding error. Returns (h, h_last) scales."""
    tiny = np.finfo(case.x.dtype).tiny
    h0 = None if case.h0 is None else np.abs(case.h0) + tiny
    h, last = linear_scan(np.abs(case.x) + tiny, case.a, h0, reverse=case.reverse, backend="reference")
    return h + tiny, last + tiny


def assert_within(actual, expected, scale, rtol, what):
    """|actual - expected| <= rtol * scale elementwise, with a message giving the worst element."""
    err = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    bound = rtol * scale.astype(np.float64)
    if not np.all(err <= bound):
        i = np.unravel_index(np.argmax(err - bound), err.shape)
        raise AssertionError(f"{what}: |{actual[i]!r} - {expected[i]!r}| = {err[i]:.3g} > {rtol} * scale "
                             f"{scale[i]:.3g} at {list(i)} ({int(np.sum(err > bound))} elements off)")


def backward_error_scales(case, dh, dh_last, h_abs=None):
    """(dx, da, dh0) scales: the reference backward run on absolute values (a >= 0 already), with the same
    floor at the smallest normal number as forward_error_scale. h_abs: forward_error_scale(case)[0], if known."""
    tiny = np.finfo(case.x.dtype).tiny
    h_abs = forward_error_scale(case)[0] if h_abs is None else h_abs
    h0 = None if case.h0 is None else np.abs(case.h0) + tiny
    dl = None if dh_last is None else np.abs(dh_last) + tiny
    dx, da, dh0 = linear_scan_backward(np.abs(dh) + tiny, dl, case.a, h_abs, h0, reverse=case.reverse,
                                       backend="reference")
    return dx + tiny, da + tiny, None if dh0 is None else dh0 + tiny
