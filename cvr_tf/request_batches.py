"""Whole requests as ``tf.data`` elements, for batches a listwise loss can use.

A listwise loss (:func:`cvr_tf.losses.listwise_softmax_cross_entropy`) is a softmax over the
candidates of one request *within one batch*. Shuffled record by record, a batch of ``B`` rows
out of ``N`` holds about ``B K / N`` of a request's ``K`` candidates, i.e. almost never two of
them: the loss degenerates to a per-example term. Grouped batches shuffle whole requests
instead and then cut the stream of their rows into batches.

How a request's rows lie in the spans (the pipeline's contract, :mod:`pipelines.chunks` and
:mod:`pipelines.span_graph`): the split and the shard of a row are hashes of its request key, so
all rows of a request are in one shard file of one span; a shard is the concatenation, in log
order, of the rows its chunks wrote, so a request's rows are *consecutive* in the shard whenever
they are consecutive in the logs (as in search-log exports and the simulator, which write a
request's impressions together). A request is therefore a run of consecutive records with the
same key in one file. Rows of one key that the logs scatter (e.g. over two Parquet files) form
several runs, and so several groups: still correct batches, only smaller lists.

The batching rule (:func:`pack_requests`): requests, shuffled as units, are laid end to end and
the row stream is cut every ``batch_size`` rows. Every batch is full (fixed shapes, as
``drop_remainder=True`` and the distribution strategies need), every request in a batch is whole
except the first and the last, which continue in the neighbouring batch, and a request longer
than ``batch_size`` spans several batches. No padding rows are invented, so batch statistics and
pointwise terms are unchanged. With ``K`` rows per request, about ``K / batch_size`` of the rows
of a batch belong to a cut request; each part of it is a softmax over that part's candidates,
which is what the listwise loss documents. The order is a pure function of the files and the
seed, so a resumed run that skips the batches it consumed sees the same stream.
"""

from __future__ import annotations

from cvr_tf.compat import tf
from cvr_tf.losses import LISTWISE_LOSSES

GROUP_BATCHES = ("auto", "on", "off")
"""Values of ``TrainConfig.group_batches``: ``auto`` groups for listwise losses only."""

_BLOCK = 4096  # records whose keys one op parses


def groups_requests(group_batches: str, loss: str) -> bool:
    """Whether training batches hold whole requests: ``on``, ``off``, or ``auto`` = listwise loss.

    ``auto`` is a setting of its own rather than a bool default, so a config records that the
    choice followed the loss (and follows it when the loss changes), and ``on``/``off`` stay
    explicit overrides: grouping costs a pointwise loss some shuffle randomness for nothing.

    Raises:
      ValueError: an unknown setting, naming the choices.
    """
    if group_batches not in GROUP_BATCHES:
        raise ValueError(f"group_batches must be one of {', '.join(GROUP_BATCHES)}, got "
                         f"{group_batches!r}")
    if group_batches == "auto":
        return loss in LISTWISE_LOSSES
    return group_batches == "on"


def file_requests(path: tf.Tensor, group_key: str) -> tf.data.Dataset:
    """The requests of one GZIP TFRecord file, in file order.

    Each element is the ``[n]`` vector of serialized records of one run of consecutive records
    sharing ``group_key`` (a string column). Records are read in blocks of ``_BLOCK`` whose keys
    are parsed by one op; a ``tf.data`` scan over the blocks carries the last, possibly
    unfinished, run of a block into the next and emits the finished runs as a ragged batch. An
    end marker per file flushes the last run, so runs never reach across files.
    """
    key_spec = {group_key: tf.io.FixedLenFeature([], tf.string)}
    blocks = tf.data.TFRecordDataset(path, compression_type="GZIP").batch(_BLOCK).map(
        lambda records: (tf.io.parse_example(records, key_spec)[group_key], records,
                         tf.constant(False)))
    end = tf.data.Dataset.from_tensors(
        (tf.zeros([0], tf.string), tf.zeros([0], tf.string), tf.constant(True)))
    initial = (tf.zeros([0], tf.string), tf.zeros([0], tf.string))
    runs = blocks.concatenate(end).scan(initial, _finished_runs)
    return runs.flat_map(lambda records, lengths: tf.data.Dataset.from_tensor_slices(
        tf.RaggedTensor.from_row_lengths(records, lengths)))


def _finished_runs(carry: tuple[tf.Tensor, tf.Tensor], block: tuple[tf.Tensor, ...]
                   ) -> tuple[tuple[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    """One scan step: ((keys, records) carried on, (records of finished runs, run lengths)).

    With the carried and the new rows ``x_0..x_{n-1}``, runs start where the key changes
    (``start_0 = 0``); all runs before the last start are finished, and at the end marker the
    last one too.
    """
    carry_keys, carry_records = carry
    keys, records, is_end = block
    keys = tf.concat([carry_keys, keys], 0)
    records = tf.concat([carry_records, records], 0)
    n = tf.size(keys)
    change = tf.concat([tf.ones([tf.minimum(n, 1)], tf.bool),
                        tf.not_equal(keys[1:], keys[:-1])], 0)
    starts = tf.cast(tf.where(change)[:, 0], tf.int32)
    cut = tf.cond(tf.logical_or(is_end, tf.equal(n, 0)), lambda: n, lambda: starts[-1])
    bounds = tf.concat([starts[starts < cut], tf.reshape(cut, [1])], 0)
    return (keys[cut:], records[cut:]), (records[:cut], bounds[1:] - bounds[:-1])


def pack_requests(requests: tf.data.Dataset, batch_size: int, drop_remainder: bool
                  ) -> tf.data.Dataset:
    """Batches of ``batch_size`` serialized records from a dataset of requests (see the module
    docstring for the rule): the requests' rows end to end, cut every ``batch_size`` rows."""
    return requests.unbatch().batch(batch_size, drop_remainder=drop_remainder)


__all__ = ["GROUP_BATCHES", "file_requests", "groups_requests", "pack_requests"]
