"""check_scan_backend: a scan backend against the NumPy reference, forward and backward, on Hypothesis's hard cases.

Each example (strategies.kernel_cases) runs the candidate three ways and compares with the reference backend:
  1. forward: linear_scan(x, a, h0, reverse=..., backend=NAME, out=buf), buf filled with NaN first, so a
     kernel that ignores `out` or skips elements leaves NaN behind;
  2. backward: linear_scan_backward(dh, dh_last, a, h_ref, h0, ...), the backward minigriffin builds on the
     candidate's primitive (it passes time-slice views: x = dh[:, :-1], h0 = g[:, T-1], ...), into NaN buffers;
  3. if the example says so: the primitive itself on time-slice views (x[:, 1:T+1] of a (B, T+2, D) array,
     NaN around them; h0 a (B, D) slice too), checking that nothing outside `out` is written.
It also checks that x, a and h0 are left unmodified. Tolerances (strategies.RTOL) are relative to each
element's error scale, the same computation on absolute values: float32 2e-6, float64 1e-12; twice that
for da = g * h_prev, a product of two rounded quantities.

On a disagreement Hypothesis shrinks the example to a small one, and check_scan_backend raises
ScanBackendMismatch with the report (report.py): the case, which output is off, the largest error and where,
the inputs along the offending channel. A backend that fails only sometimes is reported as nondeterministic.
"""

import itertools
from collections import Counter

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis.errors import Flaky
from hypothesis.reporting import with_reporter

from minigriffin.scan import linear_scan, linear_scan_backward, load_backend, register_backend, unregister_backend
from minigriffin.testing.report import Failure, ScanReport, categories
from minigriffin.testing.strategies import RTOL, backward_error_scales, forward_error_scale, kernel_cases

DTYPES = {"float32": (np.float32,), "float64": (np.float64,), "both": (np.float32, np.float64)}
RERUNS = 4                      # extra runs of a counterexample, to tell a nondeterministic backend
_temporary_names = itertools.count()


class ScanBackendMismatch(AssertionError):
    """A scan backend disagreed with the reference; the message is the report, `.report` the ScanReport."""

    def __init__(self, report):
        super().__init__(str(report))
        self.report = report


class _Mismatch(Exception):
    def __init__(self, failure):
        super().__init__(failure.quantity)
        self.failure = failure


def check_scan_backend(backend, max_examples=100, dtype="both", *, device="cpu", seed=None, max_long_T=4096):
    """Property-test a scan backend against the reference, forward and backward; returns a ScanReport.

    backend: a registered name, or a callable scan(x, a, h0, reverse, out) (registered under a temporary name
    for the run). max_examples: Hypothesis examples (about 40 ms each on a laptop, long ones more).
    dtype: "float32", "float64" (or the NumPy dtype) or "both". device: "cpu" (NumPy arrays) or "gpu" (CuPy arrays; the reference
    runs on the host). seed: an int for a reproducible run. max_long_T: the longest sequence drawn.
    Raises ScanBackendMismatch (an AssertionError) with the shrunk counterexample on a disagreement.
    """
    dtype = dtype if isinstance(dtype, str) else np.dtype(dtype).name      # np.float32 works too
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    if device not in ("cpu", "gpu"):
        raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
    if callable(backend):
        name = f"check-scan-{next(_temporary_names)}"
        register_backend(name, backend)
        try:
            return _check(name, max_examples, dtype, device, seed, max_long_T,
                          label=getattr(backend, "__name__", repr(backend)))
        finally:
            unregister_backend(name)
    load_backend(backend)                       # unknown or unavailable: the registry's clear error, now
    return _check(backend, max_examples, dtype, device, seed, max_long_T, label=backend)


def _check(name, max_examples, dtype, device, seed, max_long_T, label):
    xp = _array_module(device)
    cases, worst = Counter(), {}

    @settings(max_examples=max_examples, deadline=None, database=None, report_multiple_bugs=False,
              suppress_health_check=list(HealthCheck), phases=(Phase.explicit, Phase.generate, Phase.shrink))
    @given(kernel_cases(dtypes=DTYPES[dtype], max_long_T=max_long_T))
    def run(example):
        cases.update(categories(example))
        _check_example(name, example, xp, worst)

    if seed is not None:
        run = hypothesis_seed(seed)(run)
    failure = None
    try:
        with with_reporter(lambda text: None):      # the report below says it better than Hypothesis's log
            run()
    except _Mismatch as exc:
        failure = exc.failure
        _note_nondeterminism(name, failure, xp)
    except Flaky as exc:
        failure = _first_mismatch(exc)
        if failure is None:
            raise
        failure.notes.append("NONDETERMINISTIC: the failure did not happen again when Hypothesis ran the same "
                             "inputs (a race, uninitialised memory?); this example is not shrunk")
    return _finish(ScanReport(label, device, DTYPES[dtype], cases, worst, failure))


