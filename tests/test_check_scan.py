"""minigriffin.testing.check_scan_backend and `minigriffin check-scan` catch real kernel bugs, and pass ours.

Each broken kernel below is the reference loop with one planted bug of a kind hand-written scan kernels have.
The harness must raise ScanBackendMismatch for each, with a shrunk counterexample in the message, and the
counterexample must be one that triggers that bug (asserted per kernel: a reverse scan, or a backward, which is
one, for the reverse bug; T past the chunk size for the chunk bugs; ...). Our CPU backends must pass with the same settings.
Tolerances are the harness's (minigriffin.testing.RTOL, relative to each element's error scale): float32 2e-6,
float64 1e-12 (da twice that). Every run is seeded (Hypothesis and the racy kernel), so this file is
deterministic; EXAMPLES keeps it to about a second per kernel on two cores.
"""

import subprocess
import sys

import numpy as np
import pytest

from minigriffin.cli import main
from minigriffin.scan import backend_names, unavailable_reason
from minigriffin.testing import RTOL, ScanBackendMismatch, check_scan_backend

EXAMPLES = 100


def _steps(T, reverse):
    return range(T - 1, -1, -1) if reverse else range(T)


def reverse_off_by_one(x, a, h0, reverse, out):
    """reverse=True multiplies by a_{t+1}, the next step's gate in the forward direction, instead of a_t."""
    T, h = x.shape[1], h0
    for t in _steps(T, reverse):
        out[:, t] = a[:, min(t + 1, T - 1) if reverse else t] * h + x[:, t]
        h = out[:, t]


def ignores_h0(x, a, h0, reverse, out):
    """Starts every sequence from zero: h0 is never read."""
    h = np.zeros_like(h0)
    for t in _steps(x.shape[1], reverse):
        out[:, t] = a[:, t] * h + x[:, t]
        h = out[:, t]


def half_precision_carries(x, a, h0, reverse, out, chunk=256):
    """Scans chunks of 256 steps and stores the state carried between chunks in float16 (to save memory): a
    drift that only sequences longer than one chunk see (float32 and float64 alike)."""
    h = h0
    for i, t in enumerate(_steps(x.shape[1], reverse)):
        if i and i % chunk == 0:
            h = h.astype(np.float16).astype(x.dtype)
        out[:, t] = a[:, t] * h + x[:, t]
        h = out[:, t]


def tail_restarts(x, a, h0, reverse, out, chunk=16):
    """Scans whole chunks of 16 steps, then the T % 16 left-over steps starting again from h0 instead of the
    carry: right whenever T <= 16 or T is a multiple of 16."""
    T, h = x.shape[1], h0
    for i, t in enumerate(_steps(T, reverse)):
        if i == T - T % chunk and i > 0:
            h = h0
        out[:, t] = a[:, t] * h + x[:, t]
        h = out[:, t]


def make_racy(seed=0, p=1e-3):
    """Loses each step's update with probability p (as two threads racing on the state would): h_t = h_{t-1}."""
    rng = np.random.default_rng(seed)

    def racy(x, a, h0, reverse, out):
        h = h0
        for t in _steps(x.shape[1], reverse):
            out[:, t] = h if rng.random() < p else a[:, t] * h + x[:, t]
            h = out[:, t]
    return racy


def ignores_out(x, a, h0, reverse, out):
    """Writes its result into a new array and returns it, leaving `out` untouched."""
    h = np.empty_like(x)
    prev = h0
    for t in _steps(x.shape[1], reverse):
        h[:, t] = a[:, t] * prev + x[:, t]
        prev = h[:, t]
    return h


def modifies_inputs(x, a, h0, reverse, out):
    """Uses x as scratch space for the state (then copies it to out): right results, ruined inputs."""
    h = h0.copy()
    for t in _steps(x.shape[1], reverse):
        x[:, t] += a[:, t] * h
        h = x[:, t]
    out[...] = x


