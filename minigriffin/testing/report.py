"""What check_scan_backend reports (ScanReport, and Failure for a counterexample) and its text: cases tried per
category, worst error per dtype, and on a failure the shrunk counterexample (the case, the output that is off,
the largest error and where, the inputs along the offending channel, and a snippet that reproduces it when the
arrays are small)."""

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from minigriffin.scan import backend_names, linear_scan, linear_scan_backward
from minigriffin.testing.strategies import KINDS, MAGNITUDES, REGIMES, RTOL

REPRODUCE_MAX_ELEMENTS = 48     # print the whole arrays as a runnable snippet up to this size of x
WINDOW = 6                      # steps shown either side of the worst one


@dataclass
class Failure:
    """Where a backend disagreed with the reference, on one example (the shrunk counterexample)."""
    quantity: str                     # which output: "h (forward)", "da (backward)", ...
    example: object                   # the KernelCase
    error: str | None = None          # what the backend raised, if it raised
    index: tuple | None = None        # the worst element
    actual: float | None = None
    expected: float | None = None
    scale: float | None = None
    tol: float | None = None
    n_off: int = 0
    n: int = 0
    notes: list = field(default_factory=list)
    output: np.ndarray | None = None  # the backend's whole output (host), for the report


@dataclass
class ScanReport:
    """What check_scan_backend found; str(report) is the readable summary (and the counterexample)."""
    backend: str
    device: str
    dtypes: tuple
    cases: Counter                    # category -> examples run (shrinking included)
    worst: dict                       # dtype name -> (error / scale, tolerance, quantity, shape)
    failure: Failure | None = None

    @property
    def passed(self):
        return self.failure is None

    def __str__(self):
        return format_report(self)


def categories(example):
    """The labels of one example that the report counts (see format_report)."""
    case, info = example.case, example.info
    T = case.x.shape[1]
    labels = [f"kind {info['kind']}", f"dtype {case.x.dtype.name}", f"a {info['regime']}",
              f"magnitude {info['magnitude']}"]
    flags = {"reverse": case.reverse, "h0": case.h0 is not None, "dh_last": example.dh_last is not None,
             "time-slice views": example.views, "T = 1": T == 1, "prime T": _is_prime(T),
             "resets": info["zero_frac"] > 0}
    return labels + [name for name, on in flags.items() if on]


def format_report(report):
    dtypes = " and ".join(np.dtype(d).name for d in report.dtypes)
    total = sum(v for k, v in report.cases.items() if k.startswith("kind "))
    if report.failure is None:
        head = (f"scan backend {report.backend!r} agrees with the reference ({report.device}, {dtypes}): "
                f"{total} cases")
    else:
        head = (f"scan backend {report.backend!r} DISAGREES with the reference ({report.device}, {dtypes}); "
                f"{total} cases run, shrinking included")
    lines = [head, "  cases by category:"]
    c = report.cases

    def row(label, prefix, names):
        return f"    {label:<10} " + ", ".join(f"{n} {c[prefix + n]}" for n in names)

    lines.append(row("shape", "kind ", KINDS) + f"; T = 1: {c['T = 1']}, prime T: {c['prime T']}")
    lines.append(row("dtype", "dtype ", [np.dtype(d).name for d in report.dtypes]))
    lines.append(row("a", "a ", REGIMES) + f"; with scattered resets (a = 0): {c['resets']}")
    lines.append(row("magnitude", "magnitude ", MAGNITUDES))
    lines.append(row("flags", "", ["reverse", "h0", "dh_last", "time-slice views"]))
    if report.failure is None:
        tols = ", ".join(f"{np.dtype(d).name} {RTOL[np.dtype(d)]:g}" for d in report.dtypes)
        lines.append(f"  worst error / error scale per dtype (tolerance: {tols}; da twice that):")
        for name, (ratio, tol, quantity, shape) in sorted(report.worst.items()):
            lines.append(f"    {name:<8} 0 (equal to the reference, bit for bit, in every case)" if ratio == 0 else
                         f"    {name:<8} {ratio:.2g} ({100 * ratio / tol:.2g}% of the tolerance; in {quantity}, "
                         f"shape {shape})")
        return "\n".join(lines)
    return "\n".join(lines + format_failure(report.failure, report.backend))


