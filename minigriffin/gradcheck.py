"""The one finite-difference gradient checker, used by every test and notebook.

Central differences in float64 on the fake loss  L = sum_i sum(out_i * dout_i)  (the llm.c / CS231n trick:
dL/dout_i = dout_i, so the analytic gradient is exactly `backward(dout)`), with the outputs differenced
before the contraction so that roundoff does not grow with the output's size. Large tensors are checked on a
sample of elements, like CS231n's grad_check_sparse. Inputs and parameters may be arrays or nested dicts
(lists) of arrays; nested ones are reported with dotted paths ("blocks.0.rg_lru.a_param").

Typical use:
    out, cache = layer_forward(x, params)
    dout = rng.standard_normal(out.shape)
    dx, grads = layer_backward(dout, cache)
    assert_grads_close(lambda x, params: layer_forward(x, params)[0], {"x": x, "params": params},
                       {"x": dx, "params": grads}, dout, rtol=1e-6, atol=1e-9)
"""

from typing import NamedTuple

import numpy as np

from minigriffin.tree import tree_leaves

EPS = 1e-6   # finite-difference step; float64 central differences then err ~ EPS² f''' + 1e-16 |f| / EPS


def rel_error(x, y):
    """max |x - y| / max(|x| + |y|) over all elements (0 when both are all zero): one number to eyeball."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    denom = np.max(np.abs(x) + np.abs(y)) if x.size else 0.0
    return 0.0 if denom == 0 else float(np.max(np.abs(x - y)) / denom)


def _as_tuple(outputs, douts):
    if not isinstance(outputs, tuple):
        outputs, douts = (outputs,), (douts,)
    if len(outputs) != len(douts):
        raise ValueError(f"got {len(outputs)} outputs but {len(douts)} douts")
    return outputs, douts


def fake_loss(outputs, douts):
    """L = sum_i sum(out_i * dout_i) over one output or a tuple of outputs (None douts are skipped)."""
    outputs, douts = _as_tuple(outputs, douts)
    return sum(float(np.sum(out * dout)) for out, dout in zip(outputs, douts) if dout is not None)


def numerical_grad(f, array, indices, douts, eps=EPS, order=2):
    """Central-difference dL/darray at the given flat indices, L = fake_loss(f(), douts).

    order=2: (L(x+h) - L(x-h)) / 2h, error ~h^2. order=4: the five-point stencil
    (8 (L(x+h) - L(x-h)) - (L(x+2h) - L(x-2h))) / 12h, error ~h^4, which allows a larger step (less roundoff)
    for deep compositions such as a whole residual block.

    `array` is perturbed in place and restored. The outputs are subtracted *before* contracting with dout,
    sum((f(x+h) - f(x-h)) * dout) / 2h, so elements the perturbation did not touch cancel exactly and the
    roundoff does not grow with the size of the output (subtracting two large losses would).
    """
    if array.dtype != np.float64:
        raise TypeError(f"finite differences need float64 inputs, got {array.dtype}")
    flat = array.reshape(-1)          # a view: perturbing it perturbs `array`
    if not np.shares_memory(flat, array):
        raise ValueError("array must be contiguous so it can be perturbed in place")
    if order not in (2, 4):
        raise ValueError(f"order must be 2 or 4, got {order}")

    def difference(step):
        """sum((f(x + step) - f(x - step)) * dout), perturbing one element."""
        saved = flat[i]
        flat[i] = saved + step
        plus, douts_t = _as_tuple(f(), douts)
        flat[i] = saved - step
        minus, _ = _as_tuple(f(), douts)
        flat[i] = saved
        return sum(float(np.sum((p - m) * d)) for p, m, d in zip(plus, minus, douts_t) if d is not None)

    grads = np.empty(len(indices))
    for k, i in enumerate(indices):
        if order == 2:
            grads[k] = difference(eps) / (2 * eps)
        else:
            grads[k] = (8 * difference(eps) - difference(2 * eps)) / (12 * eps)
    return grads


class GradReport(NamedTuple):
    """Comparison for one input: worst error over the checked elements."""
    name: str
    checked: int              # number of elements compared
    max_abs_error: float
    max_rel_error: float      # |num - ana| / max(|num| + |ana|, tiny), CS231n's rel_error per element
    worst_index: tuple        # index (in the input's shape) of the largest violation
    numerical: float          # finite-difference value there
    analytic: float           # backward's value there
    ok: bool                  # |num - ana| <= atol + rtol * |num| everywhere checked


def check_grads(f, inputs, analytic, douts, *, rtol=1e-6, atol=1e-9, eps=EPS, order=2, max_elements=40, seed=0):
    """Compare analytic gradients with central differences of L = sum(f(**inputs) * douts).

    f: callable taking the entries of `inputs` as keyword arguments, returning one array or a tuple.
    inputs: {name: array or nested dict of arrays}, all float64 (perturbed in place, then restored).
    analytic: the same structure as `inputs` (a subset of names is fine) holding backward's gradients.
    max_elements: tensors with more elements are checked on this many randomly sampled ones (seeded).
    eps, order: step and stencil of the central difference (see numerical_grad).
    Returns a list of GradReport, one per checked array.
    """
    rng = np.random.default_rng(seed)
    outputs = lambda: f(**inputs)  # noqa: E731
    reports = []
    for top, grad_tree in analytic.items():
        if top not in inputs:
            raise KeyError(f"analytic gradient given for {top!r}, which is not an input")
        arrays = dict(tree_leaves(inputs[top], f"{top}."))
        for path, grad in tree_leaves(grad_tree, f"{top}."):
            if path not in arrays:
                raise KeyError(f"analytic gradient {path!r} has no matching input")
            array, grad = arrays[path], np.asarray(grad)
            if grad.shape != array.shape:
                raise ValueError(f"gradient {path!r} has shape {grad.shape}, input has {array.shape}")
            n = array.size
            idx = np.arange(n) if n <= max_elements else rng.choice(n, size=max_elements, replace=False)
            num = numerical_grad(outputs, array, idx, douts, eps, order)
            ana = grad.reshape(-1)[idx].astype(np.float64)
            abs_err = np.abs(num - ana)
            rel = abs_err / np.maximum(np.abs(num) + np.abs(ana), 1e-300)
            excess = abs_err - (atol + rtol * np.abs(num))
            worst = int(np.argmax(excess)) if len(idx) else 0
            reports.append(GradReport(
                name=path, checked=len(idx),
                max_abs_error=float(abs_err.max(initial=0.0)), max_rel_error=float(rel.max(initial=0.0)),
                worst_index=tuple(int(i) for i in np.unravel_index(idx[worst], array.shape)) if len(idx) else (),
                numerical=float(num[worst]) if len(idx) else 0.0,
                analytic=float(ana[worst]) if len(idx) else 0.0,
                ok=bool(np.all(excess <= 0))))
    return reports


def assert_grads_close(f, inputs, analytic, douts, *, rtol=1e-6, atol=1e-9, **kwargs):
    """check_grads, then raise AssertionError listing every array whose gradient is off."""
    reports = check_grads(f, inputs, analytic, douts, rtol=rtol, atol=atol, **kwargs)
    bad = [r for r in reports if not r.ok]
    if bad:
        lines = [f"  {r.name}{list(r.worst_index)}: numerical {r.numerical:.10g} vs analytic {r.analytic:.10g} "
                 f"(max abs err {r.max_abs_error:.3g}, max rel err {r.max_rel_error:.3g}, {r.checked} checked)"
                 for r in bad]
        raise AssertionError(f"gradient check failed (rtol={rtol}, atol={atol}, float64):\n" + "\n".join(lines))
    return reports
