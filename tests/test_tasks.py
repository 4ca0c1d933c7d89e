"""The synthetic tasks of Griffin section 6.2 (minigriffin.tasks): every generated row satisfies its task's
definition, re-derived from the tokens alone by plain Python; masks score exactly the answer tokens;
generators are deterministic for a seed; bad arguments are rejected by name; the accuracy helpers count
right; and teacher-forced exact match equals greedy decoding's, as minigriffin/tasks/common.py claims.
"""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigriffin.data import Batch
from minigriffin.tasks import (
    PHONEBOOK_PAD,
    PHONEBOOK_VOCAB,
    copy_marker,
    decode,
    encode,
    exact_match,
    exact_match_accuracy,
    induction_batch,
    noise_token,
    phonebook_batch,
    phonebook_length,
    row_token_accuracy,
    selective_copy_batch,
    special_token,
    token_accuracy,
)

seeds = st.integers(0, 2**32 - 1)


def check_batch_form(batch, vocab_size):
    """Fields every task Batch shares: (B, T) int64/bool arrays, targets = next tokens, one document per row."""
    assert isinstance(batch, Batch)
    B, T = batch.tokens.shape
    for name in ("tokens", "targets", "segment_pos"):
        arr = getattr(batch, name)
        assert arr.shape == (B, T) and arr.dtype == np.int64, (name, arr.shape, arr.dtype)
    assert batch.mask.shape == (B, T) and batch.mask.dtype == np.bool_
    assert batch.tokens.min() >= 0 and batch.tokens.max() < vocab_size
    assert batch.targets.min() >= 0 and batch.targets.max() < vocab_size
    np.testing.assert_array_equal(batch.targets[:, :-1], batch.tokens[:, 1:])      # next-token targets
    np.testing.assert_array_equal(batch.segment_pos, np.tile(np.arange(T), (B, 1)))


# --- Selective copying ---------------------------------------------------------------------------------------

@given(seed=seeds, B=st.integers(1, 4), N=st.integers(1, 12), extra=st.integers(0, 40), V=st.integers(3, 20))
def test_selective_copy_rows_are_selective_copying(seed, B, N, extra, V):
    T = 2 * N + extra
    batch = selective_copy_batch(np.random.default_rng(seed), B, T, vocab_size=V, num_data_tokens=N)
    check_batch_form(batch, V)
    assert batch.tokens.shape == (B, T)
    for tokens, targets, mask in zip(batch.tokens.tolist(), batch.targets.tolist(), batch.mask.tolist()):
        markers = [t for t, tok in enumerate(tokens) if tok == V - 1]
        assert len(markers) == 1, tokens                     # the marker occurs once, and only as an input
        m = markers[0]
        data = [tok for tok in tokens[:m] if tok != V - 2]   # the non-noise tokens before the marker, in order
        assert len(data) == N and all(0 <= tok < V - 2 for tok in data)
        assert [t for t, scored in enumerate(mask) if scored] == list(range(m, T))   # the answer positions
        assert [targets[t] for t in range(T) if mask[t]] == data                    # ... copy the data
        assert tokens[m + 1:] == data[:-1]                   # teacher forcing: the answer so far is the input


def test_selective_copy_token_ids_follow_mad_lab():
    assert (copy_marker(16), noise_token(16)) == (15, 14)
    batch = selective_copy_batch(np.random.default_rng(0), 8, 64, vocab_size=16, num_data_tokens=4)
    assert (batch.tokens[:, :60] == 14).sum(axis=1).tolist() == [56] * 8   # 60 - 4 noise before the marker
    assert (batch.tokens[:, 60] == 15).all()


