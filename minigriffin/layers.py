"""Elementwise and dense layers, each a forward/backward pair (CS231n / llm.c style).

    linear        y = x W^T + b                          (torch Linear layout: W is (out, in))
    rmsnorm       y = x * rsqrt(mean(x^2) + eps) * (1 + scale)          Griffin §2.1, recurrentgemma RMSNorm
    gelu_tanh     0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))     the tanh approximation, as recurrentgemma
    gated_mlp     gelu(x W0 + b0) * (x W1 + b1), then a linear        Griffin §2.2, Figure 2(b)

Conventions (docs/conventions.md): `*_forward(...) -> (out, cache)`, `*_backward(dout, cache) -> (dx, grads)`,
grads a dict with the parameter's keys; backward returns fresh arrays. Derivations: docs/backprop.md.
The functions marked @accelerated are the definitions; for NumPy arrays, minigriffin/fast/fused.py runs the
same formulas in fewer passes over memory (minigriffin/accelerate.py: MINIGRIFFIN_REFERENCE=1 turns it off).
"""

import math
from typing import NamedTuple

from minigriffin.accelerate import accelerated
from minigriffin.xp import array_namespace

RMSNORM_EPS = 1e-6
GELU_C = math.sqrt(2.0 / math.pi)


# ---------------------------------------------------------------------------------------------- linear
class LinearCache(NamedTuple):
    x: object          # (..., in) the input, needed for dW
    weight: object     # (out, in)
    has_bias: bool


def linear_forward(x, p):
    """y = x @ W.T + b. x: (..., in); p: {"weight": (out, in), "bias": (out,) optional} -> y: (..., out)."""
    y = x @ p["weight"].T                                  # (..., out)
    if "bias" in p:
        y += p["bias"]
    return y, LinearCache(x, p["weight"], "bias" in p)


def linear_backward(dy, cache):
    """dy: (..., out) -> dx: (..., in), grads {"weight": (out, in), "bias": (out,)}."""
    x, weight, has_bias = cache
    n_in, n_out = weight.shape[1], weight.shape[0]
    dx = dy @ weight                                       # forward was y = x W^T  ->  dx = dy W
    grads = {"weight": dy.reshape(-1, n_out).T @ x.reshape(-1, n_in)}   # (out, in): dW = dy^T x
    if has_bias:
        grads["bias"] = dy.reshape(-1, n_out).sum(axis=0)                # (out,)
    return dx, grads


# --------------------------------------------------------------------------------------------- rmsnorm
class RMSNormCache(NamedTuple):
    x_hat: object      # (..., D) x * inv_rms
    inv_rms: object    # (..., 1) rsqrt(mean(x^2) + eps)
    gain: object       # (D,) 1 + scale


def rmsnorm_forward(x, p):
    """RMSNorm with the (1 + scale) parametrisation, no mean subtraction. x: (..., D); p: {"scale": (D,)}."""
    xp = array_namespace(x)
    inv_rms = 1.0 / xp.sqrt(xp.mean(x * x, axis=-1, keepdims=True) + RMSNORM_EPS)   # (..., 1)
    x_hat = x * inv_rms                                                              # (..., D)
    gain = 1.0 + p["scale"]                                                          # (D,)
    return x_hat * gain, RMSNormCache(x_hat, inv_rms, gain)


def rmsnorm_backward(dy, cache):
    """dy: (..., D) -> dx: (..., D), grads {"scale": (D,)}."""
    x_hat, inv_rms, gain = cache
    D = x_hat.shape[-1]
    dscale = (dy * x_hat).reshape(-1, D).sum(axis=0)      # forward was y = x_hat * (1 + scale)
    dx_hat = dy * gain                                    # (..., D)
    # forward was x_hat = x * r with r = (mean(x^2) + eps)^(-1/2), dr/dx_j = -r^3 x_j / D
    #   -> dx = r * (dx_hat - x_hat * mean(dx_hat * x_hat))
    dx = inv_rms * (dx_hat - x_hat * (dx_hat * x_hat).mean(axis=-1, keepdims=True))
    return dx, {"scale": dscale}


