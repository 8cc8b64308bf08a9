"""The gRPC ModelService: GetModelStatus and HandleReloadConfigRequest.

``GetModelStatus`` reports each known version's state (``LOADING``, ``AVAILABLE``, ``UNLOADING``,
``END``) with the load error, if any. ``HandleReloadConfigRequest`` swaps the served models for
those of a new ``ModelServerConfig`` and answers once they are loaded; a failure is returned both
as the gRPC status and, like TF Serving, in ``ReloadConfigResponse.status``.
"""

from __future__ import annotations

from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
)

from serving.errors import ServingError
from serving.server.model_manager import ModelManager


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """TF Serving's ``tensorflow.serving.ModelService`` over a :class:`ModelManager`."""

    def __init__(self, manager: ModelManager) -> None:
        self._manager = manager

    def GetModelStatus(self, request, context):
        try:
            statuses = self._manager.model_status(request.model_spec)
        except ServingError as error:
            context.abort(error.code, error.message)
        return get_model_status_pb2.GetModelStatusResponse(model_version_status=statuses)

    def HandleReloadConfigRequest(self, request, context):
        response = model_management_pb2.ReloadConfigResponse()
        try:
            self._manager.reload_config(request.config)
        except ServingError as error:
            response.status.error_code = error.code_number
            response.status.error_message = error.message
            context.set_code(error.code)
            context.set_details(error.message)
        return response