def test_selective_copy_uses_every_slot_of_the_prefix():
    """Data positions are uniform over the prefix: any slot, the first and the last included, can hold data
    (mad-lab's np.insert would always put the last data token just before the marker)."""
    batch = selective_copy_batch(np.random.default_rng(1), 2000, 24, vocab_size=6, num_data_tokens=2)
    is_data = batch.tokens[:, :22] < 4                                             # (B, 22)
    assert is_data.any(axis=0).all()
    assert 0.05 < is_data[:, 21].mean() < 0.15              # P(last slot is data) = 2/22 (binomial sd 0.006)


def test_selective_copy_at_the_paper_size():
    batch = selective_copy_batch(np.random.default_rng(0), 64, 1024)               # Griffin's setting
    assert batch.tokens.shape == (64, 1024) and batch.mask.sum() == 64 * 16


# --- Induction heads -----------------------------------------------------------------------------------------

@given(seed=seeds, B=st.integers(1, 4), T=st.integers(3, 80), V=st.integers(3, 20))
def test_induction_rows_are_induction_heads(seed, B, T, V):
    batch = induction_batch(np.random.default_rng(seed), B, T, vocab_size=V)
    check_batch_form(batch, V)
    assert batch.tokens.shape == (B, T)
    special = V - 1
    for tokens, targets, mask in zip(batch.tokens.tolist(), batch.targets.tolist(), batch.mask.tolist()):
        where = [t for t, tok in enumerate(tokens) if tok == special]
        assert len(where) == 2 and where[1] == T - 1, tokens  # once inside, once at the end
        p = where[0]
        assert p + 1 < T - 1                                   # the recalled token is a symbol, not the end
        assert mask == [False] * (T - 1) + [True]
        assert targets[T - 1] == tokens[p + 1] != special


@settings(deadline=None)
@given(seed=seeds)
def test_induction_evaluates_at_16x_the_training_length(seed):
    batch = induction_batch(np.random.default_rng(seed), 2, 16 * 256)
    check_batch_form(batch, 16)
    assert ((batch.tokens == special_token(16)).sum(axis=1) == 2).all()
    p = (batch.tokens[:, :-1] == 15).argmax(axis=1)                                # (B,)
    np.testing.assert_array_equal(batch.targets[:, -1], batch.tokens[np.arange(2), p + 1])


def test_induction_trigger_can_be_anywhere():
    batch = induction_batch(np.random.default_rng(2), 3000, 8, vocab_size=4)
    p = (batch.tokens[:, :-1] == 3).argmax(axis=1)                                 # (B,)
    assert set(p.tolist()) == set(range(6))                  # 0 .. T - 3, uniform (500 expected each)


# --- Phonebook -----------------------------------------------------------------------------------------------

LINE = re.compile(r"([a-z]+):([0-9]+)")


def parse_phonebook(row_text, S, D):
    """(book, examples, query name, query line's number field as written) from a row's text."""
    book_text, examples_text, query_text = row_text.split("\n\n")
    book = [LINE.fullmatch(line).groups() for line in book_text.split("\n")]
    examples = [LINE.fullmatch(line).groups() for line in examples_text.strip("\n").split("\n")]
    name, number = query_text.split(":")
    for n, num in book + examples + [(name, number)]:
        assert len(n) == 2 * S and len(num) == D, (n, num)
        assert re.fullmatch("([bcdfghjklmnpqrstvwxyz][aeiou])+", n), n
    return book, examples, name, number


@settings(deadline=None)
@given(seed=seeds, sizes=st.lists(st.integers(3, 30), min_size=1, max_size=4), S=st.integers(1, 3),
       D=st.integers(1, 10), same=st.booleans())
