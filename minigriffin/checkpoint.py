"""Checkpoints that survive crashes: atomic writes, a format version, a checksum, clear errors.

A checkpoint is one .npz file (numpy's zip of arrays, loaded with allow_pickle=False) holding
    param/<dotted path>, adam_m/<dotted path>, adam_v/<dotted path>   the arrays
    carry/<dotted path>                  the state carried into the next training window, when a run trains
                                         with carry_windows > 1 and stopped mid-group (minigriffin.carry)
    meta                                                                JSON text: format version, step,
        configs, every RNG state, the best validation loss, and a sha256 of all the arrays above
It is written to a temporary file in the same folder (a unique name, .last.npz.XXXX.tmp), flushed and fsynced,
then renamed over the old one (os.replace is atomic on POSIX and Windows), and the folder is fsynced: a crash or
a power cut leaves either the old checkpoint or the new one, never a torn file. A write that fails (a full disk)
removes its temporary file and raises CheckpointWriteError, an OSError naming the file and the cause; a
temporary file left by a killed write is deleted by the next successful save of the same checkpoint.
Checkpoints hold host (NumPy) arrays only: a run trained with --device gpu resumes on the CPU and back.
"""

import contextlib
import errno
import hashlib
import json
import os
import tempfile
import zipfile
from glob import escape as glob_escape
from pathlib import Path

import numpy as np

from minigriffin.config import config_from_dict
from minigriffin.tree import to_host, tree_leaves, unflatten

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt or written by an incompatible version."""


class CheckpointWriteError(OSError):
    """A checkpoint that could not be written (disk full, no permission, ...). An OSError with the errno of the
    cause; its message names the file and the cause and says that the previous checkpoint is unchanged."""


def _digest(arrays):
    h = hashlib.sha256()
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(arr.dtype).encode() + str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _flatten(prefix, tree):
    """{"prefix/dotted.path": NumPy array}: device (CuPy) arrays are copied to the host, so a checkpoint is the
    same file whichever device trained it, and any device can resume it (the Trainer moves it back)."""
    return {f"{prefix}/{path}": to_host(arr) for path, arr in tree_leaves(tree)}


def _write_error(path, exc):
    """CheckpointWriteError for an OSError raised while writing path: the file, the cause, what is left."""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    reason = reason[:1].lower() + reason[1:]
    kept = f"the previous {path.name} is unchanged" if path.exists() else f"no {path.name} was written"
    full = exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))     # disk full, or over quota
    hint = "; free some disk space, then resume the run" if full else ""
    error = CheckpointWriteError(f"could not save checkpoint {path}: {reason} (no partial file is left; "
                                 f"{kept}){hint}")
    error.errno = exc.errno
    return error


def _remove_stale_temporaries(path, before_ns):
    """Delete temporary files of path left by writes that were killed (modified before before_ns)."""
    stale = [*path.parent.glob(f".{glob_escape(path.name)}.*.tmp"), path.with_name(path.name + ".tmp")]
    for tmp in stale:                       # (name.tmp: what versions before unique names left)
        with contextlib.suppress(OSError):
            if tmp.stat().st_mtime_ns < before_ns:
                tmp.unlink()


def save_checkpoint(path, *, params, adam_m, adam_v, meta, carry=None):
    """Write a checkpoint atomically. meta: JSON-able dict (step, configs, RNG states, ...); carry: an optional
    tree of arrays (minigriffin.carry's carried state).

    Raises CheckpointWriteError (an OSError) naming the file if it cannot be written; the previous checkpoint at
    path is then left exactly as it was and no temporary file remains."""
    path = Path(path)
    arrays = {**_flatten("param", params), **_flatten("adam_m", adam_m), **_flatten("adam_v", adam_v)}
    if carry is not None:
        arrays.update(_flatten("carry", carry))
    meta = {**meta, "format_version": FORMAT_VERSION, "sha256": _digest(arrays)}
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        started_ns = os.fstat(fd).st_mtime_ns       # the filesystem's clock: older temporaries are leftovers
        if hasattr(os, "fchmod"):                  # mkstemp makes it private (0600); checkpoints follow the umask
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:              # a file object, so numpy does not append ".npz"
            np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except BaseException as exc:                    # a full disk, Ctrl-C twice, ...: no partial file stays
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, CheckpointWriteError):
            raise _write_error(path, exc) from exc
        raise
    try:                                            # make the rename itself durable (POSIX only)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    _remove_stale_temporaries(path, started_ns)
    return path


def load_checkpoint(path, with_carry=False):
    """Read and verify a checkpoint: returns (params, adam_m, adam_v, meta), and the carried state's tree (or
    None) as a fifth item when with_carry. Raises CheckpointError naming the
    file and the problem (missing, not a checkpoint, truncated, checksum mismatch, other format version)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "meta" not in data.files:
                raise CheckpointError(f"{path} is not a minigriffin checkpoint (no 'meta' entry)")
            meta = json.loads(str(data["meta"]))
            arrays = {name: data[name] for name in data.files if name != "meta"}
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is corrupt or truncated ({type(exc).__name__}: {exc})") from exc
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {version}; this minigriffin reads version "
                              f"{FORMAT_VERSION}")
    if meta.get("sha256") != _digest(arrays):
        raise CheckpointError(f"{path} is corrupt: its arrays do not match the checksum stored with them")
    groups = {"param": {}, "adam_m": {}, "adam_v": {}, "carry": {}}
    for name, arr in arrays.items():
        group, _, dotted = name.partition("/")
        if group not in groups:
            raise CheckpointError(f"{path} has an unexpected entry {name!r}")
        groups[group][dotted] = arr
    loaded = unflatten(groups["param"]), unflatten(groups["adam_m"]), unflatten(groups["adam_v"]), meta
    if with_carry:
        return (*loaded, unflatten(groups["carry"]) if groups["carry"] else None)
    return loaded


def load_run(run_dir, checkpoint="best"):
    """(params, model config, meta) of checkpoints/<checkpoint>.npz in a run folder ("best" or "last"), for
    sampling and evaluation; the model is rebuilt exactly as it was trained."""
    params, _, _, meta = load_checkpoint(Path(run_dir) / "checkpoints" / f"{checkpoint}.npz")
    return params, config_from_dict(meta["model_config"]), meta
