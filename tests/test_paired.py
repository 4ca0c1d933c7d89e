"""Paired statistics of the long-context study (minigriffin.paired, minigriffin.findings).

The same-token test predicts the same targets with the full context and with the context cut; cutting to
everything before the targets must give back the full-context losses (float64, rtol 1e-12: the same
operations in other chunk sizes). Bootstrap intervals are checked on data whose answer is known.
"""

import json

import numpy as np
import pytest

from minigriffin.cli import main
from minigriffin.evaluate import curve_from_losses, document_losses, length_curve
from minigriffin.findings import target_windows
from minigriffin.paired import (bootstrap_interval, cut_context_losses, describe, load_losses, paired_difference,
                                same_token_test, save_losses, span_means, verdict)
from strategies import tiny_model


@pytest.fixture(scope="module")
def griffin():
    cfg, params, rng = tiny_model({"preset": "griffin-tiny"})
    docs = [rng.integers(0, 256, n) for n in (60, 60, 45, 60)]
    return cfg, params, docs


def test_cutting_to_the_whole_prefix_gives_the_full_context_losses(griffin):
    cfg, params, docs = griffin
    full = document_losses(params, cfg, docs, chunk_size=7)
    cut = cut_context_losses(params, cfg, docs[0], 30, 40, 30, chunk_size=16)
    np.testing.assert_allclose(cut, full[0, 30:40], rtol=1e-12, atol=0)           # float64
    shorter = cut_context_losses(params, cfg, docs[0], 30, 40, 4)
    assert np.abs(shorter - full[0, 30:40]).max() > 1e-6                         # a real cut changes them
    mean, low, high = same_token_test(params, cfg, docs, full, 30, 40, 30)
    assert mean == pytest.approx(0.0, abs=1e-12) and low <= 0 <= high


def test_same_token_test_leaves_out_documents_that_end_early(griffin):
    cfg, params, docs = griffin
    full = document_losses(params, cfg, docs)
    assert np.isnan(full[2, 44:]).all() and not np.isnan(full[2, :44]).any()     # the 45-token document
    per_doc_means = span_means(full, 40, 50)
    assert np.isnan(per_doc_means[2]) and not np.isnan(per_doc_means[[0, 1, 3]]).any()


def test_curve_from_losses_is_length_curve(griffin):
    cfg, params, docs = griffin
    from minigriffin.data import TokenSplit
    tokens = np.concatenate(docs).astype(np.uint8)
    split = TokenSplit(tokens, np.r_[0, np.cumsum([len(d) for d in docs])], tuple("abcd"))
    curve = length_curve(params, cfg, split, 60)
    again = curve_from_losses(document_losses(params, cfg, docs), 60)
    np.testing.assert_array_equal(curve.documents, again.documents)
    np.testing.assert_allclose(curve.mean, again.mean, rtol=1e-12)                 # float64


def test_bootstrap_interval_on_known_data():
    values = np.random.default_rng(0).normal(0.5, 1.0, 400)
    mean, low, high = bootstrap_interval(values, seed=1)
    assert mean == pytest.approx(values.mean())
    sem = values.std() / np.sqrt(values.size)
    assert low < mean < high and high - low == pytest.approx(2 * 1.96 * sem, rel=0.1)   # normal theory
    assert bootstrap_interval([1.0, np.nan, 3.0], n_boot=200)[0] == 2.0              # NaN: not reached
    with pytest.raises(ValueError, match="no document reaches"):
        bootstrap_interval([np.nan])


def test_paired_difference_and_verdicts():
    rng = np.random.default_rng(2)
    a = rng.normal(2.0, 0.3, (50, 20))
    b = a - 0.1 + rng.normal(0, 0.01, a.shape)       # the second model better by 0.1 on every token
    mean, low, high = paired_difference(a, b, 5, 15)
    assert mean == pytest.approx(-0.1, abs=0.01) and high < 0
    assert verdict(mean, low, high) == "hurts" and verdict(0.2, 0.1, 0.3) == "helps"
    assert verdict(0.0, -0.1, 0.1) == "no difference"
    assert describe(0.0123, -0.004, 0.02) == "+0.012 [-0.004, +0.020] nats/byte"
    with pytest.raises(ValueError, match="same documents"):
        paired_difference(a, b[:10], 0, 5)


def test_losses_round_trip(tmp_path):
    losses = np.array([[1.0, 2.0, np.nan], [0.5, 0.25, 0.125]])
    path = save_losses(tmp_path / "run.npz", losses, name="griffin-L16", train_len=16)
    back, name, train_len = load_losses(path)
    np.testing.assert_array_equal(back, losses) and None
    assert (name, train_len) == ("griffin-L16", 16)


def test_target_windows():
    assert target_windows(16, 128) == [("2L", 32, 40), ("4L", 64, 72), ("end (119-126)", 119, 127)]


