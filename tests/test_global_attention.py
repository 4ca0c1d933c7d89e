"""Local or global attention is part of the model's config (GriffinConfig.global_attention), never guessed.

Defects this guards against: `eval-length` used to make a model's attention global whenever its window was at
least its training length, so a Griffin trained with a short --seq_len was silently evaluated with global
attention; the mqa-* presets had a window of 128 under the default sequence length of 256, so "the
global-attention baseline" trained as a local-attention model; `experiment` recorded the global baselines'
training window, not how they were evaluated.
"""

import csv
import json

import numpy as np
import pytest

from minigriffin.checkpoint import load_checkpoint
from minigriffin.cli import main
from minigriffin.config import GLOBAL_WINDOW, PRESETS, config_from_dict, make_config
from minigriffin.data import load_corpus
from minigriffin.evaluate import length_curve
from minigriffin.model import model_forward
from minigriffin.params import init_params


@pytest.mark.parametrize("name", sorted(n for n in PRESETS if n.startswith("mqa-")))
def test_mqa_presets_attend_globally(name):
    cfg = PRESETS[name]
    assert cfg.global_attention and cfg.window == GLOBAL_WINDOW


@pytest.mark.parametrize("name", sorted(n for n in PRESETS if not n.startswith("mqa-")))
def test_hawk_and_griffin_presets_attend_locally(name):
    cfg = PRESETS[name]
    assert not cfg.global_attention and cfg.window == cfg.attention_window_size


def test_mqa_small_sees_the_first_token_of_a_default_length_sequence():
    """One block of mqa-small at the default training length (256): the last position's logits depend on the
    first token (they did not with the old preset's window of 128; one block, because stacked local windows
    reach further). float64, so any dependence is far above rounding."""
    one = dict(dtype="float64", scan_backend="reference", block_types=("attention",))
    cfg = make_config("mqa-small", **one)
    params = init_params(cfg, np.random.default_rng(0))
    tokens = np.random.default_rng(1).integers(0, 256, (1, 256))
    other = tokens.copy()
    other[0, 0] = (tokens[0, 0] + 1) % 256
    pos = np.arange(256)[None]
    last = [model_forward(params, t, pos, cfg)[0][0, -1] for t in (tokens, other)]
    assert np.abs(last[0] - last[1]).max() > 1e-9                  # float64: a real dependence, not rounding
    local = make_config("mqa-small", **one, global_attention=False)
    last_local = [model_forward(params, t, pos, local)[0][0, -1] for t in (tokens, other)]
    np.testing.assert_array_equal(last_local[0], last_local[1])    # window 128: the first token is out of reach


def _mean_losses(path):
    with open(path, newline="") as f:
        return np.array([float(row["mean_loss"]) for row in csv.DictReader(f)])


def test_eval_length_keeps_a_short_trained_griffin_local(corpus_dir, tmp_path, capsys):
    """A Griffin with window 24 trained at seq_len 16 (window >= training length) is evaluated with its local
    window, exactly as length_curve with its saved config gives, and not as a global-attention model."""
    run = tmp_path / "griffin-W24"
    assert main(["train", "--preset", "griffin-tiny", "--data-dir", str(corpus_dir), "--run-dir", str(run),
                 "--attention_window_size=24", "--batch_size=2", "--seq_len=16", "--max_steps=3", "--lr=1e-2",
                 "--eval_batches=1", "--no-progress", "--cpu_workers=1"]) == 0
    assert main(["eval-length", str(run), "--data-dir", str(corpus_dir), "--max-len", "160",
                 "--chunk-size", "40"]) == 0
    assert "attention local, window 24" in capsys.readouterr().out
    params, _, _, meta = load_checkpoint(run / "checkpoints" / "best.npz")
    cfg = config_from_dict(meta["model_config"])
    assert not cfg.global_attention
    valid = load_corpus(corpus_dir).valid
    local = length_curve(params, cfg, valid, 160, chunk_size=40)
    wide = length_curve(params, make_config("griffin-tiny", **{**meta["model_config"], "global_attention": True}),
                        valid, 160, chunk_size=40)
    written = _mean_losses(run / "griffin-W24-length.csv")
    np.testing.assert_allclose(written, local.mean, rtol=0, atol=1e-5)       # CSV rounds to 5 decimals
    assert np.abs(written - wide.mean).max() > 1e-4                          # and global would differ


def test_experiment_records_how_each_model_attends(corpus_dir, tmp_path):
    out = tmp_path / "exp"
    assert main(["experiment", "extrapolation", "--preset", "tiny", "--data-dir", str(corpus_dir),
                 "--out", str(out)]) == 0
    models = {m["label"]: m for m in json.loads((out / "extrapolation.json").read_text())["models"]}
    assert models["mqa-L16"]["attention"] == models["mqa-nope-L16"]["attention"] == "global"
    assert models["mqa-L16"]["window"] is None
    assert models["griffin-L16"]["attention"] == "local, window 8" and models["griffin-L16"]["window"] == 8
    assert models["hawk-L16"]["attention"] == "none"
    for label in ("mqa-L16", "griffin-L16"):
        meta = load_checkpoint(out / "runs" / label / "checkpoints" / "last.npz")[3]
        assert config_from_dict(meta["model_config"]).global_attention == label.startswith("mqa")
