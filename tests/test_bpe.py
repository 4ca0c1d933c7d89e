"""Byte-level BPE (minigriffin.bpe): merges worked by hand, determinism, lossless round trips, compression,
byte accounting for nats/byte, the JSON file and its errors, and use as a corpus tokenizer.

The text is generated here (tests/synthetic_corpus.py's grammar books) or written inline, so every clone runs
every test.
"""

import re
import time
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from synthetic_corpus import book

from minigriffin.bpe import BPETokenizer, split_words, take_prefixes, train_bpe, train_bpe_on_folder
from minigriffin.data import load_corpus

MIXED = ("Naïve café owners said: «Ça va?» — 東京で会いましょう 🙂🙂 x² = 4; snake_case\t\r\n"
         "don't they'll we've I'm   spaced    out\n\n\n")


@pytest.fixture(scope="module")
def tok():
    """A small vocabulary trained on grammar text plus multi-byte characters, emoji and whitespace runs."""
    return train_bpe([book(0, 20_000), MIXED * 20], 512)


def test_merges_worked_by_hand():
    """train_bpe(["hug hug hugs pug"]) pre-splits into the words "hug", " hug", " hugs", " pug" (bytes h=104,
    u=117, g=103, s=115, p=112, space=32) and counts adjacent pairs over them:
        (u,g) 4   (h,u) 3   (32,h) 2   (g,s) 1   (32,p) 1   (p,u) 1
    merge 0: (117, 103) -> 256 "ug";   words h|ug, _|h|ug, _|h|ug|s, _|p|ug; counts (h,ug) 3, (32,h) 2, rest 1
    merge 1: (104, 256) -> 257 "hug";  words hug, _|hug, _|hug|s, _|p|ug;  counts (32,hug) 2, rest 1
    merge 2: (32, 257)  -> 258 " hug"; every pair left occurs once, so training stops at vocab 259 (< 300)."""
    t = train_bpe(["hug hug hugs pug"], 300)
    assert t.merges == [(117, 103), (104, 256), (32, 257)]
    assert t.vocab_size == 259 and t.name.startswith("bpe259-")
    assert t.encode("hug hugs pug").tolist() == [257, 258, 115, 32, 112, 256]   # hug | " hug" s | " " p ug


def test_ties_go_to_the_smallest_pair():
    """"abcd abcd": (a,b), (b,c), (c,d) all occur twice, so (97, 98) "ab" goes first; then (ab,c) and (c,d)
    tie at 2 and (99, 100) < (256, 99) wins; then (256, 257) "abcd". (32, abcd) occurs once: stop."""
    t = train_bpe(["abcd abcd"], 1000)
    assert t.merges == [(97, 98), (99, 100), (256, 257)]


def naive_train(texts, vocab_size):
    """The oracle: recount every pair over every word before each merge (slow, obviously right)."""
    freq = Counter(w for text in texts for w in split_words(text))
    words = {w: list(w.encode("utf-8")) for w in freq}
    merges = []
    while len(merges) < vocab_size - 256:
        counts = Counter()
        for w, ids in words.items():
            for pair in zip(ids, ids[1:]):
                counts[pair] += freq[w]
        best = min(counts, key=lambda pair: (-counts[pair], pair), default=None)
        if best is None or counts[best] < 2:
            break
        merges.append(best)
        for w, ids in words.items():
            words[w] = merge_pair(ids, best, 255 + len(merges))
    return merges


def merge_pair(ids, pair, new):
    """ids with each non-overlapping occurrence of pair, left to right, replaced by new."""
    out, i = [], 0
    while i < len(ids):
        if ids[i:i + 2] == list(pair):
            out.append(new)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def test_incremental_counts_match_recounting():
    texts = [book(2, 6_000), MIXED * 3, "aaaaaa bbbbbb aaaa ab ab ba"]
    assert train_bpe(texts, 450).merges == naive_train(texts, 450)


def test_training_is_deterministic_and_greedy():
    texts = [book(3, 30_000), MIXED]
    a, b = train_bpe(texts, 400), train_bpe(list(texts), 400)
    assert a.merges == b.merges and a.name == b.name
    bigger = train_bpe(texts, 500)
    assert a.vocab_size == 400 and bigger.vocab_size == 500 and bigger.name != a.name
    assert bigger.merges[:144] == a.merges                 # greedy: a longer run extends a shorter one


def test_pre_split_words_join_back_into_the_text():
    words = split_words(MIXED + "-" * 200 + " " * 150 + "x")
    assert "".join(words) == MIXED + "-" * 200 + " " * 150 + "x"
    assert " café" in words and "'t" in words and all(len(w) <= 64 for w in words)


@given(st.text(max_size=300))
def test_round_trip_any_text(tok, text):
    tokens = tok.encode(text)                                              # (N,)
    assert tokens.dtype == np.uint16 and tokens.ndim == 1
    assert tok.decode(tokens) == text
    assert len(tokens) <= len(text.encode("utf-8"))
    assert tokens.size == 0 or int(tokens.max()) < tok.vocab_size
    assert tok.token_bytes(tokens) == int(tok.byte_lengths[tokens].sum()) == len(text.encode("utf-8"))


@given(st.text(alphabet=" \t\n\r\u00a0\u3000é🙂", max_size=200))
def test_round_trip_whitespace_and_multibyte_runs(tok, text):
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize("text", ["", " ", "\n\n\n", "🙂" * 40, " " * 5000, "ab" * 5000, "é" * 3000])
def test_round_trip_edge_cases(tok, text):
    start = time.perf_counter()
    assert tok.decode(tok.encode(text)) == text
    assert time.perf_counter() - start < 2.0        # long runs are split every 64 characters: no quadratic blowup