def _finish(report):
    if report.failure is not None:
        raise ScanBackendMismatch(report)
    return report


def _first_mismatch(exc):
    """The first _Mismatch inside a (nested) exception group, as a Failure, or None."""
    if isinstance(exc, _Mismatch):
        return exc.failure
    for inner in getattr(exc, "exceptions", ()):
        found = _first_mismatch(inner)
        if found is not None:
            return found
    return None


def _note_nondeterminism(name, failure, xp):
    """Run the counterexample RERUNS more times: if it passes on some, or the forward's output changes from run
    to run, say the backend is nondeterministic."""
    case = failure.example.case
    fails, outputs = 1, []
    for _ in range(RERUNS):
        try:
            _check_example(name, failure.example, xp, {})
        except _Mismatch:
            fails += 1
        out = xp.full(case.x.shape, np.nan, dtype=case.x.dtype)
        h0 = np.zeros_like(case.x[:, 0]) if case.h0 is None else case.h0
        try:
            with np.errstate(all="ignore"):
                load_backend(name).scan(*(xp.array(v, copy=True) for v in (case.x, case.a, h0)), case.reverse, out)
        except Exception:
            continue
        outputs.append(out if xp is np else xp.asnumpy(out))
    differ = any(not np.array_equal(o, outputs[0], equal_nan=True) for o in outputs[1:])
    if fails < RERUNS + 1 or differ:
        failure.notes.append(f"NONDETERMINISTIC: these inputs failed the check in {fails} of {RERUNS + 1} runs"
                             + (", and the forward gave different outputs from run to run" if differ else "")
                             + " (a race, uninitialised memory?)")


def _array_module(device):
    if device == "cpu":
        return np
    from minigriffin.device import device_namespace
    return device_namespace("gpu")                 # DeviceUnavailable says why when there is no usable GPU


def _check_example(name, example, xp, worst):
    """Raise _Mismatch at the first output of the candidate that is off; record the worst error per dtype."""
    case, dh, dh_last = example.case, example.dh, example.dh_last
    dtype = case.x.dtype
    rtol = RTOL[dtype]
    host = np.asarray if xp is np else xp.asnumpy
    dev = lambda v: None if v is None else xp.array(v, copy=True)  # noqa: E731
    x, a, h0 = dev(case.x), dev(case.a), dev(case.h0)           # copies: a backend must not modify them
    h_ref, last_ref = linear_scan(case.x, case.a, case.h0, reverse=case.reverse, backend="reference")
    scale_h, scale_last = forward_error_scale(case)
    backward_ref = linear_scan_backward(dh, dh_last, case.a, h_ref, case.h0, reverse=case.reverse,
                                        backend="reference")
    backward_scales = backward_error_scales(case, dh, dh_last, h_abs=scale_h)

    def compare(quantity, actual, expected, scale, tol):
        failure = _compare(quantity, example, host(actual), expected, scale, tol, worst, dtype)
        if failure is not None:
            raise _Mismatch(failure)

    def nan_like(v):
        return xp.full(v.shape, np.nan, dtype=v.dtype)

    try:
        h, last = linear_scan(x, a, h0, reverse=case.reverse, backend=name, out=nan_like(x))
    except Exception as exc:                       # report what it wrote, from the primitive itself
        failure = _diagnose(name, example, x, a, h0, h_ref, scale_h, rtol, xp, host, exc)
        raise _Mismatch(failure) from None
    compare("h (forward)", h, h_ref, scale_h, rtol)
    compare("h_last (forward)", last, last_ref, scale_last, rtol)
    try:
        got = linear_scan_backward(dev(dh), dev(dh_last), a, dev(h_ref), h0, reverse=case.reverse, backend=name,
                                   out=(nan_like(x), nan_like(x)))
    except Exception as exc:
        raise _Mismatch(Failure("backward (linear_scan_backward)", example, _describe(exc))) from None
    for quantity, g, r, s in zip(("dx", "da", "dh0"), got, backward_ref, backward_scales):
        if r is not None:                          # dh0 only with h0
            compare(f"{quantity} (backward)", g, r, s, 2 * rtol if quantity == "da" else rtol)
    if example.views:
        _check_views(name, example, h_ref, scale_h, rtol, xp, host, compare)
    for arg, before, after in (("x", case.x, x), ("a", case.a, a), ("h0", case.h0, h0)):
        if before is not None and not np.array_equal(host(after), before):
            index = tuple(int(i) for i in np.argwhere(host(after) != before)[0])
            raise _Mismatch(Failure(f"input {arg} (modified by the backend)", example, index=index,
                                    actual=float(host(after)[index])))


