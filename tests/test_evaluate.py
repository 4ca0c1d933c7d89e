"""Long-context evaluation (eval-length) and the experiment commands, at tiny sizes, end to end."""

import json

import numpy as np
import pytest

from minigriffin.cli import main
from minigriffin.config import make_config
from minigriffin.evaluate import log_buckets, position_losses
from minigriffin.head import cross_entropy_forward
from minigriffin.model import model_forward
from minigriffin.params import init_params


@pytest.mark.parametrize("preset", ["hawk-tiny", "griffin-tiny", "mqa-tiny"])
@pytest.mark.parametrize("chunk", [1, 7, 16, 100])
def test_chunked_losses_equal_one_full_forward(preset, chunk):
    """Per-position losses computed chunk by chunk with carried state == one forward over the whole document
    (float64, rtol 1e-10)."""
    cfg = make_config(preset, dtype="float64")
    params = init_params(cfg, np.random.default_rng(0))
    tokens = np.random.default_rng(1).integers(0, 256, 41)
    chunked = position_losses(params, cfg, tokens, chunk_size=chunk)
    logits, _ = model_forward(params, tokens[None, :-1], np.arange(40)[None], cfg)
    shifted = logits[0] - logits[0].max(axis=-1, keepdims=True)
    full = np.log(np.exp(shifted).sum(-1)) - shifted[np.arange(40), tokens[1:]]
    np.testing.assert_allclose(chunked, full, rtol=1e-10, atol=1e-12)        # float64
    mean, _ = cross_entropy_forward(logits, tokens[None, 1:])
    assert abs(chunked.mean() - mean) < 1e-10                                # float64


def test_log_buckets_cover_every_position():
    lo, hi = log_buckets(1000)
    assert lo[0] == 0 and hi[-1] == 999 and np.all(lo[1:] == hi[:-1]) and np.all(hi > lo)


def test_eval_length_command(corpus_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--preset", "griffin-tiny", "--data-dir", str(corpus_dir), "--run-dir", str(run),
                 "--batch_size=2", "--seq_len=16", "--max_steps=2", "--eval_batches=1", "--no-progress"]) == 0
    assert main(["eval-length", str(run), "--data-dir", str(corpus_dir), "--max-len", "100",
                 "--chunk-size", "32"]) == 0
    rows = (run / "run-length.csv").read_text().splitlines()
    assert rows[0].startswith("position_from,position_to,mean_loss,spread_over_documents,documents")
    assert len(rows) > 4 and (run / "length.png").stat().st_size > 1000


@pytest.mark.parametrize("study", ["extrapolation", "train-length"])
def test_experiment_commands_end_to_end(corpus_dir, tmp_path, study):
    out = tmp_path / "exp"
    assert main(["experiment", "extrapolation", "--study", study, "--preset", "tiny", "--data-dir", str(corpus_dir),
                 "--out", str(out)]) == 0
    results = json.loads((out / f"{study}.json").read_text())
    labels = {m["label"] for m in results["models"]}
    expected = {"hawk-L16", "griffin-L16", "mqa-L16", "mqa-nope-L16"} if study == "extrapolation" else \
        {"hawk-L16", "griffin-L16", "hawk-L64", "griffin-L64"}
    assert labels == expected
    assert results["eval_len"] == (8 if study == "extrapolation" else 16) * 16
    assert (out / f"{study}.png").exists() and "| run |" in (out / f"{study}.md").read_text()
    for label in labels:
        assert (out / f"{study}-{label}.csv").exists()
    if study == "extrapolation":                           # the NoPE baseline really has no RoPE
        from minigriffin.checkpoint import load_checkpoint
        from minigriffin.config import config_from_dict
        meta = load_checkpoint(out / "runs" / "mqa-nope-L16" / "checkpoints" / "last.npz")[3]
        cfg = config_from_dict(meta["model_config"])
        assert cfg.use_rope is False and cfg.block_types == ("attention",) * 3


def test_documents_are_consecutive_pieces_of_each_book():
    from minigriffin.data import TokenSplit
    from minigriffin.evaluate import documents
    tokens = np.arange(100, dtype=np.uint8)
    split = TokenSplit(tokens, np.array([0, 45, 100]), ("a", "b"))      # books of 45 and 55 tokens
    docs = documents(split, 20, segments_per_book=3)
    assert [(int(d[0]), len(d)) for d in docs] == [(0, 20), (20, 20), (45, 20), (65, 20)]   # no short tails
    assert [(int(d[0]), len(d)) for d in documents(split, 50)] == [(0, 45), (45, 50)]       # one per book


def test_each_bucket_counts_the_documents_that_reached_it(tmp_path):
    """Books of 30, 60 and 100 tokens evaluated up to 100: the short ones reach only the first buckets, so each
    bucket has its own document count (and its own standard error), in the curve, the CSV and read back."""
    from minigriffin.data import TokenSplit
    from minigriffin.evaluate import (bucket_summary, length_curve, plot_curves, read_csv, standard_error,
                                      write_csv)
    cfg = make_config("griffin-tiny", dtype="float64")
    params = init_params(cfg, np.random.default_rng(0))
    tokens = np.random.default_rng(2).integers(0, 256, 190).astype(np.uint8)
    split = TokenSplit(tokens, np.array([0, 30, 90, 190]), ("short", "middle", "long"))
    curve = length_curve(params, cfg, split, 100, name="run", train_len=16, chunk_size=32)

    lo, hi = log_buckets(100)                            # [0, 16, 23, 33, 47, 66, 93] .. [.., 99]
    np.testing.assert_array_equal(curve.bucket_lo, lo)
    # 29 losses reach the buckets ending at 16 and 23; 59 those up to 47; 99 every one.
    np.testing.assert_array_equal(curve.documents, [3, 3, 2, 2, 1, 1, 1])
    losses = [position_losses(params, cfg, split.tokens[a:b], 32) for a, b in ((0, 30), (30, 90), (90, 190))]
    for k, (l, h) in enumerate(zip(lo, hi)):
        means = [doc[l:h].mean() for doc in losses if h <= len(doc)]
        assert len(means) == curve.documents[k]
        np.testing.assert_allclose(curve.mean[k], np.mean(means), rtol=1e-12)      # float64
        np.testing.assert_allclose(curve.spread[k], np.std(means), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(standard_error(curve), curve.spread / np.sqrt([3, 3, 2, 2, 1, 1, 1]))

    path = write_csv(curve, tmp_path / "run-length.csv")
    rows = path.read_text().splitlines()
    assert rows[0] == "position_from,position_to,mean_loss,spread_over_documents,documents"
    assert [int(row.split(",")[-1]) for row in rows[1:]] == [3, 3, 2, 2, 1, 1, 1]
    back = read_csv(path, name="run", train_len=16)
    assert (back.name, back.train_len) == ("run", 16)
    for field in ("bucket_lo", "bucket_hi", "documents"):
        np.testing.assert_array_equal(getattr(back, field), getattr(curve, field))
    for field in ("mean", "spread"):                     # written with 5 decimals
        np.testing.assert_allclose(getattr(back, field), getattr(curve, field), rtol=0, atol=5e-6)

    summary = bucket_summary(curve)
    assert "at positions 0-15 (3 documents)" in summary and "at 93-98 (1 document)" in summary
    assert plot_curves([curve, back], tmp_path / "length.png").stat().st_size > 1000
