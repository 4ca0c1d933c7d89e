"""Data (minigriffin.data): byte tokenizer, corpus loading and its token cache, batch sampling, input errors.

Window semantics are checked on synthetic streams whose token at offset i is i itself (N <= 256, uint8), so
each window reveals its start and every field can be compared with a plain Python reference. The real
books corpus ($MINIGRIFFIN_BOOKS, books_dir fixture) checks loading, the cache and the entropy on real text.
"""

import csv
import math
import os
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigriffin import tokencache
from minigriffin.data import (
    Batch,
    ByteTokenizer,
    TokenSplit,
    eval_batches,
    load_corpus,
    sample_batch,
    unigram_entropy,
)


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    """Every test caches under tmp_path, never in the user's home."""
    monkeypatch.setenv("MINIGRIFFIN_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def books(books_dir, tmp_path_factory):
    return load_corpus(books_dir, cache_dir=tmp_path_factory.mktemp("cache"))


def _manifest(folder):
    with open(folder / "MANIFEST.tsv", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _split(doc_lengths, name="synthetic"):
    """A TokenSplit whose token at stream offset i is i (so sum(doc_lengths) <= 256)."""
    N = sum(doc_lengths)
    assert N <= 256, N
    return TokenSplit(np.arange(N, dtype=np.uint8), np.r_[0, np.cumsum(doc_lengths)].astype(np.int64),
                      tuple(f"doc{i}.txt" for i in range(len(doc_lengths))), name)


def _write(folder, files):
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return folder


# --- tokenizer ------------------------------------------------------------------------------------------


@given(st.text())
def test_tokenizer_round_trip(text):
    tok = ByteTokenizer()
    tokens = tok.encode(text)
    assert tokens.dtype == np.uint8 and tokens.shape == (len(text.encode("utf-8")),)
    assert tok.decode(tokens) == text
    assert tok.decode(tokens.astype(np.int64).tolist()) == text     # model outputs arrive as int64 / lists


@given(st.binary())
def test_tokenizer_decodes_any_bytes(raw):
    # model samples need not be valid UTF-8: decode replaces bad bytes instead of raising
    assert ByteTokenizer().decode(np.frombuffer(raw, dtype=np.uint8)) == raw.decode("utf-8", errors="replace")


def test_tokenizer_rejects_out_of_range_tokens():
    assert ByteTokenizer().vocab_size == 256
    with pytest.raises(ValueError, match=r"\[0, 255\].*\[0, 256\]"):
        ByteTokenizer().decode(np.array([0, 256]))


# --- loading the real books corpus --------------------------------------------------------------------


def test_books_match_manifests(books, books_dir):
    for split, name in ((books.train, "train"), (books.valid, "valid")):
        rows = _manifest(books_dir / name)
        assert split.name == name
        assert sorted(split.names) == sorted(f"{row['gutenberg_id']}.txt" for row in rows)
        sizes = {f"{row['gutenberg_id']}.txt": int(row["bytes"]) for row in rows}
        np.testing.assert_array_equal(np.diff(split.doc_starts), [sizes[n] for n in split.names])
        np.testing.assert_array_equal(np.diff(split.doc_starts),
                                      [(books_dir / name / n).stat().st_size for n in split.names])
        assert split.doc_starts.dtype == np.int64 and split.doc_starts[0] == 0
        assert split.doc_starts[-1] == split.tokens.shape[0]
        assert isinstance(split.tokens, np.memmap) and split.tokens.dtype == np.uint8
        assert not split.tokens.flags.writeable
        for i, n in enumerate(split.names):          # each document's bytes sit at its offset, ends included
            raw = (books_dir / name / n).read_bytes()
            lo, hi = split.doc_starts[i], split.doc_starts[i + 1]
            assert bytes(split.tokens[lo:lo + 64]) == raw[:64] and bytes(split.tokens[hi - 64:hi]) == raw[-64:]
    assert set(books.train.names).isdisjoint(books.valid.names)


def test_books_batches_and_entropy(books):
    rng = np.random.default_rng(0)
    batch = sample_batch(books.train, 8, 128, rng)
    assert isinstance(batch, Batch)
    for arr, dtype in zip(batch, (np.int64, np.int64, np.int64, np.bool_)):
        assert type(arr) is np.ndarray and arr.shape == (8, 128) and arr.dtype == dtype
    np.testing.assert_array_equal(batch.tokens[:, 1:], batch.targets[:, :-1])
    # English text: about 4.5 bits (3.1 nats) per byte, far below uniform log(256) = 5.5 nats
    h = unigram_entropy(books.valid)
    assert 2.5 < h < 3.6, h


def test_cache_is_reused_without_reading_books(books_dir, tmp_path, monkeypatch):
    first = load_corpus(books_dir)                   # cache from $MINIGRIFFIN_CACHE (tmp_path/cache)
    cached = sorted((tmp_path / "cache" / "tokens").iterdir())
    assert len(cached) == 4, cached                  # train and valid: tokens + metadata each
    stamps = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in cached}

    def no_reading(*args):
        raise AssertionError("books were read again although the cache is valid")

    monkeypatch.setattr(tokencache, "_read_document", no_reading)
    second = load_corpus(books_dir)
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in cached} == stamps   # nothing rewritten
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.tokens, b.tokens)
        np.testing.assert_array_equal(a.doc_starts, b.doc_starts)
        assert a.names == b.names


