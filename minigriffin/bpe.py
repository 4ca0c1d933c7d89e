"""A byte-level BPE tokenizer trained on the training books, so that a window of T tokens spans more text.

Byte pair encoding (Sennrich, Haddow & Birch 2016, "Neural Machine Translation of Rare Words with Subword
Units") starts from single symbols and repeatedly merges the most frequent adjacent pair into a new symbol.
GPT-2 (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners") runs it on UTF-8 *bytes*:
the 256 byte values are tokens 0..255, so any text is encodable and decoding is lossless, and merge i makes
token 256 + i. As in GPT-2, text is first split into "words" (an optional leading space plus letters, digits,
punctuation, or whitespace) and merges never cross a word boundary, so " the" becomes one token while
"the." never does.

Training counts each unique word once with its frequency and keeps the count of every adjacent pair; a merge
then rewrites only the words that contain its pair and updates the counts incrementally (the standard
efficient BPE trainer), so vocab 4096 on 5 MB of books takes seconds, not hours. Encoding applies the merges
by rank inside each word and caches each unique word's tokens.

A loss per token converts to a loss per byte with `byte_lengths`: nats/byte = sum of token losses / bytes,
which is what compares a BPE model with a byte model. Shape letters: docs/conventions.md (N tokens).
"""

import hashlib
import heapq
import json
import re
from collections import Counter, defaultdict
from itertools import chain
from pathlib import Path

import numpy as np

FORMAT = "minigriffin-bpe"
FORMAT_VERSION = 1
_MAX_WORD = 64           # longer runs (a line of dashes, a block of spaces) split every 64 characters: keeps
                         # encoding a word O(64^2) at worst, and training and encoding split text identically
_L = r"[^\W\d_]"         # a letter: a word character that is neither a digit nor "_"
_P = r"(?:[^\s\w]|_)"    # punctuation: anything that is not whitespace, a letter or a digit
# GPT-2's pre-split with Python's `re` classes and bounded runs. Every character is whitespace, a letter, a
# digit or punctuation, so the words always join back into the text (checked by tests/test_bpe.py).
WORD_RE = re.compile(rf"'(?:[sdmt]|ll|ve|re)| ?{_L}{{1,{_MAX_WORD}}}| ?\d{{1,{_MAX_WORD}}}"
                     rf"| ?{_P}{{1,{_MAX_WORD}}}|\s{{1,{_MAX_WORD}}}(?!\S)|\s{{1,{_MAX_WORD}}}")


def split_words(text):
    """GPT-2-style pre-split: str -> list of str whose concatenation is text; merges stay inside a word."""
    return WORD_RE.findall(text)


def _merge_word(ids, pair, new):
    """ids with every non-overlapping occurrence of pair, left to right, replaced by new (a new list)."""
    a, b = pair
    out, i, n = [], 0, len(ids)
    while i < n:
        if i + 1 < n and ids[i] == a and ids[i + 1] == b:
            out.append(new)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def check_merges(merges):
    """merges as a list of (int, int) tuples; ValueError unless merge i joins two tokens below 256 + i, no pair
    repeats and 256 + len(merges) fits uint16."""
    out = []
    for i, merge in enumerate(merges):
        if (not isinstance(merge, (list, tuple)) or len(merge) != 2
                or not all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in merge)):
            raise ValueError(f"merge {i} must be a pair of integer token ids, got {merge!r}")
        a, b = int(merge[0]), int(merge[1])
        if not (0 <= a < 256 + i and 0 <= b < 256 + i):
            raise ValueError(f"merge {i} = ({a}, {b}) uses a token that does not exist yet (ids must be "
                             f"below {256 + i})")
        out.append((a, b))
    if len(set(out)) != len(out):
        raise ValueError("merges repeat a pair: a pair is merged at most once")
    if 256 + len(out) > 65536:
        raise ValueError(f"{len(out)} merges make a vocabulary over 65536, which uint16 tokens cannot hold")
    return out


