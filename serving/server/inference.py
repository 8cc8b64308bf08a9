"""Predict, Classify, Regress and GetModelMetadata on one loaded version, as TF Serving does.

These functions turn a TF Serving request proto into a response proto for a given
:class:`~serving.server.servable.Servable`; they know nothing of gRPC, so the gRPC servicer and the
warmup replay share them. ``Classify`` and ``Regress`` need a signature whose ``method_name`` is
``tensorflow/serving/classify`` or ``tensorflow/serving/regress`` (one ``DT_STRING`` input of
serialized ``tf.Example``); any other signature answers ``FAILED_PRECONDITION``, like TF Serving.
Each answered request's time, from its input tensors to its response, goes to the version's
``signature_latency`` metric.
"""

from __future__ import annotations

import time

import grpc
import numpy as np
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    input_pb2,
    model_pb2,
    predict_pb2,
    regression_pb2,
)

from serving.errors import ServingError
from serving.limits import ServerLimits
from serving.server.servable import Servable, SignatureRunner
from serving.tensors import fill_tensor_proto, to_ndarray

DEFAULT_SIGNATURE = "serving_default"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
SIGNATURE_DEF_FIELD = "signature_def"


def _fill_model_spec(spec: model_pb2.ModelSpec, servable: Servable, signature: str = "") -> None:
    spec.name = servable.model_name
    spec.version.value = servable.version
    if signature:
        spec.signature_name = signature


def predict(
    servable: Servable,
    request: predict_pb2.PredictRequest,
    deadline: float | None = None,
    limits: ServerLimits | None = None,
) -> predict_pb2.PredictResponse:
    """Answers a ``PredictRequest``: inputs by alias, optional ``output_filter``.

    Args:
        servable: The version that serves the request.
        request: The request; ``model_spec.signature_name`` defaults to ``serving_default``.
        deadline: ``time.monotonic()`` deadline for time spent waiting in a batching queue.
        limits: The server's size limits, checked on each input before it is read.

    Returns:
        The outputs, with ``model_spec`` naming the model, version and signature that answered.

    Raises:
        ServingError: ``FAILED_PRECONDITION`` for an unknown signature, ``INVALID_ARGUMENT``
            for bad inputs, or the error of batching or of the model.
    """
    started = time.perf_counter()
    runner = servable.signature(request.model_spec.signature_name or DEFAULT_SIGNATURE)
    inputs = {name: to_ndarray(proto, name, limits) for name, proto in request.inputs.items()}
    outputs = runner.run(inputs, request.output_filter, deadline)
    response = predict_pb2.PredictResponse()
    _fill_model_spec(response.model_spec, servable, runner.name)
    for name, array in outputs.items():
        fill_tensor_proto(response.outputs[name], array)
    servable.observe_request(runner.name, time.perf_counter() - started)
    return response


def serialized_examples(request_input: input_pb2.Input) -> np.ndarray:
    """Serializes the examples of a Classify/Regress ``Input``.

    With ``example_list_with_context``, each example is merged over the context (the example's
    features win on a name clash), as TF Serving does.

    Args:
        request_input: ``example_list`` or ``example_list_with_context``.

    Returns:
        An ``object`` array of serialized ``tf.Example`` bytes, one per example.

    Raises:
        ServingError: ``INVALID_ARGUMENT`` when there is no example.
    """
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        serialized = [
            example.SerializeToString() for example in request_input.example_list.examples
        ]
    elif kind == "example_list_with_context":
        with_context = request_input.example_list_with_context
        serialized = []
        for example in with_context.examples:
            merged = example_pb2.Example()
            merged.CopyFrom(with_context.context)
            merged.MergeFrom(example)
            serialized.append(merged.SerializeToString())
    else:
        serialized = []
    if not serialized:
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "Input is empty; put at least one tf.Example in input.example_list",
        )
    return np.array(serialized, dtype=object)


def _example_runner(servable: Servable, signature: str, method: str, kind: str) -> SignatureRunner:
    runner = servable.signature(signature or DEFAULT_SIGNATURE)
    if runner.method_name != method:
        raise ServingError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"Expected {kind} signature method_name to be {method}. Was: {runner.method_name} "
            f"(signature '{runner.name}'); call Predict for this signature instead",
        )
    if len(runner.specs) != 1:
        raise ServingError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"Expected one input Tensor in {kind} signature '{runner.name}', found "
            f"{sorted(runner.specs)}",
        )
    return runner