# ------------------------------------------------------------------------------------------- gelu_tanh
class GeluCache(NamedTuple):
    x: object
    tanh_u: object     # tanh(c (x + 0.044715 x^3))


@accelerated
def gelu_tanh_forward(x):
    """GeLU, tanh approximation (as recurrentgemma): 0.5 x (1 + tanh(c (x + 0.044715 x^3))), c = sqrt(2/pi)."""
    xp = array_namespace(x)
    tanh_u = xp.tanh(GELU_C * (x + 0.044715 * x**3))
    return 0.5 * x * (1.0 + tanh_u), GeluCache(x, tanh_u)


@accelerated
def gelu_tanh_backward(dy, cache):
    """dy: (...) -> dx: (...).  d/dx [0.5 x (1 + t)] = 0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 * 0.044715 x^2)."""
    x, tanh_u = cache
    du_dx = GELU_C * (1.0 + 3 * 0.044715 * x * x)
    return dy * 0.5 * ((1.0 + tanh_u) + x * (1.0 - tanh_u * tanh_u) * du_dx)


# ------------------------------------------------------------------------------------------- gated MLP
class MLPCache(NamedTuple):
    x: object          # (B, T, D)
    w_up: object       # (2, D, F)
    up: object         # (2, B, T, F) both branches before the gate
    gelu: GeluCache
    gate: object       # (B, T, F) gelu(branch 0)
    down: LinearCache


@accelerated
def gated_gelu_forward(up):
    """The MLP's gate (Griffin Figure 2(b)): up: (2, B, T, F) both branches -> gate = gelu(up[0]),
    hidden = gate * up[1], and GeLU's cache."""
    gate, gelu_cache = gelu_tanh_forward(up[0])                                # (B, T, F)
    return gate, gate * up[1], gelu_cache


@accelerated
def gated_gelu_backward(dhidden, up, gate, gelu_cache):
    """dhidden: (B, T, F) -> dup: (2, B, T, F), the gradients of both branches."""
    xp = array_namespace(dhidden)
    # forward was hidden = gelu(up[0]) * up[1]
    return xp.stack([gelu_tanh_backward(dhidden * up[1], gelu_cache), dhidden * gate])


def mlp_forward(x, p):
    """Gated MLP block. x: (B, T, D); p: {"ffw_up": {"w": (2, D, F), "b": (2, 1, 1, F)},
    "ffw_down": {"weight": (D, F), "bias": (D,)}} -> (B, T, D). Branch 0 (GeLU) gates branch 1 (linear)."""
    xp = array_namespace(x)
    up = xp.matmul(x[None], p["ffw_up"]["w"][:, None])                       # (2, B, T, F): x @ w[c]
    up += p["ffw_up"]["b"]                                  # + b[c], in place: no second (2, B, T, F) array
    gate, hidden, gelu_cache = gated_gelu_forward(up)                          # (B, T, F) each
    out, down_cache = linear_forward(hidden, p["ffw_down"])                    # (B, T, D)
    return out, MLPCache(x, p["ffw_up"]["w"], up, gelu_cache, gate, down_cache)


def mlp_backward(dout, cache):
    xp = array_namespace(dout)
    dhidden, down_grads = linear_backward(dout, cache.down)                    # (B, T, F)
    dup = gated_gelu_backward(dhidden, cache.up, cache.gate, cache.gelu)       # (2, B, T, F)
    F = dup.shape[-1]
    D = cache.x.shape[-1]
    # forward was up[c] = x @ w_up[c] + b[c]
    dx = dup[0] @ cache.w_up[0].T + dup[1] @ cache.w_up[1].T                   # (B, T, D)
    x_rows = cache.x.reshape(-1, D)                                            # (B*T, D)
    dw = xp.stack([x_rows.T @ dup[c].reshape(-1, F) for c in range(2)])        # (2, D, F)
    db = dup.reshape(2, -1, F).sum(axis=1).reshape(2, 1, 1, F)                 # (2, 1, 1, F)
    return dx, {"ffw_up": {"w": dw, "b": db}, "ffw_down": down_grads}
