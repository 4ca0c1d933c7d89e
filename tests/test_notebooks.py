"""The notebooks run top to bottom at the small size, each committed .ipynb matches its .py source, and its
committed outputs are the ones the current code produces.

Execution. notebooks/*.py (jupytext py:percent) are the sources; each is converted in memory and executed with
nbclient in a fresh kernel running this interpreter (sys.executable), with notebooks/ as the working directory and
MINIGRIFFIN_FULL_RUN unset (the notebooks then pick their small sizes), one BLAS thread and Numba's default
threading. Any cell that raises fails the test with that cell's traceback. The kernel is a temporary kernelspec
pointing at sys.executable, found through JUPYTER_PATH, so whichever "python3" kernels the machine has installed play
no part. The kernel also gets a temporary IPYTHONDIR whose startup file (FIGURE_DATA_STARTUP below) adds one more
representation to every matplotlib figure a notebook shows: FIGURE_MIME, a JSON summary of what the figure plots
(per axes: title, labels, scales; per line, collection, bar set and image: its label, its number of points and the
min, max and mean of its coordinates, to 4 significant digits). GitHub and Jupyter ignore that type and show the PNG.

`make notebooks` (this file run as a script) executes every notebook in exactly that way and writes the .ipynb, so
the committed outputs are what CI computes.

Stale outputs. test_outputs_are_current compares each committed .ipynb, cell by cell, with the execution that
test_notebook_runs just did (it is cached, so CI executes every notebook once; run alone, the test executes it
itself). What is compared, per code cell:

* the text the cell printed to stdout, all of it joined (stdout arrives in chunks whose boundaries, and whose order
  against figures, depend on timing); stderr is ignored (warnings depend on library versions);
* the cell's rich outputs in order: their kinds and MIME types; the text of each (text/markdown, else text/plain);
  each figure's FIGURE_MIME summary; and the exact bytes of images displayed from files (the committed
  docs/results/*.png), so a notebook that shows a study's figure must be refreshed when the study is rerun.
  Rendered PNGs of figures are not compared (fonts and library versions change their bytes, not their data).

Every compared text is normalised first (see `normalise`): ANSI colours dropped; absolute paths (temporary run
folders, the books folder) become <path>; memory addresses 0x... become 0x?; commit hashes become <commit>; a number
followed by a unit of time or speed (ms, s, min, tok/s, tokens/s, GB/s, ...) becomes <time>; runs of spaces become
one (column padding follows the width of the numbers). Then numbers are compared with a tolerance (see
`texts_match`): the text around them must be identical; integers must agree to RTOL_INTEGER relative (so counts
below 1,000 exactly); decimals to RTOL relative or one unit of their last printed digit; and two numbers both below
TINY in magnitude (rounding errors of gradient checks, relative errors of float64 comparisons) count as equal.

Two cell tags relax a cell (`# %% tags=["numbers-vary"]` in the .py): "numbers-vary", for a cell that measures the
machine, masks every number of the cell's outputs (timings printed without a unit, the CPU count, plots of
timings); "text-varies" compares only how many outputs of each kind the cell produced (text sampled from a trained
model, where one flipped byte changes everything after it; where the books were found).

Without the books corpus, test_outputs_are_current skips notebooks 05, 06 and 11 (their committed outputs need it).

The notebooks are deterministic at the small size: every random draw comes from a seeded generator, training runs
are seeded, one BLAS thread. A different processor can still round differently (a trained model's losses move in
their last digits, which the tolerance absorbs). When this test fails after a deliberate change, refresh the
outputs with `make notebooks` (or `python tests/test_notebooks.py 06` for one) and commit the .ipynb files.
"""

import base64
import contextlib
import hashlib
import json
import os
import re
import sys
import tempfile
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
KERNEL_STARTUP_TIMEOUT_S = 180   # nbclient's default, 60 s, is too short on a saturated 2-core machine
FIGURE_MIME = "application/vnd.minigriffin.figure-data+json"
RTOL = 0.02                  # relative tolerance for printed numbers and figure data
RTOL_INTEGER = 1e-3          # integers (counts, bytes): exact below 1,000
TINY = 1e-5                  # two numbers both smaller than this in magnitude are equal (rounding errors)
NEEDS_BOOKS = ("05", "06", "11")   # notebooks whose outputs need the books corpus

