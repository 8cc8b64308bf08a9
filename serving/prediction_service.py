"""The gRPC PredictionService: Predict, Classify, Regress and GetModelMetadata.

A thin adapter: each call resolves its ``ModelSpec`` with the :class:`ModelManager` (holding the
version for the duration of the call, so a hot reload cannot unload it mid-request), hands the
request to :mod:`serving.inference`, and turns a :class:`ServingError` into the gRPC status TF
Serving would send. ``MultiInference`` is left unimplemented (``UNIMPLEMENTED``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
from google.protobuf.message import Message
from tensorflow_serving.apis import model_pb2, prediction_service_pb2_grpc

from serving import inference
from serving.errors import ServingError
from serving.model_manager import ModelManager
from serving.servable import Servable


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
    """TF Serving's ``tensorflow.serving.PredictionService`` over a :class:`ModelManager`."""

    def __init__(self, manager: ModelManager) -> None:
        self._manager = manager

    def _serve(
        self,
        context: grpc.ServicerContext,
        model_spec: model_pb2.ModelSpec,
        handler: Callable[[Servable, float | None], Message],
    ) -> Message:
        try:
            deadline = request_deadline(context)
            with self._manager.servable(model_spec) as servable:
                return handler(servable, deadline)
        except ServingError as error:
            context.abort(error.code, error.message)

    def Predict(self, request, context):
        return self._serve(
            context,
            request.model_spec,
            lambda servable, deadline: inference.predict(servable, request, deadline),
        )

    def Classify(self, request, context):
        return self._serve(
            context,
            request.model_spec,
            lambda servable, deadline: inference.classify(servable, request, deadline),
        )

    def Regress(self, request, context):
        return self._serve(
            context,
            request.model_spec,
            lambda servable, deadline: inference.regress(servable, request, deadline),
        )

    def GetModelMetadata(self, request, context):
        return self._serve(
            context,
            request.model_spec,
            lambda servable, _: inference.model_metadata(servable, request),
        )
