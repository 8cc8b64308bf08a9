"""The local development server of TF Serving's gRPC and REST APIs (``python -m serving.server``).

Everything a request touches at serving time lives here, apart from the export side
(:mod:`serving.export`, :mod:`serving.signatures`, :mod:`serving.batching`,
:mod:`serving.warmup`, :mod:`serving.tf_serving_config`), which never imports this package:

```
server.py              start_server / RunningServer: gRPC services, REST API, models
__main__.py            the command line, with tensorflow_model_server's flags
model_manager.py       versions: polling, loading, warmup replay, hot reload, request loggers
servable.py            one loaded version: its signatures, the embed -> dense stages
admission.py           load shedding, deadlines, request metrics
prediction_service.py  PredictionService (Predict, Classify, Regress, GetModelMetadata)
model_service.py       ModelService (GetModelStatus, HandleReloadConfigRequest)
inference.py           request protos -> signature runs -> response protos
batch_scheduler.py     server-side batching (--enable_batching)
warmup_replay.py       replaying a version's warmup records when it loads
rest_api.py, rest_json.py   TF Serving's REST API
metrics.py             Prometheus metrics
```
"""

from serving.server.server import RunningServer, start_server

__all__ = ["RunningServer", "start_server"]
