"""Where training windows come from, and training with the state carried from one window to the next.

By default (TrainConfig.carry_windows = 1) every training window of seq_len = L tokens is drawn on its own
and the model starts it from a zero state, as the paper trains. A model trained that way never sees a state
built over more than L tokens, and past L at evaluation it meets states it was never trained on: the
laptop Hawk that learned to use its state got *worse* with context beyond L (docs/results.md, issue 16).

With carry_windows = K > 1, each batch row reads K consecutive windows of the token stream, and the state
at the end of one window (the RG-LRU's h, the Conv1D's last inputs, the attention window's keys and values:
minigriffin.state) is where the next one starts. The gradient stops at the window boundary (the carried
state is a constant of the next step's backward: truncated backpropagation through time, as in LSTM language
models), so a step costs what it did, while the forward pass sees states up to K * L tokens old. A document
start inside a window still resets the state (segment_pos == 0), as always. Every K steps the rows jump to
fresh random places of the stream, drawn from the data RNG, and start again from zeros.

    sampler = WindowSampler(split, cfg, batch_size, seq_len, carry_windows)
    batch, state = sampler.next(step, rng)        # state: None when carry_windows == 1
    ... loss, grads, new_state = loss_and_grads(params, batch, cfg, state=state)
    sampler.carry(new_state)

A checkpoint saves what the sampler holds mid-group (checkpoint_arrays / restore), so a resumed run reads
the same windows from the same states as an uninterrupted one.
"""

import numpy as np

from minigriffin.data import batch_at, check_batch_args, sample_batch
from minigriffin.state import init_state, state_from_tree, state_to_tree


class WindowSampler:
    """Draws each training step's Batch; with carry_windows > 1 also holds the state carried between steps."""

    def __init__(self, split, cfg, batch_size, seq_len, carry_windows=1, xp=np):
        self.split, self.cfg, self.xp = split, cfg, xp
        self.B, self.T, self.K = batch_size, seq_len, carry_windows
        N = check_batch_args(split, batch_size, seq_len)
        if carry_windows > 1 and N < carry_windows * seq_len + 1:
            raise ValueError(f"{split.name} split has {N} tokens, fewer than carry_windows * seq_len + 1 = "
                             f"{carry_windows * seq_len + 1}: use a smaller carry_windows or seq_len")
        self.starts = None          # (B,) stream offset where each row's group of K windows began
        self.state = None           # ModelState carried into the next window, or None
        self.group_start = 0        # the step that read the group's first window

    def next(self, step, rng):
        """(Batch, state to start it from) for training step `step` (0-based): state is None when
        carry_windows == 1, a fresh zero state at the first window of each group of K."""
        if self.K == 1:                                 # independent windows: exactly sample_batch
            return sample_batch(self.split, self.B, self.T, rng), None
        if self.starts is None or step - self.group_start >= self.K:     # a new group of K windows
            N = self.split.tokens.shape[0]
            self.starts = rng.integers(0, N - self.K * self.T, size=self.B)     # (B,) in [0, N - K T - 1]
            self.group_start = step
            self.state = init_state(self.cfg, self.B, self.xp)
        idx = self.starts[:, None] + (step - self.group_start) * self.T + np.arange(self.T)   # (B, T)
        return batch_at(self.split, idx), self.state

    def carry(self, new_state):
        """Keep the state after this step's window for the next one."""
        self.state = new_state

    def checkpoint_arrays(self, step):
        """(meta dict, array tree or None) to save at `step` (steps done): nothing unless mid-group."""
        if self.K == 1 or self.starts is None or step - self.group_start >= self.K:
            return {}, None
        meta = {"carry_starts": [int(s) for s in self.starts], "carry_group_start": self.group_start,
                "carry_num_tokens": self.state.num_tokens}
        return meta, state_to_tree(self.state)

    def restore(self, meta, arrays):
        """Continue a group that a checkpoint saved mid-way (the inverse of checkpoint_arrays)."""
        if arrays is None or "carry_starts" not in meta:
            return
        self.starts = np.asarray(meta["carry_starts"], dtype=np.int64)
        self.group_start = int(meta["carry_group_start"])
        self.state = state_from_tree(arrays, meta["carry_num_tokens"], self.xp)
