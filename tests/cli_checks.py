"""The command line's refusal convention, checked in one place: bad input ends `minigriffin ...` with exit
status 2 and exactly one line on stderr (no traceback, no usage block)."""

import contextlib
import io
import re

import pytest

from minigriffin.cli import main


def fails_in_one_line(argv, pattern):
    """Run `minigriffin argv`; assert it refuses with exit status 2 and one stderr line that re.search-es
    `pattern`; return that line."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as info:
        main(argv)
    lines = err.getvalue().splitlines()
    assert info.value.code == 2, (info.value.code, lines)
    assert len(lines) == 1, lines                                    # one line: no traceback, no usage block
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]
