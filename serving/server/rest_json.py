"""TF Serving's REST predict body <-> numpy, strictly: a malformed value is ``INVALID_ARGUMENT``.

A body is ``{"signature_name": ..., "instances": [...]}`` (row format: one object of
input -> value per candidate, or bare values for a one-input signature), answered by
``{"predictions": [...]}``; or ``{"inputs": {input: [values...]}}`` (columnar format), answered
by ``{"outputs": ...}``. Binary strings travel as ``{"b64": "..."}`` and are decoded strictly
(RFC 4648 alphabet and padding).

Each input's JSON value is checked before any array is built: it must be rectangular (no ragged
lists), at most ``max_json_depth`` deep, with at most ``max_rows_per_request`` rows, and every
leaf must match the signature's dtype (a string or ``{"b64"}`` object for ``DT_STRING``, a
JSON number for numeric inputs, ``true``/``false`` for ``DT_BOOL``; never ``null``). The
refusals name the input, as the gRPC path's validation does, so both entry points refuse the
same requests with the same code.
"""

from __future__ import annotations

import base64
import binascii
import time

import grpc
import numpy as np
from tensorflow_serving.apis import predict_pb2

from cvr_tf.compat import tf
from serving.errors import ServingError
from serving.limits import ServerLimits
from serving.request_log import RequestLogger
from serving.server import inference
from serving.server.servable import Servable
from serving.tensors import InputSpec, fill_tensor_proto


def invalid(message: str) -> ServingError:
    """An ``INVALID_ARGUMENT`` error (HTTP 400)."""
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _shape_and_leaves(name: str, value, max_depth: int) -> tuple[tuple[int, ...], list]:
    """The shape of a rectangular nested list and its leaves in row-major order."""
    shape: list[int] = []
    level = [value]
    while level and isinstance(level[0], list):
        if len(shape) >= max_depth:
            raise invalid(
                f"input '{name}' is nested deeper than {max_depth} levels (--max_json_depth)"
            )
        width = len(level[0])
        following = []
        for item in level:
            if not isinstance(item, list) or len(item) != width:
                raise invalid(
                    f"input '{name}' is a ragged list: every list at depth {len(shape)} must "
                    f"have {width} entries; send a rectangular array"
                )
            following.extend(item)
        shape.append(width)
        level = following
    for item in level:
        if isinstance(item, list):
            raise invalid(f"input '{name}' is a ragged list: it mixes lists and values")
    return tuple(shape), level


def _string_leaf(name: str, leaf) -> bytes:
    if isinstance(leaf, str):
        try:
            return leaf.encode()
        except UnicodeEncodeError as error:  # JSON's "\ud800": a lone surrogate, no UTF-8
            raise invalid(
                f"input '{name}' holds a string that is not valid Unicode ({error.reason} at "
                f"character {error.start}); send UTF-8 text or {{\"b64\": \"<base64>\"}}"
            ) from None
    if isinstance(leaf, dict) and set(leaf) == {"b64"} and isinstance(leaf["b64"], str):
        try:
            return base64.b64decode(leaf["b64"], validate=True)
        except (binascii.Error, ValueError) as error:
            raise invalid(f"input '{name}' has invalid base64 {leaf['b64']!r}: {error}") from error
    raise invalid(
        f"input '{name}' is a string input; got {_json_kind(leaf)}: send a JSON string or "
        '{"b64": "<base64>"}'
    )


def _json_kind(leaf) -> str:
    if leaf is None:
        return "null"
    if isinstance(leaf, dict):
        return f"an object with keys {sorted(leaf)}"
    return f"{type(leaf).__name__} {leaf!r}"[:80]


def _check_numeric(name: str, spec: InputSpec, leaves: list) -> None:
    if spec.dtype.is_bool:
        wrong = next((leaf for leaf in leaves if not isinstance(leaf, bool)), None)
        expected = "true or false"
    elif spec.dtype.is_integer:
        wrong = next(
            (leaf for leaf in leaves if isinstance(leaf, bool) or not isinstance(leaf, int)), None
        )
        expected = "integers"
    else:
        wrong = next(
            (
                leaf
                for leaf in leaves
                if isinstance(leaf, bool) or not isinstance(leaf, (int, float))
            ),
            None,
        )
        expected = "numbers"
    if wrong is not None or (leaves and any(leaf is None for leaf in leaves)):
        raise invalid(
            f"input '{name}' is {spec.dtype.name}: its values must be {expected}; got "
            f"{_json_kind(wrong)}"
        )