@pytest.mark.parametrize("change", ["mtime", "size"])
def test_cache_is_rebuilt_when_a_book_changes(tmp_path, change):
    folder = _write(tmp_path / "books", {"a.txt": b"alpha " * 10, "b.txt": b"beta " * 10})
    old = (folder / "a.txt").stat().st_mtime_ns
    first = load_corpus(folder, valid_fraction=0.5)
    if change == "mtime":                            # same size, new content, new mtime
        (folder / "a.txt").write_bytes(b"omega " * 10)
        os.utime(folder / "a.txt", ns=(old + 10**9, old + 10**9))
    else:                                            # new size, mtime set back (as a careless copy might)
        (folder / "a.txt").write_bytes(b"ALPHA! " * 10)
        os.utime(folder / "a.txt", ns=(old, old))
    second = load_corpus(folder, valid_fraction=0.5)
    assert bytes(first.train.tokens) == b"alpha " * 10
    assert bytes(second.train.tokens) == (b"omega " * 10 if change == "mtime" else b"ALPHA! " * 10)
    assert bytes(second.valid.tokens) == b"beta " * 10
    assert len(list((tmp_path / "cache" / "tokens").glob("*.tokens"))) == 3   # old train, new train, valid


def test_incomplete_cache_entry_is_rebuilt(tmp_path):
    folder = _write(tmp_path / "books", {"a.txt": b"alpha " * 10, "b.txt": b"beta " * 10})
    load_corpus(folder, valid_fraction=0.5)
    for p in (tmp_path / "cache" / "tokens").glob("*.tokens"):
        p.write_bytes(p.read_bytes()[:5])            # as if a crash had truncated it
    corpus = load_corpus(folder, valid_fraction=0.5)
    assert bytes(corpus.train.tokens) == b"alpha " * 10 and bytes(corpus.valid.tokens) == b"beta " * 10


# --- splitting a flat folder by book -------------------------------------------------------------------


@pytest.mark.parametrize(("n_books", "valid_fraction", "expected_valid"), [
    (2, 0.1, ["b01.txt"]),                           # fewer books than k = 10: the last one is valid
    (3, 0.1, ["b02.txt"]),
    (6, 0.5, ["b01.txt", "b03.txt", "b05.txt"]),     # k = 2: every second book
    (21, 0.1, ["b09.txt", "b19.txt"]),               # k = 10: every tenth book
])
def test_flat_folder_is_split_by_book(tmp_path, n_books, valid_fraction, expected_valid):
    folder = _write(tmp_path / "flat", {f"b{i:02d}.txt": f"book {i}\n".encode() for i in range(n_books)})
    (folder / "notes.md").write_text("not a book")
    corpus = load_corpus(folder, valid_fraction=valid_fraction)
    assert list(corpus.valid.names) == expected_valid
    assert sorted(corpus.train.names + corpus.valid.names) == sorted(p.name for p in folder.glob("*.txt"))
    assert load_corpus(folder, valid_fraction=valid_fraction).valid.names == corpus.valid.names   # deterministic


