"""linear_scan_backward agrees with float64 central differences (minigriffin.gradcheck), every backend.

The output is affine in every single element of x, a and h0 (h_t is a sum of products in which each
element appears at most once), so central differences have no truncation error at any step size. We use a
large step, 1e-2, which shrinks the roundoff of the difference quotient (~1e-16 * |L| / step) to ~1e-12,
and can then hold the check to rtol 1e-8, atol 1e-11 (float64). A wrong index or a missing term is O(1).
"""

import numpy as np
import pytest

from minigriffin.gradcheck import assert_grads_close
from minigriffin.scan import available_backends, linear_scan, linear_scan_backward


@pytest.mark.parametrize("backend", available_backends())
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("T", [1, 2, 7, 33])
def test_scan_backward_matches_finite_differences(backend, reverse, with_h0, T):
    rng = np.random.default_rng(T)
    B, D = 2, 3
    x = rng.standard_normal((B, T, D))
    a = rng.uniform(0.0, 1.0, (B, T, D))
    a[:, T // 2, 0] = 0.0               # a document reset in the middle
    a[:, :, 1] = 1.0 - 1e-6             # a long-memory channel
    h0 = rng.standard_normal((B, D)) if with_h0 else None
    dh = rng.standard_normal((B, T, D))
    dh_last = rng.standard_normal((B, D))

    h, _ = linear_scan(x, a, h0, reverse=reverse, backend=backend)
    dx, da, dh0 = linear_scan_backward(dh, dh_last, a, h, h0, reverse=reverse, backend=backend)
    inputs = {"x": x, "a": a} | ({"h0": h0} if with_h0 else {})
    grads = {"x": dx, "a": da} | ({"h0": dh0} if with_h0 else {})
    assert (dh0 is None) == (not with_h0)

    def forward(x, a, h0=None):
        return linear_scan(x, a, h0, reverse=reverse, backend=backend)

    assert_grads_close(forward, inputs, grads, (dh, dh_last), rtol=1e-8, atol=1e-11, eps=1e-2, max_elements=60)  # float64
