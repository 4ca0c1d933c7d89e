"""The float64 path still computes what it computed when tests/data/golden_griffin_tiny.npz was written
(tests/golden.py), and what it stored there is what recurrentgemma computes for the same weights and batch.
Tolerances: against the file rel 1e-10 (float64; only BLAS summation order may differ between machines, and
five SGD steps at lr 0.5 amplify it); against the oracle see test_golden_file_matches_recurrentgemma."""

import numpy as np
import pytest

import golden


def _stored():
    assert golden.PATH.exists(), "golden file missing: run python tests/golden.py"
    with np.load(golden.PATH, allow_pickle=False) as stored:
        return dict(stored)


def test_matches_golden_file():
    expected = _stored()
    got = golden.compute()
    for key in ("tokens", "targets", "segment_pos"):
        np.testing.assert_array_equal(got[key], expected[key], err_msg=f"{key}: the inputs' generator changed")  # int
    assert set(got) == set(expected)
    for key in sorted(set(expected) - {"tokens", "targets", "segment_pos"}):
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-10, atol=1e-14, err_msg=key)   # float64
    losses = expected["sgd_losses"]
    assert losses[-1] < losses[0]          # the stored SGD run does learn (a sanity check of the file itself)


@pytest.mark.oracle
def test_golden_file_matches_recurrentgemma():
    """recurrentgemma's Griffin (float64, float32 islands patched: tests/oracle_utils.py), loaded with the golden
    weights, reproduces the stored logits, loss, gradients and all five SGD losses. Errors are
    max |stored - oracle| / max |oracle| per tensor; measured: logits 7.2e-16, loss 3.0e-16, gradients <= 3.7e-15,
    the five SGD losses 3.0e-16. Bound 5e-14 for all (float64), as for gradients in tests/test_oracle_model.py."""
    oracle_utils = pytest.importorskip("oracle_utils")
    torch = oracle_utils.torch
    expected = _stored()
    cfg, params, tokens, targets, segment_pos = golden.setup()
    np.testing.assert_array_equal(tokens, expected["tokens"])      # int, exact: the file's inputs
    np.testing.assert_array_equal(targets, expected["targets"])    # int, exact
    errors, sgd_losses = {}, []
    with oracle_utils.exact_float64_torch():
        model = oracle_utils.torch_griffin(cfg, params)
        t_tokens, t_pos, t_targets = (torch.from_numpy(a) for a in (tokens, segment_pos, targets))
        for step in range(golden.SGD_STEPS):
            model.zero_grad()
            logits, _ = model(t_tokens, t_pos, return_cache=False)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab_size), t_targets.reshape(-1))
            loss.backward()
            sgd_losses.append(loss.item())
            if step == 0:
                errors["logits"] = oracle_utils.max_rel_error(expected["logits"], logits.detach().numpy())
                errors["loss"] = oracle_utils.max_rel_error(expected["loss"], loss.item())
                grads = {name: p.grad.numpy().copy() for name, p in model.named_parameters()}
                for key in expected:
                    if key.startswith("grad:"):
                        errors[key] = oracle_utils.max_rel_error(expected[key], grads[key[len("grad:"):]])
            with torch.no_grad():
                for p in model.parameters():
                    p -= golden.SGD_LR * p.grad                          # the plain SGD step of golden.compute
    errors["sgd_losses"] = oracle_utils.max_rel_error(expected["sgd_losses"], np.array(sgd_losses))
    assert len(errors) == 3 + sum(key.startswith("grad:") for key in expected)
    assert max(errors.values()) <= 5e-14, errors      # float64, max |stored - oracle| / max |oracle| <= 5e-14
