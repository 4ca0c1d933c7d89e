"""Checkpoints: round trip, atomic replacement, and a clear error for every way a file can be bad."""

import json
import os

import numpy as np
import pytest

from minigriffin.checkpoint import FORMAT_VERSION, CheckpointError, load_checkpoint, save_checkpoint
from minigriffin.config import PRESETS
from minigriffin.optim import adamw_init
from minigriffin.params import init_params
from minigriffin.tree import tree_leaves


def _save(path, **meta):
    params = init_params(PRESETS["griffin-tiny"], np.random.default_rng(0))
    state = adamw_init(params)
    rng = np.random.default_rng(5)
    save_checkpoint(path, params=params, adam_m=state.m, adam_v=state.v,
                    meta={"step": 3, "data_rng_state": rng.bit_generator.state, **meta})
    return params


def test_round_trip_is_exact(tmp_path):
    params = _save(tmp_path / "last.npz")
    loaded, m, v, meta = load_checkpoint(tmp_path / "last.npz")
    for (name, a), (name2, b) in zip(tree_leaves(params), tree_leaves(loaded)):
        assert name == name2
        np.testing.assert_array_equal(a, b)                 # float32, exact
        assert a.dtype == b.dtype
    assert meta["step"] == 3 and meta["format_version"] == FORMAT_VERSION
    rng = np.random.default_rng()
    rng.bit_generator.state = meta["data_rng_state"]
    assert rng.integers(1 << 30) == np.random.default_rng(5).integers(1 << 30)
    assert os.listdir(tmp_path) == ["last.npz"]              # the temporary file was renamed away


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at .*nothere.npz"):
        load_checkpoint(tmp_path / "nothere.npz")


def test_truncated_file(tmp_path):
    _save(tmp_path / "c.npz")
    data = (tmp_path / "c.npz").read_bytes()
    (tmp_path / "c.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="c.npz is corrupt or truncated"):
        load_checkpoint(tmp_path / "c.npz")


def test_flipped_bytes_fail_the_checksum(tmp_path):
    """Change array values inside a valid zip: only the stored sha256 can tell."""
    params = _save(tmp_path / "c.npz")
    with np.load(tmp_path / "c.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["param/final_norm.scale"] = arrays["param/final_norm.scale"] + 1.0
    with open(tmp_path / "c.npz", "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(CheckpointError, match="do not match the checksum"):
        load_checkpoint(tmp_path / "c.npz")


def test_other_format_version(tmp_path):
    _save(tmp_path / "c.npz")
    with np.load(tmp_path / "c.npz") as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    meta["format_version"] = 99
    arrays["meta"] = np.array(json.dumps(meta))
    with open(tmp_path / "c.npz", "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(CheckpointError, match="format version 99; this minigriffin reads version 1"):
        load_checkpoint(tmp_path / "c.npz")


def test_not_a_checkpoint(tmp_path):
    with open(tmp_path / "x.npz", "wb") as f:
        np.savez(f, a=np.zeros(2))
    with pytest.raises(CheckpointError, match="not a minigriffin checkpoint"):
        load_checkpoint(tmp_path / "x.npz")
    (tmp_path / "y.npz").write_text("hello")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "y.npz")


def test_a_failed_write_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    """If writing dies half-way, last.npz is still the previous, loadable checkpoint."""
    _save(tmp_path / "last.npz")
    before = (tmp_path / "last.npz").read_bytes()

    def dying_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", dying_savez)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path / "last.npz")
    monkeypatch.undo()
    assert (tmp_path / "last.npz").read_bytes() == before
    load_checkpoint(tmp_path / "last.npz")
    assert os.listdir(tmp_path) == ["last.npz"]              # the torn temporary file was removed
