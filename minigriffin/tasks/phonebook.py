"""Phonebook lookup at small scale (Griffin section 6.2, Figure 6c; Jelassi et al. 2024, "Repeat After Me:
Transformers are Better than State Space Models at Copying", and sjelassi/transformers_ssm_copy).

A phonebook of random names and numbers, two of its entries repeated as worked examples, then a third name
and ":"; the model must write that name's number. Griffin runs it on pretrained 7B models with a real
tokenizer; here it is a task for small models trained from scratch, on a character vocabulary of its own:

    PHONEBOOK_VOCAB = "_\\n:0123456789abcdefghijklmnopqrstuvwxyz"    (39 tokens; id = index)

"_" (id 0) is padding, "\\n" ends a line, ":" separates a name from its number. A name is `name_syllables`
random consonant-vowel syllables ("ka", "mo", ...: 21 x 5 = 105 syllables, so 105^2 = 11,025 distinct
two-syllable names), unique within a book; a number is `number_digits` uniform random digits (4 by default:
Jelassi et al. use 10 digits, the first one 6-9, which suits 7B models but not ones trained in minutes).
As in Jelassi et al.'s prompt, the book is followed by a blank line, the two examples, another blank line,
then the query; the three are distinct entries of the book, drawn uniformly.

    text (3 entries, 2-syllable names, 4-digit numbers):
        "kamo:4071\\n" "tibu:9925\\n" "rexa:0316\\n" "\\n" "rexa:0316\\n" "kamo:4071\\n" "\\n" "tibu:" + "9925"

The row is teacher-forced next-token prediction of that text (minigriffin.tasks.common): only the targets
that are the query's number digits are scored (the last `number_digits` positions of the row); the newline
after the number is not part of the text. Names and numbers have fixed lengths, so a book of n entries is
always phonebook_length(n) = (n + 3) x (line length) tokens long. Rows of one batch may have different
numbers of entries; shorter rows are padded on the right, after their answer, with "_" (tokens and targets,
mask False): a causal model's logits at a row's own positions never see the padding, and segment_pos runs
0..T-1 as in an unpadded row.
"""

import numpy as np

from minigriffin.tasks.common import batch_from_stream, check_int, check_rng

PHONEBOOK_VOCAB = "_\n:0123456789abcdefghijklmnopqrstuvwxyz"
PHONEBOOK_PAD = 0                                 # "_"
CONSONANTS, VOWELS = "bcdfghjklmnpqrstvwxyz", "aeiou"
NUM_SYLLABLES = len(CONSONANTS) * len(VOWELS)     # 105
_ID = {ch: i for i, ch in enumerate(PHONEBOOK_VOCAB)}
_NEWLINE, _COLON, _DIGIT0 = _ID["\n"], _ID[":"], _ID["0"]
_CONSONANT_IDS = np.array([_ID[c] for c in CONSONANTS], dtype=np.int64)         # (21,)
_VOWEL_IDS = np.array([_ID[v] for v in VOWELS], dtype=np.int64)                 # (5,)


def encode(text):
    """str -> (N,) int64 token ids of PHONEBOOK_VOCAB; ValueError naming the first character not in it."""
    unknown = sorted(set(text) - set(_ID))
    if unknown:
        raise ValueError(f"text has characters outside PHONEBOOK_VOCAB: {unknown[:5]!r}")
    return np.array([_ID[ch] for ch in text], dtype=np.int64)                    # (N,)


def decode(tokens):
    """(N,) token ids in [0, len(PHONEBOOK_VOCAB)) -> str (padding shows as "_")."""
    tokens = np.asarray(tokens)                                                  # (N,)
    if tokens.size and (tokens.dtype.kind not in "iu" or tokens.min() < 0 or tokens.max() >= len(PHONEBOOK_VOCAB)):
        raise ValueError(f"tokens must be integers in [0, {len(PHONEBOOK_VOCAB)}), got dtype {tokens.dtype}")
    return "".join(PHONEBOOK_VOCAB[t] for t in tokens.tolist())