def _check_views(name, example, h_ref, scale_h, rtol, xp, host, compare):
    """The primitive on time slices big[:, 1:T+1] of (B, T + 2, D) arrays with NaN in the slots around them
    (the views linear_scan_backward passes, here with a padding step either side), h0 a (B, D) slice too."""
    case = example.case
    B, T, D = case.x.shape

    def padded(v):                                  # v at time slots 1..T of a NaN array of T + 2 slots
        big = xp.full((B, T + 2, D), np.nan, dtype=v.dtype)
        big[:, 1:T + 1] = xp.asarray(v)
        return big

    x_big, a_big, out_big = padded(case.x), padded(case.a), padded(np.full_like(case.x, np.nan))
    h0_big = xp.full((B, 3, D), np.nan, dtype=case.x.dtype)
    h0_big[:, 1] = xp.asarray(np.zeros((B, D), case.x.dtype) if case.h0 is None else case.h0)
    try:
        with np.errstate(all="ignore"):
            load_backend(name).scan(x_big[:, 1:T + 1], a_big[:, 1:T + 1], h0_big[:, 1], case.reverse,
                                    out_big[:, 1:T + 1])
    except Exception as exc:
        raise _Mismatch(Failure("h (primitive on time-slice views)", example, _describe(exc))) from None
    compare("h (primitive on time-slice views)", out_big[:, 1:T + 1], h_ref, scale_h, rtol)
    pads = host(out_big[:, [0, T + 1]])             # (B, 2, D): the slots before and after the slice
    if not np.isnan(pads).all():
        b, side, d = (int(i) for i in np.argwhere(~np.isnan(pads))[0])
        where = "just before its first step" if side == 0 else "just after its last step"
        raise _Mismatch(Failure(f"out (primitive on time-slice views): wrote outside `out`, {where}", example,
                                index=(b, 0 if side == 0 else T - 1, d), actual=float(pads[b, side, d])))


def _compare(quantity, example, actual, expected, scale, tol, worst, dtype):
    """None if |actual - expected| <= tol * scale everywhere (NaN counts as off); else a Failure at the worst
    element. Records the worst error / scale of this dtype in `worst`."""
    err = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    err[np.isnan(err)] = np.inf
    ratio = err / scale.astype(np.float64)
    i = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    top = float(ratio[i])
    key = dtype.name
    if key not in worst or top / tol > worst[key][0] / worst[key][1]:
        worst[key] = (top, tol, quantity.split(" ")[0], example.case.x.shape)
    if top <= tol:
        return None
    return Failure(quantity, example, None, tuple(int(j) for j in i), float(actual[i]), float(expected[i]),
                   float(scale[i]), tol, int(np.sum(ratio > tol)), int(ratio.size), output=actual)


def _diagnose(name, example, x, a, h0, h_ref, scale_h, rtol, xp, host, exc):
    """linear_scan raised: run the primitive directly into a NaN buffer and report what it wrote."""
    case = example.case
    out = xp.full(x.shape, np.nan, dtype=x.dtype)
    h0z = xp.zeros((x.shape[0], x.shape[2]), dtype=x.dtype) if h0 is None else h0
    try:
        with np.errstate(all="ignore"):
            load_backend(name).scan(x, a, h0z, case.reverse, out)
    except Exception:
        return Failure("h (forward)", example, _describe(exc))
    failure = _compare("h (forward)", example, host(out), h_ref, scale_h, rtol, {}, x.dtype)
    if failure is None:
        return Failure("h (forward)", example, _describe(exc))
    failure.error = _describe(exc)
    return failure


def _describe(exc):
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"