# Runs in the kernel before the notebook (an IPython startup file): every matplotlib Figure that is displayed gets a
# FIGURE_MIME representation summarising its data, which test_outputs_are_current compares.
FIGURE_DATA_STARTUP = r'''
def _minigriffin_figure_data():
    from IPython import get_ipython
    from IPython.core.formatters import JSONFormatter
    from traitlets import Unicode

    def stats(values):
        import numpy as np
        v = np.asarray(values, dtype=float).ravel()
        v = v[np.isfinite(v)]
        return [int(v.size)] + ([float(f"{x:.4g}") for x in (v.min(), v.max(), v.mean())] if v.size else [])

    def summary(fig):
        import numpy as np
        out = {"suptitle": fig._suptitle.get_text() if fig._suptitle else "", "axes": []}
        for ax in fig.axes:
            a = {"title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(),
                 "scales": [ax.get_xscale(), ax.get_yscale()], "lines": [], "collections": [], "patches": [],
                 "images": [], "texts": [t.get_text() for t in ax.texts]}
            for line in ax.get_lines():
                x, y = line.get_data()
                a["lines"].append({"label": str(line.get_label()), "style": str(line.get_linestyle()),
                                   "x": stats(np.asarray(x, dtype=float)), "y": stats(np.asarray(y, dtype=float))})
            for c in ax.collections:
                offsets = np.asarray(c.get_offsets(), dtype=float).reshape(-1, 2)
                paths = [np.asarray(p.vertices, dtype=float) for p in c.get_paths()]
                verts = np.concatenate(paths) if paths else np.zeros((0, 2))
                a["collections"].append({"label": str(c.get_label()), "offsets": [stats(offsets[:, 0]),
                                         stats(offsets[:, 1])], "paths": [stats(verts[:, 0]), stats(verts[:, 1])]})
            rects = [p for p in ax.patches if hasattr(p, "get_height")]
            if rects:
                a["patches"].append({"n": len(rects), "x": stats([p.get_x() for p in rects]),
                                     "width": stats([p.get_width() for p in rects]),
                                     "height": stats([p.get_height() for p in rects])})
            for im in ax.images:
                arr = np.asarray(im.get_array(), dtype=float)
                a["images"].append({"shape": list(arr.shape), "values": stats(arr)})
            legend = ax.get_legend()
            a["legend"] = [t.get_text() for t in legend.get_texts()] if legend else []
            out["axes"].append(a)
        return out

    class FigureData(JSONFormatter):
        """Summarises matplotlib Figures. It does not use the formatter's type registry: IPython empties that of
        Figure entries whenever the inline backend is configured (pylabtools.select_figure_formats)."""
        format_type = Unicode("application/vnd.minigriffin.figure-data+json")

        def __call__(self, obj):
            cls = type(obj)
            if cls.__name__ == "Figure" and cls.__module__.startswith("matplotlib"):
                return summary(obj)
            return None

    ip = get_ipython()
    if ip is not None:
        ip.display_formatter.formatters[FigureData.format_type.default_value] = FigureData(parent=ip.display_formatter)


_minigriffin_figure_data()
del _minigriffin_figure_data
'''


def have_books():
    """The books corpus the notebooks read, as notebooks 05, 06 and 11 look for it (or None)."""
    folder = os.environ.get("MINIGRIFFIN_BOOKS")
    if not folder:
        from minigriffin.data import default_cache_dir
        folder = default_cache_dir() / "books"
    folder = Path(folder).expanduser()
    return folder.is_dir() and ((folder / "train").is_dir() or any(folder.glob("*.txt")))