def _run_on_examples(
    runner: SignatureRunner, request_input: input_pb2.Input, deadline: float | None
) -> tuple[dict[str, np.ndarray], int]:
    examples = serialized_examples(request_input)
    (alias,) = runner.specs
    outputs = runner.run({alias: examples}, (), deadline)
    for name, output in outputs.items():
        if output.ndim == 0 or output.shape[0] != len(examples):
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"output '{name}' of signature '{runner.name}' has shape {list(output.shape)}; "
                f"expected one row per example ({len(examples)})",
            )
    return outputs, len(examples)


def classify(
    servable: Servable,
    request: classification_pb2.ClassificationRequest,
    deadline: float | None = None,
) -> classification_pb2.ClassificationResponse:
    """Answers a ``ClassificationRequest`` with a ``tensorflow/serving/classify`` signature.

    The signature's ``classes`` output (string ``[batch, k]``) gives labels and ``scores``
    (float ``[batch, k]``) gives scores; either may be absent.

    Raises:
        ServingError: ``FAILED_PRECONDITION`` when the signature is not a classification one.
    """
    started = time.perf_counter()
    runner = _example_runner(
        servable, request.model_spec.signature_name, CLASSIFY_METHOD, "classification"
    )
    outputs, count = _run_on_examples(runner, request.input, deadline)
    classes, scores = outputs.get("classes"), outputs.get("scores")
    if classes is None and scores is None:
        raise ServingError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"classification signature '{runner.name}' has neither a 'classes' nor a 'scores' "
            "output",
        )
    width = (classes if classes is not None else scores).reshape(count, -1).shape[1]
    classes = None if classes is None else classes.reshape(count, width)
    scores = None if scores is None else scores.reshape(count, width)
    response = classification_pb2.ClassificationResponse()
    _fill_model_spec(response.model_spec, servable, runner.name)
    for row in range(count):
        classification = response.result.classifications.add()
        for column in range(width):
            entry = classification.classes.add()
            if classes is not None:
                label = classes[row, column]
                entry.label = label.decode() if isinstance(label, bytes) else str(label)
            if scores is not None:
                entry.score = float(scores[row, column])
    servable.observe_request(runner.name, time.perf_counter() - started)
    return response


def regress(
    servable: Servable, request: regression_pb2.RegressionRequest, deadline: float | None = None
) -> regression_pb2.RegressionResponse:
    """Answers a ``RegressionRequest`` with a ``tensorflow/serving/regress`` signature.

    The signature's ``outputs`` output (float ``[batch]`` or ``[batch, 1]``) gives the values.

    Raises:
        ServingError: ``FAILED_PRECONDITION`` when the signature is not a regression one.
    """
    started = time.perf_counter()
    runner = _example_runner(
        servable, request.model_spec.signature_name, REGRESS_METHOD, "regression"
    )
    outputs, count = _run_on_examples(runner, request.input, deadline)
    values = outputs.get("outputs")
    if values is None or values.size != count:
        raise ServingError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"regression signature '{runner.name}' needs an 'outputs' output with one value per "
            f"example; outputs are {sorted(outputs)}",
        )
    response = regression_pb2.RegressionResponse()
    _fill_model_spec(response.model_spec, servable, runner.name)
    for value in values.reshape(count):
        response.result.regressions.add(value=float(value))
    servable.observe_request(runner.name, time.perf_counter() - started)
    return response


def model_metadata(
    servable: Servable, request: get_model_metadata_pb2.GetModelMetadataRequest
) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """Answers ``GetModelMetadata``: the version's ``SignatureDef`` map, as in ``saved_model.pb``.

    Raises:
        ServingError: ``INVALID_ARGUMENT`` unless ``metadata_field`` asks for ``signature_def``
            only (the one field TF Serving supports).
    """
    fields = list(request.metadata_field)
    if not fields:
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "GetModelMetadataRequest must specify at least one metadata_field; use "
            f"metadata_field: '{SIGNATURE_DEF_FIELD}'",
        )
    for field in fields:
        if field != SIGNATURE_DEF_FIELD:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Metadata field {field} is not supported; the only field is "
                f"'{SIGNATURE_DEF_FIELD}'",
            )
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    for name, signature_def in servable.signature_defs.items():
        signature_defs.signature_def[name].CopyFrom(signature_def)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    _fill_model_spec(response.model_spec, servable)
    response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_defs)
    return response
