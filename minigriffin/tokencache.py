"""The token cache: each split's books tokenized once, written to a cache folder, checked and memmapped.

    cache_root/tokens/<key>.tokens   every document's tokens back to back (uint8 for byte tokens)
    cache_root/tokens/<key>.json     names, document boundaries, tokenizer, format and a blake2b checksum

The key hashes the books' names, sizes, mtimes and ctimes; the metadata is written last, so it marks an entry
complete, and its checksum is checked at every load (one blake2b pass, cheap next to reading the books), so a
killed build, a truncated file or changed bytes are rebuilt from the books, never used. A 30 MB corpus then
costs no RAM, and a second load reads no book. minigriffin.data.load_corpus is the way in.
"""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from minigriffin.files import atomic_write

_CACHE_FORMAT = 2      # bump when the layout of the token cache changes: old entries are then ignored


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
    """blake2b of a cache entry: its token bytes, then its names and document boundaries."""
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


def cached_split(files, cache_root, tokenizer, name="split"):
    """(tokens, doc_starts, names) of the files' token stream, memmapped, building the cache entry once.

    An entry is keyed by the books' names, sizes, mtimes and ctimes (a book rewritten with its size and mtime
    restored still has a new ctime, which nothing can set back), and its metadata holds a blake2b of the token
    bytes, names and document boundaries, checked at every load: a truncated, changed or mismatched entry is
    rebuilt from the books, saying so on stderr, never used. `name` ("train", "valid") is for that message."""
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
    return tokens, doc_starts, tuple(meta["names"])
