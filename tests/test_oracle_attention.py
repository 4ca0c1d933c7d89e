"""minigriffin.attention / minigriffin.rope against DeepMind's recurrentgemma 1.0.1 (torch), values and gradients.

The oracle is `recurrentgemma.torch.modules.LocalAttentionBlock` (same weight layout as ours: torch Linear
(out, in)); its gradients come from torch autograd of L = sum(out * dout). recurrentgemma keeps two float32
islands even in a float64 module (recurrentgemma/torch/modules.py): `_apply_rope` builds the RoPE inverse
frequencies in the *default* dtype, and LocalAttentionBlock.forward casts the softmax's logits with
`.type(torch.float32)` (tests/oracle_utils.py patches the same islands for the whole model). For the exact float64
comparison we set the default dtype to float64 and swap the module's `torch` for a proxy whose `float32`
is `torch.float64`; then both sides compute the same float64 math and must agree to 1e-12 (measured ~1e-15).
The float32 comparison runs recurrentgemma unpatched.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
rg_modules = pytest.importorskip("recurrentgemma.torch.modules")

from minigriffin.attention import attention_backward, attention_forward  # noqa: E402
from minigriffin.rope import rope_forward  # noqa: E402

pytestmark = pytest.mark.oracle


class _Float32IsFloat64:
    """Stands in for the `torch` module inside recurrentgemma.torch.modules: `torch.float32` means float64."""
    float32 = torch.float64

    def __getattr__(self, name):
        return getattr(torch, name)


@pytest.fixture
def float64_oracle(monkeypatch):
    """recurrentgemma with its float32 islands lifted to float64 (default dtype + softmax cast), restored after."""
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    monkeypatch.setattr(rg_modules, "torch", _Float32IsFloat64())
    yield
    torch.set_default_dtype(saved)


@pytest.fixture
def float32_oracle():
    """recurrentgemma as shipped, default dtype float32 (restored after)."""
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    yield
    torch.set_default_dtype(saved)


def max_rel_error(ours, theirs):
    """max |ours - theirs| / max |theirs| over the tensor: the error relative to the tensor's scale."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    return float(np.max(np.abs(ours - theirs)) / max(np.max(np.abs(theirs)), 1e-300))


def _packed_positions(T, cuts):
    pos = np.arange(T)
    for c in cuts:
        if 0 < c < T:                                  # a document starts at index c
            pos[c:] = np.arange(T - c)
    return pos


