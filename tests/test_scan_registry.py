"""The public scan-backend registry: register_backend / unregister_backend, their errors, and a registered backend
working everywhere a built-in does (linear_scan, linear_scan_backward, the model config, training,
--scan_backend=NAME, entry points of installed packages). minigriffin.testing needs Hypothesis; minigriffin does not.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from minigriffin.cli import main
from minigriffin.config import make_config
from minigriffin.scan import (
    BackendUnavailable,
    available_backends,
    backend_names,
    linear_scan,
    linear_scan_backward,
    register_backend,
    registry,
    unavailable_reason,
    unregister_backend,
)
from minigriffin.scan.reference import scan as reference_scan


@pytest.fixture
def counting_backend():
    """A backend "counted" (the reference primitive, counting its calls), unregistered afterwards."""
    calls = []

    def scan(x, a, h0, reverse, out):
        calls.append((x.shape, bool(reverse)))
        return reference_scan(x, a, h0, reverse, out)

    register_backend("counted", scan)
    yield calls
    if "counted" in backend_names():
        unregister_backend("counted")


def test_registered_backend_runs_forward_and_backward(counting_backend):
    rng = np.random.default_rng(0)
    x, a, h0 = rng.standard_normal((2, 9, 3)), rng.uniform(size=(2, 9, 3)), rng.standard_normal((2, 3))
    dh, dh_last = rng.standard_normal((2, 9, 3)), rng.standard_normal((2, 3))
    assert backend_names()[-1] == "counted" and "counted" in available_backends()
    assert unavailable_reason("counted") is None
    for reverse in (False, True):
        h, last = linear_scan(x, a, h0, reverse=reverse, backend="counted")
        h_ref, last_ref = linear_scan(x, a, h0, reverse=reverse, backend="reference")
        np.testing.assert_array_equal(h, h_ref)                 # float64, exact: the same loop
        np.testing.assert_array_equal(last, last_ref)           # float64, exact
        got = linear_scan_backward(dh, dh_last, a, h, h0, reverse=reverse, backend="counted")
        ref = linear_scan_backward(dh, dh_last, a, h, h0, reverse=reverse, backend="reference")
        for g, r in zip(got, ref):
            np.testing.assert_array_equal(g, r)                 # float64, exact: the same primitive
    # forward (T steps) and backward (the T - 1 remaining steps, reversed direction), both directions
    assert counting_backend == [((2, 9, 3), False), ((2, 8, 3), True), ((2, 9, 3), True), ((2, 8, 3), False)]


def test_register_errors():
    with pytest.raises(ValueError, match="'auto' is reserved"):
        register_backend("auto", reference_scan)
    with pytest.raises(ValueError, match="'numba' is a built-in backend"):
        register_backend("numba", reference_scan)
    with pytest.raises(ValueError, match="letters, digits"):
        register_backend("my scan", reference_scan)
    with pytest.raises(ValueError, match="letters, digits"):
        register_backend("", reference_scan)
    with pytest.raises(TypeError, match="must be callable"):
        register_backend("mine", "not a function")
    with pytest.raises(TypeError, match=r"must take \(x, a, h0, reverse, out\)"):
        register_backend("mine", lambda x, a: None)
    assert "mine" not in backend_names()                        # nothing half-registered


def test_name_clash_and_unregister(counting_backend):
    with pytest.raises(ValueError, match="'counted' is already registered; unregister_backend"):
        register_backend("counted", reference_scan)
    with pytest.raises(ValueError, match="built into minigriffin and cannot be unregistered"):
        unregister_backend("reference")
    assert "reference" in backend_names()
    unregister_backend("counted")
    assert "counted" not in backend_names()
    with pytest.raises(KeyError, match="no scan backend 'counted' is registered"):
        unregister_backend("counted")
    with pytest.raises(ValueError, match="unknown scan backend 'counted'"):
        linear_scan(np.ones((1, 2, 1)), np.ones((1, 2, 1)), backend="counted")
    register_backend("counted", reference_scan)                  # the name is free again


def test_config_accepts_registered_names_only(counting_backend):
    assert make_config("griffin-tiny", scan_backend="counted").scan_backend == "counted"
    unregister_backend("counted")
    with pytest.raises(ValueError, match="scan_backend must be one of"):
        make_config("griffin-tiny", scan_backend="counted")


def test_training_with_a_registered_backend(counting_backend, corpus_dir, tmp_path):
    """`minigriffin train --scan_backend=counted` trains through the registered backend (its calls counted) and
    records the name in the run's config."""
    run = tmp_path / "run"
    code = main(["train", "--preset", "griffin-tiny", "--data-dir", str(corpus_dir), "--run-dir", str(run),
                 "--batch_size=2", "--seq_len=16", "--max_steps=2", "--eval_every=2", "--eval_batches=1",
                 "--warmup_steps=1", "--scan_backend=counted", "--no-progress"])
    assert code == 0
    assert len(counting_backend) > 0 and any(reverse for _, reverse in counting_backend)   # forward and backward
    assert json.loads((run / "config.json").read_text())["model"]["scan_backend"] == "counted"


def test_entry_point_backend(tmp_path, monkeypatch):
    """An installed package declares a backend in the "minigriffin.scan_backends" entry-point group: it is listed
    at once and imported on first use; a clash with a built-in is ignored with a warning."""
    (tmp_path / "plugin_scan.py").write_text("from minigriffin.scan.reference import scan as my_scan\n")
    dist = tmp_path / "plugin_scan-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: plugin-scan\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[minigriffin.scan_backends]\nplugin = plugin_scan:my_scan\n"
                                           "numba = plugin_scan:my_scan\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_entry_points_read", False)
    monkeypatch.setattr(registry, "_added", {})
    with pytest.warns(UserWarning, match="ignoring the scan backend entry point numba"):
        names = backend_names()
    assert names[-1] == "plugin" and names.count("numba") == 1
    assert "plugin_scan" not in sys.modules                      # listed without importing it
    x, a = np.ones((1, 3, 2)), np.full((1, 3, 2), 0.5)
    np.testing.assert_array_equal(linear_scan(x, a, backend="plugin")[0][0, :, 0], [1.0, 1.5, 1.75])  # exact


def test_entry_point_that_cannot_be_imported(monkeypatch):
    monkeypatch.setattr(registry, "_entry_points_read", True)
    monkeypatch.setattr(registry, "_added", {"broken": "no_such_module_xyz:scan"})
    with pytest.raises(BackendUnavailable, match="entry point 'no_such_module_xyz:scan'.*could not be loaded"):
        linear_scan(np.ones((1, 2, 1)), np.ones((1, 2, 1)), backend="broken")


def test_importing_minigriffin_does_not_import_hypothesis():
    code = "import sys, minigriffin, minigriffin.scan; print('hypothesis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False"]


def test_testing_without_hypothesis_says_how_to_install():
    code = ("import sys; sys.modules['hypothesis'] = None\n"
            "try:\n    import minigriffin.testing\nexcept ImportError as e:\n    print('ImportError:', e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 'ImportError: minigriffin.testing needs Hypothesis' in out and 'pip install "minigriffin[test]"' in out
