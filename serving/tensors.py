"""TensorProto <-> numpy conversion and validation of request inputs against a signature.

The conversions are the per-request hot path of the server and the client, so they avoid
``tf.make_tensor_proto`` (which re-derives and checks everything per call): numeric arrays are
written as one ``tensor_content`` byte string and read back with ``np.frombuffer``; strings
travel in ``string_val``.

Validation follows TF Serving's rules and status codes: an input the signature does not name, a
missing input, a wrong dtype, a wrong rank or fixed dimension, inputs that disagree on the batch
size (dimension 0) and an empty batch are all ``INVALID_ARGUMENT``, with a message naming the input
and what the signature expects.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import grpc
import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from cvr_tf.compat import tf
from serving.errors import ServingError
from serving.limits import ServerLimits


@dataclass(frozen=True)
class InputSpec:
    """What a signature expects for one input.

    Attributes:
        name: The input alias (the key in ``SignatureDef.inputs``).
        dtype: The TensorFlow dtype.
        dims: Dimension sizes, ``-1`` where any size is accepted; ``None`` when the rank is unknown.
    """

    name: str
    dtype: tf.DType
    dims: tuple[int, ...] | None

    @property
    def is_batched(self) -> bool:
        """Whether dimension 0 is a free batch dimension."""
        return bool(self.dims) and self.dims[0] == -1

    def shape_text(self) -> str:
        """The expected shape as TF Serving prints it, e.g. ``[-1, 8]``."""
        return "<unknown rank>" if self.dims is None else f"[{', '.join(map(str, self.dims))}]"


def input_specs(signature_def: meta_graph_pb2.SignatureDef) -> dict[str, InputSpec]:
    """Reads the expected inputs of a signature from its ``SignatureDef``.

    Args:
        signature_def: The signature as stored in the SavedModel's MetaGraphDef.

    Returns:
        Input alias -> :class:`InputSpec`.
    """
    specs = {}
    for name, info in signature_def.inputs.items():
        shape = info.tensor_shape
        dims = None if shape.unknown_rank else tuple(dim.size for dim in shape.dim)
        specs[name] = InputSpec(name=name, dtype=tf.dtypes.as_dtype(info.dtype), dims=dims)
    return specs


_VALUE_FIELDS = {
    types_pb2.DT_FLOAT: ("float_val", np.dtype(np.float32)),
    types_pb2.DT_DOUBLE: ("double_val", np.dtype(np.float64)),
    types_pb2.DT_INT32: ("int_val", np.dtype(np.int32)),
    types_pb2.DT_INT64: ("int64_val", np.dtype(np.int64)),
    types_pb2.DT_BOOL: ("bool_val", np.dtype(np.bool_)),
    types_pb2.DT_STRING: ("string_val", np.dtype(object)),
}


_OBJECT_BYTES = 8  # a string element costs at least its pointer in an object array


def to_ndarray(
    proto: tensor_pb2.TensorProto, name: str, limits: ServerLimits | None = None
) -> np.ndarray:
    """Converts a request ``TensorProto`` into a numpy array (strings: ``object`` arrays of bytes).

    The common dtypes are read directly (``np.frombuffer`` on ``tensor_content``, or the typed
    value field); other dtypes, and value fields shorter than the shape (which TensorFlow fills
    by repeating the last value), go through ``tf.make_ndarray``.

    Args:
        proto: The tensor sent by the client.
        name: The input alias, for the error message.
        limits: When given (the server), the declared shape is checked against
            ``max_tensor_bytes`` and ``max_rows_per_request`` before any value is read.

    Returns:
        A writable array of the tensor's values with the proto's shape.

    Raises:
        ServingError: ``INVALID_ARGUMENT`` when the proto's values do not fill its shape, its
            dtype is not a numeric or string type, or its declared size is over ``limits``.
    """
    shape = tuple(dim.size for dim in proto.tensor_shape.dim)
    field, dtype = _VALUE_FIELDS.get(proto.dtype, (None, None))
    if limits is not None:
        limits.check_tensor(name, shape, _item_bytes(proto.dtype))
    try:
        if field is not None:
            if proto.tensor_content and proto.dtype != types_pb2.DT_STRING:
                flat = np.frombuffer(proto.tensor_content, dtype).copy()
            else:
                flat = np.array(list(getattr(proto, field)), dtype=dtype)
            if flat.size == math.prod(shape):
                return flat.reshape(shape)
        return tf.make_ndarray(proto)
    except (ValueError, TypeError) as error:
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"tensor parsing error: {name}: {error}; the values do not fill the declared "
            f"tensor_shape {list(shape)} with dtype {types_pb2.DataType.Name(proto.dtype)}",
        ) from error


def _item_bytes(datatype: int) -> int:
    if datatype in (types_pb2.DT_STRING, types_pb2.DT_VARIANT, types_pb2.DT_RESOURCE):
        return _OBJECT_BYTES
    try:
        return max(tf.dtypes.as_dtype(datatype).size, 1)
    except TypeError:
        return _OBJECT_BYTES


def fill_tensor_proto(proto: tensor_pb2.TensorProto, array: np.ndarray) -> None:
    """Writes a numpy array into an (empty) ``TensorProto`` in place.

    Args:
        proto: The message to fill, e.g. ``response.outputs["probabilities"]``.
        array: Numeric, boolean, ``bytes``/``str`` or ``object`` (of ``bytes``/``str``) values.

    Raises:
        ServingError: ``INVALID_ARGUMENT`` for a dtype TensorFlow cannot represent.
    """
    array = np.asarray(array)
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    if array.dtype.kind in "OSU":
        proto.dtype = types_pb2.DT_STRING
        proto.string_val.extend(
            value.encode() if isinstance(value, str) else bytes(value)
            for value in array.reshape(-1)
        )
        return
    try:
        proto.dtype = tf.dtypes.as_dtype(array.dtype).as_datatype_enum
    except TypeError as error:
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"numpy dtype {array.dtype} has no TensorFlow equivalent; cast it to a numeric or "
            "string dtype",
        ) from error
    proto.tensor_content = np.ascontiguousarray(array).tobytes()


def to_tensor_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    """Returns a new ``TensorProto`` holding ``array`` (see :func:`fill_tensor_proto`)."""
    proto = tensor_pb2.TensorProto()
    fill_tensor_proto(proto, array)
    return proto


def _dtype_name(array: np.ndarray) -> str:
    if array.dtype.kind in "OSU":
        return "string"
    try:
        return tf.dtypes.as_dtype(array.dtype).name
    except TypeError:
        return str(array.dtype)


def _check_one(signature_name: str, spec: InputSpec, array: np.ndarray) -> None:
    expected_string = spec.dtype == tf.string
    if (array.dtype.kind in "OSU") != expected_string or (
        not expected_string and array.dtype != spec.dtype.as_numpy_dtype
    ):
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input '{spec.name}' has dtype {_dtype_name(array)} but signature '{signature_name}' "
            f"expects {spec.dtype.name}; send {spec.name} as a {spec.dtype.name} tensor",
        )
    if spec.dims is None:
        return
    if array.ndim != len(spec.dims):
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input '{spec.name}' has shape {list(array.shape)} (rank {array.ndim}) but signature "
            f"'{signature_name}' expects shape {spec.shape_text()} (rank {len(spec.dims)})",
        )
    for axis, (size, expected) in enumerate(zip(array.shape, spec.dims, strict=True)):
        if expected != -1 and size != expected:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input '{spec.name}' has shape {list(array.shape)} but signature "
                f"'{signature_name}' expects {spec.shape_text()}: dimension {axis} must be "
                f"{expected}",
            )


def validate_inputs(
    signature_name: str, specs: Mapping[str, InputSpec], inputs: Mapping[str, np.ndarray]
) -> int:
    """Checks request inputs against a signature, as TF Serving does before running it.

    Args:
        signature_name: The signature's key, for messages.
        specs: The signature's inputs (from :func:`input_specs`).
        inputs: Input alias -> array, as converted from the request.

    Returns:
        The batch size (dimension 0 shared by every batched input), or 0 when no input is batched.

    Raises:
        ServingError: ``INVALID_ARGUMENT`` naming the offending input and what was expected.
    """
    for name in inputs:
        if name not in specs:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input tensor alias not found in signature: {name}. Inputs expected to be in "
                "the set "
                f"{{{','.join(sorted(specs))}}}.",
            )
    missing = sorted(set(specs) - set(inputs))
    if missing:
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input size does not match signature '{signature_name}': {len(inputs)}!={len(specs)}. "
            f"Missing but required: {{{','.join(missing)}}}. Send every input of the signature "
            "(GetModelMetadata lists them).",
        )
    batch_sizes = {}
    for name, spec in specs.items():
        array = inputs[name]
        _check_one(signature_name, spec, array)
        if spec.is_batched:
            if array.shape[0] == 0:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"input '{name}' has an empty batch (dimension 0 is 0); send at least one row",
                )
            batch_sizes[name] = array.shape[0]
    if len(set(batch_sizes.values())) > 1:
        sizes = ", ".join(f"{name}={size}" for name, size in sorted(batch_sizes.items()))
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"inputs of signature '{signature_name}' disagree on the batch size (dimension 0): "
            f"{sizes}; "
            "send the same number of rows (one per candidate) in every input",
        )
    return next(iter(batch_sizes.values()), 0)