@contextlib.contextmanager
def kernel_environment(root):
    """A kernelspec that runs ipykernel with this interpreter, and the environment the kernel inherits."""
    root = Path(root)
    spec_dir = root / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "minigriffin notebook test", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    startup = root / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-figure-data.py").write_text(FIGURE_DATA_STARTUP)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", os.pathsep.join([str(root), os.environ.get("JUPYTER_PATH", "")]).rstrip(os.pathsep))
        mp.setenv("IPYTHONDIR", str(root / "ipython"))
        mp.delenv("MINIGRIFFIN_FULL_RUN", raising=False)           # the small size
        # The kernel imports this checkout's minigriffin (and tests/oracle_utils.py via the notebooks' own path).
        mp.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        mp.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
        mp.setenv("PYTHONHASHSEED", "0")
        # One BLAS thread unless the caller chose otherwise: BLAS worker threads busy-wait for each other, so on a
        # busy machine (a shared CI runner, a benchmark alongside) the small matmuls of these notebooks can take far
        # longer with a thread per core (seen on 2 cores: a training step of notebook 5 took 41 ms on a quiet
        # machine, 0.15-3.3 s with another job running, and 40 ms with one BLAS thread). It also keeps the
        # outputs reproducible: the order of a threaded reduction is not.
        for name in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
            if name not in os.environ:
                mp.setenv(name, "1")
        yield


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    with kernel_environment(tmp_path_factory.mktemp("jupyter")):
        yield


def execute(source):
    """The notebook of `source` (a .py), executed at the small size; raises nbclient's errors."""
    nb = jupytext.read(source)
    deadline = time.monotonic() + NOTEBOOK_TIMEOUT_S
    # timeout_func is asked before every cell: a cell may use what is left of the notebook's budget, at most
    # CELL_TIMEOUT_S, so the limit holds for the notebook as a whole and not only per cell.
    client = nbclient.NotebookClient(
        nb, kernel_name=KERNEL_NAME, resources={"metadata": {"path": str(NOTEBOOKS)}},
        timeout_func=lambda cell: max(1, int(min(CELL_TIMEOUT_S, deadline - time.monotonic()))),
        allow_errors=False, record_timing=False, startup_timeout=KERNEL_STARTUP_TIMEOUT_S)
    client.execute()
    return nb


EXECUTED = {}       # source stem -> the notebook test_notebook_runs executed, for test_outputs_are_current


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_notebook_runs(source, kernel_env):
    start = time.monotonic()
    try:
        EXECUTED[source.stem] = execute(source)
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


def _fix(source):
    return f"run `python tests/test_notebooks.py {source.stem[:2]}` (or `make notebooks`) and commit the .ipynb"


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_ipynb_in_sync_with_source(source):
    """The committed .ipynb has the .py's cells, was executed top to bottom, and has no error outputs."""
    ipynb = source.with_suffix(".ipynb")
    assert ipynb.is_file(), f"{ipynb.name} is missing: {_fix(source)}"
    fix = _fix(source)
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


# ---------------------------------------------------------------------------------------------------------------
# Comparing outputs

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_PATH = re.compile(r"(?<![\w.$/])/(?:[\w.\-]+/)*[\w.\-]+/?")                  # absolute paths, not "tok/s" or "1/2"
_ADDRESS = re.compile(r"\b0x[0-9a-fA-F]{6,}\b")
_COMMIT = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}(?:[-+]dirty)?\b")
# after the word "commit" also a hash of digits only (or letters only), which the pattern above leaves alone
# because it would take numbers for hashes: 4806419 is a real abbreviated commit
_COMMIT_AFTER_WORD = re.compile(r"(\bcommit\s+)[0-9a-f]{7,40}(?:[-+]dirty)?\b", re.IGNORECASE)
_NUMBER = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?(?:[eE][-+]?\d+)?|[-+]?\.\d+(?:[eE][-+]?\d+)?"
_TIME = re.compile(rf"(?:{_NUMBER})\s*(?:ms|µs|us|ns|s|sec|seconds?|min|minutes?|hours?|"
                   rf"(?:tok|tokens|bytes|steps|it)/s|[kMG]B/s|[kMG]iB/s)(?![\w/])")
_NUMBER_RE = re.compile(_NUMBER)


