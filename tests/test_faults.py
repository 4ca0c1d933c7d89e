"""Faults: SIGKILL at every stage of a checkpoint write, a full disk, two trainers on one run folder, and a
corrupt token cache. Nothing is lost, nothing is silently wrong, and every error names the file and the problem.

The kill and disk-full tests run `minigriffin train` in a subprocess through a small driver script that patches
the process's own np.savez / os.replace (no test hooks in the package), so the SIGKILL lands at an exact stage of
one chosen checkpoint write. They train on the generated corpus (corpus_dir) with the tiny model, the reference
scan and one thread, the conditions under which a resumed run is bit-identical to an uninterrupted one.
"""

import errno
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minigriffin.checkpoint import CheckpointError, load_checkpoint
from minigriffin.cli import main
from minigriffin.tree import tree_leaves

TINY = ["--preset", "griffin-tiny", "--batch_size=2", "--seq_len=32", "--eval_batches=1", "--warmup_steps=2",
        "--no-progress", "--checkpoint_every=4", "--eval_every=4", "--scan_backend=reference", "--cpu_workers=1"]
STEPS = 12                 # checkpoints (best.npz, then last.npz) at steps 4, 8 and 12
TIMEOUT = 120              # seconds for any one subprocess: a hang fails the test instead of blocking the suite

DRIVER = r'''
"""python driver.py STAGE TARGET N ARGS...: `minigriffin train ARGS` with the N-th write of checkpoint TARGET
sabotaged. STAGE: during-write (SIGKILL once 4 KiB of the temporary file are written), before-replace (SIGKILL
once the temporary file is complete and fsynced, before os.replace), after-replace (SIGKILL right after
os.replace, before the folder fsync), enospc (the write fails with ENOSPC once 4 KiB are written)."""
import errno, os, signal, sys
from pathlib import Path

import numpy as np

import minigriffin.train as train
from minigriffin.cli import main

stage, target, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
state = {"writes": 0, "armed": False}
real_save, real_savez, real_replace = train.save_checkpoint, np.savez, os.replace


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def save(path, **kwargs):
    if Path(path).name == target:
        state["writes"] += 1
        state["armed"] = state["writes"] == nth
    try:
        return real_save(path, **kwargs)
    finally:
        state["armed"] = False


class Sabotaged:
    """The temporary file: past 4 KiB, the next write dies (or fails with ENOSPC)."""

    def __init__(self, f):
        self._f, self._written = f, 0

    def write(self, data):
        if self._written > 4096:
            if stage == "enospc":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self._f.flush()                       # what was written is in the file, as in a real crash
            die()
        self._written += memoryview(data).nbytes
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)


def savez(file, *args, **kwargs):
    if state["armed"] and stage in ("during-write", "enospc"):
        file = Sabotaged(file)
    return real_savez(file, *args, **kwargs)


def replace(src, dst, **kwargs):
    if state["armed"] and stage == "before-replace":
        die()
    real_replace(src, dst, **kwargs)
    if state["armed"] and stage == "after-replace":
        die()


train.save_checkpoint, np.savez, os.replace = save, savez, replace
sys.exit(main(sys.argv[4:]))
'''


def _exact_env(**extra):
    """One thread everywhere and the reference scan: the conditions under which resume is bit-exact."""
    return dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                MKL_NUM_THREADS="1", **extra)


def _train_args(corpus_dir, run, steps=STEPS):
    return ["train", *TINY, "--data-dir", str(corpus_dir), "--run-dir", str(run), f"--max_steps={steps}"]


def _cli(*args, env=None):
    """`python -m minigriffin ARGS`: the CompletedProcess (never raises on a non-zero exit)."""
    return subprocess.run([sys.executable, "-m", "minigriffin", *args], env=env or _exact_env(),
                          capture_output=True, text=True, timeout=TIMEOUT)


def _driven(tmp_path, stage, target, nth, *args):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    return subprocess.run([sys.executable, str(driver), stage, target, str(nth), *args], env=_exact_env(),
                          capture_output=True, text=True, timeout=TIMEOUT)


def _params(path):
    params, _, _, meta = load_checkpoint(path)
    return dict(tree_leaves(params)), meta


def _metrics(run):
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def _temporaries(run):
    return sorted(p.name for p in (Path(run) / "checkpoints").iterdir() if p.name.endswith(".tmp"))


