"""The MPI side of data-parallel training (minigriffin.distributed): collectives that cannot hang forever, one
flat buffer for a step's gradients, and the fingerprints every rank must share with rank 0.

Everything goes through mpi4py's upper-case, buffer-based methods (Iallreduce, Ibcast, Iallgather on NumPy
arrays): the bytes go from array to array and nothing is pickled.

    ranks = Ranks.start(timeout=300)             # MPI.COMM_WORLD: ranks.rank, ranks.size, ranks.local_size
    ranks.allreduce(buffer, "step 7's gradients")   # in place, summed over the ranks
    ranks.bcast(buffer, what)                    # rank 0's values into every rank's buffer
    text = ranks.bcast_text(text, what)          # rank 0's str to every rank (the run's state as JSON)

Why not the blocking Allreduce: it waits forever for a rank that died without MPI noticing (a machine that
lost power, a process stopped or stuck in swap). So each collective starts non-blocking and this rank polls
it (Test) until it completes or `timeout` seconds pass; then RankTimeout names the exchange that never
finished, and minigriffin.distributed stops every rank with MPI_Abort. Polling drives MPI's progress as a
blocking call does, and spins one core while it waits, as MPICH's blocking calls do too.
"""

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from minigriffin.state import state_from_tree, state_to_tree
from minigriffin.tree import tree_leaves, unflatten
from minigriffin.xp import array_namespace, is_device_array

#: set to 1 when the MPI library takes CUDA device memory (CUDA-aware MPI): CuPy buffers then go to MPI as they
#: are; otherwise a GPU run's gradients are copied to the host, reduced there and copied back
CUDA_AWARE_VARIABLE = "MINIGRIFFIN_MPI_CUDA_AWARE"


class RankTimeout(RuntimeError):
    """Some rank did not take part in a collective within the timeout: it died, hung or lost its network."""


class Ranks:
    """This process's place among the ranks of MPI.COMM_WORLD, and timed collectives over them."""

    def __init__(self, comm, timeout):
        from mpi4py import MPI
        self.MPI, self.comm, self.timeout = MPI, comm, float(timeout)
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        local = comm.Split_type(MPI.COMM_TYPE_SHARED)                          # the ranks on this machine
        self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
        local.Free()
        self.cuda_aware = os.environ.get(CUDA_AWARE_VARIABLE, "") in ("1", "true", "yes")

    @classmethod
    def start(cls, timeout):
        """Initialise MPI (importing mpi4py does) and return the world's Ranks."""
        from mpi4py import MPI
        return cls(MPI.COMM_WORLD, timeout)

    def wait(self, request, what):
        """Poll a non-blocking request until it completes; RankTimeout after self.timeout seconds."""
        deadline = time.monotonic() + self.timeout
        while not request.Test():
            if time.monotonic() > deadline:
                raise RankTimeout(f"{what} did not complete within {self.timeout:g} s: another rank died, hung "
                                  f"or lost its network (if a step, an evaluation or a checkpoint really takes "
                                  f"that long, raise --distributed-timeout)")

    def allreduce(self, buffer, what):
        """buffer <- the sum of every rank's buffer, in place. A CuPy buffer goes through the host unless MPI
        is CUDA-aware (CUDA_AWARE_VARIABLE)."""
        if is_device_array(buffer) and not self.cuda_aware:
            host = buffer.get()                                   # one device -> host copy
            self.wait(self.comm.Iallreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM), what)
            buffer.set(host)                                      # and back
            return
        if is_device_array(buffer):             # MPI reads device memory directly: the kernels must be done
            array_namespace(buffer).cuda.get_current_stream().synchronize()
        self.wait(self.comm.Iallreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM), what)

    def bcast(self, buffer, what):
        """Rank 0's buffer into every rank's (a NumPy array of the same shape and dtype everywhere)."""
        self.wait(self.comm.Ibcast(buffer, root=0), what)

    def allgather(self, value, what):
        """(size,) int64 array of every rank's integer `value`, in rank order."""
        out = np.zeros(self.size, dtype=np.int64)
        self.wait(self.comm.Iallgather(np.array([value], dtype=np.int64), out), what)
        return out

    def bcast_text(self, text, what):
        """Rank 0's str to every rank (other ranks pass None): its length, then its UTF-8 bytes."""
        data = np.frombuffer(text.encode(), dtype=np.uint8) if self.rank == 0 else None
        length = np.array([0 if data is None else data.size], dtype=np.int64)
        self.bcast(length, what)
        data = data.copy() if data is not None else np.empty(int(length[0]), dtype=np.uint8)
        self.bcast(data, what)
        return data.tobytes().decode()

    def abort(self, code):
        """Stop every rank of the job now (MPI_Abort: mpiexec kills them and exits with `code`)."""
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(code)