class BPETokenizer:
    """Byte-level BPE (Sennrich et al. 2016; GPT-2, Radford et al. 2019): tokens 0..255 are bytes, token
    256 + i is merges[i] = (a, b), the concatenation of tokens a and b. Lossless for any str.

    name: f"bpe{vocab_size}-" + 12 hex digits of the merges' sha256 (the token cache is keyed by it);
    byte_lengths: (vocab_size,) int64 UTF-8 bytes each token stands for."""

    def __init__(self, merges):
        self.merges = check_merges(merges)
        self.vocab_size = 256 + len(self.merges)
        digest = hashlib.sha256(json.dumps(self.merges).encode()).hexdigest()[:12]
        self.name = f"bpe{self.vocab_size}-{digest}"
        self._ranks = {pair: i for i, pair in enumerate(self.merges)}
        self._bytes = [bytes([i]) for i in range(256)]                   # token id -> the bytes it stands for
        for a, b in self.merges:
            self._bytes.append(self._bytes[a] + self._bytes[b])
        self.byte_lengths = np.array([len(s) for s in self._bytes], dtype=np.int64)   # (vocab_size,)
        self._cache = {}                                                  # word -> tuple of its token ids

    def __repr__(self):
        return f"BPETokenizer(name={self.name!r}, vocab_size={self.vocab_size})"

    def _encode_word(self, word):
        """Token ids of one pre-split word: merge the lowest-rank adjacent pair until none is a merge."""
        ids, ranks = list(word.encode("utf-8")), self._ranks
        while len(ids) > 1:
            rank = min(ranks.get(pair, len(ranks)) for pair in zip(ids, ids[1:]))
            if rank == len(ranks):
                break
            # Merge r only ever creates pairs of rank > r (they contain token 256 + r), so merging by rank
            # replays training's merges in order, skipping the ones this word never meets.
            ids = _merge_word(ids, self.merges[rank], 256 + rank)
        return tuple(ids)

    def encode(self, text):
        """str -> (N,) uint16 token ids, N <= number of UTF-8 bytes of text."""
        words = split_words(text)
        cache = self._cache
        if len(cache) > 1 << 20:                 # a bound on memory across many books; refilling is cheap
            cache.clear()
        for word in set(words).difference(cache):
            cache[word] = self._encode_word(word)
        return np.fromiter(chain.from_iterable(map(cache.__getitem__, words)), dtype=np.uint16)   # (N,)

    def decode(self, tokens):
        """(N,) integer tokens in [0, vocab_size) -> str. Invalid UTF-8 (e.g. a model sample) becomes U+FFFD."""
        tokens = np.asarray(tokens)                                                # (N,)
        if tokens.size and (tokens.dtype.kind not in "iu" or tokens.min() < 0 or tokens.max() >= self.vocab_size):
            raise ValueError(f"BPE tokens must be integers in [0, {self.vocab_size - 1}], got dtype "
                             f"{tokens.dtype} with range [{tokens.min()}, {tokens.max()}]")
        return b"".join(map(self._bytes.__getitem__, tokens.tolist())).decode("utf-8", errors="replace")

    def token_bytes(self, tokens):
        """Number of UTF-8 bytes the (N,) tokens stand for: the denominator of a loss in nats/byte."""
        return int(self.byte_lengths[np.asarray(tokens, dtype=np.int64)].sum())

    def save(self, path):
        """Write the merges as JSON: {"format", "version", "vocab_size", "merges": [[a, b], ...]}."""
        data = {"format": FORMAT, "version": FORMAT_VERSION, "vocab_size": self.vocab_size,
                "merges": [list(pair) for pair in self.merges]}
        Path(path).write_text(json.dumps(data) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path):
        """A tokenizer from a file `save` wrote; ValueError naming the file if it is not one."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path} is not a BPE tokenizer file (not JSON: {exc})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{path} is not a BPE tokenizer file (no \"format\": \"{FORMAT}\")")
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"{path} has BPE format version {data.get('version')!r}; this minigriffin reads "
                             f"version {FORMAT_VERSION}")
        merges = data.get("merges")
        if not isinstance(merges, list):
            raise ValueError(f"{path}: \"merges\" must be a list of [a, b] pairs")
        try:
            tokenizer = cls(merges)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        if data.get("vocab_size") != tokenizer.vocab_size:
            raise ValueError(f"{path}: vocab_size {data.get('vocab_size')!r} does not match its {len(merges)} "
                             f"merges (256 + {len(merges)} = {tokenizer.vocab_size})")
        return tokenizer


def take_prefixes(raws, max_bytes):
    """The first max_bytes UTF-8 bytes of the texts in all, the same fraction from the start of each, cut back
    to a character boundary: list of bytes -> list of str (the whole texts if max_bytes is None or enough)."""
    total = sum(len(raw) for raw in raws)
    if max_bytes is None or total <= max_bytes:
        return [raw.decode("utf-8") for raw in raws]
    out = []
    for raw in raws:
        keep = len(raw) * max_bytes // total
        while 0 < keep < len(raw) and raw[keep] & 0xC0 == 0x80:             # inside a multi-byte character
            keep -= 1
        out.append(raw[:keep].decode("utf-8"))
    return out


def train_bpe(texts, vocab_size, *, max_bytes=None):
    """Learn byte-level BPE merges (Sennrich et al. 2016; GPT-2 bytes, Radford et al. 2019) from a list of str.

    Greedy: each step merges the adjacent pair with the highest count over all words (weighted by word
    frequency), ties going to the smallest (a, b), so the same texts always give the same merges. Stops at
    vocab_size tokens or when no pair occurs twice, so the result can be smaller than asked for.
    max_bytes: use only about this many UTF-8 bytes, the same fraction from the start of each text.
    Returns BPETokenizer with vocab_size <= the one asked for."""
    is_int = isinstance(vocab_size, (int, np.integer)) and not isinstance(vocab_size, bool)
    if not is_int or not 256 <= vocab_size <= 65536:
        raise ValueError(f"vocab_size must be an integer in [256, 65536], got {vocab_size!r}")
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a list of str (one per document)")
    texts = take_prefixes([t.encode("utf-8") for t in texts], max_bytes)
    counts = Counter()
    for text in texts:
        counts.update(split_words(text))
    words = [list(word.encode("utf-8")) for word in counts]             # unique words as byte ids
    freqs = list(counts.values())                                        # how often each occurs
    pair_counts, where = defaultdict(int), defaultdict(set)              # pair -> count; pair -> word indices
    for w, (ids, freq) in enumerate(zip(words, freqs)):
        for pair in zip(ids, ids[1:]):
            pair_counts[pair] += freq
            where[pair].add(w)
    # A max-heap of (-count, pair) with lazy deletion: an entry whose count is no longer current is skipped,
    # and every count change pushes a fresh entry. Equal counts pop the smallest pair first.
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)
    merges = []
    while len(merges) < vocab_size - 256 and heap:
        neg_count, pair = heapq.heappop(heap)
        if pair_counts.get(pair) != -neg_count:
            continue                                                     # stale entry
        if -neg_count < 2:
            break                                                        # no pair occurs twice: nothing to learn
        new = 256 + len(merges)
        merges.append(pair)
        delta = defaultdict(int)
        for w in where.pop(pair):                                        # order-free: deltas add up
            ids = words[w]
            merged = _merge_word(ids, pair, new)
            if len(merged) == len(ids):
                continue                                                 # stale index: pair no longer in word
            for p in zip(ids, ids[1:]):
                delta[p] -= freqs[w]
            for p in zip(merged, merged[1:]):
                delta[p] += freqs[w]
                where[p].add(w)
            words[w] = merged
        for p, d in delta.items():
            if d == 0:
                continue
            pair_counts[p] += d
            if pair_counts[p] > 0:
                heapq.heappush(heap, (-pair_counts[p], p))
            else:
                del pair_counts[p]                                       # includes the merged pair itself
    return BPETokenizer(merges)


def book_files(folder):
    """The books BPE trains on: sorted folder/train/*.txt if that folder exists, else sorted folder/*.txt."""
    folder = Path(folder).expanduser()
    books_dir = folder / "train" if (folder / "train").is_dir() else folder
    books = sorted(p for p in books_dir.glob("*.txt") if p.is_file() and not p.name.startswith("."))
    if not books:
        raise ValueError(f"no .txt books in {books_dir}; pass a folder of UTF-8 .txt files (or one with train/)")
    return books


def train_bpe_on_folder(folder, vocab_size, *, max_bytes=None):
    """train_bpe on the training books of a folder (see book_files); ValueError naming a book that is not
    UTF-8. max_bytes as in train_bpe."""
    raws = []
    for path in book_files(folder):
        raw = path.read_bytes()
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path} is not UTF-8 (byte offset {exc.start}); re-save it as UTF-8") from None
        raws.append(raw)
    return train_bpe(take_prefixes(raws, max_bytes), vocab_size)