def line_length(*, name_syllables=2, number_digits=4):
    """Tokens in one "name:number\\n" line: 2 x name_syllables letters + 1 + number_digits + 1."""
    S = check_int("name_syllables", name_syllables, 1)
    D = check_int("number_digits", number_digits, 1)
    return 2 * S + D + 2


def phonebook_length(num_entries, *, name_syllables=2, number_digits=4):
    """Row length T (tokens the model reads) of a phonebook of num_entries entries, before padding:
    num_entries book lines + blank line + 2 example lines + blank line + query name, ":" and number is
    (num_entries + 3) x line_length + 1 tokens of text, one more than T (the last digit is only a target).
    Use it as the x-axis "length in tokens" when plotting accuracy against the size of the book."""
    n = check_int("num_entries", num_entries, 3)
    return (n + 3) * line_length(name_syllables=name_syllables, number_digits=number_digits)


def _entries(rng, n, S, D):
    """One book's lines as tokens: (n, 2S + D + 2), names unique, each row "name:number\\n"."""
    names = rng.choice(NUM_SYLLABLES ** S, size=n, replace=False)                # (n,) distinct name ids
    syllables = names[:, None] // NUM_SYLLABLES ** np.arange(S) % NUM_SYLLABLES  # (n, S) base-105 digits
    letters = np.stack([_CONSONANT_IDS[syllables // len(VOWELS)],
                        _VOWEL_IDS[syllables % len(VOWELS)]], axis=-1)           # (n, S, 2)
    digits = _DIGIT0 + rng.integers(0, 10, size=(n, D))                          # (n, D)
    return np.concatenate([letters.reshape(n, 2 * S), np.full((n, 1), _COLON), digits,
                           np.full((n, 1), _NEWLINE)], axis=1)                   # (n, 2S + D + 2)


def phonebook_batch(rng, batch_size, num_entries, *, name_syllables=2, number_digits=4):
    """A Batch of phonebook-lookup rows (layout in the module docstring).

    rng: numpy.random.Generator (the same seed gives the same arrays). num_entries: an int >= 3 for every
    row, or a sequence of batch_size ints (rows of different lengths, right-padded with PHONEBOOK_PAD).
    Returns minigriffin.data.Batch of (B, T) arrays, T = phonebook_length(max entries); mask scores exactly
    the number_digits answer digits of each row."""
    check_rng(rng)
    B = check_int("batch_size", batch_size, 1)
    S = check_int("name_syllables", name_syllables, 1)
    D = check_int("number_digits", number_digits, 1)
    if isinstance(num_entries, (list, tuple, np.ndarray)):
        if len(num_entries) != B:
            raise ValueError(f"num_entries must be an int or batch_size={B} ints, got {len(num_entries)} values")
        sizes = [check_int("num_entries", n, 3) for n in num_entries]
    else:
        sizes = [check_int("num_entries", num_entries, 3)] * B
    if max(sizes) > NUM_SYLLABLES ** S:
        raise ValueError(f"num_entries={max(sizes)} exceeds the {NUM_SYLLABLES ** S} distinct names of "
                         f"name_syllables={S}; use more syllables")
    L = 2 * S + D + 2
    lengths = [phonebook_length(n, name_syllables=S, number_digits=D) for n in sizes]
    T = max(lengths)
    stream = np.full((B, T + 1), PHONEBOOK_PAD, dtype=np.int64)                  # (B, T + 1)
    scored = np.zeros((B, T), dtype=bool)                                        # (B, T)
    blank = np.array([_NEWLINE])
    for b, n in enumerate(sizes):
        lines = _entries(rng, n, S, D)                                           # (n, L)
        first, second, query = rng.choice(n, size=3, replace=False)
        text = np.concatenate([lines.ravel(), blank, lines[first], lines[second], blank,
                               lines[query, :L - 1]])                            # (lengths[b] + 1,)
        stream[b, :len(text)] = text
        scored[b, lengths[b] - D:lengths[b]] = True         # targets there are the query's digits
    return batch_from_stream(stream, scored)
