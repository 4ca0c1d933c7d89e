"""A catalogue of bad inputs through the command line: each gets an error message that names the problem.

(More bad-input tests live beside their modules: test_scan_validation.py, test_model.py, test_data.py,
test_checkpoint.py.)
"""


import numpy as np
import pytest

from cli_checks import fails_in_one_line
from minigriffin.cli import main


@pytest.fixture
def books(tmp_path):
    """A small valid corpus of two books."""
    for name, text in (("a.txt", "It was a bright cold day in April. " * 200), ("b.txt", "Call me Ishmael. " * 300)):
        (tmp_path / "books" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "books" / name).write_text(text)
    return tmp_path / "books"


def _train(books, run, *extra):
    return ["train", "--preset", "griffin-tiny", "--data-dir", str(books), "--run-dir", str(run), "--batch_size=2",
            "--seq_len=16", "--max_steps=2", "--eval_batches=1", "--no-progress", *extra]


CONFIG_CASES = [
    (["--widht=64"], r"unknown option --widht; training options: .*model options"),
    (["--width=abc"], r"--width=abc: expected a value of type int"),
    (["--lr=fast"], r"--lr=fast: expected a value of type float"),
    (["--embeddings_scale_by_sqrt_dim=maybe"], r"expected a value of type bool"),
    (["--width=17"], r"width=17 must be divisible by num_heads=2"),
    (["--max_steps=0"], r"max_steps must be >= 1, got 0"),
    (["--dtype=float16"], r"dtype must be 'float32' or 'float64'"),
    (["--scan_backend=turbo"], r"scan_backend must be one of \['auto', 'reference', 'blelloch', 'numba'"),
    (["--lr=-1"], r"lr must be > 0"),
    (["--block_types=recurrent,convolution"], r"block_types must be a non-empty tuple"),
    (["stray"], r"unexpected argument 'stray'"),
    (["--lr"], r"option --lr needs a value"),
    (["--lru_max_rad=1.0"], r"need 0 < lru_min_rad <= lru_max_rad < 1"),
    (["--carry_windows=0"], r"carry_windows must be >= 1, got 0"),
]


@pytest.mark.parametrize("extra, match", CONFIG_CASES)
def test_config_and_cli_errors(books, tmp_path, extra, match):
    fails_in_one_line(_train(books, tmp_path / "run", *extra), match)


def test_unknown_preset(books, tmp_path):
    fails_in_one_line(["train", "--preset", "griffin-huge", "--data-dir", str(books)], r"unknown preset 'griffin-huge'")


def test_data_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    fails_in_one_line(_train(tmp_path / "empty", tmp_path / "r1"), r"empty")
    (tmp_path / "notxt").mkdir()
    (tmp_path / "notxt" / "book.pdf").write_bytes(b"%PDF")
    fails_in_one_line(_train(tmp_path / "notxt", tmp_path / "r2"), r"no \.txt")
    fails_in_one_line(_train(tmp_path / "missing", tmp_path / "r3"), r"missing")
    bad = tmp_path / "latin1"
    bad.mkdir()
    (bad / "a.txt").write_text("fine text " * 100)
    (bad / "b.txt").write_bytes(b"caf\xe9 au lait " * 100)       # Latin-1, not UTF-8
    fails_in_one_line(_train(bad, tmp_path / "r4"), r"b\.txt.*(byte|offset) 3")


def test_corpus_shorter_than_a_window(tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    (small / "a.txt").write_text("tiny")
    (small / "b.txt").write_text("books")
    fails_in_one_line(_train(small, tmp_path / "run"), r"shorter than")


def test_run_folder_already_used(books, tmp_path):
    assert main(_train(books, tmp_path / "run")) == 0
    fails_in_one_line(_train(books, tmp_path / "run"), r"already holds a run; continue it with --resume")


def test_resume_problems(books, tmp_path):
    fails_in_one_line(["train", "--resume", str(tmp_path / "nowhere"), "--no-progress"], r"no checkpoint at")
    assert main(_train(books, tmp_path / "run")) == 0
    fails_in_one_line(["train", "--resume", str(tmp_path / "run"), "--width=64"], r"only --max_steps may be changed")
    last = tmp_path / "run" / "checkpoints" / "last.npz"
    last.write_bytes(last.read_bytes()[:100])
    fails_in_one_line(["train", "--resume", str(tmp_path / "run")], r"corrupt or truncated")


def test_sample_and_plot_problems(books, tmp_path, capsys):
    assert main(_train(books, tmp_path / "run")) == 0
    fails_in_one_line(["sample", str(tmp_path / "run"), "--prompt", ""], r"--prompt must not be empty")
    fails_in_one_line(["plot", str(tmp_path / "nothing")], r"metrics.jsonl not found")
    fails_in_one_line(["sample", str(tmp_path / "run"), "--checkpoint", "middle"], r"invalid choice: 'middle'")
