"""Errors carrying the gRPC status code TF Serving would return.

Every failure a request can meet in the local server is a :class:`ServingError` with one of
TF Serving's codes: ``NOT_FOUND`` for an unknown model or version, ``FAILED_PRECONDITION`` for an
unknown signature, ``INVALID_ARGUMENT`` for malformed inputs, ``UNAVAILABLE`` for a full batching
queue and ``DEADLINE_EXCEEDED`` past the client's deadline. TensorFlow's own errors keep their code:
TensorFlow and gRPC number their status codes identically
(``tensorflow/core/protobuf/error_codes.proto``).
"""

from __future__ import annotations

import grpc

from cvr_tf.compat import tf

_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


class ServingError(Exception):
    """A request or load failure with the gRPC status code to report.

    Attributes:
        code: The ``grpc.StatusCode`` TF Serving would answer with.
        message: What went wrong and how to fix it.
    """

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def code_number(self) -> int:
        """The numeric status code, as stored in ``StatusProto.error_code``."""
        return self.code.value[0]

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


def from_tf_error(error: tf.errors.OpError) -> ServingError:
    """Converts a TensorFlow runtime error into a :class:`ServingError` with the same code.

    The op's own message is kept (for example ``Task size 9 is larger than maximum input batch
    size 8`` from an in-graph ``BatchFunction``); the graph-execution preamble and the node
    trace are dropped.

    Args:
        error: The exception a signature call raised.

    Returns:
        The equivalent serving error.
    """
    lines = [line.strip() for line in error.message.splitlines() if line.strip()]
    useful = [
        line
        for line in lines
        if not line.startswith(("Graph execution error", "Detected at node", "<stack traces", "[["))
    ]
    message = "; ".join(useful) if useful else error.message
    return ServingError(_CODE_BY_NUMBER.get(error.error_code, grpc.StatusCode.UNKNOWN), message)
