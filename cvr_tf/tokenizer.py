"""The one text tokenizer of ``text`` features, run by the model and by the pipeline.

Both the embedding part (:mod:`cvr_tf.embedding`, on every served request) and the pipeline's
vocabulary counts (:mod:`cvr_tf.vocabulary`, on Arrow batches) call :func:`tokenize`, the same
TensorFlow ops, so a token the pipeline counts is by construction the token the model looks up.
For a string ``x`` the tokens are, in order:

1. ``lower(x)``: Unicode lower-casing of every code point (``"ÄBC"`` -> ``"äbc"``,
   ``"ΣΑΣ"`` -> ``"σασ"``);
2. every punctuation or symbol code point (Unicode categories ``P*`` and ``S*``: ``,`` ``¿``
   ``。`` ``€``...) replaced by a space, so ``"jericó,"`` gives ``"jericó"``;
3. every CJK ideograph, kana or hangul syllable made a token of its own (these scripts do not
   separate words by spaces; one token per character is the usual subword-free choice);
4. a split on runs of Unicode white space (categories ``Z*`` and the ASCII controls
   ``\\t \\n \\v \\f \\r``), empty tokens dropped, the first ``max_tokens`` kept.

Core TensorFlow has no Unicode normalization op, and the tokenizer must run in a stock TF Serving
binary, so compatibility forms (NFKC) are not folded: full-width ``"ＡＢ"`` stays its own token.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cvr_tf.compat import tf

_PUNCTUATION = r"[\p{P}\p{S}]"
_SEPARATE_SCRIPTS = r"([\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}])"
_WHITE_SPACE = r"[\s\v\p{Z}]+"


def tokenize(texts: tf.Tensor, max_tokens: int) -> tf.RaggedTensor:
    """Tokens of each string, ``[batch, (<= max_tokens)]``.

    Args:
      texts: a string tensor ``[batch]`` (UTF-8).
      max_tokens: tokens kept per string, the first ones.

    Returns:
      A ragged string tensor of each string's tokens (none for empty or all-punctuation text).
    """
    if max_tokens <= 0:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    text = tf.strings.lower(texts, encoding="utf-8")
    text = tf.strings.regex_replace(text, _PUNCTUATION, " ")
    text = tf.strings.regex_replace(text, _SEPARATE_SCRIPTS, r" \1 ")
    text = tf.strings.strip(tf.strings.regex_replace(text, _WHITE_SPACE, " "))
    tokens = tf.strings.split(text, sep=" ")
    non_empty = tf.ragged.boolean_mask(tokens, tf.strings.length(tokens) > 0)
    return non_empty[:, :max_tokens]


def arrow_tokens(values: pa.Array, max_tokens: int) -> pa.Array:
    """Every token of a non-null Arrow string array, flat, through :func:`tokenize`.

    Each distinct string is tokenized once (a query repeats over its request's candidates, a
    title over its item's impressions), and its tokens repeated for each occurrence.
    """
    if len(values) == 0:
        return pa.array([], pa.string())
    encoded = pc.dictionary_encode(values)
    distinct = np.asarray(encoded.dictionary.to_numpy(zero_copy_only=False), dtype=object)
    tokens = tokenize(tf.constant(distinct, tf.string), max_tokens)
    per_value = pa.LargeListArray.from_arrays(
        pa.array(tokens.row_splits.numpy(), pa.int64()),
        pa.array(tokens.flat_values.numpy(), pa.binary()).cast(pa.string()))
    return pc.list_flatten(per_value.take(encoded.indices))


__all__ = ["arrow_tokens", "tokenize"]