def normalise(text):
    """Mask what changes from run to run without being a result (see the module's docstring)."""
    text = _ANSI.sub("", text)
    text = _PATH.sub("<path>", text)
    text = _ADDRESS.sub("0x?", text)
    text = _COMMIT_AFTER_WORD.sub(r"\1<commit>", text)
    text = _COMMIT.sub("<commit>", text)
    text = _TIME.sub("<time>", text)
    return "\n".join(re.sub(r"[ \t]+", " ", line).rstrip() for line in text.strip().splitlines())


def _value(token):
    return float(token.replace(",", ""))


def _numbers_close(a, b):
    x, y = _value(a), _value(b)
    if x == y or (abs(x) < TINY and abs(y) < TINY):
        return True
    if "." in a or "." in b or "e" in a.lower() or "e" in b.lower():     # a decimal: one unit of its last digit
        def unit(t):
            mantissa, _, exponent = t.lower().partition("e")
            decimals = len(mantissa.partition(".")[2])
            return 10.0 ** (int(exponent or 0) - decimals)
        return abs(x - y) <= max(RTOL * max(abs(x), abs(y)), 1.0001 * max(unit(a), unit(b)))
    return abs(x - y) <= RTOL_INTEGER * max(abs(x), abs(y))               # integers: counts, bytes


def texts_match(committed, fresh, mask_numbers=False):
    """None when the two normalised texts agree (numbers within tolerance), else a description of the first
    difference."""
    a, b = normalise(committed), normalise(fresh)
    if mask_numbers:
        a, b = _NUMBER_RE.sub("#", a), _NUMBER_RE.sub("#", b)
    if _NUMBER_RE.sub("#", a) == _NUMBER_RE.sub("#", b):
        for m, n in zip(_NUMBER_RE.finditer(a), _NUMBER_RE.finditer(b)):
            if not _numbers_close(m.group(), n.group()):
                line = a.count("\n", 0, m.start())
                return (f"number {m.group()!r} is now {n.group()!r}, in the line\n"
                        f"    committed: {a.splitlines()[line]!r}\n"
                        f"    fresh:     {b.splitlines()[b.count(chr(10), 0, n.start())]!r}")
        return None
    la, lb = a.splitlines() + ["<end>"], b.splitlines() + ["<end>"]
    k = next(k for k, (p, q) in enumerate(zip(la, lb)) if _NUMBER_RE.sub("#", p) != _NUMBER_RE.sub("#", q))
    return f"line {k + 1} differs\n    committed: {la[k]!r}\n    fresh:     {lb[k]!r}"


def _text(data):
    value = data if isinstance(data, str) else "".join(data)
    return value


def cell_outputs(cell):
    """(stdout text, [rich outputs as (kind, mime types, text to compare, exact digest or None)]) of a code cell."""
    stdout, rich = [], []
    for out in cell.get("outputs", []):
        kind = out["output_type"]
        if kind == "stream":
            if out["name"] == "stdout":
                stdout.append(_text(out["text"]))
        elif kind in ("display_data", "execute_result"):
            data = out["data"]
            mimes = tuple(sorted(data))
            if FIGURE_MIME in data:
                text = json.dumps(data[FIGURE_MIME], sort_keys=True, indent=0, ensure_ascii=False)
            else:
                text = _text(data.get("text/markdown") or data.get("text/plain", ""))
            digest = None
            if FIGURE_MIME not in data and "image/png" in data:                 # an image shown from a file
                digest = hashlib.sha256(base64.b64decode(_text(data["image/png"]))).hexdigest()[:16]
            rich.append((kind, mimes, text, digest))
        else:
            rich.append((kind, (), "", None))
    return "".join(stdout), rich