def _assert_same_run(run, reference):
    """Same last.npz and best.npz parameters (float32, bit for bit) and the same metrics, step for step."""
    for name in ("last.npz", "best.npz"):
        a, meta_a = _params(Path(reference) / "checkpoints" / name)
        b, meta_b = _params(Path(run) / "checkpoints" / name)
        assert meta_a["step"] == meta_b["step"], name
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}: {key}")
    ours, theirs = _metrics(run), _metrics(reference)
    assert [r["step"] for r in ours] == list(range(1, STEPS + 1))           # no step twice, none missing
    assert [r["loss"] for r in ours] == [r["loss"] for r in theirs]
    assert [r.get("val_loss") for r in ours] == [r.get("val_loss") for r in theirs]


@pytest.fixture(scope="module")
def straight(corpus_dir, tmp_path_factory):
    """An uninterrupted STEPS-step run: what every interrupted and resumed run must reproduce."""
    run = tmp_path_factory.mktemp("straight") / "run"
    done = _cli(*_train_args(corpus_dir, run))
    assert done.returncode == 0, done.stderr
    return run


# ------------------------------------------------------------------------------ SIGKILL during a checkpoint write
@pytest.mark.parametrize(("stage", "target", "on_disk"), [
    ("during-write", "last.npz", 4),      # temporary file incomplete: last.npz is still step 4's
    ("before-replace", "last.npz", 4),    # temporary file complete and fsynced, not yet renamed
    ("after-replace", "last.npz", 8),     # renamed, folder not yet fsynced: last.npz is step 8's
    ("during-write", "best.npz", 4),      # the same for the other checkpoint a run writes
])
def test_sigkill_during_a_checkpoint_write_loses_nothing(corpus_dir, tmp_path, straight, stage, target, on_disk):
    """Killed during the second write of a checkpoint (step 8): the checkpoint on disk loads, is the old or the
    new one, and `train --resume` (taking over the dead run's lock) finishes the run bit for bit as if nothing
    had happened. A torn temporary file breaks neither that resume nor its later saves."""
    run = tmp_path / "run"
    killed = _driven(tmp_path, stage, target, 2, *_train_args(corpus_dir, run))
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr)
    ckpt = run / "checkpoints"
    assert _params(ckpt / target)[1]["step"] == on_disk          # loads: its sha256 matches
    leftovers = _temporaries(run)
    if stage == "after-replace":
        assert leftovers == []
    else:                                                        # the kill really landed inside the write
        assert len(leftovers) == 1, leftovers
        if stage == "before-replace":
            assert _params(ckpt / leftovers[0])[1]["step"] == 8  # complete, just not renamed
        else:
            with pytest.raises(CheckpointError, match="corrupt or truncated"):
                load_checkpoint(ckpt / leftovers[0])
    assert (run / ".lock").exists()                              # the killed run's lock is left behind

    resumed = _cli("train", "--resume", str(run), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert "taking over the lock" in resumed.stderr, resumed.stderr
    _assert_same_run(run, straight)
    assert _temporaries(run) == []                               # the torn temporary was cleaned up
    assert not (run / ".lock").exists()


# ----------------------------------------------------------------------------------------------------- full disk
def test_full_disk_while_saving_keeps_the_previous_checkpoints(corpus_dir, tmp_path, monkeypatch):
    """ENOSPC in the middle of a save: an OSError naming the file and the cause, no temporary file left, every
    earlier checkpoint byte for byte as it was and loadable, the run lock released; once there is space again,
    the run resumes and finishes."""
    from minigriffin.data import load_corpus
    from minigriffin.train import Trainer
    run = tmp_path / "run"
    assert main(_train_args(corpus_dir, run, steps=4)) == 0
    ckpt = run / "checkpoints"
    before = {p.name: p.read_bytes() for p in ckpt.iterdir()}
    assert set(before) == {"best.npz", "last.npz"}

    def full_disk(file, *args, **kwargs):
        file.write(b"PK\x03\x04" + bytes(8192))              # part of the checkpoint reaches the disk first
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    trainer = Trainer.resume(run, load_corpus, max_steps=8)
    monkeypatch.setattr(np, "savez", full_disk)
    with pytest.raises(OSError) as info:
        trainer.run(log=lambda *a, **k: None)
    monkeypatch.undo()
    message = str(info.value)
    assert info.value.errno == errno.ENOSPC
    assert "no space left on device" in message.lower()
    assert any(str(ckpt / name) in message for name in before), message
    assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == before       # nothing changed, nothing added
    for name in before:
        assert _params(ckpt / name)[1]["step"] == 4
    assert not (run / ".lock").exists()                                     # released on the exception

    del trainer
    assert main(["train", "--resume", str(run), "--max_steps=8", "--no-progress"]) == 0
    assert _params(ckpt / "last.npz")[1]["step"] == 8 and _temporaries(run) == []
    assert [r["step"] for r in _metrics(run)] == list(range(1, 9))


def test_full_disk_is_reported_as_one_clear_line(corpus_dir, tmp_path):
    """`minigriffin train` on a full disk exits non-zero, its last line says which file could not be saved and
    why, and the run folder holds no partial file and no lock."""
    run = tmp_path / "run"
    done = _driven(tmp_path, "enospc", "last.npz", 1, *_train_args(corpus_dir, run, steps=4))
    assert done.returncode != 0
    last_line = done.stderr.strip().splitlines()[-1]
    assert "could not save checkpoint" in last_line, done.stderr
    assert str(run / "checkpoints" / "last.npz") in last_line and "no space left on device" in last_line
    assert not (run / "checkpoints" / "last.npz").exists() and _temporaries(run) == []
    assert not (run / ".lock").exists()


# ------------------------------------------------------------------------------------ two trainers, one run folder
def test_a_second_trainer_is_refused_and_a_dead_ones_lock_is_taken_over(corpus_dir, tmp_path, straight):
    """While a trainer runs, a second one on its folder exits non-zero naming the first (pid) and touches
    nothing. Once the first is SIGKILLed, its stale lock is taken over (saying so) and the resumed run finishes,
    bit-identical to an uninterrupted one."""
    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "minigriffin", *_train_args(corpus_dir, run)],
                             env=_exact_env(MINIGRIFFIN_PAUSE_AFTER_CHECKPOINT="60"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + TIMEOUT
        while not (run / "checkpoints" / "last.npz").exists():     # the first run now sleeps for a minute
            assert time.time() < deadline and first.poll() is None, "the first run never wrote a checkpoint"
            time.sleep(0.1)
        holder = json.loads((run / ".lock").read_text())
        assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()
        files = {p: p.read_bytes() for p in (run / "metrics.jsonl", run / "checkpoints" / "last.npz")}

        second = _cli("train", "--resume", str(run), "--no-progress")
        assert second.returncode != 0, second.stdout
        assert f"pid {first.pid}" in second.stderr and str(run) in second.stderr, second.stderr
        assert "in use" in second.stderr
        assert {p: p.read_bytes() for p in files} == files       # it changed nothing (no metrics trimming)
        assert first.poll() is None

        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=30)
    third = _cli("train", "--resume", str(run), "--no-progress")
    assert third.returncode == 0, third.stderr
    assert "taking over" in third.stderr and f"pid {first.pid}" in third.stderr, third.stderr
    _assert_same_run(run, straight)
    assert not (run / ".lock").exists()


