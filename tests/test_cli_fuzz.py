"""Hypothesis over the command line: any bad value, key, books folder or prompt gets one line and exit status 2.

The property, for every drawn input: `minigriffin ...` either succeeds (the value was acceptable: a 2-step
training run finishes, or a sample is printed) or exits with status 2 after printing exactly one line,
`minigriffin COMMAND: error: ...`, on stderr. Never a traceback, never another exception, never a hang.
"""

import contextlib
import dataclasses
import io
import itertools

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from minigriffin.cli import main
from minigriffin.config import GriffinConfig, TrainConfig

MODEL_KEYS = [f.name for f in dataclasses.fields(GriffinConfig)]
TRAIN_KEYS = [f.name for f in dataclasses.fields(TrainConfig)]
# Valid but huge values of these would make a 2-step run long (many steps, many validation batches): they are
# drawn only from values that must be refused.
LONG_IF_HUGE = {"max_steps", "eval_batches"}

BAD_NUMBERS = st.sampled_from(["-1", "0", "-7", "-0.5", "1e308", "-1e308", "1e-320", "nan", "NaN", "inf", "-inf",
                               "1000000000", "1000000000000", str(2**63), str(10**30), "0x10", "1_0", "", " ",
                               "true", "None", "3.5", "1e3"])
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_counter = itertools.count()


@pytest.fixture(scope="module")
def books(tmp_path_factory):
    """Two small ASCII books (so a model with a smaller vocabulary can train on them too)."""
    folder = tmp_path_factory.mktemp("books")
    (folder / "a.txt").write_text("It was a bright cold day in April, and the clocks were striking. " * 60)
    (folder / "b.txt").write_text("Call me Ishmael. Some years ago, never mind how long precisely. " * 60)
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


def _run(argv):
    """(exit status, stderr lines) of main(argv); any exception other than SystemExit fails the test."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    return code, err.getvalue().splitlines()


def _assert_ok_or_one_line(code, lines, command):
    if code == 0:
        return
    assert code == 2, (code, lines)
    assert len(lines) == 1, lines                                         # one line: no traceback
    assert lines[0].startswith(f"minigriffin {command}: error: ") or lines[0].startswith("minigriffin: error: "), \
        lines[0]


def _tiny_train(books, run, *extra):
    return ["train", "--preset", "griffin-tiny", "--data-dir", str(books), "--run-dir", str(run),
            "--batch_size=2", "--seq_len=16", "--max_steps=2", "--eval_batches=1", "--no-progress",
            "--cpu_workers=1", *extra]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(MODEL_KEYS + TRAIN_KEYS), value=st.one_of(BAD_NUMBERS, TEXT))
def test_any_value_of_any_option_trains_or_fails_in_one_line(books, runs, key, value):
    if key in LONG_IF_HUGE:
        try:
            assume(not float(value) > 10)       # a valid huge step or batch count would just run for long
        except ValueError:
            pass
    code, lines = _run(_tiny_train(books, runs / f"r{next(_counter)}", f"--{key}={value}"))
    _assert_ok_or_one_line(code, lines, "train")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.from_regex(r"[a-z][a-z_]{0,15}", fullmatch=True), value=TEXT)
def test_unknown_keys_are_refused_naming_them(books, runs, key, value):
    assume(key not in MODEL_KEYS + TRAIN_KEYS + ["preset", "resume", "device", "help"])   # real options
    code, lines = _run(_tiny_train(books, runs / f"u{next(_counter)}", f"--{key}={value}"))
    assert code == 2 and len(lines) == 1 and f"unknown option --{key}" in lines[0], (code, lines)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(contents=st.lists(st.binary(max_size=3000), min_size=0, max_size=3), layout=st.sampled_from(
    ["flat", "split", "train-only", "file"]))
def test_any_books_folder_trains_or_fails_in_one_line(runs, contents, layout):
    """Books of random bytes (often not UTF-8, sometimes empty, sometimes too short), in a flat folder, in
    train/ and valid/, with valid/ missing, or a --data-dir that is a file."""
    folder = runs / f"data{next(_counter)}"
    if layout == "file":
        folder.write_bytes(b"".join(contents))
    else:
        folder.mkdir()
        for i, raw in enumerate(contents):
            sub = folder / ("" if layout == "flat" else ("valid" if layout == "split" and i == 0 else "train"))
            sub.mkdir(exist_ok=True)
            (sub / f"book{i}.txt").write_bytes(raw)
    code, lines = _run(_tiny_train(folder, runs / f"d{next(_counter)}"))
    _assert_ok_or_one_line(code, lines, "train")


@pytest.fixture(scope="module")
def small_vocab_run(books, runs):
    """A model with a 128-token vocabulary (ASCII), trained 2 steps: prompts with other bytes are out of range."""
    run = runs / "vocab128"
    assert main(_tiny_train(books, run, "--vocab_size=128")) == 0
    return run


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=st.text(max_size=8), temperature=st.sampled_from(["0.8", "0", "-1", "nan", "inf", "x"]))
def test_any_prompt_samples_or_fails_in_one_line(small_vocab_run, prompt, temperature):
    """Prompts of any characters (bytes >= 128 are outside the model's vocabulary; lone surrogates are not
    UTF-8) and any temperature."""
    code, lines = _run(["sample", str(small_vocab_run), f"--prompt={prompt}", "--max-new-tokens", "3",
                        "--temperature", temperature])
    _assert_ok_or_one_line(code, lines, "sample")
    if prompt and all(ord(c) < 128 for c in prompt) and temperature == "0.8":
        assert code == 0, lines
