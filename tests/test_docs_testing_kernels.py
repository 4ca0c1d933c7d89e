"""docs/testing-kernels.md runs as written: its code blocks and its commands, in order, in a fresh folder.

The page is parsed into fenced blocks. A block preceded by `<!-- file: NAME -->` is written to NAME (the
walkthrough's kernel, first with its planted bug, then fixed). Other ```python blocks are executed in one
namespace, as a reader pasting them into one Python session would; `<!-- raises: NAME -->` before a block
means it must raise that exception. ```console blocks are commands: each `$ minigriffin ...` runs through the
CLI's main(), and a following `$ echo $?` line gives the exit status the page promises. Functions named test_*
that the blocks define (the page's pytest example) are called at the end. ```text blocks are sample output and
are not compared (Hypothesis's shrinking and the timings vary between versions and machines), but the planted
bug's counterexample must show its trigger: float64 (the kernel holds its state in float32).
"""

import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

from minigriffin.cli import main
from minigriffin.scan import backend_names, unregister_backend
from minigriffin.testing import ScanBackendMismatch

DOC = Path(__file__).resolve().parents[1] / "docs" / "testing-kernels.md"
BLOCK = re.compile(r"(?:<!--\s*(?P<meta>[^>]*?)\s*-->\s*\n)?```(?P<lang>\w+)\n(?P<body>.*?)\n```", re.S)


def doc_blocks():
    return [(m["meta"] or "", m["lang"], m["body"]) for m in BLOCK.finditer(DOC.read_text(encoding="utf-8"))]


def console_commands(body):
    """[(argv after 'minigriffin', expected exit status or None)] of a console block."""
    commands, status = [], {}
    lines = body.splitlines()
    for i, line in enumerate(lines):
        if line == "$ echo $?":
            status[len(commands) - 1] = int(lines[i + 1])
        elif line.startswith("$ "):
            commands.append(line[2:])
    assert all(cmd.startswith("minigriffin ") for cmd in commands), commands
    return [(shlex.split(cmd)[1:], status.get(i)) for i, cmd in enumerate(commands)]


def run_cli(argv):
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def test_the_page_has_what_the_walkthrough_needs():
    """The parser finds the blocks (so the walkthrough test below cannot pass by running nothing)."""
    blocks = doc_blocks()
    metas = [meta for meta, _, _ in blocks]
    assert metas.count("file: my_scan.py") == 3                     # the planted bug, the fix, the fast one
    assert "raises: ScanBackendMismatch" in metas
    commands = [c for meta, lang, body in blocks if lang == "console" for c in console_commands(body)]
    assert [status for _, status in commands] == [1, 0, 0] and all(args[0] == "check-scan" for args, _ in commands)


def test_walkthrough_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(backend_names())
    namespace, caught = {"__name__": "docs_walkthrough"}, []
    try:
        for n, (meta, lang, body) in enumerate(doc_blocks()):
            if meta.startswith("file:"):
                name = meta.split(":", 1)[1].strip()
                (tmp_path / name).write_text(body + "\n")
                sys.modules.pop(Path(name).stem, None)                # a later import sees the new file
            elif lang == "python" and meta.startswith("raises:"):
                with pytest.raises(ScanBackendMismatch) as excinfo:
                    exec(compile(body, f"{DOC.name} block {n}", "exec"), namespace)
                caught.append(excinfo.value.report.failure)
            elif lang == "python":
                exec(compile(body, f"{DOC.name} block {n}", "exec"), namespace)
            elif lang == "console":
                for argv, status in console_commands(body):
                    code = run_cli(argv)
                    out = capsys.readouterr().out
                    assert status is None or code == status, f"{argv}: exit status {code}, the page says {status}\n{out}"
        tests = [fn for name, fn in namespace.items() if name.startswith("test_") and callable(fn)]
        assert len(tests) == 1
        for fn in tests:
            fn()
    finally:
        for name in set(backend_names()) - before:
            unregister_backend(name)
        sys.modules.pop("my_scan", None)
    (failure,) = caught
    assert failure.example.case.x.dtype == np.float64, failure   # the planted bug's trigger: float32 state