def test_run_lock_is_released_on_errors_and_ctrl_c(tmp_path):
    from minigriffin.runlock import RunLock, RunLockedError
    for error in (RuntimeError, KeyboardInterrupt):
        with pytest.raises(error):
            with RunLock(tmp_path):
                assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
                with pytest.raises(RunLockedError, match=f"in use by another trainer: pid {os.getpid()}"):
                    RunLock(tmp_path).acquire()                  # this process, but another live lock
                raise error()
        assert not (tmp_path / ".lock").exists()


@pytest.mark.parametrize(("holder", "problem"), [
    ({"pid": 1, "host": "some-other-host"}, "another host"),   # cannot check its pid from here
    ("{not json", "cannot be read"),                            # e.g. a crash in the middle of writing it
])
def test_run_lock_that_cannot_be_checked_is_not_taken_over(tmp_path, holder, problem):
    from minigriffin.runlock import RunLock, RunLockedError
    lock = tmp_path / ".lock"
    lock.write_text(holder if isinstance(holder, str) else json.dumps(holder))
    before = lock.read_bytes()
    with pytest.raises(RunLockedError, match=problem) as info:
        RunLock(tmp_path).acquire()
    assert f"delete {lock}" in str(info.value)
    assert lock.read_bytes() == before


@pytest.mark.skipif(not os.path.exists(f"/proc/{os.getpid()}/stat"), reason="needs Linux's /proc")
def test_run_lock_of_a_reused_pid_is_stale(tmp_path, capsys):
    """A pid that runs again, but as a newer process (its start time differs), does not hold the lock."""
    from minigriffin.runlock import RunLock
    (tmp_path / ".lock").write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(),
                                                "proc_start": 1, "started": "long ago"}))
    with RunLock(tmp_path):
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    assert f"taking over the lock of pid {os.getppid()}" in capsys.readouterr().err


