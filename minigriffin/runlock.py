"""One trainer per run folder: RUN/.lock says who owns the run.

Two trainers on one folder would append to the same metrics.jsonl, overwrite each other's checkpoints and trim
each other's records on resume. So the Trainer takes this lock before it reads or changes anything in the run
folder (Trainer.start_fresh and Trainer.resume) and releases it when Trainer.run ends, however it ends: finished,
Ctrl-C, an error. A second trainer is refused with a message naming the first (pid, host, start time, command).

A lock left behind by a trainer that was killed (SIGKILL, the OOM killer, a power cut) is stale: its pid no longer
runs on this host (or runs again as a newer process, or is a zombie), so the next trainer takes it over and says
so. A lock written on another host cannot be checked from here and is never taken over: the message says to
delete the file once that trainer is known to have stopped. The same goes for a lock file that cannot be read.

The file is created with O_CREAT | O_EXCL, atomic on local filesystems and NFSv3+: of two trainers starting at
once, exactly one creates it. A stale lock is moved aside with one os.rename before a new one is created, so two
trainers taking over the same stale lock cannot both win.
"""

import datetime
import json
import os
import socket
import sys
import time
import uuid
import weakref
from pathlib import Path

LOCK_NAME = ".lock"

_HELD = weakref.WeakValueDictionary()   # token -> the RunLock of this process that holds it


class RunLockedError(RuntimeError):
    """The run folder is in use by another trainer, or its lock cannot be checked. The message says which."""


def _process_start(pid):
    """(state, start time in clock ticks since boot) of pid from Linux's /proc, or None where unavailable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rindex(b")") + 2:].split()     # after "pid (command) ": field 3 (state) onwards
        return fields[0].decode(), int(fields[19])        # field 22 is the start time
    except (OSError, ValueError, IndexError):
        return None


def _alive(holder):
    """True if the trainer that wrote holder still runs, False if it certainly does not, None if this host
    cannot tell (another host, or no way to probe a pid here)."""
    pid = holder.get("pid")
    if holder.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return None
    if pid == os.getpid():                  # this process: alive while the RunLock that took it is
        return holder.get("token") in _HELD
    if os.name != "posix":                  # on Windows os.kill(pid, 0) would send Ctrl-C, not probe
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:                 # it runs, as another user
        pass
    proc = _process_start(pid)
    if proc is not None:
        state, start = proc
        if state == "Z":                    # killed, not yet reaped by its parent
            return False
        if holder.get("proc_start") is not None and start != holder["proc_start"]:
            return False                    # the pid now belongs to a newer process
    return True


def _command():
    """This process's command line, e.g. 'minigriffin train --resume runs/x' (also under python -m)."""
    if not sys.argv or not sys.argv[0]:
        return ""
    prog = Path(sys.argv[0])
    return " ".join([prog.parent.name if prog.name == "__main__.py" else prog.name, *sys.argv[1:]])


def _who(holder):
    return (f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}, "
            f"running {holder.get('command')!r}")


def _remove_if_ours(path, token, pid):
    """Delete the lock file if it is still the one this process wrote (never a lock someone took over)."""
    if os.getpid() != pid:                  # a forked child inherits the object, not the lock
        return
    try:
        if json.loads(Path(path).read_text(encoding="utf-8")).get("token") == token:
            os.unlink(path)
    except (OSError, ValueError, AttributeError):
        pass


class RunLock:
    """RUN/.lock while held. `with RunLock(run_dir): ...`, or acquire() ... release().

    acquire() raises RunLockedError (a RuntimeError) naming the holder when another live trainer holds the
    folder. A RunLock that is dropped without release() (an exception between a Trainer's setup and its run)
    releases the file when it is garbage-collected, at the latest when the process exits normally."""

    def __init__(self, run_dir, *, log=None):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        self.token = None
        self._finalizer = None

    @property
    def held(self):
        return self.token is not None

    def acquire(self):
        if self.held:
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        proc = _process_start(os.getpid())
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                "command": _command(),
                "proc_start": proc[1] if proc else None, "token": token}
        for attempt in range(20):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                self._take_over_if_stale(attempt)
                continue
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(json.dumps(info) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
            except BaseException:
                os.unlink(self.path)
                raise
            self.token = token
            _HELD[token] = self
            self._finalizer = weakref.finalize(self, _remove_if_ours, self.path, token, os.getpid())
            return self
        raise RunLockedError(f"could not lock {self.run_dir}: {self.path} keeps being taken by other trainers")

    def _take_over_if_stale(self, attempt):
        """Raise RunLockedError if the lock's holder runs (or cannot be checked); else move the stale lock aside."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return                                         # released meanwhile: try again
        except (OSError, ValueError) as exc:
            text, problem = None, f"{type(exc).__name__}: {exc}"
        try:
            holder = json.loads(text) if text is not None else None
        except ValueError:
            holder, problem = None, f"not JSON: {text[:60]!r}"
        if holder is not None and not isinstance(holder, dict):
            holder, problem = None, f"not a lock: {text[:60]!r}"
        if holder is None:
            if attempt < 5:                                # its writer may be between creating and writing it
                time.sleep(0.05)
                return
            raise RunLockedError(f"{self.run_dir} is locked by {self.path}, which cannot be read ({problem}); if "
                                 f"no trainer is using this run folder, delete {self.path} and try again")
        alive = _alive(holder)
        if alive is None:
            raise RunLockedError(f"run folder {self.run_dir} is locked by a trainer on another host ({_who(holder)})"
                                 f" and this host cannot tell whether it still runs; if it has stopped, delete "
                                 f"{self.path} and try again")
        if alive:
            raise RunLockedError(f"run folder {self.run_dir} is in use by another trainer: {_who(holder)}; wait "
                                 f"for it to finish or stop it (lock file {self.path})")
        aside = self.path.with_name(f"{LOCK_NAME}.stale-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(self.path, aside)                    # atomic: one taker moves this very file
        except FileNotFoundError:
            return
        try:
            if aside.read_text(encoding="utf-8") != text:  # a new lock appeared in between: put it back
                try:
                    os.link(aside, self.path)
                except OSError:
                    pass
                return
        finally:
            os.unlink(aside)
        self.log(f"taking over the lock of pid {holder.get('pid')} (started {holder.get('started')}, running "
                 f"{holder.get('command')!r}), which is no longer running: {self.path}")

    def release(self):
        if self.token is None:
            return
        token, self.token = self.token, None
        _HELD.pop(token, None)
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        _remove_if_ours(self.path, token, os.getpid())

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
