"""The CG-LRU against DeepMind's JAX layer, recurrentgemma.jax.layers.RGLRU(only_real=False), with the same weights.

Outputs, the carried state, and every gradient (dx, dh0 and each parameter, from jax.vjp of the same layer) in
float64 under `jax.enable_x64`: max relative error (max |ours - theirs| / max |theirs|) <= 1e-12.

Two things in recurrentgemma 1.0.1 are patched for the comparison, each for the duration of a test only:
1. A float32 island. RGLRU calls scan.linear_scan with its default acc_float_dtype=float32, so even a float64
   layer accumulates the scan in complex64, and with a float64 cache it fails an assert in get_acc_dtype.
   `float64_scan` passes acc_float_dtype=float64, as tests/oracle_utils.py does for the torch scan.
2. A bug in the complex path with a carried state. With a cache, pallas.get_acc_dtype returns the *real*
   acc_float_dtype, and lru_linear_scan casts a_t and x_t to it: the imaginary parts of a_t and of the scan's
   input are dropped (a complex-to-real astype; JAX warns that it will become an error), and only h0 stays
   complex. The sampling-mode branch (T = 1) does the same. Without a cache the accumulation dtype is complex
   and the layer is right. `complex_cache_fix` makes get_acc_dtype return the complex dtype for complex inputs;
   test_recurrentgemma_drops_imaginary_parts_with_a_cache shows the unpatched behaviour exactly.
test_the_float32_island_is_real shows 1. float32 (JAX's own accumulation, fix 2 only): bounds beside each assert.
"""

import functools

import numpy as np
import pytest

from minigriffin.cglru import cglru_backward, cglru_forward, cglru_init

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
rg_common = pytest.importorskip("recurrentgemma.common")
rg_layers = pytest.importorskip("recurrentgemma.jax.layers")
rg_scan = pytest.importorskip("recurrentgemma.jax.scan")
rg_pallas = pytest.importorskip("recurrentgemma.jax.pallas")

pytestmark = pytest.mark.oracle

B, T, E, H = 2, 12, 8, 2
# row 0 continues a document from an earlier chunk (h0 matters); row 1 packs three documents (resets)
SP = np.array([list(range(5, 5 + T)), [3, 4, 0, 1, 2, 0, 1, 2, 3, 4, 0, 1]])


def max_rel_error(actual, expected):
    """max |actual - expected| / max |expected| (tests/oracle_utils.py's measure, without its torch import)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


@pytest.fixture
def complex_cache_fix(monkeypatch):
    """recurrentgemma's get_acc_dtype, except that complex inputs always accumulate in a complex dtype."""
    original = rg_pallas.get_acc_dtype

    def get_acc_dtype(x, h0, acc_float_dtype=jnp.float32):
        dtype = original(x, h0, acc_float_dtype)
        return jnp.result_type(dtype, jnp.complex64) if jnp.iscomplexobj(x) else dtype

    monkeypatch.setattr(rg_pallas, "get_acc_dtype", get_acc_dtype)


@pytest.fixture
def float64_scan(monkeypatch, complex_cache_fix):
    """jax x64 on, and recurrentgemma's scan accumulating in complex128 (both patches), for one test."""
    monkeypatch.setattr(rg_scan, "linear_scan", functools.partial(rg_scan.linear_scan, acc_float_dtype=jnp.float64))
    with jax.enable_x64(True):
        yield


