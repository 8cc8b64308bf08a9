"""The gRPC PredictionService: Predict, Classify, Regress and GetModelMetadata.

A thin adapter: each call passes the :class:`~serving.server.admission.RequestGate` (which
resolves its ``ModelSpec``, holds the version for the duration of the call so that a hot reload
cannot unload it mid-request, sheds load and counts the answer), hands the request to
:mod:`serving.server.inference`, and turns a :class:`ServingError` into the gRPC status TF
Serving would send. ``MultiInference`` is left unimplemented (``UNIMPLEMENTED``). A Predict
answered for a model whose config has a ``logging_config`` is logged when sampled
(:mod:`serving.request_log`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
from google.protobuf.message import Message
from tensorflow_serving.apis import model_pb2, prediction_service_pb2_grpc

from serving.errors import ServingError
from serving.server import inference
from serving.server.admission import METADATA_API, RequestGate
from serving.server.servable import Servable


def request_deadline(context: grpc.ServicerContext) -> float | None:
    """The call's deadline as a ``time.monotonic()`` value, or ``None`` without one.

    Raises:
        ServingError: ``DEADLINE_EXCEEDED`` when the deadline has already passed.
    """
    remaining = context.time_remaining()
    if remaining is None:
        return None
    if remaining <= 0:
        raise ServingError(
            grpc.StatusCode.DEADLINE_EXCEEDED, "the request's deadline passed before it ran"
        )
    return time.monotonic() + remaining


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """TF Serving's ``tensorflow.serving.PredictionService`` behind a :class:`RequestGate`."""

    def __init__(self, gate: RequestGate) -> None:
        self._gate = gate

    def _serve(
        self,
        context: grpc.ServicerContext,
        model_spec: model_pb2.ModelSpec,
        api: str,
        handler: Callable[[Servable, float | None], Message],
    ) -> Message:
        try:
            deadline = request_deadline(context)
            with self._gate.serve(model_spec, api, "GRPC", deadline) as servable:
                return handler(servable, deadline)
        except ServingError as error:
            context.abort(error.code, error.message)

    def Predict(self, request, context):
        limits = self._gate.limits
        response = self._serve(
            context,
            request.model_spec,
            "predict",
            lambda servable, deadline: inference.predict(servable, request, deadline, limits),
        )
        logger = self._gate.manager.request_logger(request.model_spec.name)
        if logger is not None and logger.sampled():  # the model's logging_config
            logger.log_predict(request, response)
        return response

    def Classify(self, request, context):
        return self._serve(
            context,
            request.model_spec,
            "classify",
            lambda servable, deadline: inference.classify(servable, request, deadline),
        )

    def Regress(self, request, context):
        return self._serve(
            context,
            request.model_spec,
            "regress",
            lambda servable, deadline: inference.regress(servable, request, deadline),
        )

    def GetModelMetadata(self, request, context):
        return self._serve(
            context,
            request.model_spec,
            METADATA_API,
            lambda servable, _: inference.model_metadata(servable, request),
        )
