"""Training with the state carried across windows (minigriffin/carry.py): the windows a row reads are
consecutive, the carried state equals one pass over the concatenated windows, the CPU threads carry each
their own rows, and a run killed mid-group resumes bit-exactly."""

import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from minigriffin.carry import WindowSampler
from minigriffin.config import make_config
from minigriffin.data import TokenSplit, sample_batch
from minigriffin.head import cross_entropy_forward
from minigriffin.model import model_forward
from minigriffin.params import init_params
from minigriffin.train import loss_and_grads
from minigriffin.tree import tree_leaves
from test_train import _exact_env, _params, _train_cmd


def _split(n=5000, doc_len=700, seed=0):
    tokens = np.random.default_rng(seed).integers(0, 256, n).astype(np.uint8)
    starts = np.r_[np.arange(0, n, doc_len), n]
    return TokenSplit(tokens, starts, tuple(f"doc{i}" for i in range(len(starts) - 1)), "train")


def test_one_window_is_exactly_sample_batch():
    split = _split()
    cfg = make_config("hawk-tiny")
    sampler = WindowSampler(split, cfg, 3, 16, carry_windows=1)
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    for step in range(4):
        batch, state = sampler.next(step, rng_a)
        assert state is None
        want = sample_batch(split, 3, 16, rng_b)
        for got, expected in zip(batch, want):
            np.testing.assert_array_equal(got, expected)


def test_rows_read_consecutive_windows_and_jump_every_k_steps():
    split = _split()
    sampler = WindowSampler(split, make_config("hawk-tiny"), 4, 16, carry_windows=3)
    rng = np.random.default_rng(0)
    batches = []
    for step in range(6):
        batch, state = sampler.next(step, rng)
        assert state.num_tokens == 0 if step % 3 == 0 else state is sampler.state
        batches.append(batch)
        sampler.carry(state._replace(num_tokens=state.num_tokens + 16))
    for prev, nxt in ((0, 1), (1, 2), (3, 4), (4, 5)):                 # inside a group: the stream continues
        np.testing.assert_array_equal(batches[nxt].tokens[:, 0], batches[prev].targets[:, -1])
    assert not np.array_equal(batches[3].tokens[:, 0], batches[2].targets[:, -1])   # a new group jumps


def test_carried_windows_equal_one_pass_over_the_whole_stretch():
    """The loss of each window, started from the state the previous one left, equals the loss of the same
    positions in one forward pass over all K windows (float64, 1e-12): a row really sees K * T tokens back."""
    split = _split(doc_len=40)                                      # documents start inside the windows too
    cfg = make_config("griffin-tiny", dtype="float64", width=32, lru_width=32, mlp_expanded_width=64,
                      attention_window_size=8)
    params = init_params(cfg, np.random.default_rng(1))
    K, T = 3, 16
    sampler = WindowSampler(split, cfg, 2, T, carry_windows=K)
    rng = np.random.default_rng(2)
    windows, losses = [], []
    for step in range(K):
        batch, state = sampler.next(step, rng)
        loss, _, new_state = loss_and_grads(params, batch, cfg, state=state)
        sampler.carry(new_state)
        windows.append(batch)
        losses.append(loss)
    whole = [np.concatenate(parts, axis=1) for parts in zip(*windows)]   # (B, K T) tokens, targets, pos, mask
    logits, _ = model_forward(params, whole[0], whole[2], cfg)
    for k in range(K):
        part = slice(k * T, (k + 1) * T)
        want, _ = cross_entropy_forward(logits[:, part], whole[1][:, part], whole[3][:, part])
        assert abs(losses[k] - want) < 1e-12, (k, losses[k], want)


@pytest.mark.parametrize("preset", ["hawk-tiny", "griffin-tiny"])
def test_threads_carry_their_own_rows(preset):
    """workers=2 (rows split between threads, each with its rows' state) == workers=1: loss, gradients and
    the carried state (float64, 1e-12)."""
    split = _split()
    cfg = make_config(preset, dtype="float64", width=32, lru_width=32, mlp_expanded_width=64,
                      attention_window_size=8)
    params = init_params(cfg, np.random.default_rng(1))
    results = {}
    for workers in (1, 2):
        sampler = WindowSampler(split, cfg, 4, 16, carry_windows=2)
        rng = np.random.default_rng(3)
        for step in range(2):
            batch, state = sampler.next(step, rng)
            loss, grads, new_state = loss_and_grads(params, batch, cfg, workers=workers, state=state)
            sampler.carry(new_state)
        results[workers] = loss, dict(tree_leaves(grads)), new_state
    (loss1, grads1, state1), (loss2, grads2, state2) = results[1], results[2]
    assert abs(loss1 - loss2) < 1e-12
    for name in grads1:
        np.testing.assert_allclose(grads2[name], grads1[name], rtol=1e-12, atol=1e-12, err_msg=name)
    for block1, block2 in zip(state1.blocks, state2.blocks):
        for a, b in zip(block1[:3], block2[:3]):
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


def test_too_short_a_split_for_the_group_is_refused():
    with pytest.raises(ValueError, match="carry_windows"):
        WindowSampler(_split(n=1000), make_config("hawk-tiny"), 2, 100, carry_windows=20)


def test_kill_mid_group_and_resume_is_bit_identical(corpus_dir, tmp_path):
    """carry_windows=3, 8 steps in one go == 4 steps (the checkpoint falls inside a group, so it holds the
    carried state), SIGKILL, resume, 4 more: float32 parameters bit for bit."""
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(_train_cmd(corpus_dir, straight, 8, "--carry_windows=3"), env=_exact_env(), check=True,
                   capture_output=True)
    proc = subprocess.Popen(_train_cmd(corpus_dir, killed, 8, "--carry_windows=3"),
                            env=_exact_env(MINIGRIFFIN_PAUSE_AFTER_CHECKPOINT="60"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (killed / "checkpoints" / "last.npz").exists():
            assert time.time() < deadline and proc.poll() is None, "the run never wrote its first checkpoint"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    params_at_4, meta = _params(killed)
    assert meta["step"] == 4 and meta["carry_group_start"] == 3          # saved inside the group of steps 3-5
    subprocess.run([sys.executable, "-m", "minigriffin", "train", "--resume", str(killed), "--no-progress"],
                   env=_exact_env(), check=True, capture_output=True)
    a, _ = _params(straight)
    b, _ = _params(killed)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)        # float32, bit-identical
