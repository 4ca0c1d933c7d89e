"""Files that a crash cannot tear: write to a temporary file in the same folder, fsync, then rename over.

Used for books (minigriffin.gutenberg), token caches (minigriffin.tokencache) and metrics.jsonl when a resumed
run trims it (minigriffin.resume). Checkpoints have their own writer with the same steps and its own error
messages (minigriffin.checkpoint).
"""

import contextlib
import os
import tempfile
import time
from pathlib import Path


def atomic_write(path, chunks):
    """Write an iterable of bytes to path atomically: temp file in the same folder, fsync, os.replace.

    A crash (or an exception raised by `chunks`) leaves either the old file or none, never a partial one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes files private (0600); books and caches follow the umask
        for attempt in range(5):
            try:
                os.replace(tmp, path)
                break
            except PermissionError:   # Windows: an antivirus or indexer holding the target; retry briefly
                if attempt == 4:
                    raise
                time.sleep(0.05 * 2**attempt)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if os.name == "posix":            # make the rename itself durable (best effort)
        with contextlib.suppress(OSError):
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