def format_failure(f, backend):
    """The counterexample, as lines."""
    case, ex = f.example.case, f.example
    B, T, D = case.x.shape
    dtype = case.x.dtype.name
    info = ex.info
    lines = ["", "Counterexample (shrunk by Hypothesis):",
             f"  x, a       shape (B, T, D) = {(B, T, D)}, {dtype}; reverse={case.reverse}",
             f"  h0         {'given, shape ' + str((B, D)) if case.h0 is not None else 'None (zeros)'}; "
             f"dh_last: {'given' if ex.dh_last is not None else 'None'}; time-slice views: {ex.views}",
             f"  drawn as   kind {info['kind']}, a regime {info['regime']} (k={info['k']}), resets "
             f"{info['zero_frac']}, magnitude {info['magnitude']}",
             f"  wrong      {f.quantity}" + (f": {f.n_off} of {f.n} elements off" if f.n else "")]
    if f.error:
        lines.append(f"  raised     {f.error}")
    lines += [f"  {note}" for note in f.notes]
    if f.actual is not None and np.isnan(f.actual):
        lines.append("  NaN        the harness fills `out` with NaN before each call: NaN there means the kernel never "
                     "wrote that element (or computed a NaN)")
    dtype = case.x.dtype
    if f.index is not None and f.expected is not None:
        where = f"{f.quantity.split(' ')[0]}{list(f.index)}"
        err = abs(f.actual - f.expected)
        size = "" if np.isnan(err) else (f", |error| = {err:.3g} = {err / f.scale:.3g} x its error scale "
                                         f"{f.scale:.3g} (tolerance {f.tol:g} x scale)")
        lines.append(f"  largest error at {where}: actual {_fmt(f.actual, dtype)}, expected "
                     f"{_fmt(f.expected, dtype)}{size}")
    elif f.index is not None:
        lines.append(f"  first such element: index {list(f.index)}, value {_fmt(f.actual, dtype)}")
    if f.index is not None:
        lines += _channel(f, backend)
    if case.x.size <= REPRODUCE_MAX_ELEMENTS:
        lines += _reproduce(f, backend)
    return lines


def _channel(f, backend):
    """The inputs and outputs along the offending (b, d) channel, around the offending step."""
    case, ex = f.example.case, f.example
    T = case.x.shape[1]
    if len(f.index) == 3:
        b, t, d = f.index
    else:                                           # h_last, dh0: (B, D)
        b, d = f.index
        t = 0 if case.reverse else T - 1
    lo, hi = max(0, t - WINDOW), min(T, t + WINDOW + 1)
    lines = [f"  along channel b={b}, d={d}, steps t = {lo}..{hi - 1} (of {T}):"]

    def show(label, arr):
        lines.append(f"    {label:<9} = {_fmt(arr)}")

    show("x", case.x[b, lo:hi, d])
    show("a", case.a[b, lo:hi, d])
    lines.append(f"    {'h0':<9} = {'None' if case.h0 is None else _fmt(case.h0[b, d])}")
    h_ref, _ = linear_scan(case.x, case.a, case.h0, reverse=case.reverse, backend="reference")
    name = f.quantity.split(" ")[0]
    expected = {"h": h_ref}
    if "backward" in f.quantity:
        show("dh", ex.dh[b, lo:hi, d])
        lines.append(f"    {'dh_last':<9} = {'None' if ex.dh_last is None else _fmt(ex.dh_last[b, d])}")
        expected["dx"], expected["da"], _ = linear_scan_backward(ex.dh, ex.dh_last, case.a, h_ref, case.h0,
                                                                 reverse=case.reverse, backend="reference")
    if f.output is not None and f.output.ndim == 3 and name in expected:
        show(f"{name} ref", expected[name][b, lo:hi, d])
        show(f"{name} yours", f.output[b, lo:hi, d])
    else:
        show("h ref", h_ref[b, lo:hi, d])
    return lines


def _reproduce(f, backend):
    case, ex = f.example.case, f.example
    lines = ["  reproduce:", "    import numpy as np", "    from minigriffin.scan import linear_scan, linear_scan_backward"]
    if ":" in backend:                              # check-scan's MODULE:FUNCTION
        lines += ["    from minigriffin.check_scan import load_function", "    from minigriffin.scan import register_backend",
                  f'    register_backend("candidate", load_function("{backend}"))']
        backend = "candidate"
    elif backend not in backend_names():            # a function check_scan_backend registered for the run
        lines.append(f'    # first register your function under this name: register_backend("{backend}", ...)')
    dt = f"np.{case.x.dtype.name}"
    for name, arr in (("x", case.x), ("a", case.a), ("h0", case.h0)):
        lines.append(f"    {name} = " + ("None" if arr is None else f"np.array({_fmt(arr)}, dtype={dt})"))
    call = f'(x, a, h0, reverse={case.reverse}'
    if "backward" in f.quantity:
        for name, arr in (("dh", ex.dh), ("dh_last", ex.dh_last)):
            lines.append(f"    {name} = " + ("None" if arr is None else f"np.array({_fmt(arr)}, dtype={dt})"))
        lines += [f'    h, _ = linear_scan{call}, backend="reference")',
                  f'    print(linear_scan_backward(dh, dh_last, a, h, h0, reverse={case.reverse}, backend="{backend}"))',
                  f'    print(linear_scan_backward(dh, dh_last, a, h, h0, reverse={case.reverse}, backend="reference"))']
    else:
        lines += [f'    print(linear_scan{call}, backend="{backend}"))',
                  f'    print(linear_scan{call}, backend="reference"))']
    return lines


def _fmt(arr, dtype=None):
    """Shortest digits that give the same value back in the array's dtype (or `dtype`), on one line."""
    return " ".join(np.array2string(np.asarray(arr, dtype=dtype), separator=", ", floatmode="unique",
                                    threshold=10**6, max_line_width=10**6).split())


def _is_prime(n):
    return n > 1 and all(n % p for p in range(2, int(n ** 0.5) + 1))

