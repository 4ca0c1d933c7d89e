"""Devices: `train --device gpu` runs the same code on CuPy arrays, and checkpoints are device-independent.

Without a GPU (CI) these tests check the plumbing with a stand-in device: `device_namespace` is patched to
return a module whose `asarray` tags arrays as `DeviceArray` (an ndarray subclass; NumPy keeps the subclass
through ufuncs, slicing and zeros_like), so after training every parameter, moment and batch must still be a
DeviceArray (nothing was quietly computed on "the host"), and the checkpoint must hold plain ndarrays.
Tests marked `gpu` do the same with real CuPy arrays and skip, with the reason, where no GPU is usable.
"""

import types

import numpy as np
import pytest

import minigriffin.train as train_module
from minigriffin import xp as xp_module
from minigriffin.checkpoint import load_checkpoint, save_checkpoint
from minigriffin.cli import main
from minigriffin.data import load_corpus
from minigriffin.config import TrainConfig, make_config
from minigriffin.device import DeviceUnavailable, device_namespace
from minigriffin.scan import unavailable_reason
from minigriffin.train import Trainer, loss_and_grads
from minigriffin.tree import to_device, to_host, tree_leaves

GPU_REASON = unavailable_reason("cupy")
needs_gpu = pytest.mark.skipif(GPU_REASON is not None, reason=f"no usable GPU: {GPU_REASON}")


class DeviceArray(np.ndarray):
    """An ndarray that stands for "lives on the stand-in device"."""


FAKE_DEVICE = types.SimpleNamespace(asarray=lambda arr: np.array(arr).view(DeviceArray))   # copies, like cupy


def _small_trainer(run_dir, corpus_dir, device="cpu", steps=4, scan_backend="auto"):
    cfg = make_config("griffin-tiny", scan_backend=scan_backend, dtype="float64")
    tc = TrainConfig(batch_size=2, seq_len=16, max_steps=steps, eval_every=2, eval_batches=1, checkpoint_every=2,
                     warmup_steps=1, cpu_workers=1)         # a GPU step is one worker: the same sums on the CPU
    return Trainer(run_dir, cfg, tc, str(corpus_dir), load_corpus(corpus_dir), device=device)


@pytest.mark.skipif(GPU_REASON is None, reason="a GPU is usable here, so there is no error to show")
def test_train_on_gpu_without_one_names_the_cause(tmp_path, corpus_dir, capsys):
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        main(["train", "--preset", "griffin-tiny", "--data-dir", str(corpus_dir), "--run-dir", str(run),
              "--device", "gpu", "--max_steps=1", "--no-progress"])
    assert exc.value.code == 2
    message = capsys.readouterr().err
    assert "--device gpu is not usable here" in message and GPU_REASON in message, message
    assert not run.exists(), "a run folder was created for a run that cannot start"
    with pytest.raises(DeviceUnavailable, match="not usable here"):
        device_namespace("gpu")


def test_unknown_device_and_cpu_only_scan_backend_are_rejected(tmp_path, corpus_dir, monkeypatch):
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        _small_trainer(tmp_path / "a", corpus_dir, device="tpu")
    monkeypatch.setattr(train_module, "device_namespace", lambda device: FAKE_DEVICE)
    with pytest.raises(ValueError, match="scan_backend='reference' runs on the CPU"):
        _small_trainer(tmp_path / "b", corpus_dir, device="gpu", scan_backend="reference")


def test_to_device_and_to_host_move_trees_and_batches():
    tree = {"w": np.ones((2, 3), np.float32), "blocks": [{"b": np.zeros(3)}], "name": "kept"}
    moved = to_device(tree, FAKE_DEVICE)
    assert type(moved["w"]) is DeviceArray and type(moved["blocks"][0]["b"]) is DeviceArray
    assert moved["name"] == "kept"
    back = to_host(moved)
    assert type(back["w"]) is np.ndarray and back["w"].dtype == np.float32
    np.testing.assert_array_equal(back["w"], tree["w"])

    class FakeCupyArray:                                  # what to_host sees of a CuPy array: module + .get()
        __module__ = "cupy._core.core"

        def __init__(self, host):
            self.host, self.dtype = host, host.dtype

        def get(self):
            return self.host.copy()

    assert xp_module.is_device_array(FakeCupyArray(np.ones(2)))
    assert type(to_host(FakeCupyArray(np.ones(2)))) is np.ndarray


def test_checkpoints_are_written_from_host_arrays(tmp_path):
    """A checkpoint of device arrays stores NumPy arrays (to_host), loadable on a machine without the device."""
    class FakeCupyArray(np.ndarray):
        def get(self):
            return np.array(self)                          # a plain ndarray copy, as cupy's .get() is
    FakeCupyArray.__module__ = "cupy._fake"
    params = {"w": np.arange(6.0).reshape(2, 3).view(FakeCupyArray)}
    path = save_checkpoint(tmp_path / "c.npz", params=params, adam_m=params, adam_v=params, meta={"step": 1})
    loaded, m, v, meta = load_checkpoint(path)
    assert type(loaded["w"]) is np.ndarray
    np.testing.assert_array_equal(loaded["w"], np.arange(6.0).reshape(2, 3))