def test_byte_lengths_are_the_bytes_of_each_token(tok):
    assert tok.byte_lengths.shape == (tok.vocab_size,) and np.all(tok.byte_lengths[:256] == 1)
    for i in (256, 300, tok.vocab_size - 1):
        a, b = tok.merges[i - 256]
        assert tok.byte_lengths[i] == tok.byte_lengths[a] + tok.byte_lengths[b]
    with pytest.raises(ValueError, match="BPE tokens must be integers"):
        tok.decode([tok.vocab_size])


def test_compresses_held_out_text():
    """Trained on 150 KB of grammar books, a different book needs well under one token per byte."""
    t = train_bpe([book(0, 75_000), book(1, 75_000)], 1024)
    held_out = book(1000, 20_000)
    tokens = t.encode(held_out)                                                 # (N,)
    ratio = len(held_out.encode("utf-8")) / len(tokens)
    assert ratio > 2.0, f"{ratio:.2f} bytes/token"
    assert t.decode(tokens) == held_out


def test_max_bytes_takes_the_same_fraction_from_the_start_of_each_text():
    raws = ["é" * 100, "a" * 300]                                                # 200 and 300 bytes
    got = take_prefixes([s.encode() for s in raws], 101)
    assert got == ["é" * 20, "a" * 60]                                           # 200*101//500 = 40 bytes
    got = take_prefixes([s.encode() for s in raws], 99)
    assert got == ["é" * 19, "a" * 59]                                           # 39 bytes: back to 38
    assert take_prefixes([s.encode() for s in raws], None) == raws
    text = book(0, 40_000)
    first = text.encode("utf-8")[:4_000].decode("utf-8", errors="ignore")     # drops a cut last character
    assert train_bpe([text], 600, max_bytes=4_000).merges == train_bpe([first], 600).merges


def test_train_on_folder_reads_the_training_books(tmp_path):
    for split, seeds in (("train", (5, 6)), ("valid", (7,))):
        (tmp_path / split).mkdir()
        for s in seeds:
            (tmp_path / split / f"b{s}.txt").write_text(book(s, 8_000), encoding="utf-8")
    t = train_bpe_on_folder(tmp_path, 400)
    assert t.merges == train_bpe([book(5, 8_000), book(6, 8_000)], 400).merges
    flat = train_bpe_on_folder(tmp_path / "valid", 400)                         # no train/: the folder itself
    assert flat.merges == train_bpe([book(7, 8_000)], 400).merges
    (tmp_path / "train" / "bad.txt").write_bytes(b"caf\xe9")
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "train" / "bad.txt"))):
        train_bpe_on_folder(tmp_path, 400)
    with pytest.raises(ValueError, match="no .txt books"):
        train_bpe_on_folder(tmp_path / "train" / "missing", 400)


def test_bad_arguments():
    for vocab_size in (255, 70_000, 1.5, True):
        with pytest.raises(ValueError, match="vocab_size"):
            train_bpe(["abc"], vocab_size)
    with pytest.raises(TypeError, match="list of str"):
        train_bpe("abc abc", 300)
    with pytest.raises(ValueError, match="does not exist yet"):
        BPETokenizer([(97, 98), (97, 258)])


def test_save_load_round_trip(tok, tmp_path):
    path = tmp_path / "bpe.json"
    tok.save(path)
    loaded = BPETokenizer.load(path)
    assert loaded.merges == tok.merges and loaded.name == tok.name and loaded.vocab_size == tok.vocab_size
    assert np.array_equal(loaded.encode(MIXED), tok.encode(MIXED))


@pytest.mark.parametrize("content, why", [
    ('{"format": "minigriffin-bpe", "version": 1, "vocab_size": 2', "not JSON"),
    ("\xff\xfe", "not JSON"),
    ('[1, 2]', "not a BPE tokenizer file"),
    ('{"format": "other", "version": 1, "vocab_size": 256, "merges": []}', "not a BPE tokenizer file"),
    ('{"format": "minigriffin-bpe", "version": 9, "vocab_size": 256, "merges": []}', "version 9"),
    ('{"format": "minigriffin-bpe", "version": 1, "vocab_size": 256, "merges": {}}', "list of"),
    ('{"format": "minigriffin-bpe", "version": 1, "vocab_size": 257, "merges": [[1, 999]]}', "does not exist"),
    ('{"format": "minigriffin-bpe", "version": 1, "vocab_size": 257, "merges": [[1, "a"]]}', "pair of integer"),
    ('{"format": "minigriffin-bpe", "version": 1, "vocab_size": 258, "merges": [[1, 2], [1, 2]]}', "repeat"),
    ('{"format": "minigriffin-bpe", "version": 1, "vocab_size": 300, "merges": [[1, 2]]}', "does not match"),
])
def test_corrupt_file_names_the_file(tmp_path, content, why):
    path = tmp_path / "tokenizer.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(str(path))) as info:
        BPETokenizer.load(path)
    assert why in str(info.value)


def test_corpus_with_bpe_tokens(corpus_dir, tmp_path):
    """load_corpus caches BPE tokens as uint16 under the tokenizer's name; the first book decodes exactly."""
    t = train_bpe_on_folder(corpus_dir, 700)
    corpus = load_corpus(corpus_dir, cache_dir=tmp_path, tokenizer=t)
    first = (corpus_dir / "train" / corpus.train.names[0]).read_text(encoding="utf-8")
    assert corpus.train.tokens.dtype == np.uint16
    assert t.decode(corpus.train.tokens[:corpus.train.doc_starts[1]]) == first
    assert t.token_bytes(corpus.valid.tokens) == sum(
        (corpus_dir / "valid" / n).stat().st_size for n in corpus.valid.names)
