"""The server's resource limits: one place for every bound, its default and the flag that sets it.

A server that shares a host must refuse work it cannot do rather than queue or allocate without
bound. These limits are checked before any work or allocation, and each refusal names the limit
and the ``python -m serving.server`` flag that raises it:

* requests running per model: ``--max_in_flight_per_model``; beyond it, requests queue;
* requests queued per model: ``--max_queued_per_model``, ``UNAVAILABLE`` (retry, back off);
* gRPC calls running or waiting for a thread: twice ``--grpc_max_threads``, gRPC's own
  ``RESOURCE_EXHAUSTED``;
* gRPC message size: ``--grpc_max_receive_message_bytes``, gRPC's own ``RESOURCE_EXHAUSTED``;
* declared size of one tensor: ``--max_tensor_bytes``, ``INVALID_ARGUMENT``;
* rows (candidates) per request: ``--max_rows_per_request``, ``INVALID_ARGUMENT``;
* REST body size: ``--rest_api_max_body_bytes``, HTTP 400;
* REST body read deadline: ``--rest_api_timeout_in_ms``, HTTP 408;
* REST open connections: ``--rest_api_num_threads``, HTTP 503.

``tensorflow_model_server`` has ``--rest_api_num_threads`` and ``--rest_api_timeout_in_ms`` under
these names; the other bounds are this server's own (TF Serving leaves them to gRPC's resource
quota and to the batching queue's ``max_enqueued_batches``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import grpc

from serving.errors import ServingError

_MIB = 1 << 20


@dataclass(frozen=True)
class ServerLimits:
    """Bounds on the work and memory one request or connection may claim.

    Attributes:
        max_in_flight_per_model: Requests of one model running at once; more wait in its
            queue. Default 2 per core: more running requests only contend for the cores and
            the GIL. Raise it when batching needs more concurrent requests to fill its batches.
        max_queued_per_model: Requests of one model waiting for a running slot; more answer
            ``UNAVAILABLE`` at once.
        grpc_max_receive_message_bytes: Largest gRPC request message.
        max_tensor_bytes: Largest declared size (product of the dims x the dtype size) of one
            request tensor, checked before its values are read.
        max_rows_per_request: Largest dimension 0 (candidates) of a request.
        rest_api_max_body_bytes: Largest REST body (``Content-Length``).
        rest_api_timeout_in_ms: Longest wait for a REST request's headers and body.
        rest_api_num_threads: REST connections served at once; more get HTTP 503.
        max_json_depth: Deepest nesting of arrays and objects in a REST body.
    """

    max_in_flight_per_model: int = field(default_factory=lambda: 2 * (os.cpu_count() or 1))
    max_queued_per_model: int = 32
    grpc_max_receive_message_bytes: int = 64 * _MIB
    max_tensor_bytes: int = 64 * _MIB
    max_rows_per_request: int = 100_000
    rest_api_max_body_bytes: int = 64 * _MIB
    rest_api_timeout_in_ms: int = 30_000
    rest_api_num_threads: int = 32
    max_json_depth: int = 32

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            least = 0 if name == "max_queued_per_model" else 1
            if not isinstance(value, int) or value < least:
                raise ValueError(f"--{name}={value!r} must be an integer >= {least}")

    def check_tensor(self, name: str, dims: tuple[int, ...], item_bytes: int) -> None:
        """Refuses a tensor whose declared shape is invalid or too large, before allocating it.

        Args:
            name: The input alias, for the message.
            dims: The declared dimension sizes.
            item_bytes: Bytes per element (strings count the minimum of 1).

        Raises:
            ServingError: ``INVALID_ARGUMENT`` for a negative dimension, more rows than
                ``max_rows_per_request`` or more than ``max_tensor_bytes``.
        """
        if any(size < 0 for size in dims):
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input '{name}' declares a negative dimension in tensor_shape {list(dims)}",
            )
        if dims:
            self.check_rows(name, dims[0])
        declared = math.prod(dims) * item_bytes
        if declared > self.max_tensor_bytes:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input '{name}' declares tensor_shape {list(dims)} ({declared} bytes), over the "
                f"limit of {self.max_tensor_bytes} bytes per tensor; send smaller requests or "
                "raise --max_tensor_bytes",
            )

    def check_rows(self, name: str, rows: int) -> None:
        """Refuses a request of more than ``max_rows_per_request`` rows.

        Raises:
            ServingError: ``INVALID_ARGUMENT`` naming the limit and its flag.
        """
        if rows > self.max_rows_per_request:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input '{name}' has {rows} rows, over the limit of {self.max_rows_per_request} "
                "rows per request; split the request or raise --max_rows_per_request",
            )