def test_phonebook_rows_are_lookups(seed, sizes, S, D, same):
    B = len(sizes)
    entries = sizes[0] if same else sizes
    sizes = [sizes[0]] * B if same else sizes
    batch = phonebook_batch(np.random.default_rng(seed), B, entries, name_syllables=S, number_digits=D)
    check_batch_form(batch, len(PHONEBOOK_VOCAB))
    lengths = [phonebook_length(n, name_syllables=S, number_digits=D) for n in sizes]
    assert batch.tokens.shape == (B, max(lengths))
    for b, (n, length) in enumerate(zip(sizes, lengths)):
        tokens, targets, mask = batch.tokens[b], batch.targets[b], batch.mask[b]
        assert np.flatnonzero(mask).tolist() == list(range(length - D, length))   # the D answer digits
        assert not (tokens[:length] == PHONEBOOK_PAD).any()      # padding only after the row's own text
        assert (tokens[length + 1:] == PHONEBOOK_PAD).all() and (targets[length:] == PHONEBOOK_PAD).all()
        text = decode(np.r_[tokens[:length], targets[length - 1]])
        book, examples, name, number = parse_phonebook(text, S, D)
        assert number == decode(targets[mask])                 # the scored targets are the query's number
        names = [entry[0] for entry in book]
        assert len(book) == n and len(set(names)) == n         # n entries, names unique
        lookup = dict(book)
        assert len(examples) == 2 and all(lookup[e] == num for e, num in examples)   # worked examples
        assert name in lookup and lookup[name] == number       # the answer is the book's number for the name
        assert len({examples[0][0], examples[1][0], name}) == 3


def test_phonebook_vocab_and_codec():
    assert len(PHONEBOOK_VOCAB) <= 64 and len(set(PHONEBOOK_VOCAB)) == len(PHONEBOOK_VOCAB)
    assert PHONEBOOK_VOCAB[PHONEBOOK_PAD] == "_"
    text = "kamo:4071\n\nrexa:0316\n"
    assert decode(encode(text)) == text
    assert encode(text).dtype == np.int64
    with pytest.raises(ValueError, match="outside PHONEBOOK_VOCAB"):
        encode("Kamo: 4071")
    with pytest.raises(ValueError, match="tokens"):
        decode(np.array([0, len(PHONEBOOK_VOCAB)]))


def test_phonebook_length_counts_lines():
    assert phonebook_length(3) == 6 * 10                       # "kamo:4071\n" is 10 tokens
    assert phonebook_length(100, name_syllables=3, number_digits=10) == 103 * 18
    batch = phonebook_batch(np.random.default_rng(0), 2, 100)
    assert batch.tokens.shape == (2, 1030) and not batch.mask[:, :1026].any()


def test_phonebook_answers_vary_with_the_query():
    """The query is a uniformly chosen entry and numbers are uniform: no fixed position or digit to learn."""
    batch = phonebook_batch(np.random.default_rng(3), 400, 5)
    text = [decode(row) for row in batch.tokens]
    queries = [t.split("\n\n")[2][:4] for t in text]
    positions = [[line[:4] for line in t.split("\n\n")[0].split("\n")].index(q) for t, q in zip(text, queries)]
    assert set(positions) == set(range(5))
    assert set(batch.targets[batch.mask].tolist()) == set(encode("0123456789").tolist())


# --- Every generator: determinism and argument checks --------------------------------------------------------

GENERATORS = {
    "selective_copy": lambda rng: selective_copy_batch(rng, 4, 64, vocab_size=16, num_data_tokens=8),
    "induction": lambda rng: induction_batch(rng, 4, 64),
    "phonebook": lambda rng: phonebook_batch(rng, 4, [6, 9, 3, 12]),
}


@pytest.mark.parametrize("task", GENERATORS)
def test_same_seed_same_batch_other_seed_other_batch(task):
    make = GENERATORS[task]
    first, again = make(np.random.default_rng(7)), make(np.random.default_rng(7))
    other = make(np.random.default_rng(8))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first.tokens, other.tokens)
    assert not np.array_equal(first.targets[first.mask], other.targets[other.mask])   # answers differ too


