"""Data-parallel training over MPI ranks (minigriffin/distributed.py): 2 ranks on localhost through mpiexec.

Two ranks train the same numbers as one process (float64 within 1e-12 after 20 steps; float32 within the
tolerance stated below, from the different order of the sums); Ctrl-C on rank 0 stops both ranks after the
same step; the checkpoint resumes bit for bit under 2 ranks and within 1e-12 (float64) in one process; a batch
the ranks cannot share, ranks with different command lines or code, and a rank that hangs or dies all end
every rank with an error instead of a wrong run or a hang.

The runs use the reference definitions (MINIGRIFFIN_REFERENCE=1) and one thread per process, so the only
difference between one process and two ranks is where the batch's rows are summed.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minigriffin.checkpoint import load_checkpoint
from minigriffin.tree import tree_leaves

pytest.importorskip("mpi4py", reason="needs the mpi extra: pip install -e '.[mpi]' (make test installs it)")
MPIEXEC = shutil.which("mpiexec", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
if MPIEXEC is None:
    pytest.skip("mpiexec not found: pip install mpich (the mpi extra)", allow_module_level=True)

STEPS = 20
TINY = ["--preset", "griffin-tiny", "--batch_size=4", "--seq_len=32", "--eval_batches=1", "--warmup_steps=2",
        "--eval_every=5", "--checkpoint_every=5", "--log_every=1", "--no-progress", "--cpu_workers=1",
        "--scan_backend=reference", f"--max_steps={STEPS}"]
TRAIN = [sys.executable, "-m", "minigriffin", "train"]
#: float32: two ranks against one process after 20 steps (measured: parameters 1.4e-6 apart, losses 1.1e-7
#: relative). A parameter whose gradient is near zero may move by up to one learning rate (3e-3) differently.
FLOAT32_PARAMS_ATOL, FLOAT32_LOSS_RTOL = 1e-4, 1e-5


def _env(**extra):
    return dict(os.environ, MINIGRIFFIN_REFERENCE="1", NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1",
                OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)


def _mpi(n, *args):
    return [MPIEXEC, "-n", str(n), *TRAIN, *args]


def _run(cmd, **env):
    return subprocess.run(cmd, env=_env(**env), capture_output=True, text=True, timeout=180)


def _state(run):
    """({group/path: array} of params, adam_m and adam_v in last.npz, meta, [metrics records])."""
    params, m, v, meta = load_checkpoint(Path(run) / "checkpoints" / "last.npz")
    arrays = {f"{group}/{path}": a for group, tree in (("param", params), ("m", m), ("v", v))
              for path, a in tree_leaves(tree)}
    records = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    return arrays, meta, records


def _assert_close(a, b, atol, loss_rtol):
    for name in a[0]:
        np.testing.assert_allclose(a[0][name], b[0][name], rtol=0, atol=atol, err_msg=name)
    assert [r["step"] for r in a[2]] == [r["step"] for r in b[2]] == list(range(1, STEPS + 1))
    np.testing.assert_allclose([r["loss"] for r in a[2]], [r["loss"] for r in b[2]], rtol=loss_rtol)


def _rank_pid(launcher, rank, timeout=60):
    """The pid of MPI rank `rank` among the launcher's descendants (Linux: PMI_RANK in /proc/PID/environ)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        parents = {}
        for entry in Path("/proc").iterdir():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (ValueError, OSError, IndexError):
                continue
        family, grew = {launcher.pid}, True
        while grew:
            more = {pid for pid, parent in parents.items() if parent in family} - family
            family, grew = family | more, bool(more)
        for pid in family - {launcher.pid}:
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"PMI_RANK={rank}".encode() in environ:
                return pid
        time.sleep(0.1)
    raise AssertionError(f"rank {rank} never appeared under mpiexec (pid {launcher.pid})")


def _wait_for_line(proc, prefix, seen):
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(prefix):
            return
    raise AssertionError(f"the run ended before printing {prefix!r}:\n{''.join(seen)}")