def compare_notebooks(committed, fresh):
    """A list of differences, each a string naming the cell, between two executed notebooks with the same cells."""
    problems = []
    code = [(i, a, b) for i, (a, b) in enumerate(zip(committed.cells, fresh.cells)) if a.cell_type == "code"]
    for i, old, new in code:
        tags = set(new.get("metadata", {}).get("tags", []))
        first = new.source.strip().splitlines()[0] if new.source.strip() else ""
        where = f"cell {i} (`{first[:60]}`)"
        (out_a, rich_a), (out_b, rich_b) = cell_outputs(old), cell_outputs(new)
        if "text-varies" in tags:
            if (bool(out_a), [r[:2] for r in rich_a]) != (bool(out_b), [r[:2] for r in rich_b]):
                problems.append(f"{where}: its outputs are no longer of the same kinds")
            continue
        diff = texts_match(out_a, out_b, mask_numbers="numbers-vary" in tags)
        if diff:
            problems.append(f"{where}, printed text: {diff}")
        kinds_a, kinds_b = [r[:2] for r in rich_a], [r[:2] for r in rich_b]
        if kinds_a != kinds_b:
            problems.append(f"{where}: displays {len(rich_a)} outputs in the committed notebook, {len(rich_b)} now "
                            f"({kinds_a} against {kinds_b})")
            continue
        for k, (ra, rb) in enumerate(zip(rich_a, rich_b)):
            diff = texts_match(ra[2], rb[2], mask_numbers="numbers-vary" in tags)
            what = "figure data" if FIGURE_MIME in ra[1] else "displayed text"
            if diff:
                problems.append(f"{where}, output {k} ({what}): {diff}")
            if ra[3] != rb[3]:
                problems.append(f"{where}, output {k}: the image shown from a file has changed")
    return problems


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_outputs_are_current(source, kernel_env):
    """The committed .ipynb's outputs are those of a fresh execution (the one test_notebook_runs did)."""
    if source.stem[:2] in NEEDS_BOOKS and not have_books():
        pytest.skip("no books corpus: the committed outputs were made with books (set MINIGRIFFIN_BOOKS)")
    ipynb = source.with_suffix(".ipynb")
    if not ipynb.is_file():
        pytest.fail(f"{ipynb.name} is missing: {_fix(source)}", pytrace=False)
    fresh = EXECUTED.get(source.stem)
    if fresh is None:                          # test_notebook_runs failed, or was not selected: execute here
        try:
            fresh = execute(source)
        except (nbclient.exceptions.CellExecutionError, nbclient.exceptions.CellTimeoutError) as exc:
            pytest.fail(f"{source.name} does not run: {exc}", pytrace=False)
    committed = nbformat.read(ipynb, as_version=4)
    if _cells(committed) != _cells(fresh):
        pytest.fail(f"{ipynb.name} does not have {source.name}'s cells (test_ipynb_in_sync_with_source says where); "
                    f"{_fix(source)}", pytrace=False)
    problems = compare_notebooks(committed, fresh)
    if problems:
        pytest.fail(f"{ipynb.name} holds stale outputs, {len(problems)} difference(s) from a fresh execution:\n"
                    + "\n".join(f"  {p}" for p in problems[:10]) + f"\n{_fix(source)}", pytrace=False)


def test_normalise_and_tolerance():
    """The normalisation masks what it should and nothing else."""
    assert normalise("trained in 10 s, 12,239 tok/s, ETA 0.2 min, 2.96 ms per step, 15.5 GB/s") == \
        "trained in <time>, <time>, ETA <time>, <time> per step, <time>"
    assert normalise("checkpoints in /tmp/minigriffin-x/griffin/checkpoints; ../docs/results stays") == \
        "checkpoints in <path>; ../docs/results stays"
    assert normalise("commit 2ea72a3, <Figure at 0x7f3a2b1c4d50>, 1/(1-a_t), nats/byte, 3 steps") == \
        "commit <commit>, <Figure at 0x?>, 1/(1-a_t), nats/byte, 3 steps"
    assert normalise("seed 0, commit 4806419, 10 documents; Commit deadbee+dirty; 1234567 tokens") == \
        "seed 0, commit <commit>, 10 documents; Commit <commit>; 1234567 tokens"   # a number stays a number
    assert texts_match("loss 1.9325 and 80 documents", "loss 1.9331 and 80 documents") is None
    assert texts_match("error 3.4e-09", "error 7.1e-11") is None                  # both rounding errors
    assert texts_match("+0.003 [-0.001, +0.007]", "+0.004 [-0.000, +0.007]") is None   # one unit of the last digit
    assert texts_match("80 documents", "81 documents") is not None
    assert texts_match("loss 1.93", "loss 2.10") is not None
    assert texts_match("are better far out", "are worse far out") is not None
    assert texts_match("6.04 ms", "191.91 ms") is None                            # timings are masked
    assert texts_match("ctx   512:    6.04 ms", "ctx   512:  191.91 ms") is None   # and so is column padding
    assert texts_match("numba 0.06 0.29", "numba 0.09 0.31", mask_numbers=True) is None