BAD_ARGUMENTS = [
    (selective_copy_batch, (4, 64), {"vocab_size": 2}, "vocab_size"),
    (selective_copy_batch, (4, 64), {"num_data_tokens": 0}, "num_data_tokens"),
    (selective_copy_batch, (4, 31), {"num_data_tokens": 16}, "seq_len"),
    (selective_copy_batch, (0, 64), {}, "batch_size"),
    (selective_copy_batch, (4, 64.0), {}, "seq_len"),
    (selective_copy_batch, (True, 64), {}, "batch_size"),
    (induction_batch, (4, 2), {}, "seq_len"),
    (induction_batch, (4, 64), {"vocab_size": 2}, "vocab_size"),
    (induction_batch, (-1, 64), {}, "batch_size"),
    (phonebook_batch, (4, 2), {}, "num_entries"),
    (phonebook_batch, (4, [5, 5, 5]), {}, "num_entries"),
    (phonebook_batch, (2, [5, 2]), {}, "num_entries"),
    (phonebook_batch, (4, 106), {"name_syllables": 1}, "num_entries"),
    (phonebook_batch, (4, 5), {"name_syllables": 0}, "name_syllables"),
    (phonebook_batch, (4, 5), {"number_digits": 0}, "number_digits"),
    (phonebook_length, (2,), {}, "num_entries"),
]


@pytest.mark.parametrize("make, args, kwargs, name", BAD_ARGUMENTS,
                         ids=[f"{f.__name__}-{name}-{i}" for i, (f, _, _, name) in enumerate(BAD_ARGUMENTS)])
def test_bad_arguments_raise_value_error_naming_them(make, args, kwargs, name):
    call_args = args if make is phonebook_length else (np.random.default_rng(0), *args)
    with pytest.raises(ValueError, match=name):
        make(*call_args, **kwargs)


@pytest.mark.parametrize("task", GENERATORS)
def test_rng_must_be_a_generator(task):
    with pytest.raises(TypeError, match="rng"):
        GENERATORS[task](0)


def test_smallest_legal_arguments_work():
    assert selective_copy_batch(np.random.default_rng(0), 1, 2, vocab_size=3, num_data_tokens=1).mask.sum() == 1
    batch = induction_batch(np.random.default_rng(0), 1, 3, vocab_size=3)
    assert batch.tokens[0, 0] == 2 and batch.tokens[0, 2] == 2 and batch.targets[0, 2] == batch.tokens[0, 1]
    assert phonebook_batch(np.random.default_rng(0), 1, 105, name_syllables=1).mask.sum() == 4


# --- Accuracy helpers ----------------------------------------------------------------------------------------

def one_hot_logits(tokens, V):
    return np.eye(V)[tokens] * 5.0                                                 # (B, T, V)


@pytest.mark.parametrize("task", GENERATORS)
def test_accuracy_of_perfect_and_partly_wrong_logits(task):
    batch = GENERATORS[task](np.random.default_rng(11))
    V = len(PHONEBOOK_VOCAB) if task == "phonebook" else 16
    wrong_everywhere = one_hot_logits((batch.targets + 1) % V, V)                 # (B, T, V)
    logits = np.where(batch.mask[..., None], one_hot_logits(batch.targets, V), wrong_everywhere)
    assert token_accuracy(logits, batch) == 1.0            # unscored positions are wrong and do not count
    assert exact_match(logits, batch).tolist() == [True] * 4 and exact_match_accuracy(logits, batch) == 1.0
    rows, cols = np.nonzero(batch.mask)
    flip = [0] if task == "induction" else [0, 1]          # spoil one or two answer tokens of row 0, one of row 2
    flip += [int(np.flatnonzero(rows == 2)[0])]
    logits[rows[flip], cols[flip]] = wrong_everywhere[rows[flip], cols[flip]]
    assert token_accuracy(logits, batch) == pytest.approx(1 - len(flip) / len(rows), abs=1e-12)
    assert exact_match(logits, batch).tolist() == [False, True, False, True]
    assert exact_match_accuracy(logits, batch) == 0.5
    # per row: row 0 lost len(flip) - 1 of its answer tokens, row 2 one; exact in float64 up to one division
    per_row = batch.mask.sum(axis=1)                                               # (B,) answer tokens per row
    lost = np.array([len(flip) - 1, 0, 1, 0])
    np.testing.assert_allclose(row_token_accuracy(logits, batch), 1 - lost / per_row, rtol=0, atol=1e-15)