# --- sampling ------------------------------------------------------------------------------------------


def _reference(split, start, T):
    """Python loop reference for one window starting at stream offset `start`."""
    starts = split.doc_starts.tolist()
    pos, keep = [], []
    for i in range(start, start + T):
        d = max(j for j in range(len(starts) - 1) if starts[j] <= i)
        pos.append(i - starts[d])
        keep.append(i + 1 != starts[d + 1])
    return pos, keep


@given(doc_lengths=st.lists(st.integers(1, 40), min_size=1, max_size=12).filter(lambda ls: 2 <= sum(ls) <= 256),
       B=st.integers(1, 5), T_frac=st.floats(0, 1), seed=st.integers(0, 2**32 - 1))
def test_sample_batch_matches_reference(doc_lengths, B, T_frac, seed):
    split = _split(doc_lengths)
    N = int(split.doc_starts[-1])
    T = 1 + int(T_frac * (N - 2))                    # 1 <= T <= N - 1
    batch = sample_batch(split, B, T, np.random.default_rng(seed))
    for b in range(B):
        s = int(batch.tokens[b, 0])                  # token value == stream offset
        assert 0 <= s <= N - T - 1
        np.testing.assert_array_equal(batch.tokens[b], np.arange(s, s + T))
        np.testing.assert_array_equal(batch.targets[b], np.arange(s + 1, s + T + 1))
        pos, keep = _reference(split, s, T)
        np.testing.assert_array_equal(batch.segment_pos[b], pos)
        np.testing.assert_array_equal(batch.mask[b], keep)


def test_segment_pos_and_mask_at_document_boundaries():
    split = _split([3, 1, 4])                        # stream 0..7; documents [0 1 2] [3] [4 5 6 7]
    batch = sample_batch(split, 64, 7, np.random.default_rng(0))
    assert set(batch.tokens[:, 0].tolist()) == {0}   # N - T = 1 possible start
    np.testing.assert_array_equal(batch.segment_pos[0], [0, 1, 2, 0, 0, 1, 2])
    # targets 3 and 4 start the next documents: the inputs 2 and 3 (last of their documents) are masked
    np.testing.assert_array_equal(batch.mask[0], [True, True, False, False, True, True, True])
    starts_in_window = np.isin(batch.tokens, split.doc_starts[:-1])
    np.testing.assert_array_equal(batch.segment_pos == 0, starts_in_window)
    np.testing.assert_array_equal(~batch.mask, np.isin(batch.targets, split.doc_starts[1:-1]))


def test_window_starts_cover_the_whole_stream():
    split = _split([7, 13])
    batch = sample_batch(split, 4000, 5, np.random.default_rng(1))
    # every start in [0, N - T - 1] = [0, 14] is drawn, and no other: the last target is the stream's last token
    assert set(batch.tokens[:, 0].tolist()) == set(range(15))
    assert batch.targets.max() == 19


def test_sampling_is_reproducible_and_resumable():
    split = _split([50, 60, 70])
    a = [sample_batch(split, 3, 16, np.random.default_rng(7)) for _ in range(2)]
    for x, y in zip(*a):
        np.testing.assert_array_equal(x, y)
    rng = np.random.default_rng(7)
    sample_batch(split, 3, 16, rng)
    state = rng.bit_generator.state                  # a checkpoint saves this dict
    after = [sample_batch(split, 3, 16, rng) for _ in range(3)]
    resumed = np.random.default_rng(123)
    resumed.bit_generator.state = state
    for x, y in zip(after, [sample_batch(split, 3, 16, resumed) for _ in range(3)]):
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u, v)
    assert not np.array_equal(after[0].tokens, after[1].tokens)


def test_eval_batches_are_fixed():
    split = _split([100, 100, 56])
    first, again = eval_batches(split, 4, 32, 3), eval_batches(split, 4, 32, 3)
    other = eval_batches(split, 4, 32, 3, seed=1)
    assert len(first) == 3
    for x, y in zip(first, again):
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u, v)
    assert not all(np.array_equal(x.tokens, y.tokens) for x, y in zip(first, other))