def test_compare_notebooks_finds_stale_outputs():
    """A changed number in a figure's data, a changed word, or a missing figure is reported; chunking and timing
    are not."""
    def notebook(text, ys, figures=1, tags=()):
        figure = {"output_type": "display_data", "metadata": {},
                  "data": {"text/plain": "<Figure size 432x216 with 1 Axes>",
                           "image/png": "", FIGURE_MIME: {"axes": [{"lines": [{"y": ys}]}]}}}
        cell = nbformat.v4.new_code_cell("plot()", metadata={"tags": list(tags)})
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=t) for t in text] + [figure] * figures
        return nbformat.v4.new_notebook(cells=[cell])

    base = notebook(["loss 1.932 in 7 s\n"], [240, 1.906, 2.458, 2.1])
    assert compare_notebooks(base, notebook(["loss 1.9", "32 in 12 s\n"], [240, 1.906, 2.458, 2.1])) == []
    assert compare_notebooks(base, notebook(["loss 1.932 in 7 s\n"], [240, 1.906, 2.958, 2.1]))
    assert compare_notebooks(base, notebook(["loss 2.315 in 7 s\n"], [240, 1.906, 2.458, 2.1]))
    assert compare_notebooks(base, notebook(["loss 1.932 in 7 s\n"], [240, 1.906, 2.458, 2.1], figures=2))
    assert compare_notebooks(base, notebook(["loss 2.315 in 7 s\n"], [240, 1.906, 2.958, 2.1],
                                            tags=["numbers-vary"])) == []


# ---------------------------------------------------------------------------------------------------------------
# `make notebooks`: execute every notebook as the tests do and write its .ipynb

def write_notebook(source):
    """Execute `source` at the small size and write its .ipynb, keeping the committed cell ids and kernelspec."""
    nb = execute(source)
    ipynb = source.with_suffix(".ipynb")
    if ipynb.is_file():                                    # keep cell ids where the cell is the same: small diffs
        old = nbformat.read(ipynb, as_version=4)
        by_source = {}
        for cell in old.cells:
            by_source.setdefault((cell.cell_type, cell.source), []).append(cell.get("id"))
        for cell in nb.cells:
            ids = by_source.get((cell.cell_type, cell.source))
            if ids and ids[0]:
                cell["id"] = ids.pop(0)
    nb.metadata["kernelspec"] = jupytext.read(source).metadata.get("kernelspec", nb.metadata.get("kernelspec"))
    nb.metadata.pop("jupytext", None)                       # jupytext.toml pairs every notebook
    nbformat.write(nb, ipynb)


def main(argv):
    wanted = [a for a in argv if not a.startswith("-")]
    sources = [s for s in SOURCES if not wanted or any(s.stem.startswith(w) for w in wanted)]
    if not sources:
        sys.exit(f"no notebook matches {wanted}")
    if any(s.stem[:2] in NEEDS_BOOKS for s in sources) and not have_books():
        sys.exit("notebooks 05, 06 and 11 need the books corpus (set MINIGRIFFIN_BOOKS or run `minigriffin download`): "
                 "their committed outputs are made with it")
    with tempfile.TemporaryDirectory() as root, kernel_environment(root):
        for source in sources:
            start = time.monotonic()
            write_notebook(source)
            print(f"{source.with_suffix('.ipynb').relative_to(REPO)}: executed and written in "
                  f"{time.monotonic() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