def case(seed, dtype, extreme=False):
    """Our params (every leaf non-trivial), x, h0 (the merged real pair), dy, dh_last."""
    rng = np.random.default_rng(seed)
    p = cglru_init(rng, E, H, dtype)
    for gate in ("input_gate", "a_gate"):
        p[gate]["w"] = (p[gate]["w"] * 4).astype(dtype)                       # gates away from 1/2
        p[gate]["b"] = rng.normal(0, 0.5, p[gate]["b"].shape).astype(dtype)
    if extreme:                        # |a| -> 1: 1 - |a|^2 below 2.5e-7 in block 0, so the sqrt cap is active
        p["a_param"][:E // (2 * H)] = -16.0
        p["a_gate"]["b"][0] = -5.0
    x, h0, dy = (rng.standard_normal(shape).astype(dtype) for shape in ((B, T, E), (B, E), (B, T, E)))
    return p, x, h0, dy, rng.standard_normal((B, E)).astype(dtype)


def jax_layer(dtype):
    return rg_layers.RGLRU(width=E, num_heads=H, only_real=False, dtype=dtype, param_dtype=dtype,
                           scan_type=rg_common.ScanType.LINEAR_NATIVE)


def jax_forward_backward(p, x, h0, dy, dh_last, dtype):
    """(y, h_last) and the vjp (dparams, dx, dh0) of recurrentgemma's layer, all as NumPy."""
    layer = jax_layer(dtype)
    params = jax.tree_util.tree_map(jnp.asarray, p)
    sp = jnp.asarray(SP)

    def f(params, x, h0):
        return layer.apply({"params": params}, x, sp, h0)

    (y, last), vjp = jax.vjp(f, params, jnp.asarray(x), jnp.asarray(h0))
    grads, dx, dh0 = vjp((jnp.asarray(dy), jnp.asarray(dh_last)))
    as_np = functools.partial(jax.tree_util.tree_map, np.asarray)
    return as_np((y, last)), as_np((grads, dx, dh0))


def compare(p, x, h0, dy, dh_last, dtype, bound_out, bound_grad):
    y, last, cache = cglru_forward(x, p, SP, h0=h0, backend="reference")
    dx, dh0, grads = cglru_backward(dy, dh_last, cache)
    (y_j, last_j), (grads_j, dx_j, dh0_j) = jax_forward_backward(p, x, h0, dy, dh_last, dtype)
    errors = {"y": max_rel_error(y, y_j), "h_last": max_rel_error(last, last_j), "dx": max_rel_error(dx, dx_j),
              "dh0": max_rel_error(dh0, dh0_j)}
    assert set(grads) == set(grads_j)                                            # the same parameter names
    for name in ("a_param", "a_imag_param"):
        errors[name] = max_rel_error(grads[name], grads_j[name])
    for gate in ("input_gate", "a_gate"):
        for leaf in ("w", "b"):
            errors[f"{gate}.{leaf}"] = max_rel_error(grads[gate][leaf], grads_j[gate][leaf])
    for name, err in errors.items():
        bound = bound_out if name in ("y", "h_last") else bound_grad
        assert err <= bound, (name, err, bound)
    return cache, errors


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cglru_matches_recurrentgemma_float64(float64_scan, seed):
    """Output, h_last, dx, dh0 and all six parameter gradients: max relative error <= 1e-12 (float64;
    seen <= 7e-15 over 20 seeds)."""
    compare(*case(seed, np.float64), jnp.float64, bound_out=1e-12, bound_grad=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cglru_matches_recurrentgemma_float64_capped_sqrt(float64_scan, seed):
    """|a| -> 1, where the sqrt's derivative is capped: max relative error <= 1e-10 (float64; seen <= 2.4e-11 over
    20 seeds). Both sides compute 1 - |a|^2 = 1 - exp(2 log|a|) ~ 1e-8 there, and XLA's exp and NumPy's differ
    by one ulp (1e-16), which that cancellation turns into 1e-8 of the multiplier in those channels. With XLA's
    exp in our forward every tensor agrees to 2.5e-15, except da_param (3.9e-13, the capped region)."""
    cache, _ = compare(*case(seed, np.float64, extreme=True), jnp.float64, bound_out=1e-10, bound_grad=1e-10)
    assert (1.0 - cache.a_square < 1.0 / (4 * 1000.0**2)).any()                # the capped region is reached


def test_cglru_matches_recurrentgemma_float32(complex_cache_fix):
    """float32 (complex64 scan on both sides; JAX's own float32 accumulation): outputs within 2e-5,
    gradients within 1e-4 relative to each tensor's largest value (seen over 20 seeds: 5.6e-6 and 1.4e-5)."""
    compare(*case(3, np.float32), jnp.float32, bound_out=2e-5, bound_grad=1e-4)


def test_sampling_mode_and_no_state_match(float64_scan):
    """T = 1 (recurrentgemma's sampling-mode branch of linear_scan) with a carried state, and T = 12 without one:
    outputs match to 1e-12 relative (float64)."""
    p, x, h0, _, _ = case(4, np.float64)
    layer = jax_layer(jnp.float64)
    params = jax.tree_util.tree_map(jnp.asarray, p)
    y, last, _ = cglru_forward(x[:, :1], p, SP[:, :1], h0=h0)
    y_j, last_j = layer.apply({"params": params}, jnp.asarray(x[:, :1]), jnp.asarray(SP[:, :1]), jnp.asarray(h0))
    assert max_rel_error(y, y_j) <= 1e-12 and max_rel_error(last, last_j) <= 1e-12   # float64
    y, last, _ = cglru_forward(x, p, SP)
    y_j, last_j = layer.apply({"params": params}, jnp.asarray(x), jnp.asarray(SP))
    assert max_rel_error(y, y_j) <= 1e-12 and max_rel_error(last, last_j) <= 1e-12   # float64


@pytest.mark.filterwarnings("ignore:Casting from complex to real:DeprecationWarning")
def test_recurrentgemma_drops_imaginary_parts_with_a_cache():
    """Unpatched, with a cache, recurrentgemma scans Re(a_t) and Re(normalized x_t) from the complex h0 (fix 2 in
    the module docstring): its output equals that scan to 2e-6 relative (float32) and differs from the CG-LRU's
    by more than 10%."""
    from minigriffin.cglru import complex_to_merged, merged_to_complex
    from minigriffin.scan import linear_scan
    p, x, h0, _, _ = case(6, np.float32)
    y, _, c = cglru_forward(x, p, SP, h0=h0, backend="reference")
    params = jax.tree_util.tree_map(jnp.asarray, p)
    y_j, _ = jax_layer(jnp.float32).apply({"params": params}, jnp.asarray(x), jnp.asarray(SP), jnp.asarray(h0))
    normalized_x = c.x_complex * c.gate_x * c.multiplier                       # (B, T, E/2) complex64
    h_bug, _ = linear_scan(normalized_x.real.astype(np.complex64), c.a_scan.real.astype(np.complex64),
                           merged_to_complex(h0), backend="reference")
    assert max_rel_error(complex_to_merged(h_bug), y_j) <= 2e-6                 # float32
    assert max_rel_error(y, y_j) > 0.1


def test_the_float32_island_is_real(complex_cache_fix):
    """Without the float64 patch (fix 1), recurrentgemma's float64 layer scans in complex64 (error far above
    1e-12) and refuses a float64 cache; this is why float64_scan patches it."""
    p, x, h0, _, _ = case(5, np.float64)
    params = jax.tree_util.tree_map(jnp.asarray, p)
    with jax.enable_x64(True):
        layer = jax_layer(jnp.float64)
        y_j, _ = layer.apply({"params": params}, jnp.asarray(x), jnp.asarray(SP))
        with pytest.raises(AssertionError):
            layer.apply({"params": params}, jnp.asarray(x), jnp.asarray(SP), jnp.asarray(h0))
    y, _, _ = cglru_forward(x, p, SP)
    assert max_rel_error(y, np.asarray(y_j)) > 1e-10                           # float64 vs complex64 accumulation


def test_init_matches_recurrentgemma(float64_scan):
    """cglru_init has recurrentgemma's names, shapes and distributions: gate weights N(0, 1/E) (flax counts the
    block axis in the fan-in), a_imag_param in [0, 0.1 pi], |a| = sigmoid(-a_param) in [0.9, 0.999]. The std is
    compared over 64 * 4096 draws to 3% (about 10 standard errors)."""
    width, heads = 128, 4
    x = jnp.zeros((1, 2, width))
    theirs = [jax.tree_util.tree_map(np.asarray, rg_layers.RGLRU(width=width, num_heads=heads, only_real=False,
                                                                param_dtype=jnp.float64).init(
                  jax.random.PRNGKey(seed), x, jnp.arange(2)[None])["params"]) for seed in range(64)]
    rng = np.random.default_rng(0)
    ours = [cglru_init(rng, width, heads) for _ in range(64)]
    shapes = lambda tree: jax.tree_util.tree_map(lambda v: (v.shape, v.dtype), tree)   # noqa: E731
    assert shapes(ours[0]) == shapes(theirs[0])
    for params in (ours, theirs):
        for gate in ("input_gate", "a_gate"):
            std = np.std([p[gate]["w"] for p in params])
            assert abs(std / np.sqrt(1.0 / width) - 1) < 0.03, (gate, std)
            assert all((p[gate]["b"] == 0).all() for p in params)
        imag = np.concatenate([p["a_imag_param"] for p in params])
        assert imag.min() >= 0 and imag.max() <= 0.1 * np.pi and imag.max() > 0.09 * np.pi
        radius = 1.0 / (1.0 + np.exp(np.concatenate([p["a_param"] for p in params])))   # sigmoid(-a_param)
        assert radius.min() >= 0.9 - 1e-9 and radius.max() <= 0.999 + 1e-9
