"""Ctrl-C in a training loop: the first asks to stop after the current step (so a checkpoint is saved), the
second stops at once. Installed only while the loop runs (minigriffin.train.Trainer.run)."""

import signal
import sys


class StopRequest:
    """SIGINT handler for the loop only: the first Ctrl-C asks to stop after this step, the second stops now."""

    def __init__(self):
        self.requested = False
        self.previous = None

    def __enter__(self):
        self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: finishing this step and saving a checkpoint (Ctrl-C again to stop at once)",
              file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.previous)
        return False