@pytest.fixture(scope="module")
def float64_runs(corpus_dir, tmp_path_factory):
    """20 float64 steps in one process and over 2 ranks: (one, two) as _state tuples, and the 2-rank folder."""
    out = tmp_path_factory.mktemp("float64")
    args = [*TINY, "--dtype=float64", "--data-dir", str(corpus_dir)]
    one = _run([*TRAIN, *args, "--run-dir", str(out / "one")])
    two = _run(_mpi(2, *args, "--run-dir", str(out / "two")))
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stdout + two.stderr
    assert "data-parallel over 2 MPI ranks (started by an MPI launcher" in two.stdout       # detected, printed
    return _state(out / "one"), _state(out / "two"), out / "two"


def test_two_ranks_train_the_numbers_of_one_process_float64(float64_runs):
    one, two, run = float64_runs
    _assert_close(one, two, atol=1e-12, loss_rtol=1e-12)       # each step's record once: rank 0 alone writes
    assert two[1]["step"] == STEPS and sorted(p.name for p in run.iterdir()) == [
        "checkpoints", "config.json", "metrics.jsonl"]


def test_two_ranks_float32_within_the_stated_tolerance(corpus_dir, tmp_path):
    args = [*TINY, "--data-dir", str(corpus_dir)]
    one = _run([*TRAIN, *args, "--run-dir", str(tmp_path / "one")])
    two = _run(_mpi(2, *args, "--run-dir", str(tmp_path / "two")))
    assert one.returncode == 0 and two.returncode == 0, two.stderr
    _assert_close(_state(tmp_path / "one"), _state(tmp_path / "two"), FLOAT32_PARAMS_ATOL, FLOAT32_LOSS_RTOL)


