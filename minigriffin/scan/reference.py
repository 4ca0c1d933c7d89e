"""Reference linear scan: a plain NumPy loop over time. The oracle every other backend is tested against.

    h_t = a_t * h_{t-1} + x_t            (reverse=False, t = 0 .. T-1, h_{-1} = h0)
    h_t = a_t * h_{t+1} + x_t            (reverse=True,  t = T-1 .. 0, h_T  = h0)

Each step is vectorised over (B, D); the loop over T is what a recurrence is. See docs/scan.md.
"""

import numpy as np


def scan(x, a, h0, reverse, out):
    """Write the scan of x with multipliers a, starting from h0, into out.

    x, a, out: (B, T, D) arrays of one dtype, real or complex (views with unit stride on D are fine);
    h0: (B, D). Returns out.
    """
    T = x.shape[1]
    steps = range(T - 1, -1, -1) if reverse else range(T)
    h_prev = h0                                   # (B, D)
    for t in steps:
        # out[:, t] = a[:, t] * h_prev + x[:, t], without temporaries
        np.multiply(a[:, t], h_prev, out=out[:, t])   # (B, D)
        out[:, t] += x[:, t]                          # (B, D)
        h_prev = out[:, t]
    return out
