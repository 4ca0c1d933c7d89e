"""The command line: doctor reports what it promises, demo runs, importing the package does no work."""

import subprocess
import sys

from minigriffin.cli import main


def test_doctor_reports_versions_threading_and_gpu(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for expected in ("numpy", "numba threads", "numba layer", "scan backends", "numba      available", "cupy",
                     "accelerators: on", "inference.forward_chunk          <- fast.decode_step"):
        assert expected in out, f"doctor output lacks {expected!r}:\n{out}"


def test_scan_demo_quick_runs_and_checks_agreement(capsys):
    assert main(["demo", "--scan", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "numba" in out and "blelloch" in out and "h there equals x exactly -> True" in out


def test_console_script_help():
    result = subprocess.run([sys.executable, "-m", "minigriffin", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "doctor" in result.stdout and "demo" in result.stdout


def test_import_is_lazy():
    """Importing minigriffin must not import numba or cupy (nor compile anything)."""
    code = "import sys, minigriffin; print('numba' in sys.modules, 'cupy' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


def test_training_demo_quick(corpus_dir, tmp_path, capsys):
    """The demo trains, samples and plots, and says where everything is."""
    assert main(["demo", "--quick", "--data-dir", str(corpus_dir), "--run-dir", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "a sample from the best checkpoint" in out and f"minigriffin train --resume {tmp_path / 'demo'}" in out
    assert (tmp_path / "demo" / "loss.png").exists()
