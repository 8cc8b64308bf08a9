"""The one tokenizer of text features: Unicode case, punctuation, CJK, white space, empty text."""

import pyarrow as pa
import pytest

from cvr_tf.compat import tf
from cvr_tf.tokenizer import arrow_tokens, tokenize

CASES = [
    ("Jericó, Antioquia!", ["jericó", "antioquia"]),  # accents kept, punctuation dropped
    ("ÄBC déF", ["äbc", "déf"]),  # non-ASCII upper case folded
    ("ΣΑΣ", ["σας"]),  # Greek, with the final sigma
    ("¿Qué? 5€ (x-y)", ["qué", "5", "x", "y"]),  # Unicode punctuation and symbols
    ("東京タワー hotel", ["東", "京", "タ", "ワ", "ー", "hotel"]),  # one token per CJK character
    ("서울 호텔", ["서", "울", "호", "텔"]),
    ("x\u00a0y p\u3000q", ["x", "y", "p", "q"]),  # no-break and ideographic spaces
    ("a\tb\nc\rd\x0be\x0cf", ["a", "b", "c", "d", "e", "f"]),
    ("", []),
    ("  ,, !", []),
]


def test_tokens_of_each_case():
    tokens = tokenize(tf.constant([text for text, _ in CASES]), max_tokens=8)
    assert [[t.decode() for t in row] for row in tokens.to_list()] == [want for _, want in CASES]


def test_max_tokens_keeps_the_first_tokens():
    tokens = tokenize(tf.constant(["a, b, c", "東京タワー"]), max_tokens=2)
    assert [[t.decode() for t in row] for row in tokens.to_list()] == [["a", "b"], ["東", "京"]]


def test_arrow_tokens_are_the_flat_tensor_tokens_of_every_occurrence():
    cases = CASES + CASES[::-1]  # repeated values are tokenized once, counted each time
    texts = [text for text, _ in cases]
    assert arrow_tokens(pa.array(texts), 8).to_pylist() == [t for _, want in cases for t in want]
    assert arrow_tokens(pa.array([], pa.string()), 8).to_pylist() == []


def test_max_tokens_must_be_positive():
    with pytest.raises(ValueError, match="max_tokens must be positive, got 0"):
        tokenize(tf.constant(["a"]), 0)