def _resume_and_finish(run_dir, max_steps, device="cpu"):
    trainer = Trainer.resume(run_dir, load_corpus, max_steps=max_steps, device=device)
    trainer.run(log=lambda *a, **k: None)
    return trainer


def test_training_stays_on_the_device_and_resumes_on_the_cpu(tmp_path, corpus_dir, monkeypatch):
    """2 steps on the stand-in device, checkpoint, resume on the CPU for 2 more, equal the same 2 + 2 done on
    the CPU throughout, bit for bit (float64, same code on both "devices", same data order). The
    accelerators are switched off: they take only plain NumPy arrays, so the stand-in device (like CuPy)
    runs the NumPy code, and the CPU side must run the same code for the sums to match bit for bit."""
    monkeypatch.setenv("MINIGRIFFIN_REFERENCE", "1")       # every accelerator off: the definitions only
    ref = _small_trainer(tmp_path / "cpu", corpus_dir, steps=2)
    ref.start_fresh()
    ref.run(log=lambda *a, **k: None)
    ref = _resume_and_finish(tmp_path / "cpu", 4)

    seen = []                                             # types of what each forward/backward was given

    def recording_loss_and_grads(params, batch, cfg, **kwargs):
        seen.extend(type(field).__name__ for field in batch)
        return loss_and_grads(params, batch, cfg, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(train_module, "device_namespace", lambda device: FAKE_DEVICE)
        patch.setattr(train_module, "loss_and_grads", recording_loss_and_grads)
        on_device = _small_trainer(tmp_path / "dev", corpus_dir, device="gpu", steps=2)
        on_device.start_fresh()
        assert all(type(p) is DeviceArray for _, p in tree_leaves(on_device.params))
        on_device.run(log=lambda *a, **k: None)
        for tree in (on_device.params, on_device.opt_state.m, on_device.opt_state.v):
            kinds = {type(p).__name__ for _, p in tree_leaves(tree)}
            assert kinds == {"DeviceArray"}, f"something left the device during training: {kinds}"
        assert set(seen) == {"DeviceArray"}, f"batches were not moved to the device: {set(seen)}"
    params, _, _, meta = load_checkpoint(tmp_path / "dev" / "checkpoints" / "last.npz")
    assert meta["saved_from_device"] == "gpu" and meta["step"] == 2
    assert {type(p) for _, p in tree_leaves(params)} == {np.ndarray}

    resumed = _resume_and_finish(tmp_path / "dev", 4, device="cpu")
    assert {type(p) for _, p in tree_leaves(resumed.params)} == {np.ndarray} and resumed.step == 4
    for (path, p), (_, q) in zip(tree_leaves(resumed.params), tree_leaves(ref.params)):
        np.testing.assert_array_equal(p, q, err_msg=path)    # float64, exact


@pytest.mark.gpu
@needs_gpu
def test_gpu_run_resumes_on_the_cpu_and_back(tmp_path, corpus_dir):
    """Real CuPy: 2 steps on the GPU, 2 on the CPU, 2 on the GPU again, against the same 2 + 2 + 2 on the CPU
    (the schedule follows max_steps). float64; GPU and CPU BLAS sum in different orders, so rtol 1e-9."""
    import cupy
    ref = _small_trainer(tmp_path / "cpu", corpus_dir, steps=2)
    ref.start_fresh()
    ref.run(log=lambda *a, **k: None)
    _resume_and_finish(tmp_path / "cpu", 4)
    ref = _resume_and_finish(tmp_path / "cpu", 6)

    def gpu_trainer(run_dir, steps):
        cfg = make_config("griffin-tiny", scan_backend="auto", dtype="float64")
        tc = TrainConfig(batch_size=2, seq_len=16, max_steps=steps, eval_every=2, eval_batches=1,
                         checkpoint_every=2, warmup_steps=1)
        return Trainer(run_dir, cfg, tc, str(corpus_dir), load_corpus(corpus_dir), device="gpu")

    run = tmp_path / "mixed"
    first = gpu_trainer(run, 2)
    first.start_fresh()
    first.run(log=lambda *a, **k: None)
    assert all(isinstance(p, cupy.ndarray) for _, p in tree_leaves(first.params))
    _resume_and_finish(run, 4, device="cpu")
    last = _resume_and_finish(run, 6, device="gpu")
    for (path, p), (_, q) in zip(tree_leaves(last.params), tree_leaves(ref.params)):
        np.testing.assert_allclose(cupy.asnumpy(p), q, rtol=1e-9, atol=1e-12, err_msg=path)
