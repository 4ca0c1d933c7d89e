"""Training data: a byte tokenizer, a corpus of books cached as memmapped tokens, and random windows.

A corpus is a folder of UTF-8 .txt files, one document (book) each: either `train/` and `valid/` subfolders
(the books corpus, e.g. what `minigriffin.gutenberg.download_books` writes), or a flat folder that
`load_corpus` splits by book. The documents of a split are concatenated into one token stream, written once
to a cache folder and memmapped, so a 30 MB corpus costs no RAM and a second load reads no book.

Training windows are packed across documents, as in Griffin (De, Smith et al. 2024): `segment_pos` restarts
at 0 at each document start (the RG-LRU and the attention reset there), and `mask` drops the one target per
boundary that would ask a book's last byte to predict the next book's first byte.
Shape letters: docs/conventions.md (B batch, T sequence length, N tokens in a split).
"""

import contextlib
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

_CACHE_FORMAT = 2      # bump when the layout of the token cache changes: old entries are then ignored


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


def _read_document(path, tokenizer):
    """Tokens of one book; ValueError naming the file if it is empty or not valid UTF-8."""
    raw = path.read_bytes()
    if not raw:
        raise ValueError(f"{path} is empty (0 bytes); remove it or put text in it")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not valid UTF-8: byte 0x{raw[exc.start]:02x} at byte offset {exc.start} "
                         f"({exc.reason}); re-save the file as UTF-8") from None
    return np.asarray(tokenizer.encode(text))                                        # (n,)


def _token_dtype(tokenizer):
    return np.dtype(np.uint8 if tokenizer.vocab_size <= 256 else
                    np.uint16 if tokenizer.vocab_size <= 65536 else np.uint32)


def _entry_digest(token_chunks, names, doc_starts):
    """blake2b of a cache entry: its token bytes, then its names and document boundaries (~1 GB/s)."""
    h = hashlib.blake2b(digest_size=32)
    for chunk in token_chunks:
        h.update(chunk)
    h.update(json.dumps([list(names), [int(s) for s in doc_starts]]).encode())
    return h.hexdigest()


def _file_chunks(path, size=1 << 22):
    with open(path, "rb") as f:
        while chunk := f.read(size):
            yield chunk


def _check_entry(tokens_path, meta_path, names, tokenizer, dtype):
    """(metadata, None) if the cache entry is complete and intact, (None, None) if there is no entry, else
    (None, what is wrong with it, naming the file)."""
    if not meta_path.exists() and not tokens_path.exists():
        return None, None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        doc_starts, digest = meta["doc_starts"], meta["blake2b"]
        expected = int(doc_starts[-1]) * dtype.itemsize
    except FileNotFoundError:
        return None, f"{meta_path} is missing (a build that did not finish)"
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:    # JSONDecodeError is a ValueError
        return None, f"{meta_path} is not valid cache metadata ({type(exc).__name__}: {exc})"
    if meta.get("format") != _CACHE_FORMAT or meta.get("tokenizer") != tokenizer.name or meta.get("names") != names:
        return None, f"{meta_path} describes other books ({meta.get('names')}, {meta.get('tokenizer')})"
    try:
        size = tokens_path.stat().st_size
        if size != expected:
            return None, f"{tokens_path} has {size} bytes where its metadata says {expected} (truncated?)"
        if _entry_digest(_file_chunks(tokens_path), names, doc_starts) != digest:
            return None, f"{tokens_path} and {meta_path} do not match their checksum (changed bytes)"
    except FileNotFoundError:
        return None, f"{tokens_path} is missing"
    except (OSError, ValueError, TypeError) as exc:
        return None, f"{tokens_path} cannot be checked ({type(exc).__name__}: {exc})"
    return meta, None


def _cached_split(name, files, cache_root, tokenizer):
    """Memmap the token stream of files, building the cache entry once.

    An entry is keyed by the books' names, sizes, mtimes and ctimes (a book rewritten with its size and mtime
    restored still has a new ctime, which nothing can set back), and its metadata holds a blake2b of the token
    bytes, names and document boundaries, checked at every load (about 30 ms for a 30 MB corpus): a truncated,
    changed or mismatched entry is rebuilt from the books, saying so on stderr, never used."""
    stats = [(p.name, st.st_size, st.st_mtime_ns, st.st_ctime_ns) for p in files for st in [p.stat()]]
    key_src = json.dumps({"format": _CACHE_FORMAT, "tokenizer": tokenizer.name, "files": stats})
    key = hashlib.sha256(key_src.encode()).hexdigest()[:24]
    folder = Path(cache_root) / "tokens"
    tokens_path, meta_path = folder / f"{key}.tokens", folder / f"{key}.json"
    dtype = _token_dtype(tokenizer)
    names = [p.name for p in files]
    meta, problem = _check_entry(tokens_path, meta_path, names, tokenizer, dtype)
    if problem:
        print(f"minigriffin: the token cache of the {name} books is damaged: {problem}; rebuilding it from the "
              f"books", file=sys.stderr, flush=True)
    if meta is None:
        lengths, h = [], hashlib.blake2b(digest_size=32)

        def chunks():
            for path in files:
                tokens = _read_document(path, tokenizer).astype(dtype, copy=False)   # (n,)
                lengths.append(int(tokens.size))
                raw = tokens.tobytes()
                h.update(raw)
                yield raw

        atomic_write(tokens_path, chunks())            # the tokens first: the metadata marks the entry complete
        doc_starts = [0, *np.cumsum(lengths, dtype=np.int64).tolist()]
        h.update(json.dumps([names, doc_starts]).encode())                      # as _entry_digest does
        meta = {"format": _CACHE_FORMAT, "tokenizer": tokenizer.name, "names": names, "doc_starts": doc_starts,
                "blake2b": h.hexdigest()}
        atomic_write(meta_path, [json.dumps(meta).encode()])
    tokens = np.memmap(tokens_path, dtype=dtype, mode="r")                          # (N,) read-only
    doc_starts = np.asarray(meta["doc_starts"], dtype=np.int64)                     # (n_docs + 1,)
    return TokenSplit(tokens, doc_starts, tuple(meta["names"]), name)


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
    return Corpus(_cached_split("train", train_files, cache_root, tokenizer),
                  _cached_split("valid", valid_files, cache_root, tokenizer))


def _check_batch_args(split, batch_size, seq_len):
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
    N = _check_batch_args(split, B, T)
    starts = rng.integers(0, N - T, size=B)                          # (B,) uniform in [0, N - T - 1]
    idx = starts[:, None] + np.arange(T)                              # (B, T) stream offset of each input
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
