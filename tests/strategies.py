"""The small models the whole-model tests use, and their tolerance helper.

The scan strategies and tolerances that used to live here (scan_cases, RTOL, forward_error_scale,
backward_error_scales, assert_within, ScanCase) are part of the package now, for other people's kernels too:
import them from minigriffin.testing (docs/testing-kernels.md).
"""

import numpy as np

from minigriffin.config import make_config
from minigriffin.params import init_params


# init_params sets every bias and norm scale to 0 (recurrentgemma's reset_parameters does the same), and a
# zero leaf hides bugs: a dropped bias, or a backward evaluated at the pre-bias activation, changes nothing.
# tiny_model adds noise to every leaf: N(0, 0.1^2) to the zero-initialised ones (norm scales act as 1 + scale,
# biases shift activations of size ~1), 10% of its own standard deviation to each random weight matrix, and
# N(0, 0.5^2) to a_param, clipped so that a = sigmoid(-a_param) stays in [0.5, 0.999] (init: [0.9, 0.999]);
# a_t = a^(8 r_t) then never comes near 1 - a_t^2 < 2.5e-7, where the sqrt's derivative is capped.
ZERO_LEAF_STD, WEIGHT_NOISE, A_PARAM_STD, A_RANGE = 0.1, 0.1, 0.5, (0.5, 0.999)


def perturb_params(params, rng):
    """A copy of a parameter tree (init_params) with every leaf perturbed as described above, so every
    weight, bias, norm scale and a_param carries weight and no leaf is constant."""
    a_param_low, a_param_high = (np.log(1.0 / a - 1.0) for a in A_RANGE[::-1])   # a = sigmoid(-a_param)

    def perturb(path, leaf):
        if isinstance(leaf, dict):
            return {key: perturb(f"{path}.{key}", value) for key, value in leaf.items()}
        if isinstance(leaf, list):
            return [perturb(f"{path}.{i}", value) for i, value in enumerate(leaf)]
        noise = rng.standard_normal(leaf.shape)
        if path.endswith(".a_param"):
            new = np.clip(leaf + A_PARAM_STD * noise, a_param_low, a_param_high)
        elif np.ptp(leaf) == 0:                                  # constant at init: biases, norm scales
            new = leaf + ZERO_LEAF_STD * noise
        else:                                                    # random at init: weights, conv, embedding
            new = leaf + WEIGHT_NOISE * leaf.std() * noise
        return new.astype(leaf.dtype)

    return perturb("", params)


def tiny_model(case, dtype="float64", seed=0):
    """(cfg, params, rng) for a test case {"preset": ..., **overrides}, reference scan, with every parameter
    leaf perturbed (perturb_params) so every code path carries weight. rng continues after the draws, for
    inputs."""
    cfg = make_config(case["preset"], dtype=dtype, scan_backend="reference",
                      **{k: v for k, v in case.items() if k != "preset"})
    rng = np.random.default_rng(seed)
    params = perturb_params(init_params(cfg, rng), rng)
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
