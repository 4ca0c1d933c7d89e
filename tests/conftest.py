"""Shared test setup: Hypothesis profiles and the books corpus location.

Hypothesis: CI (CI=true) uses Hypothesis's built-in `ci` profile (derandomized, no deadline, so Numba's
first-call compilation never fails a test); local runs use `dev`, which also has no deadline.
"""

import os
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("dev", deadline=None, max_examples=60)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Token caches and downloads go to a temporary folder, never the user's ~/.cache (subprocesses inherit it)."""
    if "MINIGRIFFIN_CACHE" not in os.environ:
        os.environ["MINIGRIFFIN_CACHE"] = str(tmp_path_factory.mktemp("minigriffin-cache"))
    yield


@pytest.fixture(scope="session")
def books_dir():
    """The shared books corpus (train/ and valid/); .ci/run sets MINIGRIFFIN_BOOKS. Skips visibly if absent."""
    path = Path(os.environ.get("MINIGRIFFIN_BOOKS", Path(__file__).resolve().parents[1].parent / "shared/data/books"))
    if not (path / "train").is_dir():
        pytest.skip(f"books corpus not found at {path} (set MINIGRIFFIN_BOOKS)")
    return path