def test_a_dropped_trainer_releases_its_lock(corpus_dir, tmp_path):
    """Trainer.resume takes the lock before it reads the run; a trainer that is never run releases it when it
    is garbage-collected, and meanwhile it blocks a second trainer in the same process."""
    from minigriffin.data import load_corpus
    from minigriffin.runlock import RunLockedError
    from minigriffin.train import Trainer
    run = tmp_path / "run"
    assert main(_train_args(corpus_dir, run, steps=4)) == 0
    trainer = Trainer.resume(run, load_corpus)
    assert (run / ".lock").exists()
    with pytest.raises(RunLockedError, match="in use by another trainer"):
        Trainer.resume(run, load_corpus)
    del trainer
    gc.collect()
    assert not (run / ".lock").exists()
    assert Trainer.resume(run, load_corpus, max_steps=5).run(log=lambda *a, **k: None)["step"] == 5


# ----------------------------------------------------------------------------------------- a corrupt token cache
def _books(folder):
    """train/ with two books and valid/ with one, so the cache holds document boundaries."""
    texts = {"train/a.txt": "alpha " * 40, "train/b.txt": "béta " * 30, "valid/c.txt": "gamma " * 20}
    for name, text in texts.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def _entry(cache, corpus_split):
    """(tokens file, metadata file) of the cache entry whose stream is that split's."""
    for tokens in (cache / "tokens").glob("*.tokens"):
        if tokens.read_bytes() == bytes(corpus_split.tokens):
            return tokens, tokens.with_suffix(".json")
    raise AssertionError("no cache entry holds this split")


@pytest.mark.parametrize("damage", ["truncated", "changed bytes", "book changed, mtime restored",
                                    "metadata garbage", "metadata boundaries changed"])
def test_a_corrupt_token_cache_is_noticed(tmp_path, capfd, damage):
    """After each kind of damage load_corpus returns exactly the books' tokens and boundaries again (rebuilding
    the entry, and saying so when a cache file was damaged); never the damaged stream."""
    from minigriffin.data import load_corpus
    folder, cache = _books(tmp_path / "books"), tmp_path / "cache"
    first = load_corpus(folder, cache_dir=cache)
    tokens, meta = _entry(cache, first.train)
    assert bytes(first.train.tokens) == ("alpha " * 40 + "béta " * 30).encode()
    assert first.train.doc_starts.tolist() == [0, 240, 240 + len(("béta " * 30).encode())]
    capfd.readouterr()
    damaged = None
    if damage == "truncated":
        tokens.write_bytes(tokens.read_bytes()[:-7])
        damaged = tokens
    elif damage == "changed bytes":                        # same size: only a checksum can tell
        data = bytearray(tokens.read_bytes())
        data[100:103] = b"XYZ"
        tokens.write_bytes(bytes(data))
        damaged = tokens
    elif damage == "book changed, mtime restored":         # same size, same mtime: only the ctime changes
        book = folder / "train" / "a.txt"
        stat = book.stat()
        time.sleep(0.05)                                   # past the filesystem's timestamp granularity
        book.write_text("ALPHA " * 40, encoding="utf-8")
        os.utime(book, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert book.stat().st_mtime_ns == stat.st_mtime_ns and book.stat().st_size == stat.st_size
        assert book.stat().st_ctime_ns != stat.st_ctime_ns
    elif damage == "metadata garbage":
        meta.write_bytes(b"\x00{garbage")
        damaged = meta
    else:                                                  # valid JSON, plausible, wrong: a boundary moved
        entry = json.loads(meta.read_text())
        entry["doc_starts"][1] += 5
        meta.write_text(json.dumps(entry))
        damaged = meta
    second = load_corpus(folder, cache_dir=cache)
    expected = ("ALPHA " * 40 if "book" in damage else "alpha " * 40) + "béta " * 30
    assert bytes(second.train.tokens) == expected.encode()
    assert second.train.doc_starts.tolist() == first.train.doc_starts.tolist()
    assert second.train.names == ("a.txt", "b.txt")
    assert bytes(second.valid.tokens) == b"gamma " * 20
    err = capfd.readouterr().err
    if damaged is not None:
        assert str(damaged) in err and "rebuilding" in err, err
    third = load_corpus(folder, cache_dir=cache)           # the repaired entry is used as it is
    assert bytes(third.train.tokens) == expected.encode() and capfd.readouterr().err == ""
