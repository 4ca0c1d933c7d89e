"""Training: it learns, it resumes exactly, it survives Ctrl-C, SIGKILL and NaNs without losing a checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from minigriffin.checkpoint import load_checkpoint
from minigriffin.cli import main
from minigriffin.config import make_config
from minigriffin.optim import adamw_init, adamw_update, clip_by_global_norm
from minigriffin.params import init_params
from minigriffin.train import loss_and_grads
from minigriffin.tree import tree_leaves

TINY = ["--preset", "griffin-tiny", "--batch_size=2", "--seq_len=32", "--eval_batches=1", "--warmup_steps=2",
        "--no-progress"]


class FixedBatch(NamedTuple):
    tokens: np.ndarray
    targets: np.ndarray
    segment_pos: np.ndarray
    mask: np.ndarray


@pytest.mark.parametrize("preset", ["hawk-tiny", "griffin-tiny", "mqa-tiny"])
def test_overfits_one_batch(preset):
    """60 AdamW steps on one batch of 64 random bytes drive the loss from ln(256) = 5.5 to below 0.01."""
    stream = np.random.default_rng(0).integers(0, 256, 65)
    batch = FixedBatch(stream[None, :64], stream[None, 1:], np.arange(64)[None], np.ones((1, 64), bool))
    cfg = make_config(preset, width=32, lru_width=32, mlp_expanded_width=96)
    params = init_params(cfg, np.random.default_rng(1))
    state = adamw_init(params)
    for _ in range(60):
        loss, grads = loss_and_grads(params, batch, cfg)
        clip_by_global_norm(grads, 1.0)
        state = adamw_update(params, grads, state, lr=1e-2, weight_decay=0.0)
    assert loss < 0.01, loss


def test_short_run_on_books_beats_the_unigram_entropy(corpus_dir, tmp_path):
    """A few dozen steps on the generated corpus: validation loss falls below the validation books' unigram byte
    entropy (the best a model that ignores context can do)."""
    from minigriffin.data import load_corpus, unigram_entropy
    run = tmp_path / "run"
    code = main(["train", "--preset", "griffin-tiny", "--data-dir", str(corpus_dir), "--run-dir", str(run),
                 "--width=64", "--lru_width=64", "--mlp_expanded_width=192", "--num_heads=4",
                 "--batch_size=8", "--seq_len=64", "--max_steps=60", "--lr=5e-3", "--warmup_steps=5",
                 "--eval_every=30", "--eval_batches=4", "--no-progress"])
    assert code == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val = [r["val_loss"] for r in records if "val_loss" in r]
    entropy = unigram_entropy(load_corpus(corpus_dir).valid)
    assert len(records) == 60 and len(val) == 2
    assert val[-1] < entropy, f"validation loss {val[-1]:.3f} >= unigram entropy {entropy:.3f} nats/byte"
    assert (run / "checkpoints" / "best.npz").exists() and (run / "checkpoints" / "last.npz").exists()
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["width"] == 64 and config["train"]["max_steps"] == 60
    assert main(["plot", str(run)]) == 0 and (run / "loss.png").stat().st_size > 1000


def _train_cmd(corpus_dir, run, steps, *extra):
    return [sys.executable, "-m", "minigriffin", "train", *TINY, "--data-dir", str(corpus_dir), "--run-dir", str(run),
            f"--max_steps={steps}", "--checkpoint_every=4", "--eval_every=4", "--scan_backend=reference", *extra]


def _exact_env(**extra):
    """One thread everywhere and the reference scan: the conditions under which resume is bit-exact."""
    return dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                MKL_NUM_THREADS="1", **extra)


def _params(run):
    params, _, _, meta = load_checkpoint(Path(run) / "checkpoints" / "last.npz")
    return dict(tree_leaves(params)), meta


def test_kill_and_resume_is_bit_identical(corpus_dir, tmp_path):
    """8 steps in one go == 4 steps, SIGKILL, resume, 4 more (float32 parameters compared bit for bit)."""
    straight = tmp_path / "straight"
    subprocess.run(_train_cmd(corpus_dir, straight, 8), env=_exact_env(), check=True, capture_output=True)
    killed = tmp_path / "killed"
    # The run pauses for a minute after each checkpoint, so the kill lands right after step 4's checkpoint.
    proc = subprocess.Popen(_train_cmd(corpus_dir, killed, 8), env=_exact_env(MINIGRIFFIN_PAUSE_AFTER_CHECKPOINT="60"),
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
    assert _params(killed)[1]["step"] == 4
    # What a kill at step 6 leaves: the records of steps 5 and 6 (trained again on resume) and half of step 7's.
    straight_records = (straight / "metrics.jsonl").read_text().splitlines()
    with open(killed / "metrics.jsonl", "a") as f:
        f.write(straight_records[4] + "\n" + straight_records[5] + "\n" + straight_records[6][:20])
    subprocess.run([sys.executable, "-m", "minigriffin", "train", "--resume", str(killed), "--no-progress"],
                   env=_exact_env(), check=True, capture_output=True)
    a, meta_a = _params(straight)
    b, meta_b = _params(killed)
    assert meta_a["step"] == meta_b["step"] == 8
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)        # float32, bit-identical
    records = lambda run: [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]  # noqa
    assert [r["step"] for r in records(killed)] == list(range(1, 9))      # each step once, no torn line
    for key in ("loss", "grad_norm", "lr", "val_loss"):                     # float64 JSON values, exactly equal
        assert [r.get(key) for r in records(straight)] == [r.get(key) for r in records(killed)], key


def test_resume_keeps_the_best_validation_loss_of_best_npz(corpus_dir, tmp_path):
    """best.npz can be newer than last.npz (killed after saving best.npz at an evaluation, before the next
    last.npz): resuming takes the lower best validation loss, so a worse model never overwrites best.npz."""
    import shutil

    from minigriffin.data import load_corpus
    from minigriffin.train import Trainer
    run = tmp_path / "run"
    base = ["train", *TINY, "--data-dir", str(corpus_dir), "--run-dir", str(run), "--eval_every=2",
            "--checkpoint_every=4", "--lr=1e-2", "--cpu_workers=1"]
    assert main([*base, "--max_steps=4"]) == 0
    shutil.copy(run / "checkpoints" / "last.npz", tmp_path / "last-step4.npz")
    assert main(["train", "--resume", str(run), "--max_steps=8", "--no-progress"]) == 0
    best_at_8 = load_checkpoint(run / "checkpoints" / "best.npz")[3]["best_val_loss"]
    best_at_4 = load_checkpoint(tmp_path / "last-step4.npz")[3]["best_val_loss"]
    assert best_at_8 < best_at_4                                           # the run kept improving
    shutil.copy(tmp_path / "last-step4.npz", run / "checkpoints" / "last.npz")    # as if killed after step 4
    trainer = Trainer.resume(run, load_corpus)
    assert trainer.step == 4 and trainer.best_val == best_at_8            # float64, exact


def test_a_fresh_start_drops_the_metrics_of_a_try_that_saved_nothing(corpus_dir, tmp_path):
    """A run killed before its first checkpoint leaves metrics.jsonl; starting again in that folder must not
    append to it (the file would hold two step 1s)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n{"step": 2, "lo')
    assert main(["train", *TINY, "--data-dir", str(corpus_dir), "--run-dir", str(run), "--max_steps=3",
                 "--cpu_workers=1"]) == 0
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_ctrl_c_saves_and_prints_the_resume_command(corpus_dir, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(_train_cmd(corpus_dir, run, 100000, "--log_every=1"), env=_exact_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in proc.stdout:                              # wait until training has really started
            lines.append(line)
            if line.startswith("step 2/"):
                break
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = "".join(lines) + out
    assert proc.returncode == 130, output
    assert f"minigriffin train --resume {run}" in output
    step = _params(run)[1]["step"]
    assert step >= 2
    records = (run / "metrics.jsonl").read_text().splitlines()
    assert json.loads(records[-1])["step"] == step            # the checkpoint holds the last finished step


def test_non_finite_gradient_stops_with_a_snapshot(corpus_dir, tmp_path, monkeypatch, capsys):
    """A NaN gradient at step 6 stops training with an error naming the step and the parameter; a crash snapshot
    is written and the last good checkpoint (step 4) is left exactly as it was."""
    import minigriffin.train as train_module
    real = train_module.model_backward
    calls = {"n": 0}

    def poisoned(dlogits, cache):
        grads = real(dlogits, cache)
        calls["n"] += 1
        if calls["n"] == 6:
            grads["blocks"][1]["recurrent_block"]["rg_lru"]["a_param"][3] = np.nan
        return grads

    monkeypatch.setattr(train_module, "model_backward", poisoned)
    run = tmp_path / "run"
    args = ["train", *TINY, "--data-dir", str(corpus_dir), "--run-dir", str(run), "--max_steps=10",
            "--checkpoint_every=4", "--eval_every=100", "--cpu_workers=1"]    # one backward per step
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and "FloatingPointError" in message       # one line, no traceback
    assert "step 6" in message and "blocks.1.recurrent_block.rg_lru.a_param" in message
    assert (run / "crash_step6.npz").exists()
    assert _params(run)[1]["step"] == 4


def test_second_ctrl_c_stops_at_once(corpus_dir, tmp_path):
    """The first Ctrl-C asks for a clean stop after the step; a second one, right after, does not wait for it."""
    run = tmp_path / "run"
    # griffin-small at 8 x 256 takes about a second a step, so the second Ctrl-C lands inside the step.
    proc = subprocess.Popen(_train_cmd(corpus_dir, run, 100000, "--log_every=1", "--checkpoint_every=100000",
                                       "--eval_every=100000", "--preset", "griffin-small", "--batch_size=8",
                                       "--seq_len=256"), env=_exact_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("step 2/"):
                break
        proc.send_signal(signal.SIGINT)
        time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Ctrl-C again to stop at once" in out
    assert proc.returncode == 130, (proc.returncode, out)
    assert "minigriffin train: interrupted" in out and "Traceback" not in out   # one line, no traceback
    assert "resume with" not in out                        # it did not wait to save