def test_accuracy_checks_shapes_and_empty_masks():
    batch = induction_batch(np.random.default_rng(0), 2, 10)
    with pytest.raises(ValueError, match="logits"):
        token_accuracy(np.zeros((2, 9, 16)), batch)
    empty = batch._replace(mask=np.zeros_like(batch.mask))
    with pytest.raises(ValueError, match="mask"):
        token_accuracy(np.zeros((2, 10, 16)), empty)
    with pytest.raises(ValueError, match="mask"):
        exact_match(np.zeros((2, 10, 16)), empty)
    with pytest.raises(ValueError, match="mask"):
        row_token_accuracy(np.zeros((2, 10, 16)), empty)


def greedy_answers(model, batch):
    """Greedy decoding, one token at a time, of each row's answer from its prompt (the tokens up to its first
    scored position). model: (T,) tokens -> (T, V) causal logits. Returns one answer list per row."""
    answers = []
    for tokens, mask in zip(batch.tokens, batch.mask):
        scored = np.flatnonzero(mask)
        sequence = list(tokens[:scored[0] + 1])
        for _ in scored:
            sequence.append(int(model(np.array(sequence))[-1].argmax()))
        answers.append(sequence[scored[0] + 1:])
    return answers


def copy_model(rng, V, T):
    """A random causal model for selective copying that is often right: at each position it computes the
    correct next answer token from the tokens so far (the k-th data token, k positions after the marker),
    adds a random score per (position, input token), and otherwise outputs noise. (T,) tokens -> (T, V)."""
    table = rng.standard_normal((T, V, V))                                         # (T, V, V)

    def model(tokens):
        logits = table[np.arange(len(tokens)), tokens]                             # (t, V)
        marker = np.flatnonzero(tokens == V - 1)
        if marker.size:
            data = [tok for tok in tokens[:marker[0]] if tok != V - 2]
            for t in range(marker[0], len(tokens)):
                if t - marker[0] < len(data):
                    logits[t, data[t - marker[0]]] += 1.5
        return logits
    return model


@settings(deadline=None, max_examples=20)
@given(seed=seeds)
def test_teacher_forced_exact_match_is_greedy_exact_match(seed):
    """Greedy decoding, token by token, writes the whole answer iff exact_match (one teacher-forced pass) says
    it does, for random causal models."""
    rng = np.random.default_rng(seed)
    V, T = 6, 16
    model = copy_model(rng, V, T)
    batch = selective_copy_batch(rng, 16, T, vocab_size=V, num_data_tokens=3)
    logits = np.stack([model(row) for row in batch.tokens])                        # (B, T, V)
    greedy = [answer == t[m].tolist()
              for answer, t, m in zip(greedy_answers(model, batch), batch.targets, batch.mask)]
    assert exact_match(logits, batch).tolist() == greedy


def test_greedy_equivalence_check_sees_both_verdicts():
    """The random models above are neither always right nor always wrong, so the equivalence is tested on
    both outcomes, and per-token accuracy (which greedy decoding has no equal of) sits between them."""
    rng = np.random.default_rng(0)
    model = copy_model(rng, 6, 16)
    batch = selective_copy_batch(rng, 200, 16, vocab_size=6, num_data_tokens=3)
    logits = np.stack([model(row) for row in batch.tokens])                        # (B, T, V)
    greedy = [answer == t[m].tolist()
              for answer, t, m in zip(greedy_answers(model, batch), batch.targets, batch.mask)]
    assert exact_match(logits, batch).tolist() == greedy
    assert 0.1 < np.mean(greedy) < 0.9, np.mean(greedy)
    assert np.mean(greedy) < token_accuracy(logits, batch) < 1.0