def to_array(name: str, value, spec: InputSpec | None, limits: ServerLimits) -> np.ndarray:
    """Converts one input's JSON value to the array its signature expects.

    Raises:
        ServingError: ``INVALID_ARGUMENT`` naming the input (see the module docstring).
    """
    shape, leaves = _shape_and_leaves(name, value, limits.max_json_depth)
    if shape:
        limits.check_rows(name, shape[0])
    if spec is None:  # not a signature input: validation reports it by name
        return np.zeros(shape)
    if spec.dtype == tf.string:
        flat = np.empty(len(leaves), dtype=object)
        flat[:] = [_string_leaf(name, leaf) for leaf in leaves]
        return flat.reshape(shape)
    _check_numeric(name, spec, leaves)
    try:
        return np.array(leaves, dtype=spec.dtype.as_numpy_dtype).reshape(shape)
    except (OverflowError, ValueError, TypeError) as error:
        raise invalid(f"input '{name}' does not fit {spec.dtype.name}: {error}") from error


def to_json(array: np.ndarray):
    """An output array as JSON values (bytes as text, or ``{"b64"}`` when not UTF-8)."""
    if array.dtype != object:
        return array.tolist()
    if array.ndim:
        return [to_json(item) for item in array]
    value = array.item()
    try:
        return value.decode()
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(value).decode()}


def _columns(body: dict, specs: dict[str, InputSpec]) -> tuple[dict, bool]:
    """The body's inputs as name -> JSON values, and whether it used the row format."""
    if ("instances" in body) == ("inputs" in body):
        raise invalid('the body needs exactly one of "instances" (rows) or "inputs" (columns)')
    if "inputs" in body:
        columns = body["inputs"]
        if isinstance(columns, dict):
            return columns, False
        if len(specs) != 1:
            raise invalid(f'"inputs" must be an object naming the inputs {sorted(specs)}')
        return {next(iter(specs)): columns}, False
    rows = body["instances"]
    if not isinstance(rows, list):
        raise invalid('"instances" must be a list, one entry per candidate')
    if rows and all(isinstance(row, dict) and set(row) != {"b64"} for row in rows):
        names = dict.fromkeys(name for row in rows for name in row)
        missing = [name for name in names if any(name not in row for row in rows)]
        if missing:
            raise invalid(f"every instance must name the same inputs; some lack {missing}")
        return {name: [row[name] for row in rows] for name in names}, True
    if any(isinstance(row, dict) and set(row) != {"b64"} for row in rows):
        raise invalid("instances mix objects and bare values; send one object per candidate")
    if len(specs) != 1:
        raise invalid(f"instances must be objects naming the inputs {sorted(specs)}")
    return {next(iter(specs)): rows}, True


def _as_protos(servable: Servable, signature: str, inputs: dict[str, np.ndarray],
               outputs: dict[str, np.ndarray]
               ) -> tuple[predict_pb2.PredictRequest, predict_pb2.PredictResponse]:
    """A REST call as the gRPC request and response it stands for (for the request log)."""
    request, response = predict_pb2.PredictRequest(), predict_pb2.PredictResponse()
    request.model_spec.name = response.model_spec.name = servable.model_name
    request.model_spec.signature_name = response.model_spec.signature_name = signature
    response.model_spec.version.value = servable.version
    for target, arrays in ((request.inputs, inputs), (response.outputs, outputs)):
        for name, array in arrays.items():
            fill_tensor_proto(target[name], array)
    return request, response


def predict_json(
    servable: Servable,
    body: dict,
    limits: ServerLimits,
    deadline: float | None = None,
    logger: RequestLogger | None = None,
) -> dict:
    """Answers a REST predict body (row or columnar format) with TF Serving's JSON.

    With a ``logger`` (the model's ``logging_config``), a sampled request is logged as the
    ``PredictRequest``/``PredictResponse`` gRPC would have carried.

    Raises:
        ServingError: as gRPC Predict would, or ``INVALID_ARGUMENT`` for a malformed body.
    """
    started = time.perf_counter()
    signature = body.get("signature_name", inference.DEFAULT_SIGNATURE)
    if not isinstance(signature, str):
        raise invalid(f'"signature_name" must be a string; got {_json_kind(signature)}')
    runner = servable.signature(signature or inference.DEFAULT_SIGNATURE)
    columns, rows = _columns(body, runner.specs)
    inputs = {
        str(name): to_array(str(name), values, runner.specs.get(name), limits)
        for name, values in columns.items()
    }
    arrays = runner.run(inputs, (), deadline)
    if logger is not None and logger.sampled():
        logger.log_predict(*_as_protos(servable, runner.name, inputs, arrays))
    outputs = {name: to_json(array) for name, array in arrays.items()}
    servable.observe_request(runner.name, time.perf_counter() - started)
    if not rows:
        return {"outputs": next(iter(outputs.values())) if len(outputs) == 1 else outputs}
    if len(outputs) == 1:
        return {"predictions": next(iter(outputs.values()))}
    count = len(next(iter(outputs.values())))
    return {
        "predictions": [
            {name: column[row] for name, column in outputs.items()} for row in range(count)
        ]
    }