def overruns_out(x, a, h0, reverse, out):
    """Stores the final state in the time step just past the end of `out` when `out` is a time slice with room
    after it in its parent array (as a kernel that pads its last vector might): right inside `out`, wrong next
    to it. Never writes outside the parent."""
    h = h0
    for t in _steps(x.shape[1], reverse):
        out[:, t] = a[:, t] * h + x[:, t]
        h = out[:, t]
    base = out.base
    if isinstance(base, np.ndarray) and base.ndim == 3 and base.strides == out.strides:
        offset = out.__array_interface__["data"][0] - base.__array_interface__["data"][0]
        t0 = offset // base.strides[1]                       # the slice's first step in its parent
        if 0 <= t0 and t0 + out.shape[1] < base.shape[1]:
            base[:, t0 + out.shape[1]] = h


def _shape(failure):
    return failure.example.case.x.shape


# kernel -> what the shrunk counterexample must show (the bug's trigger)
BROKEN = {
    # the backward of a forward scan is a reverse scan, so the bug shows there too
    "reverse_off_by_one": (reverse_off_by_one,
                           lambda f: (f.example.case.reverse or "backward" in f.quantity) and _shape(f)[1] >= 2),
    "ignores_h0": (ignores_h0, lambda f: f.example.case.h0 is not None),
    "half_precision_carries": (half_precision_carries, lambda f: _shape(f)[1] > 256),
    "tail_restarts": (tail_restarts, lambda f: _shape(f)[1] > 16 and _shape(f)[1] % 16 != 0),
    "racy": (None, lambda f: any("NONDETERMINISTIC" in note for note in f.notes)),
    "ignores_out": (ignores_out, lambda f: f.error is not None and f.n > 0 and f.n_off == f.n),   # all NaN
    "modifies_inputs": (modifies_inputs, lambda f: f.quantity.startswith("input x")),
    # the backward's own views overrun into g[:, T-1] (its h0), or the harness's padding after the slice
    "overruns_out": (overruns_out, lambda f: "outside `out`" in f.quantity or "backward" in f.quantity),
}


@pytest.mark.parametrize("bug", list(BROKEN))
def test_harness_catches_planted_bug(bug):
    kernel, triggers = BROKEN[bug]
    kernel = make_racy() if kernel is None else kernel
    with pytest.raises(ScanBackendMismatch) as excinfo:
        check_scan_backend(kernel, max_examples=EXAMPLES, seed=0)
    failure, message = excinfo.value.report.failure, str(excinfo.value)
    assert triggers(failure), f"{bug}: the counterexample does not show the bug's trigger:\n{message}"
    for expected in ("DISAGREES with the reference", "Counterexample (shrunk by Hypothesis)",
                     "shape (B, T, D) =", "reverse=", "wrong      ", "along channel b="):
        assert expected in message, f"{bug}: report lacks {expected!r}:\n{message}"
    if failure.expected is not None:                          # a wrong value (not only an exception)
        assert "largest error at" in message
        assert not abs(failure.actual - failure.expected) <= failure.tol * failure.scale   # real (NaN counts)
    assert not [n for n in backend_names() if n.startswith("check-scan")]     # the temporary name is gone


@pytest.mark.parametrize("backend", ["reference", "blelloch", "numba"])
def test_builtin_cpu_backends_pass(backend):
    report = check_scan_backend(backend, max_examples=EXAMPLES, seed=1)
    assert report.passed
    kinds = {k: v for k, v in report.cases.items() if k.startswith("kind ")}
    assert sum(kinds.values()) == EXAMPLES and len(kinds) == 4, report.cases   # every kind of shape was drawn
    assert report.cases["dtype float32"] > 0 and report.cases["dtype float64"] > 0
    for dtype in ("float32", "float64"):
        ratio, tol, quantity, _ = report.worst[dtype]
        assert tol == RTOL[np.dtype(dtype)] * (2 if quantity == "da" else 1)   # float32 2e-6, float64 1e-12
        assert ratio <= tol, (dtype, ratio, tol, quantity)
    text = str(report)
    assert "agrees with the reference" in text and "worst error / error scale per dtype" in text