@pytest.mark.parametrize("study", ["extrapolation", "train-length"])
def test_studies_print_and_record_verdicts(corpus_dir, tmp_path, study, capsys):
    out = tmp_path / "exp"
    assert main(["experiment", "extrapolation", "--study", study, "--preset", "tiny", "--data-dir",
                 str(corpus_dir), "--out", str(out)]) == 0
    results = json.loads((out / f"{study}.json").read_text())
    findings = results["findings"]
    if study == "extrapolation":
        assert {f["model"] for f in findings} == {"hawk-L16", "griffin-L16", "mqa-L16", "mqa-nope-L16"}
        assert all(f["finding"] == 1 and f["cut"] == 16 for f in findings)
    else:
        assert {(f["model"], f["targets"].split()[0]) for f in findings} == {
            ("hawk-L64 - hawk-L16", "far"), ("hawk-L64 - hawk-L16", "early"),
            ("griffin-L64 - griffin-L16", "far"), ("griffin-L64 - griffin-L16", "early")}
    for f in findings:
        assert f["low"] <= f["mean"] <= f["high"] and f["verdict"] in (
            "longer context helps", "longer context hurts", "4L better", "4L worse", "no difference")
    assert "| finding |" in (out / f"{study}.md").read_text() and "| finding |" in capsys.readouterr().out
    if study == "train-length":                  # the paired panel beneath the curves
        from minigriffin.findings import bucket_differences
        from minigriffin.experiment import PRESETS, runs_for
        tables = {m["label"]: load_losses(out / f"{study}-{m['label']}.npz")[0] for m in results["models"]}
        panels = bucket_differences(tables, runs_for(study, PRESETS["tiny"]), 16, results["eval_len"])
        assert [p[0] for p in panels] == ["hawk: 64 minus 16", "griffin: 64 minus 16"]
        for _, lo, hi, mean, low, high in panels:
            ok = ~np.isnan(mean)
            assert ok.any() and np.all(low[ok] <= mean[ok]) and np.all(mean[ok] <= high[ok])
    else:                                        # finding 1's panel: each model's windows, in position order
        from minigriffin.findings import context_panel
        panels = context_panel(findings)
        assert [p[0] for p in panels] == [f"{m}-L16: cut to 16 minus full" for m in ("hawk", "griffin", "mqa",
                                                                                       "mqa-nope")]
        for label, lo, hi, mean, low, high in panels:
            mine = sorted((f for f in findings if label.startswith(f["model"] + ":")), key=lambda f: f["positions"])
            np.testing.assert_array_equal(lo, [f["positions"][0] for f in mine])
            np.testing.assert_array_equal(mean, [f["mean"] for f in mine])
            assert np.all(hi > lo) and np.all(low <= high)
    for model in results["models"]:
        losses, name, train_len = load_losses(out / f"{study}-{model['label']}.npz")
        assert name == model["label"] and losses.shape == (results["documents"], results["eval_len"] - 1)


def test_eval_length_keeps_losses_and_reports_the_same_token_test(corpus_dir, tmp_path, capsys):
    run = tmp_path / "griffin"
    assert main(["train", "--preset", "griffin-tiny", "--data-dir", str(corpus_dir), "--run-dir", str(run),
                 "--batch_size=2", "--seq_len=16", "--max_steps=2", "--eval_batches=1", "--no-progress",
                 "--cpu_workers=1"]) == 0
    assert main(["eval-length", str(run), "--data-dir", str(corpus_dir), "--max-len", "100",
                 "--segments-per-book", "2", "--same-token", "8", "--context-use"]) == 0
    out = capsys.readouterr().out
    assert "context use of griffin" in out and "| cut | L/2..L | 2L | 4L |" in out
    assert out.count("\n| 4 | ") == 1 and "| 16 | - | " in out       # a cut of 16 leaves nothing to cut at L/2..L
    assert "| 1 | griffin: cut - full (cut to 8) | 2L |" in out and "| 1 | griffin: cut - full (cut to 8) | 4L |" in out
    losses, name, train_len = load_losses(run / "griffin-length.npz")
    assert losses.shape == (4, 99) and name == "griffin" and train_len == 16       # 2 books x 2 pieces


def test_eval_data_dir_evaluates_on_the_folder_named(corpus_dir, tmp_path, capsys):
    """--eval-data-dir: the study's models train on --data-dir and are evaluated on the validation books and
    also on every .txt book of each folder named (its valid/ books when it has train/ and valid/), each in
    its own files; eval-length evaluates on the folder instead; a missing folder is one line, exit status 2."""
    import shutil
    other = tmp_path / "essays"
    other.mkdir()
    for name in ("book00.txt", "book01.txt", "book02.txt"):
        shutil.copy(corpus_dir / "train" / name, other / name)
    out = tmp_path / "exp"
    assert main(["experiment", "extrapolation", "--preset", "tiny", "--data-dir", str(corpus_dir), "--out", str(out),
                 "--eval-data-dir", str(other)]) == 0
    results = json.loads((out / "extrapolation.json").read_text())
    assert f"--eval-data-dir {other}" in results["command"] and list(results["domains"]) == ["essays"]
    essays = results["domains"]["essays"]
    assert essays["eval_data_dir"] == str(other) and essays["documents"] == 3 * 2   # 3 books x 2 pieces (tiny)
    assert results["documents"] == 2 * 2                     # the corpus's 2 validation books x 2 pieces
    assert {f["model"] for f in essays["findings"]} == {"hawk-L16", "griffin-L16", "mqa-L16", "mqa-nope-L16"}
    assert (out / "extrapolation-on-essays.png").is_file() and (out / "extrapolation-on-essays.md").is_file()
    assert load_losses(out / "extrapolation-on-essays-hawk-L16.npz")[0].shape[0] == 6
    assert load_losses(out / "extrapolation-hawk-L16.npz")[0].shape[0] == 4
    run = out / "runs" / "griffin-L16"
    assert main(["eval-length", str(run), "--max-len", "64", "--eval-data-dir", str(other), "--out",
                 str(tmp_path / "e")]) == 0
    assert load_losses(tmp_path / "e" / "griffin-L16-length.npz")[0].shape == (3, 63)
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(["eval-length", str(run), "--max-len", "64", "--eval-data-dir", str(tmp_path / "nowhere")])
    assert info.value.code == 2 and "does not exist" in capsys.readouterr().err
