"""Replaying a version's warmup records when it loads, as tensorflow_model_server does.

The records are the export's (:mod:`serving.warmup`): Predict, Classify or Regress requests,
at most :data:`~serving.warmup.MAX_WARMUP_RECORDS`. Each runs through the same
:mod:`serving.server.inference` path as a real request, so the first real requests do not pay
for graph optimization, lazy table initialization or batch-size-specific kernels.
"""

from __future__ import annotations

from serving.server import inference
from serving.server.servable import Servable
from serving.warmup import read_warmup_logs


def warm_up(servable: Servable) -> int:
    """Replays the version's warmup records against it; returns how many ran.

    Raises:
      ValueError: a record is not a Predict, Classify or Regress log, or there are more than
        :data:`MAX_WARMUP_RECORDS`.
      ServingError: a warmup request failed.
    """
    count = 0
    for count, log in enumerate(read_warmup_logs(servable.path), start=1):
        kind = log.WhichOneof("log_type")
        if kind == "predict_log":
            inference.predict(servable, log.predict_log.request)
        elif kind == "classify_log":
            inference.classify(servable, log.classify_log.request)
        elif kind == "regress_log":
            inference.regress(servable, log.regress_log.request)
        else:
            raise ValueError(
                f"{servable.path}: warmup record {count} is a {kind}; only predict, "
                "classify and regress logs are supported"
            )
    return count