def test_arguments():
    """dtype restricts the cases (a NumPy dtype works too); bad arguments are clear errors."""
    report = check_scan_backend("reference", max_examples=10, dtype=np.float32, seed=0)
    assert report.cases["dtype float32"] == 10 and report.cases["dtype float64"] == 0
    with pytest.raises(ValueError, match="dtype must be one of"):
        check_scan_backend("reference", dtype="float16")
    with pytest.raises(ValueError, match="unknown scan backend 'nope'"):
        check_scan_backend("nope")
    with pytest.raises(ValueError, match="device must be 'cpu' or 'gpu'"):
        check_scan_backend("reference", device="tpu")


def test_report_of_a_small_counterexample_is_runnable():
    """A shrunk counterexample small enough is printed as a snippet that reproduces it (float64 exact values)."""
    with pytest.raises(ScanBackendMismatch) as excinfo:
        check_scan_backend(ignores_h0, max_examples=EXAMPLES, seed=0, dtype="float64")
    message = str(excinfo.value)
    assert "reproduce:" in message, message
    snippet = "\n".join(line[4:] for line in message.split("reproduce:\n", 1)[1].splitlines())
    from minigriffin.scan import register_backend, unregister_backend
    register_backend("ignores_h0", ignores_h0)                 # the name the snippet uses
    try:
        namespace = {}
        exec(snippet.replace("print(", "results.append(").replace("import numpy as np", "import numpy as np\nresults = []"),
             namespace)
    finally:
        unregister_backend("ignores_h0")
    broken, ref = namespace["results"]
    assert not np.allclose(broken[0], ref[0], rtol=1e-12, atol=0)   # float64: the snippet shows the disagreement


BROKEN_MODULE = '''
import numpy as np

def scan(x, a, h0, reverse, out):
    """Forgets h0."""
    h = np.zeros_like(h0)
    for t in (range(x.shape[1] - 1, -1, -1) if reverse else range(x.shape[1])):
        out[:, t] = a[:, t] * h + x[:, t]
        h = out[:, t]

NOT_A_FUNCTION = 3
'''


def test_cli_check_scan_on_a_builtin(capsys):
    code = main(["check-scan", "minigriffin.scan.blelloch:scan", "--max-examples", "15", "--seed", "0",
                 "--shapes", "2x64x8", "--repeats", "1", "--rounds", "1", "--compare", "numba"])
    out = capsys.readouterr().out
    assert code == 0, out
    for expected in ("agrees with the reference", "cases by category", "worst error / error scale",
                     "floor: np.multiply(a, x, out=h)", "bound: minimal traffic", "| blelloch.scan |", "| numba |",
                     "minigriffin.scan.blelloch:scan: OK"):
        assert expected in out, f"missing {expected!r}:\n{out}"


def test_cli_check_scan_on_a_broken_module(tmp_path):
    """As a user runs it: a subprocess, a kernel file; exit status 1 and the shrunk counterexample."""
    (tmp_path / "broken_scan.py").write_text(BROKEN_MODULE)
    result = subprocess.run([sys.executable, "-m", "minigriffin", "check-scan", "broken_scan:scan",
                             "--max-examples", "30", "--seed", "0"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "DISAGREES" in result.stdout and "Counterexample" in result.stdout and "h0         given" in result.stdout
    assert "FAILED" in result.stdout and "floor" not in result.stdout          # a wrong kernel is not timed
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args, message", [
    (["no_such_module_xyz:scan"], "cannot import 'no_such_module_xyz'"),
    (["{dir}/missing.py:scan"], "no such file"),
    (["{dir}/broken_scan.py:NOT_A_FUNCTION"], "is not callable"),
    (["{dir}/broken_scan.py:nope"], "has no attribute 'nope'"),
    (["just_a_word"], "neither MODULE:FUNCTION nor a scan backend"),
    (["{dir}/broken_scan.py:scan", "--shapes", "2x3"], "is not BxTxD"),
    (["{dir}/broken_scan.py:scan", "--compare", "fast"], "--compare 'fast'"),
])
def test_cli_check_scan_bad_input(tmp_path, capsys, args, message):
    """Bad input: exit status 2 and one line on stderr, no traceback (the CLI's convention)."""
    (tmp_path / "broken_scan.py").write_text(BROKEN_MODULE)
    with pytest.raises(SystemExit) as excinfo:
        main(["check-scan", *[a.format(dir=tmp_path) for a in args], "--max-examples", "5"])
    err = capsys.readouterr().err
    assert excinfo.value.code == 2
    assert err.startswith("minigriffin check-scan: error:") and message in err and len(err.strip().splitlines()) == 1, err


