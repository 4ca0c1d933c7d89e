"""A small books corpus that the tests make themselves: deterministic, learnable, a few hundred KB.

The reliability tests (training, kill and resume, Ctrl-C, the NaN guard, evaluation, the CLI) must run on
every clone, including a user's, who has no books folder. This module writes a corpus with the layout of
the real one (train/ and valid/ folders of UTF-8 .txt books) from a fixed seed, so every run of the tests sees
the same bytes.

The text is sentences from a small grammar (a determiner, an adjective or not, a noun, a verb, a place),
with a few multi-byte UTF-8 words, so a model can learn more than byte frequencies in a few dozen steps:
the tests that check learning compare the validation loss with the unigram byte entropy.
"""

from pathlib import Path

import numpy as np

DETERMINERS = ["the", "a", "one", "every", "that", "this", "my", "her", "his", "our"]
ADJECTIVES = ["old", "young", "quiet", "bright", "cold", "small", "great", "dark", "green", "naïve",
              "gentle", "strange", "tired", "proud", "busy"]
NOUNS = ["man", "woman", "child", "dog", "horse", "captain", "sailor", "farmer", "king", "queen", "bird",
         "café owner", "teacher", "doctor", "stranger", "friend", "river", "ship", "garden", "letter"]
VERBS = ["walked", "looked", "waited", "sang", "laughed", "wrote", "slept", "worked", "spoke", "listened",
         "turned", "smiled", "returned", "travelled", "rested"]
PLACES = ["by the river", "in the garden", "at the harbour", "on the hill", "near the old mill",
          "under the bridge", "in the village", "at the café", "across the field", "behind the church",
          "in the morning", "at night", "before the storm", "after dinner"]

#: the corpus the `corpus_dir` fixture writes: four training books and two validation books
TRAIN_BOOKS, VALID_BOOKS, BOOK_BYTES = 4, 2, 48_000


def sentence(rng):
    """One sentence of the grammar, e.g. 'The quiet sailor waited at the harbour.'"""
    words = [DETERMINERS[rng.integers(len(DETERMINERS))]]
    if rng.random() < 0.6:
        words.append(ADJECTIVES[rng.integers(len(ADJECTIVES))])
    words += [NOUNS[rng.integers(len(NOUNS))], VERBS[rng.integers(len(VERBS))],
              PLACES[rng.integers(len(PLACES))]]
    text = " ".join(words)
    return text[0].upper() + text[1:] + ("." if rng.random() < 0.85 else "!")


def book(seed, n_bytes):
    """A book of about n_bytes UTF-8 bytes: a title line, then paragraphs of 3-7 sentences."""
    rng = np.random.default_rng(seed)
    parts, size = [f"BOOK {seed}\n\n"], 0
    while size < n_bytes:
        paragraph = " ".join(sentence(rng) for _ in range(int(rng.integers(3, 8)))) + "\n\n"
        parts.append(paragraph)
        size += len(paragraph.encode("utf-8"))
    return "".join(parts)


def write_corpus(folder, *, train_books=TRAIN_BOOKS, valid_books=VALID_BOOKS, book_bytes=BOOK_BYTES, seed=0):
    """Write train/ and valid/ .txt books under folder (deterministic in seed); returns the folder."""
    folder = Path(folder)
    for split, count, offset in (("train", train_books, 0), ("valid", valid_books, 1000)):
        (folder / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            (folder / split / f"book{i:02d}.txt").write_text(book(seed + offset + i, book_bytes), encoding="utf-8")
    return folder
