"""The entire-space multi-task product (ESMM, Ma et al., SIGIR 2018).

Two towers give logits ``a`` (click) and ``b`` (conversion given a click) for every impression.
The model's probabilities are

    pCTR   = sigmoid(a)                      P(click | impression)
    pCVR   = sigmoid(b)                      P(conversion | click, impression)
    pCTCVR = pCTR * pCVR                     P(click and conversion | impression)

pCTR and pCTCVR have labels on every impression (click; click and conversion), so both losses
are over the entire impression space and pCVR is learnt through the product, never from the
clicked impressions alone (whose selection biases a click-space CVR model).

For the losses the log-probabilities come straight from the logits, without ever forming a
probability that could round to 0 or 1:

    log pCTCVR       = -softplus(-a) - softplus(-b)
    log (1 - pCTCVR) = log1mexp(log pCTCVR),  log1mexp(x) = log(1 - e^x)

with ``log1mexp`` evaluated as ``log(-expm1(x))`` for ``x > -ln 2`` and ``log1p(-exp(x))``
below (Maechler 2012), each branch on inputs where it is finite.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from cvr_tf.compat import keras, register_keras_serializable, tf

CTR, CVR, CTCVR = "ctr", "cvr", "ctcvr"
_LN2 = math.log(2.0)
_LARGEST_LOG = -1e-30  # log p of the largest p below 1 that the product is allowed to reach


def log1mexp(x: tf.Tensor) -> tf.Tensor:
    """``log(1 - exp(x))`` for ``x < 0``, accurate near 0 and for large ``-x`` alike."""
    x = tf.minimum(x, _LARGEST_LOG)
    near_zero = x > -_LN2
    from_expm1 = tf.math.log(-tf.math.expm1(tf.where(near_zero, x, -_LN2)))
    from_log1p = tf.math.log1p(-tf.exp(tf.where(near_zero, -_LN2, x)))
    return tf.where(near_zero, from_expm1, from_log1p)


def log_probabilities(logit: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """``(log sigmoid(s), log(1 - sigmoid(s)))`` of logits ``s``."""
    return -tf.nn.softplus(-logit), -tf.nn.softplus(logit)


def product_log_probabilities(click_logit: tf.Tensor, conversion_logit: tf.Tensor
                              ) -> tuple[tf.Tensor, tf.Tensor]:
    """``(log pCTCVR, log(1 - pCTCVR))`` for ``pCTCVR = sigmoid(a) sigmoid(b)``."""
    log_p = -tf.nn.softplus(-click_logit) - tf.nn.softplus(-conversion_logit)
    return log_p, log1mexp(log_p)


@register_keras_serializable(package="cvr_tf")
class EntireSpaceProduct(keras.layers.Layer):
    """Tower logits -> probabilities by task: ``sigmoid`` of each, and ``ctcvr = ctr * cvr``.

    Example:

        ```python
        product = EntireSpaceProduct(outputs=("ctr", "cvr", "ctcvr"))
        product({"ctr": a, "cvr": b})  # {"ctr": sigmoid(a), "cvr": sigmoid(b),
                                       #  "ctcvr": sigmoid(a) * sigmoid(b)}
        ```

    Args:
        outputs: The probabilities to return, in order: tower names (``ctr``, ``cvr``) and
            ``ctcvr`` (which needs both towers).
        **kwargs: Keras ``Layer`` arguments.

    Input: a dict tower name -> logits [batch]. Output: a dict output name -> [batch].
    """

    def __init__(self, outputs: tuple[str, ...] | list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._outputs = tuple(outputs)
        unknown = [name for name in self._outputs if name not in (CTR, CVR, CTCVR)]
        if unknown or not self._outputs:
            raise ValueError(f"outputs must be some of {CTR}, {CVR}, {CTCVR}, got "
                             f"{list(self._outputs)}")

    def call(self, logits: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        missing = {CTR, CVR} - set(logits) if CTCVR in self._outputs else set()
        missing |= {name for name in self._outputs if name != CTCVR and name not in logits}
        if missing:
            raise ValueError(f"EntireSpaceProduct needs the logits of {sorted(missing)}")
        probabilities = {name: tf.sigmoid(logit) for name, logit in logits.items()}
        out = {}
        for name in self._outputs:
            out[name] = (probabilities[CTR] * probabilities[CVR] if name == CTCVR
                         else probabilities[name])
        return out

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "outputs": list(self._outputs)}


__all__ = ["CTCVR", "CTR", "CVR", "EntireSpaceProduct", "log1mexp", "log_probabilities",
           "product_log_probabilities"]