def test_ctrl_c_on_rank_0_stops_both_ranks_and_the_run_resumes_exactly(corpus_dir, tmp_path, float64_runs):
    """SIGINT to rank 0 alone: the stop flag rides in the next step's Allreduce, both ranks stop after it and
    rank 0 saves. Resumed under 2 ranks: bit for bit the uninterrupted 2-rank run; in one process (another
    number of ranks that divides the batch): within 1e-12 (float64), the order of the sums."""
    run = tmp_path / "run"
    # rank 0 pauses after step 5's checkpoint, so the Ctrl-C lands there and step 6 is the last one
    proc = subprocess.Popen(_mpi(2, *TINY, "--dtype=float64", "--data-dir", str(corpus_dir), "--run-dir", str(run)),
                            env=_env(MINIGRIFFIN_PAUSE_AFTER_CHECKPOINT="3"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen = []
    try:
        _wait_for_line(proc, "step 5/", seen)
        os.kill(_rank_pid(proc, 0), signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = "".join(seen) + out
    assert proc.returncode == 130, output                   # every rank exited 130
    assert f"minigriffin train --resume {run}" in output
    step = _state(run)[1]["step"]
    assert 5 < step < STEPS, output
    shutil.copytree(run, tmp_path / "copy")
    assert _run(_mpi(2, "--resume", str(run))).returncode == 0
    straight, resumed = float64_runs[1], _state(run)
    for name in straight[0]:
        np.testing.assert_array_equal(straight[0][name], resumed[0][name], err_msg=name)
    assert [r["loss"] for r in straight[2]] == [r["loss"] for r in resumed[2]]
    assert _run([*TRAIN, "--resume", str(tmp_path / "copy")]).returncode == 0
    _assert_close(straight, _state(tmp_path / "copy"), atol=1e-12, loss_rtol=1e-12)


def test_carried_windows_over_ranks_match_one_process_and_resume_mid_group(corpus_dir, tmp_path):
    """carry_windows=3 (minigriffin.carry): each rank starts its rows from their carried state and the states
    after the window are gathered, so 2 ranks train the numbers of one process (float64 within 1e-12 after 20
    steps). Killed after step 5's checkpoint (inside the group of steps 3-5, so it holds the carried state) and
    resumed under 2 ranks: bit for bit the uninterrupted run; resumed in one process: within 1e-12."""
    args = [*TINY, "--dtype=float64", "--carry_windows=3", "--data-dir", str(corpus_dir)]
    one = _run([*TRAIN, *args, "--run-dir", str(tmp_path / "one")])
    two = _run(_mpi(2, *args, "--run-dir", str(tmp_path / "two")))
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stdout + two.stderr
    straight = _state(tmp_path / "two")
    _assert_close(_state(tmp_path / "one"), straight, atol=1e-12, loss_rtol=1e-12)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_mpi(2, *args, "--run-dir", str(killed)), env=_env(MINIGRIFFIN_PAUSE_AFTER_CHECKPOINT="60"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not (killed / "checkpoints" / "last.npz").exists():
            assert time.time() < deadline and proc.poll() is None, "the run never wrote its first checkpoint"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)                  # mpiexec and both ranks
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    meta = _state(killed)[1]
    assert meta["step"] == 5 and meta["carry_group_start"] == 3, meta
    shutil.copytree(killed, tmp_path / "copy")
    resumed = _run(_mpi(2, "--resume", str(killed)))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    for name, value in straight[0].items():
        np.testing.assert_array_equal(value, _state(killed)[0][name], err_msg=name)
    assert _run([*TRAIN, "--resume", str(tmp_path / "copy")]).returncode == 0
    _assert_close(straight, _state(tmp_path / "copy"), atol=1e-12, loss_rtol=1e-12)


def test_a_batch_the_ranks_cannot_share_is_refused(corpus_dir, tmp_path):
    result = _run(_mpi(2, *TINY, "--batch_size=3", "--data-dir", str(corpus_dir), "--run-dir", str(tmp_path / "r")))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "minigriffin train: error: batch_size=3 does not split evenly over 2 MPI ranks: use a multiple of 2 "
        "(2, 4, 6, ...), or a number of ranks that divides 3"]
    assert not (tmp_path / "r").exists()                     # refused before anything was written


def _copy_with_changed_code(tmp_path):
    """A copy of the minigriffin package with one comment changed, and a command that runs train from it."""
    import minigriffin
    root = tmp_path / "other"
    shutil.copytree(Path(minigriffin.__file__).parent, root / "minigriffin",
                    ignore=shutil.ignore_patterns("__pycache__"))
    with open(root / "minigriffin" / "optim.py", "a") as f:
        f.write("# a different version\n")
    code = f"import sys; sys.path.insert(0, {str(root)!r}); from minigriffin.cli import main; sys.exit(main())"
    return [sys.executable, "-c", code, "train"]


@pytest.mark.parametrize("differs", ["config", "code"])
def test_ranks_that_differ_from_rank_0_are_refused(corpus_dir, tmp_path, differs):
    """MPMD launch: rank 1 runs another command line (--lr) or another copy of minigriffin."""
    args = [*TINY, "--data-dir", str(corpus_dir), "--run-dir", str(tmp_path / "r")]
    rank1 = [*TRAIN, *args, "--lr=0.002"] if differs == "config" else [*_copy_with_changed_code(tmp_path), *args]
    result = _run([MPIEXEC, "-n", "1", *TRAIN, *args, ":", "-n", "1", *rank1])
    assert result.returncode == 2, result.stderr
    expected = {"config": "rank 1: its command line asks for a different run than rank 0's",
                "code": "rank 1: its minigriffin (source files, or Python or NumPy version) differs from rank 0's"}
    assert result.stderr.strip().splitlines() == [
        "minigriffin train: error: the MPI ranks disagree, so none of them trains: " + expected[differs]
        + {"config": ": give every rank the same arguments",
           "code": ": install the same version on every machine"}[differs]]
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("fault", ["hangs", "dies"])
def test_a_rank_that_hangs_or_dies_stops_the_others(corpus_dir, tmp_path, fault):
    """SIGSTOP (a hung rank, which MPI cannot see): rank 0 gives up after --distributed-timeout with a clear
    error and MPI_Abort. SIGKILL: mpiexec sees the death and ends the job. Either way nothing waits forever."""
    # 10 s: long enough that a rank starved of CPU by other jobs is not mistaken for a hung one
    proc = subprocess.Popen(_mpi(2, *TINY, "--max_steps=100000", "--distributed-timeout=10", "--data-dir",
                                 str(corpus_dir), "--run-dir", str(tmp_path / "r")),
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen, rank1 = [], None
    try:
        _wait_for_line(proc, "step 3/", seen)
        rank1 = _rank_pid(proc, 1)
        os.kill(rank1, signal.SIGSTOP if fault == "hangs" else signal.SIGKILL)
        started = time.time()
        out, _ = proc.communicate(timeout=90)
        elapsed = time.time() - started
    finally:
        if proc.poll() is None:
            proc.kill()
        if rank1 is not None and fault == "hangs":
            try:
                os.kill(rank1, signal.SIGKILL)             # in case MPI_Abort left it behind
            except ProcessLookupError:
                pass
    assert proc.returncode != 0 and elapsed < 40, out
    if fault == "hangs":
        assert proc.returncode == 2
        assert "did not complete within 10 s: another rank died, hung or lost its network" in out, out
        assert "minigriffin train: error: rank 0: step " in out


def test_launch_detects_mpi_from_the_environment(monkeypatch):
    from minigriffin import distributed
    assert distributed.launch("auto", {}) is None
    assert distributed.launch("auto", {"PMI_SIZE": "1"}) is None            # one rank: an ordinary run
    assert distributed.launch("none", {"OMPI_COMM_WORLD_SIZE": "4"}) is None
    assert distributed.launch("auto", {"OMPI_COMM_WORLD_SIZE": "4"}) == "started by an MPI launcher, " \
                                                                        "OMPI_COMM_WORLD_SIZE=4"
    assert distributed.launch("mpi", {}) == "--distributed mpi"
    monkeypatch.setattr(distributed.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit, match=r"needs mpi4py, which is not installed: pip install 'minigriffin\[mpi\]'"):
        distributed.launch("auto", {"PMI_SIZE": "2"})


def test_flat_gradients_pack_weighted_shares_into_views():
    from minigriffin.distributed_comm import FlatGradients
    params = {"a": np.zeros((2, 3)), "blocks": [{"w": np.zeros(4)}]}
    flat = FlatGradients(params)
    grads = {"a": np.arange(6.0).reshape(2, 3), "blocks": [{"w": np.ones(4)}]}
    flat.pack(grads, 0.5, loss=3.0, stop=True)
    assert flat.buffer.shape == (12,) and flat.size == 10
    np.testing.assert_array_equal(flat.grads["a"], 0.5 * grads["a"])         # views into the one buffer
    np.testing.assert_array_equal(flat.grads["blocks"][0]["w"], 0.5)
    assert flat.loss_and_stop() == (1.5, True)
    flat.buffer[:] = 0
    assert flat.grads["a"].sum() == 0 and flat.loss_and_stop() == (0.0, False)


def test_agree_names_every_rank_that_differs_or_failed():
    """The start-up check as rank 0 sees it, with the other ranks' answers stubbed: one line naming each rank."""
    from minigriffin.distributed_comm import agree

    class Answers:                      # what Ranks.bcast and Ranks.allgather would give rank 0 of 3
        rank, size = 0, 3

        def bcast(self, buffer, what):
            pass

        def allgather(self, value, what):
            return np.array([value, 0b01, 0b10])      # rank 1: its data differs; rank 2: failed to start

    with pytest.raises(ValueError) as info:
        agree(Answers(), {"data": "ab" * 32})
    assert str(info.value) == ("the MPI ranks disagree, so none of them trains: rank 1: its books differ from rank "
                               "0's (data folder or tokenizer): every machine needs the same files; rank 2 could "
                               "not start (its error is above)")
    Answers.allgather = lambda self, value, what: np.zeros(3, dtype=np.int64)
    assert agree(Answers(), {"data": "ab" * 32}) is None