def _setup(B, T, D, H, dtype, seed):
    rng = np.random.default_rng(seed)
    Dh = D // H
    params = {"proj_q": {"weight": rng.standard_normal((D, D)) * 2 / np.sqrt(D)},
              "proj_k": {"weight": rng.standard_normal((Dh, D)) * 2 / np.sqrt(D)},
              "proj_v": {"weight": rng.standard_normal((Dh, D)) / np.sqrt(D)},
              "proj_final": {"weight": rng.standard_normal((D, D)) / np.sqrt(D), "bias": rng.standard_normal(D) * 0.1}}
    params = {k: {kk: a.astype(dtype) for kk, a in v.items()} for k, v in params.items()}
    x = rng.standard_normal((B, T, D)).astype(dtype)
    rows = [_packed_positions(T, [T // 3, T // 3 + 4]), _packed_positions(T, [T - 2]), np.arange(T) + 3][:B]
    segment_pos = np.stack(rows)     # row 0: three documents; row 1: a doc start near the end; row 2: no 0 at all
    dout = rng.standard_normal((B, T, D)).astype(dtype)
    return x, params, segment_pos, dout


def _oracle(x, params, segment_pos, dout, num_heads, window, torch_dtype):
    """recurrentgemma's LocalAttentionBlock with our weights: (out, dx, grads) from torch autograd, as NumPy."""
    D = x.shape[-1]
    block = rg_modules.LocalAttentionBlock(width=D, num_heads=num_heads, window_size=window, dtype=torch_dtype)
    state = {f"{name}.{leaf}": torch.from_numpy(a.copy()) for name, v in params.items() for leaf, a in v.items()}
    block.load_state_dict(state, strict=True)
    x_t = torch.from_numpy(x.copy()).requires_grad_(True)
    out, _ = block(x_t, torch.from_numpy(segment_pos), return_cache=False)
    (out * torch.from_numpy(dout)).sum().backward()
    grads = {name: {leaf: getattr(getattr(block, name), leaf).grad.numpy() for leaf in v} for name, v in params.items()}
    return out.detach().numpy(), x_t.grad.numpy(), grads


# (B, T, D, H, window, block_size)
ORACLE_CASES = {
    "local_W_lt_T": (3, 29, 32, 4, 5, None),
    "local_small_blocks": (2, 29, 32, 2, 7, 3),
    "local_W_0": (2, 11, 16, 2, 0, 4),
    "global_W_ge_T": (2, 17, 32, 4, 64, None),
    "T_1": (2, 1, 16, 1, 4, None),
}


def _compare(case, dtype, torch_dtype, seed=0):
    B, T, D, H, W, Q = ORACLE_CASES[case]
    x, params, segment_pos, dout = _setup(B, T, D, H, dtype, seed)
    out, cache = attention_forward(x, params, segment_pos, num_heads=H, window=W, block_size=Q)
    dx, grads = attention_backward(dout, cache)
    out_ref, dx_ref, grads_ref = _oracle(x, params, segment_pos, dout, H, W, torch_dtype)
    errors = {"out": max_rel_error(out, out_ref), "dx": max_rel_error(dx, dx_ref)}
    for name in params:
        for leaf in params[name]:
            assert grads[name][leaf].shape == grads_ref[name][leaf].shape
            assert grads[name][leaf].dtype == dtype
            errors[f"{name}.{leaf}"] = max_rel_error(grads[name][leaf], grads_ref[name][leaf])
    assert out.dtype == dx.dtype == dtype
    return errors


@pytest.mark.parametrize("case", ORACLE_CASES)
def test_attention_matches_recurrentgemma_float64(case, float64_oracle):
    errors = _compare(case, np.float64, torch.float64)
    print(case, "float64 max rel errors:", {k: f"{e:.1e}" for k, e in errors.items()})
    # Same float64 math on both sides, different summation orders: measured <= 1.8e-15 over the five cases;
    # we hold 1e-12, 500x above the roundoff (room for other BLAS orders) while any formula slip is >= 1e-3.
    assert max(errors.values()) <= 1e-12, errors       # float64, max |diff| / max |ref| <= 1e-12 per tensor


@pytest.mark.parametrize("case", ORACLE_CASES)
def test_attention_matches_recurrentgemma_float32(case, float32_oracle):
    errors = _compare(case, np.float32, torch.float32)
    print(case, "float32 max rel errors:", {k: f"{e:.1e}" for k, e in errors.items()})
    # float32 (eps 6e-8): both sides round differently (matmul order, RoPE angles: torch forms pos * inv_freq
    # in float32, we in float64), amplified a few times through the softmax and the sums over T
    assert max(errors.values()) <= 1e-5, errors        # float32, max |diff| / max |ref| <= 1e-5 per tensor


def test_oracle_patch_is_needed_and_effective():
    """Unpatched, recurrentgemma's float64 block is only float32-accurate: the patch is what makes 1e-12 meaningful."""
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)       # RoPE frequencies in float64; the softmax cast stays float32
    try:
        errors = _compare("local_W_lt_T", np.float64, torch.float64)
    finally:
        torch.set_default_dtype(saved)
    assert max(errors.values()) > 1e-10, errors        # float64 vs a float32 softmax: differs well above 1e-10


@pytest.mark.parametrize("Dh", [4, 8, 16, 64])
def test_rope_matches_apply_rope_float64(Dh, float64_oracle):
    rng = np.random.default_rng(Dh)
    B, T, N = 2, 13, 3
    x = rng.standard_normal((B, T, N, Dh))
    pos = np.stack([_packed_positions(T, [5]), np.arange(T) * 397])      # packed, and large positions
    y, _ = rope_forward(x, pos)
    y_ref = rg_modules._apply_rope(torch.from_numpy(x), torch.from_numpy(pos)).numpy()
    assert max_rel_error(y, y_ref) <= 1e-12                              # float64, max |diff| / max |ref| <= 1e-12


@pytest.mark.parametrize("Dh", [4, 16, 64])
def test_rope_matches_apply_rope_float32(Dh, float32_oracle):
    rng = np.random.default_rng(Dh)
    B, T, N = 2, 40, 1
    x = rng.standard_normal((B, T, N, Dh)).astype(np.float32)
    pos = np.stack([_packed_positions(T, [9, 30]), np.arange(T)])
    y, _ = rope_forward(x, pos)
    y_ref = rg_modules._apply_rope(torch.from_numpy(x), torch.from_numpy(pos)).numpy()
    assert y.dtype == np.float32
    # torch rounds theta = pos * inv_freq to float32 (error ~ 40 * 6e-8) before sin/cos; we round sin/cos only
    assert max_rel_error(y, y_ref) <= 1e-5                               # float32, positions < 40, 1e-5