def test_unigram_entropy():
    two = TokenSplit(np.array([5, 9] * 50, dtype=np.uint8), np.array([0, 100]), ("a.txt",))
    assert unigram_entropy(two) == pytest.approx(math.log(2), rel=1e-12)
    one = TokenSplit(np.full(10, 65, dtype=np.uint8), np.array([0, 10]), ("a.txt",))
    assert unigram_entropy(one) == 0.0
    all_bytes = _split([256])
    assert unigram_entropy(all_bytes) == pytest.approx(math.log(256), rel=1e-12)


# --- clear errors --------------------------------------------------------------------------------------


def test_missing_folder(tmp_path):
    with pytest.raises(ValueError, match=f"{re.escape(str(tmp_path / 'nope'))} does not exist"):
        load_corpus(tmp_path / "nope")


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=f"{re.escape(str(tmp_path / 'empty'))} is empty"):
        load_corpus(tmp_path / "empty")


def test_folder_without_txt(tmp_path):
    folder = _write(tmp_path / "docs", {"a.md": b"# notes", "b.csv": b"1,2"})
    where = re.escape(str(folder))
    with pytest.raises(ValueError, match=rf"{where} has no \.txt files \(found: a\.md, b\.csv\)"):
        load_corpus(folder)


def test_invalid_utf8_names_file_and_offset(tmp_path):
    latin1 = "caf\u00e9 au lait".encode("latin-1")       # 0xe9 (offset 3) lacks its continuation bytes
    folder = _write(tmp_path / "books", {"good.txt": b"fine text\n", "latin1.txt": latin1})
    bad = re.escape(str(folder / "latin1.txt"))
    with pytest.raises(ValueError, match=rf"{bad} is not valid UTF-8: byte 0xe9 at byte offset 3"):
        load_corpus(folder)
    assert not list((tmp_path / "cache" / "tokens").glob(".*.tmp"))   # the partial token file was removed


def test_empty_txt_file(tmp_path):
    folder = _write(tmp_path / "books", {"a.txt": b"some text", "b.txt": b""})
    with pytest.raises(ValueError, match=rf"{re.escape(str(folder / 'b.txt'))} is empty"):
        load_corpus(folder)


def test_single_book_cannot_be_split(tmp_path):
    folder = _write(tmp_path / "books", {"only.txt": b"one book"})
    with pytest.raises(ValueError, match=rf"{re.escape(str(folder))} has 1 \.txt file; at least 2"):
        load_corpus(folder)


def test_train_without_valid(tmp_path):
    _write(tmp_path / "books" / "train", {"a.txt": b"text"})
    with pytest.raises(ValueError, match=r"has train/ but no valid/"):
        load_corpus(tmp_path / "books")


def test_bad_valid_fraction(tmp_path):
    with pytest.raises(ValueError, match=r"valid_fraction must be in \(0, 1\), got 1"):
        load_corpus(tmp_path, valid_fraction=1)


def test_split_shorter_than_a_window(tmp_path):
    folder = _write(tmp_path / "books", {"a.txt": b"x" * 100, "b.txt": b"y" * 10})
    corpus = load_corpus(folder, valid_fraction=0.5)
    rng = np.random.default_rng(0)
    sample_batch(corpus.valid, 2, 9, rng)            # 10 tokens: exactly one window of T = 9
    with pytest.raises(ValueError, match=r"valid split has 10 tokens, shorter than one window of seq_len \+ 1 = 11"):
        sample_batch(corpus.valid, 2, 10, rng)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"batch_size": 0}, ValueError, "batch_size must be a positive integer, got 0"),
    ({"seq_len": 2.5}, ValueError, "seq_len must be a positive integer, got 2.5"),
    ({"rng": 0}, TypeError, "rng must be a numpy.random.Generator"),
])
def test_bad_batch_arguments(kwargs, error, match):
    args = {"split": _split([10, 10]), "batch_size": 2, "seq_len": 4, "rng": np.random.default_rng(0)} | kwargs
    with pytest.raises(error, match=match):
        sample_batch(**args)
