"""Rotary position embeddings (RoPE), forward and backward, exactly as recurrentgemma's `_apply_rope`.

Griffin's attention layers (De, Smith et al. 2024, §2.3) use RoPE and no absolute position embeddings. The
released code (recurrentgemma 1.0.1, `torch/modules.py:_apply_rope`) rotates only the *first half* of each head
dimension, with half-split (not interleaved) pairing and max wavelength 10 000:

    R = Dh / 2 rotated dims;  x1 = x[..., :R/2], x2 = x[..., R/2:R], pass = x[..., R:]
    inv_freq_j = 1 / 10000**(2j / R),  j = 0 .. R/2 - 1;   theta = pos * inv_freq
    y = concat(x1 cos(theta) - x2 sin(theta),  x2 cos(theta) + x1 sin(theta),  pass)

Positions are `segment_pos`, which restarts at 0 at every packed document, so a rotated q·k depends only on
the position difference within a document. The rotation is orthogonal, so the backward is the transpose
rotation (by -theta). Shape letters: docs/conventions.md (here N is the number of heads of x: H for queries,
1 for the single MQA key head).
"""

from typing import NamedTuple

from minigriffin.xp import array_namespace

MAX_WAVELENGTH = 10_000


class RopeCache(NamedTuple):
    sin: object    # (B, T, 1, R/2) sin(theta), already cast to x.dtype
    cos: object    # (B, T, 1, R/2) cos(theta), already cast to x.dtype


def _check_inputs(x, segment_pos):
    """Validate shapes and dtypes at the public boundary; raise naming the offending arrays."""
    xp = array_namespace(x, segment_pos)
    if x.ndim != 4:
        raise ValueError(f"rope: x must be (B, T, N, Dh), got shape {x.shape}")
    if x.dtype.kind != "f":
        raise TypeError(f"rope: x must be floating point, got dtype {x.dtype}")
    if segment_pos.shape != x.shape[:2]:
        raise ValueError(f"rope: segment_pos shape {segment_pos.shape} != (B, T) = {x.shape[:2]} of x {x.shape}")
    if segment_pos.dtype.kind not in "iu":
        raise TypeError(f"rope: segment_pos must be integer positions, got dtype {segment_pos.dtype}")
    if x.shape[-1] % 4 != 0:
        # recurrentgemma chunks Dh into halves, then the rotated half into halves again: Dh % 4 == 0.
        raise ValueError(f"rope: head dim Dh = {x.shape[-1]} of x {x.shape} must be a multiple of 4")
    return xp


def rope_forward(x, segment_pos, max_wavelength=MAX_WAVELENGTH):
    """RoPE on the first half of the head dim (Griffin §2.3; recurrentgemma `_apply_rope`).

    x: (B, T, N, Dh) float; segment_pos: (B, T) integer positions -> y: (B, T, N, Dh) same dtype as x, cache.
    sin/cos are computed in float64 and then cast to x.dtype (torch's `.type_as(inputs)`).
    """
    xp = _check_inputs(x, segment_pos)
    Dh = x.shape[-1]
    R = Dh // 2                                                          # rotated dims
    freq = xp.arange(R // 2, dtype=xp.float64)                           # (R/2,)
    inv_freq = 1.0 / max_wavelength ** (2.0 * freq / R)                  # (R/2,) float64
    theta = segment_pos[:, :, None, None].astype(xp.float64) * inv_freq  # (B, T, 1, R/2)
    sin = xp.sin(theta).astype(x.dtype)                                  # (B, T, 1, R/2)
    cos = xp.cos(theta).astype(x.dtype)                                  # (B, T, 1, R/2)
    x1, x2 = x[..., : R // 2], x[..., R // 2 : R]                        # (B, T, N, R/2) each
    y = xp.concatenate([x1 * cos - x2 * sin,                             # (B, T, N, R/2)
                        x2 * cos + x1 * sin,                             # (B, T, N, R/2)
                        x[..., R:]], axis=-1)                            # (B, T, N, Dh)
    return y, RopeCache(sin, cos)


def rope_backward(dy, cache):
    """dy: (B, T, N, Dh) -> dx: (B, T, N, Dh). The rotation is orthogonal: dx is dy rotated by -theta."""
    xp = array_namespace(dy)
    half = cache.sin.shape[-1]                                           # R/2
    R = 2 * half
    dy1, dy2 = dy[..., :half], dy[..., half:R]                           # (B, T, N, R/2) each
    # forward was: y1 = x1 cos - x2 sin;  y2 = x2 cos + x1 sin
    #   -> dx1 = dy1 cos + dy2 sin;  dx2 = -dy1 sin + dy2 cos;  the unrotated half passes through.
    dx = xp.concatenate([dy1 * cache.cos + dy2 * cache.sin,              # (B, T, N, R/2)
                         dy2 * cache.cos - dy1 * cache.sin,              # (B, T, N, R/2)
                         dy[..., R:]], axis=-1)                          # (B, T, N, Dh)
    return dx
