"""Training data: a byte tokenizer, a corpus of books cached as memmapped tokens, and random windows.

A corpus is a folder of UTF-8 .txt files, one document (book) each: either `train/` and `valid/` subfolders
(the books corpus, e.g. what `minigriffin.gutenberg.download_books` writes), or a flat folder that
`load_corpus` splits by book. The documents of a split are concatenated into one token stream, written once
to a cache folder and memmapped (minigriffin.tokencache), so a corpus costs no RAM and a second load reads no
book.

Training windows are packed across documents, as in Griffin (De, Smith et al. 2024): `segment_pos` restarts
at 0 at each document start (the RG-LRU and the attention reset there), and `mask` drops the one target per
boundary that would ask a book's last byte to predict the next book's first byte.
Shape letters: docs/conventions.md (B batch, T sequence length, N tokens in a split).
"""

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from minigriffin.tokencache import cached_split


class ByteTokenizer:
    """UTF-8 bytes as tokens (vocab 256): no training, no unknown tokens, lossless for any text."""

    name = "utf8-bytes"
    vocab_size = 256

    def encode(self, text):
        """str -> (N,) uint8, the UTF-8 bytes of text."""
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy()          # (N,)

    def decode(self, tokens):
        """(N,) integer tokens in [0, 256) -> str. Invalid UTF-8 (e.g. a model sample) becomes U+FFFD."""
        tokens = np.asarray(tokens)                                                # (N,)
        if tokens.size and (tokens.dtype.kind not in "iu" or tokens.min() < 0 or tokens.max() > 255):
            raise ValueError(f"byte tokens must be integers in [0, 255], got dtype {tokens.dtype} "
                             f"with range [{tokens.min()}, {tokens.max()}]")
        return tokens.astype(np.uint8).tobytes().decode("utf-8", errors="replace")


TOKENIZER_FILE = "tokenizer.json"      # in a run folder: the BPE tokenizer the run was trained with


def load_tokenizer(path=None):
    """The tokenizer a command uses: ByteTokenizer for None, else the BPE tokenizer saved at path
    (`minigriffin bpe`, minigriffin.bpe.BPETokenizer.save)."""
    if path is None:
        return ByteTokenizer()
    from minigriffin.bpe import BPETokenizer
    return BPETokenizer.load(path)


def run_tokenizer(run_dir):
    """The tokenizer a run was trained with: its run_dir/tokenizer.json, or bytes when it has none."""
    path = Path(run_dir) / TOKENIZER_FILE
    return load_tokenizer(path) if path.is_file() else ByteTokenizer()


class TokenSplit(NamedTuple):
    """One split of a corpus: all its documents concatenated into one token stream."""

    tokens: np.ndarray      # (N,) read-only np.memmap (uint8 for bytes) of every document, back to back
    doc_starts: np.ndarray  # (n_docs + 1,) int64 start offset of each document in tokens, then N
    names: tuple            # (n_docs,) file name of each document
    name: str = "split"     # "train" or "valid", for error messages


class Corpus(NamedTuple):
    train: TokenSplit
    valid: TokenSplit


class Batch(NamedTuple):
    tokens: np.ndarray       # (B, T) int64 inputs: stream[s : s + T]
    targets: np.ndarray      # (B, T) int64 next tokens: stream[s + 1 : s + T + 1]
    segment_pos: np.ndarray  # (B, T) int64 position of each input within its own document (0 = document start)
    mask: np.ndarray         # (B, T) bool, False where the target is the first token of the next document


