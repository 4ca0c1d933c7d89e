"""What resuming a run needs besides its last checkpoint: metrics.jsonl trimmed to the checkpoint's step, and
the best validation loss so far, which best.npz may hold when a run was killed between its two saves.
"""

import json
import sys
from pathlib import Path

from minigriffin.checkpoint import CheckpointError, load_checkpoint
from minigriffin.files import atomic_write


def trim_metrics(path, step):
    """Keep only the metrics records of steps <= step (the checkpoint a run resumes from), atomically.

    A run killed after its last checkpoint has logged steps that the resumed run will log again, and a kill
    in the middle of a write leaves a half line that would swallow the next record. Both are dropped, so a
    resumed run's metrics.jsonl equals an uninterrupted run's."""
    path = Path(path)
    if not path.exists():
        return 0
    kept, dropped = [], 0
    for line in path.read_bytes().split(b"\n"):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            keep = int(record["step"]) <= step
        except (ValueError, KeyError, TypeError):       # a torn last line (UnicodeDecodeError is a ValueError)
            keep = False
        if keep:
            kept.append(line + b"\n")
        else:
            dropped += 1
    if dropped:
        atomic_write(path, kept)
    return dropped


def best_val_loss(ckpt_dir, from_last):
    """The best validation loss so far: best.npz can be newer than last.npz (a run killed after a best save but
    before its next last save), so take the lower of the two; an unreadable best.npz is reported, not trusted."""
    best_path = Path(ckpt_dir) / "best.npz"
    if not best_path.exists():
        return from_last
    try:
        from_best = float(load_checkpoint(best_path)[3]["best_val_loss"])
    except (CheckpointError, KeyError, TypeError, ValueError) as exc:
        print(f"warning: ignoring {best_path} for the best validation loss ({exc})", file=sys.stderr)
        return from_last
    return min(from_last, from_best)
