"""Elementwise and dense layers, each a forward/backward pair (CS231n / llm.c style).

    linear        y = x W^T + b                          (torch Linear layout: W is (out, in))
    rmsnorm       y = x * rsqrt(mean(x^2) + eps) * (1 + scale)          Griffin §2.2, recurrentgemma RMSNorm
    gelu_tanh     0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))     the tanh approximation, as recurrentgemma
    gated_mlp     gelu(x W0 + b0) * (x W1 + b1), then a linear        Griffin §2.2, Figure 2(b)

Conventions (docs/conventions.md): `*_forward(...) -> (out, cache)`, `*_backward(dout, cache) -> (dx, grads)`,
grads a dict with the parameter's keys; backward returns fresh arrays. Derivations: docs/backprop.md.
GeLU and the MLP's gate run as fused Numba kernels on NumPy arrays (minigriffin/fused.py: the same formulas
in one pass over memory); the NumPy code below is their definition and what CuPy arrays run.
"""

import math
from typing import NamedTuple

from minigriffin import fused
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


def gelu_tanh_forward(x):
    """GeLU, tanh approximation: 0.5 x (1 + tanh(c (x + 0.044715 x^3))), c = sqrt(2/pi).
    Written with in-place operations: on a (B, T, F) activation each temporary is a full memory pass."""
    if fused.applies(x):
        out, tanh_u = fused.gelu_tanh_forward(x)                 # the same formula, 3 passes instead of 8
        return out, GeluCache(x, tanh_u)
    xp = array_namespace(x)
    tanh_u = x * x                                       # x^2
    tanh_u *= 0.044715 * GELU_C
    tanh_u += GELU_C                                     # c (1 + 0.044715 x^2)
    tanh_u *= x                                          # u = c (x + 0.044715 x^3)
    xp.tanh(tanh_u, out=tanh_u)
    out = tanh_u + 1.0
    out *= x
    out *= 0.5
    return out, GeluCache(x, tanh_u)


def gelu_tanh_backward(dy, cache):
    x, tanh_u = cache
    if fused.applies(dy, x, tanh_u):
        return fused.gelu_tanh_backward(dy, x, tanh_u)           # the formula below in one pass
    # d/dx [0.5 x (1 + t)] = 0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 * 0.044715 x^2)
    du_dx = x * x
    du_dx *= 3 * 0.044715 * GELU_C
    du_dx += GELU_C                                      # c (1 + 3 * 0.044715 x^2)
    du_dx *= x
    sech2 = tanh_u * tanh_u
    sech2 -= 1.0                                         # t^2 - 1 = -(1 - t^2)
    du_dx *= sech2                                       # -x (1 - t^2) du/dx
    grad = tanh_u + 1.0
    grad -= du_dx                                        # (1 + t) + x (1 - t^2) du/dx
    grad *= 0.5
    grad *= dy
    return grad


# ------------------------------------------------------------------------------------------- gated MLP
class MLPCache(NamedTuple):
    x: object          # (B, T, D)
    w_up: object       # (2, D, F)
    up: object         # (2, B, T, F) both branches before the gate
    gelu: GeluCache
    gate: object       # (B, T, F) gelu(branch 0)
    down: LinearCache


def mlp_forward(x, p):
    """Gated MLP block. x: (B, T, D); p: {"ffw_up": {"w": (2, D, F), "b": (2, 1, 1, F)},
    "ffw_down": {"weight": (D, F), "bias": (D,)}} -> (B, T, D). Branch 0 (GeLU) gates branch 1 (linear)."""
    xp = array_namespace(x)
    up = xp.matmul(x[None], p["ffw_up"]["w"][:, None])                       # (2, B, T, F): x @ w[c]
    up += p["ffw_up"]["b"]                                  # + b[c], in place: no second (2, B, T, F) array
    if fused.applies(up):
        gate, hidden, tanh_u = fused.mlp_gate_forward(up)                      # the two lines below, fused
        gelu_cache = GeluCache(up[0], tanh_u)
    else:
        gate, gelu_cache = gelu_tanh_forward(up[0])                            # (B, T, F)
        hidden = gate * up[1]                                                  # (B, T, F)
    out, down_cache = linear_forward(hidden, p["ffw_down"])                    # (B, T, D)
    return out, MLPCache(x, p["ffw_up"]["w"], up, gelu_cache, gate, down_cache)


def mlp_backward(dout, cache):
    xp = array_namespace(dout)
    dhidden, down_grads = linear_backward(dout, cache.down)                    # (B, T, F)
    if fused.applies(dhidden, cache.up):
        dup = fused.mlp_gate_backward(dhidden, cache.up, cache.gate, cache.gelu.tanh_u)   # the 4 lines below
    else:
        dup = xp.empty_like(cache.up)                                          # (2, B, T, F)
        xp.multiply(dhidden, cache.gate, out=dup[1])        # forward was hidden = gate * up[1]
        xp.multiply(dhidden, cache.up[1], out=dup[0])
        dup[0] = gelu_tanh_backward(dup[0], cache.gelu)
    F = dup.shape[-1]
    D = cache.x.shape[-1]
    # forward was up[c] = x @ w_up[c] + b[c]
    dx = dup[0] @ cache.w_up[0].T + dup[1] @ cache.w_up[1].T                   # (B, T, D)
    x_rows = cache.x.reshape(-1, D)                                            # (B*T, D)
    dw = xp.stack([x_rows.T @ dup[c].reshape(-1, F) for c in range(2)])        # (2, D, F)
    db = dup.reshape(2, -1, F).sum(axis=1).reshape(2, 1, 1, F)                 # (2, 1, 1, F)
    return dx, {"ffw_up": {"w": dw, "b": db}, "ffw_down": down_grads}