class FlatGradients:
    """One contiguous buffer for a step's exchange: every gradient, then the weighted loss and the stop flag.

        buffer: (P + 2,) in the parameters' dtype, on their device
        buffer[o : o + n] = weight * grad of each parameter (n elements at offset o, in tree_leaves order)
        buffer[P]         = weight * loss      buffer[P + 1] = 1 if this rank got Ctrl-C, else 0
    After the Allreduce, `grads` (a tree of views into the buffer, no copy) is the whole batch's gradient.
    """

    def __init__(self, params):
        leaves = tree_leaves(params)
        self.xp = array_namespace(*(p for _, p in leaves))
        self.layout, offset = [], 0                 # [(dotted path, offset, size, shape)]
        for path, p in leaves:
            self.layout.append((path, offset, int(p.size), p.shape))
            offset += int(p.size)
        self.size = offset                          # P
        self.buffer = self.xp.zeros(offset + 2, dtype=np.result_type(*(p.dtype for _, p in leaves)))
        self.grads = unflatten({path: self.buffer[o:o + n].reshape(shape) for path, o, n, shape in self.layout})

    def pack(self, grads, weight, loss, stop):
        """Write weight * grads, weight * loss and the stop flag; grads None: this rank counted nothing."""
        found = None if grads is None else dict(tree_leaves(grads))
        for path, o, n, _ in self.layout:
            if found is None:
                self.buffer[o:o + n] = 0
            else:
                self.xp.multiply(found[path].reshape(-1), weight, out=self.buffer[o:o + n])
        self.buffer[self.size] = loss * weight
        self.buffer[self.size + 1] = 1.0 if stop else 0.0

    def loss_and_stop(self):
        """(the batch's mean loss, whether any rank asked to stop), read after the Allreduce."""
        loss, stop = (float(x) for x in self.buffer[self.size:])
        return loss, stop > 0


def flatten_trees(trees):
    """One host array holding every leaf of the trees (params, AdamW's m and v), in tree_leaves order."""
    leaves = [np.asarray(p.get() if is_device_array(p) else p).reshape(-1) for tree in trees
              for _, p in tree_leaves(tree)]
    return np.concatenate(leaves)


def fill_trees(flat, trees):
    """The inverse of flatten_trees: copy the flat array's values into the trees' leaves, in place."""
    offset = 0
    for tree in trees:
        for _, leaf in tree_leaves(tree):
            n = int(leaf.size)
            leaf[...] = array_namespace(leaf).asarray(flat[offset:offset + n].reshape(leaf.shape))
            offset += n


# ------------------------------------------------------------------------ the carried state (carry_windows > 1)
def _state_leaves(tree):
    """[(block index or None for the row documents, name, array)] of a state_to_tree tree, in a fixed order."""
    return [(i, k, a) for i, b in enumerate(tree["blocks"]) for k, a in b.items()] + [(None, "doc", tree["doc"])]


