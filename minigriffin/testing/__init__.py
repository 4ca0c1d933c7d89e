"""Property-test a linear-scan kernel, yours or ours, against minigriffin's reference.

    from minigriffin.scan import register_backend
    from minigriffin.testing import check_scan_backend
    register_backend("mine", my_scan)          # my_scan(x, a, h0, reverse, out), minigriffin.scan.registry
    print(check_scan_backend("mine", max_examples=200))

check_scan_backend compares the forward and the backward (built on your forward) with the NumPy reference on
Hypothesis-drawn hard cases, with tolerances relative to each element's error scale; on a disagreement it raises
ScanBackendMismatch (an AssertionError) whose message is the shrunk counterexample. The strategies
(scan_cases, kernel_cases) and the tolerance helpers are the ones minigriffin's own tests use.
`minigriffin check-scan MODULE:FUNCTION` runs the same from the command line, then times the kernel against the
memory floor. Walkthrough: docs/testing-kernels.md.

Needs Hypothesis, a test dependency: pip install "minigriffin[test]". Importing minigriffin does not import
this package.
"""

try:
    import hypothesis  # noqa: F401
except ImportError as exc:                      # a clear message instead of a bare "No module named ..."
    raise ImportError('minigriffin.testing needs Hypothesis, a test dependency: pip install "minigriffin[test]" '
                      '(or pip install hypothesis)') from exc

from minigriffin.testing.harness import ScanBackendMismatch, check_scan_backend
from minigriffin.testing.report import Failure, ScanReport
from minigriffin.testing.strategies import (
    KINDS,
    RTOL,
    KernelCase,
    ScanCase,
    assert_within,
    backward_error_scales,
    forward_error_scale,
    kernel_cases,
    make_a,
    make_values,
    scan_cases,
)

__all__ = [
    "KINDS", "RTOL", "Failure", "KernelCase", "ScanBackendMismatch", "ScanCase", "ScanReport", "assert_within",
    "backward_error_scales", "check_scan_backend", "forward_error_scale", "kernel_cases", "make_a",
    "make_values", "scan_cases",
]
