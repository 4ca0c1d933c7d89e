"""Data parallelism on the CPU: split a batch's rows between threads, add up their gradients.

Why: NumPy runs every elementwise operation (GeLU, the RG-LRU's gates, RMSNorm, softmax) on one core, and only
the matmuls use OpenBLAS's threads, so on two cores a training step would leave one core idle for most of its
time. Splitting the batch is the simplest fix that uses every core for everything: each thread runs the
ordinary forward and backward (the same code, nothing rewritten) on its share of the rows, with OpenBLAS and
Numba limited to one thread each so that the threads do not fight over the cores, and the gradients are
added at the end. NumPy and Numba (nogil kernels) release the GIL during their work, so the
threads really do run at the same time. docs/benchmarks.md has the measurements.

The result is the same mean loss and gradient as the whole batch in one go (tested), up to the order of the
floating-point sums: each share's loss is weighted by the positions it counts, n_i / N, before its backward.
So a run's numbers depend slightly on how many workers it used; resume is bit-exact for the same count.

loss_and_grads is registered in minigriffin/fast/__init__.py as the fast version of train.loss_and_grads
for NumPy batches of more than one row with workers > 1; each share runs train.weighted_loss_and_grads,
the definition. This is the CPU's answer; on a GPU one device already runs every operation in parallel.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from minigriffin.state import concat_states, state_rows
from minigriffin.train import weighted_loss_and_grads
from minigriffin.tree import tree_leaves

_POOLS = {}                     # workers -> ThreadPoolExecutor, made once and reused (threads are cheap to keep)
_BLAS = None                    # threadpoolctl's controller, found once (it scans the loaded libraries)


def _init_worker():
    import numba
    numba.set_num_threads(1)    # thread-local: this worker's Numba kernels run on its own core only


def _pool(workers):
    if workers not in _POOLS:
        _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="minigriffin-dp", initializer=_init_worker)
    return _POOLS[workers]


def _one_blas_thread():
    """A context in which OpenBLAS (and any other BLAS) uses one thread, restored afterwards."""
    global _BLAS
    from threadpoolctl import ThreadpoolController
    if _BLAS is None:
        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


def row_shares(batch_size, workers):
    """[slice] of batch rows, as even as possible: 8 rows, 3 workers -> 3, 3, 2."""
    workers = max(1, min(workers, batch_size))
    bounds = [batch_size * i // workers for i in range(workers + 1)]
    return [slice(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]


def loss_and_grads(params, batch, cfg, workers=1, state=None):
    """train.loss_and_grads computed by `workers` threads, each on a share of the batch's rows.
    batch: a NamedTuple of (B, T) arrays with a `mask` field (None: every position counts); state: None, or
    the ModelState carried into these rows (each share carries its own rows; the new states are joined)."""
    step = weighted_loss_and_grads
    B, T = batch.tokens.shape
    shares = []
    for rows in row_shares(B, workers):
        part = type(batch)(*(None if field is None else field[rows] for field in batch))
        counted = (rows.stop - rows.start) * T if batch.mask is None else int(np.count_nonzero(part.mask))
        if counted or state is not None:            # a share with nothing to count adds nothing (but a carried
            shares.append((part, counted, None if state is None else state_rows(state, rows)))   # state moves on)
    total = sum(counted for _, counted, _ in shares)
    if total == 0:
        raise ValueError("the mask excludes every position of the batch, so the mean loss is undefined")
    if len(shares) == 1:
        loss, grads, new_state = step(params, shares[0][0], cfg, 1.0, shares[0][2])
    else:
        with _one_blas_thread():
            results = list(_pool(len(shares)).map(
                lambda share: step(params, share[0], cfg, share[1] / total, share[2]), shares))
        loss = sum(share_loss * counted / total for (share_loss, _, _), (_, counted, _) in zip(results, shares))
        grads = results[0][1]
        for _, more, _ in results[1:]:                  # in a fixed order: the same workers give the same sums
            for (_, g), (_, h) in zip(tree_leaves(grads), tree_leaves(more)):
                g += h
        new_state = None if state is None else concat_states([r[2] for r in results])
    return (loss, grads) if state is None else (loss, grads, new_state)