def test_cli_check_scan_gpu(capsys):
    """--gpu runs on CuPy arrays; without a usable GPU it is bad input: exit status 2, one line naming why."""
    args = ["check-scan", "cupy", "--gpu", "--max-examples", "10", "--seed", "0", "--no-bench"]
    if unavailable_reason("cupy") is not None:
        with pytest.raises(SystemExit) as excinfo:
            main(args)
        err = capsys.readouterr().err
        assert excinfo.value.code == 2 and len(err.strip().splitlines()) == 1, err
        assert "--device gpu is not usable here" in err, err
        return
    assert main(args) == 0
    assert "agrees with the reference (gpu" in capsys.readouterr().out


# --- On a GPU: the same harness on CuPy arrays (`check-scan --gpu`) -------------------------------------------

GPU_REASON = unavailable_reason("cupy")                       # None when the cupy backend can run here
needs_gpu = pytest.mark.skipif(GPU_REASON is not None, reason=f"no usable GPU for the cupy backend: {GPU_REASON}")
# Planted bugs that keep their meaning through a copy to the host and back (modifies_inputs and overruns_out
# act on the arrays' memory, which the copy replaces).
GPU_BUGS = ["reverse_off_by_one", "ignores_h0", "half_precision_carries", "tail_restarts", "racy", "ignores_out"]


def on_gpu(host_kernel):
    """A broken host loop as a CuPy kernel: copy the inputs to the host, run it, write `out` back on the device."""
    import cupy

    def kernel(x, a, h0, reverse, out):
        out_host = cupy.asnumpy(out)
        host_kernel(cupy.asnumpy(x), cupy.asnumpy(a), cupy.asnumpy(h0), reverse, out_host)
        out[...] = cupy.asarray(out_host)
    kernel.__name__ = host_kernel.__name__
    return kernel


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("bug", GPU_BUGS)
def test_harness_catches_planted_bug_on_gpu(bug):
    kernel, triggers = BROKEN[bug]
    kernel = on_gpu(make_racy() if kernel is None else kernel)
    with pytest.raises(ScanBackendMismatch) as excinfo:
        check_scan_backend(kernel, max_examples=EXAMPLES, seed=0, device="gpu")
    failure = excinfo.value.report.failure
    assert triggers(failure), f"{bug}: the counterexample does not show the bug's trigger:\n{excinfo.value}"


@pytest.mark.gpu
@needs_gpu
def test_harness_catches_a_planted_bug_in_the_cuda_kernel():
    """Our own CUDA kernel given zeros for h0: a bug that never leaves the device."""
    import cupy
    from minigriffin.scan.cuda import cupy_backend

    def cuda_ignores_h0(x, a, h0, reverse, out):
        return cupy_backend.scan(x, a, cupy.zeros_like(h0), reverse, out)
    with pytest.raises(ScanBackendMismatch) as excinfo:
        check_scan_backend(cuda_ignores_h0, max_examples=EXAMPLES, seed=0, device="gpu")
    assert excinfo.value.report.failure.example.case.h0 is not None, str(excinfo.value)


@pytest.mark.gpu
@needs_gpu
def test_cupy_backend_passes_on_gpu():
    """The built-in cupy backend under the same tolerances as the CPU backends (float32 2e-6, float64 1e-12)."""
    report = check_scan_backend("cupy", max_examples=EXAMPLES, seed=1, device="gpu")
    assert report.passed and report.cases["dtype float32"] > 0 and report.cases["dtype float64"] > 0
    for dtype in ("float32", "float64"):
        ratio, tol, quantity, _ = report.worst[dtype]
        assert tol == RTOL[np.dtype(dtype)] * (2 if quantity == "da" else 1) and ratio <= tol, (dtype, ratio, tol)