def default_cache_dir():
    """$MINIGRIFFIN_CACHE, else $XDG_CACHE_HOME/minigriffin, else ~/.cache/minigriffin."""
    if os.environ.get("MINIGRIFFIN_CACHE"):
        return Path(os.environ["MINIGRIFFIN_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "minigriffin"
    return Path.home() / ".cache" / "minigriffin"


def _list_books(folder):
    """The sorted .txt files of folder (hidden files ignored); ValueError naming the folder if there are none."""
    if not folder.exists():
        raise ValueError(f"data folder {folder} does not exist")
    if not folder.is_dir():
        raise ValueError(f"data folder {folder} is not a folder; pass the folder that holds the .txt books")
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    if not entries:
        raise ValueError(f"data folder {folder} is empty: put UTF-8 .txt files in it, one document each")
    books = [p for p in entries if p.is_file() and p.suffix.lower() == ".txt"]
    if not books:
        found = ", ".join(p.name for p in entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise ValueError(f"data folder {folder} has no .txt files (found: {found})")
    return books


def load_corpus(data_dir, *, cache_dir=None, valid_fraction=0.1, tokenizer=None):
    """Load a folder of UTF-8 .txt books as train and valid token streams (memmapped from a cache).

    data_dir: a folder with `train/` and `valid/` subfolders of .txt files, or a flat folder of .txt files,
    split by book: in sorted name order, every k-th book (k = round(1 / valid_fraction)) goes to valid, and
    at least one book goes to each split. Bytes are used as they are (no line-ending or BOM changes).
    cache_dir: where `tokens/` goes (default `default_cache_dir()`); an entry is reused while the books'
    names, sizes, mtimes and ctimes are unchanged and its checksum matches. tokenizer: default `ByteTokenizer()`.
    Returns Corpus(train, valid) of TokenSplit.
    """
    tokenizer = ByteTokenizer() if tokenizer is None else tokenizer
    data_dir = Path(data_dir).expanduser()
    if not 0 < valid_fraction < 1:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    has_train, has_valid = (data_dir / "train").is_dir(), (data_dir / "valid").is_dir()
    if has_train or has_valid:
        if not (has_train and has_valid):
            missing = "valid" if has_train else "train"
            raise ValueError(f"data folder {data_dir} has {'train' if has_train else 'valid'}/ but no "
                             f"{missing}/ subfolder; add it, or put all .txt files directly in {data_dir}")
        train_files, valid_files = _list_books(data_dir / "train"), _list_books(data_dir / "valid")
    else:
        books = _list_books(data_dir)
        if len(books) < 2:
            raise ValueError(f"data folder {data_dir} has {len(books)} .txt file; at least 2 are needed to "
                             f"split by book into train and valid (or use train/ and valid/ subfolders)")
        k = max(2, round(1 / valid_fraction))
        is_valid = [(i + 1) % k == 0 for i in range(len(books))]
        if not any(is_valid):
            is_valid[-1] = True                     # fewer than k books: the last one is the valid split
        train_files = [p for p, v in zip(books, is_valid) if not v]
        valid_files = [p for p, v in zip(books, is_valid) if v]
    cache_root = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()
    return Corpus(TokenSplit(*cached_split(train_files, cache_root, tokenizer, "train"), "train"),
                  TokenSplit(*cached_split(valid_files, cache_root, tokenizer, "valid"), "valid"))


def load_eval_books(folder, *, cache_dir=None, tokenizer=None):
    """The books to evaluate on, from a folder a user names (`--eval-data-dir`): its valid/ books when it has
    train/ and valid/ subfolders (the held-out ones), else every .txt file directly in it. A TokenSplit."""
    tokenizer = ByteTokenizer() if tokenizer is None else tokenizer
    folder = Path(folder).expanduser()
    books = _list_books(folder / "valid" if (folder / "valid").is_dir() else folder)
    cache_root = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()
    return TokenSplit(*cached_split(books, cache_root, tokenizer, "eval"), "eval")


def check_batch_args(split, batch_size, seq_len):
    """Validate sizes against the split; ValueError naming both numbers when the split is too short."""
    for arg, value in (("batch_size", batch_size), ("seq_len", seq_len)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{arg} must be a positive integer, got {value!r}")
    N = int(split.tokens.shape[0])
    if split.doc_starts[0] != 0 or split.doc_starts[-1] != N or np.any(np.diff(split.doc_starts) <= 0):
        raise ValueError(f"{split.name}: doc_starts must rise strictly from 0 to len(tokens) = {N}")
    if N < seq_len + 1:
        raise ValueError(f"{split.name} split has {N} tokens, shorter than one window of seq_len + 1 = "
                         f"{seq_len + 1} tokens (inputs plus the next-token target); use a smaller seq_len "
                         f"or more text")
    return N


def sample_batch(split, batch_size, seq_len, rng):
    """B windows of T tokens with their next-token targets, drawn uniformly from the split's stream.

    split: TokenSplit; rng: np.random.Generator, the only source of randomness (so saving
    rng.bit_generator.state saves the data position). Returns Batch of (B, T) arrays.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (e.g. np.random.default_rng(0)), "
                        f"got {type(rng).__name__}")
    B, T = batch_size, seq_len
    N = check_batch_args(split, B, T)
    starts = rng.integers(0, N - T, size=B)                          # (B,) uniform in [0, N - T - 1]
    return batch_at(split, starts[:, None] + np.arange(T))


def batch_at(split, idx):
    """The Batch whose inputs are the split's tokens at stream offsets idx: (B, T) ints with idx + 1 < N."""
    tokens = np.array(split.tokens[idx], dtype=np.int64)             # (B, T)
    targets = np.array(split.tokens[idx + 1], dtype=np.int64)        # (B, T)
    doc = np.searchsorted(split.doc_starts, idx, side="right") - 1   # (B, T) document holding each input
    segment_pos = idx - split.doc_starts[doc]                         # (B, T) int64
    # The input is the last token of its document exactly when the target is the next document's start.
    mask = idx + 1 < split.doc_starts[doc + 1]                        # (B, T) bool
    return Batch(tokens, targets, segment_pos, mask)


def eval_batches(split, batch_size, seq_len, n_batches, seed=0):
    """A fixed list of n_batches Batches (same seed -> same windows), for a comparable validation loss."""
    rng = np.random.default_rng(seed)
    return [sample_batch(split, batch_size, seq_len, rng) for _ in range(n_batches)]


def unigram_entropy(split):
    """Entropy in nats per token of the split's token distribution: the loss of the best context-free model."""
    counts = np.zeros(0, dtype=np.int64)
    for lo in range(0, split.tokens.shape[0], 1 << 22):                # 4 Mi-token chunks bound the memory
        chunk = np.bincount(split.tokens[lo:lo + (1 << 22)])          # (max token + 1,)
        counts = np.pad(counts, (0, max(0, chunk.size - counts.size)))
        counts[:chunk.size] += chunk
    p = counts[counts > 0] / counts.sum()
    return float(-np.sum(p * np.log(p)))
