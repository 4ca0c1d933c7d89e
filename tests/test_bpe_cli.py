"""A BPE tokenizer through the command line: `minigriffin bpe`, `train --tokenizer`, and the run keeping its
tokenizer for resume, eval-length and sample; bad tokenizer files and mixed tokenizers are one-line errors."""

import json

import pytest

from minigriffin.bpe import BPETokenizer
from minigriffin.checkpoint import load_checkpoint
from minigriffin.cli import main
from minigriffin.data import run_tokenizer

TINY = ["--preset", "hawk-tiny", "--batch_size=2", "--seq_len=32", "--eval_batches=1", "--warmup_steps=1",
        "--eval_every=2", "--checkpoint_every=2", "--no-progress"]


@pytest.fixture(scope="module")
def bpe_run(corpus_dir, tmp_path_factory):
    """A tokenizer of 300 tokens learnt on the generated corpus, and a 2-step run trained with it."""
    root = tmp_path_factory.mktemp("bpe")
    tok_path, run = root / "tok.json", root / "run"
    assert main(["bpe", "--vocab-size", "300", "--data-dir", str(corpus_dir), "--max-bytes", "200000",
                 "--out", str(tok_path)]) == 0
    assert main(["train", *TINY, "--data-dir", str(corpus_dir), "--run-dir", str(run), "--max_steps=2",
                 "--tokenizer", str(tok_path)]) == 0
    return tok_path, run


def test_the_run_keeps_its_tokenizer_and_sizes_the_vocabulary_from_it(bpe_run):
    tok_path, run = bpe_run
    tokenizer = BPETokenizer.load(tok_path)
    assert tokenizer.vocab_size == 300
    assert BPETokenizer.load(run / "tokenizer.json").merges == tokenizer.merges
    assert run_tokenizer(run).name == tokenizer.name
    assert json.loads((run / "config.json").read_text())["model"]["vocab_size"] == 300
    params, _, _, _ = load_checkpoint(run / "checkpoints" / "last.npz")
    assert params["embedder"]["input_embedding"].shape[0] == 300


def test_resume_eval_length_and_sample_use_the_runs_tokenizer(bpe_run, corpus_dir, tmp_path, capsys):
    _, run = bpe_run
    assert main(["train", "--resume", str(run), "--max_steps=4", "--no-progress"]) == 0
    assert load_checkpoint(run / "checkpoints" / "last.npz")[3]["step"] == 4
    capsys.readouterr()
    assert main(["eval-length", str(run), "--data-dir", str(corpus_dir), "--max-len", "64",
                 "--out", str(tmp_path / "e"), "--context-use", "--same-token", "8"]) == 0
    out = capsys.readouterr().out
    assert "losses and positions below are in tokens" in out and "bytes per token" in out
    assert "cut - full, nats/token" in out and "nats/byte" not in out     # the tables' units too
    assert "] nats/token |" in out                                      # the same-token verdicts
    # 40 tokens of a barely trained model draw merged tokens (ids >= 256), which bytes could not decode
    assert main(["sample", str(run), "--prompt", "The ", "--max-new-tokens", "40"]) == 0
    assert capsys.readouterr().out.startswith("The ")         # decoded with the run's merges


def test_runs_with_different_tokenizers_are_not_compared(bpe_run, corpus_dir, tmp_path, capsys):
    _, run = bpe_run
    byte_run = tmp_path / "bytes"
    assert main(["train", *TINY, "--data-dir", str(corpus_dir), "--run-dir", str(byte_run), "--max_steps=2"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(["eval-length", str(run), str(byte_run), "--data-dir", str(corpus_dir), "--max-len", "64"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "different tokenizers" in err and len(err.strip().splitlines()) == 1


def test_a_corrupt_tokenizer_file_is_one_line(corpus_dir, tmp_path, capsys):
    bad = tmp_path / "tok.json"
    bad.write_text('{"format": "minigriffin-bpe", "version": 1, "vocab_size": 257, "merges": [[1]]}')
    with pytest.raises(SystemExit) as info:
        main(["train", *TINY, "--data-dir", str(corpus_dir), "--run-dir", str(tmp_path / "r"), "--max_steps=1",
              "--tokenizer", str(bad)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "tok.json" in err and len(err.strip().splitlines()) == 1
