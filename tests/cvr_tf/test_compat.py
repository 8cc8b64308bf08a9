"""The absl log filter that keeps TensorFlow's own INFO chatter out of the jobs' logs."""

import logging
import os

from cvr_tf.compat import QuietTensorFlowInfo, tf


def _record(path: str, level: int) -> logging.LogRecord:
    return logging.LogRecord("absl", level, path, 1, "message", None, None)


def test_tensorflow_info_is_dropped_and_everything_else_passes():
    quiet = QuietTensorFlowInfo()
    saver = os.path.join(os.path.dirname(tf.__file__), "python", "checkpoint", "saver.py")
    assert not quiet.filter(_record(saver, logging.INFO))
    assert quiet.filter(_record(saver, logging.WARNING))
    assert quiet.filter(_record(os.path.abspath(__file__), logging.INFO))
    assert any(isinstance(f, QuietTensorFlowInfo) for f in logging.getLogger("absl").filters)
