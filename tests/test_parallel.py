"""CPU data parallelism (minigriffin/fast/parallel.py, the accelerator of train.loss_and_grads): splitting a batch's rows between threads gives the same loss
and gradients as one pass over the whole batch."""

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from minigriffin.data import Batch
from minigriffin.fast.parallel import row_shares
from minigriffin.train import loss_and_grads
from minigriffin.tree import tree_leaves
from strategies import tiny_model


def _batch(B, T, rng, masked_rows=()):
    stream = rng.integers(0, 256, (B, T + 1))
    segment_pos = np.tile(np.arange(T), (B, 1))
    segment_pos[:, T // 2:] -= T // 2                       # a second document starts mid-row
    mask = rng.random((B, T)) > 0.2
    mask[list(masked_rows)] = False
    return Batch(tokens=stream[:, :-1], targets=stream[:, 1:], segment_pos=segment_pos, mask=mask)


def test_row_shares_cover_the_batch_evenly():
    assert row_shares(8, 3) == [slice(0, 2), slice(2, 5), slice(5, 8)]
    assert row_shares(2, 4) == [slice(0, 1), slice(1, 2)]          # never more shares than rows
    assert row_shares(5, 1) == [slice(0, 5)]


@pytest.mark.parametrize("family", ["hawk", "griffin", "mqa"])
@pytest.mark.parametrize("B, workers, masked_rows", [(4, 2, ()), (5, 3, ()), (3, 2, (0,)), (4, 4, (2, 3))])
def test_workers_give_the_whole_batch_gradient(family, B, workers, masked_rows):
    """float64: every gradient within rtol 1e-12 of the one-pass gradient (only the order of sums differs);
    rows whose every position is masked (a share with nothing to count) add nothing."""
    cfg, params, _ = tiny_model({"preset": f"{family}-tiny"}, dtype="float64")
    batch = _batch(B, 12, np.random.default_rng(B + workers), masked_rows)
    loss1, grads1 = loss_and_grads(params, batch, cfg, workers=1)
    loss_n, grads_n = loss_and_grads(params, batch, cfg, workers=workers)
    assert loss_n == pytest.approx(loss1, rel=1e-13)
    for (path, g1), (_, gn) in zip(tree_leaves(grads1), tree_leaves(grads_n)):
        np.testing.assert_allclose(gn, g1, rtol=1e-12, atol=1e-15, err_msg=path)


def test_float32_workers_agree_within_float32_rounding():
    cfg, params, _ = tiny_model({"preset": "griffin-tiny"}, dtype="float32")
    batch = _batch(4, 16, np.random.default_rng(0))
    loss1, grads1 = loss_and_grads(params, batch, cfg, workers=1)
    loss2, grads2 = loss_and_grads(params, batch, cfg, workers=2)
    assert loss2 == pytest.approx(loss1, rel=1e-6)
    for (path, g1), (_, g2) in zip(tree_leaves(grads1), tree_leaves(grads2)):
        scale = np.abs(g1).max() + 1e-30                          # float32: 1e-5 of each gradient's scale
        assert np.abs(g2 - g1).max() <= 1e-5 * scale, path


def test_all_masked_batch_is_an_error_and_blas_threads_are_restored():
    cfg, params, _ = tiny_model({"preset": "hawk-tiny"}, dtype="float64")
    before = [info["num_threads"] for info in threadpool_info()]
    loss_and_grads(params, _batch(2, 8, np.random.default_rng(1)), cfg, workers=2)
    assert [info["num_threads"] for info in threadpool_info()] == before
    with pytest.raises(ValueError, match="mask excludes every position"):
        loss_and_grads(params, _batch(2, 8, np.random.default_rng(1), masked_rows=(0, 1)), cfg, workers=2)
