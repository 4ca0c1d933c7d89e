"""The whole model against DeepMind's recurrentgemma (PyTorch): the same weights give the same logits and the
same gradient for every parameter. The weights are tiny_model's (tests/strategies.py): every bias, norm scale,
conv weight and a_param perturbed away from its init, so no code path is multiplied by zero.

Errors are max |ours - theirs| / max |theirs| per tensor (oracle_utils.max_rel_error). Measured on this test's
cases (seed 0), and over seeds 0-19 of the same cases for the spread:
  float64 (recurrentgemma's float32 islands patched, tests/oracle_utils.py): logits 1.8e-15 (2.3e-15 over
  20 seeds), gradients 3.3e-15 (1.6e-14 over 20 seeds, always an a_param gradient, a sum over the whole
  sequence). Bounds: logits 1e-14, gradients 5e-14, a few units of roundoff above the worst seen, while a
  dropped bias or a wrong derivative is >= 1e-3.
  float32 (unpatched): logits 7.7e-7 (1.5e-6 over 20 seeds), gradients 2.4e-6 (8.6e-6 over 20 seeds).
  Bounds: logits 5e-6, gradients 2e-5.
"""

import numpy as np
import pytest
from strategies import tiny_model

from minigriffin.head import cross_entropy_backward, cross_entropy_forward
from minigriffin.model import model_backward, model_forward

oracle_utils = pytest.importorskip("oracle_utils")
torch = oracle_utils.torch

pytestmark = pytest.mark.oracle

# Packed documents (a new document starts mid-row) and W = 4 < T = 13.
SEGMENT_POS = np.array([list(range(13)), [0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2, 3, 4]])
CASES = {
    "hawk": dict(preset="hawk-tiny"),
    "griffin": dict(preset="griffin-tiny"),
    "mqa": dict(preset="mqa-tiny"),
    "griffin-recurrentgemma-flags": dict(preset="griffin-tiny", embeddings_scale_by_sqrt_dim=True,
                                         logits_soft_cap=30.0),
}


def _run_both(case, dtype, seed=0):
    cfg, params, rng = tiny_model(case, dtype, seed)
    tokens = rng.integers(0, cfg.vocab_size, size=SEGMENT_POS.shape)
    logits, cache = model_forward(params, tokens, SEGMENT_POS, cfg)
    dlogits = rng.standard_normal(logits.shape).astype(dtype)
    grads = model_backward(dlogits, cache)

    model = oracle_utils.torch_griffin(cfg, params)
    t_logits, _ = model(torch.from_numpy(tokens), torch.from_numpy(SEGMENT_POS), return_cache=False)
    (t_logits * torch.from_numpy(dlogits)).sum().backward()
    t_grads = {name: p.grad.numpy() for name, p in model.named_parameters()}
    return logits, t_logits.detach().numpy(), grads, t_grads


def _flat(grads):
    from minigriffin.convert import to_torch_state_dict
    return to_torch_state_dict(grads)


@pytest.mark.parametrize("name", CASES)
def test_float64_matches_recurrentgemma(name):
    with oracle_utils.exact_float64_torch():
        logits, t_logits, grads, t_grads = _run_both(CASES[name], "float64")
    assert oracle_utils.max_rel_error(logits, t_logits) <= 1e-14        # float64, max rel error 1e-14 (seen 1.8e-15)
    ours = _flat(grads)
    assert set(ours) == set(t_grads), set(ours) ^ set(t_grads)
    errors = {k: oracle_utils.max_rel_error(ours[k], t_grads[k]) for k in t_grads}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 5e-14, f"{worst}: {errors[worst]:.3g}"    # float64, max rel error 5e-14 (seen 3.3e-15)


@pytest.mark.parametrize("name", ["hawk", "griffin", "mqa"])
def test_float32_matches_recurrentgemma(name):
    logits, t_logits, grads, t_grads = _run_both(CASES[name], "float32")
    assert logits.dtype == np.float32
    assert oracle_utils.max_rel_error(logits, t_logits) <= 5e-6         # float32, max rel error 5e-6 (seen 7.7e-7)
    ours = _flat(grads)
    errors = {k: oracle_utils.max_rel_error(ours[k], t_grads[k]) for k in t_grads}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 2e-5, f"{worst}: {errors[worst]:.3g}"      # float32, max rel error 2e-5 (seen 2.4e-6)


def test_loss_matches_torch_cross_entropy():
    """Our mean cross-entropy with a mask equals torch's (float64, rel 1e-12), and so does its gradient."""
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((2, 5, 7))
    targets = rng.integers(0, 7, (2, 5))
    mask = rng.random((2, 5)) < 0.7
    mask[0, 0] = True
    loss, cache = cross_entropy_forward(logits, targets, mask)
    t_logits = torch.from_numpy(logits).requires_grad_(True)
    t_loss = torch.nn.functional.cross_entropy(t_logits[torch.from_numpy(mask)], torch.from_numpy(targets[mask]))
    t_loss.backward()
    assert abs(loss - t_loss.item()) <= 1e-12 * abs(t_loss.item())   # float64, rel 1e-12
    np.testing.assert_allclose(cross_entropy_backward(1.0, cache), t_logits.grad.numpy(), rtol=1e-12, atol=1e-15)
