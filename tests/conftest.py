"""Shared test setup: Hypothesis profiles, the corpora, and the rule that CI never skips a check it must run.

Hypothesis: CI (CI=true) uses Hypothesis's built-in `ci` profile (derandomized, no deadline, so Numba's
first-call compilation never fails a test); local runs use `dev`, which also has no deadline.

Corpora: `corpus_dir` is a small books corpus the tests write themselves (tests/synthetic_corpus.py), so every
training, resume, Ctrl-C, NaN and evaluation test runs on every clone. `books_dir` is the real Project
Gutenberg subset, read from $MINIGRIFFIN_BOOKS, for the few tests that are about real books; without it those
tests skip, visibly.

No silent skips in CI: with MINIGRIFFIN_NO_SKIP=1 (.ci/run sets it) every skip is turned into a failure,
except for tests marked `gpu`, which need a CUDA device that CI does not have. So a missing oracle
(recurrentgemma, torch), a missing nvcc or g++, a missing notebook kernel or a missing books folder fails CI
instead of quietly shrinking what it checks; a user without those extras still gets a visible skip.
"""

import os
from pathlib import Path

import pytest
from hypothesis import settings

from synthetic_corpus import write_corpus

settings.register_profile("dev", deadline=None, max_examples=60)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

NO_SKIP = os.environ.get("MINIGRIFFIN_NO_SKIP", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Token caches and downloads go to a temporary folder, never the user's ~/.cache (subprocesses inherit it)."""
    if "MINIGRIFFIN_CACHE" not in os.environ:
        os.environ["MINIGRIFFIN_CACHE"] = str(tmp_path_factory.mktemp("minigriffin-cache"))
    yield


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory):
    """A generated books corpus (train/ 4 books, valid/ 2 books, about 290 KB of UTF-8 text), the same bytes
    on every run: what the training, resume, fault and evaluation tests train and evaluate on."""
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def books_dir():
    """The real books corpus (train/ and valid/); .ci/run sets MINIGRIFFIN_BOOKS. Skips visibly if absent."""
    if not os.environ.get("MINIGRIFFIN_BOOKS"):
        pytest.skip("the books corpus is not configured: set MINIGRIFFIN_BOOKS to a folder with train/ and "
                    "valid/ books (`minigriffin download` fetches one)")
    path = Path(os.environ["MINIGRIFFIN_BOOKS"])
    if not (path / "train").is_dir():
        pytest.skip(f"books corpus not found at {path} (MINIGRIFFIN_BOOKS)")
    return path


def _strict(report, allowed):
    """Under MINIGRIFFIN_NO_SKIP, turn a skip into a failure that says what was not checked and why."""
    if NO_SKIP and report.skipped and not allowed and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (f"skipped, but MINIGRIFFIN_NO_SKIP=1 requires this check to run: {reason}\n"
                           f"(install what it needs: make test installs the test and oracle extras)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _strict(outcome.get_result(), allowed=item.get_closest_marker("gpu") is not None)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _strict(outcome.get_result(), allowed=False)