def gather_state(ranks, part, rows, batch_size, what):
    """The whole batch's carried ModelState on every rank, from each rank's state of its own rows (rows: this
    rank's slice of range(batch_size)): one Allreduce of a float64 buffer that is zero outside each rank's rows
    (float32 states and int64 document ids pass through float64 exactly)."""
    leaves = _state_leaves(state_to_tree(part))
    xp = array_namespace(*(a for _, _, a in leaves))
    per_row = [int(a.size // a.shape[0]) for _, _, a in leaves]
    buffer = xp.zeros(batch_size * sum(per_row), dtype=np.float64)
    full, offset = [], 0
    for (_, _, a), n in zip(leaves, per_row):
        view = buffer[offset:offset + batch_size * n].reshape((batch_size,) + a.shape[1:])   # (B, ...)
        view[rows] = a
        full.append(view)
        offset += batch_size * n
    ranks.allreduce(buffer, what)
    tree = {"blocks": [{} for _ in part.blocks], "doc": None}
    for (i, name, a), view in zip(leaves, full):
        if i is None:
            tree["doc"] = view.astype(a.dtype)
        else:
            tree["blocks"][i][name] = view.astype(a.dtype)
    return state_from_tree(tree, part.num_tokens, xp)


def carry_layout(tree):
    """What the other ranks need to receive a state tree: [[block index or -1, name, shape, dtype], ...]."""
    return [[-1 if i is None else i, k, list(a.shape), np.dtype(a.dtype).str] for i, k, a in _state_leaves(tree)]


def share_carry(ranks, tree, layout, what):
    """Rank 0's state tree (host arrays) into every rank, one Bcast per array; returns the tree on every rank.
    layout: carry_layout(tree), which the other ranks got with rank 0's set-up."""
    blocks = 1 + max((i for i, *_ in layout), default=-1)
    out = {"blocks": [{} for _ in range(blocks)], "doc": None}
    for i, name, shape, dtype in layout:
        buffer = np.ascontiguousarray(tree["doc"] if i < 0 else tree["blocks"][i][name]) if ranks.rank == 0 \
            else np.empty(shape, dtype=np.dtype(dtype))
        ranks.bcast(buffer, what)
        if i < 0:
            out["doc"] = buffer
        else:
            out["blocks"][i][name] = buffer
    return out


# ------------------------------------------------------------------------------------- fingerprints
def code_fingerprint():
    """sha256 of minigriffin's source files (.py, and the CUDA sources) and the Python and NumPy versions."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256(f"python {sys.version_info[:3]}|numpy {np.__version__}".encode())
    for path in sorted(root.rglob("*")):
        if path.suffix in (".py", ".cu", ".h") and "__pycache__" not in path.parts:
            h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def text_fingerprint(value):
    """sha256 of a JSON-able value (a rank's command line as a dict of configs)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def corpus_fingerprint(corpus, samples=1 << 20):
    """sha256 of each split's length, document starts and names, and of up to `samples` tokens spread evenly
    over it: cheap for a corpus of any size, and different for different books or tokenizers."""
    h = hashlib.sha256()
    for split in corpus:
        n = int(split.tokens.shape[0])
        h.update(f"{split.name}|{n}|{'|'.join(split.names)}".encode())
        h.update(np.ascontiguousarray(split.doc_starts, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(split.tokens[::max(1, n // samples)]).tobytes())
    return h.hexdigest()


PARTS = {"code": "its minigriffin (source files, or Python or NumPy version) differs from rank 0's: install the "
                 "same version on every machine",
         "config": "its command line asks for a different run than rank 0's: give every rank the same arguments",
         "data": "its books differ from rank 0's (data folder or tokenizer): every machine needs the same files"}


def agree(ranks, fingerprints, failed=False):
    """Check, on every rank at once, that each rank's fingerprints ({part: sha256 hex}, parts from PARTS) are
    rank 0's and that no rank `failed` to set up. Returns None if so; otherwise raises on every rank: rank 0 a
    ValueError naming each differing rank and part (the one line the user reads), the others SystemExit(2)."""
    names = sorted(fingerprints)
    mine = np.frombuffer(b"".join(bytes.fromhex(fingerprints[p]) for p in names), dtype=np.uint8)
    rank0 = mine.copy()
    ranks.bcast(rank0, f"the {' and '.join(names)} check at start-up")
    code = sum(1 << i for i, p in enumerate(names) if not np.array_equal(mine[32 * i:32 * i + 32],
                                                                           rank0[32 * i:32 * i + 32]))
    codes = ranks.allgather(code | (1 << len(names) if failed else 0), "the start-up check")
    if not codes.any():
        return
    if ranks.rank != 0:
        raise SystemExit(2)
    problems = [f"rank {r} could not start (its error is above)" if c >> len(names) & 1 else
                f"rank {r}: " + "; ".join(PARTS[p] for i, p in enumerate(names) if c >> i & 1)
                for r, c in enumerate(codes) if c]
    raise ValueError("the MPI ranks disagree, so none of them trains: " + "; ".join(problems))
