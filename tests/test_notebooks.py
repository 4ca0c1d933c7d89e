"""The notebooks run top to bottom at the small size, and each committed .ipynb matches its .py source.

notebooks/*.py (jupytext py:percent) are the sources; each is converted in memory and executed with nbclient in a
fresh kernel running this interpreter (sys.executable), with notebooks/ as the working directory and
MINIGRIFFIN_FULL_RUN unset (the notebooks then pick their small sizes). Any cell that raises fails the test with
that cell's traceback. The kernel is a temporary kernelspec pointing at sys.executable, found through
JUPYTER_PATH, so whichever "python3" kernels the machine has installed play no part.
"""

import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
KERNEL_NAME = "minigriffin-notebook-test"
NOTEBOOK_TIMEOUT_S = 300     # whole notebook, small size (each runs in well under 60 s on a 2-core laptop)
CELL_TIMEOUT_S = 240         # any single cell
MAX_IPYNB_BYTES = 1_000_000  # committed outputs stay small


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """A kernelspec that runs ipykernel with this interpreter, and the environment the kernel inherits."""
    root = tmp_path_factory.mktemp("jupyter")
    spec_dir = root / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "minigriffin notebook test", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", os.pathsep.join([str(root), os.environ.get("JUPYTER_PATH", "")]).rstrip(os.pathsep))
        mp.delenv("MINIGRIFFIN_FULL_RUN", raising=False)           # the small size
        # The kernel imports this checkout's minigriffin (and tests/oracle_utils.py via the notebooks' own path).
        mp.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        mp.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
        # One BLAS thread unless the caller chose otherwise: BLAS worker threads busy-wait for each other, so on a
        # busy machine (a shared CI runner, a benchmark alongside) the small matmuls of these notebooks can take far
        # longer with a thread per core (seen on 2 cores: a training step of notebook 5 took 41 ms on a quiet
        # machine, 0.15-3.3 s with another job running, and 40 ms with one BLAS thread).
        for name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            if name not in os.environ:
                mp.setenv(name, "1")
        yield


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_notebook_runs(source, kernel_env):
    nb = jupytext.read(source)
    deadline = time.monotonic() + NOTEBOOK_TIMEOUT_S
    # timeout_func is asked before every cell: a cell may use what is left of the notebook's budget, at most
    # CELL_TIMEOUT_S, so the limit holds for the notebook as a whole and not only per cell.
    client = nbclient.NotebookClient(
        nb, kernel_name=KERNEL_NAME, resources={"metadata": {"path": str(NOTEBOOKS)}},
        timeout_func=lambda cell: max(1, int(min(CELL_TIMEOUT_S, deadline - time.monotonic()))),
        allow_errors=False, record_timing=False)
    start = time.monotonic()
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as exc:      # its message holds the cell and the traceback
        plain = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))          # IPython colours the traceback
        pytest.fail(f"{source.name}: a cell raised\n{plain}", pytrace=False)
    except nbclient.exceptions.CellTimeoutError as exc:
        pytest.fail(f"{source.name}: over its time budget ({NOTEBOOK_TIMEOUT_S} s for the notebook, "
                    f"{CELL_TIMEOUT_S} s per cell): {exc}", pytrace=False)
    elapsed = time.monotonic() - start
    assert elapsed < NOTEBOOK_TIMEOUT_S, f"{source.name} took {elapsed:.0f} s"


def _cells(nb):
    return [(cell.cell_type, cell.source.strip()) for cell in nb.cells]


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_ipynb_in_sync_with_source(source):
    """The committed .ipynb has the .py's cells, was executed top to bottom, and has no error outputs."""
    ipynb = source.with_suffix(".ipynb")
    assert ipynb.is_file(), f"{ipynb.name} is missing: execute {source.name} and commit the notebook"
    fix = (f"run `jupytext --sync {source.relative_to(REPO)}` then "
           f"`jupyter execute --inplace {ipynb.relative_to(REPO)}` (MINIGRIFFIN_FULL_RUN unset)")
    ours, theirs = _cells(jupytext.read(source)), _cells(jupytext.read(ipynb))
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if a != b:
            lines_py, lines_nb = a[1].splitlines() + [""], b[1].splitlines() + [""]
            k = next((k for k, (p, q) in enumerate(zip(lines_py, lines_nb)) if p != q), 0)   # first differing line
            pytest.fail(f"{ipynb.name} is stale: cell {i} ({a[0]}) differs from {source.name} at its line {k + 1}; "
                        f"{fix}\n  .py:    {lines_py[k]!r}\n  .ipynb: {lines_nb[k]!r}", pytrace=False)
    if len(ours) != len(theirs):
        pytest.fail(f"{source.name} has {len(ours)} cells, {ipynb.name} {len(theirs)}; {fix}", pytrace=False)
    nb = nbformat.read(ipynb, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    counts = [cell.get("execution_count") for cell in code]
    assert counts == list(range(1, len(code) + 1)), f"{ipynb.name} was not executed top to bottom once: {fix}"
    errors = [out for cell in code for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert not errors, f"{ipynb.name} holds an error output: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    size = ipynb.stat().st_size
    assert size <= MAX_IPYNB_BYTES, f"{ipynb.name} is {size:,} bytes; keep outputs and figures small"
